"""Smoke test of the probe-size benchmark on a tiny model and dataset."""

import json
import os

import numpy as np
from absl import flags
from absl.testing import flagsaver

from benchmarks import probe_size
from keras_learndrop import drift
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def setUpModule():
    probe_size.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


class ProbeSizeTest(tf.test.TestCase):
    def test_a_subset_is_compared_with_the_whole_probe(self):
        results = os.path.join(self.get_temp_dir(), "probe_size.jsonl")
        with flagsaver.flagsaver(
            dataset="digits",
            model="small_cnn",
            width=0.25,
            image_size=0,
            epochs=2,
            batch_size=16,
            tune_train=64,
            tune_val=32,
            seeds=["0"],
            regime="tiny",
            reference_size=24,
            sizes=["8", "16"],
            draws=3,
            near=1.0,
            results=[results],
        ):
            probe_size.main([])
            with open(results) as file:
                (row,) = [json.loads(line) for line in file]
            # A second run skips what the file holds.
            probe_size.main([])
            with open(results) as file:
                self.assertLen(file.readlines(), 1)
        self.assertEqual(row["reference_size"], 24)
        self.assertEqual(row["train_samples"], 64)
        self.assertLen(row["records"], 2)
        units = len(row["records"][0]["reference"])
        for record in row["records"]:
            self.assertEqual(sorted(record["subsets"]), ["16", "8"])
            for per_unit in record["subsets"].values():
                self.assertLen(per_unit, units)
                self.assertTrue(all(len(v) == 3 for v in per_unit))
        # Timed at the first epoch, for each size and the whole probe.
        self.assertEqual(
            sorted(size for size, _ in row["probe_seconds"]), [8, 16, 24]
        )
        found = probe_size.errors(row, near=1.0)
        self.assertEqual(sorted(found), [8, 16])
        self.assertLen(found[8], 2 * units * 3)
        table = probe_size.format_table([row], near=1.0)
        self.assertIn("| 8 |", table)
        self.assertIn("| 24 (reference) |", table)

    def test_time_cuts_times_each_cut_in_turn(self):
        model = keras.Sequential(
            [
                keras.Input((6, 6, 1)),
                keras.layers.Conv2D(2, 3, name="a"),
                keras.layers.Conv2D(2, 3, name="b"),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )
        probe = np.random.default_rng(0).random((10, 6, 6, 1))
        rows = probe_size.time_cuts(model, probe)
        self.assertEqual([cut for cut, _, _ in rows], [0, 1, 2])
        self.assertTrue(all(a > 0 and b > 0 for _, a, b in rows))

    def test_errors_leave_out_drifts_above_near(self):
        row = {
            "records": [
                {
                    "reference": [0.01, 0.2, None],
                    "subsets": {"8": [[0.012, 0.009], [0.3, 0.1], [0.0]]},
                }
            ]
        }
        found = probe_size.errors(row, near=0.05)
        self.assertAllClose(found[8], [0.002, 0.001])
        relative = probe_size.errors(row, near=0.05, relative=True)
        self.assertAllClose(relative[8], [0.2, 0.1])

    def test_a_gram_block_is_the_subsets_gram(self):
        # What the benchmark relies on: the drift of a subset is computed
        # from blocks of the whole probe's Gram matrices.
        rng = np.random.default_rng(0)
        before, after = rng.random((30, 5)), rng.random((30, 5))
        chosen = np.array([1, 4, 7, 9, 12, 20, 28])
        block = np.ix_(chosen, chosen)
        self.assertAllClose(
            drift.cka(drift.gram(before)[block], drift.gram(after)[block]),
            drift.cka(drift.gram(before[chosen]), drift.gram(after[chosen])),
        )


if __name__ == "__main__":
    tf.test.main()
