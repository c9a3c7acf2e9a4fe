"""Tests of `input_randomness`: random ops in pipelines, PyDataset probes."""

import numpy as np
from absl.testing import parameterized

from keras_learndrop import input_randomness
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


def _images(n=8):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3), dtype=np.float32)
    y = np.arange(n) % 3
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n).batch(4)


def _flip(x, y):
    return tf.image.random_flip_left_right(x), y


def _mix(x, y):
    # MixUp: a Beta(0.2, 0.2) weight, a random partner in the batch.
    a = tf.random.gamma([], 0.2)
    b = tf.random.gamma([], 0.2)
    weight = a / (a + b)
    partner = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    mixed = weight * x + (1 - weight) * tf.gather(x, partner)
    labels = tf.one_hot(y, 3)
    return mixed, weight * labels + (1 - weight) * tf.gather(labels, partner)


def _prepare(x, y):
    x = tf.image.resize(x, (6, 6))
    return (tf.cast(x, "float32") - 0.5) / 0.25, y


class Flips(keras.utils.PyDataset):
    """Two batches of images, flipped at random on every read."""

    def __init__(self, random=True, **kwargs):
        super().__init__(**kwargs)
        self.random = random
        self.rng = np.random.default_rng(0)
        self.x = self.rng.random((8, 8, 8, 3), dtype=np.float32)
        self.reads = 0

    def __len__(self):
        return 2

    def __getitem__(self, index):
        self.reads += 1
        x = self.x[4 * index : 4 * index + 4]
        if self.random:
            flip = self.rng.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        return x, np.arange(4) % 3


class ScanDatasetTest(parameterized.TestCase, tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_tf_image_random_function(self):
        found = input_randomness.scan_dataset(_images().map(_flip))
        self.assertTrue(found.random)
        self.assertEqual(
            found.describe(), "`RandomUniform` in the `map` function `_flip`"
        )

    def test_keras_random_layer_in_a_map(self):
        flip = keras.layers.RandomFlip("horizontal", seed=1)
        found = input_randomness.scan_dataset(
            _images().map(lambda x, y: (flip(x, training=True), y))
        )
        self.assertTrue(found.random)
        self.assertEqual(
            found.describe(),
            "`StatelessRandomGetKeyCounter`, `StatelessRandomUniformV2` in "
            "the `map` function `lambda`",
        )

    def test_sequential_of_augmentation_layers_in_a_map(self):
        augmentation = keras.Sequential(
            [
                keras.layers.RandomFlip("horizontal"),
                keras.layers.RandomTranslation(0.1, 0.1),
                keras.layers.RandomZoom(0.1),
            ]
        )

        def augment(x, y):
            return augmentation(x, training=True), y

        found = input_randomness.scan_dataset(
            _images().map(augment, num_parallel_calls=2)
        )
        self.assertTrue(found.random)
        self.assertIn("the `map` function `augment`", found.describe())

    def test_mixing_in_a_map(self):
        found = input_randomness.scan_dataset(_images().map(_mix))
        self.assertTrue(found.random)
        self.assertEqual(
            found.describe(),
            "`RandomGamma`, `RandomShuffle` in the `map` function `_mix`",
        )

    def test_stateless_op_with_a_new_seed_each_epoch(self):
        generator = tf.random.Generator.from_seed(1)

        def augment(x, y):
            seed = generator.make_seeds(1)[:, 0]
            return tf.image.stateless_random_flip_left_right(x, seed), y

        found = input_randomness.scan_dataset(_images().map(augment))
        self.assertTrue(found.random)
        self.assertIn("`RngReadAndSkip`", found.describe())
        self.assertIn("`StatelessRandomUniformV2`", found.describe())

    def test_random_dataset_as_seeds(self):
        seeds = tf.data.Dataset.random(seed=3).batch(2)
        found = input_randomness.scan_dataset(
            tf.data.Dataset.zip((_images(), seeds)).map(
                lambda data, seed: (
                    tf.image.stateless_random_flip_left_right(data[0], seed),
                    data[1],
                )
            )
        )
        self.assertTrue(found.random)
        self.assertIn("`RandomDataset` in the pipeline", found.findings)

    def test_random_op_in_a_nested_function(self):
        @tf.function
        def jitter(x):
            return x + tf.random.normal(tf.shape(x), stddev=0.01)

        found = input_randomness.scan_dataset(
            _images().map(lambda x, y: (jitter(x), y))
        )
        self.assertTrue(found.random)
        self.assertEqual(
            found.describe(),
            "`RandomStandardNormal` in the `map` function `lambda`",
        )

    @parameterized.named_parameters(
        ("shuffle_and_batch", lambda d: d),
        ("resize_cast_normalize", lambda d: d.map(_prepare)),
        ("cache_and_prefetch", lambda d: d.cache().repeat(2).prefetch(1)),
    )
    def test_deterministic_pipeline(self, pipeline):
        found = input_randomness.scan_dataset(pipeline(_images()))
        self.assertIs(found.random, False)
        self.assertEqual(found.findings, ())

    def test_python_in_the_pipeline_cannot_be_read(self):
        found = input_randomness.scan_dataset(
            _images().map(
                lambda x, y: (tf.py_function(np.fliplr, [x], "float32"), y)
            )
        )
        self.assertIsNone(found.random)
        self.assertEqual(
            found.describe(), "`EagerPyFunc` in the `map` function `lambda`"
        )
        found = input_randomness.scan_dataset(
            tf.data.Dataset.from_generator(
                lambda: iter([np.zeros(2)]),
                output_signature=tf.TensorSpec((2,), "float64"),
            )
        )
        self.assertIsNone(found.random)
        self.assertIn("`GeneratorDataset`", found.describe())

    def test_a_random_op_wins_over_python(self):
        found = input_randomness.scan_dataset(
            _images()
            .map(lambda x, y: (tf.py_function(np.fliplr, [x], "float32"), y))
            .map(_flip)
        )
        self.assertTrue(found.random)

    def test_distributed_dataset_cannot_be_read(self):
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        found = input_randomness.scan_dataset(
            strategy.experimental_distribute_dataset(_images())
        )
        self.assertIsNone(found.random)
        self.assertIn("could not be read", found.describe())

    def test_the_scan_takes_milliseconds(self):
        found = input_randomness.scan_dataset(_images().map(_mix).map(_flip))
        self.assertLess(found.seconds, 0.5)

    def test_describe_names_three_findings(self):
        found = input_randomness.InputRandomness(
            True, "the pipeline", ("a", "b", "c", "d", "e")
        )
        self.assertEqual(found.describe(), "a, b, c and 2 more")


class ProbePyDatasetTest(tf.test.TestCase):
    def test_random_batches(self):
        flips = Flips()
        found = input_randomness.probe_py_dataset(flips)
        self.assertTrue(found.random)
        self.assertEqual(found.source, "the `PyDataset` `Flips`")
        self.assertEqual(flips.reads, 2)

    def test_fixed_batches(self):
        found = input_randomness.probe_py_dataset(Flips(random=False))
        self.assertIs(found.random, False)

    def test_a_failing_read_is_unknown(self):
        class Broken(keras.utils.PyDataset):
            def __len__(self):
                return 1

            def __getitem__(self, index):
                raise OSError("no such file")

        found = input_randomness.probe_py_dataset(Broken())
        self.assertIsNone(found.random)
        self.assertIn("OSError: no such file", found.describe())

    def test_batches_are_compared_leaf_by_leaf(self):
        same = input_randomness._same_batch
        x = np.arange(6.0).reshape(2, 3)
        self.assertTrue(same((x, {"a": None}), (x.copy(), {"a": None})))
        self.assertTrue(same((np.full(2, np.nan),), (np.full(2, np.nan),)))
        self.assertTrue(same((np.array(["a"]),), (np.array(["a"]),)))
        self.assertFalse(same((x,), (x + 1,)))
        self.assertFalse(same((x,), (x[:1],)))
        self.assertFalse(same((x,), (x, x)))
        self.assertFalse(same((x, None), (x, x)))


class InspectInputTest(tf.test.TestCase):
    def test_each_kind(self):
        inspect = input_randomness.inspect_input
        self.assertIs(inspect("arrays", None).random, False)
        self.assertTrue(inspect("tf_data", _images().map(_flip)).random)
        self.assertTrue(inspect("py_dataset", Flips()).random)
        self.assertIsNone(inspect("generator", None).random)
        other = inspect("other", object())
        self.assertIsNone(other.random)
        self.assertEqual(other.source, "the input (object)")


if __name__ == "__main__":
    tf.test.main()
