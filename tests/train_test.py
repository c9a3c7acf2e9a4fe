"""Smoke tests of examples/train.py on a tiny slice of the digits."""

import doctest
import io
import json
import os
from contextlib import redirect_stdout
from unittest import mock

import numpy as np
from absl import flags
from absl.testing import flagsaver
from absl.testing import parameterized

from examples import models
from examples import train
from examples import train_flags
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS

# small_cnn has 5 units: 4 conv units and the classifier. 64 samples in
# batches of 16 take 4 steps an epoch.
TINY = dict(
    model="small_cnn",
    width=0.25,
    dataset="digits",
    image_size=None,
    max_train=64,
    max_val=32,
    epochs=3,
    batch_size=16,
    verbose=0,
)
# Freeze the first 2 units after the first evaluation (epoch 1): epoch 2
# fills the cache, epoch 3 replays it.
SCHEDULE = "1:2"
FROZEN = {"stage1_conv1": 1, "stage1_conv2": 1}

RESULT_KEYS = {
    "run",
    "config",
    "data",
    "fit_seconds",
    "epochs_run",
    "final_epoch",
    "epoch_seconds",
    "train_accuracy",
    "train_loss",
    "val_accuracy",
    "val_loss",
    "history",
    "model_flops",
    "samples_seen",
    "baseline_forward_flops",
    "forward_flops",
    "flops_reduction",
    "frozen_after_epoch",
    "learn_drop",
}


def setUpModule():
    train_flags.define_flags()
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()


class RunTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        np.random.seed(0)
        self.output_dir = self.get_temp_dir()

    def test_learn_drop_freezes_per_schedule_and_saves_flops(self):
        result = train.run(
            **TINY,
            policy="fixed",
            schedule=SCHEDULE,
            output_dir=self.output_dir,
        )

        self.assertEqual(set(result), RESULT_KEYS)
        self.assertEqual(result["run"], "learndrop")
        self.assertEqual(result["frozen_after_epoch"], FROZEN)
        report = result["learn_drop"]
        self.assertEqual(
            [e["mode"] for e in report["epochs"]], ["full", "fill", "replay"]
        )
        # Every sample once per epoch, and the FLOPs the baseline would
        # run are the analytic count times the samples.
        self.assertEqual([e["samples"] for e in report["epochs"]], [64] * 3)
        self.assertEqual(result["samples_seen"], 3 * 64)
        self.assertEqual(
            result["baseline_forward_flops"], result["model_flops"] * 3 * 64
        )
        self.assertEqual(
            report["baseline_flops"], result["baseline_forward_flops"]
        )
        self.assertEqual(result["forward_flops"], report["forward_flops"])
        # The replay epoch skips the 2 frozen units.
        saved = sum(report["unit_flops"][:2]) * 64
        self.assertEqual(
            result["forward_flops"], result["baseline_forward_flops"] - saved
        )
        self.assertGreater(result["flops_reduction"], 0.0)
        self.assertLen(result["epoch_seconds"], 3)
        self.assertGreaterEqual(
            result["fit_seconds"], sum(result["epoch_seconds"])
        )
        for key in ("train_accuracy", "val_accuracy"):
            self.assertBetween(result[key], 0.0, 1.0)
        self.assertLen(result["history"]["val_loss"], 3)
        # TensorBoard and friends see LearnDrop's logs through History.
        self.assertEqual(result["history"]["ld_frozen_units"], [2, 2, 2])
        self.assertEqual(result["data"]["train_samples"], 64)
        self.assertEqual(result["config"]["schedule"], SCHEDULE)

        with open(os.path.join(self.output_dir, "learndrop.json")) as file:
            self.assertEqual(json.load(file), result)

    def test_baseline_runs_the_whole_model_every_epoch(self):
        result = train.run(**TINY, learn_drop=False, validation_split=0.0)

        self.assertEqual(result["run"], "baseline")
        self.assertIsNone(result["learn_drop"])
        self.assertEqual(result["frozen_after_epoch"], {})
        self.assertEqual(
            result["forward_flops"], result["baseline_forward_flops"]
        )
        self.assertEqual(result["flops_reduction"], 0.0)
        self.assertNotIn("ld_frozen_units", result["history"])
        # Without validation samples, fit runs without validation.
        self.assertEqual(result["data"]["val_samples"], 0)
        self.assertIsNone(result["val_accuracy"])
        self.assertBetween(result["train_accuracy"], 0.0, 1.0)
        self.assertIn("val accuracy -", train.summary_lines(result)[0])

    @parameterized.named_parameters(
        ("detected", "detect", "stem_forward"),
        ("declared", "true", "stem_forward"),
        ("declared_fixed", "false", "replay"),
    )
    def test_learn_drop_finds_the_augmentation(self, augmented_inputs, mode):
        result = train.run(
            **TINY,
            augment=True,
            augmented_inputs=augmented_inputs,
            policy="fixed",
            schedule=SCHEDULE,
        )

        # With augmented_views=0, a frozen stem on random inputs runs
        # forward every epoch instead of caching one stale view.
        report = result["learn_drop"]
        self.assertEqual(
            [e["mode"] for e in report["epochs"]],
            ["full", "stem_forward" if mode == "stem_forward" else "fill"]
            + [mode],
        )
        self.assertEqual([e["samples"] for e in report["epochs"]], [64] * 3)
        self.assertTrue(result["config"]["augment"])
        found = [n for n in report["notes"] if "random training inputs in" in n]
        self.assertLen(found, int(augmented_inputs == "detect"))

    def test_numpy_input_trains_on_every_sample(self):
        result = train.run(
            **TINY,
            input_pipeline="numpy",
            policy="fixed",
            schedule=SCHEDULE,
            lr_schedule="step",
        )

        report = result["learn_drop"]
        self.assertEqual([e["samples"] for e in report["epochs"]], [64] * 3)
        self.assertEqual(result["frozen_after_epoch"], FROZEN)

    def test_unknown_setting_is_refused(self):
        with self.assertRaisesRegex(TypeError, "learning_rat"):
            train.run(**TINY, learning_rat=0.1)
        with self.assertRaisesRegex(ValueError, "optimizer='lamb'"):
            train.run(**TINY, optimizer="lamb")


class OptimizerTest(parameterized.TestCase):
    @parameterized.parameters(
        ("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW")
    )
    def test_optimizer_flag_picks_the_class(self, name, class_name):
        config = train_flags.TrainConfig(optimizer=name, weight_decay=0.01)
        optimizer = train._optimizer(config, total_steps=100)
        self.assertEqual(type(optimizer).__name__, class_name)
        self.assertAlmostEqual(optimizer.weight_decay, 0.01)

    @parameterized.parameters(
        ("cosine", {0: 0.1, 50: 0.05, 100: 0.0}),
        # Divided by 10 after half and after three quarters of the steps.
        ("step", {0: 0.1, 50: 0.1, 51: 0.01, 75: 0.01, 76: 0.001}),
    )
    def test_lr_schedule_spans_all_steps(self, schedule, rates):
        config = train_flags.TrainConfig(
            learning_rate=0.1, lr_schedule=schedule
        )
        optimizer = train._optimizer(config, total_steps=100)
        for step, rate in rates.items():
            value = optimizer._learning_rate(step)
            self.assertAlmostEqual(float(value), rate, places=6)

    def test_constant_learning_rate(self):
        config = train_flags.TrainConfig(
            learning_rate=0.1, lr_schedule="constant"
        )
        optimizer = train._optimizer(config, total_steps=100)
        self.assertFalse(callable(optimizer._learning_rate))
        self.assertAlmostEqual(float(optimizer.learning_rate), 0.1)


class OpenEndedTest(tf.test.TestCase):
    def test_early_stopping_ends_the_run_and_reports_its_epochs(self):
        # A learning rate of 0 never improves val_loss after the first
        # epoch: patience 1 stops after epoch 2 of 5.
        result = train.run(
            **{**TINY, "epochs": 5},
            learn_drop=False,
            lr_schedule="constant",
            learning_rate=0.0,
            early_stopping_patience=1,
        )
        self.assertEqual(result["epochs_run"], 2)
        self.assertLen(result["epoch_seconds"], 2)
        # EarlyStopping gives back the first epoch's weights: the figures
        # are that epoch's.
        self.assertEqual(result["final_epoch"], 1)
        self.assertEqual(
            result["val_accuracy"], result["history"]["val_accuracy"][0]
        )

    def test_plateau_lowers_the_learning_rate(self):
        result = train.run(
            **{**TINY, "epochs": 4},
            learn_drop=False,
            lr_schedule="constant",
            learning_rate=1e-9,
            reduce_lr_patience=1,
            reduce_lr_factor=0.5,
        )
        rates = result["history"]["learning_rate"]
        self.assertLess(rates[-1], rates[0])

    def test_plateau_needs_a_constant_rate(self):
        with self.assertRaisesRegex(ValueError, "lr_schedule='constant'"):
            train.run(**TINY, reduce_lr_patience=2)


class OddBatchCrashTest(parameterized.TestCase):
    """The guard against TensorFlow 2.21's oneDNN crash (see train.py)."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(
            train, "_ONEDNN_ODD_BATCH_CRASH", (tf.__version__,)
        )
        patcher.start()
        self.addCleanup(patcher.stop)

    @parameterized.named_parameters(
        ("odd_last_batch", 0.5, 81, 64, True),
        ("odd_batch_size", 0.5, 98, 49, True),
        ("even_batches", 0.5, 80, 16, False),
        ("sixteen_channels", 1.0, 81, 64, False),
    )
    def test_refuses_only_the_crashing_setup(
        self, width, samples, batch_size, refused
    ):
        model = models.build_model("resnet20", (8, 8, 1), 10, width=width)
        with mock.patch.dict(os.environ, {"TF_ENABLE_ONEDNN_OPTS": "1"}):
            if refused:
                with self.assertRaisesRegex(ValueError, "stage2_block1_proj"):
                    train._check_odd_batch_crash(model, samples, batch_size)
            else:
                train._check_odd_batch_crash(model, samples, batch_size)

    def test_onednn_off_is_allowed(self):
        model = models.build_model("resnet20", (8, 8, 1), 10, width=0.5)
        with mock.patch.dict(os.environ, {"TF_ENABLE_ONEDNN_OPTS": "0"}):
            train._check_odd_batch_crash(model, 81, 64)


class ParseScheduleTest(parameterized.TestCase):
    def test_docstring_examples(self):
        result = doctest.testmod(train_flags)
        self.assertGreater(result.attempted, 0)
        self.assertEqual(result.failed, 0)

    def test_parses_pairs(self):
        self.assertEqual(train_flags.parse_schedule("2:3, 4:6"), {2: 3, 4: 6})
        self.assertIsNone(train_flags.parse_schedule(""))

    @parameterized.parameters("2", "2:x", "2:3;4:5", ":3")
    def test_refuses_malformed_plans(self, text):
        with self.assertRaisesRegex(ValueError, "'evaluation:units'"):
            train_flags.parse_schedule(text)


class PolicyFlagsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("default", "default", "", "LearnDropScores",
         {"threshold": 0.25, "last_unit_threshold": 0.02}),
        ("default_changed", "default", "patience=3", "LearnDropScores",
         {"patience": 3, "last_unit_threshold": 0.02}),
        ("schedule_or_drift", "schedule_or_drift", "pretrained_drift=0.1",
         "ScheduleOrDrift", {"pretrained_drift": 0.1,
                             "freeze_augmented": False}),
        ("drift", "drift", "threshold=0.02", "FeatureDrift",
         {"threshold": 0.02}),
        ("scores", "scores", "", "LearnDropScores",
         {"threshold": 0.25, "last_unit_threshold": None}),
        ("aggressive", "aggressive", "", "LearnDropScores",
         {"threshold": 0.7, "last_unit_threshold": None}),
        (
            "consistency",
            "consistency",
            "threshold=0.4,samples_per_epoch=4",
            "DirectionConsistency",
            {"threshold": 0.4, "samples_per_epoch": 4},
        ),
        ("autofreeze", "autofreeze", "max_new_units=2", "AutoFreezeRule",
         {"max_new_units": 2}),
        ("freezeout", "freezeout", "t0=0.5", "FreezeOut", {"t0": 0.5}),
    )  # fmt: skip
    def test_policy_and_its_arguments_take_effect(
        self, name, args, class_name, expected
    ):
        config = train_flags.TrainConfig(policy=name, policy_args=args)

        made = train_flags.make_policy(config)

        self.assertEqual(type(made).__name__, class_name)
        for key, value in expected.items():
            self.assertEqual(made.get_config()[key], value)

    def test_fixed_takes_the_schedule(self):
        made = train_flags.make_policy(
            train_flags.TrainConfig(policy="fixed", schedule="2:3")
        )

        self.assertEqual(made.schedule, {2: 3})

    @parameterized.named_parameters(
        ("unknown_argument", dict(policy="freezeout", policy_args="x=1"),
         "do not fit policy 'freezeout'"),
        ("bad_value", dict(policy="scores", policy_args="threshold=-1"),
         "threshold=-1"),
        ("schedule_elsewhere", dict(policy="scores", schedule="1:2"),
         "only of it"),
        ("malformed", dict(policy="scores", policy_args="threshold"),
         "'name=value'"),
        ("unknown_policy", dict(policy="magic"), "one of default, scores"),
    )  # fmt: skip
    def test_bad_policy_flags_are_refused(self, fields, message):
        with self.assertRaisesRegex(ValueError, message):
            train_flags.make_policy(train_flags.TrainConfig(**fields))


class FineTuningTest(tf.test.TestCase):
    def test_classes_are_selected_and_relabelled(self):
        data = train.load_data(
            train_flags.TrainConfig(
                dataset="digits", classes="7-9", image_size=0
            )
        )

        self.assertEqual(data.num_classes, 3)
        self.assertEqual(sorted(set(data.y_train.tolist())), [0, 1, 2])
        self.assertEqual(len(data.class_names), 3)

    def test_bad_classes_are_refused(self):
        with self.assertRaisesRegex(ValueError, "distinct labels in"):
            train.load_data(
                train_flags.TrainConfig(dataset="digits", classes="9-10")
            )
        with self.assertRaisesRegex(ValueError, "'0-4' or '5,7,9'"):
            train.parse_classes("a-b")

    def test_init_weights_load_all_but_the_classifier(self):
        # A folder that does not exist yet is made.
        path = os.path.join(self.get_temp_dir(), "new", "pre.weights.h5")
        first = train.run(**TINY, learn_drop=False, save_weights=path)
        del first
        model = models.build_model("small_cnn", (8, 8, 1), 10, width=0.25)
        saved = models.build_model("small_cnn", (8, 8, 1), 10, width=0.25)
        saved.load_weights(path)

        kept = train.load_matching_weights(model, path)

        self.assertEqual(kept, [model.layers[-1].name])
        for layer, source in zip(model.layers[:-1], saved.layers[:-1]):
            for got, want in zip(layer.get_weights(), source.get_weights()):
                self.assertAllEqual(got, want)
        self.assertNotAllClose(
            model.layers[-1].get_weights()[0],
            saved.layers[-1].get_weights()[0],
        )

    def test_missing_init_weights_file_says_how_to_make_one(self):
        model = models.build_model("small_cnn", (8, 8, 1), 10, width=0.25)
        with self.assertRaisesRegex(FileNotFoundError, "save_weights"):
            train.load_matching_weights(model, "/nonexistent.weights.h5")


class MainTest(tf.test.TestCase):
    def test_main_trains_from_flags_and_writes_the_result(self):
        output_dir = self.get_temp_dir()
        stdout = io.StringIO()
        with flagsaver.flagsaver(
            **TINY,
            policy="fixed",
            schedule=SCHEDULE,
            output_dir=output_dir,
            learn_drop=True,
        ):
            with redirect_stdout(stdout):
                train.main(["train.py"])

        self.assertIn(
            "units frozen (after epoch): stage1_conv1: 1, stage1_conv2: 1",
            stdout.getvalue(),
        )

        with open(os.path.join(output_dir, "learndrop.json")) as file:
            result = json.load(file)
        self.assertEqual(result["config"]["model"], "small_cnn")
        self.assertEqual(result["config"]["max_train"], 64)
        self.assertEqual(result["frozen_after_epoch"], FROZEN)


if __name__ == "__main__":
    tf.test.main()
