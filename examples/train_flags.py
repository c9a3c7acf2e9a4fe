"""The flags of the example runners, and the `TrainConfig` they fill.

`examples/train.py` trains one run from a `TrainConfig`; this module
defines one absl flag per field (`define_flags`), turns parsed flags into a
config (`config_from_flags`) and names the freeze policies and their
arguments as the runners spell them (`POLICIES`, `make_policy`).
`examples/compare.py`, `examples/online.py` and the benchmarks share them.
"""

import ast
import dataclasses

from absl import flags

import keras_learndrop
from examples import datasets
from examples import models
from keras_learndrop import options
from keras_learndrop import stem_cache

FLAGS = flags.FLAGS

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")
JIT_COMPILE = ("auto", "true", "false")
# Median seconds per epoch measured on 2 shared CPU cores (the default
# vgg11 at width 0.25 on 1,617 digits at 32x32, batch 64; epochs 2-6 of 3
# alternating runs each): tf_data 1.60, numpy 2.31.
INPUT_PIPELINES = ("tf_data", "numpy")
# `--augmented_inputs` -> LearnDrop's `augmented_inputs`.
AUGMENTED_INPUTS = {"detect": None, "true": True, "false": False}


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
    reduce_lr_patience: int = 0
    reduce_lr_factor: float = 0.2
    early_stopping_patience: int = 0
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
        enum_values=INPUT_PIPELINES,
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
        enum_values=list(AUGMENTED_INPUTS),
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
        "every unit); aggressive: LearnDropScores.aggressive(); drift: "
        "FeatureDrift; schedule_or_drift: ScheduleOrDrift; "
        "consistency: "
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
        enum_values=options.CACHE_MODES,
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
        enum_values=list(options.STEM_DROPOUT),
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
        flags.DEFINE_integer,
        "reduce_lr_patience",
        "keras.callbacks.ReduceLROnPlateau's patience on val_loss (0: no "
        "such callback); needs --lr_schedule=constant.",
        lower_bound=0,
    )
    define(
        flags.DEFINE_float,
        "reduce_lr_factor",
        "ReduceLROnPlateau's factor (with --reduce_lr_patience).",
        lower_bound=0.0,
        upper_bound=1.0,
    )
    define(
        flags.DEFINE_integer,
        "early_stopping_patience",
        "keras.callbacks.EarlyStopping's patience on val_loss, restoring "
        "the best weights (0: no such callback; --epochs is then the most "
        "the run may take).",
        lower_bound=0,
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
    "drift": keras_learndrop.FeatureDrift,
    "schedule_or_drift": keras_learndrop.ScheduleOrDrift,
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
