"""Smoke test of the transfer learning benchmark on a tiny dataset."""

import json
import os

from absl.testing import flagsaver

from benchmarks import transfer_learning
from keras_learndrop.backend import tf

transfer_learning.define_flags()


class TransferLearningTest(tf.test.TestCase):
    def test_frozen_base_is_replayed_from_the_second_epoch(self):
        directory = self.get_temp_dir()
        output = os.path.join(directory, "result.json")
        with flagsaver.flagsaver(
            dataset="digits",
            image_size=32,
            pretrain_image_size=32,
            pretrain_train=64,
            pretrain_epochs=0,
            train=64,
            val=32,
            phase1_epochs=3,
            phase2_epochs=0,
            batch_size=32,
            variants=["none"],
            base_weights=os.path.join(directory, "{base}_{size}.weights.h5"),
            output_json=output,
        ):
            transfer_learning.main([])
        with open(output) as file:
            results = json.load(file)

        arms = results["variants"]["none"]
        phase1 = arms["learndrop"]["phase1"]
        self.assertEqual(phase1["modes"], ["fill", "replay", "replay"])
        # Every unit but the new head's last one is the frozen base.
        self.assertLen(phase1["frozen_at"], phase1["units"] - 1)
        self.assertEqual(set(phase1["frozen_at"].values()), {-1})
        self.assertNotIn("phase2", arms["learndrop"])
        self.assertIsNone(arms["plain"]["phase1"]["modes"])
        self.assertGreater(arms["phase1_speedup"], 0.0)
        self.assertTrue(
            os.path.exists(os.path.join(directory, "mobilenetv2_32.weights.h5"))
        )
        checks = results["input_checks"]
        self.assertIn("`map` function `augment`", checks["scan_found"])
        self.assertEqual(checks["probe_random"], [True] * 5)


if __name__ == "__main__":
    tf.test.main()
