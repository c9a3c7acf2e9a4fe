r"""What each freeze policy would have decided on a recorded run.

A `LearnDrop` run records, at each evaluation, what its policy observed
(each unit's change and path length, the mean learning rate). A run that
never freezes (`--policy=fixed --schedule=` of `examples/train.py`, with
`--policy_args=samples_per_epoch=8` to record the path between epoch ends)
observes the whole training as plain training would go. This script feeds
those observations to other policies and prints, for each, after which
epoch each unit would have frozen and the share of forward FLOPs a replay
of the frozen stem would have saved.

The decisions up to a policy's first freeze are exactly the ones it would
have made in a real run on the same seed; after that, a real run's head
trains on a frozen stem, so its later observations differ. That is enough
to screen settings before the timed runs of `benchmarks/frontier.py`.

Example:

    python -m examples.train --model=resnet20 --width=0.5 --epochs=30 \
        --dataset=shared:cifar10 --max_train=4000 --policy=fixed \
        --schedule= --policy_args=samples_per_epoch=8 \
        --output_dir=outputs/observe
    python -m benchmarks.simulate_policies \
        --run=outputs/observe/learndrop.json \
        --setting=scores --setting=freezeout:t0=0.5
"""

import dataclasses
import json

import numpy as np
from absl import app
from absl import flags

from benchmarks import frontier
from examples import train_flags
from keras_learndrop import policy as policy_lib

FLAGS = flags.FLAGS


def define_flags():
    for definer, name, default, help_text in (
        (
            flags.DEFINE_string,
            "run",
            "",
            "Result JSON of examples/train.py, or a results file of "
            "benchmarks/frontier.py (its 'observe' runs are used).",
        ),
        (
            flags.DEFINE_multi_string,
            "setting",
            [],
            "A policy setting as in benchmarks/frontier.py; repeatable.",
        ),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


def observations(report, epochs, scheduled=True):
    """Returns the `Observation`s of a run's report (`to_dict()` form).

    `scheduled` is `Observation.scheduled` (reports do not record it): the
    run's `lr_schedule` was not `constant`.
    """

    def array(values):
        return np.array([np.nan if v is None else v for v in values])

    evaluations = report["evaluations"]
    rates = [e["learning_rate"] or 0.0 for e in evaluations]
    return [
        policy_lib.Observation(
            epoch=e["epoch"],
            epochs=epochs,
            change=array(e["change"]),
            path=array(e["path"]),
            learning_rate=e["learning_rate"],
            # Older records lack it: the recorded rates of the later
            # evaluations (one per epoch) add up to the same.
            remaining_learning_rate=e.get("remaining_learning_rate")
            if e.get("remaining_learning_rate") is not None
            else float(sum(rates[i + 1 :])),
            scheduled=scheduled,
            drift=array(e["drift"]) if e.get("drift") else None,
        )
        for i, e in enumerate(evaluations)
    ]


def simulate(freeze_policy, recorded, unit_flops):
    """Runs `freeze_policy` over `recorded` observations.

    Frozen units are hidden from the policy (observed as `NaN`), as in a
    real run.

    Returns:
        A dict: `frozen_after_epoch` (unit index to the epoch, counted from
        1, after which it froze) and `flops_saved` (the share of forward
        FLOPs that a run replaying the stem from the next epoch on, with
        one fill epoch per growth, would have saved).
    """
    freeze_policy.build(len(unit_flops))
    frozen = {}
    stems = []
    for observation in recorded:
        stem = freeze_policy.stem_size
        frozen_units = np.arange(len(unit_flops)) < stem
        hidden = dataclasses.replace(
            observation,
            change=np.where(frozen_units, np.nan, observation.change),
            path=np.where(frozen_units, np.nan, observation.path),
        )
        if observation.drift is not None:
            hidden = dataclasses.replace(
                hidden,
                drift=np.where(frozen_units, np.nan, observation.drift),
            )
        new_stem = freeze_policy.update(hidden)
        for unit in range(stem, new_stem):
            frozen[unit] = observation.epoch + 1
        stems.append(new_stem)
    total = sum(unit_flops)
    cost, previous = 0.0, 0
    for stem in [0] + stems[:-1]:
        # The epoch after a growth fills the cache: the whole model runs.
        cost += (
            total if stem != previous or stem == 0 else (sum(unit_flops[stem:]))
        )
        previous = stem
    return {
        "frozen_after_epoch": frozen,
        "flops_saved": 1.0 - cost / (total * len(stems)) if stems else 0.0,
    }


def drift_report(row):
    """The report form of a row of `observe_drift.py` (no path samples)."""
    return {
        "unit_flops": row["unit_flops"],
        "evaluations": [
            {
                "epoch": epoch,
                "change": change,
                "path": change,
                "learning_rate": rate,
                "drift": drift,
            }
            for epoch, (change, rate, drift) in enumerate(
                zip(row["change"], row["learning_rate"], row["drift"])
            )
        ],
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.run.endswith(".jsonl"):
        runs = [
            (
                f"{r['regime']} seed {r['seed']}",
                drift_report(r) if "observed" in r else r,
                r["config"],
            )
            for r in frontier.read_results([FLAGS.run])
            if r.get("setting", frontier.OBSERVE) == frontier.OBSERVE
        ]
    else:
        with open(FLAGS.run) as file:
            result = json.load(file)
        runs = [(FLAGS.run, result["learn_drop"], result["config"])]
    for name, report, config in runs:
        recorded = observations(
            report,
            config["epochs"],
            config.get("lr_schedule", "cosine") != "constant",
        )
        print(f"{name}: {len(recorded)} evaluations")
        for setting in FLAGS.setting:
            config = train_flags.TrainConfig(**frontier.parse_setting(setting))
            outcome = simulate(
                train_flags.make_policy(config), recorded, report["unit_flops"]
            )
            frozen = outcome["frozen_after_epoch"]
            print(
                f"  {setting:<38} FLOPs saved "
                f"{100 * outcome['flops_saved']:5.1f} %, frozen after "
                "epochs: "
                + (" ".join(str(frozen[u]) for u in sorted(frozen)) or "none")
            )


if __name__ == "__main__":
    define_flags()
    app.run(main)
