"""Tests of the online-training runner on a slice of the digits."""

import json
import os
from unittest import mock

from absl.testing import flagsaver

from examples import online
from examples import train
from examples import train_flags
from keras_learndrop.backend import tf

online.define_flags()

# small_cnn (5 units) on 128 digits at 8x8, in 2 chunks of 64.
TINY = dict(
    model="small_cnn",
    width=0.25,
    dataset="digits",
    image_size=None,
    max_train=128,
    max_val=32,
    epochs=3,
    batch_size=32,
    verbose=0,
)


class OnlineTest(tf.test.TestCase):
    def test_later_chunks_start_frozen_and_fill_from_their_own_data(self):
        records = online.run(chunks=2, policy="fixed", schedule="2:2", **TINY)

        self.assertEqual(records[0]["modes"], ["full", "full", "fill"])
        self.assertEqual(records[1]["modes"], ["fill", "replay", "replay"])
        self.assertEqual(records[1]["frozen_units"], 2)
        self.assertGreater(records[1]["val_accuracy"], 0.1)

    def test_every_setting_reaches_train_py_builders(self):
        # Online builds its data, model, optimizer, inputs and callback with
        # train.py's own functions, each given the whole configuration: a
        # flag means here what it means for examples.train.
        config = train_flags.TrainConfig(**TINY, policy="fixed", schedule="1:1")
        wrapped = {
            name: mock.patch.object(train, name, wraps=getattr(train, name))
            for name in (
                "load_data",
                "build_model",
                "learn_drop_callback",
                "fit_inputs",
            )
        }
        mocks = {name: patcher.start() for name, patcher in wrapped.items()}
        try:
            online.run(config, chunks=2)
        finally:
            for patcher in wrapped.values():
                patcher.stop()

        self.assertEqual(mocks["load_data"].call_args.args[0], config)
        self.assertEqual(mocks["build_model"].call_args.args[0], config)
        self.assertEqual(mocks["learn_drop_callback"].call_args.args[0], config)
        self.assertEqual(
            mocks["learn_drop_callback"].call_args.kwargs,
            {"keep_frozen": True},
        )
        self.assertEqual(mocks["fit_inputs"].call_count, 2)
        for call in mocks["fit_inputs"].call_args_list:
            self.assertEqual(call.args[1], config)

    def test_a_learn_drop_flag_takes_effect(self):
        records = online.run(
            chunks=2, policy="fixed", schedule="1:2", cache="off", **TINY
        )

        self.assertEqual(
            records[1]["modes"],
            ["stem_forward", "stem_forward", "stem_forward"],
        )

    def test_training_without_learn_drop_is_refused(self):
        with self.assertRaisesRegex(ValueError, "learn_drop=False"):
            online.run(chunks=2, learn_drop=False, **TINY)

    def test_main_through_flags(self):
        output_dir = self.get_temp_dir()
        with flagsaver.flagsaver(
            **{**TINY, "epochs": 2}, chunks=2, output_dir=output_dir
        ):
            online.FLAGS.mark_as_parsed()
            online.main([])
        with open(os.path.join(output_dir, online.JSON_NAME)) as file:
            written = json.load(file)
        self.assertLen(written["chunks"], 2)
        self.assertEqual(written["config"]["max_train"], 128)
        # Two epochs per chunk, each recorded.
        self.assertLen(written["chunks"][1]["modes"], 2)


if __name__ == "__main__":
    tf.test.main()
