"""Tests of LearnDrop under `tf.distribute` strategies.

`MirroredStrategy` runs here on two logical CPU devices. They must be
configured before TensorFlow initialises its devices, which any test module
imported earlier in the same process may have done (pytest-xdist imports
every collected module in each worker). When that has happened, the
`MirroredStrategy` tests run in a fresh Python process instead
(`FreshProcessTest`), so they run under plain `pytest` and under
`pytest -n 2` alike.

Under `MirroredStrategy` each replica's part of a fill batch is cached
apart; a replay step takes a batch of the global size (that of `fit`) and
splits it among the replicas again, so replay epochs run the same steps
with the same per-replica batches as the fill epoch, and the loss and
weights match a single-device run with the same order.

What `MultiWorkerMirroredStrategy` needs (each worker is one process with
its own `fit` call):

* Each worker caches its own shard: the cache is per worker, filled from
  the batches that worker sees, and its replay indices point into that
  worker's cache. So they are not auto-sharded across workers: each worker
  replays every sample of its own shard once per epoch, in global batches
  split over all replicas, which gives the per-replica batch of the fill
  epoch. `MultiWorkerTest` checks this with two worker processes.
* The replay order must be the same on all workers: it is drawn from
  `(seed, epoch)`, so pass the same `seed` to `LearnDrop` on every worker
  (`seed=None` draws one from NumPy's generator, the same only if every
  worker calls `keras.utils.set_random_seed` with the same seed). Workers
  with shards of the same size then run the same number of replay steps,
  which the all-reduce of every step needs.
* `backup_dir`: one directory per worker, or one shared directory as
  `BackupAndRestore`'s is. Every worker writes the same scores and stem
  (they come from the synchronised weights; only the sample counts in the
  history are per worker), each through a temporary file of its own and an
  atomic rename.

Keras 3.15's own `fit` does not run under `MultiWorkerMirroredStrategy`
yet (keras-team/keras#20585: `_maybe_symbolic_build` and then the reduction
of the step's logs fail on per-replica values), so a full LearnDrop `fit`
across workers cannot be tested with this Keras; `MultiWorkerTest` tests
LearnDrop's own part, the replay indices of each worker.
"""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap
import unittest

import numpy as np

from keras_learndrop.backend import tf

CHILD_ENV = "LEARNDROP_DISTRIBUTE_CHILD"
IN_CHILD = os.environ.get(CHILD_ENV) == "1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_logical_cpus():
    """Splits the CPU into two logical devices, if it is not too late."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu,
            [
                tf.config.LogicalDeviceConfiguration(),
                tf.config.LogicalDeviceConfiguration(),
            ],
        )
    except RuntimeError:  # The devices are initialised already.
        pass
    return len(tf.config.list_logical_devices("CPU")) >= 2


TWO_CPUS = _two_logical_cpus()

import keras_learndrop  # noqa: E402
from keras_learndrop import graph  # noqa: E402
from keras_learndrop.backend import keras  # noqa: E402
from tests import tiny_models  # noqa: E402


class Recorder(keras.layers.Layer):
    """`tiny_models.SampleRecorder` with per-replica counters.

    The counters are synchronised on read and summed: each replica adds
    what it sees, and reading gives the total over the replicas.
    """

    def build(self, input_shape):
        self.gate = self.add_weight(
            shape=(), initializer="zeros", trainable=True, name="gate"
        )
        self.count = keras.Variable(
            0.0,
            trainable=False,
            name="count",
            aggregation="sum",
            synchronization="on_read",
        )
        self.total = keras.Variable(
            0.0,
            trainable=False,
            name="total",
            dtype="float64",
            aggregation="sum",
            synchronization="on_read",
        )

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(tf.cast(tf.shape(inputs)[0], "float32"))
            self.total.assign_add(tf.reduce_sum(tf.cast(inputs, "float64")))
        return inputs


def _net(recorder):
    """`tiny_models.conv_net` without BatchNorm.

    In a full epoch BatchNorm normalises each replica's half batch apart,
    so a model with it cannot match a single-device run.
    """
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", name="conv1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(6, 3, padding="same", name="conv2"),
        keras.layers.ReLU(name="relu2"),
        keras.layers.MaxPooling2D(name="pool2"),
    ]
    if recorder:
        layers.append(Recorder(name="recorder"))
    layers += [
        keras.layers.Conv2D(8, 3, padding="same", name="conv3"),
        keras.layers.ReLU(name="relu3"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", name="dense"),
    ]
    model = keras.Sequential(layers, name="net")
    return tiny_models.compile_model(model, keras.optimizers.SGD(0.05))


@functools.lru_cache(maxsize=None)
def _strategy():
    # One for all tests: a second strategy over the same devices reuses
    # the first one's collective instance keys, and TensorFlow's cached
    # parameters for them make its all-reduces fail.
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


class Probe(keras.callbacks.Callback):
    """Per epoch: samples and feature sum seen by the recorder, and steps."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        recorder = self.model.get_layer("recorder")
        recorder.count.assign(0.0)
        recorder.total.assign(0.0)
        self._iterations = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        recorder = self.model.get_layer("recorder")
        self.epochs.append(
            (
                float(recorder.count.numpy()),
                float(recorder.total.numpy()),
                int(self.model.optimizer.iterations.numpy()) - self._iterations,
            )
        )


def _stem_weights(model, stem):
    chain = graph.UnitChain(model)
    return [w for layer in chain.layers_of(0, stem) for w in layer.weights]


@unittest.skipUnless(
    TWO_CPUS or IN_CHILD,
    "TensorFlow initialised its devices before this module could split the "
    "CPU in two (another test module came first in this process); "
    "FreshProcessTest runs these tests in a fresh process",
)
class MirroredTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # In the fresh process a missing device is a failure, not a skip.
        self.assertTrue(TWO_CPUS, "could not make two logical CPUs")
        self.x, self.y = tiny_models.data(48)

    def _fit(self, model, callback, epochs):
        probe = Probe()
        history = model.fit(
            self.x,
            self.y,
            epochs=epochs,
            batch_size=10,  # 5 steps; the last, of 8, is 4 per replica
            shuffle=False,
            verbose=0,
            callbacks=[callback, probe],
        )
        return history, probe.epochs

    def test_fill_extend_and_replay_match_a_single_device_run(self):
        strategy = _strategy()
        with strategy.scope():
            model = _net(recorder=True)
        # Freeze 1 unit after epoch 0; 2 after epoch 1 (the cached view is
        # extended by conv2); then replay.
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1, 2: 2}), seed=4
        )
        history, epochs = self._fit(model, callback, 4)
        single = _net(recorder=True)
        single_callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1, 2: 2}), seed=4
        )
        single_history, single_epochs = self._fit(single, single_callback, 4)

        self.assertEqual(strategy.num_replicas_in_sync, 2)
        modes = [e.mode for e in callback.history.epochs]
        self.assertEqual(modes, ["full", "fill", "replay", "replay"])
        self.assertEqual(
            modes, [e.mode for e in single_callback.history.epochs]
        )
        # Every sample reaches the head once per epoch, in 5 global steps.
        self.assertEqual([e[0] for e in epochs], [48.0] * 4)
        self.assertEqual([e[2] for e in epochs], [5] * 4)
        self.assertEqual([e.samples for e in callback.history.epochs], [48] * 4)
        # The recorder sees the cached (then extended) features of cut 2.
        features = graph.UnitChain(model).forward(
            tf.constant(self.x), 0, 2, training=False
        )
        expected = float(tf.reduce_sum(tf.cast(features, "float64")))
        for _, total, _ in epochs[2:]:
            self.assertAllClose(total, expected, rtol=1e-5)
        self.assertEqual(
            history.history["ld_cache_bytes"][-1], 48 * 96 * 4 + 48 * 8
        )
        # Same weights, same order: the same losses and weights.
        self.assertAllClose(
            history.history["loss"],
            single_history.history["loss"],
            rtol=1e-5,
        )
        for got, want in zip(model.trainable_weights, single.trainable_weights):
            self.assertAllClose(got.numpy(), want.numpy(), atol=1e-5)

    def test_threshold_freeze_keeps_the_stem_and_the_replicas_in_sync(self):
        strategy = _strategy()
        with strategy.scope():
            model = _net(recorder=False)
        # Threshold 1 settles every unit at the first evaluation: 3 of the
        # 4 units freeze (max_drop_fraction 0.75), the head is `dense`.
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores(
                threshold=1.0, patience=1, warmup=0
            ),
            seed=2,
        )
        stem = _stem_weights(model, 3)
        after_freeze = {}

        class Snapshot(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    after_freeze["stem"] = [w.numpy() for w in stem]
                    after_freeze["dense"] = model.get_layer(
                        "dense"
                    ).kernel.numpy()

        model.fit(
            self.x,
            self.y,
            epochs=3,
            batch_size=8,
            verbose=0,
            callbacks=[callback, Snapshot()],
        )
        self.assertEqual(callback.history.frozen_at, {0: 0, 1: 0, 2: 0})
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "fill", "replay"],
        )
        first = callback.history.evaluations[0]
        self.assertTrue(np.all(np.asarray(first.change) > 0))
        for before, weight in zip(after_freeze["stem"], stem):
            self.assertAllEqual(before, weight.numpy())
        self.assertNotAllClose(
            after_freeze["dense"], model.get_layer("dense").kernel.numpy()
        )
        # Both replicas hold the same values of every weight.
        for weight in model.weights:
            copies = strategy.experimental_local_results(weight.value)
            self.assertLen(copies, 2)
            self.assertAllEqual(copies[0], copies[1])
        self.assertTrue(all(layer.trainable for layer in model.layers))

    def test_cached_validation_equals_the_whole_models(self):
        strategy = _strategy()
        with strategy.scope():
            model = _net(recorder=False)
        x_val, y_val = tiny_models.data(26, seed=5)  # 3 batches: 10, 10, 6
        pairs = []

        class WholeModel(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                whole = model.evaluate(
                    x_val, y_val, batch_size=10, verbose=0, return_dict=True
                )
                pairs.append(
                    (
                        [logs["val_loss"], logs["val_accuracy"]],
                        [whole["loss"], whole["accuracy"]],
                    )
                )

        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1, 2: 2}), seed=4
        )
        model.fit(
            self.x,
            self.y,
            epochs=4,
            batch_size=10,
            validation_data=(x_val, y_val),
            verbose=0,
            callbacks=[callback, WholeModel()],
        )
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay"],  # extended after epoch 2
        )
        self.assertLen(pairs, 4)
        for got, want in pairs:
            self.assertAllClose(got, want, rtol=1e-5)


class FreshProcessTest(tf.test.TestCase):
    @unittest.skipIf(TWO_CPUS or IN_CHILD, "MirroredTest runs in this process")
    def test_mirrored_tests_pass_in_a_fresh_process(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env[CHILD_ENV] = "1"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                os.path.abspath(__file__),
                "-p",
                "no:xdist",
                "-q",
                "-k",
                "MirroredTest",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stdout[-3000:])
        self.assertRegex(result.stdout, r"\b3 passed\b")
        self.assertNotRegex(result.stdout, r"failed|error")


_WORKER = """
import json
import os
import sys

os.environ["TF_CONFIG"] = json.dumps(
    {{
        "cluster": {{"worker": {workers!r}}},
        "task": {{"type": "worker", "index": int(sys.argv[1])}},
    }}
)
sys.path.insert(0, {repo!r})
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
from keras_learndrop import stem_cache

# Worker i saw samples with ids 100 * i + (0..23) in fill batches of 6
# (its share of a global batch of 12); the cache holds their ids.
worker = int(sys.argv[1])
cache = stem_cache.StemCache("float32", 2**30, "/CPU:0")
for start in range(0, 24, 6):
    ids = tf.range(start, start + 6, dtype=tf.float32) + 100 * worker
    cache.add(ids[:, None], None, None)
cache.finish_view()
cache.batch_size = 12  # what LearnDrop sets: the global batch
steps = []
for epoch in (1, 2):
    batches = cache.index_batches(epoch, 7, strategy)
    steps.append(
        [
            [
                cache.views[0].features.numpy()[t.numpy(), 0].tolist()
                for t in strategy.experimental_local_results(batch)
            ]
            for batch in batches
        ]
    )
print("RESULT " + json.dumps(
    {{"replicas": strategy.num_replicas_in_sync, "steps": steps}}
), flush=True)
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@unittest.skipIf(IN_CHILD, "runs in the parent process")
class MultiWorkerTest(tf.test.TestCase):
    def test_each_worker_replays_its_own_shard_once_per_epoch(self):
        workers = [f"localhost:{port}" for port in _free_ports(2)]
        script = os.path.join(self.get_temp_dir(), "worker.py")
        with open(script, "w") as file:
            file.write(
                textwrap.dedent(_WORKER.format(workers=workers, repo=REPO))
            )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop(CHILD_ENV, None)
        processes = [
            subprocess.Popen(
                [sys.executable, script, str(index)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(2)
        ]
        results = []
        for process in processes:
            out, err = process.communicate(timeout=300)
            self.assertEqual(process.returncode, 0, err[-3000:])
            line = [s for s in out.splitlines() if s.startswith("RESULT ")]
            results.append(json.loads(line[0][len("RESULT ") :]))
        for worker, result in enumerate(results):
            self.assertEqual(result["replicas"], 2)
            own = [100 * worker + i for i in range(24)]
            for epoch_steps in result["steps"]:
                # One local replica per worker, 6 samples per step (as in
                # the fill epoch), all 24 of its own samples once.
                self.assertLen(epoch_steps, 4)
                self.assertTrue(all(len(s) == 1 for s in epoch_steps))
                self.assertEqual([len(s[0]) for s in epoch_steps], [6] * 4)
                seen = [i for s in epoch_steps for i in s[0]]
                self.assertCountEqual(seen, own)
            # A fresh order each epoch.
            self.assertNotEqual(result["steps"][0], result["steps"][1])
        # The same order on both workers (positions in their own caches).
        orders = [
            [[i % 100 for i in s[0]] for s in r["steps"][0]] for r in results
        ]
        self.assertEqual(orders[0], orders[1])


if __name__ == "__main__":
    tf.test.main()
