"""Tests of the rebuilt training step: replay equals the frozen full model."""

import numpy as np

from keras_learndrop import graph
from keras_learndrop import train_step
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from tests import tiny_models


def _frozen_model(stem, seed=0):
    model = tiny_models.compile_model(tiny_models.conv_net(seed=seed))
    chain = graph.UnitChain(model)
    for layer in chain.layers_of(0, stem):
        layer.trainable = False
    return model, chain


def _head_weights(model):
    return [w.numpy() for w in model.trainable_weights]


class HeadStepTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1)
        self.x, self.y = tiny_models.data(16)
        self.w = np.linspace(0.5, 2.0, 16).astype("float32")

    def test_stem_features_equal_the_stem_of_the_model(self):
        model, chain = _frozen_model(2)
        step = train_step.HeadStep(model, chain, 2, jit_compile=False)
        features = step.stem_features(self.x)
        stem = keras.Model(model.inputs, model.get_layer("pool2").output)
        self.assertAllClose(features, stem(self.x, training=False))

    def _replay_and_keras(self, stem, sample_weight):
        keras_model, chain = _frozen_model(stem)
        keras_logs = keras_model.train_on_batch(
            self.x, self.y, sample_weight=sample_weight, return_dict=True
        )
        model, chain = _frozen_model(stem)
        step = train_step.HeadStep(model, chain, stem, jit_compile=False)
        features = step.stem_features(self.x)
        order = tf.constant(np.arange(16), tf.int32)
        logs = step.replay_step(
            features,
            tf.constant(self.y),
            None if sample_weight is None else tf.constant(sample_weight),
            order,
        )
        logs = {k: float(v) for k, v in logs.items()}
        return keras_model, keras_logs, model, logs

    def test_replay_step_equals_keras_step_with_the_stem_frozen(self):
        for stem in (1, 2, 3):
            for sample_weight in (None, self.w):
                keras_model, keras_logs, model, logs = self._replay_and_keras(
                    stem, sample_weight
                )
                self.assertAllClose(keras_logs["loss"], logs["loss"])
                self.assertAllClose(keras_logs["accuracy"], logs["accuracy"])
                for a, b in zip(
                    _head_weights(keras_model), _head_weights(model)
                ):
                    self.assertAllClose(a, b, atol=1e-6)
                self.assertEqual(
                    int(keras_model.optimizer.iterations),
                    int(model.optimizer.iterations),
                )

    def test_sample_weights_change_the_replayed_loss(self):
        _, _, _, plain = self._replay_and_keras(2, None)
        _, _, _, weighted = self._replay_and_keras(2, self.w)
        self.assertNotAllClose(plain["loss"], weighted["loss"])

    def test_stem_step_trains_only_the_head(self):
        model, chain = _frozen_model(2)
        stem_before = [w.numpy() for w in chain.layers_of(0, 2)[0].weights]
        head_before = _head_weights(model)
        step = train_step.HeadStep(model, chain, 2, jit_compile=False)
        logs, (features, y, _) = step.stem_step((self.x, self.y))
        self.assertIn("loss", logs)
        self.assertAllClose(features, step.stem_features(self.x))
        stem_after = [w.numpy() for w in chain.layers_of(0, 2)[0].weights]
        for a, b in zip(stem_before, stem_after):
            self.assertAllEqual(a, b)
        changed = [
            not np.array_equal(a, b)
            for a, b in zip(head_before, _head_weights(model))
        ]
        self.assertTrue(all(changed))

    def test_xlacompiled_replay_matches_the_uncompiled_one(self):
        results = []
        for jit in (False, True):
            model, chain = _frozen_model(2)
            step = train_step.HeadStep(model, chain, 2, jit_compile=jit)
            features = step.stem_features(self.x)
            logs = step.replay_step(
                features, tf.constant(self.y), None, tf.range(16)
            )
            results.append(float(logs["loss"]))
        self.assertAllClose(results[0], results[1], atol=1e-5)

    def test_each_step_traces_once_for_every_batch_size(self):
        # A growth builds new steps; an epoch's smaller last batch must
        # not trace them a second time.
        model, chain = _frozen_model(2)
        step = train_step.HeadStep(model, chain, 2, jit_compile=False)
        features = step.stem_features(self.x)
        y = tf.constant(self.y)
        names = (
            "replay_step",
            "eval_replay_step",
            "stem_step",
            "eval_stem_step",
        )
        counts = []
        for size in (10, 6):
            indices = tf.range(16 - size, 16)
            step.replay_step(features, y, None, indices)
            step.eval_replay_step(
                tf.gather(features, indices), tf.gather(y, indices), None
            )
            batch = (tf.constant(self.x[:size]), y[:size])
            step.stem_step(batch)
            step.eval_stem_step(batch)
            counts.append([getattr(step, n).tracing_count() for n in names])
        # (The first call may trace twice where it creates the optimizer's
        # slots, as any `tf.function` does.)
        self.assertEqual(counts[0], counts[1])

    def test_one_trace_for_every_batch_size_computes_as_two(self):
        def loss_after(step_of):
            model, chain = _frozen_model(2)
            step = train_step.HeadStep(model, chain, 2, jit_compile=False)
            features = step.stem_features(self.x)
            for indices in (tf.range(0, 10), tf.range(10, 16)):
                logs = step_of(step)(
                    features, tf.constant(self.y), None, indices
                )
            return float(logs["loss"]), _head_weights(model)

        one_trace = loss_after(lambda step: step.replay_step)
        per_shape = loss_after(lambda step: step.replay_step.function)
        self.assertAllClose(one_trace[0], per_shape[0])
        for a, b in zip(one_trace[1], per_shape[1]):
            self.assertAllClose(a, b)


class TrainFunctionTest(tf.test.TestCase):
    def test_stops_the_epoch_when_replay_batches_run_out(self):
        model, chain = _frozen_model(2)
        function = train_step.TrainFunction(model, on_batch=None)
        function.step = train_step.HeadStep(model, chain, 2, False)
        x, y = tiny_models.data(10)
        features = function.step.stem_features(x)
        view = type("View", (), {})()
        view.features, view.y, view.sample_weight = features, y, None
        batches = iter([tf.range(0, 4), tf.range(4, 8), tf.range(8, 10)])
        function.begin_epoch("replay", view, batches)
        for _ in range(3):
            function(iterator=None)
        with self.assertRaises(StopIteration):
            function(iterator=None)
        self.assertEqual(function.samples, 10)
        self.assertEqual(function.steps, 3)

    def test_a_stale_function_hands_back_to_keras(self):
        model, chain = _frozen_model(0)
        function = train_step.TrainFunction(model, on_batch=None)
        function.active = False
        model.train_function = function
        x, y = tiny_models.data(8)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        logs = function(iter(dataset))
        self.assertIn("loss", logs)
        self.assertIsNot(model.train_function, function)

    def test_unknown_mode_is_refused(self):
        model, _ = _frozen_model(0)
        function = train_step.TrainFunction(model, on_batch=None)
        with self.assertRaisesRegex(ValueError, "Unknown epoch mode"):
            function.begin_epoch("fast")

    def test_jit_auto_is_off_on_cpu(self):
        self.assertFalse(train_step.resolve_jit_compile("auto"))
        self.assertTrue(train_step.resolve_jit_compile(True))


if __name__ == "__main__":
    tf.test.main()
