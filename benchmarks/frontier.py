r"""The speed/accuracy frontier of the freeze policies against plain training.

For one regime (model, data, augmentation, starting weights) and each seed,
this trains the plain baseline and every `--setting` (a policy and its
arguments) on the same data, model, seed and epochs, one after the other in
this process, and appends each finished run to `--results` (JSON lines).
A rerun skips what the file already holds, so a long sweep resumes where it
stopped. `--report` reads one or more result files and prints the table and
draws the PNG: wall-clock speed-up against the change of validation
accuracy, one marker per setting (mean of the seeds, error bars their
standard deviation), and the baseline's own seed-to-seed spread as the
noise band.

Speed-up and accuracy change are paired: each seed's run is compared with
the baseline of the same seed.

Tuning and reporting use different images: by default the runs train on
`--tune_train` and validate on `--tune_val` images, both taken from the
training part of the data (see `tuning_split`); `--holdout` trains on the
training part and validates on the held-out validation images instead, for
confirming chosen defaults.

Example (one regime; see benchmarks/reproduce.sh for those of docs/results.md):

    python -m benchmarks.frontier --dataset=shared:cifar10 --model=resnet20 \
        --width=0.5 --epochs=30 --seeds=0,1 --regime=resnet20 \
        --setting=scores --setting=freezeout:t0=0.5 \
        --results=outputs/frontier/resnet20.jsonl
    python -m benchmarks.frontier --report \
        --results=outputs/frontier/resnet20.jsonl --plot=outputs/frontier.png
"""

import dataclasses
import json
import math
import os
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from examples import train
from examples import train_flags
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

BASELINE = "baseline"


def define_flags():
    """Defines the frontier's flags (and the model/data ones of train.py)."""
    train_flags.define_flags(learn_drop_switch=False, output_dir="")
    flags.adopt_module_key_flags(train)
    for definer, name, default, help_text in (
        (
            flags.DEFINE_multi_string,
            "setting",
            [],
            "A LearnDrop setting to run: 'policy' or 'policy:args' with the "
            "names and 'name=value,...' arguments of train.py's --policy "
            "and --policy_args (e.g. 'scores:threshold=0.3'). Repeat the "
            "flag for several.",
        ),
        (flags.DEFINE_list, "seeds", ["0", "1"], "Seeds of the runs."),
        (
            flags.DEFINE_integer,
            "tune_train",
            5000,
            "Training images of the tuning split.",
        ),
        (
            flags.DEFINE_integer,
            "tune_val",
            2000,
            "Validation images of the tuning split (taken from the "
            "training part).",
        ),
        (
            flags.DEFINE_bool,
            "holdout",
            False,
            "Validate on the held-out validation images (for confirming "
            "defaults) instead of the tuning split.",
        ),
        (flags.DEFINE_string, "regime", "", "Name of the regime."),
        (
            flags.DEFINE_bool,
            "baseline",
            True,
            "Train the plain baseline of each seed (--nobaseline: only the "
            "settings, e.g. an 'observe' run).",
        ),
        (
            flags.DEFINE_list,
            "results",
            [],
            "JSON-lines file the runs are appended to (resumed from); "
            "with --report, every file to read.",
        ),
        (
            flags.DEFINE_bool,
            "report",
            False,
            "Only print the table and draw --plot from --results.",
        ),
        (flags.DEFINE_string, "plot", "", "PNG of the frontier."),
        (
            flags.DEFINE_integer,
            "threads",
            0,
            "TensorFlow's intra- and inter-op threads; 0 keeps its default.",
        ),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


def use_threads():
    """Gives TensorFlow `--threads` intra- and inter-op threads (0: its own)."""
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)


def config_and_data(**overrides):
    """The `TrainConfig` of the flags and its data, the tuning split unless
    `--holdout`; `overrides` are fields of the config."""
    config = train_flags.config_from_flags(
        output_dir="", verbose=0, **overrides
    )
    data = train.load_data(config)
    if not FLAGS.holdout:
        data = tuning_split(data, FLAGS.tune_train, FLAGS.tune_val)
    return config, data


def tuning_split(data, tune_train, tune_val):
    """Returns a dataset made only of `data`'s training samples.

    Its validation part comes from the training images too, so the held-out
    validation images of `data` stay unseen by any choice of defaults.
    """
    if tune_train + tune_val > len(data.x_train):
        raise ValueError(
            f"The tuning split needs {tune_train + tune_val} training "
            f"samples; the data has {len(data.x_train)}. Lower `tune_train` "
            "or `tune_val`."
        )
    end = tune_train + tune_val
    return dataclasses.replace(
        data,
        x_train=data.x_train[:tune_train],
        y_train=data.y_train[:tune_train],
        x_val=data.x_train[tune_train:end],
        y_val=data.y_train[tune_train:end],
        source=data.source + " (tuning split of the training images)",
    )


OBSERVE = "observe"


# Runner options a setting may change besides its policy ('@name=value').
SETTING_OPTIONS = (
    "augmented_views",
    "stem_dropout",
    "cache_validation",
    "augmented_inputs",
)


def parse_setting(text):
    """Splits 'policy:args@option=value' into the `TrainConfig` fields it sets.

    `observe` is a run that never freezes and records what the policies
    observe, with 8 samples per epoch (for `simulate_policies.py`). After
    '@', a setting may change the runner options of `SETTING_OPTIONS`.

    Example:

    >>> parse_setting("freezeout:t0=0.5")
    {'policy': 'freezeout', 'policy_args': 't0=0.5', 'schedule': ''}
    >>> parse_setting("fixed:4:3,5:5")
    {'policy': 'fixed', 'policy_args': '', 'schedule': '4:3,5:5'}
    >>> parse_setting("scores@augmented_views=2")["augmented_views"]
    2
    """
    text, _, options = text.partition("@")
    fields = _setting_policy(text)
    for name, value in train_flags.parse_policy_args(options).items():
        if name not in SETTING_OPTIONS:
            raise ValueError(
                f"After '@', a setting changes one of "
                f"{', '.join(SETTING_OPTIONS)}. Received: {name!r}"
            )
        fields[name] = value
    return fields


def _setting_policy(text):
    if text.strip() == OBSERVE:
        return {
            "policy": "fixed",
            "policy_args": "samples_per_epoch=8",
            "schedule": "",
        }
    policy, _, args = text.strip().partition(":")
    if policy not in train_flags.POLICIES:
        raise ValueError(
            f"A setting starts with one of {', '.join(train_flags.POLICIES)}. "
            f"Received: {text!r}"
        )
    if policy == "fixed":
        return {"policy": policy, "policy_args": "", "schedule": args}
    return {"policy": policy, "policy_args": args, "schedule": ""}


def read_results(paths):
    """Returns the rows of JSON-lines result files (missing files: none)."""
    rows = []
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as file:
            rows.extend(json.loads(line) for line in file if line.strip())
    return rows


def run(config, data, settings, seeds, regime, results_path, baseline=True):
    """Runs what `results_path` does not hold yet; returns all its rows."""
    done = {
        (row["regime"], row["setting"], row["seed"])
        for row in read_results([results_path])
    }
    for seed in seeds:
        for setting in [BASELINE] * baseline + list(settings):
            if (regime, setting, seed) in done:
                continue
            overrides = {"seed": seed, "learn_drop": setting != BASELINE}
            if setting != BASELINE:
                overrides.update(parse_setting(setting))
            started = time.time()
            result = train.run(config, data=data, **overrides)
            row = _row(regime, setting, seed, result, started)
            logging.info("%s", _row_line(row))
            print(_row_line(row), flush=True)
            append_result(results_path, row)
    return read_results([results_path])


def append_result(results_path, row):
    """Appends `row` to the JSON-lines file `results_path` (made if new)."""
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    with open(results_path, "a") as file:
        file.write(json.dumps(row) + "\n")


def _row(regime, setting, seed, result, started):
    report = result["learn_drop"]
    epochs = report["epochs"] if report else []
    return train.to_json(
        {
            "regime": regime,
            "setting": setting,
            "seed": seed,
            "started": started,
            "fit_seconds": result["fit_seconds"],
            "epochs_run": result["epochs_run"],
            "final_epoch": result["final_epoch"],
            "val_accuracy_per_epoch": result["history"].get("val_accuracy"),
            "epoch_seconds": result["epoch_seconds"],
            "val_accuracy": result["val_accuracy"],
            "train_accuracy": result["train_accuracy"],
            "flops_reduction": result["flops_reduction"],
            "frozen_after_epoch": result["frozen_after_epoch"],
            "modes": [e["mode"] for e in epochs],
            "scoring_seconds": [e["scoring_seconds"] for e in epochs],
            "drift_seconds": [e.get("drift_seconds", 0.0) for e in epochs],
            "probe_size": [e.get("probe_size", 0) for e in epochs],
            "notes": report["notes"] if report else [],
            "evaluations": report["evaluations"] if report else [],
            "unit_flops": report["unit_flops"] if report else [],
            "policy": report["policy"] if report else None,
            "config": result["config"],
            "data": result["data"],
        }
    )


def _row_line(row):
    return (
        f"{row['regime']} {row['setting']} seed {row['seed']}: fit "
        f"{row['fit_seconds']:.1f} s, val {100 * row['val_accuracy']:.2f} %, "
        f"FLOPs -{100 * row['flops_reduction']:.1f} %, frozen "
        f"{row['frozen_after_epoch']}"
    )


def summarize(rows):
    """Pairs each run with its baseline and averages over the seeds.

    Returns:
        A list of dicts, one per (regime, setting) with a baseline of the
        same seed: `regime`, `setting`, `seeds`, `speedup` and
        `speedup_sd`, `same_epochs` (see `same_epochs_ratio`; mean over
        the seeds where it is known, or `None`), `delta_points` and
        `delta_sd` (accuracy change in points), `flops_saved`,
        `first_freeze` (mean epoch of the first freeze, counted from 1),
        `frozen_units`, `noise_points` (the baseline's seed-to-seed
        standard deviation of accuracy, in points) and
        `baseline_accuracy`, `per_seed` (`{seed: (speed-up, accuracy
        change)}`) and `dominated_by` (see `dominating`).
    """
    baselines = {
        (r["regime"], r["seed"]): r for r in rows if r["setting"] == BASELINE
    }
    groups = {}
    for row in rows:
        if row["setting"] == BASELINE:
            continue
        base = baselines.get((row["regime"], row["seed"]))
        if base is not None:
            groups.setdefault((row["regime"], row["setting"]), []).append(
                (row, base)
            )
    summary = []
    for (regime, setting), pairs in groups.items():
        if setting == OBSERVE:
            continue
        speedups = [b["fit_seconds"] / r["fit_seconds"] for r, b in pairs]
        deltas = [
            100 * (r["val_accuracy"] - b["val_accuracy"]) for r, b in pairs
        ]
        base_acc = [
            100 * b["val_accuracy"]
            for (reg, _), b in baselines.items()
            if reg == regime
        ]
        first = [first_freeze(r) for r, _ in pairs if r["frozen_after_epoch"]]
        same = [same_epochs_ratio(r, b) for r, b in pairs]
        same = [ratio for ratio in same if ratio is not None]
        summary.append(
            {
                "regime": regime,
                "setting": setting,
                "seeds": len(pairs),
                "speedup": float(np.mean(speedups)),
                "speedup_sd": _sd(speedups),
                "same_epochs": float(np.mean(same)) if same else None,
                "delta_points": float(np.mean(deltas)),
                "delta_sd": _sd(deltas),
                "flops_saved": float(
                    np.mean([r["flops_reduction"] for r, _ in pairs])
                ),
                "first_freeze": float(np.mean(first)) if first else None,
                "frozen_units": float(
                    np.mean([len(r["frozen_after_epoch"]) for r, _ in pairs])
                ),
                "noise_points": _sd(base_acc),
                "baseline_accuracy": float(np.mean(base_acc)),
                "per_seed": {
                    r["seed"]: (speedup, delta)
                    for (r, _), speedup, delta in zip(pairs, speedups, deltas)
                },
            }
        )
    for s in summary:
        s["dominated_by"] = dominating(s, summary)
    return summary


def first_freeze(run):
    """The epoch (from 1) after which `run` first froze; `inf` if never."""
    return min(run["frozen_after_epoch"].values(), default=math.inf)


def same_epochs_ratio(run, base):
    """The baseline's time over the run's, on epochs both ran alike.

    Until its first freeze a LearnDrop run trains with Keras's own step
    (and measures its probe), so its epochs 2 to the first freeze take what
    the baseline's take, and this ratio is 1 but for what the machine does
    meanwhile. Printed beside a speed-up, it shows how much of it the
    machine's drift may hold (the first epoch, which traces, is left out).
    `None` when no epoch qualifies.

    >>> base = {"epoch_seconds": [9.0, 4.0, 4.0, 4.0]}
    >>> run = {"epoch_seconds": [9.0, 5.0, 5.0, 1.0],
    ...        "frozen_after_epoch": {"conv": 3}}
    >>> same_epochs_ratio(run, base)
    0.8
    """
    epochs = min(
        first_freeze(run),
        len(run["epoch_seconds"]),
        len(base["epoch_seconds"]),
    )
    if epochs < 2:
        return None
    return float(
        np.sum(base["epoch_seconds"][1:epochs])
        / np.sum(run["epoch_seconds"][1:epochs])
    )


def dominating(entry, summary):
    """Returns the settings of `entry`'s regime that are ahead of it.

    A setting is ahead when it is at least as fast and as accurate and
    better on one of the two, in the means over the seeds both ran
    (`per_seed` of `summarize`); settings without a seed in common are not
    compared.

    >>> a = dict(regime="r", setting="a", per_seed={0: (1.5, -1.0)})
    >>> b = dict(regime="r", setting="b", per_seed={0: (1.2, -2.0)})
    >>> [dominating(b, [a, b]), dominating(a, [a, b])]
    [['a'], []]
    """
    ahead = []
    for other in summary:
        if other is entry or other["regime"] != entry["regime"]:
            continue
        common = set(entry["per_seed"]) & set(other["per_seed"])
        if not common:
            continue
        speedup, delta = _means_over(entry, common)
        other_speedup, other_delta = _means_over(other, common)
        if (
            other_speedup >= speedup
            and other_delta >= delta
            and (other_speedup > speedup or other_delta > delta)
        ):
            ahead.append(other["setting"])
    return ahead


def _means_over(entry, seeds):
    """(speed-up, accuracy change) of `entry`, averaged over `seeds`."""
    pairs = [entry["per_seed"][seed] for seed in seeds]
    return tuple(float(np.mean(values)) for values in zip(*pairs))


def paired_noise(summary):
    """Returns `{regime: (sd, degrees of freedom)}` of one paired change.

    How far one seed's accuracy change falls from its setting's mean over
    the seeds, pooled over the regime's settings that froze something:
    `sqrt(sum (d_s - mean d)^2 / sum (n - 1))`. Two runs of one seed agree
    until the first freeze and then part, so this is the noise of a single
    paired measurement; the mean of `n` seeds carries about `sd / sqrt(n)`.
    (A setting that froze nothing ends where its baseline does.)

    >>> paired_noise([dict(regime="r", frozen_units=8,
    ...                    per_seed={0: (1, -1.0), 1: (1, 1.0)}),
    ...               dict(regime="r", frozen_units=8, per_seed={0: (1, 0.0)})])
    {'r': (1.4142135623730951, 1)}
    """
    squares = {}
    for entry in summary:
        if not entry["frozen_units"]:
            continue
        deltas = [delta for _, delta in entry["per_seed"].values()]
        total, freedom = squares.get(entry["regime"], (0.0, 0))
        squares[entry["regime"]] = (
            total + float(np.sum((np.subtract(deltas, np.mean(deltas)) ** 2))),
            freedom + len(deltas) - 1,
        )
    return {
        regime: (float(np.sqrt(total / freedom)), freedom)
        for regime, (total, freedom) in sorted(squares.items())
        if freedom
    }


def format_noise(summary):
    """Returns one printed line per regime with its `paired_noise`."""
    return "\n".join(
        f"{regime}: one paired accuracy change varies by {sd:.2f} points "
        f"(pooled sd, {freedom} degrees of freedom); a mean of 2 seeds by "
        f"about {sd / np.sqrt(2):.2f}, of 4 by {sd / 2:.2f}"
        for regime, (sd, freedom) in paired_noise(summary).items()
    )


def _sd(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def format_table(summary):
    """Returns the printed frontier table (Markdown)."""
    lines = [
        "| regime | setting | seeds | speed-up | same epochs "
        "| accuracy change (points) | baseline noise (sd) | FLOPs saved "
        "| first freeze after epoch | units frozen | behind |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in sorted(summary, key=lambda s: (s["regime"], -s["speedup"])):
        first = "-" if s["first_freeze"] is None else f"{s['first_freeze']:.1f}"
        same = "-" if s["same_epochs"] is None else f"{s['same_epochs']:.2f}x"
        lines.append(
            f"| {s['regime']} | {s['setting']} | {s['seeds']} | "
            f"{s['speedup']:.2f}x +- {s['speedup_sd']:.2f} | {same} | "
            f"{s['delta_points']:+.2f} +- {s['delta_sd']:.2f} | "
            f"{s['noise_points']:.2f} | {100 * s['flops_saved']:.1f} % | "
            f"{first} | {s['frozen_units']:.1f} | "
            f"{', '.join(s['dominated_by']) or '-'} |"
        )
    return "\n".join(lines)


def plot(summary, path):
    """Draws one panel per regime: speed-up against accuracy change."""
    regimes = sorted({s["regime"] for s in summary})
    figure = Figure(
        figsize=(5.5 * max(1, len(regimes)), 4.5), layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(1, len(regimes)), squeeze=False)[0]
    policies = sorted({s["setting"].split(":")[0] for s in summary})
    markers = dict(zip(policies, "osD^vP*X<>"))
    for ax, regime in zip(axes, regimes):
        rows = [s for s in summary if s["regime"] == regime]
        noise = rows[0]["noise_points"]
        ax.axhspan(-noise, noise, color="grey", alpha=0.2, label="baseline sd")
        ax.axhline(0, color="grey", linewidth=1)
        ax.axvline(1, color="grey", linewidth=1)
        for s in rows:
            ax.errorbar(
                s["speedup"],
                s["delta_points"],
                xerr=s["speedup_sd"],
                yerr=s["delta_sd"],
                marker=markers[s["setting"].split(":")[0]],
                linestyle="none",
                capsize=3,
                label=s["setting"],
            )
        ax.set_title(
            f"{regime} (baseline {rows[0]['baseline_accuracy']:.1f} %)"
        )
        ax.set_xlabel("fit speed-up over plain training (x)")
        ax.set_ylabel("validation accuracy change (points)")
        ax.legend(fontsize="xx-small")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.results:
        raise app.UsageError("--results is required.")
    if FLAGS.report:
        summary = summarize(read_results(FLAGS.results))
        print(format_table(summary))
        print(format_noise(summary))
        if FLAGS.plot:
            plot(summary, FLAGS.plot)
        return
    if not FLAGS.regime:
        raise app.UsageError("--regime names the runs; it is required.")
    for name, instead in (
        ("policy", "--setting"),
        ("policy_args", "--setting"),
        ("schedule", "--setting=fixed:PLAN"),
        ("output_dir", "--results"),
        ("verbose", "nothing: the runs are silent"),
    ):
        if FLAGS[name].present:
            raise app.UsageError(
                f"--{name} does not apply to the frontier (use {instead})."
            )
    use_threads()
    for setting in FLAGS.setting:
        parse_setting(setting)  # Refuse a typo before hours of training.
    config, data = config_and_data()
    rows = run(
        config,
        data,
        FLAGS.setting,
        [int(s) for s in FLAGS.seeds],
        FLAGS.regime,
        FLAGS.results[0],
        baseline=FLAGS.baseline,
    )
    print(format_table(summarize(rows)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
