"""Tests of benchmarks/simulate_policies.py on a recorded tiny run."""

import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
from absl import flags
from absl.testing import flagsaver

from benchmarks import simulate_policies
from examples import train
from keras_learndrop import policy
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def setUpModule():
    simulate_policies.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


class SimulateTest(tf.test.TestCase):
    def test_replayed_decisions_match_the_real_run_of_a_fixed_plan(self):
        output_dir = self.get_temp_dir()
        common = dict(
            model="small_cnn",
            width=0.25,
            dataset="digits",
            image_size=0,
            max_train=64,
            max_val=32,
            epochs=3,
            batch_size=16,
            verbose=0,
            output_dir=output_dir,
            policy="fixed",
        )
        observed = train.run(
            **common, schedule="", policy_args="samples_per_epoch=2"
        )
        report = observed["learn_drop"]
        recorded = simulate_policies.observations(report, 3)
        self.assertLen(recorded, 3)
        for observation in recorded:
            # Two samples an epoch: the path is at least the net change.
            self.assertTrue(np.all(observation.path >= observation.change))
            self.assertGreater(observation.learning_rate, 0.0)

        outcome = simulate_policies.simulate(
            policy.FixedSchedule({1: 2}), recorded, report["unit_flops"]
        )
        real = train.run(**{**common, "output_dir": ""}, schedule="1:2")

        self.assertEqual(outcome["frozen_after_epoch"], {0: 1, 1: 1})
        self.assertEqual(
            real["frozen_after_epoch"], {"stage1_conv1": 1, "stage1_conv2": 1}
        )
        # Epoch 2 fills (whole model), epoch 3 replays the head.
        self.assertAllClose(outcome["flops_saved"], real["flops_reduction"])

        stdout = io.StringIO()
        with flagsaver.flagsaver(
            run=os.path.join(output_dir, "learndrop.json"),
            setting=["freezeout:t0=0.5", "scores"],
        ):
            with redirect_stdout(stdout):
                simulate_policies.main(["simulate_policies.py"])
        self.assertIn("freezeout:t0=0.5", stdout.getvalue())
        self.assertIn("3 evaluations", stdout.getvalue())
        json.dumps(report)
