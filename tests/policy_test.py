"""Tests for keras_learndrop.policy."""

import numpy as np
from absl.testing import parameterized

from keras_learndrop import policy
from keras_learndrop.backend import tf

NAN = float("nan")
SETTLED = 0.1  # At or below the threshold of 0.5 used below.
LEARNING = 0.9


def _policy(num_units=4, patience=1, warmup=0, max_drop_fraction=0.75):
    return policy.FreezePolicy(
        num_units,
        threshold=0.5,
        patience=patience,
        warmup=warmup,
        max_drop_fraction=max_drop_fraction,
    )


def _run(freeze_policy, evaluations):
    return [freeze_policy.update(scores) for scores in evaluations]


class FreezePolicyTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        np.random.seed(0)

    def test_docstring_example(self):
        freeze_policy = policy.FreezePolicy(
            3, threshold=0.5, patience=1, warmup=0, max_drop_fraction=0.7
        )

        self.assertEqual(freeze_policy.update([0.2, 0.9, 0.1]), 1)

    @parameterized.named_parameters(
        ("at_threshold", 0.5, 1),
        ("below_threshold", 0.49, 1),
        ("above_threshold", 0.51, 0),
        ("zero", 0.0, 1),
    )
    def test_settled_means_at_or_below_threshold(self, score, expected):
        freeze_policy = _policy()

        self.assertEqual(
            freeze_policy.update([score, LEARNING, LEARNING, LEARNING]),
            expected,
        )

    @parameterized.named_parameters(("one", 1), ("three", 3))
    def test_warmup_evaluations_never_count(self, warmup):
        freeze_policy = _policy(patience=2, warmup=warmup)
        settled = [SETTLED] * 4

        sizes = _run(freeze_policy, [settled] * (warmup + 2))

        # Settled during warmup, yet `patience` more evaluations are needed.
        self.assertEqual(sizes, [0] * (warmup + 1) + [3])

    def test_patience_needs_consecutive_settled_evaluations(self):
        freeze_policy = _policy(patience=3)
        settled = [SETTLED, LEARNING, LEARNING, LEARNING]
        learning = [LEARNING] * 4

        sizes = _run(
            freeze_policy,
            [settled, settled, learning, settled, settled, settled],
        )

        # The learning evaluation resets the streak of 2.
        self.assertEqual(sizes, [0, 0, 0, 0, 0, 1])

    def test_stem_is_the_longest_settled_prefix(self):
        freeze_policy = _policy(num_units=5, max_drop_fraction=0.8)

        # Unit 1 still learns: units 2 and 3 must wait behind it.
        self.assertEqual(
            freeze_policy.update([SETTLED, LEARNING, SETTLED, SETTLED, 0]), 1
        )
        # Unit 1 settles; units 2 and 3 have been settled all along.
        self.assertEqual(
            freeze_policy.update([NAN, SETTLED, SETTLED, SETTLED, LEARNING]),
            4,
        )

    def test_units_behind_a_learning_unit_keep_their_streak(self):
        freeze_policy = _policy(num_units=4, patience=2)

        sizes = _run(
            freeze_policy,
            [
                [LEARNING, SETTLED, SETTLED, LEARNING],
                [LEARNING, SETTLED, SETTLED, LEARNING],
                [SETTLED, SETTLED, SETTLED, LEARNING],
                [SETTLED, SETTLED, SETTLED, LEARNING],
            ],
        )

        self.assertEqual(sizes, [0, 0, 0, 3])

    def test_stem_never_shrinks(self):
        freeze_policy = _policy()
        freeze_policy.update([SETTLED, SETTLED, LEARNING, LEARNING])

        sizes = _run(freeze_policy, [[LEARNING] * 4] * 3)

        self.assertEqual(sizes, [2, 2, 2])
        self.assertEqual(freeze_policy.stem_size, 2)

    def test_frozen_units_count_as_settled(self):
        freeze_policy = _policy(patience=2)

        sizes = _run(
            freeze_policy,
            [
                [NAN, NAN, SETTLED, LEARNING],
                [NAN, NAN, SETTLED, LEARNING],
            ],
        )

        self.assertEqual(sizes, [0, 3])

    def test_reset_keeps_the_stem_and_forgets_the_streaks(self):
        freeze_policy = _policy(patience=2, warmup=1)
        _run(freeze_policy, [[SETTLED] * 4] * 3)
        self.assertEqual(freeze_policy.stem_size, 3)

        freeze_policy.reset(stem_size=1)

        self.assertEqual(freeze_policy.stem_size, 1)
        self.assertEqual(freeze_policy.evaluations, 0)
        # Warmup and patience apply again.
        sizes = _run(freeze_policy, [[NAN] + [SETTLED] * 3] * 3)
        self.assertEqual(sizes, [1, 1, 3])

    @parameterized.named_parameters(
        ("half_of_four", 4, 0.5, 2),
        ("floor", 5, 0.5, 2),
        ("float_rounding_29", 100, 0.29, 29),
        ("float_rounding_7", 10, 0.7, 7),
        ("zero", 4, 0.0, 0),
        # Never the output unit, however close to 1 the fraction is.
        ("almost_all", 4, 0.99, 3),
        ("all_but_one", 3, 2 / 3, 2),
        ("single_unit", 1, 0.99, 0),
    )
    def test_stem_is_capped(self, num_units, fraction, cap):
        freeze_policy = _policy(num_units=num_units, max_drop_fraction=fraction)

        size = freeze_policy.update([SETTLED] * num_units)

        self.assertEqual(size, cap)
        self.assertEqual(freeze_policy.update([NAN] * num_units), cap)

    def test_state_round_trip_gives_identical_decisions(self):
        rng = np.random.default_rng(0)
        evaluations = rng.uniform(0.0, 0.7, size=(12, 6))
        evaluations[3, 1] = LEARNING
        original = policy.FreezePolicy(
            6, threshold=0.5, patience=2, warmup=1, max_drop_fraction=0.8
        )
        _run(original, evaluations[:4])

        state = original.get_state()
        restored = policy.FreezePolicy(
            6, threshold=0.5, patience=2, warmup=1, max_drop_fraction=0.8
        )
        restored.set_state(state)

        self.assertEqual(restored.get_state(), state)
        # Plain Python values, so the state can be saved as JSON.
        self.assertEqual({type(v) for v in state.values()}, {int, list})
        self.assertTrue(all(type(s) is int for s in state["streak"]))
        sizes = _run(original, evaluations[4:])
        self.assertEqual(_run(restored, evaluations[4:]), sizes)
        self.assertNotEqual(sizes[0], sizes[-1])  # The stem did grow.
        # Without the state (streaks, warmup done) the decisions differ.
        fresh = policy.FreezePolicy(
            6, threshold=0.5, patience=2, warmup=1, max_drop_fraction=0.8
        )
        self.assertNotEqual(_run(fresh, evaluations[4:]), sizes)


class FixedScheduleTest(tf.test.TestCase):
    def test_docstring_example(self):
        fixed = policy.FixedSchedule(4, {2: 3})

        self.assertEqual([fixed.update([1.0] * 4) for _ in range(3)], [0, 3, 3])

    def test_scores_are_ignored_and_the_stem_never_shrinks(self):
        fixed = policy.FixedSchedule(5, {1: 2, 3: 1, 4: 4})

        sizes = _run(fixed, [[0.0] * 5, [0.0] * 5, [1.0] * 5, [1.0] * 5])

        self.assertEqual(sizes, [2, 2, 2, 4])

    def test_invalid_schedule(self):
        with self.assertRaisesRegex(
            ValueError, r"\[0, 3\] for this model of 4 units.*\{1: 4\}"
        ):
            policy.FixedSchedule(4, {1: 4})
        with self.assertRaisesRegex(ValueError, r"\{0: 1\}"):
            policy.FixedSchedule(4, {0: 1})


if __name__ == "__main__":
    tf.test.main()


class ScoreLengthTest(tf.test.TestCase):
    def test_scores_of_the_wrong_length_are_refused(self):
        freeze = policy.FreezePolicy(3, 0.5, 1, 0, 0.7)
        with self.assertRaisesRegex(ValueError, r"\(3\).*\(1,\)"):
            freeze.update([0.1])
