"""Smoke test of the replay benchmark on a tiny model and dataset."""

from absl.testing import flagsaver

from benchmarks import replay_benchmark
from keras_learndrop.backend import tf

replay_benchmark.define_flags()


class ReplayBenchmarkTest(tf.test.TestCase):
    def test_four_runs_and_their_ratios(self):
        results = replay_benchmark.run(
            model="small_cnn",
            width=0.25,
            dataset="digits",
            max_train=64,
            batch_size=16,
            epochs=4,
            cut_epoch=1,
            cut_units=2,
        )
        self.assertEqual(
            results["replay"]["modes"], ["full", "fill", "replay", "replay"]
        )
        self.assertEqual(
            results["stem_forward"]["modes"],
            ["full", "stem_forward", "stem_forward", "stem_forward"],
        )
        self.assertLen(results["plain"]["epoch_seconds"], 4)
        self.assertLen(results["head_only"]["epoch_seconds"], 3)
        self.assertGreater(results["replay"]["flops_saved"], 0.0)
        self.assertEqual(results["stem_forward"]["flops_saved"], 0.0)
        for ratio in results["ratios"].values():
            self.assertGreater(ratio, 0.0)
        table = replay_benchmark.format_table(results)
        self.assertIn("replay_over_head_only", table)

    def test_too_few_epochs_are_refused(self):
        with self.assertRaisesRegex(ValueError, "epochs=3"):
            replay_benchmark.run(dataset="digits", epochs=3, cut_epoch=1)

    def test_main_through_flags(self):
        path = self.get_temp_dir() + "/replay.json"
        with flagsaver.flagsaver(
            model="small_cnn",
            width=0.25,
            dataset="digits",
            max_train=48,
            batch_size=16,
            epochs=4,
            cut_units=1,
            image_size=0,
            output_json=path,
        ):
            replay_benchmark.FLAGS.mark_as_parsed()
            replay_benchmark.main([])
        self.assertTrue(tf.io.gfile.exists(path))


if __name__ == "__main__":
    tf.test.main()
