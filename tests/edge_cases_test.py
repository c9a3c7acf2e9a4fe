"""Edge cases of LearnDrop: each ends in a clear error or a checked result.

Every case here either raises an error that names the problem and the fix,
or runs and is checked for the exact behaviour (a documented fallback
included): never a silent wrong result. Arguments already checked in
`callback_test.ArgumentsTest` are not repeated.
"""

import contextlib
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
from absl.testing import parameterized

import keras_learndrop
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models

STEM = ("conv1", "bn1", "relu1", "conv2", "relu2", "pool2")


def _fit(model, callbacks, x, y, epochs=3, **kwargs):
    kwargs.setdefault("batch_size", 8)
    if not isinstance(callbacks, list):
        callbacks = [callbacks]
    return model.fit(
        x, y, epochs=epochs, callbacks=callbacks, verbose=0, **kwargs
    )


def _modes(callback):
    return [e.mode for e in callback.history.epochs]


def _model(**kwargs):
    return tiny_models.compile_model(tiny_models.conv_net(**kwargs))


def _stem_sum(model, x, stem=2):
    features = graph.UnitChain(model).forward(
        tf.constant(x), 0, stem, training=False
    )
    return float(tf.reduce_sum(tf.cast(features, "float64")))


class Seen(keras.callbacks.Callback):
    """Per epoch: samples and input sum seen by the `recorder` layer."""

    def __init__(self):
        super().__init__()
        self.counts, self.totals = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.model.get_layer("recorder").reset()

    def on_epoch_end(self, epoch, logs=None):
        recorder = self.model.get_layer("recorder")
        self.counts.append(float(recorder.count.numpy()))
        self.totals.append(float(recorder.total.numpy()))


class CacheSpy(keras.callbacks.Callback):
    """Keeps the cached view LearnDrop holds at the end of each epoch."""

    def __init__(self, learn_drop):
        super().__init__()
        self.learn_drop = learn_drop
        self.views = {}

    def on_epoch_end(self, epoch, logs=None):
        cache = self.learn_drop._training.cache
        if cache is not None and cache.views:
            self.views[epoch] = cache.views[0]


class ArgumentsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("backup_dir_int", dict(backup_dir=3), TypeError, "backup_dir=3"),
        ("backup_dir_empty", dict(backup_dir=""), ValueError, "not be empty"),
        ("verbose_negative", dict(verbose=-1), ValueError, "verbose=-1"),
        ("seed_float", dict(seed=1.5), TypeError, "seed=1.5"),
        ("budget_float", dict(memory_budget=1e6), TypeError, "memory_budget"),
        ("keep_frozen_str", dict(keep_frozen="yes"), TypeError, "keep_frozen"),
        ("jit_none", dict(jit_compile=None), TypeError, "jit_compile=None"),
        ("eval_every_str", dict(eval_every="2"), TypeError, "eval_every"),
        ("views_float", dict(augmented_views=1.0), TypeError, "augmented"),
        ("cache_dtype_none", dict(cache_dtype=None), ValueError, "float32"),
    )
    def test_bad_argument_is_refused_when_made(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            keras_learndrop.LearnDrop(**kwargs)


class ModelShapesTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(32)

    def test_uncompiled_model_fails_before_any_layer_is_frozen(self):
        model = tiny_models.conv_net()
        with self.assertRaisesRegex(ValueError, "compile"):
            _fit(model, keras_learndrop.LearnDrop(), self.x, self.y)
        self.assertTrue(all(layer.trainable for layer in model.layers))

    def test_sequential_without_input_is_built_from_the_data(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, name="c1"),
                keras.layers.Conv2D(4, 3, name="c2"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax", name="out"),
            ]
        )
        tiny_models.compile_model(model)
        self.assertFalse(model.built)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1})
        )
        _fit(model, callback, self.x, self.y)
        self.assertEqual(callback.history.unit_names, ["c1", "c2", "out"])
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual([e.samples for e in callback.history.epochs], [32] * 3)

    def test_subclassed_model_inside_a_functional_model_is_refused(self):
        class Block(keras.Model):
            def __init__(self):
                super().__init__(name="block")
                self.conv = keras.layers.Conv2D(4, 3)

            def call(self, x):
                return self.conv(x)

        inputs = keras.Input((8, 8, 1))
        x = Block()(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        model.compile("sgd", "mse")
        with self.assertRaisesRegex(
            ValueError, "subclassed model 'block'.*functional or Sequential"
        ):
            _fit(model, keras_learndrop.LearnDrop(), self.x, self.y)

    def test_multiple_inputs_are_refused_with_the_fix(self):
        a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
        x = keras.layers.Concatenate()([a, b])
        x = keras.layers.Conv2D(4, 3)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = tiny_models.compile_model(
            keras.Model([a, b], keras.layers.Dense(3)(x))
        )
        with self.assertRaisesRegex(
            ValueError, "exactly one input.*2 inputs.*Merge the inputs"
        ):
            _fit(
                model,
                keras_learndrop.LearnDrop(),
                [self.x, self.x],
                self.y,
            )

    def test_multiple_outputs_are_refused(self):
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.GlobalAveragePooling2D()(
            keras.layers.Conv2D(4, 3)(inputs)
        )
        model = keras.Model(
            inputs, [keras.layers.Dense(3)(x), keras.layers.Dense(1)(x)]
        )
        model.compile("sgd", ["mse", "mse"])
        with self.assertRaisesRegex(ValueError, "2 outputs"):
            _fit(
                model,
                keras_learndrop.LearnDrop(),
                self.x,
                [np.zeros((32, 3)), np.zeros((32, 1))],
            )

    def test_single_unit_model_trains_exactly_as_plain_keras(self):
        weights = []
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores(threshold=1.0, warmup=0)
        )
        for callbacks in ([callback], []):
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    keras.layers.Flatten(),
                    keras.layers.Dense(3, activation="softmax", name="out"),
                ]
            )
            tiny_models.compile_model(model)
            _fit(model, callbacks, self.x, self.y, shuffle=False)
            weights.append([w.numpy() for w in model.weights])
        # The output unit is never frozen: every epoch is a full one.
        self.assertEqual(callback.history.unit_names, ["out"])
        self.assertEqual(_modes(callback), ["full"] * 3)
        self.assertEqual(callback.history.frozen_at, {})
        for got, want in zip(*weights):
            self.assertAllClose(got, want, atol=1e-6)

    def test_a_layer_shared_across_a_cut_freezes_as_one_unit(self):
        keras.utils.set_random_seed(0)
        shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, padding="same", name="first")(inputs)
        x = shared(x)
        x = keras.layers.Conv2D(4, 3, padding="same", name="middle")(x)
        x = shared(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
        model = tiny_models.compile_model(keras.Model(inputs, outputs))
        chain = graph.UnitChain(model)
        self.assertEqual(
            [[layer.name for layer in unit.layers] for unit in chain.units],
            [["first"], ["shared", "middle", "gap"], ["out"]],
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        kernel = {-1: shared.kernel.numpy()}

        class Snapshot(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                kernel[epoch] = shared.kernel.numpy()

        _fit(model, [callback, Snapshot()], self.x, self.y)
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual([e.samples for e in callback.history.epochs], [32] * 3)
        # Trained in the full epoch; then frozen in both of its calls.
        self.assertNotAllClose(kernel[-1], kernel[0])
        self.assertAllEqual(kernel[0], kernel[2])
        self.assertTrue(shared.trainable)

    def test_nested_backbone_is_cut_inside(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, padding="same", name="b_conv1")(inputs)
        x = keras.layers.ReLU(name="b_relu1")(x)
        x = keras.layers.Conv2D(6, 3, padding="same", name="b_conv2")(x)
        backbone = keras.Model(inputs, x, name="backbone")
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                backbone,
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax", name="out"),
            ]
        )
        tiny_models.compile_model(model)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        spy = CacheSpy(callback)
        frozen = {}

        class Flags(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                frozen[epoch] = [
                    layer.name
                    for layer in backbone.layers
                    if not layer.trainable
                ]

        _fit(model, [callback, spy, Flags()], self.x, self.y)
        self.assertEqual(
            callback.history.unit_names, ["b_conv1", "b_conv2", "out"]
        )
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertCountEqual(frozen[2], ["b_conv1", "b_relu1", "b_conv2"])
        # The cache holds the pooled backbone output of every sample.
        got = np.sort(spy.views[2].features.numpy(), axis=0)
        want = np.sort(
            backbone(self.x, training=False).numpy().mean(axis=(1, 2)), axis=0
        )
        self.assertAllClose(got, want, atol=1e-5)
        self.assertTrue(all(layer.trainable for layer in backbone.layers))

    def test_leading_layers_frozen_by_the_user_are_the_stem_at_once(self):
        model = _model()
        for name in ("conv1", "bn1"):
            model.get_layer(name).trainable = False
        tiny_models.compile_model(model)
        conv1 = model.get_layer("conv1").kernel.numpy()
        # A tiny threshold: only a unit without trainable weights (change
        # 0) would settle, after the warm-up and one evaluation; a leading
        # one needs no decision.
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores(
                threshold=1e-9, patience=1, warmup=1
            )
        )
        _fit(model, callback, self.x, self.y, epochs=4)
        self.assertEqual(callback.history.frozen_at, {0: -1})
        self.assertEqual(
            _modes(callback), ["fill", "replay", "replay", "replay"]
        )
        self.assertTrue(np.isnan(callback.history.evaluations[0].change[0]))
        # The user's own flags are given back: conv1 stays frozen.
        self.assertFalse(model.get_layer("conv1").trainable)
        self.assertTrue(model.get_layer("conv2").trainable)
        self.assertAllEqual(conv1, model.get_layer("conv1").kernel.numpy())


class PrecisionAndInputsTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(32)

    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    @parameterized.named_parameters(
        ("float32_cache", "float32", 4), ("float16_cache", "float16", 2)
    )
    def test_mixed_precision_fills_and_replays(self, cache_dtype, itemsize):
        keras.mixed_precision.set_global_policy("mixed_float16")
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, padding="same", name="conv1"),
                keras.layers.ReLU(),
                keras.layers.Conv2D(6, 3, padding="same", name="conv2"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(8, 3, padding="same", name="conv3"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(
                    3, activation="softmax", dtype="float32", name="out"
                ),
            ]
        )
        tiny_models.compile_model(model)
        self.assertIsInstance(
            model.optimizer, keras.optimizers.LossScaleOptimizer
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}),
            cache_dtype=cache_dtype,
        )
        spy = CacheSpy(callback)
        conv1 = {}

        class Snapshot(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                conv1[epoch] = model.get_layer("conv1").kernel.numpy()

        history = _fit(model, [callback, spy, Snapshot()], self.x, self.y)
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertEqual(spy.views[2].features.dtype, tf.as_dtype(cache_dtype))
        self.assertEqual(
            history.history["ld_cache_bytes"][-1],
            32 * 4 * 4 * 6 * itemsize + 32 * 8,
        )
        self.assertAllEqual(conv1[0], conv1[2])
        self.assertEqual(conv1[0].dtype, np.float32)  # variables stay fp32

    @parameterized.named_parameters(
        ("uint8_input_layer", "uint8"), ("float_input_layer", "float32")
    )
    def test_uint8_images(self, input_dtype):
        keras.utils.set_random_seed(0)
        images = (self.x * 255).astype("uint8")
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1), dtype=input_dtype),
                keras.layers.Rescaling(1 / 255, name="rescale"),
                keras.layers.Conv2D(4, 3, name="conv1"),
                keras.layers.Conv2D(4, 3, name="conv2"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax", name="out"),
            ]
        )
        tiny_models.compile_model(model)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1})
        )
        spy = CacheSpy(callback)
        history = _fit(model, [callback, spy], images, self.y)
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        # Cached: conv1 of the rescaled images, every sample once.
        stem = keras.Model(model.inputs, model.get_layer("conv1").output)
        want = np.sort(stem(images).numpy().reshape(32, -1), axis=0)
        got = np.sort(spy.views[2].features.numpy().reshape(32, -1), axis=0)
        self.assertAllClose(got, want, atol=1e-5)


class DataTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(50)

    def test_partial_last_batch_replays_every_sample_once(self):
        model = _model(recorder=True)
        seen = Seen()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, [callback, seen], self.x, self.y)  # 6 x 8 + 2
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(seen.counts, [50.0] * 3)
        self.assertAllClose(seen.totals[2], _stem_sum(model, self.x), rtol=1e-5)
        self.assertEqual(int(model.optimizer.iterations.numpy()), 21)

    def test_steps_per_execution_fills_and_replays_every_sample_once(self):
        model = tiny_models.compile_model(
            tiny_models.conv_net(recorder=True), steps_per_execution=3
        )
        seen = Seen()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, [callback, seen], self.x, self.y)  # 7 steps: 3, 3, 1
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(seen.counts, [50.0] * 3)
        self.assertAllClose(seen.totals[2], _stem_sum(model, self.x), rtol=1e-5)
        self.assertEqual(int(model.optimizer.iterations.numpy()), 21)

    def test_steps_per_epoch_covering_the_dataset_keeps_the_cache(self):
        model = _model(recorder=True)
        dataset = tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(10)
        seen = Seen()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        model.fit(
            dataset,
            epochs=3,
            steps_per_epoch=5,
            verbose=0,
            callbacks=[callback, seen],
        )
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(callback.history.notes, [])
        self.assertEqual(seen.counts, [50.0] * 3)

    def test_validation_split_caches_only_the_training_part(self):
        model = _model(recorder=True)
        seen = Seen()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        history = _fit(
            model,
            [callback, seen],
            self.x,
            self.y,
            validation_split=0.2,
        )
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(seen.counts, [40.0] * 3)
        self.assertAllClose(
            seen.totals[2], _stem_sum(model, self.x[:40]), rtol=1e-5
        )
        final = model.evaluate(
            self.x[40:], self.y[40:], verbose=0, return_dict=True
        )
        self.assertAllClose(history.history["val_loss"][-1], final["loss"])

    @parameterized.named_parameters(("class", "class"), ("sample", "sample"))
    def test_cached_weights_are_the_ones_keras_computed(self, kind):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        spy = CacheSpy(callback)
        class_weight = {0: 0.5, 1: 2.0, 2: 3.0}
        weights = np.linspace(0.1, 2.0, 50).astype("float32")
        kwargs = (
            dict(class_weight=class_weight)
            if kind == "class"
            else dict(sample_weight=weights)
        )
        _fit(model, [callback, spy], self.x, self.y, shuffle=False, **kwargs)
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        view = spy.views[2]
        self.assertAllEqual(view.y.numpy(), self.y)  # fill order, unshuffled
        want = (
            np.array([class_weight[int(c)] for c in self.y])
            if kind == "class"
            else weights
        )
        self.assertAllClose(view.sample_weight.numpy(), want)

    def test_dropout_in_the_head_keeps_the_cache(self):
        model = tiny_models.compile_model(
            keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    keras.layers.Conv2D(4, 3, name="conv1"),
                    keras.layers.Conv2D(4, 3, name="conv2"),
                    keras.layers.Dropout(0.5),
                    keras.layers.GlobalAveragePooling2D(),
                    keras.layers.Dense(3, activation="softmax"),
                ]
            )
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1})
        )
        _fit(model, callback, self.x, self.y)
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(callback.history.notes, [])


class OtherCallbacksTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(32)

    def test_learning_rate_schedule_applies_in_replay(self):
        model = tiny_models.compile_model(
            tiny_models.conv_net(), keras.optimizers.SGD(0.05)
        )
        rates = {0: 0.05, 1: 0.02, 2: 0.0, 3: 0.01}
        read_back, dense = {}, {}

        class Read(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                dense[epoch] = model.get_layer("dense").kernel.numpy()

            def on_epoch_end(self, epoch, logs=None):
                read_back[epoch] = float(model.optimizer.learning_rate.numpy())

        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(
            model,
            [
                callback,
                keras.callbacks.LearningRateScheduler(lambda e: rates[e]),
                Read(),
            ],
            self.x,
            self.y,
            epochs=4,
        )
        self.assertEqual(_modes(callback), ["full", "fill", "replay", "replay"])
        self.assertAllClose(
            [read_back[e] for e in range(4)], list(rates.values())
        )
        # Rate 0 in the first replay epoch: the head did not move.
        self.assertAllEqual(dense[2], dense[3])
        self.assertNotAllClose(dense[3], model.get_layer("dense").kernel)

    def test_early_stopping_after_a_fill_ends_cleanly(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        # The stem stops growing after epoch 0: stop one epoch later.
        stop = keras.callbacks.EarlyStopping(
            "ld_frozen_units", mode="min", patience=1
        )
        _fit(model, [callback, stop], self.x, self.y, epochs=5)
        self.assertEqual(_modes(callback), ["full", "fill"])
        self.assertTrue(all(layer.trainable for layer in model.layers))
        self.assertIsNone(model.train_function)

    def test_a_stop_in_the_middle_of_a_fill_discards_the_partial_cache(self):
        model = _model(recorder=True)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), keep_frozen=True
        )
        spy = CacheSpy(callback)

        class StopMidFill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == 1 and batch == 1:
                    self.model.stop_training = True

        _fit(model, [callback, spy, StopMidFill()], self.x, self.y, epochs=4)
        self.assertEqual(_modes(callback), ["full", "fill"])
        self.assertEqual(callback.history.epochs[-1].samples, 16)
        self.assertEqual(spy.views, {})  # two batches are not a view
        self.assertTrue(all(layer.trainable for layer in model.layers))
        # The next fit fills a whole view from scratch, then replays it.
        seen = Seen()
        _fit(model, [callback, seen], self.x, self.y, epochs=2)
        self.assertEqual(_modes(callback)[2:], ["fill", "replay"])
        self.assertEqual(seen.counts, [32.0, 32.0])

    def test_nan_weights_never_count_as_settled(self):
        model = _model()

        class Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    for weight in model.trainable_weights:
                        weight.assign(weight * np.nan)

        # Nothing settles at this threshold, unless NaN passed for settled.
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores(
                threshold=1e-9, patience=1, warmup=0
            )
        )
        _fit(
            model,
            [callback, Poison(), keras.callbacks.TerminateOnNaN()],
            self.x,
            self.y,
            epochs=3,
        )
        self.assertEqual(_modes(callback), ["full", "full"])
        self.assertEqual(callback.history.epochs[-1].samples, 8)
        self.assertEqual(callback.history.frozen_at, {})
        self.assertIn(
            "non-finite weights at epoch 2", callback.history.notes[0]
        )
        self.assertTrue(all(layer.trainable for layer in model.layers))

    def test_verbose_prints_one_line_per_epoch(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), verbose=1
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            _fit(model, callback, self.x, self.y)
        lines = out.getvalue().splitlines()
        self.assertLen(lines, 3)
        self.assertRegex(lines[0], r"^LearnDrop epoch 1: full, 2/4 units")
        self.assertRegex(lines[2], r"^LearnDrop epoch 3: replay, 2/4 units")

    def test_verbose_logs_through_absl_without_interactive_logging(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), verbose=1
        )
        out = io.StringIO()
        keras.config.disable_interactive_logging()
        try:
            with contextlib.redirect_stdout(out):
                with self.assertLogs("absl", level="INFO") as logs:
                    _fit(model, callback, self.x, self.y)
        finally:
            keras.config.enable_interactive_logging()
        lines = [r.getMessage() for r in logs.records]
        lines = [line for line in lines if line.startswith("LearnDrop")]
        self.assertLen(lines, 3)
        self.assertEqual(out.getvalue(), "")

    def test_verbose_shows_in_a_plain_script(self):
        # What a person running `python script.py` sees: no logging setup.
        script = textwrap.dedent(
            """
            import numpy as np
            import keras_learndrop
            from keras_learndrop.backend import keras

            model = keras.Sequential([
                keras.Input((4,)),
                keras.layers.Dense(3),
                keras.layers.Dense(2, activation="softmax"),
            ])
            model.compile("sgd", "sparse_categorical_crossentropy")
            x = np.random.rand(16, 4).astype("float32")
            y = np.random.randint(0, 2, 16)
            model.fit(x, y, epochs=2, verbose=0,
                      callbacks=[keras_learndrop.LearnDrop(verbose=1)])
            """
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            [
                line
                for line in result.stdout.splitlines()
                if line.startswith("LearnDrop")
            ],
            [
                "LearnDrop epoch 1: full, 0/2 units frozen, cache 0.0 MiB, "
                "0.0 % of forward FLOPs saved so far",
                "LearnDrop epoch 2: full, 0/2 units frozen, cache 0.0 MiB, "
                "0.0 % of forward FLOPs saved so far",
            ],
        )


class BudgetTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(32)

    def test_a_budget_of_zero_bytes_runs_the_stem_forward(self):
        model = _model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), memory_budget=0
        )
        with self.assertWarnsRegex(UserWarning, "budget of 0.0 MiB"):
            _fit(model, callback, self.x, self.y)
        self.assertEqual(
            _modes(callback), ["full", "stem_forward", "stem_forward"]
        )

    def test_a_deeper_cut_over_the_budget_falls_back_to_the_stem(self):
        keras.utils.set_random_seed(0)
        # Cut 1 holds 2 channels, cut 2 holds 16: the first fits in 40 kB
        # (32 x (8*8*2*4 + 8) bytes), the extended one does not.
        model = tiny_models.compile_model(
            keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    keras.layers.Conv2D(2, 3, padding="same", name="narrow"),
                    keras.layers.Conv2D(16, 3, padding="same", name="wide"),
                    keras.layers.Conv2D(4, 3, padding="same", name="conv3"),
                    keras.layers.GlobalAveragePooling2D(),
                    keras.layers.Dense(3, activation="softmax"),
                ]
            )
        )
        seen = {}

        class Samples(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen[epoch] = logs["ld_cache_bytes"]

        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1, 2: 2}),
            memory_budget=40_000,
        )
        with self.assertWarnsRegex(UserWarning, "budget"):
            _fit(model, [callback, Samples()], self.x, self.y, epochs=4)
        self.assertEqual(
            _modes(callback), ["full", "fill", "stem_forward", "stem_forward"]
        )
        self.assertEqual(seen[1], 32 * (8 * 8 * 2 * 4 + 8))
        self.assertEqual(seen[3], 0)
        self.assertEqual([e.samples for e in callback.history.epochs], [32] * 4)
        self.assertIn("MiB", callback.history.notes[0])


class RunsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(32)

    def test_initial_epoch_counts_evaluations_from_there(self):
        model = _model(recorder=True)
        seen = Seen()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, [callback, seen], self.x, self.y, epochs=5, initial_epoch=2)
        self.assertEqual([e.epoch for e in callback.history.epochs], [2, 3, 4])
        self.assertEqual(_modes(callback), ["full", "fill", "replay"])
        self.assertEqual(callback.history.frozen_at, {0: 2, 1: 2})
        self.assertEqual(seen.counts, [32.0] * 3)

    def test_keep_frozen_starts_the_next_fit_frozen_on_new_data(self):
        model = _model(recorder=True)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), keep_frozen=True
        )
        stem = [
            w
            for layer in graph.UnitChain(model).layers_of(0, 2)
            for w in layer.weights
        ]
        _fit(model, callback, self.x, self.y, epochs=2)
        after_first = [w.numpy() for w in stem]
        self.assertTrue(all(layer.trainable for layer in model.layers))
        x2, y2 = tiny_models.data(24, seed=7)
        seen = Seen()
        _fit(model, [callback, seen], x2, y2, epochs=2)
        self.assertEqual(_modes(callback), ["full", "fill", "fill", "replay"])
        # (Each record is made before its epoch's evaluation.)
        self.assertEqual(
            [e.frozen_units for e in callback.history.epochs], [0, 2, 2, 2]
        )
        self.assertEqual(seen.counts, [24.0, 24.0])
        self.assertAllClose(seen.totals[1], _stem_sum(model, x2), rtol=1e-5)
        self.assertLen(callback.history.evaluations, 4)
        for before, weight in zip(after_first, stem):
            self.assertAllEqual(before, weight.numpy())

    def _crash_with_the_stem_frozen(self, model):
        """Fits `model` until an exception in epoch 3, 2 units frozen."""

        class Crash(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:
                    raise RuntimeError("interrupted")

        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            _fit(
                model,
                [
                    keras_learndrop.LearnDrop(
                        policy=keras_learndrop.FixedSchedule({1: 2})
                    ),
                    Crash(),
                ],
                self.x,
                self.y,
            )
        self.assertFalse(model.get_layer("conv1").trainable)  # left frozen

    def test_a_plain_fit_after_a_crashed_one_trains_every_layer(self):
        model = _model(recorder=True)

        self._crash_with_the_stem_frozen(model)
        before = model.get_layer("conv1").kernel.numpy()
        x2, y2 = tiny_models.data(16, seed=3)
        seen = Seen()
        _fit(model, seen, x2, y2, epochs=1)
        # Keras's own step on the new data, with the user's flags back.
        self.assertEqual(seen.counts, [16.0])
        self.assertTrue(all(layer.trainable for layer in model.layers))
        self.assertNotAllClose(before, model.get_layer("conv1").kernel)

    def test_recompiling_after_a_crashed_fit_gives_the_flags_back(self):
        model = _model()
        model.get_layer("conv3").trainable = False  # The user's own flag.

        self._crash_with_the_stem_frozen(model)

        tiny_models.compile_model(model)

        self.assertEqual(
            [layer.name for layer in model.layers if not layer.trainable],
            ["conv3"],
        )
        self.assertNotIn("compile", vars(model))
        before = model.get_layer("conv1").kernel.numpy()
        _fit(model, [], self.x, self.y, epochs=1)
        self.assertNotAllClose(before, model.get_layer("conv1").kernel)

    def test_seeded_runs_freeze_alike_and_end_bit_identical(self):
        runs = []
        for _ in range(2):
            keras.utils.set_random_seed(0)
            model = _model()
            callback = keras_learndrop.LearnDrop(
                policy=keras_learndrop.LearnDropScores(
                    threshold=0.9, patience=1, warmup=1
                )
            )
            _fit(model, callback, self.x, self.y, epochs=4)
            runs.append(
                (
                    callback.history.frozen_at,
                    _modes(callback),
                    [w.numpy() for w in model.weights],
                )
            )
        self.assertEqual(runs[0][0], runs[1][0])
        self.assertNotEqual(runs[0][0], {})
        self.assertEqual(runs[0][1], runs[1][1])
        for a, b in zip(runs[0][2], runs[1][2]):
            self.assertAllEqual(a, b)


if __name__ == "__main__":
    tf.test.main()
