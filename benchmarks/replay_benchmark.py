r"""What a whole epoch costs after the freeze: training, validation, callbacks.

Trains the same model on the same data, from the same initial weights, for
the same epochs, in one process, validating on held-out images after every
epoch (`--runs` picks some of them; all but `stem_forward` by default):

1. `plain`: `model.fit` without LearnDrop; Keras validates the whole model.
2. `stem_forward` (only when asked for): LearnDrop with `cache="off"`:
   after the cut the frozen stem still runs forward every epoch, and the
   whole model validates.
3. `whole_validation`: LearnDrop with the cache (one fill epoch, then
   replay) and `cache_validation=False`: the whole model validates.
4. `cached_validation`: the same with cached validation (LearnDrop's
   default): after the freeze the head alone validates on the stem's
   features of the validation images, cached at the first validation.
5. `head_only`: plain Keras `fit` of the head alone (a functional model from
   the cut to the output) on stem features of the training images,
   validated on stem features of the validation images, both precomputed
   once: the floor that a replayed epoch should reach. It runs the epochs
   after the cut; its epoch `k` is numbered as the other runs' epoch
   `cut_epoch + k`.

The cut is forced (`LearnDrop(policy=FixedSchedule(...))`) after
`--cut_epoch` epochs, so the runs differ only in how the epochs after it
run. The `tf.data` pipelines have autotuning off.

How an epoch's time is split. Two timing callbacks bracket the others: one
first in `callbacks`, one last (after LearnDrop). Keras calls each hook of
every callback in list order, so:

- `seconds`: from the last timer's previous `on_epoch_end` (first epoch:
  its `on_train_begin`) to its `on_epoch_end`.
- `validation`: from the first timer's `on_test_begin` to the last
  timer's `on_test_end` (`fit`'s `evaluate` calls both on the same
  callbacks), LearnDrop's own `on_test_begin`/`on_test_end` included.
- `training`: from the last timer's `on_epoch_begin` to the validation's
  start (the first timer's `on_epoch_end` without validation): the
  training steps and Keras's end-of-epoch metrics.
- `callback`: the rest, `seconds - training - validation`: LearnDrop's
  `on_epoch_begin` and `on_epoch_end` (finishing a fill, scoring, freezing,
  moving the caches) and Keras's own bookkeeping between epochs.
- `learndrop`: LearnDrop's share of `callback` alone: the gap between the
  two timers' `on_epoch_begin` plus the gap between their `on_epoch_end`
  (in runs without LearnDrop, the cost of two adjacent callbacks).

The summary compares the steady replay epochs: the epochs after the first
replay epoch (which traces the replay steps once, as the head-only run's
first epoch traces its steps), with the head-only run's same epochs. It
reports, with the issue's targets: a replayed epoch with cached validation
against a head-only epoch with validation (<= 1.1x); callback and
LearnDrop time as a share of that replayed epoch (<= 2 %); the whole `fit`
of `plain` against `cached_validation` (>= 3x) and `whole_validation`; the
validation seconds of the three ways to validate.

Example (the run of docs/results.md):

    python -m benchmarks.replay_benchmark --model=resnet20 --width=1.0 \
        --dataset=shared:cifar10 --image_size=32 --max_train=10000 \
        --max_val=5000 --batch_size=128 --epochs=10 --cut_epoch=1 \
        --cut_units=7 --output_json=outputs/replay/replay.json
"""

import json
import os
import time

import numpy as np
from absl import app
from absl import flags

import keras_learndrop
from examples import datasets
from examples import models
from examples import train
from examples import train_flags
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

RUNS = (
    "plain",
    "stem_forward",
    "whole_validation",
    "cached_validation",
    "head_only",
)
DEFAULT_RUNS = tuple(run for run in RUNS if run != "stem_forward")
# The LearnDrop arguments of the runs that train with LearnDrop.
_LEARNDROP_RUNS = {
    "stem_forward": {"cache": "off"},
    "whole_validation": {"cache_validation": False},
    "cached_validation": {},
}
# Per-epoch figures of the table, in its column order.
_PARTS = ("seconds", "training", "validation", "callback", "learndrop")


def define_flags():
    """Defines the benchmark's flags (the model and data ones of train.py)."""
    train_flags.define_flags(learn_drop_switch=False)
    for definer, name, default, help_text in (
        (flags.DEFINE_integer, "cut_epoch", 1, "Full epochs before the cut."),
        (flags.DEFINE_integer, "cut_units", 7, "Units frozen at the cut."),
        (
            flags.DEFINE_list,
            "runs",
            list(DEFAULT_RUNS),
            f"Runs to do, of (in this order) {', '.join(RUNS)}.",
        ),
        (
            flags.DEFINE_integer,
            "threads",
            0,
            "TensorFlow's intra- and inter-op threads; 0 keeps its default.",
        ),
        (flags.DEFINE_string, "output_json", None, "Also write results."),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


class _Stamps(keras.callbacks.Callback):
    """Records when `fit` calls its hooks (see `EpochClock`)."""

    def on_train_begin(self, logs=None):
        self.train_begin = time.perf_counter()
        self.epoch_begin = []
        self.epoch_end = []
        self.test_begin = {}  # Epoch of this fit, from 0 -> time.
        self.test_end = {}
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = len(self.epoch_begin)  # Counted in this fit.
        self.epoch_begin.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        self.test_begin[self._epoch] = time.perf_counter()

    def on_test_end(self, logs=None):
        self.test_end[self._epoch] = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(time.perf_counter())


class EpochClock:
    """Splits every epoch of one `fit` into training, validation, callbacks.

    Put `clock.first` first and `clock.last` last in `callbacks`; the
    module docstring defines the parts.
    """

    def __init__(self):
        self.first = _Stamps()
        self.last = _Stamps()

    @property
    def setup_seconds(self):
        """Seconds of the other callbacks' `on_train_begin`."""
        return self.last.train_begin - self.first.train_begin

    def epochs(self):
        """Returns one dict of `_PARTS` (seconds) per epoch."""
        first, last = self.first, self.last
        rows = []
        for i, end in enumerate(last.epoch_end):
            start = last.epoch_end[i - 1] if i else last.train_begin
            seconds = end - start
            if i in first.test_begin:
                validation = last.test_end[i] - first.test_begin[i]
                train_end = first.test_begin[i]
            else:
                validation = 0.0
                train_end = first.epoch_end[i]
            training = train_end - last.epoch_begin[i]
            hooks_begin = last.epoch_begin[i] - first.epoch_begin[i]
            hooks_end = end - first.epoch_end[i]
            rows.append(
                {
                    "seconds": seconds,
                    "training": training,
                    "validation": validation,
                    "callback": seconds - training - validation,
                    "learndrop": hooks_begin + hooks_end,
                }
            )
        return rows


def _compile(model, seed):
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit(model, train_data, val_data, epochs, batch_size, seed, callbacks=()):
    """Fits `model` between the two timers; returns its timings and logs."""
    clock = EpochClock()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    history = model.fit(
        train.array_dataset(*train_data, batch_size, shuffle_seed=seed),
        validation_data=train.array_dataset(*val_data, batch_size),
        epochs=epochs,
        shuffle=False,  # The dataset shuffles itself.
        callbacks=[clock.first, *callbacks, clock.last],
        verbose=0,
    )
    return {
        "fit_seconds": time.perf_counter() - start,
        "setup_seconds": clock.setup_seconds,
        "epochs": clock.epochs(),
        "history": {
            key: [float(v) for v in values]
            for key, values in history.history.items()
        },
    }


def _stem_features(chain, x, cut_units, training):
    return np.concatenate(
        [
            chain.forward(tf.constant(x[i : i + 512]), 0, cut_units, training)
            for i in range(0, len(x), 512)
        ]
    )


def _mean(values):
    return float(np.mean(values)) if len(values) else None


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _summary(results, steady):
    """The figures the issue targets, over the `steady` epochs (0-based)."""

    def mean(run, part, offset=0):
        if run not in results:
            return None
        rows = results[run]["epochs"]
        return _mean([rows[i - offset][part] for i in steady])

    head_offset = results["config"]["cut_epoch"]
    cached = mean("cached_validation", "seconds")
    head = mean("head_only", "seconds", head_offset)
    fit = {
        name: r["fit_seconds"] for name, r in results.items() if name in RUNS
    }
    summary = {
        "cached_validation_over_head_only_epoch": _ratio(cached, head),
        "callback_share_of_replay_epoch": _ratio(
            mean("cached_validation", "callback"), cached
        ),
        "learndrop_share_of_replay_epoch": _ratio(
            mean("cached_validation", "learndrop"), cached
        ),
        "plain_over_cached_validation_epoch": _ratio(
            mean("plain", "seconds"), cached
        ),
        "plain_over_cached_validation_fit": _ratio(
            fit.get("plain"), fit.get("cached_validation")
        ),
        "plain_over_whole_validation_fit": _ratio(
            fit.get("plain"), fit.get("whole_validation")
        ),
        "validation_seconds_whole_validation": mean(
            "whole_validation", "validation"
        ),
        "validation_seconds_cached_validation": mean(
            "cached_validation", "validation"
        ),
        "validation_seconds_head_only": mean(
            "head_only", "validation", head_offset
        ),
    }
    summary["whole_over_cached_validation"] = _ratio(
        summary["validation_seconds_whole_validation"],
        summary["validation_seconds_cached_validation"],
    )
    summary["cached_validation_over_head_only_validation"] = _ratio(
        summary["validation_seconds_cached_validation"],
        summary["validation_seconds_head_only"],
    )
    return summary


def run(
    model="resnet20",
    width=1.0,
    dataset="shared:cifar10",
    max_train=10000,
    max_val=5000,
    image_size=None,
    batch_size=128,
    epochs=10,
    cut_epoch=1,
    cut_units=7,
    seed=0,
    runs=DEFAULT_RUNS,
):
    """Runs the chosen variants and returns their timings and summary.

    Args:
        model, width, dataset, max_train, max_val, image_size, batch_size,
            seed: As the flags of `examples/train.py`.
        epochs: Integer. Epochs of every run but `head_only` (which runs
            `epochs - cut_epoch`). At least `cut_epoch + 3`, so that one
            steady replay epoch follows the fill and the first replay.
        cut_epoch: Integer. Epochs before the forced cut.
        cut_units: Integer. Units frozen at the cut.
        runs: Sequence of names in `RUNS`. Defaults to `DEFAULT_RUNS`.

    Returns:
        A JSON-ready dict: per run, `fit_seconds`, `setup_seconds` (the
        callbacks' `on_train_begin`), `epochs` (one dict per epoch:
        `epoch` from 1, `mode`, `validation_mode` and the seconds of
        `_PARTS`) and `history` (`History.history`); LearnDrop runs also
        `frozen_units`, `flops_saved` and `notes`. Then `summary` (see the
        module docstring; `None` where a run it needs was not done),
        `steady_epochs` (numbered from 1) and `config`.

    Raises:
        ValueError: for too few epochs, an unknown run or no validation
            data.
    """
    if epochs < cut_epoch + 3:
        raise ValueError(
            "The summary compares epochs after the fill and the first "
            "replay epoch: `epochs` must be at least cut_epoch + 3 = "
            f"{cut_epoch + 3}. Received: epochs={epochs}."
        )
    unknown = [name for name in runs if name not in RUNS]
    if unknown or not runs:
        raise ValueError(
            f"`runs` must name some of {', '.join(RUNS)}. Received: "
            f"runs={list(runs)}."
        )
    data = datasets.load_dataset(
        dataset,
        image_size=image_size,
        max_train=max_train,
        max_val=max_val,
        seed=seed,
    )
    if not len(data.x_val):
        raise ValueError(
            f"The data set {dataset!r} gave no validation samples; the "
            "benchmark validates every epoch. Received: "
            f"max_val={max_val}."
        )
    train_data = (data.x_train, data.y_train)
    val_data = (data.x_val, data.y_val)
    base = models.build_model(
        model, data.input_shape, data.num_classes, width=width, seed=seed
    )
    initial = base.get_weights()
    units = len(graph.UnitChain(base))

    def fresh():
        copy = models.build_model(
            model, data.input_shape, data.num_classes, width=width, seed=seed
        )
        copy.set_weights(initial)
        return _compile(copy, seed)

    results = {}
    for name in (name for name in RUNS if name in runs):
        if name == "head_only":
            head, head_train, head_val = _head_on_features(
                fresh(), cut_units, train_data, val_data
            )
            result = _fit(
                _compile(head, seed),
                head_train,
                head_val,
                epochs - cut_epoch,
                batch_size,
                seed,
            )
            for i, row in enumerate(result["epochs"]):
                row.update(
                    epoch=cut_epoch + i + 1, mode="head", validation_mode="head"
                )
            results[name] = result
            continue
        callbacks = []
        if name in _LEARNDROP_RUNS:
            learn_drop = keras_learndrop.LearnDrop(
                policy=keras_learndrop.FixedSchedule({cut_epoch: cut_units}),
                seed=seed,
                **_LEARNDROP_RUNS[name],
            )
            callbacks.append(learn_drop)
        result = _fit(
            fresh(), train_data, val_data, epochs, batch_size, seed, callbacks
        )
        for i, row in enumerate(result["epochs"]):
            row.update(epoch=i + 1, mode="full", validation_mode="full")
        if name in _LEARNDROP_RUNS:
            history = learn_drop.history
            for row, record in zip(result["epochs"], history.epochs):
                row.update(
                    mode=record.mode, validation_mode=record.validation_mode
                )
            result["frozen_units"] = history.epochs[-1].frozen_units
            result["flops_saved"] = history.flops_reduction
            result["notes"] = list(history.notes)
        results[name] = result

    steady = range(cut_epoch + 2, epochs)
    results["config"] = dict(
        model=model,
        width=width,
        dataset=dataset,
        samples=len(data.x_train),
        val_samples=len(data.x_val),
        batch_size=batch_size,
        epochs=epochs,
        cut_epoch=cut_epoch,
        cut_units=cut_units,
        units=units,
        seed=seed,
        runs=[name for name in RUNS if name in runs],
    )
    results["steady_epochs"] = [i + 1 for i in steady]
    results["summary"] = _summary(results, steady)
    return results


def _head_on_features(model, cut_units, train_data, val_data):
    """The floor: the head of `model` and the stem's features of the data.

    Returns the head (a functional model from the cut to the output) and
    `(features, labels)` of the training and of the validation data. The
    stem keeps the initial weights: its features cost the head the same
    whatever their values.
    """
    chain = graph.UnitChain(model)
    for layer in chain.layers_of(0, cut_units):
        layer.trainable = False
    (x, y), (x_val, y_val) = train_data, val_data
    head = keras.Model(chain.cut_tensor(cut_units), model.outputs[0])
    return (
        head,
        (_stem_features(chain, x, cut_units, True), y),
        (_stem_features(chain, x_val, cut_units, False), y_val),
    )


# The summary's rows: key, label, format, target.
_SUMMARY_ROWS = (
    (
        "cached_validation_over_head_only_epoch",
        "replay epoch with cached validation / head-only epoch",
        "{:.2f}x",
        "<= 1.1x",
    ),
    (
        "callback_share_of_replay_epoch",
        "callback time / replay epoch (cached validation)",
        "{:.1%}",
        "<= 2 %",
    ),
    (
        "learndrop_share_of_replay_epoch",
        "LearnDrop's hooks / replay epoch (cached validation)",
        "{:.1%}",
        "<= 2 %",
    ),
    (
        "plain_over_cached_validation_epoch",
        "plain epoch / replay epoch (cached validation)",
        "{:.2f}x",
        "",
    ),
    (
        "plain_over_cached_validation_fit",
        "plain fit / cached_validation fit",
        "{:.2f}x",
        ">= 3x",
    ),
    (
        "plain_over_whole_validation_fit",
        "plain fit / whole_validation fit",
        "{:.2f}x",
        "",
    ),
    (
        "validation_seconds_whole_validation",
        "validation s, whole_validation",
        "{:.2f}",
        "",
    ),
    (
        "validation_seconds_cached_validation",
        "validation s, cached_validation",
        "{:.2f}",
        "",
    ),
    (
        "validation_seconds_head_only",
        "validation s, head_only",
        "{:.2f}",
        "",
    ),
    (
        "whole_over_cached_validation",
        "validation whole / cached",
        "{:.2f}x",
        "",
    ),
    (
        "cached_validation_over_head_only_validation",
        "validation cached / head-only",
        "{:.2f}x",
        "",
    ),
)


def format_table(results):
    """Returns the Markdown tables of a `run` result: epochs, then summary."""
    lines = [
        "| run | epoch | mode | validation_mode | seconds | training "
        "| validation | callback | learndrop |",
        "|---|--:|---|---|--:|--:|--:|--:|--:|",
    ]
    for name in results["config"]["runs"]:
        for row in results[name]["epochs"]:
            cells = [name, str(row["epoch"]), row["mode"]]
            cells.append(row["validation_mode"] or "-")
            cells += [f"{row[part]:.3f}" for part in _PARTS]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| run | fit s | final val_accuracy | final val_loss |",
        "|---|--:|--:|--:|",
    ]
    for name in results["config"]["runs"]:
        result = results[name]
        lines.append(
            f"| {name} | {result['fit_seconds']:.1f} "
            f"| {result['history']['val_accuracy'][-1]:.4f} "
            f"| {result['history']['val_loss'][-1]:.4f} |"
        )
    steady = ", ".join(map(str, results["steady_epochs"]))
    lines += [
        "",
        f"Steady replay epochs: {steady}.",
        "",
        "| figure | value | target |",
        "|---|--:|---|",
    ]
    for key, label, fmt, target in _SUMMARY_ROWS:
        value = results["summary"][key]
        text = "-" if value is None else fmt.format(value)
        lines.append(f"| {label} | {text} | {target} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.threads:
        # Before any op: TensorFlow fixes its thread pools at the first.
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    results = run(
        model=FLAGS.model,
        width=FLAGS.width,
        dataset=FLAGS.dataset,
        max_train=FLAGS.max_train,
        max_val=FLAGS.max_val,
        image_size=FLAGS.image_size or None,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        cut_epoch=FLAGS.cut_epoch,
        cut_units=FLAGS.cut_units,
        seed=FLAGS.seed,
        runs=FLAGS.runs,
    )
    print(json.dumps(results["config"]))
    print(format_table(results))
    if FLAGS.output_json:
        os.makedirs(os.path.dirname(FLAGS.output_json) or ".", exist_ok=True)
        with open(FLAGS.output_json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
