"""Smoke tests of the frontier benchmark on a tiny model and dataset."""

import json
import os

import numpy as np
from absl import app
from absl import flags
from absl.testing import flagsaver
from matplotlib import image

from benchmarks import frontier
from examples import datasets
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

TINY = dict(
    dataset="digits",
    model="small_cnn",
    width=0.25,
    image_size=0,
    epochs=3,
    batch_size=16,
    tune_train=64,
    tune_val=32,
    seeds=["0"],
    regime="tiny",
)


def setUpModule():
    frontier.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


class FrontierTest(tf.test.TestCase):
    def test_tuning_split_never_uses_the_validation_images(self):
        data = datasets.load_dataset("digits", seed=0)
        tuning = frontier.tuning_split(data, 100, 50)
        self.assertAllEqual(tuning.x_train, data.x_train[:100])
        self.assertAllEqual(tuning.x_val, data.x_train[100:150])
        with self.assertRaisesRegex(ValueError, "Lower `tune_train`"):
            frontier.tuning_split(data, 10**6, 1)

    def test_bad_setting_is_refused_before_training(self):
        with self.assertRaisesRegex(ValueError, "one of default, scores"):
            frontier.parse_setting("magic:threshold=1")
        with self.assertRaisesRegex(ValueError, "augmented_views.*'epochs'"):
            frontier.parse_setting("scores@epochs=3")

    def test_setting_may_change_the_views_of_the_cache(self):
        self.assertEqual(
            frontier.parse_setting("scores:threshold=0.5@augmented_views=2"),
            {
                "policy": "scores",
                "policy_args": "threshold=0.5",
                "schedule": "",
                "augmented_views": 2,
            },
        )

    def test_flags_of_a_single_run_are_refused(self):
        with flagsaver.flagsaver(**TINY, results=["x.jsonl"]):
            FLAGS["policy_args"].parse("threshold=0.3")
            try:
                with self.assertRaisesRegex(app.UsageError, "--setting"):
                    frontier.main(["frontier.py"])
            finally:
                FLAGS["policy_args"].unparse()

    def test_a_setting_is_behind_one_faster_and_more_accurate(self):
        def entry(setting, speedup, delta, regime="r", seeds=(0, 1)):
            return dict(
                regime=regime,
                setting=setting,
                per_seed={seed: (speedup, delta) for seed in seeds},
            )

        default = entry("default", 1.3, -0.2)
        summary = [
            default,
            entry("faster_worse", 1.6, -3.0),
            entry("equal", 1.3, -0.2),
            entry("ahead", 1.4, -0.2),
            entry("ahead_elsewhere", 2.0, 0.0, regime="other"),
            entry("ahead_on_other_seeds", 2.0, 0.0, seeds=(2,)),
        ]

        self.assertEqual(frontier.dominating(default, summary), ["ahead"])
        self.assertEqual(frontier.dominating(summary[1], summary), [])

    def test_settings_with_more_seeds_compare_on_the_common_ones(self):
        def entry(setting, per_seed):
            return dict(regime="r", setting=setting, per_seed=per_seed)

        # Over seeds 0-3 `four` is ahead of `two` on average, but not on
        # the two seeds `two` ran; `late` ran other seeds only.
        four = entry("four", {0: (1.3, -1.0), 1: (1.3, -1.0), 2: (1.3, 2.0),
                              3: (1.3, 2.0)})  # fmt: skip
        two = entry("two", {0: (1.2, -0.5), 1: (1.2, -0.5)})
        late = entry("late", {5: (2.0, 1.0)})
        summary = [four, two, late]

        self.assertEqual(frontier.dominating(two, summary), [])
        self.assertEqual(frontier.dominating(four, summary), [])
        two["per_seed"] = {0: (1.4, -0.5), 1: (1.4, -0.5)}
        self.assertEqual(frontier.dominating(four, summary), ["two"])

    def test_paired_noise_pools_the_spread_of_each_settings_seeds(self):
        def entry(regime, per_seed, frozen_units=8.0):
            return dict(
                regime=regime, per_seed=per_seed, frozen_units=frozen_units
            )

        summary = [
            entry("r", {0: (1.2, -1.0), 1: (1.2, 1.0)}),
            entry("r", {0: (2.0, -3.0), 1: (2.0, -1.0), 2: (2.0, -2.0)}),
            entry("r", {0: (1.0, 0.0), 1: (1.0, 0.0)}, frozen_units=0.0),
            entry("one_seed", {0: (1.5, 0.0)}),
        ]

        # Squares around each mean: 1 + 1, then 1 + 1 + 0; 1 + 2 degrees;
        # the setting that froze nothing does not count.
        self.assertEqual(
            frontier.paired_noise(summary), {"r": (np.sqrt(4 / 3), 3)}
        )
        self.assertIn(
            "r: one paired accuracy change varies by 1.15 points",
            frontier.format_noise(summary),
        )

    def test_same_epochs_compare_the_epochs_before_the_first_freeze(self):
        base = {"epoch_seconds": [9.0, 4.0, 4.0, 4.0, 4.0]}
        # Epochs 2 and 3 ran Keras's step in both; the run froze after 3.
        run = {
            "epoch_seconds": [9.0, 5.0, 5.0, 1.0, 1.0],
            "frozen_after_epoch": {"conv": 3, "block": 4},
        }
        self.assertAllClose(frontier.same_epochs_ratio(run, base), 0.8)
        # Never froze: every epoch but the first, as far as both ran
        # (`EarlyStopping` may end them at different epochs).
        run = {"epoch_seconds": [9.0, 2.0, 2.0], "frozen_after_epoch": {}}
        self.assertAllClose(frontier.same_epochs_ratio(run, base), 2.0)
        run = {"epoch_seconds": [9.0, 1.0], "frozen_after_epoch": {"c": 1}}
        self.assertIsNone(frontier.same_epochs_ratio(run, base))

    def test_runs_resume_and_report_pairs_with_the_baseline(self):
        results = os.path.join(self.get_temp_dir(), "tiny.jsonl")
        plot = os.path.join(self.get_temp_dir(), "frontier.png")
        with flagsaver.flagsaver(
            **TINY, setting=["fixed:1:2"], results=[results]
        ):
            frontier.main(["frontier.py"])
        # A second call with one more setting only runs that one.
        with flagsaver.flagsaver(
            **TINY, setting=["fixed:1:2", "observe"], results=[results]
        ):
            frontier.main(["frontier.py"])
        rows = frontier.read_results([results])
        self.assertEqual(
            [r["setting"] for r in rows], ["baseline", "fixed:1:2", "observe"]
        )
        fixed = rows[1]
        self.assertEqual(fixed["modes"], ["full", "fill", "replay"])
        # The probe: the 32 validation images there are (fewer than the
        # 64 that `probe_size="auto"` keeps at least).
        self.assertEqual(fixed["probe_size"], [32, 32, 32])
        self.assertLen(rows[2]["evaluations"], 3)
        self.assertEqual(rows[2]["frozen_after_epoch"], {})

        (summary,) = frontier.summarize(rows)
        self.assertEqual(summary["setting"], "fixed:1:2")
        self.assertAllClose(
            summary["speedup"],
            rows[0]["fit_seconds"] / fixed["fit_seconds"],
        )
        self.assertAllClose(
            summary["delta_points"],
            100 * (fixed["val_accuracy"] - rows[0]["val_accuracy"]),
        )
        with flagsaver.flagsaver(report=True, results=[results], plot=plot):
            frontier.main(["frontier.py"])
        self.assertEqual(image.imread(plot).ndim, 3)
        # It froze after the first epoch: no epoch ran alike in both.
        self.assertIsNone(summary["same_epochs"])
        self.assertIn(
            "| tiny | fixed:1:2 | 1 |", frontier.format_table([summary])
        )
        self.assertEqual(summary["dominated_by"], [])
        self.assertTrue(frontier.format_table([summary]).endswith(" | - |"))
        json.dumps(rows)  # The file's rows stay JSON.
