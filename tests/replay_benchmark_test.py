"""Smoke test of the replay benchmark on a tiny model and dataset."""

import json

from absl.testing import flagsaver

from benchmarks import replay_benchmark
from keras_learndrop.backend import tf

replay_benchmark.define_flags()

_TINY = dict(
    model="small_cnn",
    width=0.25,
    dataset="digits",
    max_train=64,
    max_val=32,
    batch_size=16,
    epochs=4,
    cut_epoch=1,
    cut_units=2,
)


class ReplayBenchmarkTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = replay_benchmark.run(**_TINY)

    def test_every_learndrop_run_freezes_and_replays(self):
        for name in ("whole_validation", "cached_validation"):
            result = self.results[name]
            self.assertEqual(result["frozen_units"], 2, name)
            self.assertGreater(result["flops_saved"], 0.0, name)
            self.assertEqual(
                [row["mode"] for row in result["epochs"]],
                ["full", "fill", "replay", "replay"],
                name,
            )
        validation_modes = {
            name: [row["validation_mode"] for row in result["epochs"]]
            for name, result in self.results.items()
            if name in replay_benchmark.RUNS
        }
        self.assertEqual(
            validation_modes["cached_validation"],
            ["full", "fill", "replay", "replay"],
        )
        self.assertEqual(validation_modes["whole_validation"], ["full"] * 4)
        self.assertLen(self.results["plain"]["epochs"], 4)
        self.assertEqual(
            [row["epoch"] for row in self.results["head_only"]["epochs"]],
            [2, 3, 4],
        )

    def test_cached_validation_validates_as_the_whole_model(self):
        # Both runs train alike (same seed, replay order and cut); they
        # differ only in how the head's validation runs.
        cached = self.results["cached_validation"]["history"]
        whole = self.results["whole_validation"]["history"]
        for key in ("loss", "accuracy"):
            self.assertAllEqual(cached[key], whole[key])
        for key in ("val_loss", "val_accuracy"):
            self.assertAllClose(cached[key], whole[key], atol=1e-5, rtol=0)

    def test_parts_add_up_to_each_epoch(self):
        for name in replay_benchmark.DEFAULT_RUNS:
            result = self.results[name]
            total = 0.0
            for row in result["epochs"]:
                parts = (row["training"], row["validation"], row["callback"])
                self.assertAllClose(sum(parts), row["seconds"], atol=1e-6)
                self.assertGreater(row["training"], 0.0, name)
                self.assertGreater(row["validation"], 0.0, name)
                # The two timers bracket LearnDrop's hooks: its share is
                # part of the callback time, which is never negative.
                self.assertBetween(
                    row["learndrop"], 0.0, row["callback"] + 1e-6
                )
                total += row["seconds"]
            self.assertLess(total, result["fit_seconds"], name)

    def test_summary_and_table(self):
        self.assertEqual(self.results["steady_epochs"], [4])
        for key, value in self.results["summary"].items():
            self.assertGreater(value, 0.0, key)
        table = replay_benchmark.format_table(self.results)
        for name in replay_benchmark.DEFAULT_RUNS:
            self.assertIn(f"| {name} | 4 |", table)
        self.assertIn("| cached_validation | 3 | replay | replay |", table)
        self.assertIn("| whole_validation | 3 | replay | full |", table)
        self.assertIn("| head_only | 2 | head | head |", table)

    def test_too_few_epochs_are_refused(self):
        with self.assertRaisesRegex(ValueError, "epochs=3"):
            replay_benchmark.run(dataset="digits", epochs=3, cut_epoch=1)

    def test_unknown_run_is_refused(self):
        with self.assertRaisesRegex(ValueError, "runs=\\['replay'\\]"):
            replay_benchmark.run(dataset="digits", runs=["replay"])

    def test_main_runs_the_chosen_runs(self):
        path = self.get_temp_dir() + "/replay.json"
        with flagsaver.flagsaver(
            model="small_cnn",
            width=0.25,
            dataset="digits",
            max_train=48,
            max_val=16,
            batch_size=16,
            epochs=4,
            cut_units=1,
            image_size=0,
            runs=["stem_forward", "head_only"],
            output_json=path,
        ):
            replay_benchmark.FLAGS.mark_as_parsed()
            replay_benchmark.main([])
        with open(path) as file:
            results = json.load(file)
        self.assertEqual(
            results["config"]["runs"], ["stem_forward", "head_only"]
        )
        self.assertNotIn("plain", results)
        self.assertEqual(
            [row["mode"] for row in results["stem_forward"]["epochs"]],
            ["full"] + ["stem_forward"] * 3,
        )
        self.assertIsNone(
            results["summary"]["cached_validation_over_head_only_epoch"]
        )


if __name__ == "__main__":
    tf.test.main()
