"""Contract tests of `keras_internals`: one test per reliance on Keras.

Each test is named after the function of `keras_internals` it pins, so a
Keras release that changes one of them fails here by name, before the
callback's own tests fail in less obvious ways.
"""

import numpy as np
from absl.testing import parameterized

from keras_learndrop import keras_internals
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


def _data(samples=40):
    rng = np.random.default_rng(0)
    x = rng.random((samples, 6)).astype("float32")
    y = rng.integers(0, 2, samples)
    return x, y


def _dense_model():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


class OnTrainBegin(keras.callbacks.Callback):
    """Calls `function(callback)` in `on_train_begin`."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def on_train_begin(self, logs=None):
        self.function(self)


class OnEpochEnd(keras.callbacks.Callback):
    """Calls `function(logs)` in `on_epoch_end`."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def on_epoch_end(self, epoch, logs=None):
        self.function(logs)


class FitCallTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_fit_epoch_iterator(self):
        model = _dense_model()
        seen = {}

        def look(callback):
            seen["iterator"] = keras_internals.fit_epoch_iterator(model)
            seen["steps"] = callback.params["steps"]

        x, y = _data(40)
        model.fit(x, y, batch_size=8, callbacks=[OnTrainBegin(look)], verbose=0)

        self.assertIsNotNone(seen["iterator"])
        self.assertEqual(seen["iterator"].num_batches, seen["steps"])
        self.assertEqual(seen["steps"], 5)
        self.assertIsNone(keras_internals.fit_epoch_iterator(model))

    @parameterized.named_parameters(
        ("whole_data", None, 5),
        ("steps_per_epoch", 2, 5),
    )
    def test_data_batches(self, steps_per_epoch, batches):
        model = _dense_model()
        seen = {}

        def look(callback):
            iterator = keras_internals.fit_epoch_iterator(model)
            seen["batches"] = keras_internals.data_batches(iterator)

        dataset = tf.data.Dataset.from_tensor_slices(_data(40)).batch(8)
        model.fit(
            dataset.repeat() if steps_per_epoch else dataset,
            steps_per_epoch=steps_per_epoch,
            callbacks=[OnTrainBegin(look)],
            verbose=0,
        )
        # A repeated dataset has no end: its batches are unknown.
        self.assertEqual(seen["batches"], None if steps_per_epoch else batches)

    def test_data_batches_of_unknown_length(self):
        model = _dense_model()
        seen = {}

        def look(callback):
            iterator = keras_internals.fit_epoch_iterator(model)
            seen["batches"] = keras_internals.data_batches(iterator)

        dataset = (
            tf.data.Dataset.from_tensor_slices(_data(40))
            .filter(lambda x, y: True)
            .batch(8)
        )
        model.fit(dataset, callbacks=[OnTrainBegin(look)], verbose=0)
        self.assertIsNone(seen["batches"])

    def test_fit_input(self):
        x, y = _data(40)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return 5

            def __getitem__(self, index):
                return x[8 * index : 8 * index + 8], y[
                    8 * index : 8 * index + 8
                ]

        def generator():
            for i in range(5):
                yield x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8]

        py_dataset = Batches()
        seen = {}
        for name, data in (
            ("arrays", (x, y)),
            ("tf_data", (dataset,)),
            ("py_dataset", (py_dataset,)),
            ("generator", (generator(),)),
        ):
            model = _dense_model()

            def look(callback, name=name, model=model):
                iterator = keras_internals.fit_epoch_iterator(model)
                seen[name] = keras_internals.fit_input(iterator)

            model.fit(
                *data, batch_size=8, callbacks=[OnTrainBegin(look)], verbose=0
            )

        self.assertEqual(seen["arrays"], ("arrays", None))
        self.assertEqual(seen["tf_data"], ("tf_data", dataset))
        self.assertEqual(seen["py_dataset"], ("py_dataset", py_dataset))
        self.assertEqual(seen["generator"], ("generator", None))

    def test_dataset_functions(self):
        def augment(x):
            return tf.image.random_flip_left_right(x)

        images = tf.data.Dataset.from_tensor_slices(np.zeros((4, 2, 2, 1)))
        dataset = tf.data.Dataset.zip(
            (images.shuffle(4).map(augment), tf.data.Dataset.random(1))
        ).prefetch(1)
        pipeline = keras_internals.dataset_functions(dataset)

        self.assertEqual(
            [kind for kind, _ in pipeline],
            [
                "PrefetchDataset",
                "ZipDataset",
                "MapDataset",
                "ShuffleDataset",
                "TensorSliceDataset",
                "RandomDataset",
            ],
        )
        ((name, graph_def),) = pipeline[2][1]
        self.assertStartsWith(name, "__inference_Dataset_map_augment_")
        self.assertIn("RandomUniform", [n.op for n in graph_def.node])
        self.assertEqual([f for _, f in pipeline if f], [pipeline[2][1]])
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with self.assertRaises(TypeError):
            keras_internals.dataset_functions(
                strategy.experimental_distribute_dataset(dataset.batch(2))
            )

    def test_pause_fit_input(self):
        model = _dense_model()
        batches = []

        def take_one(iterator):
            # One batch per step, as Keras's own step takes.
            batches[-1] += next(iterator, None) is not None
            return {}

        class Pause(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.iterator = keras_internals.fit_epoch_iterator(model)
                keras_internals.install_train_function(model, take_one)

            def on_epoch_begin(self, epoch, logs=None):
                batches.append(0)
                keras_internals.pause_fit_input(self.iterator, epoch == 1)

        x, y = _data(40)
        model.fit(x, y, batch_size=8, epochs=3, callbacks=[Pause()], verbose=0)

        # Paused, the steps of epoch 1 get an empty iterator; after it,
        # fit's own input is back.
        self.assertEqual(batches, [5, 0, 5])

    def test_symbolic_build(self):
        model = keras.Sequential(
            [keras.layers.Dense(4), keras.layers.Dense(2, activation="softmax")]
        )
        model.compile("sgd", "sparse_categorical_crossentropy")
        seen = {}

        def build(callback):
            seen["built_before"] = model.built
            iterator = keras_internals.fit_epoch_iterator(model)
            keras_internals.symbolic_build(model, iterator)
            seen["graph"] = keras_internals.functional_graph(model)

        x, y = _data(40)
        history = model.fit(
            x, y, batch_size=8, callbacks=[OnTrainBegin(build)], verbose=0
        )
        self.assertFalse(seen["built_before"])
        self.assertIsNotNone(seen["graph"])
        self.assertEqual(tuple(seen["graph"].inputs[0].shape)[1:], (6,))
        self.assertLen(history.history["loss"], 1)

    def test_install_train_function(self):
        model = _dense_model()
        calls = []
        seen = {}

        def install(callback):
            # `fit` made its own function before `on_train_begin`.
            keras_function = model.train_function
            seen["keras_function"] = keras_function

            def counting(iterator):
                calls.append(1)
                return keras_function(iterator)

            keras_internals.install_train_function(model, counting)

        x, y = _data(40)
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[OnTrainBegin(install)],
            verbose=0,
        )
        self.assertIsNotNone(seen["keras_function"])
        self.assertLen(calls, 2 * 5)

    def test_fit_validation_iterator(self):
        model = _dense_model()
        seen = []
        x, y = _data(40)

        class Look(keras.callbacks.Callback):
            def on_test_begin(self, logs=None):
                seen.append(keras_internals.fit_validation_iterator(model))

            def on_epoch_end(self, epoch, logs=None):
                # A user's own evaluation inside fit is not fit's.
                model.evaluate(x, y, verbose=0, callbacks=[self])

        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            validation_data=(x[:16], y[:16]),
            callbacks=[Look()],
            verbose=0,
        )
        self.assertLen(seen, 2)
        self.assertIsNotNone(seen[0])
        self.assertEqual(seen[0].num_batches, 2)  # 16 samples in 8s
        self.assertIsNone(seen[1])
        self.assertIsNone(keras_internals.fit_validation_iterator(model))

    def test_install_test_function(self):
        model = _dense_model()
        calls = []
        x, y = _data(40)

        class Install(keras.callbacks.Callback):
            def on_test_begin(self, logs=None):
                self.previous = keras_internals.install_test_function(
                    model, self.counting
                )

            def counting(self, iterator):
                calls.append(1)
                return self.previous(iterator)

            def on_test_end(self, logs=None):
                keras_internals.install_test_function(model, self.previous)

        install = Install()
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            validation_data=(x[:16], y[:16]),
            callbacks=[install],
            verbose=0,
        )
        self.assertLen(calls, 2 * 2)
        self.assertIs(model.test_function, install.previous)

    @parameterized.named_parameters(
        ("arrays", False, True), ("dataset", True, False)
    )
    def test_repeats_leading_batches(self, as_dataset, repeats):
        x, y = _data(40)
        data = (x, y)
        if as_dataset:
            data = tf.data.Dataset.from_tensor_slices(data).batch(8)
        seen = {}

        class Look(keras.callbacks.Callback):
            def on_test_begin(self, logs=None):
                iterator = keras_internals.fit_validation_iterator(model)
                seen["repeats"] = keras_internals.repeats_leading_batches(
                    iterator
                )

        model = _dense_model()
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            validation_data=data,
            validation_steps=2,
            callbacks=[Look()],
            verbose=0,
        )
        self.assertEqual(seen["repeats"], repeats)

    def test_fit_callbacks(self):
        model = _dense_model()
        seen = {}

        def look(callback):
            seen["callbacks"] = keras_internals.fit_callbacks(model)
            seen["callback"] = callback

        x, y = _data(40)
        model.fit(x, y, batch_size=8, callbacks=[OnTrainBegin(look)], verbose=1)

        callbacks = seen["callbacks"]
        self.assertIsInstance(callbacks, keras.callbacks.CallbackList)
        # The user's callbacks, then those that `fit` adds.
        self.assertIs(callbacks.callbacks[0], seen["callback"])
        self.assertIsInstance(callbacks.callbacks[1], keras.callbacks.History)
        self.assertIsInstance(
            callbacks.callbacks[2], keras.callbacks.ProgbarLogger
        )
        self.assertIsNone(keras_internals.fit_callbacks(model))

    def test_filter_progress_logs(self):
        model = _dense_model()

        class Recorder(keras.callbacks.ProgbarLogger):
            def __init__(self):
                super().__init__()
                self.keys = []

            def on_epoch_end(self, epoch, logs=None):
                self.keys.append(sorted(logs))

        class Filter(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.restore = keras_internals.filter_progress_logs(
                    model, lambda key: key.startswith("hidden")
                )

            def on_epoch_end(self, epoch, logs=None):
                logs.update(hidden=1, shown=2)

            def on_train_end(self, logs=None):
                self.restore()

        logger = Recorder()
        seen = []
        after = OnEpochEnd(lambda logs: seen.append(sorted(logs)))

        x, y = _data(40)
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[Filter(), logger, after],
            verbose=0,
        )

        # The logger alone gets a copy without the hidden key.
        self.assertEqual(logger.keys, [["loss", "shown"]] * 2)
        self.assertEqual(seen, [["hidden", "loss", "shown"]] * 2)
        # Its own method is back: the class's.
        self.assertNotIn("on_epoch_end", vars(logger))
        # Outside a fit there is nothing to filter.
        keras_internals.filter_progress_logs(model, lambda key: True)()
        self.assertNotIn("on_epoch_end", vars(logger))


def _functional_with_ops():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="dense_a")(inputs)
    y = keras.layers.Dense(4, name="dense_b")(inputs)
    total = keras.layers.Add(name="add")([x, y])
    summed = keras.ops.sum(total, axis=-1, keepdims=True)
    return keras.Model(inputs, summed)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


class GraphTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_functional_graph(self):
        functional = _functional_with_ops()
        built = _dense_model()
        unbuilt = keras.Sequential([keras.layers.Dense(2)])

        self.assertIs(keras_internals.functional_graph(functional), functional)
        graph = keras_internals.functional_graph(built)
        self.assertEqual(tuple(graph.inputs[0].shape), (None, 6))
        self.assertEqual(tuple(graph.outputs[0].shape), (None, 2))
        self.assertIsNone(keras_internals.functional_graph(unbuilt))
        self.assertIsNone(keras_internals.functional_graph(Subclassed()))

    def test_graph_nodes(self):
        model = _functional_with_ops()

        nodes = keras_internals.graph_nodes(model)

        self.assertTrue(nodes[0].is_input)
        self.assertFalse(any(node.is_input for node in nodes[1:]))
        names = [node.operation.name for node in nodes[1:]]
        self.assertCountEqual(names[:2], ["dense_a", "dense_b"])
        self.assertEqual(names[2], "add")
        self.assertIsInstance(nodes[-1].operation, keras.Operation)
        produced = {id(t) for t in nodes[0].output_tensors}
        for node in nodes[1:]:
            # Topological: every input was produced by an earlier node.
            self.assertTrue(all(id(t) in produced for t in node.input_tensors))
            produced.update(id(t) for t in node.output_tensors)
        self.assertIn(id(model.outputs[0]), produced)

    def test_call_node(self):
        model = _functional_with_ops()
        node = keras_internals.graph_nodes(model)[-1]  # ops.sum(axis=-1)
        value = tf.ones((3, 4))

        result = keras_internals.call_node(
            node, {id(node.input_tensors[0]): value}
        )

        # The recorded keyword arguments (axis, keepdims) are kept.
        self.assertAllClose(result, 4 * np.ones((3, 1)))

    def test_run_through_graph(self):
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        outputs = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, outputs)
        shapes = []

        def record(operation, *args, **kwargs):
            result = operation.compute_output_spec(*args, **kwargs)
            shapes.append(tuple(result.shape))
            return result

        keras_internals.run_through_graph(
            model, [keras.KerasTensor((None, 8, 8, 3))], record
        )

        self.assertEqual(shapes, [(None, 8, 8, 4), (None, 4)])

    def test_flatten_layers(self):
        inner = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(4, name="inner_dense")],
            name="inner",
        )
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))

        names = [
            layer.name
            for layer in keras_internals.flatten_layers(
                model, include_self=False
            )
        ]

        self.assertIn("inner", names)
        self.assertIn("inner_dense", names)
        self.assertNotIn(model.name, names)
        self.assertIs(keras_internals.flatten_layers(model)[0], model)

    def test_created_trainable_variables(self):
        dense = keras.layers.Dense(3)
        dense.build((None, 2))
        norm = keras.layers.BatchNormalization()
        norm.build((None, 3))
        dense.trainable = False

        created = keras_internals.created_trainable_variables
        self.assertEqual(dense.trainable_weights, [])
        self.assertEqual(
            [v.path for v in created(dense)],
            [dense.kernel.path, dense.bias.path],
        )
        self.assertEqual(
            [v.path for v in created(norm)], [norm.gamma.path, norm.beta.path]
        )

    def test_seed_generators(self):
        for layer in (
            keras.layers.Dropout(0.5),
            keras.layers.RandomFlip(),
            keras.layers.GaussianNoise(0.1),
        ):
            self.assertNotEmpty(keras_internals.seed_generators(layer))
        self.assertEmpty(keras_internals.seed_generators(keras.layers.Dense(2)))

    def test_is_input_augmentation(self):
        for layer in (
            keras.layers.RandomFlip(),
            keras.layers.RandomCrop(4, 4),
            keras.layers.RandomTranslation(0.1, 0.1),
        ):
            self.assertTrue(keras_internals.is_input_augmentation(layer))
        for layer in (
            keras.layers.Dropout(0.5),
            keras.layers.SpatialDropout2D(0.5),
            keras.layers.GaussianNoise(0.1),
            keras.layers.Dense(2),
        ):
            self.assertFalse(keras_internals.is_input_augmentation(layer))


class TrainStepTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_clear_losses(self):
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(
            2, activity_regularizer=keras.regularizers.L2(1.0)
        )(inputs)
        model = keras.Model(inputs, outputs)
        # Called layer by layer, not through `Model.__call__`.
        model.layers[-1](tf.ones((2, 6)))
        self.assertNotEmpty(model.losses)

        keras_internals.clear_losses(model)

        self.assertEmpty(model.losses)

    def test_loss_tracker(self):
        model = _dense_model()
        x, y = _data(40)

        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)

        tracker = keras_internals.loss_tracker(model)
        self.assertIsInstance(tracker, keras.metrics.Mean)
        self.assertEqual(tracker.name, "loss")
        self.assertAllClose(tracker.result(), history.history["loss"][-1])

    def test_reduce_per_replica(self):
        strategy = tf.distribute.get_strategy()
        logs = strategy.run(lambda: {"loss": tf.constant(2.0)})

        reduced = keras_internals.reduce_per_replica(logs, strategy)

        self.assertAllClose(reduced["loss"], 2.0)

    def test_unscale_loss_for_distribution(self):
        # One replica: the loss is not scaled, so it comes back unchanged.
        loss = keras_internals.unscale_loss_for_distribution(tf.constant(3.0))
        self.assertAllClose(loss, 3.0)


if __name__ == "__main__":
    tf.test.main()
