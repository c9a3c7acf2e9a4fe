"""Tests for keras_learndrop.scoring."""

import warnings

import numpy as np
from absl.testing import parameterized

from keras_learndrop import graph
from keras_learndrop import scoring
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

NAN = float("nan")


def _norm(arrays):
    return np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays))


def _tiny_model():
    """Units: dense1 (+ its BatchNorm), dense2; the input has no weights."""
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(2, name="dense2"),
        ]
    )


class ChangeScoresTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("relative_change", [0.5, 3.0, 0.0], [2.0, 4.0, 1.0], [0.25, 0.75, 0]),
        ("larger_than_one", [6.0], [2.0], [3.0]),
        # All-zero weights: the score stays finite thanks to `eps`.
        ("zero_weights_no_change", [0.0], [0.0], [0.0]),
        ("zero_weights_change", [1e-3], [0.0], [1e9]),
        # Units not scored (frozen) stay NaN.
        ("frozen", [NAN, 1.0], [NAN, 4.0], [NAN, 0.25]),
    )
    def test_known_vectors(self, delta, previous, expected):
        scores = scoring.change_scores(delta, previous)

        self.assertEqual(scores.dtype, np.float64)
        self.assertAllClose(scores, expected, rtol=1e-9, atol=0)
        self.assertAllEqual(np.isnan(scores), np.isnan(expected))

    def test_eps_guards_the_division(self):
        scores = scoring.change_scores([1.0, 1.0], [0.0, 1.5], eps=0.5)

        self.assertAllClose(scores, [2.0, 0.5], rtol=1e-12, atol=0)
        self.assertAllClose(
            scoring.change_scores([1.0], [0.0]),
            [1.0 / scoring.EPSILON],
            rtol=1e-12,
            atol=0,
        )

    def test_shape_mismatch(self):
        with self.assertRaisesRegex(
            ValueError,
            r"`delta_norms` and `previous_norms` must have the same shape. "
            r"Received: shapes \(2,\) and \(3,\)",
        ):
            scoring.change_scores([1.0, 2.0], [1.0, 2.0, 3.0])


class ContinuationScoresTest(tf.test.TestCase, parameterized.TestCase):
    def test_ratio_to_peak_over_a_sequence_of_evaluations(self):
        # Unit 0 rises then falls, unit 1 starts without change, unit 2 is
        # frozen throughout, unit 3 is frozen after its second evaluation.
        changes = [
            [0.2, 0.0, NAN, 0.5],
            [0.4, 0.3, NAN, 0.25],
            [0.1, 0.6, NAN, NAN],
            [0.3, 0.15, NAN, NAN],
            [0.0, 0.6, NAN, NAN],
        ]
        expected = [
            [1.0, 0.0, NAN, 1.0],
            [1.0, 1.0, NAN, 0.5],
            [0.25, 1.0, NAN, NAN],
            [0.75, 0.25, NAN, NAN],
            [0.0, 1.0, NAN, NAN],
        ]

        for k in range(1, len(changes) + 1):
            with warnings.catch_warnings():
                # A unit without change or frozen is no reason to warn.
                warnings.simplefilter("error")
                scores = scoring.continuation_scores(changes[:k])
            self.assertEqual(scores.dtype, np.float64)
            self.assertAllClose(
                scores, expected[k - 1], rtol=1e-12, atol=0, msg=f"eval {k}"
            )
            self.assertAllEqual(np.isnan(scores), np.isnan(expected[k - 1]))

    def test_zero_change_is_zero_even_with_zero_peak(self):
        scores = scoring.continuation_scores([[0.0, 0.0], [0.0, 0.5]])

        self.assertAllEqual(scores, [0.0, 1.0])

    @parameterized.named_parameters(
        ("one_dimensional", [0.1, 0.2], r"\(2,\)"),
        ("no_evaluation", np.zeros((0, 3)), r"\(0, 3\)"),
    )
    def test_invalid_history(self, history, shape):
        with self.assertRaisesRegex(
            ValueError, rf"non-empty 2D array.*Received: shape {shape}"
        ):
            scoring.continuation_scores(history)


class WeightTrackerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.model = _tiny_model()
        self.dense1 = self.model.get_layer("dense1")
        self.bn = self.model.get_layer("bn")
        self.dense2 = self.model.get_layer("dense2")
        # Unit 0: dense1 and the BatchNorm's gamma and beta; unit 1: none;
        # unit 2: dense2.
        self.units = [
            self.dense1.trainable_weights + self.bn.trainable_weights,
            [],
            self.dense2.trainable_weights,
        ]

    def _values(self, unit):
        return [w.numpy().copy() for w in self.units[unit]]

    def test_measure_matches_numpy_norms(self):
        tracker = scoring.WeightTracker(self.units)
        before = [self._values(0), self._values(2)]
        rng = np.random.default_rng(1)
        for weights in (self.units[0], self.units[2]):
            for w in weights:
                w.assign(rng.normal(size=w.shape).astype("float32"))
        after = [self._values(0), self._values(2)]

        delta, previous = tracker.measure()

        self.assertEqual(delta.dtype, np.float64)
        self.assertAllClose(
            delta,
            [
                _norm(a - b for a, b in zip(after[0], before[0])),
                0.0,
                _norm(a - b for a, b in zip(after[1], before[1])),
            ],
            rtol=1e-6,
            atol=0,
        )
        self.assertAllClose(
            previous,
            [_norm(before[0]), 0.0, _norm(before[1])],
            rtol=1e-6,
            atol=0,
        )

    def test_known_values(self):
        kernel, bias = self.dense2.kernel, self.dense2.bias
        kernel.assign(np.full((4, 2), 0.5, "float32"))
        bias.assign(np.zeros(2, "float32"))
        tracker = scoring.WeightTracker(self.units)
        kernel.assign(np.full((4, 2), 2.0, "float32"))
        bias.assign(np.array([3.0, 4.0], "float32"))

        delta, previous = tracker.measure()

        # ||[1.5] * 8 ++ [3, 4]|| = sqrt(18 + 25); ||[0.5] * 8|| = sqrt(2).
        self.assertAllClose(delta[2], np.sqrt(43.0), rtol=1e-12, atol=0)
        self.assertAllClose(previous[2], np.sqrt(2.0), rtol=1e-12, atol=0)
        self.assertAllClose(
            scoring.change_scores(delta, previous)[2],
            np.sqrt(43.0 / 2.0),
            rtol=1e-9,
            atol=0,
        )

    def test_measure_sees_in_place_optimizer_updates(self):
        tracker = scoring.WeightTracker(self.units)
        before = self._values(2)
        variables = self.model.trainable_weights
        optimizer = keras.optimizers.SGD(0.1)
        x = np.random.rand(8, 3).astype("float32")
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.model(x, training=True)))
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables)
        )
        after = self._values(2)

        delta, _ = tracker.measure()

        self.assertGreater(delta[2], 0.0)
        self.assertAllClose(
            delta[2],
            _norm(a - b for a, b in zip(after, before)),
            rtol=1e-6,
            atol=0,
        )

    def test_second_measure_without_change_is_zero(self):
        tracker = scoring.WeightTracker(self.units)
        self.dense1.kernel.assign_add(tf.ones_like(self.dense1.kernel))
        first_delta, _ = tracker.measure()

        delta, previous = tracker.measure()

        self.assertGreater(first_delta[0], 0.0)
        self.assertAllEqual(delta, [0.0, 0.0, 0.0])
        # The reference is now the changed weights.
        self.assertAllClose(
            previous,
            [_norm(self._values(0)), 0.0, _norm(self._values(2))],
            rtol=1e-6,
            atol=0,
        )

    def test_snapshot_resets_the_reference(self):
        tracker = scoring.WeightTracker(self.units)
        self.dense2.kernel.assign_add(tf.ones_like(self.dense2.kernel))

        tracker.snapshot()
        delta, _ = tracker.measure()

        self.assertAllEqual(delta, [0.0, 0.0, 0.0])

    def test_first_unit_skips_frozen_units(self):
        tracker = scoring.WeightTracker(self.units)
        before = self._values(2)
        self.dense1.kernel.assign_add(tf.ones_like(self.dense1.kernel))
        self.dense2.kernel.assign_add(tf.ones_like(self.dense2.kernel))

        delta, previous = tracker.measure(first_unit=1)

        self.assertTrue(np.isnan(delta[0]))
        self.assertTrue(np.isnan(previous[0]))
        self.assertAllClose(
            delta[1:], [0.0, np.sqrt(self.dense2.kernel.numpy().size)]
        )
        self.assertAllClose(previous[1:], [0.0, _norm(before)], rtol=1e-6)

    def test_unit_without_weights_gets_zero(self):
        tracker = scoring.WeightTracker([[], []])

        delta, previous = tracker.measure()

        self.assertAllEqual(delta, [0.0, 0.0])
        self.assertAllEqual(previous, [0.0, 0.0])

    def test_moving_statistics_of_unit_weights_are_ignored(self):
        chain = graph.UnitChain(self.model)
        tracker = scoring.WeightTracker(
            [unit.trainable_weights for unit in chain.units]
        )
        self.bn.moving_mean.assign(tf.ones_like(self.bn.moving_mean) * 5.0)
        self.bn.moving_variance.assign(tf.ones_like(self.bn.moving_mean) * 3)

        delta, _ = tracker.measure()

        self.assertLen(chain, 2)
        self.assertAllEqual(delta, [0.0, 0.0])


if __name__ == "__main__":
    tf.test.main()
