"""Smoke test of the threshold sweep on a tiny model and dataset."""

from absl.testing import flagsaver

from benchmarks import threshold_sweep
from examples import datasets
from keras_learndrop.backend import tf

threshold_sweep.define_flags()


class ThresholdSweepTest(tf.test.TestCase):
    def test_tuning_split_never_uses_the_validation_images(self):
        data = datasets.load_dataset("digits", seed=0)
        tuning = threshold_sweep.tuning_split(data, 100, 50)
        self.assertAllEqual(tuning.x_train, data.x_train[:100])
        self.assertAllEqual(tuning.x_val, data.x_train[100:150])
        with self.assertRaisesRegex(ValueError, "Lower `tune_train`"):
            threshold_sweep.tuning_split(data, 10**6, 1)

    def test_sweep_reports_one_row_per_setting(self):
        data = datasets.load_dataset("digits", seed=0)
        with flagsaver.flagsaver(
            dataset="digits",
            model="small_cnn",
            width=0.25,
            tune_train=96,
            tune_val=32,
            epochs=3,
            thresholds=["0.9", "1.0"],
            patiences=["1"],
            output_dir=self.get_temp_dir(),
        ):
            threshold_sweep.FLAGS.mark_as_parsed()
            threshold_sweep.main([])
        tuning = threshold_sweep.tuning_split(data, 96, 32)
        results = threshold_sweep.run(
            tuning,
            model="small_cnn",
            width=0.25,
            epochs=4,
            thresholds=[1.0],
            patiences=[1],
            seed=0,
        )
        (row,) = results["rows"]
        # Threshold 1 settles every unit at the first evaluation after the
        # warm-up one: the stem is frozen after epoch 2, filled in epoch 3
        # and replayed in epoch 4.
        self.assertEqual(row["first_freeze_epoch"], 2)
        self.assertGreater(row["flops_saved"], 0.0)
        self.assertIn("speed-up", threshold_sweep.format_table(results))
        self.assertTrue(tf.io.gfile.exists(self.get_temp_dir() + "/sweep.json"))


if __name__ == "__main__":
    tf.test.main()
