"""How the default scores were chosen: a threshold x patience sweep.

Trains one baseline and one LearnDrop run per (threshold, patience) pair on
a *tuning* split carved out of the training part of the data, so the
validation images that the README reports accuracy on are never used to
choose defaults. Prints the trade-off table: wall-clock speed-up, forward
FLOPs saved, and validation accuracy against the baseline.

Example (the README's table; about 20 minutes on 2 CPU cores):

    python -m benchmarks.threshold_sweep --dataset=shared:cifar10
"""

import dataclasses
import json
import os

from absl import app
from absl import flags

from examples import datasets
from examples import train

FLAGS = flags.FLAGS


def define_flags():
    """Defines the sweep's flags (the model and data ones of train.py)."""
    train.define_flags(learn_drop_switch=False)
    for definer, name, default, help_text in (
        (flags.DEFINE_integer, "tune_train", 5000, "Sweep training samples."),
        (flags.DEFINE_integer, "tune_val", 1000, "Tuning validation samples."),
        (flags.DEFINE_list, "thresholds", ["0.3", "0.5", "0.7"], "Grid."),
        (flags.DEFINE_list, "patiences", ["1", "2", "3"], "Grid."),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


def tuning_split(data, tune_train, tune_val):
    """Returns a dataset made only of `data`'s training samples.

    Its validation part comes from the training images too, so the held-out
    validation images of `data` stay unseen.
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


def run(
    data,
    model,
    width,
    epochs,
    thresholds,
    patiences,
    seed,
    batch_size=128,
    output_dir=None,
):
    """Runs the sweep; returns the baseline and one row per setting."""
    common = dict(
        model=model,
        width=width,
        epochs=epochs,
        seed=seed,
        verbose=0,
        output_dir=None,
        image_size=None,
        batch_size=batch_size,
    )
    baseline = train.run(data=data, learn_drop=False, **common)
    rows = []
    for threshold in thresholds:
        for patience in patiences:
            result = train.run(
                data=data,
                learn_drop=True,
                threshold=threshold,
                patience=patience,
                **common,
            )
            rows.append(
                {
                    "threshold": threshold,
                    "patience": patience,
                    "speedup": baseline["fit_seconds"] / result["fit_seconds"],
                    "flops_saved": result["flops_reduction"],
                    "val_accuracy": result["val_accuracy"],
                    "accuracy_delta_points": 100
                    * (result["val_accuracy"] - baseline["val_accuracy"]),
                    "frozen_units": len(result["frozen_after_epoch"]),
                    "first_freeze_epoch": min(
                        result["frozen_after_epoch"].values(), default=None
                    ),
                }
            )
    results = {
        "baseline": {
            "fit_seconds": baseline["fit_seconds"],
            "val_accuracy": baseline["val_accuracy"],
        },
        "rows": rows,
        "data": baseline["data"],
    }
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "sweep.json"), "w") as file:
            json.dump(results, file, indent=1)
    return results


def format_table(results):
    """Returns the printed trade-off table."""
    base = results["baseline"]
    lines = [
        f"baseline: {base['fit_seconds']:.1f} s, val accuracy "
        f"{100 * base['val_accuracy']:.2f} %",
        "threshold patience speed-up FLOPs-saved val-acc  delta  frozen "
        "first-freeze",
    ]
    for row in results["rows"]:
        lines.append(
            f"{row['threshold']:>9.2f} {row['patience']:>8d} "
            f"{row['speedup']:>7.2f}x {100 * row['flops_saved']:>10.1f}% "
            f"{100 * row['val_accuracy']:>6.2f}% "
            f"{row['accuracy_delta_points']:>+6.2f} {row['frozen_units']:>6d} "
            f"{row['first_freeze_epoch'] or '-':>12}"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    data = datasets.load_dataset(FLAGS.dataset, seed=FLAGS.seed)
    data = tuning_split(data, FLAGS.tune_train, FLAGS.tune_val)
    results = run(
        data,
        model=FLAGS.model,
        width=FLAGS.width,
        epochs=FLAGS.epochs,
        thresholds=[float(t) for t in FLAGS.thresholds],
        patiences=[int(p) for p in FLAGS.patiences],
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        output_dir=FLAGS.output_dir,
    )
    print(format_table(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
