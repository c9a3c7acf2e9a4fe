"""Image classifiers used by the keras-learndrop examples and benchmarks.

`build_model` returns a functional, built and *uncompiled* `keras.Model`.
Every block of these models ends in one tensor through which all paths of
the block pass: the ReLU after a convolution in the plain networks, the ReLU
after the residual `Add` in the ResNets. Those tensors are the places where
learndrop can cut a network: the layers before a cut can be frozen, run once
and their output cached, while the layers after it keep training.

Layers are named after where they sit, for example `stem_conv`,
`stage2_conv1`, `stage2_block1_conv1`, `stage2_block1_proj_conv`,
`stage2_block1_out`, `avg_pool` and `predictions`. The layers of
`resnet50`/`resnet152` keep the names `keras.applications` gives them
(`conv2_block1_out`, ...).

All models expect channels-last images (NHWC), as `examples.datasets`
produces them.
"""

import numbers
import random

from keras_learndrop.backend import keras

MODEL_NAMES = (
    "small_cnn",
    "vgg11",
    "vgg16",
    "resnet18",
    "resnet20",
    "resnet50",
    "resnet152",
)

# Filters of each convolution, grouped by stage; a 2x2 max-pool follows each
# stage. VGG configurations "A" (11 layers) and "D" (16 layers) of Simonyan &
# Zisserman (2015), without the three fully connected layers, as is usual on
# CIFAR.
_PLAIN_STAGES = {
    "small_cnn": ((32, 32), (64, 64)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": (
        (64, 64),
        (128, 128),
        (256, 256, 256),
        (512, 512, 512),
        (512, 512, 512),
    ),
}

# (stem filters, filters per stage, BasicBlocks per stage).
_RESNET_STAGES = {
    "resnet18": (64, (64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet20": (16, (16, 32, 64), (3, 3, 3)),
}

_APPLICATIONS = {"resnet50": "ResNet50", "resnet152": "ResNet152"}

_INITIALIZERS = {
    "he_normal": keras.initializers.HeNormal,
    "glorot_uniform": keras.initializers.GlorotUniform,
}

# CIFAR training recipes use the PyTorch BatchNorm settings; Keras' default
# momentum of 0.99 lags behind for the few epochs the examples run.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def build_model(
    name, input_shape, num_classes, width=1.0, seed=None, dropout=0.0
):
    """Builds one of the example image classifiers.

    The models are:

    - `"small_cnn"`: four 3x3 convolutions (32-32-64-64 filters, each
      followed by BatchNorm and ReLU) in two stages with a 2x2 max-pool after
      each, for MNIST and the 8x8 scikit-learn digits.
    - `"vgg11"`, `"vgg16"`: CIFAR-style VGG, configurations A and D (8 and
      13 convolutions of 3x3 + BatchNorm + ReLU, 64 to 512 filters, a 2x2
      max-pool after each of the 5 stages).
    - `"resnet18"`: CIFAR-style ResNet-18: a 3x3 stem convolution and
      BasicBlocks [2, 2, 2, 2] with 64-128-256-512 filters.
    - `"resnet20"`: the CIFAR ResNet-20 of He et al. (2016): a 3x3 stem
      convolution and 3 stages of 3 BasicBlocks with 16-32-64 filters. Where
      the shape changes the shortcut is a 1x1 convolution + BatchNorm
      (option B of the paper) rather than zero padding (option A), so that
      every block is a plain Keras graph.
    - `"resnet50"`, `"resnet152"`: `keras.applications.ResNet50` /
      `ResNet152` with `weights=None`. They need inputs of at least 32x32.

    All of them end in global average pooling and a `Dense` softmax layer
    named `"predictions"`. A 2x2 max-pool is left out where the feature map
    is already smaller than 2x2, so that small inputs such as 8x8 or 28x28
    work. Convolutions use `kernel_initializer="he_normal"` and no bias (a
    BatchNorm follows each of them).

    Args:
        name: String. One of `MODEL_NAMES`.
        input_shape: Tuple of 3 positive integers `(height, width,
            channels)`, without the batch dimension.
        num_classes: Integer, at least 2. Number of output classes.
        width: Positive float. Multiplies the number of filters of every
            convolution (rounded, at least 1), so that tests can use tiny
            versions. Must be `1.0` for `"resnet50"` and `"resnet152"`.
            Defaults to `1.0`.
        seed: Integer or `None`. With an integer the initial weights are the
            same at every call. The models of `keras.applications`
            (`"resnet50"`, `"resnet152"`) can only be seeded through
            `keras.utils.set_random_seed(seed)`, which also reseeds Python,
            NumPy and TensorFlow globally; the other models get one seeded
            initializer per layer and leave the global state alone. With
            `None` the initial weights come from Keras' global seed.
            Defaults to `None`.
        dropout: Float in [0, 1). With a positive rate, a
            `SpatialDropout2D` of that rate in every block: after each
            convolution's ReLU of the plain networks, between the two
            convolutions of each BasicBlock (as Wide ResNets place
            dropout). Not for the `keras.applications` models. Defaults to
            `0.0`.

    Returns:
        A built, uncompiled functional `keras.Model` named `name`, mapping
        images of shape `(batch,) + input_shape` to class probabilities of
        shape `(batch, num_classes)`.

    Raises:
        ValueError: if `name` is not in `MODEL_NAMES`, if `input_shape`,
            `num_classes`, `width` or `seed` is invalid, or if `width` is not
            `1.0` for a model of `keras.applications`.

    Example:

    >>> model = build_model("resnet20", (8, 8, 3), 10, width=0.25, seed=0)
    >>> model.output_shape
    (None, 10)
    >>> model.get_layer("stage2_block1_out").output.shape
    (None, 4, 4, 8)
    """
    if name not in MODEL_NAMES:
        raise ValueError(
            f"Unknown model name. Expected one of {', '.join(MODEL_NAMES)}. "
            f"Received: name={name!r}"
        )
    input_shape = _check_input_shape(input_shape)
    if (
        not isinstance(num_classes, numbers.Integral)
        or isinstance(num_classes, bool)
        or num_classes < 2
    ):
        raise ValueError(
            "`num_classes` must be an integer of at least 2. "
            f"Received: num_classes={num_classes!r}"
        )
    if (
        not isinstance(width, numbers.Real)
        or isinstance(width, bool)
        or not width > 0
    ):
        raise ValueError(
            f"`width` must be a positive number. Received: width={width!r}"
        )
    if seed is not None and (
        not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
    ):
        raise ValueError(
            f"`seed` must be an integer or None. Received: seed={seed!r}"
        )

    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(
            f"`dropout` must be a rate in [0, 1). Received: dropout={dropout!r}"
        )
    if name in _APPLICATIONS:
        if dropout:
            raise ValueError(
                f"`dropout` is not available for {name!r} (built by "
                "keras.applications). Received: dropout={dropout!r}"
            )
        return _build_application(name, input_shape, num_classes, width, seed)
    init = _Initializers(seed, dropout)
    inputs = keras.Input(shape=input_shape, name="images")
    if name in _PLAIN_STAGES:
        x = _plain_body(inputs, _PLAIN_STAGES[name], width, init)
    else:
        x = _resnet_body(inputs, *_RESNET_STAGES[name], width, init)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=init("glorot_uniform"),
        name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=name)


class _Initializers:
    """Hands out kernel initializers, each layer with its own seed.

    Keras initializers seeded with the same integer draw the same values, so
    two layers of the same shape need two different seeds. They are drawn
    from `random.Random(seed)` rather than counted up from `seed`, so that
    the models built with `seed=1` and `seed=2` share no layer weights.
    """

    def __init__(self, seed, dropout=0.0):
        self._rng = None if seed is None else random.Random(seed)
        self.dropout = dropout

    def __call__(self, identifier="he_normal"):
        if self._rng is None:
            return identifier
        initializer_class = _INITIALIZERS[identifier]
        return initializer_class(seed=self._rng.randrange(2**31 - 1))


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(
            isinstance(d, numbers.Integral)
            and not isinstance(d, bool)
            and d > 0
            for d in shape
        )
    ):
        raise ValueError(
            "`input_shape` must be a tuple of 3 positive integers "
            "(height, width, channels), without the batch dimension. "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _filters(base, width):
    return max(1, round(base * width))


def _conv_bn(x, filters, kernel_size, strides, prefix, suffix, init):
    """Convolution + BatchNorm named `{prefix}conv{suffix}`, `...bn...`."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=init(),
        name=f"{prefix}conv{suffix}",
    )(x)
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{prefix}bn{suffix}"
    )(x)


def _plain_body(x, stages, width, init):
    """VGG-style stages of conv-BN-ReLU units, each stage then max-pooled."""
    for s, stage in enumerate(stages, start=1):
        for c, base_filters in enumerate(stage, start=1):
            x = _conv_bn(
                x, _filters(base_filters, width), 3, 1, f"stage{s}_", c, init
            )
            x = keras.layers.ReLU(name=f"stage{s}_relu{c}")(x)
            x = _dropout(x, init, f"stage{s}_drop{c}")
        height, width_px = x.shape[1], x.shape[2]
        # Pooling a 1-pixel-wide map with "valid" padding would leave no
        # pixels at all.
        if height >= 2 and width_px >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"stage{s}_pool")(x)
    return x


def _resnet_body(x, stem_filters, stage_filters, blocks, width, init):
    """A 3x3 stem and stages of BasicBlocks, as in CIFAR ResNets."""
    x = _conv_bn(x, _filters(stem_filters, width), 3, 1, "stem_", "", init)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for s, (base_filters, num_blocks) in enumerate(
        zip(stage_filters, blocks), start=1
    ):
        for b in range(1, num_blocks + 1):
            strides = 2 if s > 1 and b == 1 else 1
            x = _basic_block(
                x,
                _filters(base_filters, width),
                strides,
                f"stage{s}_block{b}_",
                init,
            )
    return x


def _basic_block(x, filters, strides, prefix, init):
    """The two-convolution residual block of He et al. (2016).

    The block ends in the ReLU `{prefix}out`, the single tensor that both
    the residual branch and the shortcut flow into.
    """
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{prefix}proj_", "", init)
    y = _conv_bn(x, filters, 3, strides, prefix, 1, init)
    y = keras.layers.ReLU(name=f"{prefix}relu1")(y)
    y = _dropout(y, init, f"{prefix}drop")
    y = _conv_bn(y, filters, 3, 1, prefix, 2, init)
    y = keras.layers.Add(name=f"{prefix}add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}out")(y)


def _dropout(x, init, name):
    if not init.dropout:
        return x
    return keras.layers.SpatialDropout2D(init.dropout, name=name)(x)


def _build_application(name, input_shape, num_classes, width, seed):
    if width != 1.0:
        raise ValueError(
            f"`width` must be 1.0 for {name!r}: it is built by "
            "keras.applications, which has no width multiplier. Use "
            "'resnet18' or 'resnet20' for a narrower ResNet. "
            f"Received: width={width!r}"
        )
    if seed is not None:
        keras.utils.set_random_seed(seed)
    application = getattr(keras.applications, _APPLICATIONS[name])
    return application(
        weights=None,
        input_shape=input_shape,
        classes=num_classes,
        name=name,
    )
