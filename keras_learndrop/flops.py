"""Analytic forward FLOPs of Keras layers and models.

The callback, the example runners and the benchmarks all need the same
number: how many floating point operations one sample costs in the forward
pass, and how much of that lives in the leading layers that can be frozen
and dropped. This module counts them from the layer configuration and the
symbolic shapes of the Keras graph, without running the model.

Conventions:

- Counts are per sample: the leading (batch) dimension of every shape is
  ignored, whatever its value.
- A multiply-add counts as 2 FLOPs, any other arithmetic operation as 1.
  This is the convention of TensorFlow's profiler
  (`tf.compat.v1.profiler`), which counts `Conv2D` as
  `2 * kernel_h * kernel_w * in_channels * output_elements` and `MatMul` as
  `2 * k * output_elements`, and a bias add (`BiasAdd`, `AddV2`) as 1 per
  output element. Convolutions and `Dense` layers therefore count exactly
  what the profiler counts for their kernel and bias.
- The forward pass is counted in inference mode: `Dropout`, noise layers
  and random augmentation layers are identity maps and count 0, and
  `BatchNormalization` uses its moving statistics.

FLOPs per element of the output (the input for global pooling):

| Layer                                             | FLOPs per element |
| ------------------------------------------------- | ----------------- |
| Bias add of a convolution, `Dense`, `EinsumDense` | 1                 |
| Fused `activation=` of a convolution or `Dense`   | as the activation |
| `Activation`, `ReLU`, `LeakyReLU`, `PReLU`, `ELU` | 1 (`linear`: 0)   |
| `Softmax`, `activation="softmax"`/`"log_softmax"` | 5                 |
| `BatchNormalization`                              | 2, +1 `scale`,    |
|                                                   | +1 `center`       |
| `LayerNormalization`, `GroupNormalization`        | 5, +1 `scale`,    |
|                                                   | +1 `center`       |
| `RMSNormalization`                                | 4                 |
| `UnitNormalization`                               | 3                 |
| `Add`, `Subtract`, `Multiply`, `Maximum`,         | inputs - 1        |
| `Minimum`                                         |                   |
| `Average`                                         | inputs            |
| `MaxPooling*`, `AveragePooling*`                  | pool window size  |
| `GlobalAveragePooling*`, `GlobalMaxPooling*`,     | 1 per input       |
| `AdaptiveAveragePooling*`, `AdaptiveMaxPooling*`  | element           |
| `Rescaling`, `Normalization`                      | 2                 |
| `Resizing`, `UpSampling2D`: nearest / bilinear /  | 0 / 8 / 32        |
| any other interpolation                           |                   |
| Shape-only layers (`InputLayer`, `Reshape`,       | 0                 |
| `Flatten`, `Concatenate`, `ZeroPadding*`,         |                   |
| `Cropping*`, `Permute`, `Identity`, ...)          |                   |
| `Dropout` and noise layers, random augmentation   | 0                 |
| layers (`RandomFlip`, `RandomRotation`, ...)      |                   |
| `Embedding`                                       | 0 (a lookup)      |

Normalisation: `BatchNormalization` subtracts the moving mean and multiplies
by the inverse standard deviation (2), then scales and shifts.
`LayerNormalization` and `GroupNormalization` first compute the statistics
of the sample: a sum for the mean, a centring subtraction, a square and a
sum for the variance, and a multiplication by the inverse standard
deviation (5). Per-channel work such as the `rsqrt` is negligible and not
counted. Softmax counts 5 per element, as TensorFlow's profiler does (2 to
shift the logits, 1 exponential, 2 to normalise).

Convolutions with `groups=g` count `2 * prod(kernel_size) * in_channels / g`
per output element; `DepthwiseConv*` `2 * prod(kernel_size)` per output
element; `SeparableConv*` the depthwise part plus a 1x1 convolution;
`Conv*Transpose` `2 * prod(kernel_size) * filters` per input element (each
input element is scattered into the output once per kernel tap); `Dense`
`2 * input_units` per output element on any rank; `Dot`
`2 * reduced_size` per output element.

A nested `keras.Model` used as a layer counts the sum of its own nodes.
Keras operations called directly in a functional graph (`keras.ops.add`,
`keras.ops.relu`, `keras.ops.matmul`, ...) are counted too: element-wise
ops 1 per output element, reductions 1 per input element, `matmul`
`2 * k` per output element, shape ops 0.

Any other layer with weights counts `2 * (number of weight elements)`, the
cost of applying each weight once as a multiply-add, and warns once per
class that the count is a rough estimate. Any other operation without
weights counts 0 and warns the same way.
"""

import math
import numbers
import sys
import warnings

from keras_learndrop import keras_internals
from keras_learndrop.backend import keras

_SOFTMAX_FLOPS_PER_ELEMENT = 5
# Subtract the moving mean, multiply by the inverse standard deviation.
_BATCH_NORM_FLOPS_PER_ELEMENT = 2
# Mean (1), centre (1), square (1) and sum (1) for the variance, normalise (1).
_SAMPLE_NORM_FLOPS_PER_ELEMENT = 5
# Square, sum, multiply by the inverse root mean square, scale.
_RMS_NORM_FLOPS_PER_ELEMENT = 4
# Square, sum, multiply by the inverse norm.
_UNIT_NORM_FLOPS_PER_ELEMENT = 3
# Multiply and add (`Rescaling`), or subtract and divide (`Normalization`).
_PREPROCESSING_FLOPS_PER_ELEMENT = 2
# A multiply-add for each of the 4 taps of bilinear interpolation.
_BILINEAR_FLOPS_PER_ELEMENT = 8
# A multiply-add for each of the 16 taps of bicubic interpolation; used for
# every interpolation other than nearest and bilinear.
_OTHER_INTERPOLATION_FLOPS_PER_ELEMENT = 32

_warned_classes = set()


def _layer_classes(*names):
    """Returns the `keras.layers` classes among `names` that exist."""
    classes = tuple(
        getattr(keras.layers, name)
        for name in names
        if hasattr(keras.layers, name)
    )
    return classes


_CONV_LAYERS = _layer_classes("Conv1D", "Conv2D", "Conv3D")
_DEPTHWISE_CONV_LAYERS = _layer_classes("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE_CONV_LAYERS = _layer_classes("SeparableConv1D", "SeparableConv2D")
_CONV_TRANSPOSE_LAYERS = _layer_classes(
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"
)
_POOLING_LAYERS = _layer_classes(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
)
_GLOBAL_POOLING_LAYERS = _layer_classes(
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "AdaptiveAveragePooling1D",
    "AdaptiveAveragePooling2D",
    "AdaptiveAveragePooling3D",
    "AdaptiveMaxPooling1D",
    "AdaptiveMaxPooling2D",
    "AdaptiveMaxPooling3D",
)
_ELEMENTWISE_MERGE_LAYERS = _layer_classes(
    "Add", "Subtract", "Multiply", "Maximum", "Minimum"
)
_ACTIVATION_LAYERS = _layer_classes("ReLU", "LeakyReLU", "PReLU", "ELU")
_SAMPLE_NORM_LAYERS = _layer_classes("LayerNormalization", "GroupNormalization")
_INTERPOLATING_LAYERS = _layer_classes("Resizing", "UpSampling2D")
_ZERO_FLOP_LAYERS = _layer_classes(
    # Shape-only layers.
    "InputLayer",
    "Identity",
    "Reshape",
    "Flatten",
    "Permute",
    "RepeatVector",
    "Concatenate",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling3D",
    "CenterCrop",
    "Masking",
    "ActivityRegularization",
    "Embedding",
    # Identity maps at inference.
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    # Random augmentation: identity at inference.
    "AugMix",
    "CutMix",
    "MixUp",
    "RandAugment",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomCrop",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
)

# Keras operations (`keras.ops.*`, not layers) that can appear as nodes of a
# functional graph, by class name.
_SHAPE_OPS = frozenset(
    [
        "Array",
        "BroadcastTo",
        "Cast",
        "Concatenate",
        "ConvertToTensor",
        "Copy",
        "CropImages",
        "DepthToSpace",
        "Dstack",
        "ExpandDims",
        "Flip",
        "Fliplr",
        "Flipud",
        "GetItem",
        "Hsplit",
        "Hstack",
        "Identity",
        "Moveaxis",
        "OnesLike",
        "Pad",
        "PadImages",
        "Ravel",
        "Repeat",
        "Reshape",
        "Roll",
        "Rot90",
        "SaturateCast",
        "Slice",
        "SpaceToDepth",
        "Split",
        "ArraySplit",
        "Squeeze",
        "Stack",
        "StopGradient",
        "Swapaxes",
        "Take",
        "TakeAlongAxis",
        "Tile",
        "Transpose",
        "Unstack",
        "Vsplit",
        "Vstack",
        "ZerosLike",
    ]
)
_ELEMENTWISE_OPS = frozenset(
    [
        # keras.ops.nn activations.
        "Celu",
        "Elu",
        "Gelu",
        "Glu",
        "HardShrink",
        "HardSigmoid",
        "HardSilu",
        "HardTanh",
        "LeakyRelu",
        "LogSigmoid",
        "Relu",
        "Relu6",
        "Selu",
        "Sigmoid",
        "Silu",
        "SoftShrink",
        "Softplus",
        "Softsign",
        "SparsePlus",
        "SparseSigmoid",
        "Squareplus",
        "TanhShrink",
        "Threshold",
        # keras.ops.numpy and keras.ops.math element-wise maths.
        "Abs",
        "Absolute",
        "Add",
        "Ceil",
        "Clip",
        "Cos",
        "Divide",
        "DivideNoNan",
        "Erf",
        "Exp",
        "Floor",
        "FloorDivide",
        "Log",
        "Log1p",
        "Maximum",
        "Minimum",
        "Multiply",
        "Negative",
        "Power",
        "Reciprocal",
        "Round",
        "Rsqrt",
        "Sign",
        "Sin",
        "Sqrt",
        "Square",
        "Subtract",
        "Tanh",
        "TrueDivide",
        "Where",
    ]
)
_REDUCTION_OPS = frozenset(
    ["Amax", "Amin", "Argmax", "Argmin", "Max", "Mean", "Min", "Prod", "Sum"]
)
_SOFTMAX_OPS = frozenset(["Softmax", "LogSoftmax"])


class _UnknownDimensionError(Exception):
    """A shape has an unknown non-batch dimension."""


def _is_shape(value):
    return isinstance(value, (tuple, list)) and all(
        dim is None or isinstance(dim, numbers.Integral) for dim in value
    )


def _as_shape_list(shapes, arg_name):
    """Normalises one shape or a list of shapes to a list of tuples."""
    if _is_shape(shapes):
        return [tuple(shapes)]
    if isinstance(shapes, (tuple, list)) and all(_is_shape(s) for s in shapes):
        return [tuple(s) for s in shapes]
    raise TypeError(
        f"`{arg_name}` must be a shape tuple such as `(None, 32, 32, 3)` or "
        f"a list of shape tuples. Received: {arg_name}={shapes!r}"
    )


def _elements(shape):
    """Number of elements of one sample of a tensor of shape `shape`."""
    dims = shape[1:]
    if any(dim is None for dim in dims):
        raise _UnknownDimensionError()
    return math.prod(dims)


def _channels(layer, shape):
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return shape[1]
    return shape[-1]


def _activation_flops_per_element(activation):
    """FLOPs per element of a Keras activation function (or `None`)."""
    name = getattr(activation, "__name__", None)
    if activation is None or name == "linear":
        return 0
    if name in ("softmax", "log_softmax"):
        return _SOFTMAX_FLOPS_PER_ELEMENT
    return 1


def _bias_and_activation_flops(layer, output_elements):
    bias = output_elements if getattr(layer, "use_bias", False) else 0
    activation = getattr(layer, "activation", None)
    return bias + output_elements * _activation_flops_per_element(activation)


def _conv_flops(layer, inputs, outputs):
    out = _elements(outputs[0])
    in_channels = _channels(layer, inputs[0])
    groups = getattr(layer, "groups", 1) or 1
    taps = math.prod(layer.kernel_size) * (in_channels // groups)
    return 2 * taps * out + _bias_and_activation_flops(layer, out)


def _depthwise_conv_flops(layer, inputs, outputs):
    out = _elements(outputs[0])
    taps = math.prod(layer.kernel_size)
    return 2 * taps * out + _bias_and_activation_flops(layer, out)


def _separable_conv_flops(layer, inputs, outputs):
    out = _elements(outputs[0])
    depthwise_channels = _channels(layer, inputs[0]) * layer.depth_multiplier
    positions = out // layer.filters
    depthwise = (
        2 * math.prod(layer.kernel_size) * positions * depthwise_channels
    )
    pointwise = 2 * depthwise_channels * out
    return depthwise + pointwise + _bias_and_activation_flops(layer, out)


def _conv_transpose_flops(layer, inputs, outputs):
    taps = math.prod(layer.kernel_size) * layer.filters
    scattered = 2 * taps * _elements(inputs[0])
    return scattered + _bias_and_activation_flops(layer, _elements(outputs[0]))


def _dense_flops(layer, inputs, outputs):
    out = _elements(outputs[0])
    if inputs[0][-1] is None:
        raise _UnknownDimensionError()
    return 2 * inputs[0][-1] * out + _bias_and_activation_flops(layer, out)


def _einsum_dense_flops(layer, inputs, outputs):
    # Every output element is a dot product over the kernel's contracted
    # axes, whose size is the kernel size divided by the kernel's output
    # size; the kernel's output axes are those shared with the output.
    equation = layer.equation.replace(" ", "")
    operands, output_subscripts = equation.split("->")
    kernel_subscripts = operands.split(",")[1]
    kernel_shape = tuple(layer.kernel.shape)
    contracted = math.prod(
        size
        for axis, size in zip(kernel_subscripts, kernel_shape, strict=True)
        if axis not in output_subscripts
    )
    out = _elements(outputs[0])
    bias = out if getattr(layer, "bias", None) is not None else 0
    activation = getattr(layer, "activation", None)
    return (
        2 * contracted * out
        + bias
        + out * _activation_flops_per_element(activation)
    )


def _dot_flops(layer, inputs, outputs):
    axes = layer.axes
    axis = axes[0] if isinstance(axes, (tuple, list)) else axes
    rank = len(inputs[0])
    reduced = inputs[0][axis % rank]
    if reduced is None:
        raise _UnknownDimensionError()
    flops = 2 * reduced * _elements(outputs[0])
    if layer.normalize:
        flops += sum(
            _UNIT_NORM_FLOPS_PER_ELEMENT * _elements(shape) for shape in inputs
        )
    return flops


def _pooling_flops(layer, inputs, outputs):
    return math.prod(layer.pool_size) * _elements(outputs[0])


def _global_pooling_flops(layer, inputs, outputs):
    return _elements(inputs[0])


def _elementwise_merge_flops(layer, inputs, outputs):
    return (len(inputs) - 1) * _elements(outputs[0])


def _average_flops(layer, inputs, outputs):
    # `len(inputs) - 1` additions and one division per element.
    return len(inputs) * _elements(outputs[0])


def _activation_layer_flops(layer, inputs, outputs):
    return _elements(outputs[0]) * _activation_flops_per_element(
        layer.activation
    )


def _softmax_layer_flops(layer, inputs, outputs):
    return _SOFTMAX_FLOPS_PER_ELEMENT * _elements(outputs[0])


def _unit_flops(layer, inputs, outputs):
    return _elements(outputs[0])


def _affine_flops(layer):
    return int(bool(layer.scale)) + int(bool(layer.center))


def _batch_norm_flops(layer, inputs, outputs):
    per_element = _BATCH_NORM_FLOPS_PER_ELEMENT + _affine_flops(layer)
    return per_element * _elements(outputs[0])


def _sample_norm_flops(layer, inputs, outputs):
    per_element = _SAMPLE_NORM_FLOPS_PER_ELEMENT + _affine_flops(layer)
    return per_element * _elements(outputs[0])


def _rms_norm_flops(layer, inputs, outputs):
    return _RMS_NORM_FLOPS_PER_ELEMENT * _elements(outputs[0])


def _unit_norm_flops(layer, inputs, outputs):
    return _UNIT_NORM_FLOPS_PER_ELEMENT * _elements(outputs[0])


def _preprocessing_flops(layer, inputs, outputs):
    return _PREPROCESSING_FLOPS_PER_ELEMENT * _elements(outputs[0])


def _interpolation_flops(layer, inputs, outputs):
    interpolation = str(getattr(layer, "interpolation", "nearest")).lower()
    if interpolation == "nearest":
        return 0
    if interpolation == "bilinear":
        return _BILINEAR_FLOPS_PER_ELEMENT * _elements(outputs[0])
    return _OTHER_INTERPOLATION_FLOPS_PER_ELEMENT * _elements(outputs[0])


def _zero_flops(layer, inputs, outputs):
    return 0


def _time_distributed_flops(layer, inputs, outputs):
    steps = inputs[0][1]
    if steps is None:
        raise _UnknownDimensionError()
    step_inputs = [(None,) + tuple(shape[2:]) for shape in inputs]
    step_outputs = [(None,) + tuple(shape[2:]) for shape in outputs]
    return steps * layer_flops(layer.layer, step_inputs, step_outputs)


def _nested_model_flops(model, inputs, outputs):
    graph = keras_internals.functional_graph(model)
    if graph is None and not isinstance(model, keras.Sequential):
        return None  # A subclassed model: no graph to walk.
    graph = _functional_graph(model)
    recorded = [tuple(t.shape) for t in graph.inputs]
    if len(recorded) == len(inputs) and all(
        r[1:] == i[1:] for r, i in zip(recorded, inputs, strict=True)
    ):
        return _graph_flops(graph)
    # The model was built on other shapes (e.g. `(None, None, 3)` images):
    # push this call's shapes through its graph.
    return _propagated_flops(graph, inputs)


_LAYER_RULES = (
    ((keras.Sequential, keras.Model), _nested_model_flops),
    (_CONV_LAYERS, _conv_flops),
    (_DEPTHWISE_CONV_LAYERS, _depthwise_conv_flops),
    (_SEPARABLE_CONV_LAYERS, _separable_conv_flops),
    (_CONV_TRANSPOSE_LAYERS, _conv_transpose_flops),
    (_layer_classes("Dense"), _dense_flops),
    (_layer_classes("EinsumDense"), _einsum_dense_flops),
    (_layer_classes("Dot"), _dot_flops),
    (_POOLING_LAYERS, _pooling_flops),
    (_GLOBAL_POOLING_LAYERS, _global_pooling_flops),
    (_ELEMENTWISE_MERGE_LAYERS, _elementwise_merge_flops),
    (_layer_classes("Average"), _average_flops),
    (_layer_classes("Activation"), _activation_layer_flops),
    (_layer_classes("Softmax"), _softmax_layer_flops),
    (_ACTIVATION_LAYERS, _unit_flops),
    (_layer_classes("BatchNormalization"), _batch_norm_flops),
    (_SAMPLE_NORM_LAYERS, _sample_norm_flops),
    (_layer_classes("RMSNormalization"), _rms_norm_flops),
    (_layer_classes("UnitNormalization"), _unit_norm_flops),
    (_layer_classes("Rescaling", "Normalization"), _preprocessing_flops),
    (_INTERPOLATING_LAYERS, _interpolation_flops),
    (_layer_classes("TimeDistributed"), _time_distributed_flops),
    (_ZERO_FLOP_LAYERS, _zero_flops),
)


def _op_flops(op, inputs, outputs):
    """FLOPs of a Keras operation that is not a layer, or `None`."""
    name = type(op).__name__
    if name in _SHAPE_OPS:
        return 0
    if name in _ELEMENTWISE_OPS:
        return _elements(outputs[0])
    if name in _SOFTMAX_OPS:
        return _SOFTMAX_FLOPS_PER_ELEMENT * _elements(outputs[0])
    if name in _REDUCTION_OPS:
        return _elements(inputs[0])
    if name == "Matmul":
        if inputs[0][-1] is None:
            raise _UnknownDimensionError()
        return 2 * inputs[0][-1] * _elements(outputs[0])
    return None


def _weight_elements(layer):
    return sum(math.prod(w.shape) for w in getattr(layer, "weights", []))


def _user_stacklevel():
    """The `stacklevel` that points a warning at the caller of this module.

    Counting recurses through nested models (and Keras' graph runner), so
    the depth of the user's call is not fixed.
    """
    frame, level, outermost = sys._getframe(1), 1, 1
    while frame is not None:
        if frame.f_globals.get("__name__") == __name__:
            outermost = level
        frame, level = frame.f_back, level + 1
    # `warnings.warn` is called one frame below our caller.
    return outermost + 1


def _estimate_unknown(layer):
    """The documented fallback count for an unsupported operation."""
    cls = type(layer)
    weights = _weight_elements(layer)
    if cls not in _warned_classes:
        _warned_classes.add(cls)
        if weights:
            how = (
                "counting 2 FLOPs per weight element "
                f"(2 * {weights} = {2 * weights} for '{layer.name}') as a "
                "rough estimate"
            )
        else:
            how = "counting it as 0 FLOPs"
        warnings.warn(
            f"keras_learndrop.flops cannot count the FLOPs of "
            f"{cls.__module__}.{cls.__qualname__} analytically; {how}. "
            "FLOP totals that include it are estimates. Layers counted "
            "exactly are listed in the `keras_learndrop.flops` docstring; "
            "for anything else, add its count by hand or build the model "
            "from supported layers.",
            stacklevel=_user_stacklevel(),
        )
    return 2 * weights


def layer_flops(layer, input_shapes, output_shapes=None):
    """Counts the forward FLOPs of one call of a Keras layer, per sample.

    A multiply-add counts as 2 FLOPs. The per-layer constants are listed in
    the module docstring.

    Args:
        layer: A `keras.layers.Layer`, a nested `keras.Model`, or a Keras
            operation (`keras.ops.*`) as found in a functional graph.
        input_shapes: Tuple, the shape of the input including the leading
            batch dimension (e.g. `(None, 32, 32, 3)`), or a list of such
            tuples for layers with several inputs (`Add`, `Concatenate`).
            The batch dimension is ignored.
        output_shapes: Tuple or list of tuples, the shapes of the outputs in
            the same form. Defaults to `None`, which infers them with
            `layer.compute_output_spec`.

    Returns:
        Integer, the FLOPs of the call for one sample.

    Raises:
        TypeError: If the shapes are neither a shape tuple nor a list of
            them.
        ValueError: If a non-batch dimension that the count depends on is
            unknown (`None`).

    Example:

    >>> conv = keras.layers.Conv2D(8, 3, padding="same")
    >>> layer_flops(conv, (None, 16, 16, 3), (None, 16, 16, 8))
    112640
    """
    inputs = _as_shape_list(input_shapes, "input_shapes")
    if output_shapes is None:
        specs = layer.compute_output_spec(
            *[keras.KerasTensor(shape) for shape in inputs]
        )
        output_shapes = [tuple(x.shape) for x in keras.tree.flatten(specs)]
    outputs = _as_shape_list(output_shapes, "output_shapes")
    try:
        if isinstance(layer, keras.layers.Layer):
            for classes, rule in _LAYER_RULES:
                if classes and isinstance(layer, classes):
                    flops = rule(layer, inputs, outputs)
                    if flops is not None:
                        return int(flops)
                    break
        else:
            flops = _op_flops(layer, inputs, outputs)
            if flops is not None:
                return int(flops)
    except _UnknownDimensionError:
        raise ValueError(
            f"Cannot count the FLOPs of '{layer.name}' "
            f"({type(layer).__name__}): they depend on a dimension that is "
            f"unknown. Received: input_shapes={inputs}, "
            f"output_shapes={outputs}. Build the model on a fully defined "
            "input shape, or pass `input_shape` to `model_flops`."
        ) from None
    return _estimate_unknown(layer)


def node_flops(node):
    """Counts the forward FLOPs of one node of a Keras functional graph.

    Args:
        node: A Keras 3 graph node (see `keras_internals.graph_nodes`):
            one call of `node.operation` on `node.input_tensors`, giving
            `node.output_tensors`.

    Returns:
        Integer, the FLOPs of the call for one sample, as `layer_flops`
        counts them. Input nodes count 0.

    Raises:
        TypeError: If `node` is not a Keras graph node.
        ValueError: If a shape the count depends on is unknown.
    """
    if not all(
        hasattr(node, attr)
        for attr in ("operation", "input_tensors", "output_tensors")
    ):
        raise TypeError(
            "`node` must be a Keras graph node with `operation`, "
            "`input_tensors` and `output_tensors`. "
            f"Received: node={node!r} of type {type(node).__name__}"
        )
    if getattr(node, "is_input", False) or node.operation is None:
        return 0
    return layer_flops(
        node.operation,
        [tuple(t.shape) for t in node.input_tensors],
        [tuple(t.shape) for t in node.output_tensors],
    )


def _functional_graph(model):
    """The functional graph of a Sequential or Functional model."""
    graph = keras_internals.functional_graph(model)
    if isinstance(model, keras.Sequential) and graph is None:
        raise ValueError(
            f"Model '{model.name}' is not built, so the shapes its "
            "FLOPs depend on are unknown. Build the model first, e.g. "
            "by calling it on a batch or passing `input_shape` (or "
            "starting it with `keras.Input(shape=...)`). "
            f"Received: model={model.name!r} with built={model.built}"
        )
    if graph is None:
        raise TypeError(
            "`model` must be a functional or Sequential `keras.Model`, whose "
            "graph of layer calls can be walked. Subclassed models have no "
            f"such graph. Received: model={getattr(model, 'name', model)!r} "
            f"of type {type(model).__name__}"
        )
    return graph


def _graph_flops(graph):
    return sum(node_flops(node) for node in keras_internals.graph_nodes(graph))


def _propagated_flops(graph, input_shapes):
    """Counts the FLOPs of `graph` called on inputs of `input_shapes`."""
    total = 0

    def count_call(operation, *args, **kwargs):
        nonlocal total
        outputs = operation.compute_output_spec(*args, **kwargs)
        inputs = [
            tuple(x.shape)
            for x in keras.tree.flatten((args, kwargs))
            if isinstance(x, keras.KerasTensor)
        ]
        total += layer_flops(
            operation,
            inputs,
            [tuple(x.shape) for x in keras.tree.flatten(outputs)],
        )
        return outputs

    inputs = [
        keras.KerasTensor((None,) + tuple(shape[1:]), dtype=x.dtype)
        for shape, x in zip(input_shapes, graph.inputs, strict=True)
    ]
    keras_internals.run_through_graph(graph, inputs, count_call)
    return total


def model_flops(model, input_shape=None):
    """Counts the forward FLOPs of a built Keras model, per sample.

    Sums `node_flops` over every node of the model's graph, recursing into
    nested models, so a layer called twice is counted twice.

    Args:
        model: A built functional or `keras.Sequential` model.
        input_shape: Optional tuple, the shape of one input sample without
            the batch dimension (as in `keras.Input(shape=...)`), or a list
            of such tuples for a model with several inputs. Use it for a
            model built on unknown dimensions, such as a CNN on
            `(None, None, 3)` images. Defaults to `None`, which counts on
            the shapes the model was built on.

    Returns:
        Integer, the forward FLOPs of one sample.

    Raises:
        ValueError: If the model is not built, if `input_shape` does not
            match the model's inputs, or if a shape the count depends on is
            unknown.
        TypeError: If `model` is a subclassed model or not a model.

    Example:

    >>> model = keras.Sequential(
    ...     [keras.Input(shape=(8,)), keras.layers.Dense(4)]
    ... )
    >>> model_flops(model)  # 2 * 8 * 4 multiply-adds + 4 bias adds.
    68
    """
    graph = _functional_graph(model)
    if input_shape is None:
        return _graph_flops(graph)
    sample_shapes = _as_shape_list(input_shape, "input_shape")
    expected = [tuple(t.shape)[1:] for t in graph.inputs]
    if len(sample_shapes) != len(expected) or any(
        len(s) != len(e) for s, e in zip(sample_shapes, expected, strict=True)
    ):
        raise ValueError(
            f"`input_shape` must give one shape per input of model "
            f"'{model.name}', without the batch dimension, like "
            f"{expected}. Received: input_shape={input_shape!r}"
        )
    return _propagated_flops(graph, [(None,) + s for s in sample_shapes])
