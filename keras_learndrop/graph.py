"""Where a Keras model can be cut: its chain of units.

A **cut** is a tensor of the model's layer graph through which every path
from the model's input to its output passes. A **unit** is everything
between two consecutive cuts that holds a learning layer (a layer with
trainable weights that is not a normalization layer); layers without such
weights (activations, pooling, padding, BatchNorm) join the unit before them,
or the first unit when they come before any learning layer. In a Sequential
VGG a unit is one conv with its BatchNorm, activation and pooling; in a
ResNet a cut falls only between residual blocks, so one block is one unit.

Cuts are found on the Keras graph itself: after sorting the graph's nodes in
topological order, a tensor is a cut exactly when it is the only tensor
alive (produced before and consumed after) between two consecutive nodes.
Nested functional models (a `keras.applications` backbone inside a
`Sequential`) are expanded into their own nodes, so their blocks are units
too. A layer called on both sides of a cut (a shared layer) cannot be frozen
on one side only, so the units between its calls are merged into one.

`UnitChain.forward()` runs any stretch of units on a tensor without building
new Keras models, so the user's model and its layers are never modified.
"""

import dataclasses

from keras_learndrop import keras_internals
from keras_learndrop.backend import keras

_NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


@dataclasses.dataclass(frozen=True)
class _Step:
    """One call in the flattened graph: an operation, or an alias.

    An alias step maps a tensor of an enclosing model onto the input (or
    output) tensor of a nested model, so nested graphs run inline.
    """

    node: object  # keras Node, or None for an alias
    inputs: tuple  # ids of the KerasTensors read
    outputs: tuple  # ids of the KerasTensors written


@dataclasses.dataclass(frozen=True)
class Unit:
    """A stretch of the model between two cuts.

    Attributes:
        index: Integer. Position of the unit in the chain, from 0.
        name: String. Name of the unit's first learning layer.
        layers: Tuple of the Keras layers called in the unit, in order.
        input: The `KerasTensor` of the cut entering the unit.
        output: The `KerasTensor` of the cut leaving the unit.
    """

    index: int
    name: str
    layers: tuple
    input: object
    output: object
    steps: tuple = dataclasses.field(repr=False)

    @property
    def trainable_weights(self):
        """The unit's weights that training would update now."""
        return _unique(
            w
            for layer in self.layers
            for w in getattr(layer, "trainable_weights", ())
        )

    @property
    def output_shape(self):
        """The shape of the cut after the unit, batch dimension included."""
        return tuple(self.output.shape)


class UnitChain:
    """The ordered units of a model, and a runner for stretches of them.

    Args:
        model: A built `keras.Sequential` or functional `keras.Model` with
            one input and one output.

    Raises:
        TypeError: if `model` is not a Keras model with a layer graph.
        ValueError: if it has several inputs or outputs, or is not built.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv2"),
    ...     keras.layers.GlobalAveragePooling2D(name="pool"),
    ...     keras.layers.Dense(2, name="dense"),
    ... ])
    >>> chain = UnitChain(model)
    >>> [[layer.name for layer in unit.layers] for unit in chain.units]
    [['conv1'], ['conv2', 'pool'], ['dense']]
    """

    def __init__(self, model):
        graph = _functional_graph(model)
        self.model = model
        self.input = graph.inputs[0]
        self.output = graph.outputs[0]
        steps = _flatten(graph)
        steps, cuts = _live_steps_and_cuts(steps, self.input, self.output)
        self.units = _group_units(steps, cuts, self.input, self.output)

    def __len__(self):
        return len(self.units)

    def layers_of(self, start, stop):
        """Returns the layers of units `start` to `stop - 1`, in order."""
        return _unique(
            layer for unit in self.units[start:stop] for layer in unit.layers
        )

    def cut_tensor(self, index):
        """Returns the tensor of the cut before unit `index`.

        `cut_tensor(0)` is the model input, `cut_tensor(len(chain))` its
        output.
        """
        if index == len(self.units):
            return self.units[-1].output
        return self.units[index].input

    def forward(self, x, start, stop, training=None, augmentation_only=False):
        """Runs units `start` to `stop - 1` on `x`, the cut before `start`.

        Args:
            x: Tensor. The value of the cut before unit `start`.
            start: Integer. First unit to run.
            stop: Integer. One past the last unit to run.
            training: Boolean or `None`. Passed to every layer whose `call`
                takes a `training` argument, as `keras.Model.__call__` does.
            augmentation_only: Boolean. Run every layer but Keras's image
                augmentation layers in inference mode (`training=False`);
                those get `training`. For a frozen stem this switches off
                its `Dropout` and noise (frozen `BatchNormalization` runs in
                inference mode anyway) and keeps the input augmentation.

        Returns:
            The value of the cut after unit `stop - 1` (`x` when
            `start == stop`).
        """
        if start == stop:
            return x
        values = {id(self.units[start].input): x}
        for unit in self.units[start:stop]:
            for step in unit.steps:
                step_training = training
                if augmentation_only and not (
                    step.node is not None
                    and keras_internals.is_input_augmentation(
                        step.node.operation
                    )
                ):
                    step_training = False
                _run_step(step, values, step_training)
        return values[id(self.units[stop - 1].output)]


def _functional_graph(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "LearnDrop needs a `keras.Model`. "
            f"Received: model={model!r} of type {type(model).__name__}."
        )
    graph = keras_internals.functional_graph(model)
    if isinstance(model, keras.Sequential):
        if not model.built or graph is None:
            raise ValueError(
                f"The Sequential model {model.name!r} is not built, so its "
                "layer graph is unknown. Build it first: start it with "
                "`keras.Input(shape)`, call `model.build(input_shape)`, or "
                "call it on a batch."
            )
    if graph is None:
        raise ValueError(
            f"The model {model.name!r} (class {type(model).__name__}) is a "
            "subclassed model without a layer graph, so LearnDrop cannot "
            "find where to cut it. LearnDrop supports `keras.Sequential` "
            "and functional models built with `keras.Model(inputs, "
            "outputs)`; wrap the layers of your model in one of these."
        )
    return graph


def _single_input_output(graph, model):
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            f"LearnDrop supports models with exactly one input and one "
            f"output. Received: model {model.name!r} with "
            f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs. "
            "Merge the inputs (e.g. concatenate them) or train the model "
            "without LearnDrop."
        )


def _topological_nodes(graph):
    return [
        node for node in keras_internals.graph_nodes(graph) if not node.is_input
    ]


def _flatten(graph, model=None):
    """Lists the graph's calls in topological order, nested models inline."""
    _single_input_output(graph, model or graph)
    steps = []
    for node in _topological_nodes(graph):
        operation = node.operation
        inner = _nested_graph(operation)
        inputs = tuple(id(t) for t in node.input_tensors)
        outputs = tuple(id(t) for t in node.output_tensors)
        if inner is None:
            steps.append(_Step(node, inputs, outputs))
            continue
        _single_input_output(inner, operation)
        steps.append(_Step(None, inputs, (id(inner.inputs[0]),)))
        steps.extend(_flatten(inner, operation))
        steps.append(_Step(None, (id(inner.outputs[0]),), outputs))
    return steps


def _nested_graph(operation):
    if not isinstance(operation, keras.Model):
        return None
    graph = keras_internals.functional_graph(operation)
    if graph is not None:
        return graph
    if not isinstance(operation, keras.Sequential):
        raise ValueError(
            f"The model contains the subclassed model {operation.name!r} "
            f"(class {type(operation).__name__}) as a layer. LearnDrop "
            "cannot see inside it; build it as a functional or Sequential "
            "model instead."
        )
    return None


def _live_steps_and_cuts(steps, model_input, model_output):
    """Returns the steps that lead to the output, and their cuts.

    Each cut is `(i, tensor_id)`: the only tensor alive after step `i`.

    Steps that do not lead to the output are ignored; a cut is a step
    boundary with exactly one live tensor.
    """
    needed = {id(model_output)}
    useful = [False] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        if any(t in needed for t in steps[i].outputs):
            useful[i] = True
            needed.update(steps[i].inputs)
    steps = [s for s, keep in zip(steps, useful) if keep]
    last_use = {}
    for i, step in enumerate(steps):
        for t in step.inputs:
            last_use[t] = i
    last_use[id(model_output)] = len(steps)
    live = {id(model_input)}
    cuts = []
    for i, step in enumerate(steps):
        live.update(step.outputs)
        live = {t for t in live if last_use.get(t, -1) > i}
        if len(live) == 1:
            cuts.append((i, next(iter(live))))
    return steps, cuts


def _learnable_weights(operation):
    """Weights that training would update if the layer were trainable.

    A layer the user froze (`trainable=False`) still counts, so a frozen
    backbone keeps its own units; BatchNorm moving statistics do not.
    Keras 3 clears `variable.trainable` when a layer is frozen, but keeps
    the variables created as trainable apart.
    """
    if not isinstance(operation, keras.layers.Layer):
        return []
    return [
        w
        for layer in keras_internals.flatten_layers(operation)
        for w in keras_internals.created_trainable_variables(layer)
    ]


def _is_learning_layer(layer):
    return bool(_learnable_weights(layer)) and not isinstance(
        layer, _NORMALIZATION_LAYERS
    )


def _group_units(steps, cuts, model_input, model_output):
    segments = []
    start, entry = 0, id(model_input)
    for i, tensor_id in cuts:
        segments.append((entry, tuple(steps[start : i + 1]), tensor_id))
        start, entry = i + 1, tensor_id
    if start < len(steps):
        raise ValueError(
            "The model's output is not a cut of its graph; LearnDrop cannot "
            "split this model."
        )
    segments = _merge_weightless(segments)
    segments = _merge_shared_layers(segments)
    tensors = _tensors_by_id(steps, model_input)
    tensors[id(model_output)] = model_output
    units = []
    for index, (entry, seg_steps, exit_) in enumerate(segments):
        layers = _unique(s.node.operation for s in seg_steps if s.node)
        learning = [layer for layer in layers if _is_learning_layer(layer)]
        name = (learning or layers)[0].name if layers else f"unit_{index}"
        units.append(
            Unit(
                index=index,
                name=name,
                layers=tuple(layers),
                input=tensors[entry],
                output=tensors[exit_],
                steps=seg_steps,
            )
        )
    return units


def _segment_learns(segment):
    return any(
        _is_learning_layer(s.node.operation) for s in segment[1] if s.node
    )


def _merge_weightless(segments):
    """Joins each segment without a learning layer to its neighbour."""
    merged = []
    for segment in segments:
        if merged and not (
            _segment_learns(segment) and _segment_learns(merged[-1])
        ):
            merged[-1] = _join(merged[-1], segment)
        else:
            merged.append(segment)
    return merged


def _join(first, last):
    return (first[0], first[1] + last[1], last[2])


def _merge_shared_layers(segments):
    """Merges segments so that every weighted layer lies in one unit."""
    while True:
        owner = {}
        for index, (_, seg_steps, _) in enumerate(segments):
            for step in seg_steps:
                if step.node is None or not getattr(
                    step.node.operation, "weights", None
                ):
                    continue
                first = owner.setdefault(id(step.node.operation), index)
                if first != index:
                    merged = segments[first]
                    for later in segments[first + 1 : index + 1]:
                        merged = _join(merged, later)
                    segments = (
                        segments[:first] + [merged] + segments[index + 1 :]
                    )
                    break
            else:
                continue
            break
        else:
            return segments


def _tensors_by_id(steps, model_input):
    tensors = {id(model_input): model_input}
    for step in steps:
        if step.node is None:
            continue
        for t in step.node.input_tensors:
            tensors[id(t)] = t
        for t in step.node.output_tensors:
            tensors[id(t)] = t
    return tensors


def _run_step(step, values, training):
    if step.node is None:
        values[step.outputs[0]] = values[step.inputs[0]]
        return
    kwargs = {}
    # `Layer.__call__` takes `training` for every layer: it passes it to a
    # `call` that takes it and to the layers nested in one that does not.
    if training is not None and isinstance(
        step.node.operation, keras.layers.Layer
    ):
        kwargs["training"] = training
    outputs = keras_internals.call_node(step.node, values, **kwargs)
    for key, value in zip(step.outputs, keras.tree.flatten(outputs)):
        values[key] = value


def _unique(items):
    seen, result = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            result.append(item)
    return tuple(result)
