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
`--output_dir`. `examples/compare.py` shares the flags (`define_flags`) and
calls `run` twice.

Input pipeline. The data sets of `examples.datasets` are in-memory NumPy
arrays. `--input_pipeline=tf_data` (the default) builds a `tf.data` pipeline
here: a shuffled index range, batched, gathered from the arrays (one gather
per batch), prefetched one batch ahead, with `tf.data` autotuning off so
that timings do not depend on its search. `numpy` hands the arrays to `fit`,
which batches them with its own pipeline; on 2 CPU cores that measured about
40 % slower per epoch (see `_INPUT_PIPELINES`).

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

import ast
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
from keras_learndrop import callback as learndrop_callback
from keras_learndrop import stem_cache
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")
JIT_COMPILE = ("auto", "true", "false")
# Median seconds per epoch measured on 2 shared CPU cores (the default
# vgg11 at width 0.25 on 1,617 digits at 32x32, batch 64; epochs 2-6 of 3
# alternating runs each): tf_data 1.60, numpy 2.31.
_INPUT_PIPELINES = ("tf_data", "numpy")
# `--augmented_inputs` -> LearnDrop's `augmented_inputs`.
_AUGMENTED_INPUTS = {"detect": None, "true": True, "false": False}
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; one field per flag.

    The defaults are those of `python -m examples.compare` without flags: a
    demo that needs no download and took 1 minute on one CPU core (both
    runs), where LearnDrop's default policy froze 6 of the 9 units of the
    VGG-11 after epoch 8 and `fit` ran 1.67x faster at the same accuracy.
    See the flags' help in `define_flags` for each field.
    """

    model: str = "vgg11"
    width: float = 0.25
    dropout: float = 0.0
    dataset: str = "digits"
    data_dir: str | None = None
    validation_split: float = 0.1
    image_size: int | None = 32
    max_train: int | None = None
    max_val: int | None = None
    classes: str = ""
    epochs: int = 25
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    augment: bool = False
    augmented_inputs: str = "detect"
    input_pipeline: str = "tf_data"
    learn_drop: bool = True
    policy: str = "default"
    policy_args: str = ""
    schedule: str = ""
    eval_every: int = 1
    cache: str = "auto"
    cache_dtype: str = "float32"
    memory_budget_mb: int | None = None
    augmented_views: int = 0
    stem_dropout: str = "inference"
    cache_validation: bool = True
    restore_trainable: bool = True
    init_weights: str = ""
    save_weights: str = ""
    jit_compile: str = "auto"
    seed: int = 0
    output_dir: str = ""
    verbose: int = 1


_DEFAULTS = TrainConfig()


def define_flags(learn_drop_switch=True, output_dir="outputs/train"):
    """Defines the flags of `TrainConfig` on `FLAGS`.

    The defaults are those of `TrainConfig`, but `--output_dir`. Flags that
    are already defined are left alone, so that `train.py` and `compare.py`
    can both call this in one process (as the tests do).

    Args:
        learn_drop_switch: Boolean. Whether to define `--learn_drop`;
            `compare.py` runs both settings and leaves it out.
        output_dir: String. Default of `--output_dir`.
    """
    defaults = {**dataclasses.asdict(_DEFAULTS), "output_dir": output_dir}

    def define(kind, name, help_text, **kwargs):
        if name not in FLAGS:
            kind(name, defaults[name], help=help_text, **kwargs)

    # Model and data.
    define(
        flags.DEFINE_enum,
        "model",
        "Model to train (examples/models.py).",
        enum_values=models.MODEL_NAMES,
    )
    define(
        flags.DEFINE_float,
        "width",
        "Multiplier of the number of filters of every convolution (1.0 for "
        "resnet50 and resnet152).",
        lower_bound=0.0,
    )
    define(
        flags.DEFINE_float,
        "dropout",
        "Rate of a SpatialDropout2D in every block of the model (0: none).",
        lower_bound=0.0,
        upper_bound=0.99,
    )
    define(flags.DEFINE_string, "dataset", datasets.DATASET_HELP)
    define(
        flags.DEFINE_string,
        "data_dir",
        "tensorflow-datasets data directory (mnist, cifar10, imagenette) or "
        "cache folder of the shared: archives; unset for the default.",
    )
    define(
        flags.DEFINE_float,
        "validation_split",
        "Fraction held out for validation where the data set has no "
        "validation split of its own (digits, shared:cifar10, folder:).",
        lower_bound=0.0,
        upper_bound=0.99,
    )
    define(
        flags.DEFINE_integer,
        "image_size",
        "Resize images to this square size (center crop, bilinear); 0 "
        "keeps the stored size. The 8x8 digits need 16 or more for the "
        "ResNets and VGGs to have several stages of real feature maps.",
        lower_bound=0,
    )
    define(
        flags.DEFINE_integer,
        "max_train",
        "Use at most this many training samples (a seeded subset); unset "
        "uses all.",
        lower_bound=1,
    )
    define(
        flags.DEFINE_integer,
        "max_val",
        "Use at most this many validation samples; unset uses all.",
        lower_bound=1,
    )
    define(
        flags.DEFINE_string,
        "classes",
        "Keep only these classes, relabelled from 0 in this order: "
        "comma-separated labels or ranges such as '0-4' or '5,7,9' (e.g. "
        "a pre-training task and a fine-tuning task from one data set). "
        "Empty keeps all.",
    )
    define(
        flags.DEFINE_enum,
        "input_pipeline",
        "How the in-memory arrays reach fit: 'tf_data' builds a tf.data "
        "pipeline with autotuning off (measured faster); 'numpy' passes "
        "the arrays. --augment always uses tf_data.",
        enum_values=_INPUT_PIPELINES,
    )
    define(
        flags.DEFINE_bool,
        "augment",
        "Random horizontal flip and translation (up to 12.5 %, zero fill: "
        "4-pixel pad and crop at 32x32) of each training batch in the "
        "tf.data input pipeline, where LearnDrop finds it (see "
        "--augmented_inputs). Meant for natural images.",
    )
    define(
        flags.DEFINE_enum,
        "augmented_inputs",
        "LearnDrop's augmented_inputs: 'detect' (None) finds random ops in "
        "the input pipeline, 'true' declares them, 'false' declares the "
        "pipeline fixed (a freeze then replays one augmented view).",
        enum_values=list(_AUGMENTED_INPUTS),
    )
    # Optimization.
    define(flags.DEFINE_integer, "epochs", "Training epochs.", lower_bound=1)
    define(
        flags.DEFINE_integer,
        "batch_size",
        "Training batch size.",
        lower_bound=1,
    )
    define(
        flags.DEFINE_enum,
        "optimizer",
        "Optimizer: SGD with momentum, Adam or AdamW.",
        enum_values=OPTIMIZERS,
    )
    define(
        flags.DEFINE_float,
        "learning_rate",
        "Initial learning rate.",
        lower_bound=0.0,
    )
    define(
        flags.DEFINE_float,
        "momentum",
        "Momentum of SGD (ignored by adam and adamw).",
        lower_bound=0.0,
        upper_bound=1.0,
    )
    define(
        flags.DEFINE_float,
        "weight_decay",
        "Decoupled weight decay of the optimizer (Keras' weight_decay), on "
        "all trainable weights; 0 for none.",
        lower_bound=0.0,
    )
    define(
        flags.DEFINE_enum,
        "lr_schedule",
        "Learning rate schedule over all training steps: constant; cosine "
        "decay to 0; step: divided by 10 after 50 % and 75 % of the steps.",
        enum_values=LR_SCHEDULES,
    )
    define(
        flags.DEFINE_enum,
        "jit_compile",
        "XLA-compile the training steps (model.compile and LearnDrop's "
        "rebuilt steps). 'auto': on a GPU only; on a CPU XLA was slower.",
        enum_values=JIT_COMPILE,
    )
    define(
        flags.DEFINE_integer,
        "seed",
        "Seeds Python, NumPy and TensorFlow (keras.utils.set_random_seed), "
        "the initial weights, the data split and order, and LearnDrop.",
        lower_bound=0,
    )
    # LearnDrop.
    if learn_drop_switch:
        define(
            flags.DEFINE_bool,
            "learn_drop",
            "Train with the LearnDrop callback; --nolearn_drop trains the "
            "plain baseline.",
        )
    define(
        flags.DEFINE_enum,
        "policy",
        "LearnDrop: when to freeze. default: LearnDropScores.default() "
        "(LearnDrop's default); scores: LearnDropScores (one threshold for "
        "every unit); aggressive: LearnDropScores.aggressive(); consistency: "
        "DirectionConsistency; autofreeze: AutoFreezeRule; freezeout: "
        "FreezeOut; fixed: FixedSchedule of --schedule.",
        enum_values=tuple(POLICIES),
    )
    define(
        flags.DEFINE_string,
        "policy_args",
        "LearnDrop: arguments of the policy's constructor, as "
        "'name=value,...' (e.g. 'threshold=0.3,patience=3,start_fraction="
        "0.2'); see each policy's docstring. An argument the policy does "
        "not take is an error.",
    )
    define(
        flags.DEFINE_integer,
        "eval_every",
        "LearnDrop: epochs between evaluations of the scores.",
        lower_bound=1,
    )
    define(
        flags.DEFINE_enum,
        "cache",
        "LearnDrop: 'auto' caches the frozen stem's output when that is "
        "exact; 'off' runs the frozen stem forward every epoch.",
        enum_values=learndrop_callback.CACHE_MODES,
    )
    define(
        flags.DEFINE_enum,
        "cache_dtype",
        "LearnDrop: dtype of the cached stem features.",
        enum_values=stem_cache.CACHE_DTYPES,
    )
    define(
        flags.DEFINE_integer,
        "memory_budget_mb",
        "LearnDrop: largest size of the feature cache in MiB (0 never "
        "caches); unset for half of the memory available when training "
        "starts.",
        lower_bound=0,
    )
    define(
        flags.DEFINE_integer,
        "augmented_views",
        "LearnDrop with --augment: number of augmented views of the stem's "
        "output to cache and replay in turn; 0 runs the frozen stem "
        "forward every epoch instead.",
        lower_bound=0,
    )
    define(
        flags.DEFINE_enum,
        "stem_dropout",
        "LearnDrop: how a frozen stem's dropout and noise layers run in "
        "training ('inference' switches them off, so the cache engages).",
        enum_values=list(learndrop_callback.STEM_DROPOUT),
    )
    define(
        flags.DEFINE_bool,
        "cache_validation",
        "LearnDrop: validate the head alone on cached stem features of the "
        "validation data after the freeze (--nocache_validation: the whole "
        "model validates).",
    )
    define(
        flags.DEFINE_bool,
        "restore_trainable",
        "LearnDrop: give every layer back its trainable flag when fit ends.",
    )
    define(
        flags.DEFINE_string,
        "schedule",
        "LearnDrop with --policy=fixed: the freeze plan "
        "'evaluation:units,...' (e.g. '2:3,4:6' freezes 3 units after the "
        "2nd evaluation and 6 after the 4th). Refused with other policies.",
    )
    define(
        flags.DEFINE_string,
        "init_weights",
        "Start from these weights (a .weights.h5 file saved by "
        "model.save_weights, e.g. --save_weights of a run on another "
        "task). Every layer but the output layer (the old task's "
        "classifier) whose shapes match takes them. Empty: train from "
        "scratch.",
    )
    define(
        flags.DEFINE_string,
        "save_weights",
        "Save the trained weights to this .weights.h5 file (for "
        "--init_weights of a later run); empty saves nothing.",
    )
    # Output.
    define(
        flags.DEFINE_string,
        "output_dir",
        "Folder for the result JSON (compare.py: also the plot and "
        "TensorBoard logs); empty writes nothing. A relative path is "
        "relative to the current folder.",
    )
    define(
        flags.DEFINE_integer,
        "verbose",
        "0: silent; 1: Keras progress bar; 2: one line per epoch. Above 0, "
        "LearnDrop also prints one line per epoch.",
        lower_bound=0,
        upper_bound=2,
    )


def config_from_flags(**overrides):
    """Returns the `TrainConfig` of the parsed flags, with `overrides`."""
    values = {
        field.name: FLAGS[field.name].value
        for field in dataclasses.fields(TrainConfig)
        if field.name in FLAGS
    }
    values.update(overrides)
    return TrainConfig(**values)


# The runners' names of the built-in policies.
POLICIES = {
    "default": keras_learndrop.LearnDropScores.default,
    "scores": keras_learndrop.LearnDropScores,
    "aggressive": keras_learndrop.LearnDropScores.aggressive,
    "consistency": keras_learndrop.DirectionConsistency,
    "autofreeze": keras_learndrop.AutoFreezeRule,
    "freezeout": keras_learndrop.FreezeOut,
    "fixed": keras_learndrop.FixedSchedule,
}


def make_policy(config):
    """Returns the freeze policy of `config` (`policy`, `policy_args`).

    Raises:
        ValueError: for an unknown policy, arguments it does not take, or a
            `schedule` with another policy than `"fixed"` (or none with it).
    """
    if config.policy not in POLICIES:
        raise ValueError(
            f"`policy` must be one of {', '.join(POLICIES)}. "
            f"Received: policy={config.policy!r}"
        )
    args = parse_policy_args(config.policy_args)
    schedule = parse_schedule(config.schedule)
    if config.policy != "fixed" and schedule is not None:
        raise ValueError(
            "`schedule` is the plan of `policy='fixed'` and only of it. "
            f"Received: policy={config.policy!r}, "
            f"schedule={config.schedule!r}"
        )
    if config.policy == "fixed":
        # An empty plan never freezes: LearnDrop only records its scores.
        args["schedule"] = schedule or {}
    try:
        return POLICIES[config.policy](**args)
    except TypeError as error:
        raise ValueError(
            f"`policy_args` {config.policy_args!r} do not fit policy "
            f"{config.policy!r}: {error}"
        ) from None


def parse_policy_args(text):
    """Parses 'name=value,...' into a dict of Python values.

    Values are read as Python literals where they are ones (`0.3`, `2`,
    `True`, `None`), else kept as strings.

    Example:

    >>> parse_policy_args("threshold=0.3, patience=2, per_learning_rate=False")
    {'threshold': 0.3, 'patience': 2, 'per_learning_rate': False}
    """
    args = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(
                "`policy_args` must be comma-separated 'name=value' pairs, "
                f"such as 'threshold=0.3,patience=2'. Received: {text!r}"
            )
        try:
            args[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            args[name.strip()] = value.strip()
    return args


def parse_schedule(text):
    """Parses a freeze plan 'evaluation:units,...' into a dict.

    Args:
        text: String such as `"2:3,4:6"`, or empty for none.

    Returns:
        A dict `{evaluation: units}` for `LearnDrop(schedule=...)`, or
        `None` for an empty string.

    Raises:
        ValueError: if `text` is not of that form.

    Example:

    >>> parse_schedule("2:3, 4:6")
    {2: 3, 4: 6}
    """
    if not text or not text.strip():
        return None
    plan = {}
    for item in text.split(","):
        evaluation, colon, units = item.strip().partition(":")
        try:
            if not colon:
                raise ValueError
            plan[int(evaluation)] = int(units)
        except ValueError:
            raise ValueError(
                "`schedule` must be comma-separated 'evaluation:units' "
                "pairs of integers, such as '2:3,4:6'. "
                f"Received: schedule={text!r}"
            ) from None
    return plan


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
        `data`, `fit_seconds`, `epoch_seconds`, `train_accuracy`,
        `train_loss`, `val_accuracy`, `val_loss` (of the last epoch;
        training values are Keras' running averages over that epoch),
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
    config = dataclasses.replace(config or TrainConfig(), **overrides)
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
    all_callbacks += list(callbacks)

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
        model.save_weights(config.save_weights)

    epochs_run = len(history.epoch)
    samples_seen = epochs_run * len(data.x_train)
    per_sample = keras_learndrop.model_flops(model)
    baseline_flops = per_sample * samples_seen
    report = learn_drop.history.to_dict() if learn_drop else None
    forward_flops = report["forward_flops"] if report else baseline_flops
    logs = history.history
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
        "epoch_seconds": list(timer.seconds),
        "train_accuracy": _last(logs, "accuracy"),
        "train_loss": _last(logs, "loss"),
        "val_accuracy": _last(logs, "val_accuracy"),
        "val_loss": _last(logs, "val_loss"),
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
        policy=make_policy(config),
        eval_every=config.eval_every,
        cache=config.cache,
        cache_dtype=config.cache_dtype,
        memory_budget=(
            None
            if config.memory_budget_mb is None
            else int(config.memory_budget_mb * 2**20)
        ),
        augmented_inputs=_AUGMENTED_INPUTS[config.augmented_inputs],
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
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("jit_compile", JIT_COMPILE),
        ("input_pipeline", _INPUT_PIPELINES),
        ("augmented_inputs", tuple(_AUGMENTED_INPUTS)),
    ):
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(
                f"`{name}` must be one of {', '.join(choices)}. "
                f"Received: {name}={value!r}"
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


def _last(logs, key):
    values = logs.get(key)
    return float(values[-1]) if values else None


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
    result = run(config_from_flags())
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
