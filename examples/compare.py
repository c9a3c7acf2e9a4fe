r"""Trains the plain baseline and LearnDrop side by side, and compares them.

Usage (the demo of `scripts/demo.sh`: about 1.5 minutes on 2 CPU cores, no
download):

    python -m examples.compare
    python -m examples.compare --model=resnet20 --dataset=shared:cifar10 \
        --image_size=32 --epochs=30 --output_dir=outputs/cifar10

Both runs go through `examples.train.run` with the same configuration, data,
seed and number of epochs; only `learn_drop` differs. The printed table gives
the wall-clock of `fit` and the speed-up (baseline time / LearnDrop time),
the final training and validation accuracy and their difference in points,
the forward FLOPs of training and their reduction, and the epoch after which
each unit froze. Under `--output_dir` (default `outputs/compare`) go
`compare.json` (both runs and the
comparison), `compare.png` (`LearnDropHistory.plot()`: the units' scores
and drift with the freeze points and LearnDrop's time per epoch, with the
baseline's beside it) and TensorBoard logs in
`tb/baseline` and `tb/learndrop` (replaced at every run). TensorBoard comes
with the `examples` extra (`pip install -e ".[cpu,examples]"`); without it
the TensorBoard logs are skipped with a warning.

The flags are those of `examples/train.py` (`train_flags.define_flags`) without
`--learn_drop`. The baseline runs first; each run pays its own tracing.
"""

import dataclasses
import importlib.util
import os
import shutil

from absl import app
from absl import flags
from absl import logging
from matplotlib.ticker import MaxNLocator

import keras_learndrop
from examples import train
from examples import train_flags
from keras_learndrop.backend import keras

FLAGS = flags.FLAGS

RUN_NAMES = ("baseline", "learndrop")
JSON_NAME = "compare.json"
PLOT_NAME = "compare.png"
TENSORBOARD_DIR = "tb"


def define_flags():
    """Defines the flags: those of `train.py` but `--learn_drop`."""
    train_flags.define_flags(
        learn_drop_switch=False, output_dir="outputs/compare"
    )
    # So that `--help` lists them as this program's own flags.
    flags.adopt_module_key_flags(train)


def run(config=None, **overrides):
    """Trains the baseline and LearnDrop on the same setup and compares them.

    Args:
        config: A `train_flags.TrainConfig`, or `None` for the defaults. Its
            `learn_drop` field is ignored.
        **overrides: Fields of `train_flags.TrainConfig` to change.

    Returns:
        A JSON-ready dict with `config`, `baseline` and `learndrop` (the
        results of `train.run`), `comparison` (see `compare_runs`) and
        `files` (paths written, empty without `output_dir`).
    """
    config = dataclasses.replace(
        config or train_flags.TrainConfig(), **overrides
    )
    data = train.load_data(config)
    tensorboard = bool(config.output_dir) and _tensorboard_installed()
    if config.output_dir and not tensorboard:
        logging.warning(
            "TensorBoard is not installed: no TensorBoard logs. Install the "
            'examples extra (pip install -e ".[cpu,examples]") to get them.'
        )
    runs = {}
    for name in RUN_NAMES:
        callbacks = []
        if tensorboard:
            log_dir = os.path.join(config.output_dir, TENSORBOARD_DIR, name)
            # A rerun replaces its logs rather than mixing with them.
            shutil.rmtree(log_dir, ignore_errors=True)
            # After LearnDrop (train.run puts it first), so that TensorBoard
            # sees LearnDrop's `ld_*` logs.
            callbacks.append(
                keras.callbacks.TensorBoard(
                    log_dir=log_dir, write_graph=False, profile_batch=0
                )
            )
        runs[name] = train.run(
            config,
            data=data,
            callbacks=callbacks,
            learn_drop=name == "learndrop",
            output_dir="",
        )
    config_dict = train.to_json(dataclasses.asdict(config))
    del config_dict["learn_drop"]  # Both runs; see each run's own config.
    result = {
        "config": config_dict,
        **runs,
        "comparison": compare_runs(runs["baseline"], runs["learndrop"]),
        "files": {},
    }
    if config.output_dir:
        files = {
            "json": os.path.join(config.output_dir, JSON_NAME),
            "plot": os.path.join(config.output_dir, PLOT_NAME),
        }
        if tensorboard:
            files["tensorboard"] = os.path.join(
                config.output_dir, TENSORBOARD_DIR
            )
        result["files"] = files
        plot(result, files["plot"])
        train.write_json(result, files["json"])
    return result


def _tensorboard_installed():
    """Whether `keras.callbacks.TensorBoard` can write its logs here."""
    return importlib.util.find_spec("tensorboard") is not None


def compare_runs(baseline, learndrop):
    """Compares two results of `train.run`.

    Returns:
        A dict with, for `fit_seconds`, `train_accuracy`, `val_accuracy`,
        `train_loss`, `val_loss` and `forward_flops`, a dict
        `{"baseline": ..., "learndrop": ...}`; `speedup` (baseline seconds
        over LearnDrop seconds); `train_accuracy_points` and
        `val_accuracy_points` (LearnDrop minus baseline, in percentage
        points); `flops_reduction_percent` (of LearnDrop's forward FLOPs
        of training against the baseline's); and `frozen_after_epoch`.
    """
    pair = {
        key: {"baseline": baseline[key], "learndrop": learndrop[key]}
        for key in (
            "fit_seconds",
            "train_accuracy",
            "val_accuracy",
            "train_loss",
            "val_loss",
            "forward_flops",
        )
    }
    return {
        **pair,
        "speedup": baseline["fit_seconds"] / learndrop["fit_seconds"],
        "train_accuracy_points": _points(
            learndrop["train_accuracy"], baseline["train_accuracy"]
        ),
        "val_accuracy_points": _points(
            learndrop["val_accuracy"], baseline["val_accuracy"]
        ),
        "flops_reduction_percent": 100.0
        * (1.0 - learndrop["forward_flops"] / baseline["forward_flops"]),
        "frozen_after_epoch": dict(learndrop["frozen_after_epoch"]),
    }


def _points(value, reference):
    if value is None or reference is None:
        return None
    return 100.0 * (value - reference)


def format_table(result):
    """Returns the comparison of `run`'s result as a text table."""
    c = result["comparison"]

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}"

    def signed(value, unit):
        return "-" if value is None else f"{value:+.2f} {unit}"

    rows = [
        ("", "baseline", "learndrop", "change"),
        (
            "fit wall-clock (s)",
            f"{c['fit_seconds']['baseline']:.1f}",
            f"{c['fit_seconds']['learndrop']:.1f}",
            f"{c['speedup']:.2f}x speed-up",
        ),
        (
            "train accuracy (%)",
            percent(c["train_accuracy"]["baseline"]),
            percent(c["train_accuracy"]["learndrop"]),
            signed(c["train_accuracy_points"], "points"),
        ),
        (
            "val accuracy (%)",
            percent(c["val_accuracy"]["baseline"]),
            percent(c["val_accuracy"]["learndrop"]),
            signed(c["val_accuracy_points"], "points"),
        ),
        (
            "forward FLOPs of training",
            f"{c['forward_flops']['baseline']:.4g}",
            f"{c['forward_flops']['learndrop']:.4g}",
            f"{-c['flops_reduction_percent']:+.1f} %",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        for row in rows
    ]
    frozen = c["frozen_after_epoch"]
    if frozen:
        lines.append("units frozen (after epoch):")
        lines.extend(f"  {unit}: {epoch}" for unit, epoch in frozen.items())
    else:
        lines.append("units frozen: none")
    report = result["learndrop"]["learn_drop"]
    lines.append("learndrop epoch modes: " + _modes(report))
    lines.extend(f"note: {note}" for note in report["notes"])
    for kind, path in result["files"].items():
        lines.append(f"{kind}: {path}")
    return "\n".join(lines)


def _modes(report):
    return " ".join(epoch["mode"] for epoch in report["epochs"])


def plot(result, path):
    """Draws LearnDrop's run (`LearnDropHistory.plot`) beside the baseline.

    The last panel adds the baseline's seconds per epoch to LearnDrop's.

    Args:
        result: The dict returned by `run`.
        path: Where to write the PNG.
    """
    history = keras_learndrop.LearnDropHistory.from_dict(
        result["learndrop"]["learn_drop"]
    )
    figure = history.plot()
    times = figure.axes[-1]
    seconds = result["baseline"]["epoch_seconds"]
    times.plot(
        range(1, len(seconds) + 1),
        seconds,
        marker="o",
        color="black",
        label="baseline",
    )
    speedup = result["comparison"]["speedup"]
    times.set_title(f"{times.get_title()}; fit {speedup:.2f}x faster")
    times.legend(fontsize="small")
    for axes in figure.axes:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    logging.info("Wrote %s", path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.verbose:
        logging.set_verbosity(logging.INFO)
    result = run(train_flags.config_from_flags())
    print(format_table(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
