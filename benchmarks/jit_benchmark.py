"""Is XLA faster for the rebuilt steps on this machine? Side by side.

Times LearnDrop's two rebuilt steps (replay of cached features, and stem
forward + head) with and without `jit_compile`, on the same model, cut,
data and batch, in one process, and prints milliseconds per step and the
ratio. `jit_compile="auto"` follows what this measured: off on a CPU, tried
on a GPU.

Example (the figure of docs/results.md; about a minute on 2 CPU cores):

    python -m benchmarks.jit_benchmark --model=resnet20 --cut_units=7
"""

import time

import numpy as np
from absl import app
from absl import flags

from examples import models
from keras_learndrop import graph
from keras_learndrop import train_step
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def define_flags():
    """Defines the benchmark's flags."""
    for definer, name, default, help_text in (
        (flags.DEFINE_string, "model", "resnet20", "Model name."),
        (flags.DEFINE_integer, "cut_units", 7, "Units frozen at the cut."),
        (flags.DEFINE_integer, "image_size", 32, "Input height and width."),
        (flags.DEFINE_integer, "batch_size", 128, "Batch size."),
        (flags.DEFINE_integer, "steps", 16, "Timed steps per variant."),
    ):
        if name not in FLAGS:
            definer(name, default, help_text)


def _time(function, args_per_step):
    function(*args_per_step[0])  # Trace, and compile with XLA.
    start = time.perf_counter()
    for args in args_per_step:
        logs = function(*args)
    logs = logs[0] if isinstance(logs, tuple) else logs
    float(logs["loss"])  # Waits for the last step.
    return (time.perf_counter() - start) / len(args_per_step)


def run(model="resnet20", cut_units=7, image_size=32, batch_size=128, steps=16):
    """Returns seconds per step of each step with and without XLA."""
    rng = np.random.default_rng(0)
    shape = (image_size, image_size, 3)
    x = rng.random((batch_size * 4, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch_size * 4)
    seconds = {}
    for jit in (False, True):
        net = models.build_model(model, shape, 10, seed=0)
        net.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        chain = graph.UnitChain(net)
        for layer in chain.layers_of(0, cut_units):
            layer.trainable = False
        step = train_step.HeadStep(net, chain, cut_units, jit)
        features = step.stem_features(x)
        batches = [
            tf.range(i % 4 * batch_size, (i % 4 + 1) * batch_size)
            for i in range(steps)
        ]
        seconds[("replay", jit)] = _time(
            step.replay_step,
            [(features, tf.constant(y), None, b) for b in batches],
        )
        data = [
            (tf.constant(x[b.numpy()]), tf.constant(y[b.numpy()]))
            for b in batches
        ]
        seconds[("stem_forward", jit)] = _time(
            step.stem_step, [(d,) for d in data]
        )
    return seconds


def main(argv):
    del argv
    seconds = run(
        FLAGS.model,
        FLAGS.cut_units,
        FLAGS.image_size,
        FLAGS.batch_size,
        FLAGS.steps,
    )
    print("step          no XLA ms   XLA ms   XLA/no-XLA")
    for name in ("replay", "stem_forward"):
        plain, xla = seconds[(name, False)], seconds[(name, True)]
        print(
            f"{name:<13} {1000 * plain:9.1f} {1000 * xla:8.1f} "
            f"{xla / plain:10.2f}x"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
