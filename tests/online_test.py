"""Smoke test of the online-training runner on digits."""

from absl.testing import flagsaver

import keras_learndrop
from examples import online
from keras_learndrop.backend import tf

online.define_flags()


class OnlineTest(tf.test.TestCase):
    def test_later_chunks_start_frozen_and_fill_from_their_own_data(self):
        records = online.run(
            model="small_cnn",
            width=0.25,
            chunks=2,
            epochs=3,
            batch_size=32,
            policy=keras_learndrop.FixedSchedule({2: 2}),
        )
        self.assertEqual(records[0]["modes"], ["full", "full", "fill"])
        self.assertEqual(records[1]["modes"], ["fill", "replay", "replay"])
        self.assertEqual(records[1]["frozen_units"], 2)
        self.assertGreater(records[1]["val_accuracy"], 0.1)

    def test_main_through_flags(self):
        with flagsaver.flagsaver(
            dataset="digits",
            model="small_cnn",
            width=0.25,
            chunks=2,
            epochs=2,
            batch_size=64,
        ):
            online.FLAGS.mark_as_parsed()
            online.main([])


if __name__ == "__main__":
    tf.test.main()
