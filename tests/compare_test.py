"""Smoke tests of examples/compare.py on a tiny slice of the digits."""

import glob
import io
import json
import os
from contextlib import redirect_stdout
from unittest import mock

import numpy as np
from absl import flags
from absl.testing import flagsaver
from matplotlib import image

from examples import compare
from examples import train_flags
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

# small_cnn (5 units) on 64 digits; the first 2 units freeze after epoch 1,
# so LearnDrop fills the cache in epoch 2 and replays it in epoch 3.
TINY = dict(
    model="small_cnn",
    width=0.25,
    dataset="digits",
    image_size=None,
    max_train=64,
    max_val=32,
    epochs=3,
    batch_size=16,
    policy="fixed",
    schedule="1:2",
    verbose=0,
)
FROZEN = {"stage1_conv1": 1, "stage1_conv2": 1}


def setUpModule():
    compare.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


def _event_tags(log_dir):
    """The summary tags written to the TensorBoard event files in log_dir."""
    tags = set()
    pattern = os.path.join(log_dir, "**", "events.out.tfevents.*")
    for path in glob.glob(pattern, recursive=True):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    return tags


class CompareTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        np.random.seed(0)

    def test_compares_both_runs_and_writes_json_plot_and_tensorboard(self):
        output_dir = self.get_temp_dir()

        result = compare.run(**TINY, output_dir=output_dir)

        baseline, learndrop = result["baseline"], result["learndrop"]
        self.assertEqual(baseline["run"], "baseline")
        self.assertEqual(learndrop["run"], "learndrop")
        # Same data, seed and epochs: only LearnDrop differs.
        self.assertEqual(baseline["data"], learndrop["data"])
        self.assertEqual(baseline["samples_seen"], learndrop["samples_seen"])
        self.assertEqual(
            baseline["forward_flops"], learndrop["baseline_forward_flops"]
        )
        comparison = result["comparison"]
        self.assertAllClose(
            comparison["speedup"],
            baseline["fit_seconds"] / learndrop["fit_seconds"],
        )
        self.assertAllClose(
            comparison["val_accuracy_points"],
            100 * (learndrop["val_accuracy"] - baseline["val_accuracy"]),
        )
        self.assertGreater(comparison["flops_reduction_percent"], 0.0)
        self.assertAllClose(
            comparison["flops_reduction_percent"],
            100 * learndrop["flops_reduction"],
        )
        self.assertEqual(comparison["frozen_after_epoch"], FROZEN)
        modes = [e["mode"] for e in learndrop["learn_drop"]["epochs"]]
        self.assertEqual(modes, ["full", "fill", "replay"])

        files = result["files"]
        with open(files["json"]) as file:
            self.assertEqual(json.load(file), result)
        self.assertEqual(
            files["json"], os.path.join(output_dir, "compare.json")
        )
        pixels = image.imread(files["plot"])
        # Three panels of 600 pixels: scores, drift, seconds per epoch.
        self.assertEqual(pixels.shape[:2], (450, 1800))
        # TensorBoard comes after LearnDrop, so it logs LearnDrop's keys.
        learndrop_tags = _event_tags(
            os.path.join(files["tensorboard"], "learndrop")
        )
        self.assertIn("epoch_ld_flops_saved", learndrop_tags)
        validation_tags = _event_tags(
            os.path.join(files["tensorboard"], "learndrop", "validation")
        )
        self.assertIn("epoch_accuracy", validation_tags)
        baseline_tags = _event_tags(
            os.path.join(files["tensorboard"], "baseline")
        )
        self.assertIn("epoch_accuracy", baseline_tags)
        self.assertNotIn("epoch_ld_flops_saved", baseline_tags)

        table = compare.format_table(result)
        self.assertIn("x speed-up", table)
        self.assertIn("stage1_conv2: 1", table)

    def test_main_runs_from_flags_and_prints_the_table(self):
        output_dir = self.get_temp_dir()
        stdout = io.StringIO()
        with flagsaver.flagsaver(**TINY, output_dir=output_dir):
            with redirect_stdout(stdout):
                compare.main(["compare.py"])

        self.assertIn("fit wall-clock (s)", stdout.getvalue())
        self.assertIn("forward FLOPs of training", stdout.getvalue())
        with open(os.path.join(output_dir, "compare.json")) as file:
            result = json.load(file)
        self.assertEqual(result["config"]["max_train"], 64)
        self.assertEqual(result["comparison"]["frozen_after_epoch"], FROZEN)
        self.assertTrue(os.path.isfile(os.path.join(output_dir, "compare.png")))

    def test_without_tensorboard_the_logs_are_skipped_with_a_warning(self):
        output_dir = self.get_temp_dir()

        with mock.patch.object(
            compare, "_tensorboard_installed", return_value=False
        ):
            with self.assertLogs(level="WARNING") as logs:
                result = compare.run(**TINY, output_dir=output_dir)

        self.assertLen(
            [r for r in logs.records if "TensorBoard" in r.getMessage()], 1
        )
        self.assertNotIn("tensorboard", result["files"])
        self.assertFalse(os.path.exists(os.path.join(output_dir, "tb")))
        self.assertTrue(os.path.isfile(result["files"]["json"]))

    def test_flags_are_those_of_train_but_learn_drop(self):
        config_fields = set(train_flags.TrainConfig.__dataclass_fields__)
        defined = {name for name in config_fields if name in FLAGS}
        # train_test may have defined --learn_drop in this process.
        self.assertEqual(defined | {"learn_drop"}, config_fields)


if __name__ == "__main__":
    tf.test.main()
