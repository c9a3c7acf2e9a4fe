"""Tests of validation inside `fit` on cached stem features."""

import warnings

import numpy as np
from absl.testing import parameterized

import keras_learndrop
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models

# Freeze 1 unit after the first epoch, 2 after the third: the validation
# cache is filled at cut 1, replayed, extended to cut 2, replayed.
PLAN = {1: 1, 3: 2}


class WholeModelCheck(keras.callbacks.Callback):
    """After each epoch, validates the whole model with Keras's evaluate.

    Placed after LearnDrop: the weights are those `fit` validated with, and
    `evaluate` outside `fit`'s own validation must run the whole model.
    """

    def __init__(self, x, y, sample_weight=None, steps=None):
        super().__init__()
        self.data = (x, y, sample_weight)
        self.steps = steps
        self.pairs = []

    def on_epoch_end(self, epoch, logs=None):
        if "val_loss" not in logs:
            return
        x, y, sample_weight = self.data
        whole = self.model.evaluate(
            x,
            y,
            sample_weight=sample_weight,
            batch_size=8,
            steps=self.steps,
            verbose=0,
            return_dict=True,
        )
        self.pairs.append(
            (
                [logs["val_loss"], logs["val_accuracy"]],
                [whole["loss"], whole["accuracy"]],
            )
        )


def _model(**kwargs):
    return tiny_models.compile_model(tiny_models.conv_net(**kwargs))


def _fit(model, callbacks, validation_data, epochs=5, **kwargs):
    x, y = tiny_models.data(32, seed=1)
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        validation_data=validation_data,
        validation_batch_size=8,
        callbacks=callbacks,
        verbose=0,
        **kwargs,
    )


def _modes(callback):
    return [(e.mode, e.validation_mode) for e in callback.history.epochs]


class CachedValidationTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(3)
        self.x_val, self.y_val = tiny_models.data(30, seed=2)
        self.w_val = np.random.default_rng(4).random(30).astype("float32")

    @parameterized.named_parameters(
        ("float32", "float32", 1e-6), ("float16", "float16", 2e-3)
    )
    def test_val_figures_equal_the_whole_models(self, dtype, tolerance):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(PLAN), cache_dtype=dtype
        )
        check = WholeModelCheck(self.x_val, self.y_val, self.w_val)
        _fit(
            model,
            [callback, check],
            (self.x_val, self.y_val, self.w_val),
        )
        self.assertEqual(
            _modes(callback),
            [
                ("full", "full"),
                ("fill", "fill"),
                ("replay", "replay"),
                ("replay", "replay"),  # extended to cut 2 after epoch 4
                ("replay", "replay"),
            ],
        )
        self.assertLen(check.pairs, 5)
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=tolerance, atol=tolerance)
        self.assertEqual(callback.history.notes, [])

    def test_validation_freq_and_steps_of_arrays(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(PLAN)
        )
        # The first 2 batches of 8, the same in every pass.
        check = WholeModelCheck(self.x_val, self.y_val, self.w_val, steps=2)
        _fit(
            model,
            [callback, check],
            (self.x_val, self.y_val, self.w_val),
            epochs=6,
            validation_freq=2,
            validation_steps=2,
        )
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["", "fill", "", "replay", "", "replay"],
        )
        self.assertLen(check.pairs, 3)
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)
        self.assertIsNone(callback._validation)  # A finished fit keeps nothing.

    def test_steps_per_execution(self):
        model = tiny_models.compile_model(
            tiny_models.conv_net(), steps_per_execution=3
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(PLAN)
        )
        check = WholeModelCheck(self.x_val, self.y_val, self.w_val)
        _fit(
            model,
            [callback, check],
            (self.x_val, self.y_val, self.w_val),
            epochs=4,
        )
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay"],
        )
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_dataset_of_unknown_length_is_cached_after_one_pass(self):
        dataset = (
            tf.data.Dataset.from_tensor_slices((self.x_val, self.y_val))
            .filter(lambda x, y: True)
            .batch(8)
        )
        self.assertEqual(
            int(dataset.cardinality()), tf.data.UNKNOWN_CARDINALITY
        )
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(PLAN)
        )
        check = WholeModelCheck(self.x_val, self.y_val)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras: "ran out of data".
            _fit(model, [callback, check], dataset)
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay", "replay"],
        )
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_steps_that_stop_inside_a_dataset_validate_the_whole_model(self):
        dataset = tf.data.Dataset.from_tensor_slices(
            (self.x_val, self.y_val)
        ).batch(8)
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(PLAN)
        )
        _fit(model, [callback], dataset, epochs=3, validation_steps=2)
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "full", "full"],
        )
        self.assertLen(callback.history.notes, 1)
        self.assertIn("validation_steps=2", callback.history.notes[0])

    def test_replay_reads_no_validation_data(self):
        class Counted(keras.utils.PyDataset):
            def __init__(self, x, y):
                super().__init__()
                self.x, self.y, self.reads = x, y, 0

            def __len__(self):
                return 4

            def __getitem__(self, index):
                self.reads += 1
                part = slice(8 * index, 8 * index + 8)
                return self.x[part], self.y[part]

        data = Counted(self.x_val, self.y_val)
        reads = []

        class Reads(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                reads.append(data.reads)

        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, [callback, Reads()], data, epochs=4)
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay"],
        )
        # 4 batches read in each of the first two validations, none after.
        self.assertEqual(reads[1] - reads[0], 4)
        self.assertEqual(reads[3], reads[1])

    def test_evaluate_inside_fit_on_other_data_runs_the_whole_model(self):
        x_other, y_other = tiny_models.data(16, seed=9)
        results = []

        class EvaluateOther(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                got = self.model.evaluate(
                    x_other, y_other, verbose=0, return_dict=True
                )
                twin = keras.models.clone_model(self.model)
                twin.set_weights(self.model.get_weights())
                tiny_models.compile_model(twin)
                want = twin.evaluate(
                    x_other, y_other, verbose=0, return_dict=True
                )
                results.append((got["loss"], want["loss"]))

        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(
            model,
            [callback, EvaluateOther()],
            (self.x_val, self.y_val),
            epochs=3,
        )
        self.assertEqual(callback.history.epochs[-1].validation_mode, "replay")
        for got, want in results:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_dropout_in_the_stem_keeps_validation_cached(self):
        model = _model(front=[keras.layers.Dropout(0.3, name="drop")])
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), stem_dropout="train"
        )
        check = WholeModelCheck(self.x_val, self.y_val)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # The stem draws: no cache.
            _fit(model, [callback, check], (self.x_val, self.y_val), epochs=3)
        self.assertEqual(
            _modes(callback),
            [
                ("full", "full"),
                ("stem_forward", "fill"),
                ("stem_forward", "replay"),
            ],
        )
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_over_budget_the_whole_model_validates_with_a_note(self):
        # The training cache (32 samples of 8x8x4 floats + labels) fits;
        # with the validation features it does not.
        budget = 32 * 8 * 8 * 4 * 4 + 32 * 8 + 100
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1}),
            memory_budget=budget,
        )
        check = WholeModelCheck(self.x_val, self.y_val)
        with self.assertWarnsRegex(UserWarning, "the whole model validates"):
            _fit(model, [callback, check], (self.x_val, self.y_val), epochs=4)
        self.assertEqual(
            _modes(callback),
            [
                ("full", "full"),
                ("fill", "fill"),
                ("replay", "full"),
                ("replay", "full"),
            ],
        )
        self.assertIn("memory_budget", callback.history.notes[0])
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_activity_regularizer_in_the_stem_is_not_cached(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(
                    4,
                    3,
                    activity_regularizer=keras.regularizers.L2(0.1),
                    name="conv1",
                ),
                keras.layers.Conv2D(4, 3, name="conv2"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
        tiny_models.compile_model(model)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1})
        )
        check = WholeModelCheck(self.x_val, self.y_val)
        _fit(model, [callback, check], (self.x_val, self.y_val), epochs=3)
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "full", "full"],
        )
        self.assertIn("activity", callback.history.notes[0])
        for got, want in check.pairs:
            self.assertAllClose(got, want, rtol=1e-6)

    def test_switched_off_the_whole_model_validates(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1}),
            cache_validation=False,
        )
        _fit(model, [callback], (self.x_val, self.y_val), epochs=3)
        self.assertEqual(
            _modes(callback),
            [("full", "full"), ("fill", "full"), ("replay", "full")],
        )

    def test_a_crash_inside_validation_leaves_keras_test_function(self):
        class Crash(keras.callbacks.Callback):
            def on_test_batch_end(self, batch, logs=None):
                if callback.history.epochs and batch == 1:
                    raise RuntimeError("crash")

        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        with self.assertRaisesRegex(RuntimeError, "crash"):
            _fit(model, [callback, Crash()], (self.x_val, self.y_val), epochs=2)
        got = model.evaluate(self.x_val, self.y_val, verbose=0)
        twin = keras.models.clone_model(model)
        twin.set_weights(model.get_weights())
        tiny_models.compile_model(twin)
        want = twin.evaluate(self.x_val, self.y_val, verbose=0)
        self.assertAllClose(got, want, rtol=1e-6)
        # A later fit validates normally.
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, [callback], (self.x_val, self.y_val), epochs=2)
        self.assertEqual(
            [e.validation_mode for e in callback.history.epochs],
            ["full", "fill"],
        )


if __name__ == "__main__":
    tf.test.main()
