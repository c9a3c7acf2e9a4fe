"""Online training: one model, new chunks of data, one LearnDrop callback.

The paper aims Learn&Drop at data that arrive in sequence. This runner
splits the training set into `--chunks` parts and calls `fit` once per part
with the same `LearnDrop(keep_frozen=True)`: the first call learns which
units settle and freezes them; every later call starts with that stem
frozen, fills a new cache from the new chunk, and trains only the head. It
prints, per chunk, the epoch modes, the frozen units, the time of `fit` and
the validation accuracy.

Example (the README's run; about a minute on 2 CPU cores):

    python -m examples.online --dataset=shared:mnist --chunks=4
"""

import time

from absl import app
from absl import flags

import keras_learndrop
from examples import datasets
from examples import models
from examples import train
from keras_learndrop.backend import keras

FLAGS = flags.FLAGS


def define_flags():
    """Defines the runner's flags (the model and data ones of train.py)."""
    train.define_flags(learn_drop_switch=False)
    if "chunks" not in FLAGS:
        flags.DEFINE_integer("chunks", 4, "Parts the data arrive in.")


def run(
    dataset="digits",
    model="small_cnn",
    width=1.0,
    chunks=4,
    epochs=4,
    batch_size=64,
    seed=0,
    policy=None,
):
    """Trains on the chunks in turn; returns one record per chunk.

    `policy` is passed to `LearnDrop` (`None`: its default).
    """
    keras.utils.set_random_seed(seed)
    data = datasets.load_dataset(dataset, seed=seed)
    net = models.build_model(
        model, data.input_shape, data.num_classes, width=width, seed=seed
    )
    net.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    learn_drop = keras_learndrop.LearnDrop(
        keep_frozen=True, seed=seed, policy=policy
    )
    size = len(data.x_train) // chunks
    records = []
    for chunk in range(chunks):
        part = slice(chunk * size, (chunk + 1) * size)
        start = time.perf_counter()
        history = net.fit(
            data.x_train[part],
            data.y_train[part],
            epochs=epochs,
            batch_size=batch_size,
            validation_data=(data.x_val, data.y_val),
            callbacks=[learn_drop],
            verbose=0,
        )
        records.append(
            {
                "chunk": chunk + 1,
                "seconds": time.perf_counter() - start,
                "modes": [e.mode for e in learn_drop.history.epochs[-epochs:]],
                "frozen_units": learn_drop.history.stem_size,
                "units": len(learn_drop.history.unit_names),
                "val_accuracy": history.history["val_accuracy"][-1],
            }
        )
    return records


def main(argv):
    del argv
    records = run(
        FLAGS.dataset,
        FLAGS.model,
        FLAGS.width,
        FLAGS.chunks,
        FLAGS.epochs,
        FLAGS.batch_size,
        FLAGS.seed,
    )
    print("chunk  fit s  frozen  val acc  epoch modes")
    for r in records:
        print(
            f"{r['chunk']:>5} {r['seconds']:6.1f} {r['frozen_units']:>3}/"
            f"{r['units']:<3} {100 * r['val_accuracy']:6.2f}%  "
            f"{' '.join(r['modes'])}"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
