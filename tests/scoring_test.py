"""Tests for keras_learndrop.scoring."""

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


class PerLearningRateTest(tf.test.TestCase, parameterized.TestCase):
    def test_divides_by_the_learning_rate(self):
        self.assertAllClose(
            scoring.per_learning_rate([0.02, 0.0, NAN], 0.1), [0.2, 0.0, NAN]
        )

    @parameterized.named_parameters(
        ("none", None), ("zero", 0.0), ("negative", -1.0)
    )
    def test_without_a_usable_rate_the_change_is_kept(self, rate):
        self.assertAllEqual(scoring.per_learning_rate([0.5], rate), [0.5])

    def test_a_schedule_alone_leaves_the_rate_unchanged(self):
        # Plain SGD on a constant gradient: the change follows the learning
        # rate, the change per unit of learning rate does not.
        rates = [0.1, 0.05, 0.01]
        changes = [0.3 * r for r in rates]

        per_rate = [
            scoring.per_learning_rate([c], r)[0] for c, r in zip(changes, rates)
        ]

        self.assertAllClose(per_rate, [0.3, 0.3, 0.3])


class ConsistencyTest(tf.test.TestCase):
    def test_known_values(self):
        self.assertAllClose(
            scoring.consistency([0.5, 0.0, 0.2, NAN], [0.5, 0.0, 1.0, 1.0]),
            [1.0, 0.0, 0.2, NAN],
        )

    def test_never_above_one(self):
        # Rounding may put the net change a hair above the path.
        self.assertEqual(scoring.consistency([1.0 + 1e-12], [1.0])[0], 1.0)


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

        delta, previous, _ = tracker.measure()

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

        delta, previous, _ = tracker.measure()

        # ||[1.5] * 8 ++ [3, 4]|| = sqrt(18 + 25); ||[0.5] * 8|| = sqrt(2).
        self.assertAllClose(delta[2], np.sqrt(43.0), rtol=1e-12, atol=0)
        self.assertAllClose(previous[2], np.sqrt(2.0), rtol=1e-12, atol=0)
        self.assertAllClose(
            scoring.change_scores(delta, previous)[2],
            np.sqrt(43.0 / 2.0),
            rtol=1e-9,
            atol=0,
        )

    def test_path_adds_the_changes_between_samples(self):
        kernel, bias = self.dense2.kernel, self.dense2.bias
        kernel.assign(np.zeros((4, 2), "float32"))
        bias.assign(np.zeros(2, "float32"))
        tracker = scoring.WeightTracker(self.units)
        # Out and back: +3 then -1 on bias[0]; then +2 on bias[1].
        bias.assign([3.0, 0.0])
        tracker.sample()
        bias.assign([2.0, 0.0])
        tracker.sample()
        bias.assign([2.0, 2.0])

        delta, _, path = tracker.measure()

        self.assertAllClose(delta[2], np.sqrt(8.0), rtol=1e-12, atol=0)
        self.assertAllClose(path[2], 3.0 + 1.0 + 2.0, rtol=1e-12, atol=0)
        self.assertEqual(path[1], 0.0)  # No weights.

    def test_path_equals_delta_without_samples(self):
        tracker = scoring.WeightTracker(self.units)
        self.dense1.kernel.assign_add(tf.ones_like(self.dense1.kernel))

        delta, _, path = tracker.measure()

        self.assertAllEqual(delta, path)

    def test_measure_starts_a_new_path(self):
        tracker = scoring.WeightTracker(self.units)
        self.dense2.bias.assign_add([1.0, 0.0])
        tracker.sample()
        tracker.measure()
        self.dense2.bias.assign_add([0.0, 1.0])

        _, _, path = tracker.measure()

        self.assertAllClose(path[2], 1.0, rtol=1e-12, atol=0)

    def test_frozen_units_get_nan(self):
        tracker = scoring.WeightTracker(self.units)
        self.dense1.kernel.assign_add(tf.ones_like(self.dense1.kernel))
        tracker.sample()

        delta, previous, path = tracker.measure(first_unit=1)

        self.assertTrue(np.isnan(delta[0]) and np.isnan(path[0]))
        self.assertTrue(np.isnan(previous[0]))
        self.assertEqual(delta[1], 0.0)  # No weights.

    def test_a_growing_stem_does_not_trace_again(self):
        tracker = scoring.WeightTracker(self.units)
        tracker.sample()
        tracker.measure(first_unit=0)
        traces = (
            scoring._sample_step.experimental_get_tracing_count(),
            scoring._measure_step.experimental_get_tracing_count(),
        )
        self.dense2.bias.assign_add([1.0, 0.0])

        tracker.sample()
        delta, _, _ = tracker.measure(first_unit=2)

        self.assertAllClose(delta[2], 1.0, rtol=1e-12, atol=0)
        self.assertEqual(
            (
                scoring._sample_step.experimental_get_tracing_count(),
                scoring._measure_step.experimental_get_tracing_count(),
            ),
            traces,
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

        delta, _, _ = tracker.measure()

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
        first_delta, _, _ = tracker.measure()

        delta, previous, _ = tracker.measure()

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
        delta, _, _ = tracker.measure()

        self.assertAllEqual(delta, [0.0, 0.0, 0.0])

    def test_first_unit_skips_frozen_units(self):
        tracker = scoring.WeightTracker(self.units)
        before = self._values(2)
        self.dense1.kernel.assign_add(tf.ones_like(self.dense1.kernel))
        self.dense2.kernel.assign_add(tf.ones_like(self.dense2.kernel))

        delta, previous, _ = tracker.measure(first_unit=1)

        self.assertTrue(np.isnan(delta[0]))
        self.assertTrue(np.isnan(previous[0]))
        self.assertAllClose(
            delta[1:], [0.0, np.sqrt(self.dense2.kernel.numpy().size)]
        )
        self.assertAllClose(previous[1:], [0.0, _norm(before)], rtol=1e-6)

    def test_unit_without_weights_gets_zero(self):
        tracker = scoring.WeightTracker([[], []])

        delta, previous, _ = tracker.measure()

        self.assertAllEqual(delta, [0.0, 0.0])
        self.assertAllEqual(previous, [0.0, 0.0])

    def test_moving_statistics_of_unit_weights_are_ignored(self):
        chain = graph.UnitChain(self.model)
        tracker = scoring.WeightTracker(
            [unit.trainable_weights for unit in chain.units]
        )
        self.bn.moving_mean.assign(tf.ones_like(self.bn.moving_mean) * 5.0)
        self.bn.moving_variance.assign(tf.ones_like(self.bn.moving_mean) * 3)

        delta, _, _ = tracker.measure()

        self.assertLen(chain, 2)
        self.assertAllEqual(delta, [0.0, 0.0])


if __name__ == "__main__":
    tf.test.main()


class LearningRatesTest(tf.test.TestCase):
    def test_constant_rate_counts_as_constant(self):
        rates = scoring.LearningRates(keras.optimizers.SGD(0.05))

        self.assertAllClose(rates.remaining(1, 5, 10), 0.15)
        self.assertIsNone(rates.remaining(1, None, 10))

    def test_schedule_is_read_at_each_remaining_epochs_middle(self):
        schedule = keras.optimizers.schedules.CosineDecay(0.1, 100)
        optimizer = keras.optimizers.SGD(schedule)
        optimizer.iterations.assign(20)
        rates = scoring.LearningRates(optimizer)

        remaining = rates.remaining(epoch=1, epochs=5, steps=20)

        # Epochs 3, 4 and 5: steps 20-39, 40-59, 60-79.
        expected = sum(float(schedule(s)) for s in (30, 50, 70))
        self.assertAllClose(remaining, expected, rtol=1e-5)

    def test_interval_mean_of_the_samples(self):
        optimizer = keras.optimizers.SGD(
            keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.2])
        )
        rates = scoring.LearningRates(optimizer)
        rates.start_interval()  # 0.1
        optimizer.iterations.assign(2)  # Past the boundary at step 1.
        rates.sample()  # 0.2

        self.assertAllClose(rates.end_interval(), (0.1 + 0.2 + 0.2) / 3)

    def test_mixed_precision_reads_the_inner_optimizer(self):
        schedule = keras.optimizers.schedules.CosineDecay(0.1, 100)
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(schedule)
        )

        self.assertAllClose(
            scoring.LearningRates(optimizer).remaining(-1, 1, 10),
            float(schedule(5)),
            rtol=1e-5,
        )
