"""Tests of the stem feature cache: views, replay order, growth, budget."""

import numpy as np
from absl.testing import parameterized

from keras_learndrop import stem_cache
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


def _filled_cache(n=10, batch=4, dtype="float32", budget=10**9, views=1):
    cache = stem_cache.StemCache(dtype, budget, "/CPU:0")
    rng = np.random.default_rng(0)
    features = rng.random((n, 3, 2)).astype("float32")
    y = np.arange(n)
    for _ in range(views):
        for start in range(0, n, batch):
            cache.add(
                tf.constant(features[start : start + batch]),
                tf.constant(y[start : start + batch]),
                None,
            )
        cache.finish_view()
    return cache, features, y


class StemCacheTest(parameterized.TestCase, tf.test.TestCase):
    def test_view_holds_every_batch_in_order(self):
        cache, features, y = _filled_cache()
        view = cache.views[0]
        self.assertAllEqual(view.features, features)
        self.assertAllEqual(view.y, y)
        self.assertIsNone(view.sample_weight)
        self.assertEqual(cache.num_samples, 10)
        self.assertEqual(cache.batch_size, 4)
        self.assertEqual(cache.nbytes, 10 * 6 * 4 + 10 * 8)

    def test_each_sample_once_per_epoch_in_a_new_order(self):
        cache, _, _ = _filled_cache(n=10, batch=4)
        strategy = tf.distribute.get_strategy()
        orders = []
        for epoch in range(3):
            batches = list(cache.index_batches(epoch, 5, strategy))
            self.assertEqual([len(b) for b in batches], [4, 4, 2])
            order = np.concatenate([b.numpy() for b in batches])
            self.assertAllEqual(np.sort(order), np.arange(10))
            orders.append(order)
        self.assertNotAllEqual(orders[0], orders[1])
        self.assertNotAllEqual(orders[1], orders[2])
        again = np.concatenate(
            [b.numpy() for b in cache.index_batches(1, 5, strategy)]
        )
        self.assertAllEqual(again, orders[1])
        other_seed = np.concatenate(
            [b.numpy() for b in cache.index_batches(1, 6, strategy)]
        )
        self.assertNotAllEqual(other_seed, orders[1])

    def test_views_take_turns(self):
        cache, _, _ = _filled_cache(views=3)
        self.assertIs(cache.view_for_epoch(4), cache.views[1])
        self.assertIs(cache.view_for_epoch(6), cache.views[0])

    @parameterized.named_parameters(
        ("float16", "float16", 2), ("bfloat16", "bfloat16", 2)
    )
    def test_low_precision_dtype(self, dtype, size):
        cache, features, _ = _filled_cache(dtype=dtype)
        self.assertEqual(cache.views[0].features.dtype, tf.as_dtype(dtype))
        self.assertEqual(cache.nbytes, 10 * 6 * size + 10 * 8)
        self.assertAllClose(
            tf.cast(cache.views[0].features, "float32"), features, atol=1e-2
        )

    def test_projected_size_is_refused_before_filling(self):
        cache = stem_cache.StemCache("float32", 1000, "/CPU:0")
        batch = tf.zeros((4, 10))  # 160 bytes, 50 batches -> 8000 bytes
        with self.assertRaisesRegex(
            stem_cache.CacheBudgetExceeded, "budget of 0.0 MiB"
        ):
            cache.add(batch, None, None, expected_batches=50)
        self.assertEqual(cache.nbytes, 0)

    def test_unknown_length_is_refused_when_it_outgrows_the_budget(self):
        cache = stem_cache.StemCache("float32", 500, "/CPU:0")
        for _ in range(3):
            cache.add(tf.zeros((4, 10)), None, None)
        with self.assertRaises(stem_cache.CacheBudgetExceeded):
            cache.add(tf.zeros((4, 10)), None, None)
        self.assertEqual(cache.nbytes, 480)

    def test_views_count_against_the_budget(self):
        cache = stem_cache.StemCache("float32", 1000, "/CPU:0")
        with self.assertRaises(stem_cache.CacheBudgetExceeded):
            cache.add(
                tf.zeros((4, 10)), None, None, expected_batches=3, views=3
            )

    def test_discarded_fill_leaves_no_view(self):
        cache = stem_cache.StemCache("float32", 10**6, "/CPU:0")
        cache.add(tf.zeros((4, 2)), None, None)
        cache.discard_pending()
        self.assertEqual(cache.nbytes, 0)
        with self.assertRaisesRegex(ValueError, "No batches"):
            cache.finish_view()

    def test_extend_equals_running_the_new_units_on_every_sample(self):
        cache, features, y = _filled_cache(n=10, views=2)
        cache.extend(lambda f: tf.reduce_sum(f, axis=-1) * 2.0, 3)
        for view in cache.views:
            self.assertAllClose(view.features, features.sum(-1) * 2.0)
            self.assertAllEqual(view.y, y)

    def test_extend_that_outgrows_the_budget_is_refused(self):
        cache, _, _ = _filled_cache(n=10, budget=400)
        with self.assertRaises(stem_cache.CacheBudgetExceeded):
            cache.extend(lambda f: tf.tile(f, [1, 10, 1]), 4)

    def test_moving_to_another_device_keeps_the_contents(self):
        cache, features, _ = _filled_cache()
        cache.add(tf.ones((2, 3, 2)), tf.constant([1, 2]), None)
        cache._move_to("/CPU:0")
        self.assertAllEqual(cache.views[0].features, features)
        self.assertEqual(cache.device, "/CPU:0")
        self.assertLen(cache._pending, 1)

    def test_default_budget_and_device(self):
        self.assertGreater(stem_cache.default_memory_budget(), 2**20)
        self.assertEqual(stem_cache.default_device(), "/CPU:0")


class StochasticLayersTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("flip", keras.layers.RandomFlip(), True),
        ("crop", keras.layers.RandomCrop(4, 4), True),
        ("translation", keras.layers.RandomTranslation(0.1, 0.1), True),
        ("rotation", keras.layers.RandomRotation(0.1), True),
        ("dropout", keras.layers.Dropout(0.5), True),
        ("noise", keras.layers.GaussianNoise(0.1), True),
        ("conv", keras.layers.Conv2D(2, 3), False),
        ("batchnorm", keras.layers.BatchNormalization(), False),
        ("rescaling", keras.layers.Rescaling(1 / 255), False),
    )
    def test_random_layers_are_detected(self, layer, stochastic):
        found = stem_cache.stochastic_layers([layer])
        self.assertEqual(bool(found), stochastic)


if __name__ == "__main__":
    tf.test.main()
