"""Tests of LearnDropHistory: totals, JSON round trip, summary."""

import json

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


if __name__ == "__main__":
    tf.test.main()
