"""Online training: one model, new chunks of data, one LearnDrop callback.

The paper aims Learn&Drop at data that arrive in sequence. This runner
splits the training set into `--chunks` parts and calls `fit` once per part
with the same `LearnDrop(keep_frozen=True)`: the first call learns which
units settle and freezes them; every later call starts with that stem
frozen, fills a new cache from the new chunk, and trains only the head. It
prints, per chunk, the epoch modes, the frozen units, the time of `fit` and
the validation accuracy.

The flags are those of `examples/train.py` (model, data, optimizer,
LearnDrop, output) and `--chunks`; each means what it means there, with
`--epochs` the epochs of each chunk's `fit` and the learning-rate schedule
running over all chunks. The model, its optimizer and the callback are built
by `train.py`'s own functions from `train_flags.config_from_flags()`, so every
flag takes effect here as it does there. With `--output_dir` the records go
to `<output_dir>/online.json`.

Example (the run of docs/results.md; about a minute on 2 CPU cores):

    python -m examples.online --dataset=shared:mnist --model=small_cnn \
        --width=1 --chunks=4 --epochs=4 --batch_size=64
"""

import dataclasses
import math
import os
import time

from absl import app
from absl import flags

from examples import train
from examples import train_flags
from keras_learndrop.backend import keras

FLAGS = flags.FLAGS

JSON_NAME = "online.json"


def define_flags():
    """Defines the flags of `train.py` (but `--learn_drop`) and `--chunks`."""
    train_flags.define_flags(learn_drop_switch=False, output_dir="")
    if "chunks" not in FLAGS:
        flags.DEFINE_integer(
            "chunks", 4, "Parts the training data arrive in.", lower_bound=1
        )
    # So that `--help` lists them as this program's own flags.
    flags.adopt_module_key_flags(train)


def run(config=None, chunks=4, **overrides):
    """Trains on the chunks in turn; returns one record per chunk.

    Args:
        config: A `train_flags.TrainConfig`, or `None` for its defaults.
        chunks: Integer >= 1. Parts the training data arrive in.
        **overrides: Fields of `train_flags.TrainConfig` to change, e.g.
            `run(model="small_cnn", epochs=2)`.

    Returns:
        A list with one dict per chunk: `chunk` (from 1), `seconds` (of
        its `fit`), `modes` (of its epochs), `frozen_units`, `units` and
        `val_accuracy` (after its last epoch).

    Raises:
        ValueError: for `learn_drop=False` (online training here is
            LearnDrop's), for fewer samples than chunks, or an invalid
            setting of `config`.
    """
    config = dataclasses.replace(
        config or train_flags.TrainConfig(), **overrides
    )
    if not config.learn_drop:
        raise ValueError(
            "examples.online trains with LearnDrop(keep_frozen=True); for a "
            "run without it use examples.train --nolearn_drop. Received: "
            "learn_drop=False"
        )
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(
            f"`chunks` must be an integer >= 1. Received: chunks={chunks!r}"
        )
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    data = train.load_data(config)
    size = len(data.x_train) // chunks
    if size < 1:
        raise ValueError(
            f"`chunks` must not exceed the {len(data.x_train)} training "
            f"samples. Received: chunks={chunks}"
        )
    parts = [
        dataclasses.replace(
            data,
            x_train=data.x_train[i * size : (i + 1) * size],
            y_train=data.y_train[i * size : (i + 1) * size],
        )
        for i in range(chunks)
    ]
    steps = chunks * config.epochs * math.ceil(size / config.batch_size)
    net = train.build_model(config, parts[0], steps)
    learn_drop = train.learn_drop_callback(config, keep_frozen=True)
    records = []
    for chunk, part in enumerate(parts, start=1):
        train_input, val_input = train.fit_inputs(part, config)
        start = time.perf_counter()
        history = net.fit(
            *train_input,
            validation_data=val_input,
            shuffle=len(train_input) == 2,
            epochs=config.epochs,
            callbacks=[learn_drop],
            verbose=config.verbose,
        )
        records.append(
            {
                "chunk": chunk,
                "seconds": time.perf_counter() - start,
                "modes": [
                    e.mode for e in learn_drop.history.epochs[-config.epochs :]
                ],
                "frozen_units": learn_drop.history.stem_size,
                "units": len(learn_drop.history.unit_names),
                "val_accuracy": train.to_json(
                    history.history.get("val_accuracy", [None])[-1]
                ),
            }
        )
    if config.output_dir:
        train.write_json(
            {
                "config": train.to_json(dataclasses.asdict(config)),
                "chunks": records,
            },
            os.path.join(config.output_dir, JSON_NAME),
        )
    return records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    records = run(train_flags.config_from_flags(), FLAGS.chunks)
    print("chunk  fit s  frozen  val acc  epoch modes")
    for r in records:
        accuracy = r["val_accuracy"]
        print(
            f"{r['chunk']:>5} {r['seconds']:6.1f} {r['frozen_units']:>3}/"
            f"{r['units']:<3} "
            + ("   -   " if accuracy is None else f"{100 * accuracy:6.2f}%")
            + f"  {' '.join(r['modes'])}"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
