"""Tests of crash and resume: `BackupAndRestore`, `backup_dir`, checkpoints.

With `keras.callbacks.BackupAndRestore(d)` and `LearnDrop(backup_dir=d)`, a
`fit` that stops (an exception, a killed process) and is started again
resumes with the frozen stem, the score history and the cache policy of the
last finished epoch; the feature cache is refilled from the data (the first
resumed epoch with a stem is a "fill"), and on a CPU with
`keras.utils.set_random_seed` the resumed run ends with the same weights as
an uninterrupted one.

What a model file alone restores: a checkpoint written during a LearnDrop
run by `keras.callbacks.ModelCheckpoint(save_weights_only=False)` (a
`.keras` file) loads with plain `keras.models.load_model` and predicts
exactly as the model did when it was saved. It holds the weights and each
layer's `trainable` flag as they were at that moment: mid-run these are the
frozen flags (the stem's layers are `trainable=False`), since
`restore_trainable` gives the user's flags back only when `fit` ends. It
does not hold LearnDrop's state: the frozen prefix as such, the scores, the
freeze history and the cache policy are not in the file. Nor, in practice,
the optimizer state: `load_model` builds the optimizer for the trainable
(head) variables only, finds a saved optimizer built for the whole model and
skips loading it (Keras warns "Skipping variable loading for optimizer"),
so momentum and the iteration count (and with it a learning-rate schedule)
start afresh. To resume a LearnDrop run exactly, use `BackupAndRestore` with
`backup_dir`; a `save_weights_only=True` checkpoint loaded into the model
rebuilt in code (all layers trainable, optimizer built) also restores the
optimizer.
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings

from absl.testing import parameterized

import keras_learndrop
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models

EPOCHS = 6
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Crash(Exception):
    """Stands for anything that stops a fit: an error, an interrupt."""


class CrashAt(keras.callbacks.Callback):
    """Raises `Crash` after batch `batch` of `epoch`, or at its end."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch == self.batch:
            raise Crash(f"epoch {self.epoch}, batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and self.batch is None:
            raise Crash(f"end of epoch {epoch}")


class FlagsSpy(keras.callbacks.Callback):
    """Records the names of the frozen layers at each epoch's first batch."""

    def __init__(self):
        super().__init__()
        self.frozen = {}
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.frozen[self._epoch] = [
                layer.name for layer in self.model.layers if not layer.trainable
            ]


def _learn_drop(backup_dir, eval_every=1, **kwargs):
    # Threshold 1 settles every unit: after a warm-up evaluation and two
    # settled ones, half the units (2 of 4) freeze at the end of epoch 2,
    # a decision that needs the policy's streaks from before any crash.
    return keras_learndrop.LearnDrop(
        policy=keras_learndrop.LearnDropScores(
            threshold=1.0, warmup=1, patience=2, max_drop_fraction=0.5
        ),
        eval_every=eval_every,
        seed=3,
        backup_dir=backup_dir,
        **kwargs,
    )


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    return tiny_models.compile_model(tiny_models.conv_net(seed=0, **kwargs))


def _fit(model, callbacks, epochs=EPOCHS):
    x, y = tiny_models.data(48)
    return model.fit(
        x, y, epochs=epochs, batch_size=8, callbacks=callbacks, verbose=0
    )


def _weights(model):
    return [w.numpy() for w in model.weights]


@functools.lru_cache(maxsize=None)
def _uninterrupted(eval_every=1, epochs=EPOCHS):
    """The run every resumed run is compared with (once per process)."""
    model = _model()
    callback = _learn_drop(None, eval_every)
    spy = FlagsSpy()
    _fit(model, [callback, spy], epochs)
    return callback.history, spy.frozen, _weights(model)


def _evaluations(history):
    return [
        (e.epoch, e.stem_size, e.change, e.scores["continuation"], e.drift)
        for e in history.evaluations
    ]


class CrashAndResumeTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.backup_dir = os.path.join(self.get_temp_dir(), self.id())
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    def _callbacks(self, order, crash=None, eval_every=1, **kwargs):
        learn_drop = _learn_drop(self.backup_dir, eval_every, **kwargs)
        backup = keras.callbacks.BackupAndRestore(self.backup_dir)
        spy = FlagsSpy()
        callbacks = {
            "learndrop_first": [learn_drop, backup, crash, spy],
            "backup_first": [backup, learn_drop, crash, spy],
            # The process dies between the two saves of an epoch.
            "learndrop_crash_backup": [learn_drop, crash, backup, spy],
            "backup_crash_learndrop": [backup, crash, learn_drop, spy],
        }[order]
        return learn_drop, [c for c in callbacks if c is not None], spy

    def _crash_and_resume(self, order, crash, eval_every=1, epochs=EPOCHS):
        model = _model()
        _, callbacks, _ = self._callbacks(order, crash, eval_every)
        with self.assertRaises(Crash):
            _fit(model, callbacks, epochs)
        self.assertTrue(
            os.path.exists(
                os.path.join(self.backup_dir, "learndrop_state.json")
            )
        )
        # Fresh callback objects, the same model object (as in a notebook).
        learn_drop, callbacks, spy = self._callbacks(
            order.split("_")[0] + "_first", None, eval_every
        )
        _fit(model, callbacks, epochs)
        return model, learn_drop.history, spy.frozen

    @parameterized.named_parameters(
        ("before_freeze_learndrop_first", "learndrop_first", 2, 3),
        ("during_fill_learndrop_first", "learndrop_first", 3, 1),
        ("during_fill_backup_first", "backup_first", 3, 1),
        ("between_saves_learndrop_first", "learndrop_crash_backup", 2, None),
    )
    def test_resumed_fit_matches_an_uninterrupted_one(
        self, order, crash_epoch, crash_batch
    ):
        reference, reference_frozen, reference_weights = _uninterrupted()
        model, history, frozen = self._crash_and_resume(
            order, CrashAt(crash_epoch, crash_batch)
        )
        resumed = crash_epoch + (crash_batch is None)
        # The same stem at the first resumed batch, and ever after.
        for epoch in range(resumed, EPOCHS):
            self.assertEqual(frozen[epoch], reference_frozen[epoch])
        self.assertEqual(
            frozen[3], ["conv1", "bn1", "relu1", "conv2", "relu2", "pool2"]
        )
        # The scores of every evaluation, before and after the crash; the
        # drift after it compares with the Gram matrices of the probe set
        # restored from the backup.
        self.assertAllClose(
            [e[2:] for e in _evaluations(history)],
            [e[2:] for e in _evaluations(reference)],
            rtol=0,
            atol=0,
        )
        self.assertEqual(
            [e[:2] for e in _evaluations(history)],
            [e[:2] for e in _evaluations(reference)],
        )
        self.assertEqual(history.frozen_at, {0: 2, 1: 2})
        self.assertEqual(history.notes, reference.notes)
        modes = [e.mode for e in history.epochs]
        self.assertEqual(modes, [e.mode for e in reference.epochs])
        self.assertEqual(modes[3:], ["fill", "replay", "replay"])
        self.assertEqual([e.epoch for e in history.epochs], list(range(6)))
        for got, want in zip(_weights(model), reference_weights):
            self.assertAllEqual(got, want)
        # The user's flags are back although the first fit never ended.
        self.assertTrue(all(layer.trainable for layer in model.layers))
        self.assertFalse(os.path.exists(self.backup_dir))

    def test_a_model_rebuilt_under_other_layer_names_resumes(self):
        reference, _, reference_weights = _uninterrupted()
        keras.backend.clear_session()
        crashed = _model(named=False)
        _, callbacks, _ = self._callbacks("learndrop_first", CrashAt(3, 1))
        with self.assertRaises(Crash):
            _fit(crashed, callbacks)
        # Another model first: the same architecture built again gets other
        # automatic names (conv2d_6 for conv2d), as in a notebook.
        _model(named=False)
        model = _model(named=False)
        names = [layer.name for layer in model.layers]
        self.assertNotEqual(names, [layer.name for layer in crashed.layers])

        learn_drop, callbacks, spy = self._callbacks("learndrop_first")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(model, callbacks)

        self.assertEqual(
            [str(w.message) for w in caught if "LearnDrop" in str(w.message)],
            [],
        )
        history = learn_drop.history
        self.assertEqual(history.frozen_at, reference.frozen_at)
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full", "full", "full", "fill", "replay", "replay"],
        )
        self.assertEqual(spy.frozen[3], names[:6])
        self.assertEqual(history.unit_names[0], names[0])
        for got, want in zip(_weights(model), reference_weights):
            self.assertAllEqual(got, want)

    def test_crash_during_replay_refills_the_cache(self):
        reference, reference_frozen, reference_weights = _uninterrupted()
        model, history, frozen = self._crash_and_resume(
            "learndrop_first", CrashAt(4, 2)
        )
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full", "full", "full", "fill", "fill", "replay"],
        )
        self.assertEqual(history.frozen_at, reference.frozen_at)
        self.assertEqual(frozen[4], reference_frozen[4])
        self.assertEqual(len(frozen[4]), 6)
        # The stem froze at the same epoch from the same weights and never
        # changed: bit-identical to the uninterrupted run's.
        chain = graph.UnitChain(model)
        stem = {id(w) for w in _stem_weights(chain)}
        for weight, want in zip(model.weights, reference_weights):
            if id(weight) in stem:
                self.assertAllEqual(weight.numpy(), want)
        # The record holds each of the 6 epochs once, 48 samples each.
        self.assertEqual([e.samples for e in history.epochs], [48] * 6)

    def test_a_frozen_base_resumes_as_the_stem(self):
        model = _model()
        for name in ("conv1", "bn1", "conv2"):
            model.get_layer(name).trainable = False
        tiny_models.compile_model(model)
        _, callbacks, _ = self._callbacks("learndrop_first", CrashAt(2))
        with self.assertRaises(Crash):
            _fit(model, callbacks)
        learn_drop, callbacks, _ = self._callbacks("learndrop_first")
        _fit(model, callbacks)

        history = learn_drop.history
        # The cache is refilled from the data after the resume.
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["fill", "replay", "replay", "fill"] + ["replay"] * (EPOCHS - 4),
        )
        self.assertEqual(history.frozen_at, {0: -1, 1: -1})
        self.assertFalse(model.get_layer("conv2").trainable)
        self.assertTrue(model.get_layer("conv3").trainable)

    def test_a_refused_cache_stays_refused_after_resume(self):
        # 1000 bytes hold no view: the first fill is refused for the budget.
        model = _model()
        _, callbacks, _ = self._callbacks(
            "learndrop_first", CrashAt(4, 1), memory_budget=1000
        )
        with self.assertWarnsRegex(UserWarning, "budget"):
            with self.assertRaises(Crash):
                _fit(model, callbacks)
        learn_drop, callbacks, _ = self._callbacks(
            "learndrop_first", memory_budget=1000
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(model, callbacks)
        # The restored policy runs the stem forward at once: no new attempt
        # to fill, so no new warning.
        self.assertEqual(
            [str(w.message) for w in caught if "budget" in str(w.message)],
            [],
        )
        history = learn_drop.history
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full"] * 3 + ["stem_forward"] * 3,
        )
        self.assertLen(history.notes, 1)
        self.assertIn("budget", history.notes[0])

    def test_evaluations_every_two_epochs_resume_their_reference(self):
        # Crash after epoch 2, between the evaluations after epochs 1 and
        # 3: the change at epoch 3 must still span epochs 2 and 3.
        reference, _, reference_weights = _uninterrupted(2, 4)
        model = _model()
        _, callbacks, _ = self._callbacks("learndrop_first", CrashAt(2), 2)
        with self.assertRaises(Crash):
            _fit(model, callbacks, 4)
        self.assertIn("learndrop_reference_2.npz", os.listdir(self.backup_dir))
        learn_drop, callbacks, _ = self._callbacks("learndrop_first", None, 2)
        _fit(model, callbacks, 4)
        history = learn_drop.history
        self.assertEqual([e.epoch for e in history.evaluations], [1, 3])
        self.assertAllClose(
            [e.change for e in history.evaluations],
            [e.change for e in reference.evaluations],
            rtol=0,
            atol=0,
        )
        self.assertEqual(history.frozen_at, reference.frozen_at)
        for got, want in zip(_weights(model), reference_weights):
            self.assertAllEqual(got, want)

    def test_backup_saved_before_learndrop_state_loses_one_evaluation(self):
        # BackupAndRestore first, then the process dies before LearnDrop
        # saves epoch 2: the weights are of epoch 2, the state of epoch 1.
        with self.assertWarnsRegex(UserWarning, "evaluation of epoch 3"):
            _, history, frozen = self._crash_and_resume(
                "backup_crash_learndrop", CrashAt(2)
            )
        # The freeze due after epoch 2 comes one evaluation later.
        self.assertEqual(history.frozen_at, {0: 3, 1: 3})
        self.assertEqual(
            [e.epoch for e in history.evaluations], [0, 1, 3, 4, 5]
        )
        self.assertEqual(frozen[3], [])
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full", "full", "full", "fill", "replay"],
        )


class StateFileTest(parameterized.TestCase, tf.test.TestCase):
    """Drives the hooks directly: a crashed run's state file, no training."""

    def setUp(self):
        super().setUp()
        self.backup_dir = os.path.join(self.get_temp_dir(), self.id())
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        self.model = _model()
        # Three epochs, then a crash: the stem (2 units) froze after the
        # third, and the state of epoch 2 (0-based) is on disk.
        crashed = _learn_drop(self.backup_dir)
        crashed.set_model(self.model)
        crashed.on_train_begin()
        for epoch in range(3):
            crashed.on_epoch_begin(epoch)
            crashed.on_epoch_end(epoch, {})
        self.assertEqual(crashed.history.frozen_at, {0: 2, 1: 2})
        self.path = os.path.join(self.backup_dir, "learndrop_state.json")

    def _resume(self, model=None):
        self.model = model or self.model
        callback = _learn_drop(self.backup_dir)
        callback.set_model(self.model)
        callback.on_train_begin()
        # Before any restore, the crashed run's frozen flags are given back.
        self.assertTrue(all(layer.trainable for layer in self.model.layers))
        callback.on_epoch_begin(3)
        logs = {}
        callback.on_epoch_end(3, logs)
        return callback, logs

    def test_an_intact_state_file_restores_the_stem(self):
        callback, logs = self._resume()
        self.assertEqual(logs["ld_frozen_units"], 2)
        self.assertFalse(self.model.get_layer("conv2").trainable)
        self.assertEqual(callback.history.frozen_at, {0: 2, 1: 2})
        self.assertEqual(
            [e.epoch for e in callback.history.epochs], [0, 1, 2, 3]
        )

    def test_the_state_and_the_one_before_are_separate_files(self):
        with open(self.path) as file:
            state = json.load(file)
        with open(self.path + ".bkp") as file:
            previous = json.load(file)
        self.assertEqual((state["epoch"], previous["epoch"]), (2, 1))
        self.assertNotIn("previous", state)

    @parameterized.named_parameters(
        (
            "other_structure",
            "other_structure",
            r"another structure \(unit 0 was Conv2D .*Rescaling",
        ),
        ("later_epoch", "later_epoch", "saved after epoch 8"),
        ("corrupt", "corrupt", "cannot read the state"),
    )
    def test_a_mismatched_state_file_warns_and_starts_afresh(
        self, kind, message
    ):
        with open(self.path) as file:
            state = json.load(file)
        if kind == "later_epoch":
            state["epoch"] = 7
        with open(self.path, "w") as file:
            text = json.dumps(state)
            file.write(text[: len(text) // 2] if kind == "corrupt" else text)
        model = None
        if kind == "other_structure":
            # One more layer in front: another model for the same folder.
            model = tiny_models.compile_model(
                tiny_models.conv_net(front=[keras.layers.Rescaling(0.5)])
            )
        with self.assertWarnsRegex(UserWarning, f"{message}.*starting afresh"):
            callback, logs = self._resume(model)
        # Afresh from the resumed epoch: nothing frozen, warm-up again.
        self.assertEqual(logs["ld_frozen_units"], 0)
        self.assertTrue(all(layer.trainable for layer in self.model.layers))
        self.assertEqual([e.epoch for e in callback.history.epochs], [3])
        self.assertEqual(callback.history.frozen_at, {})


def _stem_weights(chain, stem=2):
    return [w for layer in chain.layers_of(0, stem) for w in layer.weights]


_KILLED_RUN = """
import os
import signal
import sys

sys.path.insert(0, {repo!r})
from tests import resume_test
from keras_learndrop.backend import keras


class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == {epoch}:
            print("killed after epoch", epoch, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


model = resume_test._model()
callbacks = [
    resume_test._learn_drop({backup_dir!r}),
    keras.callbacks.BackupAndRestore({backup_dir!r}),
    Kill(),
]
resume_test._fit(model, callbacks)
print("not killed", flush=True)
"""


class KilledProcessTest(tf.test.TestCase):
    def test_a_killed_process_resumes_in_another(self):
        backup_dir = os.path.join(self.get_temp_dir(), "killed")
        shutil.rmtree(backup_dir, ignore_errors=True)
        script = os.path.join(self.get_temp_dir(), "killed_run.py")
        with open(script, "w") as file:
            file.write(
                textwrap.dedent(
                    _KILLED_RUN.format(
                        repo=REPO, epoch=2, backup_dir=backup_dir
                    )
                )
            )
        env = dict(
            os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3"
        )
        result = subprocess.run(
            [sys.executable, script],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        self.assertEqual(result.returncode, -signal.SIGKILL, result.stderr)
        self.assertIn("killed after epoch 2", result.stdout)
        self.assertNotIn("not killed", result.stdout)
        # Resume here, with the same model built afresh from code.
        reference, reference_frozen, reference_weights = _uninterrupted()
        model = _model()
        learn_drop = _learn_drop(backup_dir)
        spy = FlagsSpy()
        _fit(
            model,
            [learn_drop, keras.callbacks.BackupAndRestore(backup_dir), spy],
        )
        history = learn_drop.history
        self.assertEqual(sorted(spy.frozen), [3, 4, 5])
        self.assertEqual(spy.frozen[3], reference_frozen[3])
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full", "full", "full", "fill", "replay", "replay"],
        )
        self.assertEqual(history.frozen_at, reference.frozen_at)
        self.assertAllClose(
            [e.scores["continuation"] for e in history.evaluations],
            [e.scores["continuation"] for e in reference.evaluations],
            rtol=0,
            atol=0,
        )
        for got, want in zip(_weights(model), reference_weights):
            self.assertAllEqual(got, want)


class ModelCheckpointTest(tf.test.TestCase):
    def test_checkpoints_of_a_run_load_in_plain_keras(self):
        directory = self.get_temp_dir()
        x, y = tiny_models.data(48)
        model = _model()
        learn_drop = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), seed=1
        )
        seen = {}

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen[epoch + 1] = self.model.predict(x[:16], verbose=0)

        model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            verbose=0,
            callbacks=[
                learn_drop,
                keras.callbacks.ModelCheckpoint(
                    os.path.join(directory, "epoch_{epoch}.keras"),
                    save_weights_only=False,
                ),
                keras.callbacks.ModelCheckpoint(
                    os.path.join(directory, "last.weights.h5"),
                    save_weights_only=True,
                ),
                Record(),
            ],
        )
        self.assertEqual(
            [e.mode for e in learn_drop.history.epochs],
            ["full", "fill", "replay"],
        )
        stem = {"conv1", "bn1", "relu1", "conv2", "relu2", "pool2"}
        for epoch in (1, 3):  # saved just after the freeze, and in replay
            with self.assertWarnsRegex(UserWarning, "Skipping variable"):
                loaded = keras.models.load_model(
                    os.path.join(directory, f"epoch_{epoch}.keras")
                )
            self.assertAllClose(
                loaded.predict(x[:16], verbose=0), seen[epoch], atol=1e-6
            )
            # Saved mid-run: the stem's flags are the frozen ones.
            self.assertEqual(
                {layer.name for layer in loaded.layers if not layer.trainable},
                stem,
            )
            # The optimizer state is not restored: it starts afresh.
            self.assertEqual(int(loaded.optimizer.iterations.numpy()), 0)
        # The model itself leaves fit with the user's flags.
        self.assertTrue(all(layer.trainable for layer in model.layers))
        # Weights-only: the model rebuilt in code gets the optimizer too.
        rebuilt = tiny_models.compile_model(tiny_models.conv_net(seed=5))
        rebuilt.optimizer.build(rebuilt.trainable_variables)
        rebuilt.load_weights(os.path.join(directory, "last.weights.h5"))
        self.assertEqual(int(rebuilt.optimizer.iterations.numpy()), 18)
        for got, want in zip(
            rebuilt.optimizer.variables, model.optimizer.variables
        ):
            self.assertAllEqual(got.numpy(), want.numpy())
        self.assertAllClose(
            rebuilt.predict(x[:16], verbose=0), seen[3], atol=1e-6
        )


if __name__ == "__main__":
    tf.test.main()
