"""Tests of the drift of units' features on the probe set (`drift`)."""

import contextlib
import warnings
from unittest import mock

import numpy as np
from absl.testing import parameterized
from tensorflow.python.eager.polymorphic_function import (
    polymorphic_function as tf_function_internals,
)

import keras_learndrop
from keras_learndrop import drift
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


class CkaTest(parameterized.TestCase, tf.test.TestCase):
    def test_a_representation_has_cka_one_with_itself(self):
        x = _random((32, 50))
        self.assertAllClose(drift.cka(drift.gram(x), drift.gram(x)), 1.0)

    def test_cka_is_invariant_to_rotation_and_isotropic_scaling(self):
        x = _random((32, 20))
        rotation, _ = np.linalg.qr(_random((20, 20), seed=1))
        moved = 7.5 * x @ rotation
        self.assertAllClose(drift.cka(drift.gram(x), drift.gram(moved)), 1.0)

    def test_cka_is_not_invariant_to_per_channel_scaling(self):
        x = _random((32, 4))
        scaled = x * np.array([10.0, 1.0, 1.0, 0.1])
        self.assertLess(drift.cka(drift.gram(x), drift.gram(scaled)), 0.9)

    def test_independent_features_have_cka_near_zero(self):
        # Far more features than inputs: the unbiased estimator stays near
        # zero where the biased one would be inflated.
        x, y = _random((64, 2000), 0), _random((64, 2000), 1)
        self.assertLess(abs(drift.cka(drift.gram(x), drift.gram(y))), 0.05)

    def test_drift_grows_with_the_change(self):
        x, noise = _random((64, 30), 0), _random((64, 30), 1)
        values = [
            1 - drift.cka(drift.gram(x), drift.gram(x + s * noise))
            for s in (0.01, 0.1, 1.0)
        ]
        self.assertAllGreater(np.diff(values), 0)
        self.assertLess(values[0], 1e-3)

    def test_unbiased_hsic_follows_song_et_al(self):
        # Equation (5) of Song et al. (2012), term by term with matrix
        # products, against the prepared terms the tracker uses.
        n = 12
        k = drift.gram(_random((n, 7), 0))
        m = drift.gram(_random((n, 9), 1))
        kt, lt = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
        ones = np.ones(n)
        expected = (
            np.trace(kt @ lt)
            + (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (ones @ kt @ lt @ ones)
        ) / (n * (n - 3))

        self.assertAllClose(drift.unbiased_hsic(k, m), expected)
        terms = drift.HsicTerms(k), drift.HsicTerms(m)
        self.assertAllClose(terms[0].hsic(terms[1]), expected)
        self.assertAllClose(terms[0].self_hsic, drift.unbiased_hsic(k, k))
        self.assertAllClose(
            terms[0].cka(terms[1]),
            expected / np.sqrt(terms[0].self_hsic * terms[1].self_hsic),
        )
        # The caller's matrices are left as they were.
        self.assertAllClose(np.diag(k), np.diag(drift.gram(_random((n, 7)))))

    def test_constant_features_have_no_cka(self):
        x = _random((8, 3))
        self.assertTrue(np.isnan(drift.cka(drift.gram(x), np.zeros((8, 8)))))

    def test_bad_gram_matrices_are_refused(self):
        with self.assertRaisesRegex(ValueError, "at least 4 inputs"):
            drift.unbiased_hsic(np.eye(3), np.eye(3))
        with self.assertRaisesRegex(ValueError, r"shapes \(4, 4\) and"):
            drift.unbiased_hsic(np.eye(4), np.eye(5))

    def test_relative_drift_is_against_the_last_unit(self):
        self.assertAllClose(
            drift.relative_drift([np.nan, 0.02, 0.08]), [np.nan, 0.25, 1.0]
        )
        self.assertTrue(np.isnan(drift.relative_drift([0.1, 0.0])).all())


class PooledFeaturesTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.named_parameters(
        ("grid_4", 4, (5, 4 * 4 * 3)),
        ("global", 1, (5, 3)),
        ("flat", None, (5, 16 * 16 * 3)),
        ("map_smaller_than_grid", 32, (5, 16 * 16 * 3)),
    )
    def test_feature_maps_are_pooled_to_the_grid(self, grid, shape):
        x = tf.random.normal((5, 16, 16, 3))
        self.assertEqual(drift.pooled_features(x, grid).shape, shape)

    def test_vectors_are_kept(self):
        x = tf.random.normal((5, 7))
        self.assertAllEqual(drift.pooled_features(x), x)

    def test_global_pooling_averages(self):
        x = tf.random.normal((2, 6, 6, 3))
        self.assertAllClose(
            drift.pooled_features(x, 1), tf.reduce_mean(x, axis=(1, 2))
        )


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, batch_size):
        super().__init__()
        self.x, self.batch_size = x, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        start = index * self.batch_size
        batch = self.x[start : start + self.batch_size]
        return batch, np.zeros(len(batch))


class DrawProbeTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.x = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)

    def test_arrays_give_a_seeded_subset_in_order(self):
        probe = drift.draw_probe(self.x, 10, seed=3)
        self.assertEqual(probe.shape, (10, 2))
        self.assertAllEqual(probe, drift.draw_probe(self.x, 10, seed=3))
        self.assertNotAllEqual(probe, drift.draw_probe(self.x, 10, seed=4))
        self.assertAllGreater(np.diff(probe[:, 0]), 0)

    def test_fewer_inputs_than_asked_are_all_taken(self):
        self.assertAllEqual(
            drift.draw_probe(self.x[:6], 10, seed=0), self.x[:6]
        )

    @parameterized.named_parameters(
        ("batched", True), ("single_elements", False)
    )
    def test_a_dataset_gives_its_first_inputs(self, batched):
        dataset = tf.data.Dataset.from_tensor_slices((self.x, self.x[:, 0]))
        if batched:
            dataset = dataset.batch(4)
        probe = drift.draw_probe(dataset, 10, seed=0, input_rank=2)
        self.assertAllEqual(probe, self.x[:10])

    def test_a_dataset_of_unknown_shapes_reads_by_the_model_rank(self):
        dataset = tf.data.Dataset.from_tensor_slices(self.x).batch(4)
        dataset = dataset.map(
            lambda x: tf.py_function(tf.identity, [x], "float32")
        )
        probe = drift.draw_probe(dataset, 10, seed=0, input_rank=2)
        self.assertAllEqual(probe, self.x[:10])
        self.assertIsNone(drift.draw_probe(dataset, 10, seed=0, input_rank=4))

    def test_a_py_dataset_gives_its_first_batches(self):
        probe = drift.draw_probe(_Batches(self.x, 4), 10, seed=0, input_rank=2)
        self.assertAllEqual(probe, self.x[:10])

    def test_a_tuple_gives_its_inputs(self):
        probe = drift.draw_probe((self.x, np.zeros(40)), 40, seed=0)
        self.assertAllEqual(probe, self.x)

    @parameterized.named_parameters(
        ("generator", (x for x in [np.zeros((4, 2))])),
        ("dict", {"image": np.zeros((8, 2))}),
        ("too_few", np.zeros((3, 2))),
        ("none", None),
    )
    def test_what_cannot_be_read_twice_gives_none(self, data):
        self.assertIsNone(drift.draw_probe(data, 10, seed=0))


def _bn_unit_model():
    """Conv -> BatchNorm -> ReLU, then a dense unit; 2 units."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(epsilon=1e-12),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


class DriftTrackerTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.probe = np.random.default_rng(0).random((20, 6, 6, 2))

    def test_first_call_has_nothing_to_compare(self):
        tracker = drift.DriftTracker(
            graph.UnitChain(_bn_unit_model()), self.probe
        )
        self.assertTrue(np.isnan(tracker.measure()).all())
        self.assertAllClose(tracker.measure(), [0.0, 0.0], atol=1e-9)

    def test_a_kernel_rescaled_before_batch_norm_does_not_drift(self):
        # Training with weight decay shrinks a kernel before BatchNorm
        # without changing what the unit computes; its moving statistics
        # follow. Such a unit shows no drift, whatever its weights did.
        model = _bn_unit_model()
        conv, norm = model.layers[0], model.layers[1]
        model.predict(self.probe, verbose=0)
        norm.moving_mean.assign(tf.random.normal((4,)))
        norm.moving_variance.assign(tf.random.uniform((4,), 0.5, 2.0))
        tracker = drift.DriftTracker(graph.UnitChain(model), self.probe)
        tracker.measure()
        scale = 0.3
        conv.kernel.assign(conv.kernel * scale)
        norm.moving_mean.assign(norm.moving_mean * scale)
        norm.moving_variance.assign(norm.moving_variance * scale**2)
        self.assertAllClose(tracker.measure(), [0.0, 0.0], atol=1e-6)
        # The same rescaling of the kernel alone would move its features.
        conv.kernel.assign(conv.kernel * 3.0)
        self.assertGreater(tracker.measure()[0], 1e-3)

    def test_the_probe_never_passes_through_augmentation(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.RandomFlip("horizontal_and_vertical"),
                keras.layers.RandomTranslation(0.3, 0.3),
                keras.layers.Conv2D(4, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
        chain = graph.UnitChain(model)
        tracker = drift.DriftTracker(chain, self.probe, grid=None)
        first = tracker.current_grams()
        plain = keras.Sequential(model.layers[2:])
        features = plain.layers[0](self.probe.astype("float32"))
        self.assertAllClose(first[0], drift.gram(features), rtol=1e-5)
        # Unchanged weights: no drift though the augmentation draws anew.
        tracker.measure()
        self.assertAllClose(tracker.measure(), [0.0, 0.0], atol=1e-9)

    def test_tracing_each_unit_once_does_not_warn_of_retracing(self):
        # Each unit's function is traced once, the first time in a row:
        # TensorFlow warns of "retracing" when the functions of five calls
        # in a row trace and share one Python code object (one closure).
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((3,))] + [keras.layers.Dense(3) for _ in range(8)]
        )
        tracker = drift.DriftTracker(
            graph.UnitChain(model), np.ones((8, 3)), grid=None
        )
        # A fresh detector: TensorFlow warns at most five times a process.
        fresh = tf_function_internals._FrequentTracingDetectorManager()
        with self.assertNoLogs(tf.get_logger(), "WARNING"):
            with mock.patch.object(
                tf_function_internals,
                "_frequent_tracing_detector_manager",
                fresh,
            ):
                tracker.measure()
        self.assertLen(tracker._unit_functions, 8)

    def test_drift_from_a_cut_equals_drift_from_the_inputs(self):
        model = tiny_models.conv_net()
        chain = graph.UnitChain(model)
        probe = np.random.default_rng(1).random((70, 8, 8, 1))
        whole = drift.DriftTracker(chain, probe)
        cut = drift.DriftTracker(chain, probe)
        cut.set_cut(2)
        whole.measure(), cut.measure()
        dense = model.layers[-1]
        dense.kernel.assign(dense.kernel * 1.5 + 0.1)
        model.get_layer("conv3").kernel.assign(
            model.get_layer("conv3").kernel * -1.0 + 0.05
        )
        got, want = cut.measure(), whole.measure()
        self.assertTrue(np.isnan(got[:2]).all())
        self.assertAllClose(got[2:], want[2:], rtol=1e-4)
        self.assertAllGreater(got[2:], 1e-4)
        self.assertAllClose(want[:2], [0.0, 0.0], atol=1e-9)

    def test_state_round_trips_and_is_checked(self):
        chain = graph.UnitChain(_bn_unit_model())
        tracker = drift.DriftTracker(chain, self.probe)
        tracker.measure()
        other = drift.DriftTracker(chain, self.probe)
        other.set_state(tracker.get_state())
        for got, want in zip(other.grams, tracker.grams):
            self.assertAllEqual(got, want)
        with self.assertRaisesRegex(ValueError, "do not fit 2 units"):
            other.set_state([np.eye(20)])
        with self.assertRaisesRegex(ValueError, "at least 4 inputs"):
            drift.DriftTracker(chain, self.probe[:3])

    def test_keeping_the_first_inputs_measures_as_that_probe_would(self):
        # A probe cut to its first inputs after one evaluation measures
        # what a probe of those inputs would have from the start.
        model = tiny_models.conv_net()
        chain = graph.UnitChain(model)
        probe = np.random.default_rng(2).random((150, 8, 8, 1))
        shrunk = drift.DriftTracker(chain, probe)
        small = drift.DriftTracker(chain, probe[:70])
        shrunk.set_cut(1), small.set_cut(1)
        shrunk.measure(), small.measure()
        shrunk.keep_first(70)
        self.assertLen(shrunk.probe, 70)
        for got, want in zip(shrunk.grams[1:], small.grams[1:]):
            self.assertAllClose(got, want, rtol=1e-5)
        dense = model.layers[-1]
        dense.kernel.assign(dense.kernel * -1.0 + 0.1)
        got, want = shrunk.measure(), small.measure()
        self.assertGreater(got[-1], 1e-4)
        self.assertAllClose(got, want, rtol=1e-3, atol=1e-9)
        self.assertEqual(shrunk.get_state()[1].shape, (70, 70))
        shrunk.keep_first(100)  # Never grows.
        self.assertLen(shrunk.probe, 70)
        with self.assertRaisesRegex(ValueError, "at least 4 inputs"):
            shrunk.keep_first(3)

    @parameterized.parameters(
        (0, 64),
        (2047, 64),
        (4000, 125),
        (8191, 255),
        (8192, 256),
        (10**6, 256),
    )
    def test_auto_probe_size_follows_the_training_set(self, samples, size):
        self.assertEqual(drift.auto_probe_size(samples), size)


class LearnDropDriftTest(parameterized.TestCase, tf.test.TestCase):
    def _fit(self, callback, validation=False, **kwargs):
        model = tiny_models.compile_model(tiny_models.conv_net())
        x, y = tiny_models.data(48)
        return model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            callbacks=[callback],
            verbose=0,
            validation_data=tiny_models.data(24, seed=1)
            if validation
            else None,
            **kwargs,
        )

    def test_drift_reaches_logs_history_and_observation(self):
        seen = []

        class Spy(keras_learndrop.FixedSchedule):
            def propose(self, observation):
                seen.append(observation.drift)
                return super().propose(observation)

        callback = keras_learndrop.LearnDrop(policy=Spy({2: 1}))
        history = self._fit(callback)
        evaluations = callback.history.evaluations
        self.assertLen(seen, 3)
        for observed, evaluation in zip(seen, evaluations):
            self.assertAllEqual(observed, evaluation.drift)
        # Every unit at first; the frozen unit no longer after epoch 2.
        self.assertTrue(np.isfinite(evaluations[0].drift).all())
        self.assertTrue(np.isnan(evaluations[2].drift[0]))
        self.assertEqual(
            sorted(k for k in history.history if k.startswith("ld_drift")),
            [f"ld_drift/unit_{i}" for i in range(4)],
        )
        self.assertLen(history.history["ld_drift/unit_0"], 2)
        self.assertAllClose(
            history.history["ld_drift/unit_3"],
            [e.drift[3] for e in evaluations],
        )
        self.assertTrue(
            all(e.drift_seconds > 0 for e in callback.history.epochs)
        )
        restored = keras_learndrop.LearnDropHistory.from_dict(
            callback.history.to_dict()
        )
        self.assertAllEqual(restored.evaluations[2].drift, evaluations[2].drift)

    def test_the_probe_comes_from_the_validation_data(self):
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({}), probe_size=16
        )
        drawn = []
        original = drift.DriftTracker.__init__

        def spy(tracker, chain, probe, **kwargs):
            drawn.append(probe)
            original(tracker, chain, probe, **kwargs)

        with tf.compat.v1.test.mock.patch.object(
            drift.DriftTracker, "__init__", spy
        ):
            self._fit(callback, validation=True)
        x_val, _ = tiny_models.data(24, seed=1)
        self.assertLen(drawn, 1)
        self.assertEqual(drawn[0].shape, (16, 8, 8, 1))
        for row in drawn[0]:
            self.assertTrue(any(np.array_equal(row, v) for v in x_val))

    def test_probe_size_zero_measures_nothing(self):
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({}), probe_size=0
        )
        history = self._fit(callback)
        self.assertTrue(np.isnan(callback.history.evaluations[1].drift).all())
        self.assertFalse(any("drift" in k for k in history.history))

    def test_a_generator_gets_a_note_and_no_drift(self):
        x, y = tiny_models.data(48)

        def batches():
            while True:
                for i in range(0, 48, 8):
                    yield x[i : i + 8], y[i : i + 8]

        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({})
        )
        model = tiny_models.compile_model(tiny_models.conv_net())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(
                batches(),
                steps_per_epoch=6,
                epochs=2,
                callbacks=[callback],
                verbose=0,
            )
        self.assertTrue(
            any("no probe inputs" in n for n in callback.history.notes)
        )
        self.assertTrue(
            any("no probe inputs" in str(w.message) for w in caught)
        )

    def test_auto_keeps_a_probe_that_follows_the_training_set(self):
        # 2,200 training samples: 256 inputs are drawn, 68 (2,200 / 32)
        # kept after the first epoch, measured as a probe of those 68.
        model = tiny_models.compile_model(tiny_models.conv_net())
        x, y = tiny_models.data(2200)
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({})
        )
        with _probe_sizes() as sizes:
            model.fit(
                x,
                y,
                epochs=2,
                batch_size=200,
                callbacks=[callback],
                verbose=0,
            )
        self.assertEqual(sizes, [256, 68, 68])
        self.assertEqual(
            [e.probe_size for e in callback.history.epochs], [68, 68]
        )
        self.assertEqual(
            keras_learndrop.LearnDropHistory.from_dict(
                callback.history.to_dict()
            )
            .epochs[1]
            .probe_size,
            68,
        )
        self.assertTrue(
            np.isfinite(callback.history.evaluations[0].drift).all()
        )

    def test_a_probe_size_given_is_kept(self):
        callback = keras_learndrop.LearnDrop(
            policy=keras_learndrop.FixedSchedule({}), probe_size=40
        )
        with _probe_sizes() as sizes:
            self._fit(callback)
        self.assertEqual(sizes, [40] * 4)
        self.assertEqual(
            [e.probe_size for e in callback.history.epochs], [40] * 3
        )

    @parameterized.named_parameters(
        ("word", "all", ValueError, "'auto', 0 .* integer >= 4"),
        ("one", 1, ValueError, "0 .* or at least 4"),
        ("negative", -1, ValueError, ">= 0"),
        ("float", 8.0, TypeError, "integer"),
    )
    def test_bad_probe_sizes_are_refused(self, value, error, message):
        with self.assertRaisesRegex(error, message):
            keras_learndrop.LearnDrop(probe_size=value)


@contextlib.contextmanager
def _probe_sizes():
    """Yields the list of the probe's size at each `DriftTracker.measure`."""
    sizes = []
    original = drift.DriftTracker.measure

    def spy(tracker):
        sizes.append(len(tracker.probe))
        return original(tracker)

    with mock.patch.object(drift.DriftTracker, "measure", spy):
        yield sizes


if __name__ == "__main__":
    tf.test.main()
