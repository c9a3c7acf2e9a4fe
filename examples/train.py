r"""Trains one example model, with or without LearnDrop.

Usage:

    python -m examples.train --model=resnet20 --width=1 --image_size=16
    python -m examples.train --nolearn_drop --epochs=10
    python -m examples.train --dataset=shared:cifar10 --augment \
        --augmented_views=2 --output_dir=outputs/cifar

`run(...)` does the work and returns a JSON-ready dict: the wall-clock of
`fit` and of every epoch, final accuracies and losses, `History.history`,
the forward FLOPs of training and LearnDrop's report. `main` only turns
flags into the arguments of `run`, prints a summary and writes the dict to
`--output_dir`. `examples/compare.py` shares the flags (`train_flags.py`) and
calls `run` twice.

Input pipeline. The data sets of `examples.datasets` are in-memory NumPy
arrays. `--input_pipeline=tf_data` (the default) builds a `tf.data` pipeline
here: a shuffled index range, batched, gathered from the arrays (one gather
per batch), prefetched one batch ahead, with `tf.data` autotuning off so
that timings do not depend on its search. `numpy` hands the arrays to `fit`,
which batches them with its own pipeline; on 2 CPU cores that measured about
40 % slower per epoch (see `train_flags.INPUT_PIPELINES`).

Augmentation (`--augment`): `keras.layers.RandomFlip("horizontal")` and
`RandomTranslation(0.125, 0.125, fill_mode="constant")` (the usual 4-pixel
zero padding and random crop of a 32x32 image) run on each batch in the
`tf.data` input
pipeline, not as layers of the model. The model (and so its units, FLOPs and
saved config) stays the same with and without augmentation, and the
augmentation runs on the CPU beside training. A cached view of the stem's
output would then replay one draw of the augmentation; LearnDrop finds the
random ops in the pipeline's graph (`--augmented_inputs=detect`, the
default; `true` declares them, `false` declares the pipeline fixed, which
replays one augmented view), and `--augmented_views=K` caches K augmented
views (0: the frozen stem runs forward every epoch). Horizontal flips suit
natural images (CIFAR-10, Imagenette), not digits.
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

import keras_learndrop
from examples import datasets
from examples import models
from examples import train_flags
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

# Step schedule: the learning rate is divided by 10 after these fractions
# of the training steps (the CIFAR ResNet recipe of He et al., 2016).
_STEP_BOUNDARIES = (0.5, 0.75)

# Largest translation of `--augment`, as a fraction of the image size: 4
# pixels of a 32x32 image, as in the CIFAR recipe of He et al. (2016).
_TRANSLATION = 0.125

# TensorFlow versions whose oneDNN CPU kernels corrupt the heap (a crash with
# "free(): invalid next size" or a segmentation fault) in the filter gradient
# of a 1x1 stride-2 Conv2D with fewer than 16 input channels on a batch of
# odd size: the projection shortcuts of the example ResNets at width < 1.
# Measured on 2.21.0 with pure `tf.nn.conv2d`; 3x3 kernels, 16 or more input
# channels, even batches and TF_ENABLE_ONEDNN_OPTS=0 do not crash.
_ONEDNN_ODD_BATCH_CRASH = ("2.21.",)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch.

    Put it after `LearnDrop` in `callbacks`, so that the work LearnDrop does
    at the end of an epoch (finishing a fill, moving the cache to a deeper
    cut) counts in that epoch. An epoch's time includes its validation.
    """

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def load_data(config):
    """Loads the data set of `config` (a `TrainConfig`)."""
    data = datasets.load_dataset(
        config.dataset,
        data_dir=config.data_dir or None,
        image_size=config.image_size or None,
        validation_split=config.validation_split,
        max_train=config.max_train,
        max_val=config.max_val,
        seed=config.seed,
    )
    return select_classes(data, parse_classes(config.classes))


def parse_classes(text):
    """Parses '0-4' or '5,7,9' into a list of labels; '' into `None`.

    Example:

    >>> parse_classes("0-2, 7")
    [0, 1, 2, 7]
    """
    if not text or not text.strip():
        return None
    labels = []
    try:
        for item in text.split(","):
            first, dash, last = item.strip().partition("-")
            labels.extend(
                range(int(first), int(last) + 1) if dash else [int(first)]
            )
    except ValueError:
        raise ValueError(
            "`classes` must be comma-separated labels or ranges, such as "
            f"'0-4' or '5,7,9'. Received: classes={text!r}"
        ) from None
    return labels


def select_classes(data, labels):
    """Keeps the samples of `labels` only, relabelled `0 ... len - 1`.

    Raises:
        ValueError: for a label the data set does not have, or a repeat.
    """
    if labels is None:
        return data
    if len(set(labels)) != len(labels) or not all(
        0 <= label < data.num_classes for label in labels
    ):
        raise ValueError(
            f"`classes` must name distinct labels in [0, "
            f"{data.num_classes - 1}] of {data.name}. Received: {labels}"
        )
    lookup = np.full(data.num_classes, -1, dtype=np.int32)
    lookup[labels] = np.arange(len(labels), dtype=np.int32)
    train_keep = lookup[data.y_train] >= 0
    val_keep = lookup[data.y_val] >= 0
    names = data.class_names
    return dataclasses.replace(
        data,
        x_train=data.x_train[train_keep],
        y_train=lookup[data.y_train[train_keep]],
        x_val=data.x_val[val_keep],
        y_val=lookup[data.y_val[val_keep]],
        num_classes=len(labels),
        class_names=tuple(names[i] for i in labels) if names else (),
        source=f"{data.source}, classes {labels}",
    )


def run(config=None, *, data=None, callbacks=(), **overrides):
    """Trains one model as `config` says and reports how it went.

    Args:
        config: A `TrainConfig`, or `None` for the defaults.
        data: A `datasets.Dataset` to train on instead of loading
            `config.dataset` (so that several runs share one load).
        callbacks: Further Keras callbacks, placed after `LearnDrop` so that
            they see its `logs` keys.
        **overrides: Fields of `TrainConfig` to change, e.g.
            `run(model="small_cnn", epochs=2)`.

    Returns:
        A JSON-ready dict with `run` ("learndrop" or "baseline"), `config`,
        `data`, `fit_seconds`, `epochs_run`, `epoch_seconds`,
        `train_accuracy`, `train_loss`, `val_accuracy`, `val_loss` (of the
        epoch whose weights the model ends with: the last one, or with
        `early_stopping_patience` the best one, whose weights
        `EarlyStopping` restores; training values are Keras' running
        averages over that epoch), `final_epoch` (that epoch, from 1),
        `history` (`History.history`), `model_flops` (forward FLOPs of one
        sample), `samples_seen`, `baseline_forward_flops` (`model_flops *
        samples_seen`: what the training forward passes cost without
        LearnDrop), `forward_flops` (what they cost in this run),
        `flops_reduction`, `frozen_after_epoch` (unit name to the epoch,
        counted from 1, after which it froze) and `learn_drop`
        (`LearnDropHistory.to_dict()`, or `None`).

    With `config.output_dir` set, the dict is also written to
    `<output_dir>/<run>.json`.

    Raises:
        TypeError: for an unknown field in `overrides`.
        ValueError: for an invalid setting.
    """
    config = dataclasses.replace(
        config or train_flags.TrainConfig(), **overrides
    )
    _check_config(config)
    # Each run starts from the same clean state (names, caches), so that
    # runs in one process are alike (compare.py runs two).
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_data(config)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    model = build_model(config, data, steps_per_epoch * config.epochs)
    learn_drop = learn_drop_callback(config) if config.learn_drop else None
    timer = EpochTimer()
    all_callbacks = [c for c in (learn_drop, timer) if c is not None]
    all_callbacks += open_ended_callbacks(config) + list(callbacks)

    train_input, val_input = fit_inputs(data, config)
    start = time.perf_counter()
    history = model.fit(
        *train_input,
        validation_data=val_input,
        # The tf.data pipeline shuffles itself.
        shuffle=len(train_input) == 2,
        epochs=config.epochs,
        callbacks=all_callbacks,
        verbose=config.verbose,
    )
    fit_seconds = time.perf_counter() - start
    if config.save_weights:
        folder = os.path.dirname(os.path.abspath(config.save_weights))
        os.makedirs(folder, exist_ok=True)
        model.save_weights(config.save_weights)

    epochs_run = len(history.epoch)
    samples_seen = epochs_run * len(data.x_train)
    per_sample = keras_learndrop.model_flops(model)
    baseline_flops = per_sample * samples_seen
    report = learn_drop.history.to_dict() if learn_drop else None
    forward_flops = report["forward_flops"] if report else baseline_flops
    logs = history.history
    final = _final_epoch(logs, config)
    result = {
        "run": "learndrop" if config.learn_drop else "baseline",
        "config": dataclasses.asdict(config),
        "data": {
            "name": data.name,
            "source": data.source,
            "train_samples": len(data.x_train),
            "val_samples": len(data.x_val),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
        },
        "fit_seconds": fit_seconds,
        "epochs_run": epochs_run,
        "epoch_seconds": list(timer.seconds),
        "final_epoch": final + 1,
        "train_accuracy": _at(logs, "accuracy", final),
        "train_loss": _at(logs, "loss", final),
        "val_accuracy": _at(logs, "val_accuracy", final),
        "val_loss": _at(logs, "val_loss", final),
        "history": logs,
        "model_flops": per_sample,
        "samples_seen": samples_seen,
        "baseline_forward_flops": baseline_flops,
        "forward_flops": forward_flops,
        "flops_reduction": 1.0 - forward_flops / baseline_flops,
        "frozen_after_epoch": _frozen_after_epoch(report),
        "learn_drop": report,
    }
    result = to_json(result)
    if config.output_dir:
        write_json(
            result, os.path.join(config.output_dir, f"{result['run']}.json")
        )
    return result


def open_ended_callbacks(config):
    """Returns Keras's callbacks that end a run or lower its learning rate.

    `ReduceLROnPlateau` and `EarlyStopping` (restoring the best weights)
    on `val_loss`, as keras.io's recipes use them, where `config` asks.
    """
    callbacks = []
    if config.reduce_lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                factor=config.reduce_lr_factor,
                patience=config.reduce_lr_patience,
            )
        )
    if config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def load_matching_weights(model, path):
    """Loads the weights of `path` into the layers whose shapes match.

    For fine-tuning on a new task: every layer but the output layer takes
    the pre-trained weights where the shapes match (layers are matched by
    their order in the model); the output layer, a classifier of the old
    task, keeps its fresh initialisation.

    Returns:
        The names of the layers that kept their initialisation.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if no layer's weights could be loaded.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"`init_weights` file {path!r} does not exist. Save one with "
            "`model.save_weights('name.weights.h5')`."
        )
    source = keras.models.clone_model(model)
    try:
        source.load_weights(path, skip_mismatch=True)
    except ValueError as error:
        raise ValueError(
            f"Cannot read the weights of {path!r} into a model "
            f"{model.name!r} of this architecture: {error}"
        ) from None
    kept, loaded = [], 0
    output_layer = model.layers[-1]
    for layer, saved in zip(model.layers, source.layers):
        if not layer.weights:
            continue
        if layer is output_layer:
            kept.append(layer.name)
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes == [tuple(w.shape) for w in saved.weights]:
            layer.set_weights(saved.get_weights())
            loaded += 1
        else:
            kept.append(layer.name)
    if not loaded:
        raise ValueError(
            f"No layer of {model.name!r} matches the weights in {path!r}."
        )
    return kept


def build_model(config, data, total_steps):
    """Builds and compiles the model of `config` for `data`.

    Args:
        config: A `TrainConfig`.
        data: The `datasets.Dataset` to train on.
        total_steps: Integer. Training steps of all epochs, over which the
            learning-rate schedule runs.

    Returns:
        The compiled Keras model.

    Raises:
        ValueError: where TensorFlow would crash on this setup (see
            `_check_odd_batch_crash`).
    """
    model = models.build_model(
        config.model,
        data.input_shape,
        data.num_classes,
        width=config.width,
        seed=config.seed,
        dropout=config.dropout,
    )
    _check_odd_batch_crash(model, len(data.x_train), config.batch_size)
    if config.init_weights:
        load_matching_weights(model, config.init_weights)
    model.compile(
        optimizer=_optimizer(config, total_steps),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=_jit_compile(config),
    )
    return model


def learn_drop_callback(config, **overrides):
    """Returns the `LearnDrop` callback of `config`.

    Args:
        config: A `TrainConfig`.
        **overrides: Further arguments of `LearnDrop` (`keep_frozen=True`
            for online training), over those of `config`.
    """
    arguments = dict(
        policy=train_flags.make_policy(config),
        eval_every=config.eval_every,
        cache=config.cache,
        cache_dtype=config.cache_dtype,
        memory_budget=(
            None
            if config.memory_budget_mb is None
            else int(config.memory_budget_mb * 2**20)
        ),
        augmented_inputs=train_flags.AUGMENTED_INPUTS[config.augmented_inputs],
        augmented_views=config.augmented_views,
        stem_dropout=config.stem_dropout,
        cache_validation=config.cache_validation,
        jit_compile=_jit_compile(config),
        restore_trainable=config.restore_trainable,
        seed=config.seed,
        verbose=int(config.verbose > 0),
    )
    return keras_learndrop.LearnDrop(**{**arguments, **overrides})


def _jit_compile(config):
    return {"auto": "auto", "true": True, "false": False}[config.jit_compile]


def _check_config(config):
    for name, choices in (
        ("model", models.MODEL_NAMES),
        ("optimizer", train_flags.OPTIMIZERS),
        ("lr_schedule", train_flags.LR_SCHEDULES),
        ("jit_compile", train_flags.JIT_COMPILE),
        ("input_pipeline", train_flags.INPUT_PIPELINES),
        ("augmented_inputs", tuple(train_flags.AUGMENTED_INPUTS)),
    ):
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(
                f"`{name}` must be one of {', '.join(choices)}. "
                f"Received: {name}={value!r}"
            )
    if config.reduce_lr_patience and config.lr_schedule != "constant":
        raise ValueError(
            "`reduce_lr_patience` sets the learning rate that a schedule "
            "computes: pass `lr_schedule='constant'` with it. Received: "
            f"lr_schedule={config.lr_schedule!r}"
        )
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. "
                f"Received: {name}={value!r}"
            )


def _check_odd_batch_crash(model, num_samples, batch_size):
    """Refuses to train where TensorFlow's oneDNN kernels would crash.

    See `_ONEDNN_ODD_BATCH_CRASH`. Only a training batch runs the filter
    gradient, so only the training set's batches count.

    Raises:
        ValueError: if a batch would be of odd size and the model has a 1x1
            stride-2 convolution with fewer than 16 input channels, on a
            TensorFlow version known to crash then with oneDNN enabled.
    """
    if (
        not tf.__version__.startswith(_ONEDNN_ODD_BATCH_CRASH)
        or os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") == "0"
        or tf.config.list_logical_devices("GPU")
    ):
        return
    sizes = {min(batch_size, num_samples), num_samples % batch_size}
    odd = sorted(size for size in sizes if size % 2)
    if not odd:
        return
    for layer in model.layers:
        if (
            isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (2, 2)
            and layer.input.shape[-1] < 16
        ):
            raise ValueError(
                f"TensorFlow {tf.__version__} crashes (heap corruption) when "
                "oneDNN computes the filter gradient of a 1x1 stride-2 "
                "convolution with fewer than 16 input channels on a batch "
                f"of odd size, such as {layer.name!r} "
                f"({layer.input.shape[-1]} input channels) on the batches "
                f"of {odd[0]} samples here. Make every training batch even "
                "(an even --batch_size and --max_train a multiple of it), "
                "use --width=1, or set TF_ENABLE_ONEDNN_OPTS=0 (2-4x "
                f"slower). Received: {num_samples} training samples, "
                f"batch_size={batch_size}"
            )


def _optimizer(config, total_steps):
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps
        )
    elif config.lr_schedule == "step":
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, int(f * total_steps)) for f in _STEP_BOUNDARIES],
            [learning_rate * 0.1**i for i in range(len(_STEP_BOUNDARIES) + 1)],
        )
    weight_decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=config.momentum, weight_decay=weight_decay
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)
    return keras.optimizers.AdamW(
        learning_rate, weight_decay=config.weight_decay
    )


def fit_inputs(data, config):
    """Returns the `fit` arguments of the training data, and the validation.

    `(x, y)` and `(x_val, y_val)` for `input_pipeline="numpy"`, else a
    `tf.data.Dataset` of each, with autotuning off. The validation is `None`
    without validation samples.
    """
    has_val = len(data.x_val) > 0
    if config.input_pipeline == "numpy" and not config.augment:
        val = (data.x_val, data.y_val) if has_val else None
        return (data.x_train, data.y_train), val
    augment = None
    if config.augment:
        flip = keras.layers.RandomFlip("horizontal", seed=config.seed)
        shift = keras.layers.RandomTranslation(
            _TRANSLATION,
            _TRANSLATION,
            fill_mode="constant",
            seed=config.seed + 1,
        )

        def augment(x, y):
            return shift(flip(x, training=True), training=True), y

    train = array_dataset(
        data.x_train, data.y_train, config.batch_size, config.seed, augment
    )
    val = None
    if has_val:
        val = array_dataset(data.x_val, data.y_val, config.batch_size)
    return (train,), val


def array_dataset(x, y, batch_size, shuffle_seed=None, augment=None):
    """A `tf.data` pipeline over in-memory arrays, autotuning off.

    Batches of indices are gathered from the arrays (one gather per batch
    rather than one slice per sample); a seeded shuffle draws a fresh order
    each epoch.
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    dataset = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(
            len(x), seed=shuffle_seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size).map(
        lambda i: (tf.gather(x, i), tf.gather(y, i))
    )
    if augment is not None:
        dataset = dataset.map(augment)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(1).with_options(options)


def _frozen_after_epoch(report):
    """Maps each frozen unit's name to its epoch, counted from 1."""
    if report is None:
        return {}
    frozen = sorted(
        (int(unit), epoch) for unit, epoch in report["frozen_at"].items()
    )
    return {report["unit_names"][unit]: epoch + 1 for unit, epoch in frozen}


def _final_epoch(logs, config):
    """The epoch (from 0) whose weights the model ends `fit` with.

    `EarlyStopping(restore_best_weights=True)` on `val_loss` puts back the
    weights of the first epoch with the lowest `val_loss`.
    """
    losses = logs.get("val_loss")
    if config.early_stopping_patience and losses:
        return int(np.argmin(losses))
    return len(logs.get("loss", [None])) - 1


def _at(logs, key, epoch):
    values = logs.get(key)
    return float(values[epoch]) if values else None


def to_json(value):
    """Converts NumPy scalars and arrays, tuples and NaN to JSON values."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else value
    return value


def write_json(data, path):
    """Writes `data` as indented JSON to `path`, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(data, file, indent=1)
    logging.info("Wrote %s", path)


def summary_lines(result):
    """Returns a few human-readable lines about one run's result."""

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f} %"

    lines = [
        f"{result['run']}: fit {result['fit_seconds']:.1f} s, train "
        f"accuracy {percent(result['train_accuracy'])}, val accuracy "
        f"{percent(result['val_accuracy'])}, forward FLOPs of training "
        f"{result['forward_flops']:.4g} ({100 * result['flops_reduction']:.1f}"
        " % below the baseline)",
        "seconds per epoch: "
        + " ".join(f"{s:.2f}" for s in result["epoch_seconds"]),
    ]
    report = result["learn_drop"]
    if report is not None:
        frozen = result["frozen_after_epoch"]
        lines.append(
            "units frozen (after epoch): "
            + (", ".join(f"{u}: {e}" for u, e in frozen.items()) or "none")
        )
        lines.append(
            "epoch modes: " + " ".join(e["mode"] for e in report["epochs"])
        )
        lines.extend(f"note: {note}" for note in report["notes"])
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.verbose:
        logging.set_verbosity(logging.INFO)
    result = run(train_flags.config_from_flags())
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    train_flags.define_flags()
    app.run(main)
