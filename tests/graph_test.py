"""Tests for keras_learndrop.graph."""

import numpy as np
from absl.testing import parameterized

from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


def _names(layers):
    return [layer.name for layer in layers]


def _producer(tensor):
    """The layer (or model) whose call produced a `KerasTensor`."""
    return tensor._keras_history.operation


def _randomize_batchnorm(model):
    """Gives every BatchNorm non-trivial statistics, so skipping it shows."""
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape))
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=shape))
            layer.beta.assign(rng.normal(size=shape))


def _sequential_cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1.0 / 255, name="rescale"),
            keras.layers.Conv2D(4, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(8, 3, padding="same", name="conv2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.ReLU(name="relu2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Conv2D(8, 3, padding="same", name="conv3"),
            keras.layers.BatchNormalization(name="bn3"),
            keras.layers.ReLU(name="relu3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="fc"),
        ],
        name="cnn",
    )


def _residual_block(x, filters, stride, name):
    """conv-bn-relu-conv-bn plus a shortcut, then add and relu.

    The shortcut is the identity when shapes allow, else a strided 1x1
    conv with BatchNorm (a projection).
    """
    h = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", name=f"{name}_conv1"
    )(x)
    h = keras.layers.BatchNormalization(name=f"{name}_bn1")(h)
    h = keras.layers.ReLU(name=f"{name}_relu1")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn2")(h)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, name=f"{name}_proj"
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(
            shortcut
        )
    h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(h)


def _residual_backbone(inputs):
    """Stem and three residual blocks; returns the tensors at the cuts."""
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    stem = keras.layers.ReLU(name="stem_relu")(h)
    b1 = _residual_block(stem, 4, 1, "b1")  # identity shortcut
    b2 = _residual_block(b1, 8, 2, "b2")  # projection shortcut
    b3 = _residual_block(b2, 8, 1, "b3")  # identity shortcut
    return stem, b1, b2, b3


def _residual_net():
    """A functional ResNet-like model, and its tensors at the cuts."""
    inputs = keras.Input((8, 8, 3))
    stem, b1, b2, b3 = _residual_backbone(inputs)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")(b3)
    outputs = keras.layers.Dense(3, name="fc")(gap)
    model = keras.Model(inputs, outputs, name="resnet")
    return model, dict(input=inputs, stem=stem, b1=b1, b2=b2, gap=gap)


def _nested_net():
    """A functional residual backbone inside a Sequential."""
    inputs = keras.Input((8, 8, 3))
    backbone = keras.Model(inputs, _residual_backbone(inputs)[-1], name="bb")
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1.0 / 255, name="rescale"),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="fc"),
        ],
        name="nested",
    )


def _shared_dense_net():
    """`shared` is called at depth 1 and again at depth 4."""
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    h = keras.layers.Dense(4, name="first")(inputs)
    h = shared(h)
    h = keras.layers.Dense(4, name="mid1")(h)
    h = keras.layers.Dense(4, name="mid2")(h)
    h = shared(h)
    outputs = keras.layers.Dense(2, name="last")(h)
    return keras.Model(inputs, outputs)


def _shared_conv_net():
    """`shared` is called on the input and again after `mid`."""
    inputs = keras.Input((6, 6, 2))
    shared = keras.layers.Conv2D(2, 3, padding="same", name="shared")
    h = shared(inputs)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Conv2D(2, 3, padding="same", name="mid")(h)
    h = shared(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(2, name="last")(h)
    return keras.Model(inputs, outputs)


# Layer names of the units of keras.applications.VGG16 (pools, and the
# flatten before the classifier, join the conv before them).
_VGG16_UNITS = [
    ["block1_conv1"],
    ["block1_conv2", "block1_pool"],
    ["block2_conv1"],
    ["block2_conv2", "block2_pool"],
    ["block3_conv1"],
    ["block3_conv2"],
    ["block3_conv3", "block3_pool"],
    ["block4_conv1"],
    ["block4_conv2"],
    ["block4_conv3", "block4_pool"],
    ["block5_conv1"],
    ["block5_conv2"],
    ["block5_conv3", "block5_pool", "flatten"],
    ["fc1"],
    ["fc2"],
    ["predictions"],
]

_RESNET50_BLOCKS = [
    f"conv{stage}_block{block}"
    for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3))
    for block in range(1, blocks + 1)
]


class SequentialUnitsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_each_conv_is_a_unit_with_its_weightless_layers(self):
        model = _sequential_cnn()

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [
                ["rescale", "conv1", "bn1", "relu1", "pool1"],
                ["conv2", "bn2", "relu2", "pool2"],
                ["conv3", "bn3", "relu3", "gap"],
                ["fc"],
            ],
        )
        self.assertEqual(
            [unit.name for unit in chain.units],
            ["conv1", "conv2", "conv3", "fc"],
        )
        self.assertEqual([unit.index for unit in chain.units], [0, 1, 2, 3])
        self.assertLen(chain, 4)

    def test_cuts_are_the_outputs_of_the_last_layer_of_each_unit(self):
        model = _sequential_cnn()

        chain = graph.UnitChain(model)

        self.assertIs(chain.units[0].input, model.inputs[0])
        self.assertEqual(
            [_producer(unit.output).name for unit in chain.units],
            ["pool1", "pool2", "gap", "fc"],
        )
        for before, after in zip(chain.units, chain.units[1:]):
            self.assertIs(after.input, before.output)
        self.assertIs(chain.units[-1].output, model.outputs[0])
        self.assertEqual(
            [unit.output_shape for unit in chain.units],
            [(None, 4, 4, 4), (None, 2, 2, 8), (None, 8), (None, 3)],
        )

    def test_sequential_built_without_input_is_cut_like_with_input(self):
        model = keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, name="conv1"),
                keras.layers.ReLU(name="relu"),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(2, name="fc"),
            ]
        )
        model.build((None, 6, 6, 1))

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [["conv1", "relu", "flatten"], ["fc"]],
        )

    def test_unit_api(self):
        model = _sequential_cnn()
        conv1, bn1 = model.get_layer("conv1"), model.get_layer("bn1")

        chain = graph.UnitChain(model)

        # Trainable weights include BatchNorm's gamma and beta but not its
        # moving statistics.
        self.assertEqual(
            [id(w) for w in chain.units[0].trainable_weights],
            [id(w) for w in conv1.trainable_weights + bn1.trainable_weights],
        )
        self.assertEqual(
            _names(chain.layers_of(1, 3)),
            ["conv2", "bn2", "relu2", "pool2", "conv3", "bn3", "relu3", "gap"],
        )
        self.assertEqual(chain.layers_of(2, 2), ())
        self.assertIs(chain.cut_tensor(0), chain.input)
        self.assertIs(chain.cut_tensor(2), chain.units[2].input)
        self.assertIs(chain.cut_tensor(4), chain.output)
        self.assertIs(chain.model, model)

    def test_model_without_learning_layers_is_one_unit(self):
        model = keras.Sequential(
            [
                keras.Input((6, 6, 1)),
                keras.layers.MaxPooling2D(name="pool"),
                keras.layers.Flatten(name="flatten"),
            ]
        )

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [["pool", "flatten"]],
        )


class FunctionalUnitsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_each_residual_block_is_one_unit(self):
        model, _ = _residual_net()

        chain = graph.UnitChain(model)

        self.assertEqual(
            [unit.name for unit in chain.units],
            ["stem_conv", "b1_conv1", "b2_conv1", "b3_conv1", "fc"],
        )
        block = ["conv1", "bn1", "relu1", "conv2", "bn2", "add", "out"]
        projection = ["proj", "proj_bn"]
        layer_names = [_names(unit.layers) for unit in chain.units]
        self.assertEqual(layer_names[0], ["stem_conv", "stem_bn", "stem_relu"])
        # Both branches of a block, and nothing else, are in its unit.
        self.assertCountEqual(layer_names[1], [f"b1_{n}" for n in block])
        self.assertCountEqual(
            layer_names[2], [f"b2_{n}" for n in block + projection]
        )
        self.assertCountEqual(
            layer_names[3], [f"b3_{n}" for n in block] + ["gap"]
        )
        self.assertEqual(layer_names[4], ["fc"])

    def test_cuts_are_the_block_outputs(self):
        model, tensors = _residual_net()

        chain = graph.UnitChain(model)

        units = chain.units
        self.assertIs(units[0].input, tensors["input"])
        self.assertIs(units[0].output, tensors["stem"])
        self.assertIs(units[1].output, tensors["b1"])
        self.assertIs(units[2].output, tensors["b2"])
        # The pooling after the last block joins the last block's unit.
        self.assertIs(units[3].output, tensors["gap"])
        self.assertIs(units[4].output, model.outputs[0])
        for before, after in zip(units, units[1:]):
            self.assertIs(after.input, before.output)

    def test_skip_from_the_input_leaves_no_cut_before_the_merge(self):
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4, name="a")(inputs)
        h = keras.layers.Dense(4, name="b")(h)
        h = keras.layers.Add(name="add")([h, inputs])
        outputs = keras.layers.Dense(2, name="c")(h)
        model = keras.Model(inputs, outputs)

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [["a", "b", "add"], ["c"]],
        )

    def test_branch_that_does_not_reach_the_output_is_ignored(self):
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4, name="a")(inputs)
        keras.layers.Dense(4, name="dead")(h)
        outputs = keras.layers.Dense(2, name="c")(h)
        model = keras.Model(inputs, outputs)

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units], [["a"], ["c"]]
        )

    # Fails with AttributeError (library bug): operations applied to
    # KerasTensors (`x + shortcut`, `keras.ops.relu(x)`) are graph nodes
    # whose operation is a `keras.Operation`, not a `Layer`, and has no
    # `trainable_weights`/`weights`; graph._is_learning_layer and
    # graph._merge_shared_layers read them unguarded.
    def test_tensor_operations_join_the_unit_of_their_block(self):
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4, name="a")(inputs)
        residual = keras.layers.Dense(4, name="b")(h) + h
        block_output = keras.ops.relu(residual)
        outputs = keras.layers.Dense(2, name="c")(block_output)
        model = keras.Model(inputs, outputs)
        x = np.random.rand(2, 4).astype("float32")

        chain = graph.UnitChain(model)

        self.assertEqual([unit.name for unit in chain.units], ["a", "b", "c"])
        self.assertIs(chain.units[1].output, block_output)
        self.assertAllClose(
            chain.forward(x, 0, len(chain)), model(x), rtol=1e-5, atol=1e-6
        )

    def test_blocks_of_a_nested_backbone_are_units(self):
        model = _nested_net()

        chain = graph.UnitChain(model)

        self.assertEqual(
            [unit.name for unit in chain.units],
            ["stem_conv", "b1_conv1", "b2_conv1", "b3_conv1", "fc"],
        )
        layer_names = [_names(unit.layers) for unit in chain.units]
        self.assertEqual(
            layer_names[0], ["rescale", "stem_conv", "stem_bn", "stem_relu"]
        )
        self.assertEqual(layer_names[3][-1], "gap")
        self.assertEqual(layer_names[4], ["fc"])
        backbone = model.get_layer("bb")
        self.assertIs(
            chain.units[0].output, backbone.get_layer("stem_relu").output
        )
        self.assertIs(
            chain.units[1].output, backbone.get_layer("b1_out").output
        )

    # Fails with KeyError in graph._tensors_by_id (library bug): when the
    # model's output is the output of a nested model, that outer tensor is
    # only written by an alias step, which `_tensors_by_id` skips. This is
    # the common `Sequential([Input, Rescaling, keras.applications.X(...)])`.
    def test_model_ending_in_a_nested_model(self):
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(4, 3, name="inner_conv")(inputs)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        classifier = keras.Model(
            inputs, keras.layers.Dense(2, name="fc")(h), name="classifier"
        )
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Rescaling(0.5, name="rescale"),
                classifier,
            ]
        )
        x = np.random.rand(2, 8, 8, 3).astype("float32")

        chain = graph.UnitChain(model)

        self.assertEqual(
            [unit.name for unit in chain.units], ["inner_conv", "fc"]
        )
        self.assertIs(chain.units[-1].output, model.outputs[0])
        self.assertAllClose(
            chain.forward(x, 0, len(chain)), model(x), rtol=1e-5, atol=1e-6
        )


class SharedLayerTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(
        (
            "dense",
            _shared_dense_net,
            [["first"], ["shared", "mid1", "mid2"], ["last"]],
        ),
        (
            "conv",
            _shared_conv_net,
            [["shared", "relu", "mid", "gap"], ["last"]],
        ),
    )
    def test_units_between_the_calls_of_a_shared_layer_merge(
        self, build, expected
    ):
        model = build()

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units], expected
        )

    def test_shared_layer_without_weights_does_not_merge(self):
        inputs = keras.Input((4,))
        relu = keras.layers.ReLU(name="relu")
        h = relu(keras.layers.Dense(4, name="a")(inputs))
        h = relu(keras.layers.Dense(4, name="b")(h))
        outputs = keras.layers.Dense(2, name="c")(h)
        model = keras.Model(inputs, outputs)

        chain = graph.UnitChain(model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [["a", "relu"], ["b", "relu"], ["c"]],
        )
        self.assertEqual(_names(chain.layers_of(0, 3)), ["a", "relu", "b", "c"])


class ForwardTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(
        ("sequential", _sequential_cnn, (8, 8, 3)),
        ("residual", lambda: _residual_net()[0], (8, 8, 3)),
        ("nested", _nested_net, (8, 8, 3)),
        ("shared", _shared_dense_net, (4,)),
    )
    def test_split_forward_equals_the_model(self, build, input_shape):
        model = build()
        _randomize_batchnorm(model)
        x = np.random.uniform(0, 255, (3, *input_shape)).astype("float32")
        expected = model(x, training=False)

        chain = graph.UnitChain(model)

        for k in range(len(chain) + 1):
            stem = chain.forward(x, 0, k)
            self.assertEqual(
                tuple(stem.shape[1:]), tuple(chain.cut_tensor(k).shape[1:])
            )
            self.assertAllClose(
                chain.forward(stem, k, len(chain)),
                expected,
                rtol=1e-5,
                atol=1e-5,
                msg=f"split at unit {k}",
            )

    def test_a_base_called_with_training_false_runs_as_keras_runs_it(self):
        # keras.io's transfer learning calls the base with `training=False`.
        # Keras 3.15 lets the outer model's `training` override it (the
        # base's BatchNorm then trains); later Keras versions may keep the
        # recorded `False`. LearnDrop's forward must do what Keras does.
        def build():
            keras.utils.set_random_seed(0)
            inner = keras.Input((4,))
            x = keras.layers.Dense(4, name="base_dense")(inner)
            x = keras.layers.BatchNormalization(name="base_bn")(x)
            base = keras.Model(inner, x, name="base")
            outer = keras.Input((4,))
            y = base(outer, training=False)
            y = keras.layers.Dense(2, name="head")(y)
            return keras.Model(outer, y)

        x = np.random.default_rng(0).normal(5.0, 1.0, (8, 4)).astype("float32")
        by_keras, by_chain = build(), build()
        expected = by_keras(x, training=True)
        chain = graph.UnitChain(by_chain)
        got = chain.forward(x, 0, len(chain), training=True)

        self.assertAllClose(got, expected, rtol=1e-5, atol=1e-5)
        keras_bn = by_keras.get_layer("base").get_layer("base_bn")
        chain_bn = by_chain.get_layer("base").get_layer("base_bn")
        self.assertAllClose(chain_bn.moving_mean, keras_bn.moving_mean)

    def test_empty_stretch_returns_its_input(self):
        chain = graph.UnitChain(_sequential_cnn())
        x = tf.random.normal((2, 4, 4, 4))

        self.assertIs(chain.forward(x, 1, 1), x)

    def test_dropout_is_active_only_in_training(self):
        model = keras.Sequential(
            [
                keras.Input((200,)),
                keras.layers.Dense(200, kernel_initializer="ones", name="wide"),
                keras.layers.Dropout(0.5, name="dropout"),
                keras.layers.Dense(1, name="fc"),
            ]
        )
        chain = graph.UnitChain(model)
        self.assertEqual(
            [_names(unit.layers) for unit in chain.units],
            [["wide", "dropout"], ["fc"]],
        )
        x = np.ones((2, 200), "float32")

        inference = chain.forward(x, 0, 1, training=False).numpy()
        default = chain.forward(x, 0, 1).numpy()
        training = chain.forward(x, 0, 1, training=True).numpy()

        self.assertAllEqual(default, inference)
        self.assertAllGreater(inference, 0.0)
        dropped = training == 0.0
        # About half the units are dropped; the rest are scaled by 2.
        self.assertBetween(dropped.mean(), 0.35, 0.65)
        self.assertAllClose(training[~dropped], 2.0 * inference[~dropped])

    def test_batchnorm_in_training_uses_batch_statistics(self):
        model = _sequential_cnn()
        _randomize_batchnorm(model)
        x = np.random.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
        chain = graph.UnitChain(model)
        bn1 = model.get_layer("bn1")

        expected = model(x, training=True)
        mean_after_model = bn1.moving_mean.numpy()
        actual = chain.forward(x, 0, len(chain), training=True)

        self.assertAllClose(actual, expected, rtol=1e-5, atol=1e-5)
        self.assertNotAllClose(actual, model(x, training=False))
        # Moving statistics are updated as in a training call.
        self.assertNotAllClose(bn1.moving_mean.numpy(), mean_after_model)


class AugmentationOnlyTest(tf.test.TestCase):
    def test_only_augmentation_layers_draw(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 1)),
                keras.layers.RandomFlip("horizontal", name="flip"),
                keras.layers.Conv2D(3, 3, name="conv1"),
                keras.layers.SpatialDropout2D(0.5, name="drop"),
                keras.layers.Conv2D(3, 3, name="conv2"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        chain = graph.UnitChain(model)
        x = tf.random.uniform((64, 6, 6, 1))
        flipped = tf.reverse(x, axis=[2])
        inference = chain.forward(x, 0, 2, training=False)
        inference_flipped = chain.forward(flipped, 0, 2, training=False)
        got = chain.forward(x, 0, 2, training=True, augmentation_only=True)
        # Each sample is the inference output of itself or of its mirror
        # image: no channel dropped, and both occur (the flip draws).
        self.assertEqual(got.shape.rank, 2)  # after the pooling
        plain = np.all(np.isclose(got, inference, atol=1e-6), axis=1)
        mirrored = np.all(np.isclose(got, inference_flipped, atol=1e-6), axis=1)
        self.assertTrue(np.all(plain | mirrored))
        self.assertTrue(np.any(plain & ~mirrored))
        self.assertTrue(np.any(mirrored & ~plain))
        # Without it the dropout draws too.
        dropped = chain.forward(x, 0, 2, training=True)
        self.assertFalse(np.all(np.isclose(dropped, got, atol=1e-6)))


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_subclassed_model(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__(name="subclassed")
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        model = Subclassed()
        model(np.zeros((1, 3), "float32"))

        with self.assertRaisesRegex(ValueError, "subclassed") as error:
            graph.UnitChain(model)
        message = str(error.exception)
        self.assertIn("'subclassed'", message)
        self.assertIn("keras.Sequential", message)
        self.assertIn("keras.Model(inputs, outputs)", message)

    def test_subclassed_model_inside_a_functional_model(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__(name="inner_subclassed")
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        inputs = keras.Input((3,))
        model = keras.Model(inputs, Subclassed()(inputs))

        with self.assertRaisesRegex(ValueError, "'inner_subclassed'") as error:
            graph.UnitChain(model)
        self.assertIn("functional or Sequential", str(error.exception))

    def test_multi_input_model(self):
        a, b = keras.Input((3,)), keras.Input((3,))
        outputs = keras.layers.Dense(2)(keras.layers.Add()([a, b]))
        model = keras.Model([a, b], outputs, name="two_inputs")

        with self.assertRaisesRegex(
            ValueError,
            "exactly one input and one output.*'two_inputs' with 2 inputs "
            "and 1 outputs",
        ):
            graph.UnitChain(model)

    def test_multi_output_model(self):
        inputs = keras.Input((3,))
        h = keras.layers.Dense(2)(inputs)
        outputs = [keras.layers.Dense(2)(h), keras.layers.Dense(3)(h)]
        model = keras.Model(inputs, outputs, name="two_outputs")

        with self.assertRaisesRegex(
            ValueError,
            "exactly one input and one output.*'two_outputs' with 1 inputs "
            "and 2 outputs",
        ):
            graph.UnitChain(model)

    def test_unbuilt_sequential(self):
        model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")

        with self.assertRaisesRegex(ValueError, "'unbuilt' is not built"):
            graph.UnitChain(model)
        with self.assertRaisesRegex(ValueError, r"keras\.Input\(shape\)"):
            graph.UnitChain(model)
        with self.assertRaisesRegex(ValueError, r"model\.build\("):
            graph.UnitChain(model)

    @parameterized.named_parameters(
        ("layer", lambda: keras.layers.Dense(2), "Dense"),
        ("string", lambda: "model.keras", "str"),
        ("none", lambda: None, "NoneType"),
    )
    def test_not_a_model(self, make, type_name):
        with self.assertRaisesRegex(
            TypeError, rf"needs a `keras\.Model`.*of type {type_name}"
        ):
            graph.UnitChain(make())


class KerasInternalsTest(tf.test.TestCase):
    """Pins the Keras internals graph.py relies on.

    If one of these fails after a Keras upgrade, graph.py must be adapted.
    """

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_functional_model_has_nodes_by_depth(self):
        inputs = keras.Input((3,))
        dense = keras.layers.Dense(2)
        model = keras.Model(inputs, dense(inputs))

        nodes = model._nodes_by_depth

        self.assertEqual(sorted(nodes), [0, 1])
        (input_node,) = nodes[1]
        (dense_node,) = nodes[0]
        self.assertTrue(input_node.is_input)
        self.assertFalse(dense_node.is_input)
        self.assertIs(dense_node.operation, dense)
        self.assertEqual(list(dense_node.input_tensors), [inputs])
        self.assertIs(dense_node.output_tensors[0], model.outputs[0])

    def test_sequential_has_functional_graph_once_built(self):
        model = keras.Sequential([keras.layers.Dense(2)])
        self.assertIsNone(getattr(model, "_functional", None))

        model.build((None, 3))

        functional = model._functional
        self.assertIsInstance(functional, keras.Model)
        self.assertTrue(hasattr(functional, "_nodes_by_depth"))
        self.assertLen(functional.inputs, 1)
        self.assertLen(functional.outputs, 1)

    def test_node_arguments_fill_in(self):
        inputs = keras.Input((3,))
        h = keras.layers.Dense(2)(inputs)
        dropout = keras.layers.Dropout(0.5)
        model = keras.Model(inputs, dropout(h, training=False))
        (node,) = model._nodes_by_depth[0]
        value = tf.ones((1, 2))

        args, kwargs = node.arguments.fill_in({id(h): value})

        self.assertIs(args[0], value)
        self.assertEqual(kwargs, {"training": False})

    def test_call_context_args_holds_training(self):
        for layer in (
            keras.layers.Dropout(0.5),
            keras.layers.BatchNormalization(),
        ):
            self.assertIn("training", layer._call_context_args)

    def test_training_argument_overrides_the_recorded_one(self):
        # graph.forward(training=...) overrides a `training=` recorded in
        # the graph, because keras.Model.__call__ does so too.
        inputs = keras.Input((1000,))
        outputs = keras.layers.Dropout(0.5)(inputs, training=False)
        model = keras.Model(inputs, outputs)
        x = np.ones((1, 1000), "float32")

        self.assertAllEqual(model(x), x)
        self.assertIn(0.0, model(x, training=True).numpy())
        chain = graph.UnitChain(model)
        self.assertAllEqual(chain.forward(x, 0, 1), x)
        self.assertIn(0.0, chain.forward(x, 0, 1, training=True).numpy())


class ResNet50Test(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(0)
        cls.model = keras.applications.ResNet50(
            weights=None, input_shape=(32, 32, 3), classes=10
        )
        cls.chain = graph.UnitChain(cls.model)

    def test_units_are_the_stem_the_blocks_and_the_classifier(self):
        self.assertEqual(
            [unit.name for unit in self.chain.units],
            ["conv1_conv"]
            + [f"{block}_1_conv" for block in _RESNET50_BLOCKS]
            + ["predictions"],
        )

    def test_cuts_are_the_block_outputs(self):
        producers = [_producer(unit.output).name for unit in self.chain.units]

        # The padding and max pooling after conv1 join the stem unit, the
        # global pooling joins the last block.
        self.assertEqual(
            producers,
            ["pool1_pool"]
            + [f"{block}_out" for block in _RESNET50_BLOCKS[:-1]]
            + ["avg_pool", "predictions"],
        )
        self.assertIs(self.chain.units[0].input, self.model.inputs[0])
        self.assertIs(self.chain.units[-1].output, self.model.outputs[0])

    def test_a_block_unit_holds_both_branches(self):
        for block, unit in zip(_RESNET50_BLOCKS, self.chain.units[1:-1]):
            names = _names(unit.layers)
            own = [name for name in names if name.startswith(block + "_")]
            self.assertEqual(len(own), len(names) - (block == "conv5_block3"))
            for part in ("1_conv", "2_conv", "3_conv", "add", "out"):
                self.assertIn(f"{block}_{part}", names)
            # The first block of a stage has a projection shortcut.
            self.assertEqual(
                f"{block}_0_conv" in names, block.endswith("block1")
            )


class VGG16Test(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(0)
        cls.model = keras.applications.VGG16(
            weights=None, input_shape=(32, 32, 3), classes=10
        )

    def test_each_conv_and_dense_is_a_unit(self):
        chain = graph.UnitChain(self.model)

        self.assertEqual(
            [_names(unit.layers) for unit in chain.units], _VGG16_UNITS
        )
        self.assertEqual(
            [unit.name for unit in chain.units],
            [names[0] for names in _VGG16_UNITS],
        )


if __name__ == "__main__":
    tf.test.main()


class UserFrozenLayersTest(tf.test.TestCase):
    def test_layers_frozen_by_the_user_keep_their_own_units(self):
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(2, 3, name="frozen_conv"),
                keras.layers.Conv2D(2, 3, name="conv"),
                keras.layers.Flatten(name="flat"),
                keras.layers.Dense(2, name="dense"),
            ]
        )
        model.get_layer("frozen_conv").trainable = False
        chain = graph.UnitChain(model)
        self.assertEqual(
            [[layer.name for layer in unit.layers] for unit in chain.units],
            [["frozen_conv"], ["conv", "flat"], ["dense"]],
        )
        # Nothing of the frozen unit would train: it scores as settled.
        self.assertEqual(chain.units[0].trainable_weights, ())
