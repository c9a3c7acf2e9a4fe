"""Tests of LearnDropHistory (totals, JSON, summary) and the logs keys."""

import builtins
import json
import os
from unittest import mock

import numpy as np
from absl.testing import parameterized
from matplotlib import image

from keras_learndrop import report
from keras_learndrop.backend import tf


def _history():
    history = report.LearnDropHistory(["conv1", "conv2", "dense"], [10, 6, 4])
    for epoch, mode, flops in (
        (0, "full", 20),
        (1, "fill", 20),
        (2, "replay", 4),
    ):
        history.epochs.append(
            report.EpochRecord(
                epoch, mode, 2 if epoch else 0, 1, flops, 20, 0, 0.5
            )
        )
    history.evaluations.append(
        report.Evaluation(
            0,
            [0.2, float("nan"), 0.1],
            [0.4, float("nan"), 0.1],
            0.05,
            {"continuation": [1.0, float("nan"), 0.5]},
            2,
        )
    )
    history.frozen_at = {0: 0, 1: 0}
    history.note("cache refused")
    history.note("cache refused")
    return history


class LearnDropHistoryTest(tf.test.TestCase):
    def test_totals(self):
        history = _history()
        self.assertEqual(history.forward_flops, 44)
        self.assertEqual(history.baseline_flops, 60)
        self.assertAllClose(history.flops_reduction, 1 - 44 / 60)
        self.assertEqual(history.stem_size, 2)
        self.assertEqual(history.notes, ["cache refused"])

    def test_json_round_trip(self):
        history = _history()
        data = json.loads(json.dumps(history.to_dict()))
        again = report.LearnDropHistory.from_dict(data)
        self.assertEqual(again.to_dict(), history.to_dict())
        self.assertEqual(again.frozen_at, {0: 0, 1: 0})
        self.assertIsNone(data["evaluations"][0]["change"][1])

    def test_summary_counts_epochs_from_one(self):
        lines = _history().summary().splitlines()
        self.assertEqual(lines[1].split()[-1], "1")
        self.assertEqual(lines[3].split()[-1], "-")
        self.assertIn("epoch modes: full fill replay", lines[4])
        self.assertIn("26.7 % saved", lines[5])


class LogKeysTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.named_parameters(
        ("one_unit", "change", 0, 1, "ld_change/unit_0"),
        ("ten_units", "rate", 9, 10, "ld_rate/unit_9"),
        ("eleven_units", "rate", 3, 11, "ld_rate/unit_03"),
        ("many_units", "continuation", 7, 120, "ld_continuation/unit_007"),
    )
    def test_unit_log_key(self, name, unit, num_units, expected):
        self.assertEqual(report.unit_log_key(name, unit, num_units), expected)

    def test_unit_log_keys_sort_in_unit_order(self):
        keys = [report.unit_log_key("change", i, 12) for i in range(12)]

        self.assertEqual(sorted(keys), keys)
        # TensorBoard tags: `epoch_<key>`, grouped by the part before `/`.
        for key in keys:
            self.assertRegex(f"epoch_{key}", r"^epoch_ld_change/[\w.-]+$")

    def test_progress_keys(self):
        hidden = [
            key
            for key in (
                *report.PROGRESS_KEYS,
                "ld_cache_bytes",
                "ld_change/unit_0",
                "loss",
                "val_loss",
            )
            if report.hidden_from_progress(key)
        ]
        self.assertEqual(
            set(report.PROGRESS_KEYS),
            {"ld_epoch_mode", "ld_frozen_units", "ld_flops_saved"},
        )
        self.assertEqual(hidden, ["ld_cache_bytes", "ld_change/unit_0"])


def _with_drift(history):
    history.evaluations[0].drift = [0.02, float("nan"), 0.3]
    history.evaluations.append(
        report.Evaluation(
            1,
            [float("nan")] * 2 + [0.05],
            [float("nan")] * 2 + [0.05],
            0.04,
            {"continuation": [float("nan")] * 2 + [0.4]},
            2,
            drift=[float("nan")] * 2 + [0.2],
        )
    )
    return history


class PlotTest(tf.test.TestCase):
    def test_renders_scores_drift_and_epoch_times_to_a_png(self):
        figure = _with_drift(_history()).plot()
        scores, drift, times = figure.axes
        self.assertEqual(scores.get_ylabel(), "continuation")
        self.assertEqual(drift.get_yscale(), "log")
        # One line per unit and one X per frozen unit in each panel.
        self.assertLen(scores.lines, 3 + 2)
        self.assertLen(drift.lines, 3 + 2)
        # One bar per epoch, coloured by its mode.
        self.assertLen(times.patches, 3)
        self.assertEqual(
            sorted(t.get_text() for t in times.get_legend().get_texts()),
            ["fill", "full", "replay"],
        )
        path = os.path.join(self.get_temp_dir(), "run.png")
        figure.savefig(path)
        self.assertGreater(image.imread(path).shape[1], 1000)

    def test_without_drift_two_panels(self):
        figure = _history().plot(score="change")
        self.assertLen(figure.axes, 2)
        self.assertAllClose(
            figure.axes[0].lines[0].get_ydata(), np.array([0.2])
        )

    def test_an_unknown_score_names_the_known_ones(self):
        with self.assertRaisesRegex(ValueError, "continuation, change"):
            _history().plot(score="rate")

    def test_without_matplotlib_says_how_to_install_it(self):
        real_import = builtins.__import__

        def no_matplotlib(name, *args, **kwargs):
            if name.startswith("matplotlib"):
                raise ImportError("No module named 'matplotlib'")
            return real_import(name, *args, **kwargs)

        with mock.patch.object(builtins, "__import__", no_matplotlib):
            with self.assertRaisesRegex(
                ImportError, r"keras-learndrop\[plot\]"
            ):
                _history().plot()


if __name__ == "__main__":
    tf.test.main()
