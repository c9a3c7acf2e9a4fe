"""Tests for keras_learndrop.flops."""

import collections
import doctest
import warnings

from absl.testing import parameterized

from keras_learndrop import flops
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


class LayerFlopsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(
        # 6x6x4 outputs, each 2 * (3 * 3 * 3) FLOPs of multiply-adds + 1 bias.
        ("valid_stride1_bias", "valid", 1, True, (None, 6, 6, 4), 7920),
        # 8x8x4 outputs, 54 FLOPs each, no bias.
        ("same_stride1_no_bias", "same", 1, False, (None, 8, 8, 4), 13824),
        # 4x4x4 outputs, 54 + 1 FLOPs each.
        ("same_stride2_bias", "same", 2, True, (None, 4, 4, 4), 3520),
        # 3x3x4 outputs, 54 + 1 FLOPs each.
        ("valid_stride2_bias", "valid", 2, True, (None, 3, 3, 4), 1980),
    )
    def test_conv2d(self, padding, strides, use_bias, output_shape, expected):
        conv = keras.layers.Conv2D(
            4, 3, strides=strides, padding=padding, use_bias=use_bias
        )
        input_shape = (None, 8, 8, 3)

        self.assertEqual(
            flops.layer_flops(conv, input_shape, output_shape), expected
        )
        # Without output shapes the layer infers them.
        self.assertEqual(flops.layer_flops(conv, input_shape), expected)

    @parameterized.named_parameters(
        # 2 * 10 FLOPs per output unit + 1 bias add.
        ("rank2", (None, 10), (None, 7), True, None, 147),
        ("no_bias", (None, 10), (None, 7), False, None, 140),
        ("fused_relu", (None, 10), (None, 7), True, "relu", 154),
        # Dense acts on the last axis: 5 positions of the rank-2 count.
        ("rank3", (None, 5, 10), (None, 5, 7), True, None, 735),
    )
    def test_dense(self, input_shape, output_shape, use_bias, act, expected):
        dense = keras.layers.Dense(7, use_bias=use_bias, activation=act)

        self.assertEqual(
            flops.layer_flops(dense, input_shape, output_shape), expected
        )

    @parameterized.named_parameters(
        # 4x4x3 outputs, each a max over a 2x2 window.
        ("max_pool", keras.layers.MaxPooling2D, {}, (None, 4, 4, 3), 192),
        # 8x8x3 outputs, each an average over a 3x3 window.
        (
            "avg_pool_same",
            keras.layers.AveragePooling2D,
            {"pool_size": 3, "strides": 1, "padding": "same"},
            (None, 8, 8, 3),
            1728,
        ),
        # One FLOP per input element.
        ("global_avg", keras.layers.GlobalAveragePooling2D, {}, (None, 3), 192),
        ("global_max", keras.layers.GlobalMaxPooling2D, {}, (None, 3), 192),
    )
    def test_pooling(self, layer_cls, kwargs, output_shape, expected):
        layer = layer_cls(**kwargs)

        self.assertEqual(
            flops.layer_flops(layer, (None, 8, 8, 3), output_shape), expected
        )

    @parameterized.named_parameters(
        # One FLOP per element for each input after the first.
        ("add_two", keras.layers.Add, 2, 32),
        ("add_three", keras.layers.Add, 3, 64),
        ("multiply_two", keras.layers.Multiply, 2, 32),
        # Average also divides once per element.
        ("average_two", keras.layers.Average, 2, 64),
        ("concatenate", keras.layers.Concatenate, 2, 0),
    )
    def test_merge(self, layer_cls, num_inputs, expected):
        shape = (None, 4, 4, 2)

        self.assertEqual(
            flops.layer_flops(layer_cls(), [shape] * num_inputs, [shape]),
            expected,
        )

    @parameterized.named_parameters(
        # The constants documented in the module docstring, on 32 elements.
        ("relu", keras.layers.ReLU(), 32),
        ("activation_linear", keras.layers.Activation("linear"), 0),
        ("softmax", keras.layers.Softmax(), 5 * 32),
        ("batch_norm", keras.layers.BatchNormalization(), 4 * 32),
        ("layer_norm", keras.layers.LayerNormalization(), 7 * 32),
        ("rescaling", keras.layers.Rescaling(1 / 255), 2 * 32),
        ("dropout", keras.layers.Dropout(0.5), 0),
        ("random_flip", keras.layers.RandomFlip(), 0),
        ("zero_padding", keras.layers.ZeroPadding2D(0), 0),
        ("identity", keras.layers.Identity(), 0),
    )
    def test_per_element_constants(self, layer, expected):
        shape = (None, 4, 4, 2)

        self.assertEqual(flops.layer_flops(layer, shape, shape), expected)

    @parameterized.named_parameters(
        # 6x6x4 outputs, 2 * 3 * 3 * (4 / 2) + 1 bias each.
        ("grouped_conv", keras.layers.Conv2D(4, 3, groups=2), 5328),
        # 6x6x4 outputs, 2 * 3 * 3 + 1 bias each.
        ("depthwise", keras.layers.DepthwiseConv2D(3), 2736),
        # Depthwise 2 * 9 * 36 * 4, pointwise 2 * 4 * 72, bias 72.
        ("separable", keras.layers.SeparableConv2D(2, 3), 3240),
        # Each of 8x8x4 inputs scattered to 3 * 3 * 2 outputs (9216), + bias
        # on the 17x17x2 output, 17 = (8 - 1) * 2 + 3.
        ("transpose", keras.layers.Conv2DTranspose(2, 3, strides=2), 9794),
    )
    def test_conv_variants(self, layer, expected):
        self.assertEqual(flops.layer_flops(layer, (None, 8, 8, 4)), expected)

    def test_unknown_dimension_raises(self):
        conv = keras.layers.Conv2D(4, 3)

        with self.assertRaisesRegex(ValueError, "unknown"):
            flops.layer_flops(
                conv, (None, None, None, 3), (None, None, None, 4)
            )

    def test_malformed_shapes_raise(self):
        with self.assertRaisesRegex(TypeError, "Received: input_shapes="):
            flops.layer_flops(keras.layers.ReLU(), "(None, 3)", (None, 3))

    def test_docstring_examples(self):
        result = doctest.testmod(flops)

        self.assertGreater(result.attempted, 0)
        self.assertEqual(result.failed, 0)


class UnknownLayerTest(tf.test.TestCase):
    def test_layer_with_weights_counts_twice_its_weights_and_warns_once(self):
        class Scale(keras.layers.Layer):
            def build(self, input_shape):
                self.w = self.add_weight(shape=(input_shape[-1],))

            def call(self, x):
                return x * self.w

        layer = Scale()
        layer.build((None, 6))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = flops.layer_flops(layer, (None, 6), (None, 6))
            second = flops.layer_flops(layer, (None, 6), (None, 6))

        self.assertEqual(first, 2 * 6)
        self.assertEqual(second, first)
        self.assertLen(caught, 1)
        message = str(caught[0].message)
        self.assertIn("Scale", message)
        self.assertIn("estimate", message)
        self.assertEqual(caught[0].filename, __file__)

    def test_weightless_layer_counts_zero_and_warns(self):
        class Double(keras.layers.Layer):
            def call(self, x):
                return 2 * x

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = flops.layer_flops(Double(), (None, 6), (None, 6))

        self.assertEqual(count, 0)
        self.assertLen(caught, 1)
        self.assertIn("Double", str(caught[0].message))

    def test_shape_only_op_does_not_warn(self):
        inputs = keras.Input((4, 6))
        outputs = keras.ops.transpose(keras.ops.reshape(inputs, (-1, 6, 4)))
        model = keras.Model(inputs, outputs)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = flops.model_flops(model)

        self.assertEqual(count, 0)
        self.assertEmpty(caught)


def _conv_block_layers():
    return [
        # 6x6x4 outputs, 2 * 27 + 1 each: 7920.
        keras.layers.Conv2D(4, 3),
        # 144 elements, 4 each.
        keras.layers.BatchNormalization(),
        # 144.
        keras.layers.ReLU(),
        # 3x3x4 outputs, window 4: 144.
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        # 2 * 36 * 3 + 3 = 219.
        keras.layers.Dense(3),
    ]


_CONV_BLOCK_FLOPS = 7920 + 4 * 144 + 144 + 144 + 0 + 219


class ModelFlopsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_sequential_sums_layer_counts(self):
        model = keras.Sequential(
            [keras.Input((8, 8, 3))] + _conv_block_layers()
        )

        self.assertEqual(flops.model_flops(model), _CONV_BLOCK_FLOPS)

    def test_sequential_built_by_calling(self):
        model = keras.Sequential(_conv_block_layers())
        model(tf.zeros((2, 8, 8, 3)))

        self.assertEqual(flops.model_flops(model), _CONV_BLOCK_FLOPS)

    def test_unbuilt_sequential_raises_with_name(self):
        model = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")

        with self.assertRaisesRegex(ValueError, "unbuilt.*Build the model"):
            flops.model_flops(model)

    def test_subclassed_model_raises(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(3)

            def call(self, x):
                return self.dense(x)

        model = Subclassed()
        model(tf.zeros((1, 4)))

        with self.assertRaisesRegex(TypeError, "Subclassed"):
            flops.model_flops(model)

    def test_residual_model_counts_every_node(self):
        inputs = keras.Input((8, 8, 4))
        # 8x8x4 outputs, 2 * 36 + 1 each: 18688 per call.
        conv = keras.layers.Conv2D(4, 3, padding="same")
        x = keras.layers.ReLU()(conv(inputs))  # 256.
        x = conv(x)  # The shared layer runs twice: another 18688.
        x = keras.layers.Add()([inputs, x])  # 256.
        x = keras.layers.GlobalAveragePooling2D()(x)  # 256.
        outputs = keras.layers.Dense(2)(x)  # 2 * 4 * 2 + 2 = 18.
        model = keras.Model(inputs, outputs)

        self.assertEqual(
            flops.model_flops(model), 2 * 18688 + 256 + 256 + 256 + 18
        )

    def test_nested_model_counts_like_flattened_model(self):
        inputs = keras.Input((8, 8, 3))
        x = inputs
        for layer in _conv_block_layers()[:4]:
            x = layer(x)
        stem = keras.Model(inputs, x, name="stem")
        head = keras.Sequential(_conv_block_layers()[4:], name="head")
        nested = keras.Sequential([keras.Input((8, 8, 3)), stem, head])

        flat_inputs = keras.Input((8, 8, 3))
        y = flat_inputs
        for layer in _conv_block_layers():
            y = layer(y)
        flat = keras.Model(flat_inputs, y)

        self.assertEqual(flops.model_flops(nested), flops.model_flops(flat))
        self.assertEqual(flops.model_flops(nested), _CONV_BLOCK_FLOPS)

    def test_variable_size_backbone(self):
        inputs = keras.Input((None, None, 3))
        x = inputs
        for layer in _conv_block_layers()[:4]:
            x = layer(x)
        backbone = keras.Model(inputs, x)
        # The Dense part of the block on the 3x3x4 backbone output.
        head_flops = 219

        with self.assertRaisesRegex(ValueError, "`input_shape`"):
            flops.model_flops(backbone)
        self.assertEqual(
            flops.model_flops(backbone, input_shape=(8, 8, 3)),
            _CONV_BLOCK_FLOPS - head_flops,
        )

        # Used inside a model with a fixed input, it counts on that input.
        outer_inputs = keras.Input((8, 8, 3))
        y = keras.layers.Flatten()(backbone(outer_inputs))
        outer = keras.Model(outer_inputs, keras.layers.Dense(3)(y))
        self.assertEqual(flops.model_flops(outer), _CONV_BLOCK_FLOPS)

    def test_input_shape_must_match_model_inputs(self):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])

        with self.assertRaisesRegex(ValueError, "Received: input_shape="):
            flops.model_flops(model, input_shape=(8, 8))


class ProfilerAgreementTest(tf.test.TestCase):
    def test_matches_tensorflow_profiler(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 3))
        # Kernel 6x6x4 * 2 * 27 = 7776, bias 144.
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
        x = keras.layers.ReLU()(x)  # 144: no flops statistic in TF.
        x = keras.layers.MaxPooling2D(2)(x)  # 3x3x4 outputs * 4 = 144.
        # Kernel 1x1x6 * 2 * 36 = 432, no bias.
        x = keras.layers.Conv2D(6, 3, use_bias=False)(x)
        x = keras.layers.Flatten()(x)
        outputs = keras.layers.Dense(5)(x)  # Kernel 60, bias 5.
        model = keras.Model(inputs, outputs)
        self.assertEqual(
            flops.model_flops(model), 7776 + 144 + 144 + 144 + 432 + 60 + 5
        )

        concrete = tf.function(model).get_concrete_function(
            tf.TensorSpec([1, 12, 12, 3], tf.float32)
        )
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        profile = tf.compat.v1.profiler.profile(
            graph=concrete.graph, options=options
        )
        by_type = collections.Counter()
        for node in profile.children:
            op = concrete.graph.get_operation_by_name(node.name)
            by_type[op.type] += node.total_float_ops

        # TF counts `2 * kernel_h * kernel_w * in_channels` per output
        # element for Conv2D, `2 * k` per output element for MatMul, 1 per
        # element for the bias add and the pooling window per output
        # element for MaxPool: exactly our counts.
        self.assertEqual(by_type["Conv2D"], 7776 + 432)
        self.assertEqual(by_type["MatMul"], 60)
        self.assertEqual(by_type["BiasAdd"] + by_type["AddV2"], 144 + 5)
        self.assertEqual(by_type["MaxPool"], 144)
        # TF registers no statistic for Relu, so it is the only layer whose
        # FLOPs the profiler leaves out.
        relu_flops = 144
        self.assertEqual(
            profile.total_float_ops, flops.model_flops(model) - relu_flops
        )


if __name__ == "__main__":
    tf.test.main()
