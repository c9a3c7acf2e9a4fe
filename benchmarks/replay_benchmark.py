"""What the feature cache costs: replay against the head alone, side by side.

Trains the same model on the same data, from the same initial weights, for
the same epochs, in one process:

1. `plain`: `model.fit` without LearnDrop.
2. `stem_forward`: LearnDrop with `cache="off"`: after the cut the frozen
   stem still runs forward every epoch (no backward work).
3. `replay`: LearnDrop with the cache: one fill epoch, then replay.
4. `head_only`: plain Keras `fit` of the head alone (a functional model from
   the cut to the output) on stem features precomputed once: the floor that
   replay should reach.

The cut is forced (`LearnDrop(policy=FixedSchedule(...))`) after a fixed
epoch, so the runs differ only in how the epochs after the cut are
executed. It prints the time of every epoch and the ratios of the post-cut
epochs.

Example (the README's table; about 25 minutes on 2 CPU cores):

    python -m benchmarks.replay_benchmark --model=resnet20 \\
        --dataset=shared:cifar10 --max_train=10000 --cut_units=7
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
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def define_flags():
    """Defines the benchmark's flags (the model and data ones of train.py)."""
    train.define_flags(learn_drop_switch=False)
    for definer, name, default, help_text in (
        (flags.DEFINE_integer, "cut_epoch", 1, "Full epochs before the cut."),
        (flags.DEFINE_integer, "cut_units", 7, "Units frozen at the cut."),
        (flags.DEFINE_string, "output_json", None, "Also write results."),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


def _compile(model, seed):
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit(model, x, y, epochs, batch_size, seed, callbacks=()):
    timer = train.EpochTimer()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    history = model.fit(
        train.array_dataset(x, y, batch_size, shuffle_seed=seed),
        epochs=epochs,
        callbacks=[*callbacks, timer],
        verbose=0,
    )
    return {
        "fit_seconds": time.perf_counter() - start,
        "epoch_seconds": timer.seconds,
        "final_loss": history.history["loss"][-1],
    }


def run(
    model="resnet20",
    width=1.0,
    dataset="shared:cifar10",
    max_train=10000,
    image_size=None,
    batch_size=128,
    epochs=5,
    cut_epoch=1,
    cut_units=7,
    seed=0,
):
    """Runs the four variants and returns their timings and ratios."""
    if epochs < cut_epoch + 3:
        raise ValueError(
            "The ratios compare epochs after the fill epoch: `epochs` must "
            f"be at least cut_epoch + 3 = {cut_epoch + 3}. Received: "
            f"epochs={epochs}."
        )
    data = datasets.load_dataset(
        dataset, image_size=image_size, max_train=max_train, max_val=1
    )
    x, y = data.x_train, data.y_train
    base = models.build_model(
        model, data.input_shape, data.num_classes, width=width, seed=seed
    )
    initial = base.get_weights()

    def fresh():
        copy = models.build_model(
            model, data.input_shape, data.num_classes, width=width, seed=seed
        )
        copy.set_weights(initial)
        return _compile(copy, seed)

    results = {}
    results["plain"] = _fit(fresh(), x, y, epochs, batch_size, seed)
    for name, cache in (("stem_forward", "off"), ("replay", "auto")):
        learn_drop = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({cut_epoch: cut_units}),
            cache=cache,
            seed=seed,
        )
        results[name] = _fit(
            fresh(), x, y, epochs, batch_size, seed, [learn_drop]
        )
        results[name]["modes"] = [e.mode for e in learn_drop.history.epochs]
        results[name]["flops_saved"] = learn_drop.history.flops_reduction

    # The floor: plain Keras training of the head on precomputed features.
    full = fresh()
    chain = graph.UnitChain(full)
    for layer in chain.layers_of(0, cut_units):
        layer.trainable = False
    features = np.concatenate(
        [
            chain.forward(tf.constant(x[i : i + 512]), 0, cut_units, True)
            for i in range(0, len(x), 512)
        ]
    )
    head = keras.Model(chain.cut_tensor(cut_units), full.outputs[0])
    results["head_only"] = _fit(
        _compile(head, seed),
        features,
        y,
        epochs - cut_epoch,
        batch_size,
        seed,
    )

    after = slice(cut_epoch + 2, None)  # past the fill epoch
    mean = lambda seconds: float(np.mean(seconds))  # noqa: E731
    plain = mean(results["plain"]["epoch_seconds"][after])
    replay = mean(results["replay"]["epoch_seconds"][after])
    stem = mean(results["stem_forward"]["epoch_seconds"][after])
    head_only = mean(results["head_only"]["epoch_seconds"][1:])
    results["ratios"] = {
        "replay_over_head_only": replay / head_only,
        "plain_over_replay": plain / replay,
        "plain_over_stem_forward": plain / stem,
        "fit_plain_over_fit_replay": results["plain"]["fit_seconds"]
        / results["replay"]["fit_seconds"],
    }
    results["config"] = dict(
        model=model,
        width=width,
        dataset=dataset,
        samples=len(x),
        batch_size=batch_size,
        epochs=epochs,
        cut_epoch=cut_epoch,
        cut_units=cut_units,
        units=len(chain),
        seed=seed,
    )
    return results


def format_table(results):
    """Returns the printed table of a `run` result."""
    lines = [
        "run            "
        + " ".join(f"ep{i + 1:>2}s" for i in range(results["config"]["epochs"]))
        + "    fit s"
    ]
    for name in ("plain", "stem_forward", "replay", "head_only"):
        seconds = results[name]["epoch_seconds"]
        pad = results["config"]["epochs"] - len(seconds)
        cells = ["    -"] * pad + [f"{s:5.1f}" for s in seconds]
        lines.append(
            f"{name:<14} {' '.join(cells)} {results[name]['fit_seconds']:8.1f}"
        )
    modes = " ".join(results["replay"]["modes"])
    lines.append(f"replay epoch modes: {modes}")
    for key, value in results["ratios"].items():
        lines.append(f"{key:<28} {value:6.2f}x")
    return "\n".join(lines)


def main(argv):
    del argv
    results = run(
        model=FLAGS.model,
        width=FLAGS.width,
        dataset=FLAGS.dataset,
        max_train=FLAGS.max_train,
        image_size=FLAGS.image_size or None,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        cut_epoch=FLAGS.cut_epoch,
        cut_units=FLAGS.cut_units,
        seed=FLAGS.seed,
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
