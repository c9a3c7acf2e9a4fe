"""Tests for examples/models.py."""

import doctest
import re

import numpy as np
from absl.testing import parameterized

from examples import models
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

# (name, Conv2D layers incl. projections, BasicBlocks, projection shortcuts)
# at width 0.125, where every stage still has distinct channel counts.
_CIFAR_MODELS = (
    ("small_cnn", 4, 0, 0),
    ("vgg11", 8, 0, 0),
    ("vgg16", 13, 0, 0),
    # Stem + 8 blocks x 2 convs, projections into stages 2, 3 and 4.
    ("resnet18", 1 + 16 + 3, 8, 3),
    # He et al.: 19 convs (stem + 9 blocks x 2), projections into stages 2, 3.
    ("resnet20", 19 + 2, 9, 2),
)


def _count(model, layer_class):
    return sum(isinstance(layer, layer_class) for layer in model.layers)


class BuildModelTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(
        ("small_cnn_digits", "small_cnn", (8, 8, 1)),
        ("vgg11_mnist", "vgg11", (28, 28, 1)),
        ("vgg16_cifar", "vgg16", (32, 32, 3)),
        ("resnet18_digits", "resnet18", (8, 8, 1)),
        ("resnet20_cifar", "resnet20", (32, 32, 3)),
    )
    def test_maps_images_to_class_probabilities(self, name, input_shape):
        model = models.build_model(name, input_shape, 5, width=0.125, seed=0)
        images = np.random.rand(3, *input_shape).astype("float32")

        probabilities = model(images, training=False).numpy()

        self.assertEqual(model.name, name)
        self.assertFalse(model.compiled)
        self.assertEqual(probabilities.shape, (3, 5))
        self.assertAllClose(probabilities.sum(axis=1), np.ones(3), atol=1e-5)

    @parameterized.named_parameters(
        (name, name, convs, blocks, projections)
        for name, convs, blocks, projections in _CIFAR_MODELS
    )
    def test_layer_counts(self, name, convs, blocks, projections):
        model = models.build_model(name, (8, 8, 3), 10, width=0.125)

        self.assertEqual(_count(model, keras.layers.Conv2D), convs)
        self.assertEqual(_count(model, keras.layers.BatchNormalization), convs)
        self.assertEqual(_count(model, keras.layers.Add), blocks)
        proj = [layer for layer in model.layers if "proj_conv" in layer.name]
        self.assertLen(proj, projections)
        self.assertEqual(model.layers[-1].name, "predictions")

    @parameterized.named_parameters(
        ("resnet18", "resnet18", (64, 128, 256, 512), 2),
        ("resnet20", "resnet20", (16, 32, 64), 3),
    )
    def test_resnet_stage_widths(self, name, filters, blocks_per_stage):
        model = models.build_model(name, (16, 16, 3), 10, width=0.25)

        for stage, stage_filters in enumerate(filters, start=1):
            for block in range(1, blocks_per_stage + 1):
                out = model.get_layer(f"stage{stage}_block{block}_out")
                self.assertEqual(out.output.shape[-1], stage_filters // 4)
            # Stage 1 keeps the 16x16 size, each later stage halves it.
            self.assertEqual(out.output.shape[1], 16 // 2 ** (stage - 1))

    @parameterized.named_parameters(
        ("small_cnn", "small_cnn", r"_relu\d$", 4),
        ("vgg11", "vgg11", r"_relu\d$", 8),
        ("resnet18", "resnet18", r"_out$", 8),
        ("resnet20", "resnet20", r"_out$", 9),
    )
    def test_every_block_ends_in_a_cut(self, name, pattern, num_blocks):
        model = models.build_model(name, (8, 8, 3), 10, width=0.125)
        block_outputs = [
            layer for layer in model.layers if re.search(pattern, layer.name)
        ]
        self.assertLen(block_outputs, num_blocks)

        for layer in block_outputs:
            # Keras refuses a model whose outputs depend on tensors that do
            # not flow through its inputs: this only builds at a cut.
            head = keras.Model(layer.output, model.output)
            self.assertEqual(head.output_shape, (None, 10))

    def test_inside_a_residual_block_is_not_a_cut(self):
        model = models.build_model("resnet20", (8, 8, 3), 10, width=0.25)

        units = graph.UnitChain(model).units

        # The block, its shortcut included, is one unit that ends at its
        # output: no cut falls inside it.
        (unit,) = [
            u
            for u in units
            if any(layer.name == "stage2_block1_relu1" for layer in u.layers)
        ]
        names = [layer.name for layer in unit.layers]
        self.assertEqual(names[0], "stage2_block1_conv1")
        self.assertEqual(names[-1], "stage2_block1_out")
        self.assertIn("stage2_block1_proj_conv", names)

    def test_layer_names(self):
        resnet = models.build_model("resnet20", (8, 8, 3), 10, width=0.25)
        vgg = models.build_model("vgg16", (8, 8, 3), 10, width=0.125)

        for layer_name in (
            "stem_conv",
            "stem_bn",
            "stem_relu",
            "stage2_block1_conv1",
            "stage2_block1_bn2",
            "stage2_block1_proj_conv",
            "stage2_block1_add",
            "stage3_block3_out",
            "avg_pool",
            "predictions",
        ):
            self.assertEqual(resnet.get_layer(layer_name).name, layer_name)
        for layer_name in ("stage1_conv2", "stage5_relu3", "stage1_pool"):
            self.assertEqual(vgg.get_layer(layer_name).name, layer_name)

    @parameterized.named_parameters(
        ("digits", (8, 8, 1), 3),
        ("mnist", (28, 28, 1), 4),
        ("cifar", (32, 32, 3), 5),
    )
    def test_vgg_skips_pools_below_one_pixel(self, input_shape, pools):
        model = models.build_model("vgg16", input_shape, 10, width=0.125)

        self.assertEqual(_count(model, keras.layers.MaxPooling2D), pools)
        features = model.get_layer("avg_pool").input
        self.assertEqual(features.shape[1:3], (1, 1))

    def test_width_scales_filters(self):
        full = models.build_model("vgg11", (8, 8, 3), 10)
        tiny = models.build_model("vgg11", (8, 8, 3), 10, width=0.125)

        self.assertEqual(full.get_layer("stage5_conv2").filters, 512)
        self.assertEqual(tiny.get_layer("stage5_conv2").filters, 64)
        self.assertEqual(
            full.get_layer("stage1_conv1").kernel_initializer.__class__,
            keras.initializers.HeNormal,
        )

    @parameterized.named_parameters(
        ("resnet20", "resnet20", 9, "stage2_block1_drop"),
        ("vgg11", "vgg11", 8, "stage3_drop2"),
    )
    def test_dropout_in_every_block(self, name, count, layer_name):
        model = models.build_model(name, (8, 8, 3), 10, 0.25, dropout=0.2)
        drops = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.SpatialDropout2D)
        ]
        self.assertLen(drops, count)
        self.assertEqual(model.get_layer(layer_name).rate, 0.2)
        # The same cuts as without dropout.
        plain = models.build_model(name, (8, 8, 3), 10, 0.25)
        self.assertEqual(len(model.layers) - count, len(plain.layers))
        with self.assertRaisesRegex(ValueError, "dropout=1.5"):
            models.build_model(name, (8, 8, 3), 10, 0.25, dropout=1.5)

    def test_seed_makes_initial_weights_reproducible(self):
        first = models.build_model("resnet20", (8, 8, 3), 10, 0.25, seed=7)
        keras.utils.set_random_seed(123)  # The seed alone must decide.
        second = models.build_model("resnet20", (8, 8, 3), 10, 0.25, seed=7)
        other = models.build_model("resnet20", (8, 8, 3), 10, 0.25, seed=8)

        for a, b in zip(first.get_weights(), second.get_weights()):
            self.assertAllEqual(a, b)
        kernels = [
            (layer.name, layer.kernel.numpy())
            for layer in first.layers
            if isinstance(layer, keras.layers.Conv2D)
        ]
        for name, kernel in kernels:
            self.assertNotAllClose(
                kernel, other.get_layer(name).kernel.numpy(), msg=name
            )
        # Two layers of equal shape must not share their initial weights.
        self.assertNotAllClose(
            first.get_layer("stage1_block1_conv1").kernel.numpy(),
            first.get_layer("stage1_block1_conv2").kernel.numpy(),
        )

    def test_resnet50_builds(self):
        model = models.build_model("resnet50", (32, 32, 3), 10, seed=0)

        self.assertEqual(model.output_shape, (None, 10))
        # Stem + 16 bottleneck blocks x 3 convs + 4 projection shortcuts.
        self.assertEqual(_count(model, keras.layers.Conv2D), 53)
        self.assertEqual(_count(model, keras.layers.Add), 16)
        self.assertEqual(
            model.get_layer("conv3_block1_out").name, "conv3_block1_out"
        )
        self.assertFalse(model.compiled)

    @parameterized.named_parameters(
        ("resnet50", "resnet50"), ("resnet152", "resnet152")
    )
    def test_applications_reject_width(self, name):
        with self.assertRaisesRegex(
            ValueError, r"must be 1.0 for .*Received: width=0.5"
        ):
            models.build_model(name, (32, 32, 3), 10, width=0.5)

    def test_unknown_name_lists_valid_names(self):
        with self.assertRaisesRegex(
            ValueError,
            r"small_cnn, vgg11, vgg16, resnet18, resnet20, resnet50, "
            r"resnet152\. Received: name='resnet21'",
        ):
            models.build_model("resnet21", (32, 32, 3), 10)

    @parameterized.named_parameters(
        ("input_shape_rank", {"input_shape": (8, 8)}, "input_shape=\\(8, 8\\)"),
        ("input_shape_zero", {"input_shape": (8, 0, 1)}, "input_shape="),
        ("num_classes", {"num_classes": 1}, "num_classes=1"),
        ("width", {"width": 0.0}, "width=0.0"),
        ("seed", {"seed": 1.5}, "seed=1.5"),
    )
    def test_invalid_arguments(self, override, received):
        kwargs = {"input_shape": (8, 8, 1), "num_classes": 10, **override}

        with self.assertRaisesRegex(ValueError, "Received: " + received):
            models.build_model("small_cnn", **kwargs)

    def test_docstring_examples(self):
        results = doctest.testmod(models, optionflags=doctest.ELLIPSIS)

        self.assertGreater(results.attempted, 0)
        self.assertEqual(results.failed, 0)


if __name__ == "__main__":
    tf.test.main()
