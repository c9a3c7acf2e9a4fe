"""Smoke test of the XLA benchmark on a tiny model."""

from absl.testing import flagsaver

from benchmarks import jit_benchmark
from keras_learndrop.backend import tf

jit_benchmark.define_flags()


class JitBenchmarkTest(tf.test.TestCase):
    def test_times_both_steps_with_and_without_xla(self):
        with flagsaver.flagsaver(
            model="small_cnn",
            cut_units=2,
            image_size=8,
            batch_size=8,
            steps=2,
        ):
            jit_benchmark.FLAGS.mark_as_parsed()
            jit_benchmark.main([])
        seconds = jit_benchmark.run("small_cnn", 2, 8, 8, 2)
        self.assertEqual(
            sorted(seconds),
            [
                ("replay", False),
                ("replay", True),
                ("stem_forward", False),
                ("stem_forward", True),
            ],
        )
        self.assertTrue(all(s > 0 for s in seconds.values()))


if __name__ == "__main__":
    tf.test.main()
