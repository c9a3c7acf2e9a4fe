"""Tests for keras_learndrop.policy, on synthetic observation sequences.

The sequences model what LearnDrop sees in training with SGD: a unit that
still learns moves its weights by `lr * g` per evaluation in one direction
(net change = path length); a settled unit oscillates, so its net change is
a small share of its path, and its net change per unit of learning rate
falls well below its earlier drift.
"""

import dataclasses
import json
import math

import numpy as np
from absl.testing import parameterized

import keras_learndrop
from keras_learndrop import policy
from keras_learndrop.backend import tf

NAN = float("nan")
EPOCHS = 20


def _cosine(epoch, epochs=EPOCHS, base=0.1):
    return 0.5 * base * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))


def _remaining(epoch, epochs=EPOCHS):
    """The cosine learning rate still to come after `epoch`."""
    return sum(_cosine(e, epochs) for e in range(epoch + 1, epochs))


def _observe(epoch, change, path=None, lr=0.1, epochs=EPOCHS, remaining=-1):
    change = np.asarray(change, dtype=np.float64)
    path = change if path is None else np.asarray(path, dtype=np.float64)
    if remaining == -1:
        remaining = lr * (epochs - epoch - 1) if epochs else None
    return policy.Observation(epoch, epochs, change, path, lr, remaining)


def _learning(epoch, units=4, drift=2.0):
    """Every unit drifts at `drift` per unit of a cosine learning rate."""
    lr = _cosine(epoch)
    change = np.full(units, drift * lr)
    return _observe(epoch, change, change, lr, remaining=_remaining(epoch))


def _run(freeze_policy, observations, num_units=4):
    freeze_policy.build(num_units)
    return [freeze_policy.update(o) for o in observations]


# What every measuring policy must not mistake for settling, and what it
# must recognise as settled (see the module docstring).
def _schedule_decay_only(epochs=EPOCHS):
    return [_learning(e) for e in range(epochs)]


def _first_epoch_spike(epochs=EPOCHS):
    observations = [_learning(e) for e in range(epochs)]
    spike = observations[0].change * 50.0
    observations[0] = _observe(
        0, spike, spike, observations[0].learning_rate, remaining=_remaining(0)
    )
    return observations


def _unit_zero_settles(at=6, epochs=EPOCHS):
    observations = []
    for e in range(epochs):
        lr = _cosine(e)
        change = np.full(4, 2.0 * lr)
        path = change.copy()
        # Its features stop changing too (for `FeatureDrift`).
        drift = np.full(4, 0.1)
        if e >= at:
            # Unit 0 oscillates: a tenth of its drift survives, over a path
            # as long as before.
            change[0] = 0.1 * lr
            drift[0] = 0.005
        observations.append(
            dataclasses.replace(
                _observe(e, change, path, lr, remaining=_remaining(e)),
                drift=drift,
            )
        )
    return observations


# A unit learning at a steady rate still has more than a quarter of its
# learning to come until epoch 8 of this cosine schedule.
SAFE = 9
MEASURING = (
    ("scores", lambda: policy.LearnDropScores(threshold=0.25, patience=2)),
    (
        "consistency",
        lambda: policy.DirectionConsistency(threshold=0.5, patience=2),
    ),
)


class SafeguardsTest(tf.test.TestCase, parameterized.TestCase):
    def test_stem_never_takes_the_output_unit(self):
        always = policy.LearnDropScores(
            threshold=1.0, patience=1, warmup=0, max_drop_fraction=0.99
        )
        sizes = _run(always, [_observe(e, [0.0] * 4) for e in range(3)])

        self.assertEqual(sizes, [3, 3, 3])

    def test_max_drop_fraction_caps_the_stem(self):
        always = policy.LearnDropScores(
            threshold=1.0, patience=1, warmup=0, max_drop_fraction=0.5
        )
        sizes = _run(always, [_observe(e, [0.0] * 4) for e in range(3)])

        self.assertEqual(sizes, [2, 2, 2])

    def test_start_fraction_holds_every_decision_until_then(self):
        always = policy.LearnDropScores(
            threshold=1.0, patience=1, warmup=0, start_fraction=0.3
        )
        sizes = _run(
            always, [_observe(e, [0.0] * 4, epochs=10) for e in range(4)]
        )

        # Epoch index 2 ends 30 % of the run.
        self.assertEqual(sizes, [0, 0, 3, 3])

    def test_augmented_inputs_hold_a_policy_that_does_not_freeze_them(self):
        def sizes(augmented, **kwargs):
            always = policy.LearnDropScores(
                threshold=1.0, patience=1, warmup=0, **kwargs
            )
            observations = [
                dataclasses.replace(_observe(e, [0.0] * 4), augmented=augmented)
                for e in range(3)
            ]
            return _run(always, observations)

        self.assertEqual(sizes(True, freeze_augmented=False), [0, 0, 0])
        self.assertEqual(sizes(False, freeze_augmented=False), [3, 3, 3])
        self.assertEqual(sizes(True), [3, 3, 3])
        self.assertFalse(policy.LearnDropScores.default().freeze_augmented)
        self.assertTrue(policy.LearnDropScores.aggressive().freeze_augmented)

    def test_max_new_units_bounds_each_decision(self):
        always = policy.LearnDropScores(
            threshold=1.0,
            patience=1,
            warmup=0,
            max_new_units=1,
            max_drop_fraction=0.99,
        )
        sizes = _run(always, [_observe(e, [0.0] * 4) for e in range(4)])

        self.assertEqual(sizes, [1, 2, 3, 3])

    def test_diverged_unit_and_those_behind_it_never_freeze(self):
        always = policy.LearnDropScores(
            threshold=1.0, patience=1, warmup=0, max_drop_fraction=0.99
        )
        change = [0.0, math.inf, 0.0, 0.0]

        sizes = _run(always, [_observe(e, change) for e in range(3)])

        self.assertEqual(sizes, [1, 1, 1])

    def test_stem_never_shrinks(self):
        plan = policy.FixedSchedule({1: 2, 2: 1})

        self.assertEqual(
            _run(plan, [_observe(e, [0.0] * 4) for e in range(3)]), [2, 2, 2]
        )

    def test_update_before_build_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"policy.build\(num_units\)"):
            policy.LearnDropScores().update(_observe(0, [0.1]))

    def test_observation_of_the_wrong_length_is_refused(self):
        scores = policy.LearnDropScores()
        scores.build(4)

        with self.assertRaisesRegex(
            ValueError, r"one value per unit \(4\). Received: shape \(3,\)"
        ):
            scores.update(_observe(0, [0.1] * 3))

    def test_subclass_without_propose_says_what_to_implement(self):
        class Mine(policy.FreezePolicy):
            pass

        mine = Mine()
        mine.build(3)

        with self.assertRaisesRegex(NotImplementedError, "propose"):
            mine.update(_observe(0, [0.1] * 3))

    def test_a_custom_policy_needs_only_propose(self):
        class FreezeWhatStopped(policy.FreezePolicy):
            def propose(self, observation):
                moving = np.flatnonzero(np.nan_to_num(observation.change) > 0)
                return int(moving[0]) if moving.size else self.num_units

        mine = FreezeWhatStopped(max_drop_fraction=0.99)

        sizes = _run(
            mine, [_observe(0, [0.0, 0.0, 0.1, 0.1]), _observe(1, [0.1] * 4)]
        )

        self.assertEqual(sizes, [2, 2])


class MeasuringPoliciesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*MEASURING)
    def test_learning_rate_decay_alone_freezes_nothing(self, make):
        # Half way through a cosine schedule the learning rate, and so each
        # step's change, has halved; the units learn as before.
        sizes = _run(make(), _schedule_decay_only())

        self.assertEqual(sizes[:SAFE], [0] * SAFE)

    @parameterized.named_parameters(*MEASURING)
    def test_first_epoch_spike_alone_freezes_nothing(self, make):
        sizes = _run(make(), _first_epoch_spike())

        self.assertEqual(sizes[:SAFE], [0] * SAFE)

    @parameterized.named_parameters(*MEASURING)
    def test_a_settled_unit_freezes_after_patience(self, make):
        sizes = _run(make(), _unit_zero_settles(at=6))

        # Settled from evaluation 7 (epoch 6) on; patience 2; the units
        # still learning stay.
        self.assertEqual(sizes[6], 0)
        self.assertEqual(sizes[7:10], [1] * 3)

    def test_scores_freeze_what_the_rest_of_the_run_cannot_move(self):
        # Near the end of the schedule little learning rate is left: a unit
        # moving as fast as ever would still move little.
        sizes = _run(
            policy.LearnDropScores(threshold=0.25, patience=2),
            _schedule_decay_only(),
        )

        self.assertEqual(sizes[-2], 3)

    def test_nothing_freezes_after_the_last_epoch(self):
        always = policy.LearnDropScores(threshold=1.0, patience=1, warmup=0)

        sizes = _run(always, [_observe(e, [0.0] * 4, epochs=3) for e in (2,)])

        self.assertEqual(sizes, [0])

    def test_scores_without_a_known_future_never_settle(self):
        scores = policy.LearnDropScores(threshold=1.0, patience=1, warmup=0)

        sizes = _run(
            scores,
            [_observe(e, [0.0, 0.1, 0.1, 0.1], epochs=None) for e in (0, 1)],
        )

        # A unit without change settles; one that moves cannot be judged.
        self.assertEqual(sizes, [1, 1])

    @parameterized.named_parameters(*MEASURING)
    def test_frozen_units_stay_settled(self, make):
        freeze_policy = make()
        sizes = _run(freeze_policy, _unit_zero_settles(at=2)[:6])
        self.assertEqual(sizes[-1], 1)

        # Frozen units are observed as NaN from then on.
        for e in range(6, 9):
            lr = _cosine(e)
            change = np.array([NAN, 2 * lr, 2 * lr, 2 * lr])
            freeze_policy.update(
                _observe(e, change, change, lr, remaining=_remaining(e))
            )
        self.assertEqual(freeze_policy.stem_size, 1)

    def test_scores_report_rate_and_continuation(self):
        scores = policy.LearnDropScores(warmup=0)
        _run(scores, [_observe(0, [0.2, 0.1, 0.2, 0.2], lr=0.1, remaining=0.5)])

        self.assertAllClose(scores.last_scores["rate"], [2.0, 1.0, 2.0, 2.0])
        # To come: rate * 0.5; done: the change itself.
        self.assertAllClose(
            scores.last_scores["continuation"],
            [1 / 1.2, 0.5 / 0.6, 1 / 1.2, 1 / 1.2],
        )

    def test_absolute_scores_measure_the_change_to_come(self):
        scores = policy.LearnDropScores(warmup=0, relative=False)
        _run(scores, [_observe(0, [0.2, 0.1, 0.2, 0.2], lr=0.1, remaining=0.5)])

        self.assertAllClose(
            scores.last_scores["continuation"], [1.0, 0.5, 1.0, 1.0]
        )

    def test_a_unit_that_moved_less_is_not_frozen_earlier(self):
        # Two units at the same steady rate of learning, one with weights
        # that move ten times less: the same share is left to learn.
        observations = [
            _observe(
                e,
                [0.01 * o.change[0], o.change[0]],
                lr=o.learning_rate,
                remaining=o.remaining_learning_rate,
            )
            for e, o in enumerate(_schedule_decay_only())
        ]
        scores = policy.LearnDropScores()
        scores.build(2)
        for observation in observations[:8]:
            scores.update(observation)

        continuation = scores.last_scores["continuation"]
        self.assertAllClose(continuation[0], continuation[1])

    def test_consistency_of_random_updates_is_about_one_over_root_s(self):
        rng = np.random.default_rng(0)
        steps = rng.normal(size=(16, 1000))
        path = np.linalg.norm(steps, axis=1).sum()
        net = np.linalg.norm(steps.sum(axis=0))
        consistency = policy.DirectionConsistency()
        consistency.build(2)

        consistency.update(_observe(0, [net, net], [path, path]))

        self.assertAllClose(
            consistency.last_scores["consistency"], [0.25, 0.25], atol=0.02
        )


class AutoFreezeRuleTest(tf.test.TestCase):
    def test_needs_two_evaluations(self):
        rule = policy.AutoFreezeRule()

        self.assertEqual(_run(rule, [_observe(0, [0.1, 1.0, 1.0, 1.0])]), [0])

    def test_freezes_the_prefix_before_the_first_unit_at_the_median(self):
        rule = policy.AutoFreezeRule()
        observations = [
            _observe(0, [1.0, 1.0, 1.0, 1.0]),
            # Change rates 0.01, 0.02, 0.5, 0.4: median 0.21.
            _observe(1, [0.99, 0.98, 0.5, 0.6]),
        ]

        self.assertEqual(_run(rule, observations), [0, 2])

    def test_learning_rate_decay_alone_freezes_nothing(self):
        # Every unit's accumulated gradient changes alike.
        self.assertEqual(_run(policy.AutoFreezeRule(), _learning_seq())[-1], 0)

    def test_spike_alone_freezes_nothing(self):
        self.assertEqual(
            _run(policy.AutoFreezeRule(), _first_epoch_spike())[-1], 0
        )

    def test_reports_change_rates(self):
        rule = policy.AutoFreezeRule()
        _run(rule, [_observe(0, [1.0] * 4), _observe(1, [0.5, 1, 1, 1.5])])

        self.assertAllClose(rule.last_scores["change_rate"], [0.5, 0, 0, 0.5])


def _learning_seq():
    return [_learning(e) for e in range(EPOCHS)]


class FreezeOutTest(tf.test.TestCase):
    def test_cubic_schedule_of_the_paper(self):
        freeze_out = policy.FreezeOut(t0=0.8, max_drop_fraction=0.99)
        freeze_out.build(4)

        self.assertAllClose(
            freeze_out.freeze_times(), [0.8**3, 0.85**3, 0.9**3, 0.95**3]
        )

    def test_freezes_by_progress_not_by_scores(self):
        freeze_out = policy.FreezeOut(t0=0.5)

        sizes = _run(
            freeze_out, [_observe(e, [1.0] * 4, epochs=10) for e in range(10)]
        )

        # Unit i at (0.5 + 0.125 i)^3: 0.125, 0.244, 0.42 (3 is the cap).
        self.assertEqual(sizes, [0, 1, 2, 2, 3, 3, 3, 3, 3, 3])

    def test_unknown_run_length_is_refused(self):
        freeze_out = policy.FreezeOut()
        freeze_out.build(4)

        with self.assertRaisesRegex(ValueError, "epochs=None"):
            freeze_out.update(_observe(0, [1.0] * 4, epochs=None))


class FixedScheduleTest(tf.test.TestCase):
    def test_follows_the_plan(self):
        plan = policy.FixedSchedule({2: 1, 4: 3})

        sizes = _run(plan, [_observe(e, [1.0] * 4) for e in range(5)])

        self.assertEqual(sizes, [0, 1, 1, 3, 3])

    def test_plan_larger_than_the_model_is_refused_at_build(self):
        with self.assertRaisesRegex(ValueError, r"\[0, 3\].*\{1: 4\}"):
            policy.FixedSchedule({1: 4}).build(4)


ALL_POLICIES = (
    ("scores", lambda: policy.LearnDropScores(threshold=0.3, patience=3)),
    (
        "tapered",
        lambda: policy.LearnDropScores(last_unit_threshold=0.05, patience=1),
    ),
    ("aggressive", policy.LearnDropScores.aggressive),
    ("consistency", lambda: policy.DirectionConsistency(samples_per_epoch=4)),
    ("autofreeze", lambda: policy.AutoFreezeRule(max_new_units=2)),
    ("freezeout", lambda: policy.FreezeOut(t0=0.6, start_fraction=0.1)),
    ("fixed", lambda: policy.FixedSchedule({3: 1, 6: 2})),
    ("drift", lambda: policy.FeatureDrift(relative_threshold=0.5)),
    ("default", policy.ScheduleOrDrift),
    (
        "schedule_or_drift",
        lambda: policy.ScheduleOrDrift(
            scores=policy.LearnDropScores(threshold=0.3),
            drift=policy.FeatureDrift(threshold=0.02),
            pretrained_drift=0.2,
            max_new_units=1,
        ),
    ),
)


class TaperedThresholdTest(tf.test.TestCase):
    def test_thresholds_fall_geometrically_with_depth(self):
        scores = policy.LearnDropScores(threshold=0.2, last_unit_threshold=0.05)
        self.assertAllClose(scores.thresholds(3), [0.2, 0.1, 0.05])
        self.assertAllClose(
            policy.LearnDropScores(threshold=0.2).thresholds(3), [0.2] * 3
        )

    def test_deeper_units_freeze_later(self):
        # Every unit learns alike under a cosine schedule: one threshold
        # freezes them together, a tapered one one after the other.
        observations = _schedule_decay_only()
        together = _run(policy.LearnDropScores(patience=1), observations)
        tapered = _run(
            policy.LearnDropScores(patience=1, last_unit_threshold=0.02),
            observations,
        )
        self.assertEqual(sorted(set(together) - {0}), [3])
        grown = sorted(set(tapered) - {0})
        self.assertEqual(grown, [1, 2, 3])
        first = tapered.index(1)
        self.assertEqual(first, together.index(3))
        self.assertLess(first, tapered.index(2))
        self.assertLess(tapered.index(2), tapered.index(3))


class ConfigAndStateTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*ALL_POLICIES)
    def test_get_config_round_trips_through_json(self, make):
        original = make()
        config = json.loads(json.dumps(policy.serialize(original)))

        rebuilt = policy.deserialize(config)

        self.assertIs(type(rebuilt), type(original))
        self.assertEqual(rebuilt.get_config(), original.get_config())

    @parameterized.named_parameters(*ALL_POLICIES)
    def test_resume_restores_the_state_exactly(self, make):
        observations = _unit_zero_settles(at=3)
        reference = make()
        expected = _run(reference, observations)
        for cut in (1, 4, 9):
            first = make()
            _run(first, observations[:cut])
            state = json.loads(json.dumps(first.get_state()))
            resumed = make()
            resumed.build(4)
            resumed.set_state(state)

            rest = [resumed.update(o) for o in observations[cut:]]

            self.assertEqual(rest, expected[cut:], msg=f"cut {cut}")
            self.assertEqual(resumed.get_state(), reference.get_state())

    def test_unknown_class_name_lists_the_built_in_ones(self):
        with self.assertRaisesRegex(ValueError, "'Mine'.*FreezeOut"):
            policy.deserialize({"class_name": "Mine", "config": {}})

    def test_public_api(self):
        for name in (
            "FreezePolicy",
            "LearnDropScores",
            "DirectionConsistency",
            "AutoFreezeRule",
            "FreezeOut",
            "FixedSchedule",
            "FeatureDrift",
            "ScheduleOrDrift",
            "Observation",
        ):
            self.assertIs(getattr(keras_learndrop, name), getattr(policy, name))
        default = keras_learndrop.LearnDrop().policy
        self.assertIsInstance(default, policy.LearnDropScores)
        self.assertEqual(
            default.get_config(),
            policy.LearnDropScores(
                last_unit_threshold=0.02, freeze_augmented=False
            ).get_config(),
        )
        offered = policy.ScheduleOrDrift()
        self.assertFalse(offered.freeze_augmented)
        self.assertEqual(
            offered.scores.get_config(),
            policy.LearnDropScores(
                last_unit_threshold=0.02, freeze_augmented=True
            ).get_config(),
        )
        self.assertEqual(
            offered.drift.get_config(), policy.FeatureDrift().get_config()
        )
        self.assertEqual(offered.drift.threshold, 0.005)


def _drifting(drifts, epochs=None):
    """Observations whose weights all move alike, with these drifts."""
    return [
        dataclasses.replace(
            _observe(e, np.full(len(d), 0.1), lr=0.1, epochs=epochs),
            drift=np.asarray(d, dtype=np.float64),
        )
        for e, d in enumerate(drifts)
    ]


class FeatureDriftTest(tf.test.TestCase, parameterized.TestCase):
    def test_units_freeze_as_their_features_settle_from_the_input_up(self):
        # Unit 0 settles from evaluation 2, unit 1 from 5, unit 2 never.
        drifts = [
            [0.5 if e < 2 else 0.005, 0.5 if e < 5 else 0.01, 0.3, 0.6]
            for e in range(9)
        ]
        stems = _run(
            policy.FeatureDrift(threshold=0.01, patience=2), _drifting(drifts)
        )
        self.assertEqual(stems, [0, 0, 0, 1, 1, 1, 2, 2, 2])

    def test_weights_slowing_with_the_learning_rate_freeze_nothing(self):
        # The learning rate (and so every weight change) falls to zero,
        # but the features keep changing: nothing is settled.
        observations = [
            dataclasses.replace(o, drift=np.full(4, 0.2))
            for o in _schedule_decay_only()
        ]
        stems = _run(policy.FeatureDrift(), observations)
        self.assertEqual(stems[-1], 0)

    def test_a_jump_breaks_the_streak(self):
        calm, jump = [0.01, 0.5, 0.5], [0.3, 0.5, 0.5]
        stems = _run(
            policy.FeatureDrift(threshold=0.01, patience=2, warmup=0),
            _drifting([calm, jump, calm, calm]),
            num_units=3,
        )
        self.assertEqual(stems, [0, 0, 0, 1])

    def test_relative_drift_cancels_a_jump_of_every_unit(self):
        # Every unit jumps tenfold at evaluation 2; unit 0 stays at a
        # twentieth of the output unit's drift.
        drifts = [[0.005, 0.05, 0.1]] * 2 + [[0.05, 0.5, 1.0]] * 2
        relative = policy.FeatureDrift(
            threshold=1.0, relative_threshold=0.1, patience=3, warmup=0
        )
        absolute = policy.FeatureDrift(threshold=0.02, patience=3, warmup=0)
        self.assertEqual(_run(relative, _drifting(drifts), 3), [0, 0, 1, 1])
        self.assertEqual(_run(absolute, _drifting(drifts), 3), [0, 0, 0, 0])
        self.assertAllClose(
            relative.last_scores["relative_drift"], [0.05, 0.5, 1.0]
        )

    def test_freezes_without_knowing_the_end_of_the_run(self):
        drifts = [[0.001, 0.5, 0.5, 0.5]] * 4
        stems = _run(policy.FeatureDrift(), _drifting(drifts, epochs=None))
        self.assertEqual(stems, [0, 0, 1, 1])

    def test_unmeasured_drift_never_settles(self):
        drifts = [[NAN, 0.5, 0.5, 0.5]] * 4
        self.assertEqual(
            _run(policy.FeatureDrift(warmup=0), _drifting(drifts))[-1], 0
        )

    def test_an_observation_without_drift_is_refused(self):
        freeze_policy = policy.FeatureDrift()
        freeze_policy.build(2)
        with self.assertRaisesRegex(ValueError, "probe_size=0"):
            freeze_policy.update(_observe(0, [0.1, 0.1]))

    def test_learn_drop_refuses_it_without_a_probe(self):
        with self.assertRaisesRegex(ValueError, "FeatureDrift.*probe_size"):
            keras_learndrop.LearnDrop(
                policy=policy.FeatureDrift(), probe_size=0
            )


def _first_drift_then_settling(first, scheduled, epochs=EPOCHS):
    """Unit 0's features settle from evaluation 2, its weights keep moving.

    The first evaluation's drift is `first` for every unit but the output
    unit (0.6); the weights move with the cosine learning rate throughout,
    as in `_schedule_decay_only` (so the scores never settle before its
    end).
    """
    observations = []
    for e, observation in enumerate(_schedule_decay_only(epochs)):
        drift = np.full(4, first if e == 0 else 0.3)
        drift[-1] = 0.6
        if e >= 2:
            drift[0] = 0.002
        observations.append(
            dataclasses.replace(observation, drift=drift, scheduled=scheduled)
        )
    return observations


class ScheduleOrDriftTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("scratch", 0.5, True, "scores", "trains from scratch"),
        ("scratch_no_schedule", 0.5, False, "scores", "has no schedule"),
        ("pretrained", 0.01, True, "drift", "starts pre-trained"),
        ("pretrained_no_schedule", 0.01, False, "drift", "starts pre-"),
    )
    def test_it_reads_the_schedule_only_where_it_can(
        self, first, scheduled, choice, why
    ):
        chosen = policy.ScheduleOrDrift()
        stems = _run(chosen, _first_drift_then_settling(first, scheduled))

        self.assertEqual(chosen.choice, choice)
        self.assertLen(chosen.notes, 1)
        self.assertIn(why, chosen.notes[0])
        first_freeze = next(i for i, stem in enumerate(stems) if stem)
        if choice == "drift":
            # Unit 0 alone, once settled for two evaluations.
            self.assertEqual(first_freeze, 3)
            self.assertEqual(stems[-1], 1)
        else:
            # The weights move with the learning rate: the scores wait for
            # the schedule to run half out.
            self.assertGreaterEqual(first_freeze, EPOCHS // 2)

    def test_without_drift_the_scores_decide(self):
        chosen = policy.ScheduleOrDrift()
        observations = [
            dataclasses.replace(o, scheduled=False, drift=None)
            for o in _unit_zero_settles()
        ]

        stems = _run(chosen, observations)

        self.assertEqual(chosen.choice, "scores")
        self.assertIn("no drift is measured", chosen.notes[0])
        reference = _run(policy.LearnDropScores.default(), observations)
        self.assertEqual(stems, reference)

    def test_pretrained_means_the_first_half_of_the_moving_units(self):
        # Units without trainable weights (change 0) and frozen ones (NaN)
        # do not count; of the other six, the first three average 0.03.
        drift = np.array([NAN, 0.0, 0.01, 0.02, 0.06, 0.9, 0.9, 0.9])
        change = np.array([NAN, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
        observation = dataclasses.replace(
            _observe(0, change), drift=drift, scheduled=True
        )
        strict = policy.ScheduleOrDrift(pretrained_drift=0.02)
        loose = policy.ScheduleOrDrift(pretrained_drift=0.04)

        self.assertEqual(strict.choose(observation)[0], "scores")
        self.assertEqual(loose.choose(observation)[0], "drift")
        self.assertIn("drifted 0.030 on average", loose.choose(observation)[1])
        self.assertIn("0.033 times the output", loose.choose(observation)[1])

    def test_a_network_that_hardly_moves_anywhere_is_not_pre_trained(self):
        # A deep residual network at its initialisation: every unit drifts
        # little in the first epoch, the output unit too.
        observation = dataclasses.replace(
            _observe(0, np.full(4, 0.1)),
            drift=np.array([0.04, 0.06, 0.08, 0.15]),
            scheduled=True,
        )
        choice, why = policy.ScheduleOrDrift().choose(observation)
        self.assertEqual(choice, "scores")
        self.assertIn("0.333 times the output unit's", why)
        lenient = policy.ScheduleOrDrift(pretrained_relative_drift=0.5)
        self.assertEqual(lenient.choose(observation)[0], "drift")

    def test_the_choice_holds_for_the_fit_and_resets_with_it(self):
        chosen = policy.ScheduleOrDrift()
        scratch = _first_drift_then_settling(0.5, scheduled=True)
        pretrained = _first_drift_then_settling(0.01, scheduled=True)
        _run(chosen, scratch[:1] + pretrained[:1] + scratch[1:])
        self.assertEqual(chosen.choice, "scores")
        self.assertLen(chosen.notes, 1)

        chosen.reset()
        self.assertIsNone(chosen.choice)
        chosen.update(pretrained[0])
        self.assertEqual(chosen.choice, "drift")

    def test_augmentation_holds_whatever_decides(self):
        observations = [
            dataclasses.replace(o, augmented=True)
            for o in _first_drift_then_settling(0.01, scheduled=True)
        ]
        held = policy.ScheduleOrDrift()
        eager = policy.ScheduleOrDrift(freeze_augmented=True)

        self.assertEqual(_run(held, observations)[-1], 0)
        self.assertEqual(held.choice, "drift")
        self.assertEqual(_run(eager, observations)[-1], 1)

    def test_its_own_safeguards_bound_the_chosen_policy(self):
        drifts = [[0.01, 0.01, 0.01, 0.5]] + [[0.001] * 4] * 5
        observations = [
            dataclasses.replace(o, scheduled=True) for o in _drifting(drifts)
        ]
        stems = _run(policy.ScheduleOrDrift(max_new_units=1), observations)
        self.assertEqual(stems, [0, 0, 1, 2, 3, 3])

    @parameterized.named_parameters(
        ("scores", dict(scores="scores"), TypeError,
         "`scores` must be a FreezePolicy such as LearnDropScores.default()"),
        ("drift", dict(drift=0.01), TypeError,
         "`drift` must be a FreezePolicy such as FeatureDrift().*0.01"),
        ("pretrained", dict(pretrained_drift=1.5), ValueError,
         r"\[0.0, 1.0\]. Received: pretrained_drift=1.5"),
        ("relative", dict(pretrained_relative_drift=-0.1), ValueError,
         r"\[0.0, inf\]. Received: pretrained_relative_drift=-0.1"),
    )  # fmt: skip
    def test_bad_argument_is_refused(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            policy.ScheduleOrDrift(**kwargs)


class ArgumentsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("threshold_high", policy.DirectionConsistency, dict(threshold=1.5),
         ValueError, r"`threshold` must be in \(0.0, 1.0\]. Received: "
         r"threshold=1.5"),
        ("threshold_zero", policy.LearnDropScores, dict(threshold=0),
         ValueError, r"\(0.0, 1.0\]. Received: threshold=0"),
        ("threshold_absolute", policy.LearnDropScores,
         dict(threshold=0, relative=False), ValueError,
         r"\(0.0, inf\]. Received: threshold=0"),
        ("relative_str", policy.LearnDropScores, dict(relative="yes"),
         TypeError, "relative='yes'"),
        ("threshold_nan", policy.LearnDropScores, dict(threshold=NAN),
         ValueError, "threshold=nan"),
        ("threshold_str", policy.DirectionConsistency, dict(threshold="0.5"),
         TypeError, "threshold='0.5' of type str"),
        ("patience_zero", policy.LearnDropScores, dict(patience=0),
         ValueError, "patience=0"),
        ("patience_float", policy.DirectionConsistency, dict(patience=1.5),
         TypeError, "patience=1.5"),
        ("warmup_bool", policy.LearnDropScores, dict(warmup=True),
         TypeError, "warmup=True"),
        ("samples_one", policy.DirectionConsistency,
         dict(samples_per_epoch=1), ValueError, "samples_per_epoch=1"),
        ("fraction_one", policy.AutoFreezeRule, dict(max_drop_fraction=1.0),
         ValueError, "max_drop_fraction=1.0"),
        ("start_negative", policy.FreezeOut, dict(start_fraction=-0.1),
         ValueError, "start_fraction=-0.1"),
        ("new_units_zero", policy.AutoFreezeRule, dict(max_new_units=0),
         ValueError, "max_new_units=0"),
        ("augmented_str", policy.FreezeOut, dict(freeze_augmented="no"),
         TypeError, "freeze_augmented='no'"),
        ("t0_zero", policy.FreezeOut, dict(t0=0), ValueError, "t0=0"),
        ("unknown", policy.LearnDropScores, dict(thresold=0.5), TypeError,
         "thresold"),
        ("last_above", policy.LearnDropScores, dict(last_unit_threshold=0.3),
         ValueError, r"\(0.0, 0.25\]. Received: last_unit_threshold=0.3"),
        ("drift_threshold", policy.FeatureDrift, dict(threshold=0),
         ValueError, r"\(0.0, 1.0\]. Received: threshold=0"),
        ("drift_relative", policy.FeatureDrift,
         dict(relative_threshold=1.5), ValueError,
         "relative_threshold=1.5"),
        ("drift_warmup", policy.FeatureDrift, dict(warmup=-1), ValueError,
         "warmup=-1"),
    )  # fmt: skip
    def test_bad_argument_is_refused(self, cls, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            cls(**kwargs)

    @parameterized.named_parameters(
        ("list", [1, 2], TypeError, r"dict.*schedule=\[1, 2\]"),
        ("str_size", {1: "2"}, TypeError, "'2'"),
        ("float_size", {1: 2.0}, TypeError, "2.0"),
        ("zero", {0: 1}, ValueError, ">= 1"),
        ("negative", {2: -1}, ValueError, "-1"),
    )
    def test_bad_schedule_is_refused(self, schedule, error, message):
        with self.assertRaisesRegex(error, message):
            policy.FixedSchedule(schedule)
