r"""keras.io's "Transfer learning & fine-tuning", with and without LearnDrop.

The guide's recipe: a `keras.applications` base with `trainable = False`,
a new head (`GlobalAveragePooling2D`, `Dropout(0.2)`, `Dense`), Adam; then
phase 2: the whole model unfrozen, Adam at 1e-5, a few more epochs (the
base is called with `training=False`, so its BatchNormalization stays in
inference mode). Each variant of phase 1 runs twice in this process, from
the same weights, seed and data: plain `fit`, and `fit` with `LearnDrop()`
(the default policy); phase 2 goes on from each run's own phase 1.

Variants (`--variants`):

* `none`: no augmentation (LearnDrop caches the base in epoch 1 and
  replays it from epoch 2);
* `model`: the guide's `RandomFlip` and `RandomRotation` layers at the
  model's input, before the base (the base then runs forward every epoch);
* `pipeline`: the same layers mapped onto the `tf.data` pipeline, as the
  guide's "Image classification from scratch" tells CPU users to do
  (LearnDrop finds them there and runs the base forward too).

ImageNet weights cannot be downloaded where this was measured, so the base
is pre-trained here instead: `keras.applications.MobileNetV2` (or ResNet50)
with `weights=None` trained from scratch on CIFAR-10 classes 0-4 (airplane
... deer) of `--pretrain_train` training images; phases 1 and 2 train on
classes 5-9 (dog ... truck) and validate on held-out images of those
classes. The pre-trained weights are saved to `--base_weights` and reused
when that file exists.

It also times what LearnDrop's input check costs on these data: the scan
of the `pipeline` variant's `tf.data` graph, and the probe of a
`keras.utils.PyDataset` serving the same batches (two reads of batch 0).

Example (the README's run, one thread on one core):

    taskset -c 1 python -m benchmarks.transfer_learning \
        --dataset=shared:cifar10 --base=mobilenetv2 --threads=1 \
        --output_json=benchmarks/results/transfer_learning_mobilenetv2.json
"""

import dataclasses
import json
import os
import platform
import time

import numpy as np
from absl import app
from absl import flags

import keras_learndrop
from examples import datasets
from examples import train
from keras_learndrop import input_randomness
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

BASES = ("mobilenetv2", "resnet50")
VARIANTS = ("none", "model", "pipeline")


def define_flags():
    """Defines the benchmark's flags."""
    for definer, name, default, help_text, kwargs in (
        (
            flags.DEFINE_string,
            "dataset",
            "shared:cifar10",
            "Data set (examples/datasets.py).",
            {},
        ),
        (
            flags.DEFINE_integer,
            "image_size",
            32,
            "Image size (pixels) of phases 1 and 2 (CIFAR-10's 32x32 images "
            "are resized, as the guide resizes its images to 150x150).",
            {},
        ),
        (
            flags.DEFINE_integer,
            "pretrain_image_size",
            32,
            "Image size (pixels) of the pre-training.",
            {},
        ),
        (
            flags.DEFINE_enum,
            "base",
            "mobilenetv2",
            "The base.",
            {"enum_values": BASES},
        ),
        (
            flags.DEFINE_float,
            "alpha",
            0.35,
            "Width multiplier of MobileNetV2.",
            {},
        ),
        (
            flags.DEFINE_string,
            "pretrain_classes",
            "0-4",
            "Classes the base is pre-trained on.",
            {},
        ),
        (
            flags.DEFINE_string,
            "classes",
            "5-9",
            "Classes of phases 1 and 2.",
            {},
        ),
        (
            flags.DEFINE_integer,
            "pretrain_train",
            10000,
            "Training images of the pre-training.",
            {},
        ),
        (
            flags.DEFINE_integer,
            "pretrain_epochs",
            15,
            "Epochs of the pre-training (0 keeps the random weights).",
            {},
        ),
        (
            flags.DEFINE_integer,
            "train",
            4000,
            "Training images of phases 1 and 2.",
            {},
        ),
        (
            flags.DEFINE_integer,
            "val",
            1000,
            "Held-out validation images of phases 1 and 2.",
            {},
        ),
        (flags.DEFINE_integer, "phase1_epochs", 10, "Epochs of phase 1.", {}),
        (
            flags.DEFINE_integer,
            "phase2_epochs",
            3,
            "Epochs of phase 2 (0 skips it).",
            {},
        ),
        (flags.DEFINE_integer, "batch_size", 64, "Batch size.", {}),
        (
            flags.DEFINE_list,
            "variants",
            list(VARIANTS),
            f"Variants of phase 1 to run, of {', '.join(VARIANTS)}.",
            {},
        ),
        (flags.DEFINE_integer, "seed", 0, "Seed of the data and weights.", {}),
        (
            flags.DEFINE_integer,
            "threads",
            0,
            "TensorFlow's intra- and inter-op threads; 0 keeps its default.",
            {},
        ),
        (
            flags.DEFINE_string,
            "base_weights",
            "outputs/pretrain/transfer_{base}_{size}.weights.h5",
            "Where the pre-trained base's weights are kept ({base} and "
            "{size} are replaced by --base and --pretrain_image_size); made "
            "when missing.",
            {},
        ),
        (flags.DEFINE_string, "output_json", None, "Also write results.", {}),
    ):
        if name not in FLAGS:
            definer(name, default, help=help_text, **kwargs)


def make_base(name, input_shape, alpha):
    """Returns a `keras.applications` base without its top, random weights."""
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(
            input_shape=input_shape,
            alpha=alpha,
            include_top=False,
            weights=None,
        )
    return keras.applications.ResNet50(
        input_shape=input_shape, include_top=False, weights=None
    )


def augmentation(seed):
    """The guide's augmentation: a random flip and a small rotation."""
    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1, seed=seed + 1),
    ]


def make_model(base, num_classes, front=(), base_training=False):
    """The guide's model: augmentation, scaling, the base, a new head.

    `base_training=False` keeps the base's BatchNormalization in inference
    mode, as the guide does; the pre-training passes `None`.
    """
    inputs = keras.Input(base.input_shape[1:])
    x = inputs
    for layer in front:
        x = layer(x)
    x = keras.layers.Rescaling(2.0, offset=-1.0)(x)  # [0, 1] -> [-1, 1].
    x = base(x, training=base_training)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _rgb(x):
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def load(config):
    """Returns the pre-training and the fine-tuning data (`Dataset`s)."""

    def at_size(size):
        data = datasets.load_dataset(
            config["dataset"],
            image_size=size,
            validation_split=0.1,
            seed=config["seed"],
        )
        return _with_rgb(data)

    pretrain = train.select_classes(
        at_size(config["pretrain_image_size"]),
        train.parse_classes(config["pretrain_classes"]),
    )
    finetune = train.select_classes(
        at_size(config["image_size"]),
        train.parse_classes(config["classes"]),
    )
    pretrain = _head(pretrain, config["pretrain_train"], None)
    finetune = _head(finetune, config["train"], config["val"])
    return pretrain, finetune


def _with_rgb(data):
    return dataclasses.replace(
        data,
        x_train=_rgb(data.x_train),
        x_val=_rgb(data.x_val),
        input_shape=data.input_shape[:2] + (3,),
    )


def _head(data, train_count, val_count):
    return dataclasses.replace(
        data,
        x_train=data.x_train[:train_count],
        y_train=data.y_train[:train_count],
        x_val=data.x_val[:val_count],
        y_val=data.y_val[:val_count],
    )


def pretrain_base(config, data):
    """Pre-trains the base (or loads it); returns it and what it reached."""
    path = config["base_weights"].format(
        base=config["base"], size=config["pretrain_image_size"]
    )
    keras.utils.set_random_seed(config["seed"])
    base = make_base(config["base"], data.input_shape, config["alpha"])
    if os.path.exists(path):
        base.load_weights(path)
        return base, {"loaded_from": path}
    # Keras's MobileNetV2 updates its BatchNormalization statistics with
    # momentum 0.999: after this short pre-training they would still be far
    # from the data's, and the base's features in inference mode collapsed
    # to a constant (ImageNet weights come with settled statistics).
    momentum = {}
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            momentum[layer.name] = layer.momentum
            layer.momentum = min(layer.momentum, 0.9)
    model = make_model(base, data.num_classes, base_training=None)
    _compile(model, 1e-3)
    start = time.perf_counter()
    val_accuracy = None
    if config["pretrain_epochs"]:
        history = model.fit(
            train.array_dataset(
                data.x_train, data.y_train, config["batch_size"], config["seed"]
            ),
            validation_data=train.array_dataset(
                data.x_val, data.y_val, config["batch_size"]
            ),
            epochs=config["pretrain_epochs"],
            verbose=0,
        )
        val_accuracy = history.history["val_accuracy"][-1]
    for layer in base.layers:
        if layer.name in momentum:
            layer.momentum = momentum[layer.name]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    base.save_weights(path)
    return base, {
        "saved_to": path,
        "seconds": time.perf_counter() - start,
        "train_samples": len(data.x_train),
        "val_samples": len(data.x_val),
        "val_accuracy": val_accuracy,
    }


def _phase1_data(config, data, variant):
    augment = None
    if variant == "pipeline":
        layers = augmentation(config["seed"])

        def augment(x, y):
            for layer in layers:
                x = layer(x, training=True)
            return x, y

    return train.array_dataset(
        data.x_train,
        data.y_train,
        config["batch_size"],
        config["seed"],
        augment,
    )


def run_arm(config, data, base_weights, variant, learn_drop):
    """Phase 1 then phase 2 of one variant, plain or with LearnDrop."""
    keras.utils.set_random_seed(config["seed"])
    base = make_base(config["base"], data.input_shape, config["alpha"])
    base.set_weights(base_weights)
    base.trainable = False
    front = augmentation(config["seed"]) if variant == "model" else ()
    model = make_model(base, data.num_classes, front)
    val = train.array_dataset(data.x_val, data.y_val, config["batch_size"])
    result = {}
    for phase, epochs, learning_rate in (
        ("phase1", config["phase1_epochs"], 1e-3),
        ("phase2", config["phase2_epochs"], 1e-5),
    ):
        if not epochs:
            continue
        if phase == "phase2":
            base.trainable = True
        _compile(model, learning_rate)
        callbacks = [keras_learndrop.LearnDrop()] if learn_drop else []
        dataset = _phase1_data(config, data, variant)
        start = time.perf_counter()
        history = model.fit(
            dataset,
            validation_data=val,
            epochs=epochs,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        report = callbacks[0].history if callbacks else None
        result[phase] = {
            "seconds": seconds,
            "val_accuracy": history.history["val_accuracy"],
            "train_accuracy": history.history["accuracy"],
            "modes": [e.mode for e in report.epochs] if report else None,
            "epoch_seconds": (
                [e.seconds for e in report.epochs] if report else None
            ),
            "frozen_at": report.frozen_at if report else None,
            "units": len(report.unit_names) if report else None,
            "flops_saved": report.flops_reduction if report else None,
            "notes": report.notes if report else None,
        }
    return result


def time_input_checks(config, data, repeats=5):
    """Seconds of the `tf.data` scan and of the `PyDataset` probe."""
    dataset = _phase1_data(config, data, "pipeline")
    scans = [
        input_randomness.scan_dataset(dataset).seconds for _ in range(repeats)
    ]
    batch_size = config["batch_size"]
    x, y = data.x_train, data.y_train
    rng = np.random.default_rng(config["seed"])

    class Flips(keras.utils.PyDataset):
        def __len__(self):
            return len(x) // batch_size

        def __getitem__(self, index):
            batch = x[index * batch_size : (index + 1) * batch_size]
            flip = rng.random(len(batch)) < 0.5
            batch = np.where(
                flip[:, None, None, None], batch[:, :, ::-1], batch
            )
            return batch, y[index * batch_size : (index + 1) * batch_size]

    probes = [
        input_randomness.probe_py_dataset(Flips()) for _ in range(repeats)
    ]
    return {
        "scan_seconds": scans,
        "scan_found": input_randomness.scan_dataset(dataset).describe(),
        "probe_seconds": [p.seconds for p in probes],
        "probe_random": [p.random for p in probes],
        "batch_size": batch_size,
    }


def run(**overrides):
    """Runs the benchmark; returns a JSON-ready dict."""
    config = {
        name: FLAGS[name].value
        for name in (
            "dataset",
            "image_size",
            "pretrain_image_size",
            "base",
            "alpha",
            "pretrain_classes",
            "classes",
            "pretrain_train",
            "pretrain_epochs",
            "train",
            "val",
            "phase1_epochs",
            "phase2_epochs",
            "batch_size",
            "variants",
            "seed",
            "threads",
            "base_weights",
        )
    }
    config.update(overrides)
    for variant in config["variants"]:
        if variant not in VARIANTS:
            raise ValueError(
                f"`variants` holds names of {', '.join(VARIANTS)}. "
                f"Received: variants={config['variants']!r}"
            )
    if config["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    pretrain, finetune = load(config)
    base, pretraining = pretrain_base(config, pretrain)
    weights = base.get_weights()
    results = {
        "config": config,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus_visible": len(os.sched_getaffinity(0)),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "data": {
            "source": finetune.source,
            "pretrain_source": pretrain.source,
            "train_samples": len(finetune.x_train),
            "val_samples": len(finetune.x_val),
        },
        "pretraining": pretraining,
        "input_checks": time_input_checks(config, finetune),
        "variants": {},
    }
    for variant in config["variants"]:
        arms = {}
        for arm in ("plain", "learndrop"):
            arms[arm] = run_arm(
                config, finetune, weights, variant, arm == "learndrop"
            )
            print(_line(variant, arm, arms[arm]), flush=True)
        for phase in arms["plain"]:
            plain, ours = arms["plain"][phase], arms["learndrop"][phase]
            arms[f"{phase}_speedup"] = plain["seconds"] / ours["seconds"]
            arms[f"{phase}_accuracy_change"] = 100 * (
                ours["val_accuracy"][-1] - plain["val_accuracy"][-1]
            )
        results["variants"][variant] = arms
    return results


def _line(variant, arm, result):
    return f"{variant:9s} {arm:10s} " + "  ".join(
        f"{phase}: {r['seconds']:.1f} s, val {100 * r['val_accuracy'][-1]:.2f} "
        f"% {' '.join(r['modes'] or [])}"
        for phase, r in result.items()
    )


def main(argv):
    del argv
    results = run()
    for variant, arms in results["variants"].items():
        print(
            f"{variant}: "
            + "; ".join(
                f"{phase} {arms[f'{phase}_speedup']:.2f}x, "
                f"{arms[f'{phase}_accuracy_change']:+.2f} points"
                for phase in arms["plain"]
            )
        )
    checks = results["input_checks"]
    print(
        f"scan {1e3 * np.median(checks['scan_seconds']):.2f} ms, probe "
        f"{1e3 * np.median(checks['probe_seconds']):.2f} ms"
    )
    path = FLAGS["output_json"].value
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as file:
            json.dump(train.to_json(results), file, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
