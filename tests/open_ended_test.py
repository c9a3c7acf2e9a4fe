"""Tests of benchmarks/open_ended.py."""

import io
import json
from contextlib import redirect_stdout

import keras
from absl import flags
from absl.testing import flagsaver

from benchmarks import frontier
from benchmarks import open_ended
from examples import train
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def setUpModule():
    open_ended.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


def _row(setting, seed, epoch_seconds, modes=(), frozen=None, rates=()):
    evaluations = []
    before = None
    for rate in rates:
        mean = rate if before is None else (before + rate) / 2
        evaluations.append({"learning_rate": mean})
        before = rate
    return {
        "regime": "open",
        "setting": setting,
        "seed": seed,
        "epochs_run": len(epoch_seconds),
        "final_epoch": 3,
        "epoch_seconds": list(epoch_seconds),
        "val_accuracy_per_epoch": [0.1, 0.2, 0.5, 0.4, 0.45, 0.3],
        "modes": list(modes),
        "frozen_after_epoch": frozen or {},
        "evaluations": evaluations,
        "config": {"early_stopping_patience": 3},
    }


class OpenEndedTest(tf.test.TestCase):
    def test_rates_of_a_real_run_are_the_rates_its_epochs_used(self):
        # A plateau callback that cuts the rate at every epoch end, placed
        # after LearnDrop as users are told to place their callbacks.
        cut = keras.callbacks.ReduceLROnPlateau(
            monitor="loss", patience=0, min_delta=100.0, factor=0.5
        )
        result = train.run(
            model="small_cnn",
            width=0.25,
            dataset="digits",
            image_size=0,
            max_train=64,
            max_val=32,
            epochs=4,
            batch_size=16,
            verbose=0,
            optimizer="adam",
            learning_rate=0.01,
            lr_schedule="constant",
            policy="fixed",
            schedule="",
            callbacks=[cut],
        )
        rates = open_ended.epoch_rates(result["learn_drop"]["evaluations"])
        # ReduceLROnPlateau logs the rate of the epoch before it cuts it.
        self.assertAllClose(rates, result["history"]["learning_rate"])
        # The first epoch sets the best loss; each later one misses it.
        self.assertAllClose(rates, [0.01, 0.01, 0.005, 0.0025])
        self.assertEqual(open_ended.cuts(rates), [2, 3])

    def test_freeze_cost_replays_after_one_fill(self):
        # Frozen after epoch 2 of 5: two full epochs, a fill at 1.5 times
        # the median full epoch (10 s), two replays at 0.2 times.
        cost = open_ended.freeze_cost([30, 10, 10, 10, 10], 2, 1.5, 0.2)
        self.assertAllClose(cost, 30 + 10 + 15 + 2 * 2)
        self.assertAllClose(
            open_ended.freeze_cost([30, 10, 10], 3, 1.5, 0.2), 50
        )

    def test_report_reads_cuts_only_before_the_first_freeze(self):
        rows = [
            _row(frontier.BASELINE, 0, [20, 10, 10, 10, 10, 10]),
            # Froze after epoch 4: its rates after that are not the
            # baseline's, and the cut after epoch 5 is left out.
            _row(
                "default",
                0,
                [20, 10, 10, 10, 15, 2],
                modes=["full"] * 4 + ["fill", "replay"],
                frozen={"a": 4},
                rates=[1.0, 0.5, 0.5, 0.25, 0.25, 0.1],
            ),
        ]
        stdout = io.StringIO()
        path = self.create_tempfile(
            content="".join(json.dumps(r) + "\n" for r in rows)
        ).full_path
        with flagsaver.flagsaver(results=[path]):
            with redirect_stdout(stdout):
                open_ended.main(["open_ended.py"])
        text = stdout.getvalue()
        self.assertIn("fill 1.50, replay of 1 units 0.20 of a full epoch", text)
        # Best epoch 3; cuts after epochs 1 and 3; the baseline took 70 s.
        # Frozen after the best: 40 + 15 + 2 * 2 = 59 s; after the second
        # cut (epoch 3), the same.
        self.assertIn(
            "| 0 | 6 | 3 | 1, 3 | 10.00 %, 50.00 % | 70.0 s | 59.0 s, 1.19x "
            "| 59.0 s, 1.19x |",
            text,
        )

    def test_costs_may_come_from_other_runs(self):
        rows = [
            _row(frontier.BASELINE, 0, [20, 10, 10, 10, 10, 10]),
            _row(
                "default",
                0,
                [20, 10, 10, 10, 10, 10],
                modes=["full"] * 6,
                rates=[1.0, 0.5, 0.5, 0.25, 0.25, 0.1],
            ),
        ]
        costs = [
            _row(
                "aggressive",
                1,
                [20, 10, 10, 10, 1, 1],
                modes=["full"] * 3 + ["fill", "replay", "replay"],
                frozen={"a": 3, "b": 4},
            )
        ]
        self.assertEqual(
            open_ended.report(rows),
            ["open: no LearnDrop run filled and replayed"],
        )
        lines = open_ended.report(rows, cost_rows=costs)
        # Fill 10 s and a replay of both units 1 s, against full epochs of
        # 10 s; the run that never froze gives every cut (1, 3 and 5).
        self.assertIn(
            "fill 1.00, replay of 2 units 0.10 of a full epoch", lines[0]
        )
        self.assertIn("| 0 | 6 | 3 | 1, 3, 5 |", lines[4])
