"""Tests of the LearnDrop callback: hooks, end-to-end fit, replay, reports."""

import contextlib
import csv
import glob
import io
import os
import warnings

import numpy as np
from absl.testing import parameterized

import keras_learndrop
from keras_learndrop import graph
from keras_learndrop import report
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models


def _fit(model, callback, x, y, epochs, **kwargs):
    kwargs.setdefault("batch_size", 8)
    return model.fit(
        x, y, epochs=epochs, callbacks=[callback], verbose=0, **kwargs
    )


def _weights(layers):
    return [w.numpy() for layer in layers for w in layer.weights]


class ArgumentsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("eval_every", dict(eval_every=0), ValueError, "eval_every=0"),
        ("cache", dict(cache="disk"), ValueError, "'auto', 'off'"),
        ("dtype", dict(cache_dtype="int8"), ValueError, "'float16'"),
        ("budget", dict(memory_budget=-5), ValueError, "memory_budget=-5"),
        (
            "augmented",
            dict(augmented_inputs="yes"),
            TypeError,
            "True or False or None. Received: augmented_inputs='yes'",
        ),
        ("views", dict(augmented_views=-1), ValueError, "augmented_views"),
        ("jit", dict(jit_compile="xla"), TypeError, "'auto'"),
        ("dropout", dict(stem_dropout="off"), ValueError, "'inference'"),
        ("restore", dict(restore_trainable=None), TypeError, "restore"),
        ("seed", dict(seed=-3), ValueError, "seed=-3"),
        ("policy", dict(policy={1: 2}), TypeError, "FreezePolicy"),
    )
    def test_bad_argument_is_refused(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            keras_learndrop.LearnDrop(**kwargs)

    @parameterized.parameters(None, True, False)
    def test_augmented_inputs_takes_three_values(self, value):
        callback = keras_learndrop.LearnDrop(augmented_inputs=value)
        self.assertIs(callback.augmented_inputs, value)
        self.assertIsNone(keras_learndrop.LearnDrop().augmented_inputs)

    def test_bad_schedule_names_the_valid_range(self):
        model = tiny_models.compile_model(tiny_models.conv_net())
        x, y = tiny_models.data(8)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 4})
        )
        with self.assertRaisesRegex(ValueError, r"\[0, 3\].*\{1: 4\}"):
            _fit(model, callback, x, y, 1)


class ModelChecksTest(tf.test.TestCase):
    def test_uncompiled_model(self):
        model = tiny_models.conv_net()
        callback = keras_learndrop.LearnDrop()
        callback.set_model(model)
        with self.assertRaisesRegex(ValueError, "compile"):
            callback.on_train_begin()

    def test_custom_train_step(self):
        class Custom(keras.Model):
            def train_step(self, data):
                return super().train_step(data)

        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
        model = Custom(inputs, outputs)
        model.compile("sgd", "mse")
        callback = keras_learndrop.LearnDrop()
        callback.set_model(model)
        with self.assertRaisesRegex(ValueError, "compute_loss"):
            callback.on_train_begin()

    def test_no_trainable_weights(self):
        model = tiny_models.compile_model(tiny_models.conv_net())
        model.trainable = False
        tiny_models.compile_model(model)
        x, y = tiny_models.data(8)
        with self.assertRaisesRegex(ValueError, "no trainable weights"):
            _fit(model, keras_learndrop.LearnDrop(), x, y, 1)

    def test_subclassed_model(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(3, activation="softmax")

            def call(self, x):
                return self.dense(keras.ops.reshape(x, (-1, 64)))

        model = tiny_models.compile_model(Net())
        x, y = tiny_models.data(8)
        with self.assertRaisesRegex(ValueError, "subclassed model"):
            _fit(model, keras_learndrop.LearnDrop(), x, y, 1)


class HooksTest(tf.test.TestCase):
    """Drives the callback's hooks directly, with weights set by hand."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.model = tiny_models.compile_model(tiny_models.conv_net())
        self.chain = graph.UnitChain(self.model)
        self.callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores(
                threshold=0.3, patience=2, warmup=1, relative=False
            )
        )
        self.callback.set_model(self.model)
        # A constant learning rate over 8 epochs: after epoch e (from 0) the
        # continuation of a unit that changed by c is c * (7 - e).
        self.callback.set_params({"epochs": 8, "steps": 1})

    def _scale_units(self, factors):
        """Scales each unit's kernels by (1 + factor): c_u = factor."""
        for unit, factor in zip(self.chain.units, factors):
            for weight in unit.trainable_weights:
                weight.assign(weight * (1.0 + factor))

    def test_prefix_freezes_at_the_expected_evaluation(self):
        cb = self.callback
        cb.on_train_begin()
        # The warm-up's spike (0.4) never counts; 0.2 with 6 epochs to go
        # (1.2) is no settling. Then units 0 and 2 slow down to 0.05
        # (continuation 0.25, then 0.2 <= 0.3), unit 1 keeps learning, so
        # only unit 0 (the settled prefix) may freeze.
        plan = [
            [0.4, 0.4, 0.4, 0.4],
            [0.2, 0.2, 0.2, 0.2],
            [0.05, 0.2, 0.05, 0.2],
            [0.05, 0.2, 0.05, 0.2],
            [0.05, 0.05, 0.05, 0.2],
            [0.05, 0.05, 0.05, 0.2],
        ]
        stems = []
        for epoch, factors in enumerate(plan):
            cb.on_epoch_begin(epoch)
            self._scale_units(factors)
            logs = {}
            cb.on_epoch_end(epoch, logs)
            stems.append(logs["ld_frozen_units"])
            self.assertAllClose(
                [
                    logs[f"ld_change/unit_{i}"]
                    for i in range(4)
                    if i >= 0 and f"ld_change/unit_{i}" in logs
                ],
                [
                    f
                    for i, f in enumerate(factors)
                    if f"ld_change/unit_{i}" in logs
                ],
                rtol=1e-5,
            )
        # Warm-up is evaluation 1; patience 2 -> unit 0 after evaluation 4,
        # units 1 and 2 after evaluation 6.
        self.assertEqual(stems, [0, 0, 0, 1, 1, 3])
        self.assertEqual(cb.history.frozen_at, {0: 3, 1: 5, 2: 5})
        self.assertFalse(self.model.get_layer("conv1").trainable)
        self.assertFalse(self.model.get_layer("bn1").trainable)
        self.assertTrue(self.model.get_layer("dense").trainable)
        cb.on_train_end()
        self.assertTrue(self.model.get_layer("conv1").trainable)

    def test_frozen_units_are_not_scored(self):
        cb = self.callback
        cb.policy = keras_learndrop.FixedSchedule({1: 2})
        cb.on_train_begin()
        cb.on_epoch_begin(0)
        self._scale_units([0.1] * 4)
        cb.on_epoch_end(0, {})
        logs = {}
        cb.on_epoch_begin(1)
        cb.on_epoch_end(1, logs)
        self.assertNotIn("ld_change/unit_0", logs)
        self.assertNotIn("ld_change/unit_1", logs)
        self.assertIn("ld_change/unit_2", logs)


class ObservationTest(parameterized.TestCase, tf.test.TestCase):
    """What LearnDrop hands its policy, measured in a real fit."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)

    def _observe(self, optimizer, samples_per_epoch, epochs=4):
        model = tiny_models.compile_model(
            tiny_models.conv_net(), optimizer=optimizer
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule(
                {}, samples_per_epoch=samples_per_epoch
            )
        )
        _fit(model, callback, self.x, self.y, epochs)
        return callback.history.evaluations

    def test_learning_rates_follow_the_schedule(self):
        # 6 steps an epoch, 4 epochs: the schedule spans 24 steps.
        schedule = keras.optimizers.schedules.CosineDecay(0.1, 24)
        evaluations = self._observe(keras.optimizers.SGD(schedule), 1)

        def lr(step):
            return float(schedule(step))

        for k, evaluation in enumerate(evaluations):
            middles = [6 * (k + 1) + 6 * j + 3 for j in range(3 - k)]
            self.assertAllClose(
                evaluation.remaining_learning_rate,
                sum(lr(s) for s in middles),
                rtol=1e-5,
            )
            # Sampled at the epoch's start and end.
            self.assertAllClose(
                evaluation.learning_rate,
                (lr(6 * k) + lr(6 * (k + 1))) / 2,
                rtol=1e-5,
            )

    def test_constant_learning_rate_counts_as_constant(self):
        evaluations = self._observe(keras.optimizers.SGD(0.05), 1)

        self.assertAllClose(
            [e.remaining_learning_rate for e in evaluations],
            [0.15, 0.1, 0.05, 0.0],
        )

    def test_only_a_schedule_counts_as_known(self):
        class Recorder(keras_learndrop.FreezePolicy):
            def propose(self, observation):
                self.seen = observation.scheduled
                return 0

        scheduled = keras.optimizers.schedules.CosineDecay(0.1, 24)
        for optimizer, expected in (
            (keras.optimizers.SGD(scheduled), True),
            (keras.optimizers.SGD(0.05), False),
            (keras.optimizers.Adam(), False),
        ):
            model = tiny_models.compile_model(
                tiny_models.conv_net(), optimizer=optimizer
            )
            recorder = Recorder()
            _fit(model, keras_learndrop.LearnDrop(recorder), self.x, self.y, 1)
            self.assertIs(recorder.seen, expected)

    @parameterized.named_parameters(
        ("constant_rate", None, False, "LearnDropScores: the stem trains"),
        ("schedule_from_scratch", 0.5, False, "LearnDropScores: the stem"),
        ("schedule_pretrained", 0.05, True, "FeatureDrift: the stem starts"),
    )
    def test_schedule_or_drift_says_what_decides_and_why(
        self, peak, pretrain, expected
    ):
        model = tiny_models.compile_model(tiny_models.conv_net())
        y = self.y
        if pretrain:
            # Pre-trained on one labelling, fine-tuned on another: the stem
            # keeps its features, the output unit remaps them.
            model.fit(self.x, self.y, epochs=5, batch_size=8, verbose=0)
            y = (self.y + 1) % 3
        optimizer = (
            keras.optimizers.SGD(0.5)
            if peak is None
            else keras.optimizers.SGD(
                keras.optimizers.schedules.CosineDecay(peak, 12)
            )
        )
        model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy"
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.ScheduleOrDrift(), verbose=1
        )

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            _fit(model, callback, self.x, y, 2)

        notes = [n for n in callback.history.notes if "ScheduleOrDrift" in n]
        self.assertLen(notes, 1)
        self.assertIn(f"ScheduleOrDrift decides with {expected}", notes[0])
        self.assertIn(notes[0], out.getvalue())
        state = callback.policy.get_state()
        self.assertEqual(
            state["choice"], "scores" if "Scores" in expected else "drift"
        )

    def test_samples_within_the_epoch_make_the_path(self):
        without = self._observe(keras.optimizers.SGD(0.05, momentum=0.9), 1)
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)
        sampled = self._observe(keras.optimizers.SGD(0.05, momentum=0.9), 3)

        for plain, many in zip(without, sampled):
            # The same training: the same net change, and a path that
            # only equals it without samples.
            self.assertAllClose(plain.change, many.change, rtol=1e-5)
            self.assertAllEqual(plain.path, plain.change)
            self.assertTrue(np.all(np.array(many.path) >= many.change))
            self.assertTrue(np.any(np.array(many.path) > many.change))


class FitTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)

    def _model(self, **kwargs):
        return tiny_models.compile_model(tiny_models.conv_net(**kwargs))

    def test_fill_then_replay_with_frozen_weights_bit_identical(self):
        model = self._model()
        chain = graph.UnitChain(model)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        frozen = {}

        class Spy(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    frozen["after_freeze"] = _weights(chain.layers_of(0, 2))
                    frozen["head"] = _weights(chain.layers_of(2, 4))

        history = model.fit(
            self.x,
            self.y,
            epochs=4,
            batch_size=8,
            callbacks=[callback, Spy()],
            verbose=0,
            validation_data=(self.x[:16], self.y[:16]),
        )
        modes = [e.mode for e in callback.history.epochs]
        self.assertEqual(modes, ["full", "fill", "replay", "replay"])
        for a, b in zip(
            frozen["after_freeze"], _weights(chain.layers_of(0, 2))
        ):
            self.assertAllEqual(a, b)
        for a, b in zip(frozen["head"], _weights(chain.layers_of(2, 4))):
            if a.dtype == np.float32 and a.size > 3:
                self.assertNotAllClose(a, b)
        # Keras's optimizer went on counting: 6 steps per epoch, 4 epochs.
        self.assertEqual(int(model.optimizer.iterations), 24)
        for key in (
            "ld_frozen_units",
            "ld_frozen_layers",
            "ld_epoch_mode",
            "ld_cache_bytes",
            "ld_forward_flops",
            "ld_flops_saved",
            "ld_change/unit_2",
            "val_loss",
        ):
            self.assertIn(key, history.history)
        self.assertEqual(history.history["ld_epoch_mode"], [0, 2, 3, 3])
        self.assertEqual(history.history["ld_frozen_units"], [2, 2, 2, 2])
        # conv1, bn1, relu1 + conv2, relu2, pool2.
        self.assertEqual(history.history["ld_frozen_layers"][-1], 6)
        self.assertEqual(
            history.history["ld_cache_bytes"][-1], 48 * 96 * 4 + 48 * 8
        )
        # Validation ran the whole model: it matches evaluate().
        final = model.evaluate(
            self.x[:16], self.y[:16], verbose=0, return_dict=True
        )
        self.assertAllClose(history.history["val_loss"][-1], final["loss"])
        self.assertTrue(model.get_layer("conv1").trainable)

    def test_every_sample_reaches_the_head_once_per_replay_epoch(self):
        model = self._model(recorder=True)
        chain = graph.UnitChain(model)
        recorder = model.get_layer("recorder")
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        log = tiny_models.RecorderLog(recorder)
        model.fit(
            self.x,
            self.y,
            epochs=4,
            batch_size=10,
            callbacks=[callback, log],
            verbose=0,
        )
        features = chain.forward(tf.constant(self.x), 0, 2, training=False)
        expected_total = float(tf.reduce_sum(tf.cast(features, "float64")))
        for count, total in log.epochs[1:]:
            self.assertEqual(count, 48)
            self.assertAllClose(total, expected_total, rtol=1e-5)
        self.assertEqual([e.samples for e in callback.history.epochs], [48] * 4)

    def test_replay_order_differs_between_epochs_and_is_seeded(self):
        orders = []
        for _ in range(2):
            model = self._model()
            callback = keras_learndrop.LearnDrop(
                policy=keras_learndrop.FixedSchedule({1: 2}), seed=7
            )
            _fit(model, callback, self.x, self.y, 2)
            # The cached features are released at the end of fit.
            self.assertIsNone(callback._training)
            orders.append(model.get_layer("dense").kernel.numpy())
        self.assertAllEqual(orders[0], orders[1])

    def test_stem_weights_are_not_read_during_replay(self):
        results = []
        for tamper in (False, True):
            model = self._model()
            callback = keras_learndrop.LearnDrop(
                policy=keras_learndrop.FixedSchedule({1: 2}), seed=3
            )

            class Tamper(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None, tamper=tamper):
                    if tamper and epoch == 2:
                        conv = self.model.get_layer("conv1")
                        conv.kernel.assign(conv.kernel * 5.0 + 1.0)

            model.fit(
                self.x,
                self.y,
                epochs=3,
                batch_size=8,
                verbose=0,
                callbacks=[callback, Tamper()],
            )
            results.append(model.get_layer("dense").kernel.numpy())
        self.assertAllEqual(results[0], results[1])

    def test_a_new_fit_never_reuses_the_previous_cache(self):
        model = self._model(recorder=True)
        chain = graph.UnitChain(model)
        recorder = model.get_layer("recorder")
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), keep_frozen=True
        )
        _fit(model, callback, self.x, self.y, 3)
        x2, y2 = tiny_models.data(24, seed=5)
        recorder.reset()
        _fit(model, callback, x2, y2, 1)
        self.assertEqual(callback.history.epochs[-1].mode, "fill")
        features = chain.forward(tf.constant(x2), 0, 2, training=False)
        self.assertEqual(float(recorder.count.numpy()), 24)
        self.assertAllClose(
            recorder.total.numpy(),
            float(tf.reduce_sum(tf.cast(features, "float64"))),
            rtol=1e-5,
        )

    def test_class_weight_is_honoured_in_replay(self):
        losses = {}
        for name, class_weight in (
            ("plain", None),
            ("weighted", {0: 1.0, 1: 5.0, 2: 0.1}),
        ):
            model = self._model()
            callback = keras_learndrop.LearnDrop(
                policy=keras_learndrop.FixedSchedule({1: 2}), seed=1
            )
            history = _fit(
                model, callback, self.x, self.y, 3, class_weight=class_weight
            )
            losses[name] = history.history["loss"][-1]
            self.assertEqual(callback.history.epochs[-1].mode, "replay")
        self.assertNotAllClose(losses["plain"], losses["weighted"])

    def test_unknown_length_dataset_replays_each_sample_once(self):
        model = self._model(recorder=True)
        recorder = model.get_layer("recorder")
        dataset = (
            tf.data.Dataset.from_tensor_slices((self.x, self.y))
            .filter(lambda x, y: True)
            .batch(10)
        )
        self.assertEqual(
            int(dataset.cardinality()), int(tf.data.UNKNOWN_CARDINALITY)
        )
        log = tiny_models.RecorderLog(recorder)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        model.fit(dataset, epochs=4, verbose=0, callbacks=[callback, log])
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay"],
        )
        self.assertEqual([count for count, _ in log.epochs[1:]], [48] * 3)

    def test_infinite_dataset_with_steps_per_epoch_runs_the_stem(self):
        model = self._model()
        dataset = (
            tf.data.Dataset.from_tensor_slices((self.x, self.y))
            .repeat()
            .batch(8)
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        with self.assertWarnsRegex(UserWarning, "steps_per_epoch=3"):
            model.fit(
                dataset,
                epochs=3,
                steps_per_epoch=3,
                verbose=0,
                callbacks=[callback],
            )
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "stem_forward", "stem_forward"],
        )
        self.assertIn("steps_per_epoch=3", callback.history.notes[0])

    @parameterized.named_parameters(
        ("flip", keras.layers.RandomFlip("horizontal", seed=1)),
        ("translation", keras.layers.RandomTranslation(0.1, 0.1, seed=1)),
    )
    def test_augmentation_in_the_stem_is_detected(self, layer):
        model = self._model(front=[layer])
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        with self.assertWarnsRegex(UserWarning, "augmented_views"):
            _fit(model, callback, self.x, self.y, 3)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "stem_forward", "stem_forward"],
        )

    def test_stem_dropout_inference_caches_the_stem_without_dropout(self):
        model = self._model(
            recorder=True,
            front=[keras.layers.SpatialDropout2D(0.5, seed=1)],
        )
        log = tiny_models.RecorderLog(model.get_layer("recorder"))
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}),
            stem_dropout="inference",
        )
        model.fit(
            self.x,
            self.y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[callback, log],
        )
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "fill", "replay"],
        )
        self.assertEqual(callback.history.notes, [])
        # The head trains on the stem's features with no channel dropped.
        features = graph.UnitChain(model).forward(
            tf.constant(self.x), 0, 2, training=False
        )
        expected = float(tf.reduce_sum(tf.cast(features, "float64")))
        for _, total in log.epochs[1:]:
            self.assertAllClose(total, expected, rtol=1e-5)

    @parameterized.named_parameters(
        ("layer_in_the_model", True, False),
        ("declared_pipeline", False, True),
    )
    def test_default_policy_does_not_freeze_augmented_inputs(
        self, flip_layer, augmented_inputs
    ):
        front = [keras.layers.RandomFlip("horizontal", seed=1)]
        # Settled at every evaluation: it would freeze after the first.
        eager = dict(
            threshold=1.0, patience=1, warmup=0, last_unit_threshold=None
        )
        histories = {}
        for freeze_augmented in (False, True):
            keras.utils.set_random_seed(0)
            model = self._model(front=front if flip_layer else [])
            callback = keras_learndrop.LearnDrop(
                policy=keras_learndrop.LearnDropScores.default(
                    freeze_augmented=freeze_augmented, **eager
                ),
                augmented_inputs=augmented_inputs,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # The cache's refusal.
                _fit(model, callback, self.x, self.y, 3)
            histories[freeze_augmented] = callback.history

        held = histories[False]
        self.assertEqual([e.frozen_units for e in held.epochs], [0, 0, 0])
        self.assertEqual({e.mode for e in held.epochs}, {"full"})
        self.assertIn("freeze_augmented=True", held.notes[0])
        self.assertEqual(histories[True].epochs[-1].frozen_units, 3)
        self.assertEqual(histories[True].epochs[-1].mode, "stem_forward")

    def test_dropout_alone_is_no_augmentation(self):
        model = self._model(front=[keras.layers.Dropout(0.5, seed=1)])
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores.default(
                threshold=1.0, patience=1, warmup=0, last_unit_threshold=None
            ),
            stem_dropout="inference",
        )
        _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(callback.history.epochs[-1].frozen_units, 3)

    def test_stem_dropout_train_runs_the_stem_forward(self):
        model = self._model(front=[keras.layers.Dropout(0.5, seed=1)])
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), stem_dropout="train"
        )
        with self.assertWarnsRegex(UserWarning, "stem_dropout='inference'"):
            _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(callback.history.epochs[-1].mode, "stem_forward")

    def test_stem_dropout_inference_keeps_input_augmentation(self):
        model = self._model(
            front=[
                keras.layers.RandomFlip("horizontal", seed=1),
                keras.layers.Dropout(0.5, seed=1),
            ]
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}),
            stem_dropout="inference",
        )
        with self.assertWarnsRegex(UserWarning, "augmented_views"):
            _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(callback.history.epochs[-1].mode, "stem_forward")

    def test_augmented_views_are_filled_then_replayed_in_turn(self):
        model = self._model(front=[keras.layers.RandomFlip(seed=1)])
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), augmented_views=2
        )
        _fit(model, callback, self.x, self.y, 5)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "fill", "fill", "replay", "replay"],
        )
        self.assertEqual(
            callback.history.epochs[-1].cache_bytes, 2 * (48 * 96 * 4 + 48 * 8)
        )

    def test_declared_input_augmentation_disables_the_cache(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), augmented_inputs=True
        )
        with self.assertWarns(UserWarning):
            _fit(model, callback, self.x, self.y, 3)
        self.assertEqual(callback.history.epochs[-1].mode, "stem_forward")

    def test_memory_budget_exceeded_falls_back_to_the_stem(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), memory_budget=1000
        )
        with self.assertWarnsRegex(UserWarning, "budget"):
            _fit(model, callback, self.x, self.y, 3)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "stem_forward", "stem_forward"],
        )
        self.assertIn("MiB", callback.history.notes[0])

    @parameterized.named_parameters(
        ("float16", "float16"), ("bfloat16", "bfloat16")
    )
    def test_low_precision_cache_halves_the_bytes(self, dtype):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}), cache_dtype=dtype
        )
        history = _fit(model, callback, self.x, self.y, 3)
        self.assertEqual(
            history.history["ld_cache_bytes"][-1], 48 * 96 * 2 + 48 * 8
        )
        self.assertTrue(np.isfinite(history.history["loss"][-1]))

    def test_growing_stem_extends_the_cache_like_a_fresh_fill(self):
        model = self._model()
        chain = graph.UnitChain(model)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 1, 3: 3})
        )
        views = {}

        class Spy(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if (
                    callback._training.cache is not None
                    and callback._training.cache.views
                ):
                    views[epoch] = callback._training.cache.views[0]

        _fit_result = model.fit(
            self.x,
            self.y,
            epochs=5,
            batch_size=8,
            verbose=0,
            callbacks=[callback, Spy()],
        )
        del _fit_result
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["full", "fill", "replay", "replay", "replay"],
        )
        view = views[2]  # extended to the 3-unit cut at the end of epoch 2
        fresh = chain.forward(tf.constant(self.x), 0, 3, training=False)
        # The cache is in Keras's shuffled fill order: compare sorted rows.
        got = np.sort(view.features.numpy().reshape(48, -1), axis=0)
        want = np.sort(fresh.numpy().reshape(48, -1), axis=0)
        self.assertAllClose(got, want, atol=1e-5)
        self.assertEqual(view.features.shape, (48, 8))
        # Extension ran units 1-2 on the cache: counted in epoch 2's FLOPs.
        flops = callback.history.unit_flops
        record = callback.history.epochs[2]
        self.assertEqual(
            record.forward_flops, 48 * sum(flops[1:]) + 48 * sum(flops[1:3])
        )

    def test_forward_flops_follow_the_epoch_modes(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, callback, self.x, self.y, 3)
        flops = callback.history.unit_flops
        self.assertEqual(sum(flops), keras_learndrop.model_flops(model))
        # conv1: 8*8*4 outputs of a 3x3x1 conv + bias, BN (4) and ReLU (1).
        self.assertEqual(flops[0], 256 * (2 * 9 + 1) + 256 * 4 + 256)
        full, head = 48 * sum(flops), 48 * sum(flops[2:])
        self.assertEqual(
            [e.forward_flops for e in callback.history.epochs],
            [full, full, head],
        )
        self.assertAllClose(
            callback.history.flops_reduction, 1 - (2 * full + head) / (3 * full)
        )

    def test_model_saves_and_loads_in_plain_keras(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        saved = {}

        class SaveDuring(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 2:
                    path = os.path.join(self_test.get_temp_dir(), "mid.keras")
                    self.model.save(path)
                    saved["mid"] = (path, self.model.predict(self_x, verbose=0))

        self_test, self_x = self, self.x[:8]
        model.fit(
            self.x,
            self.y,
            epochs=3,
            batch_size=8,
            verbose=0,
            callbacks=[callback, SaveDuring()],
        )
        path = os.path.join(self.get_temp_dir(), "end.keras")
        model.save(path)
        for file, expected in (
            saved["mid"],
            (path, model.predict(self.x[:8], verbose=0)),
        ):
            loaded = keras.models.load_model(file)
            self.assertEqual(type(loaded), keras.Sequential)
            self.assertEqual(len(loaded.layers), len(model.layers))
            self.assertAllClose(
                loaded.predict(self.x[:8], verbose=0), expected, atol=1e-6
            )
        loaded = keras.models.load_model(path)
        # Saved at the end: the user's own flags (restore_trainable=True).
        self.assertTrue(all(layer.trainable for layer in loaded.layers))

    def test_restore_trainable_false_keeps_the_stem_frozen(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2}),
            restore_trainable=False,
        )
        _fit(model, callback, self.x, self.y, 2)
        self.assertFalse(model.get_layer("conv2").trainable)
        self.assertTrue(model.get_layer("conv3").trainable)

    def test_callback_is_reusable_and_resets_per_fit(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        _fit(model, callback, self.x, self.y, 2)
        _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(
            [e.mode for e in callback.history.epochs], ["full", "fill"]
        )
        # Keras's own step is back after fit: a plain fit trains every layer.
        before = model.get_layer("conv1").kernel.numpy()
        model.fit(self.x, self.y, epochs=1, verbose=0)
        self.assertNotAllClose(before, model.get_layer("conv1").kernel.numpy())


def _flip(x, y):
    return tf.image.random_flip_left_right(x), y


def _mix(x, y):
    # MixUp: a Beta(0.2, 0.2) weight, a random partner in the batch.
    a, b = tf.random.gamma([], 0.2), tf.random.gamma([], 0.2)
    weight = a / (a + b)
    partner = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    labels = tf.one_hot(y, 3)
    return (
        weight * x + (1 - weight) * tf.gather(x, partner),
        weight * labels + (1 - weight) * tf.gather(labels, partner),
    )


def _prepare(x, y):
    x = tf.image.resize(x * 255.0, (8, 8))
    return (tf.cast(x, "float32") / 255.0 - 0.5) / 0.25, y


class Flips(keras.utils.PyDataset):
    """The batches of `x, y`, each image flipped at random (or never)."""

    def __init__(self, x, y, random=True, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.random = x, y, random
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.x) // 8

    def __getitem__(self, index):
        x = self.x[8 * index : 8 * index + 8]
        if self.random:
            flip = self.rng.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        return x, self.y[8 * index : 8 * index + 8]


class InputPipelineTest(parameterized.TestCase, tf.test.TestCase):
    """Random inputs are found wherever they are drawn (`input_randomness`)."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)

    def _dataset(self):
        return (
            tf.data.Dataset.from_tensor_slices((self.x, self.y))
            .shuffle(48, seed=0)
            .batch(8)
        )

    def _fit(self, data, epochs=3, loss=None, **kwargs):
        model = tiny_models.compile_model(tiny_models.conv_net())
        if loss is not None:
            model.compile("sgd", loss)
        kwargs.setdefault("policy", keras_learndrop.FixedSchedule({1: 2}))
        callback = keras_learndrop.LearnDrop(**kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(data, epochs=epochs, callbacks=[callback], verbose=0)
        self.warnings = [
            str(w.message) for w in caught if "LearnDrop" in str(w.message)
        ]
        return callback.history

    @parameterized.named_parameters(
        ("tf_image", "map", "`RandomUniform` in the `map` function `_flip`"),
        (
            "keras_layer",
            "layer",
            "`StatelessRandomGetKeyCounter`, `StatelessRandomUniformV2` in "
            "the `map` function `lambda`",
        ),
        (
            "sequential",
            "sequential",
            "in the `map` function `augment`",
        ),
        (
            "stateless_new_seed_each_epoch",
            "stateless",
            "`RngReadAndSkip`, `StatelessRandomGetKeyCounter`, "
            "`StatelessRandomUniformFullIntV2`, `StatelessRandomUniformV2` "
            "in the `map` function `augment`",
        ),
    )
    def test_augmentation_in_a_map_runs_the_stem_forward(self, kind, found):
        flip = keras.layers.RandomFlip("horizontal", seed=1)
        layers = keras.Sequential(
            [flip, keras.layers.RandomTranslation(0.1, 0.1, seed=2)]
        )
        generator = tf.random.Generator.from_seed(1)

        def augment(x, y):
            if kind == "sequential":
                return layers(x, training=True), y
            seed = generator.make_seeds(1)[:, 0]
            return tf.image.stateless_random_flip_left_right(x, seed), y

        maps = {
            "map": _flip,
            "layer": lambda x, y: (flip(x, training=True), y),
            "sequential": augment,
            "stateless": augment,
        }
        history = self._fit(self._dataset().map(maps[kind]))

        self.assertEqual(
            [e.mode for e in history.epochs],
            ["full", "stem_forward", "stem_forward"],
        )
        self.assertStartsWith(
            history.notes[0], "random training inputs in the `tf.data`"
        )
        self.assertIn(found, history.notes[0])
        self.assertIn("augmented_views", history.notes[1])

    def test_mixing_in_a_map_is_random(self):
        history = self._fit(
            self._dataset().map(_mix), loss="categorical_crossentropy"
        )
        self.assertEqual(history.epochs[-1].mode, "stem_forward")
        self.assertIn(
            "`RandomGamma`, `RandomShuffle` in the `map` function `_mix`",
            history.notes[0],
        )

    def test_random_py_dataset_runs_the_stem_forward(self):
        history = self._fit(Flips(self.x, self.y))
        self.assertEqual(history.epochs[-1].mode, "stem_forward")
        self.assertEqual(
            history.notes[0],
            "random training inputs in the `PyDataset` `Flips`: two reads "
            "of batch 0 (`__getitem__(0)`) differ; treated as "
            "`augmented_inputs=True`. Pass `augmented_inputs=False` if they "
            "are the same every epoch",
        )

    @parameterized.named_parameters(
        ("shuffle_and_batch", False),
        ("resize_cast_normalize", True),
    )
    def test_deterministic_pipeline_is_cached(self, prepare):
        dataset = self._dataset()
        history = self._fit(dataset.map(_prepare) if prepare else dataset)
        self.assertEqual(
            [e.mode for e in history.epochs], ["full", "fill", "replay"]
        )
        self.assertEqual(history.notes, [])
        self.assertEqual(self.warnings, [])

    def test_fixed_py_dataset_is_cached(self):
        history = self._fit(Flips(self.x, self.y, random=False))
        self.assertEqual(
            [e.mode for e in history.epochs], ["full", "fill", "replay"]
        )
        self.assertEqual(history.notes, [])

    @parameterized.named_parameters(
        ("map", "map"), ("py_dataset", "py_dataset")
    )
    def test_augmented_inputs_false_overrides_the_detection(self, kind):
        data = (
            self._dataset().map(_flip)
            if kind == "map"
            else Flips(self.x, self.y)
        )
        history = self._fit(data, augmented_inputs=False)
        self.assertEqual(
            [e.mode for e in history.epochs], ["full", "fill", "replay"]
        )
        self.assertEqual(history.notes, [])

    def test_augmented_inputs_true_needs_no_detection(self):
        history = self._fit(self._dataset(), augmented_inputs=True)
        self.assertEqual(history.epochs[-1].mode, "stem_forward")
        self.assertFalse(
            [n for n in history.notes if "random training inputs in" in n]
        )

    def test_default_policy_does_not_freeze_detected_augmentation(self):
        eager = dict(
            threshold=1.0, patience=1, warmup=0, last_unit_threshold=None
        )
        histories = [
            self._fit(
                self._dataset().map(_flip),
                policy=keras_learndrop.LearnDropScores.default(**eager),
                augmented_inputs=augmented_inputs,
            )
            for augmented_inputs in (None, True, False)
        ]
        detected, declared, overridden = histories
        # Detected behaves exactly as declared.
        for history in (detected, declared):
            self.assertEqual({e.mode for e in history.epochs}, {"full"})
            self.assertIn("freeze_augmented=True", history.notes[-1])
        # Without it the stem froze and replayed one augmented view.
        self.assertEqual(overridden.epochs[-1].mode, "replay")

    def test_python_generator_gets_one_note_and_one_warning(self):
        def batches():
            for start in range(0, 48, 8):
                yield self.x[start : start + 8], self.y[start : start + 8]

        # Two units frozen by hand: the stem is cached from the first epoch
        # (a one-shot generator serves one epoch only).
        model = tiny_models.conv_net()
        for name in ("conv1", "bn1", "conv2"):
            model.get_layer(name).trainable = False
        tiny_models.compile_model(model)
        callback = keras_learndrop.LearnDrop()
        with self.assertWarnsRegex(
            UserWarning, "the Python generator cannot be checked"
        ):
            model.fit(batches(), epochs=2, callbacks=[callback], verbose=0)
        history = callback.history
        self.assertEqual([e.mode for e in history.epochs], ["fill", "replay"])
        notes = [n for n in history.notes if "augmentation" in n]
        self.assertEqual(
            notes,
            [
                "the Python generator cannot be checked for random "
                "augmentation, and the stem's cache assumes the same inputs "
                "every epoch. Pass `augmented_inputs=True` if it draws "
                "random augmentations, `augmented_inputs=False` if not"
            ],
        )

    def test_py_function_in_a_map_gets_the_note(self):
        dataset = self._dataset().map(
            lambda x, y: (tf.py_function(tf.identity, [x], "float32"), y)
        )
        history = self._fit(dataset)
        self.assertEqual(
            [e.mode for e in history.epochs], ["full", "fill", "replay"]
        )
        self.assertIn(
            "the `tf.data` pipeline (`EagerPyFunc` in the `map` function "
            "`lambda`) cannot be checked",
            history.notes[0],
        )
        self.assertLen(self.warnings, 1)


class FrozenBaseTest(parameterized.TestCase, tf.test.TestCase):
    """Leading layers the user froze are the stem from the first epoch."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)

    def _model(self, front=()):
        model = tiny_models.conv_net(front=front)
        # keras.io's transfer learning: the base's layers frozen by hand.
        for name in ("conv1", "bn1", "conv2"):
            model.get_layer(name).trainable = False
        return tiny_models.compile_model(model)

    def test_frozen_base_is_filled_then_replayed(self):
        model = self._model()
        base = _weights(graph.UnitChain(model).layers_of(0, 2))
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({})
        )
        _fit(model, callback, self.x, self.y, 3)

        history = callback.history
        self.assertEqual(
            [e.mode for e in history.epochs], ["fill", "replay", "replay"]
        )
        self.assertEqual([e.frozen_units for e in history.epochs], [2, 2, 2])
        self.assertEqual(history.frozen_at, {0: -1, 1: -1})
        self.assertIn(
            "first 2 units have no trainable weights", history.notes[0]
        )
        flops = history.unit_flops
        full, head = 48 * sum(flops), 48 * sum(flops[2:])
        self.assertEqual(
            [e.forward_flops for e in history.epochs], [full, head, head]
        )
        chain = graph.UnitChain(model)
        for before, after in zip(base, _weights(chain.layers_of(0, 2))):
            self.assertAllEqual(before, after)
        # The user's own flags come back: the base stays frozen.
        self.assertFalse(model.get_layer("conv2").trainable)
        self.assertTrue(model.get_layer("conv3").trainable)

    def test_the_policy_extends_the_frozen_base(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({2: 3})
        )
        _fit(model, callback, self.x, self.y, 4)

        history = callback.history
        self.assertEqual(
            [e.mode for e in history.epochs],
            ["fill", "replay", "replay", "replay"],
        )
        self.assertEqual([e.frozen_units for e in history.epochs], [2, 2, 3, 3])
        self.assertEqual(history.frozen_at, {0: -1, 1: -1, 2: 1})
        # The evaluations scored only the units after the base.
        self.assertTrue(np.isnan(history.evaluations[0].change[:2]).all())
        self.assertTrue(np.isfinite(history.evaluations[0].change[2:]).all())

    def test_default_policy_decides_only_after_the_base(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop()
        _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(
            [e.mode for e in callback.history.epochs], ["fill", "replay"]
        )

    def test_augmentation_before_the_base_runs_it_forward(self):
        flip = keras.layers.RandomFlip("horizontal", seed=1)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({})
        )
        with self.assertWarnsRegex(UserWarning, "augmented_views"):
            _fit(self._model(front=[flip]), callback, self.x, self.y, 2)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["stem_forward", "stem_forward"],
        )
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({}), augmented_views=2
        )
        _fit(self._model(front=[flip]), callback, self.x, self.y, 3)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["fill", "fill", "replay"],
        )

    def test_augmented_pipeline_runs_the_base_forward(self):
        dataset = (
            tf.data.Dataset.from_tensor_slices((self.x, self.y))
            .batch(8)
            .map(_flip)
        )
        callback = keras_learndrop.LearnDrop()
        model = self._model()
        with self.assertWarnsRegex(UserWarning, "augmented_views"):
            model.fit(dataset, epochs=2, callbacks=[callback], verbose=0)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["stem_forward", "stem_forward"],
        )

    def test_keep_frozen_starts_the_next_fit_with_the_base(self):
        model = self._model()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({}), keep_frozen=True
        )
        _fit(model, callback, self.x, self.y, 2)
        _fit(model, callback, self.x, self.y, 2)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["fill", "replay", "fill", "replay"],
        )

    def test_cache_off_runs_the_base_forward(self):
        callback = keras_learndrop.LearnDrop(cache="off")
        _fit(self._model(), callback, self.x, self.y, 2)
        self.assertEqual(
            [e.mode for e in callback.history.epochs],
            ["stem_forward", "stem_forward"],
        )


class AddLogs(keras.callbacks.Callback):
    """Writes `keys` (with the value 1) into every epoch's `logs`."""

    def __init__(self, *keys):
        super().__init__()
        self.keys = keys

    def on_epoch_end(self, epoch, logs=None):
        logs.update(dict.fromkeys(self.keys, 1))


class Fail(keras.callbacks.Callback):
    """Raises in `on_epoch_begin` of `epoch`, as a crashing `fit` does."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("stopped by the test")


class ProgressLineTest(tf.test.TestCase):
    """What the progress bar of `fit` shows, and what the loggers get."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.x, self.y = tiny_models.data(48)
        self.model = tiny_models.compile_model(tiny_models.conv_net())

    def _fit(self, callbacks, epochs=2, **kwargs):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            history = self.model.fit(
                self.x,
                self.y,
                epochs=epochs,
                batch_size=8,
                callbacks=callbacks,
                verbose=2,
                **kwargs,
            )
        return out.getvalue(), history

    def test_progress_line_shows_few_keys_and_loggers_get_all(self):
        csv_path = os.path.join(self.get_temp_dir(), "log.csv")
        board_dir = os.path.join(self.get_temp_dir(), "board")
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.LearnDropScores.default()
        )  # Scores: rate, continuation.

        out, history = self._fit(
            [
                callback,
                keras.callbacks.CSVLogger(csv_path),
                keras.callbacks.TensorBoard(board_dir),
            ],
            validation_data=(self.x[:16], self.y[:16]),
        )

        for key in (*report.PROGRESS_KEYS, "loss", "val_loss"):
            self.assertIn(f"{key}: ", out)
        for key in ("ld_change", "ld_rate", "ld_cache", "ld_frozen_layers"):
            self.assertNotIn(key, out)
        per_unit = [
            f"ld_{name}/unit_{i}"
            for name in ("change", "rate", "continuation")
            for i in range(4)
        ]
        with open(csv_path) as file:
            columns = next(csv.reader(file))
        for keys in (
            history.history,
            columns,
            _tensorboard_epoch_tags(os.path.join(board_dir, "train")),
        ):
            self.assertContainsSubset(
                {
                    *per_unit,
                    "ld_cache_bytes",
                    "ld_frozen_layers",
                    *report.PROGRESS_KEYS,
                },
                {key.removeprefix("epoch_") for key in keys},
            )

    def test_user_progbar_logger_is_given_back(self):
        logger = keras.callbacks.ProgbarLogger()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )

        out, history = self._fit([callback, logger])

        self.assertIn("ld_frozen_units: ", out)
        self.assertNotIn("ld_change", out)
        self.assertIn("ld_change/unit_2", history.history)
        self.assertNotIn("on_epoch_end", vars(logger))
        # A later fit without LearnDrop prints every key.
        out, _ = self._fit([AddLogs("ld_cache_bytes"), logger], epochs=1)
        self.assertIn("ld_cache_bytes: ", out)

    def test_a_failed_fit_leaves_no_filter_behind(self):
        logger = keras.callbacks.ProgbarLogger()
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({1: 2})
        )
        with self.assertRaisesRegex(RuntimeError, "stopped by the test"):
            # `on_train_end` is skipped.
            self._fit([callback, Fail(1), logger])

        out, _ = self._fit([AddLogs("ld_cache_bytes"), logger], epochs=1)

        self.assertIn("ld_cache_bytes: ", out)
        self.assertNotIn("on_epoch_end", vars(logger))
        # The same LearnDrop filters again in its next fit.
        out, _ = self._fit([callback, logger], epochs=1)
        self.assertIn("ld_frozen_units: ", out)
        self.assertNotIn("ld_change", out)

    def test_hooks_driven_by_hand_write_every_key(self):
        # No fit to find: nothing is filtered, nothing breaks.
        callback = keras_learndrop.LearnDrop()
        callback.set_model(self.model)
        callback.set_params({"epochs": 2, "steps": 1})
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        logs = {}
        callback.on_epoch_end(0, logs)
        callback.on_train_end()
        self.assertIn("ld_change/unit_0", logs)
        self.assertIn("ld_cache_bytes", logs)


def _tensorboard_epoch_tags(log_dir):
    """Returns the tags of the summaries in the event files of `log_dir`."""
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


if __name__ == "__main__":
    tf.test.main()
