"""The one place where keras-learndrop relies on Keras (and tf.data) internals.

LearnDrop runs inside `keras.Model.fit`, walks the layer graph of the model
and rebuilds its training step. Keras has public routes for most of that
(`Callback.params["steps"]`, `Model.compute_loss`, `compute_metrics`,
`optimizer.apply_gradients`, `keras.config.is_interactive_logging_enabled`),
and the rest of the package uses them. What follows has none: each function
here wraps one reliance on a private name or an undocumented behaviour of
Keras 3 on the TensorFlow backend, and says why no public route exists.
`tests/keras_internals_test.py` pins each one with a test of the same name,
so that a Keras release that changes one fails that test by name.

Tested with the oldest and the newest pair of `setup.cfg`'s range (see
`scripts/test_versions.sh`).

The `fit` call:

- `fit_epoch_iterator`: the local `epoch_iterator` of the TensorFlow
  trainer's `fit`, read off the call stack. Keras hands callbacks only
  `params` (`epochs`, `steps`, `verbose`); LearnDrop also needs to know how
  many batches the data holds, to pause the input pipeline in replay epochs,
  and to tell its own `fit` from a later one.
- `data_batches`: `EpochIterator.data_adapter.num_batches`, the batches in
  one pass over the data; `params["steps"]` is `steps_per_epoch` when given,
  which may cover the data more or less than once.
- `pause_fit_input`: `EpochIterator._get_iterator`, which `fit` calls at the
  start of each epoch; an empty stand-in keeps a replay epoch (which never
  reads `fit`'s input) from starting the input pipeline's prefetching.
- `symbolic_build`: `Model._symbolic_build(iterator=...)`. A model without
  an `Input` is built by Keras in its first training step, after
  `on_train_begin`; LearnDrop needs the layer graph before that.
- `install_train_function`: `fit` calls `make_train_function()` before
  `on_train_begin` and then `model.train_function(iterator)` once per step,
  so a function set in `on_train_begin` serves the whole `fit`. The
  attribute is public, this order of calls is not documented.
- `fit_validation_iterator`: the `EpochIterator` of the validation inside
  `fit`: `fit` runs it through `evaluate(..., _use_cached_eval_dataset=True)`
  on `Model._eval_epoch_iterator`, and calls the callbacks' `on_test_begin`
  there as a user's own `evaluate(callbacks=...)` would. Only this tells
  the validation of `fit` (which LearnDrop may serve from cached features)
  from any other evaluation (which always runs the whole model).
- `install_test_function`: `evaluate` calls `make_test_function()` before
  `on_test_begin` and then `model.test_function(iterator)` once per step,
  so a function set in `on_test_begin` serves that evaluation.
- `repeats_leading_batches`: whether the data adapter is Keras's array
  adapter, which (unshuffled, as validation is) yields the same leading
  batches in every pass, so `validation_steps` that stop early still see
  the same samples each time.
- `fit_callbacks`: the local `callbacks` of the TensorFlow trainer's `fit`
  (the `CallbackList` it built around the user's callbacks, with the
  `History` and `ProgbarLogger` it added), read off the call stack. A
  callback is handed only the model and `params`, never its fellow
  callbacks.
- `fit_data`: the locals `val_x` and `x` of the TensorFlow trainer's
  `fit` (after `validation_split` took its part), read off the call stack.
  Callbacks are handed no data, and the probe set of `drift` is drawn from
  them once per `fit` (before its epoch iterator reads anything).
- `filter_progress_logs`: `CallbackList.callbacks`, and the
  `ProgbarLogger` printing its epoch's line from the `logs` it gets in
  `on_epoch_end`. All callbacks share one `logs` dict, and Keras has no
  per-callback view of it, so the only way to keep LearnDrop's detailed
  keys off the progress line (and in `History`, `CSVLogger` and
  `TensorBoard`) is to hand that logger a filtered copy.

The input of `fit`:

- `fit_input`: the `DataAdapter` that `EpochIterator.data_adapter` holds
  (`ArrayDataAdapter`, `TFDatasetAdapter`, `PyDatasetAdapter`,
  `GeneratorDataAdapter`), and the dataset or `PyDataset` inside it
  (`get_tf_dataset()`, `py_dataset`). `fit` tells callbacks nothing about
  its data, and whether the inputs are random depends on what they are.
- `dataset_functions`: `tf.data.Dataset._inputs()` (the datasets a
  dataset reads from) and `_functions()` (the traced functions of a `map`,
  `filter`, ...); tf.data exports no public way to look inside a pipeline.
  (`Dataset._as_serialized_graph` would too, but it copies every tensor
  the pipeline holds, such as in-memory images, into the graph: 4 s and
  2.5 GB more memory for CIFAR-10's training images.)

The layer graph:

- `functional_graph`, `graph_nodes`: `Sequential._functional` and
  `Functional._nodes_by_depth`, and the `Node` objects in it
  (`operation`, `input_tensors`, `output_tensors`, `is_input`). The public
  `Model.layers` lists layers, not calls, so it misses shared layers,
  `keras.ops` calls and the order of the graph.
- `call_node`: `Node.arguments.fill_in`, the arguments of one recorded
  call (keyword arguments included) with tensors of our choosing.
- `run_through_graph`: `Function._run_through_graph`, which pushes new
  shapes through the graph operation by operation (for FLOPs of a model
  built on unknown image sizes). Its `operation_fn` argument is required in
  Keras 3.10 and optional in later releases, so it is always passed.
- `flatten_layers`: `Layer._flatten_layers`, every layer nested in a layer
  (the public `Model.layers` lists only the direct children).
- `created_trainable_variables`: `Layer._trainable_variables`, the variables
  a layer created as trainable. `trainable_weights` is empty once the user
  froze the layer, and such a layer must keep its unit.
- `seed_generators`: random layers (`Dropout`, `RandomFlip`, noise) keep
  their `keras.random.SeedGenerator` as an attribute; there is no public
  "is random" flag on a layer.
- `is_input_augmentation`: Keras's random image augmentation layers
  (`RandomFlip`, `RandomCrop`, ...) share the base class
  `BaseImagePreprocessingLayer`, which `keras.layers` does not export. It
  tells them (which change the data) from `Dropout` and noise layers.

The training step (mirrors the TensorFlow trainer's `train_step`):

- `clear_losses`: `Layer._clear_losses`. LearnDrop calls the head's layers
  one by one, not through `Model.__call__`, which is what clears the losses
  (activity regularizers) of the previous step.
- `loss_tracker`: `Trainer._loss_tracker`, the `Mean` that reports `loss` in
  the logs; `Model.metrics` lists it without a name to find it by.
- `reduce_per_replica`, `unscale_loss_for_distribution`: functions of
  `keras.src` that the TensorFlow trainer uses to combine the logs of the
  replicas and to undo the loss scaling of a distribution strategy.
"""

import inspect

from keras.src.backend.tensorflow import trainer as _tf_trainer
from keras.src.layers.preprocessing.image_preprocessing import (
    base_image_preprocessing_layer as _image_preprocessing,
)
from keras.src.losses import loss as _loss_module
from keras.src.trainers.data_adapters import array_data_adapter as _arrays
from keras.src.trainers.data_adapters import (
    generator_data_adapter as _generators,
)
from keras.src.trainers.data_adapters import py_dataset_adapter as _py_datasets
from keras.src.trainers.data_adapters import tf_dataset_adapter as _datasets

from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

# ---- the fit call -------------------------------------------------------


def fit_epoch_iterator(model):
    """Returns the `EpochIterator` of the innermost running `model.fit`.

    Args:
        model: The `keras.Model` whose `fit` is running.

    Returns:
        The iterator, or `None` outside a `fit` of `model` (or if Keras
        renamed the local).
    """
    return _fit_local(model, "epoch_iterator")


def fit_callbacks(model):
    """Returns the `CallbackList` of the innermost running `model.fit`.

    Args:
        model: The `keras.Model` whose `fit` is running.

    Returns:
        The `keras.callbacks.CallbackList` that `fit` calls (the user's
        callbacks, then the `History` and `ProgbarLogger` that `fit` adds),
        or `None` outside a `fit` of `model` (or if Keras renamed the
        local).
    """
    callbacks = _fit_local(model, "callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    return None


def fit_data(model):
    """Returns the inputs of the running `model.fit`: validation's, then x.

    Args:
        model: The `keras.Model` whose `fit` is running.

    Returns:
        A tuple of what `fit` validates on (its `val_x`) and trains on (its
        `x`, without the part `validation_split` took), leaving out what
        it does not have; empty outside a `fit` of `model`.
    """
    return tuple(
        data
        for data in (_fit_local(model, "val_x"), _fit_local(model, "x"))
        if data is not None
    )


def _fit_local(model, name):
    """Returns the local `name` of the innermost running `model.fit`."""
    frame = inspect.currentframe()
    while frame is not None:
        if (
            frame.f_code.co_name == "fit"
            and frame.f_locals.get("self") is model
            and name in frame.f_locals
        ):
            return frame.f_locals[name]
        frame = frame.f_back
    return None


def data_batches(epoch_iterator):
    """Returns the batches in one pass over the data of `fit`, or `None`.

    `None` means a dataset of unknown length (until it ran out once).
    """
    return epoch_iterator.data_adapter.num_batches


def _no_input():
    return iter(())


def pause_fit_input(epoch_iterator, paused):
    """Makes the epochs of `fit` start without (or again with) its input."""
    if paused:
        epoch_iterator._get_iterator = _no_input
    else:
        epoch_iterator.__dict__.pop("_get_iterator", None)


def symbolic_build(model, epoch_iterator):
    """Builds `model` on the first batch of `fit`'s input, then rewinds."""
    model._symbolic_build(iterator=epoch_iterator)
    epoch_iterator.reset()


def install_train_function(model, function):
    """Makes `function(iterator)` the per-step function of the running fit.

    Called from `on_train_begin`. `None` lets Keras build its own again.
    """
    model.train_function = function


def filter_progress_logs(model, hide):
    """Keeps keys off the epoch line of the running fit's progress bar.

    Each `keras.callbacks.ProgbarLogger` of the running `model.fit` (see
    `fit_callbacks`) gets, in `on_epoch_end`, a copy of the epoch's `logs`
    without the keys for which `hide(key)` is true; every other callback
    sees the whole `logs`. The validation line (`on_test_end`) is left
    alone. A wrapper set on each logger instance does it, and only while
    that `fit` lasts: a fit that ends with an exception skips
    `on_train_end`, and a logger the user passes again to a later `fit`
    then prints every key (the wrapper removes itself on its first call).

    Args:
        model: The `keras.Model` whose `fit` is running.
        hide: Function from a `logs` key to a boolean.

    Returns:
        A function without arguments that gives each logger its own
        `on_epoch_end` back; call it in `on_train_end`. Outside a `fit` of
        `model` nothing is filtered and the function does nothing.
    """
    callbacks = fit_callbacks(model)
    loggers = [] if callbacks is None else callbacks.callbacks
    restores = [
        _filter_epoch_end(logger, model, callbacks, hide)
        for logger in loggers
        if isinstance(logger, keras.callbacks.ProgbarLogger)
    ]

    def restore_all():
        for restore in restores:
            restore()

    return restore_all


def _filter_epoch_end(logger, model, callbacks, hide):
    """Wraps `logger.on_epoch_end`; returns the function that unwraps it."""
    stale = getattr(vars(logger).get("on_epoch_end"), "learndrop_restore", None)
    if stale is not None:  # Left by a fit that ended with an exception.
        stale()
    own = vars(logger).get("on_epoch_end")  # None: the class's method.
    show = logger.on_epoch_end

    def on_epoch_end(epoch, logs=None):
        if fit_callbacks(model) is not callbacks:
            restore()
        elif logs is not None:
            logs = {key: v for key, v in logs.items() if not hide(key)}
        return show(epoch, logs)

    def restore():
        if vars(logger).get("on_epoch_end") is on_epoch_end:
            if own is None:
                del logger.on_epoch_end
            else:
                logger.on_epoch_end = own

    on_epoch_end.learndrop_restore = restore
    logger.on_epoch_end = on_epoch_end
    return restore


def fit_validation_iterator(model):
    """Returns the `EpochIterator` of the validation that `fit` is running.

    Args:
        model: The `keras.Model` whose `fit` validates.

    Returns:
        The iterator of the running `evaluate` when `fit` called it to
        validate, else `None` (no evaluation, or one of the user's own).
    """
    frame = inspect.currentframe()
    while frame is not None:
        if (
            frame.f_code.co_name == "evaluate"
            and frame.f_locals.get("self") is model
            and "epoch_iterator" in frame.f_locals
        ):
            if frame.f_locals.get("use_cached_eval_dataset"):
                return frame.f_locals["epoch_iterator"]
            return None
        frame = frame.f_back
    return None


def install_test_function(model, function):
    """Makes `function(iterator)` the per-step function of an evaluation.

    Called from `on_test_begin`; returns the function it replaces, which
    `on_test_end` puts back.
    """
    previous = model.test_function
    model.test_function = function
    return previous


def repeats_leading_batches(epoch_iterator):
    """Whether every pass of `epoch_iterator` starts with the same batches.

    True for NumPy arrays and tensors (Keras's array adapter, unshuffled in
    evaluation); a `tf.data.Dataset` or generator may differ between passes.
    """
    return isinstance(epoch_iterator.data_adapter, _arrays.ArrayDataAdapter)


# ---- the input of fit ---------------------------------------------------

FIT_INPUT_KINDS = ("arrays", "tf_data", "py_dataset", "generator", "other")


def fit_input(epoch_iterator):
    """Returns what the `fit` of `epoch_iterator` reads its batches from.

    Args:
        epoch_iterator: The `EpochIterator` of a `fit` call
            (`fit_epoch_iterator`).

    Returns:
        A pair `(kind, source)`, `kind` one of `FIT_INPUT_KINDS`:
        `("arrays", None)` for NumPy arrays or tensors, `("tf_data",
        dataset)` for a `tf.data.Dataset` (or a distributed one),
        `("py_dataset", py_dataset)` for a `keras.utils.PyDataset`,
        `("generator", None)` for a Python generator, and `("other",
        adapter)` for any other input (a PyTorch `DataLoader`, ...).
    """
    adapter = epoch_iterator.data_adapter
    if isinstance(adapter, _arrays.ArrayDataAdapter):
        return "arrays", None
    if isinstance(adapter, _datasets.TFDatasetAdapter):
        return "tf_data", adapter.get_tf_dataset()
    if isinstance(adapter, _py_datasets.PyDatasetAdapter):
        return "py_dataset", adapter.py_dataset
    if isinstance(adapter, _generators.GeneratorDataAdapter):
        return "generator", None
    return "other", adapter


def dataset_functions(dataset):
    """Returns the datasets of a `tf.data` pipeline and what they call.

    Args:
        dataset: A `tf.data.Dataset`.

    Returns:
        A list with one pair `(kind, functions)` per dataset of the
        pipeline (`dataset` and, depth first, every dataset it reads from):
        `kind` is the name of its class without leading underscores
        (`"MapDataset"`, `"ShuffleDataset"`, `"RandomDataset"`, ...),
        `functions` a list of `(name, graph_def)`, one per function the
        dataset calls (a `map`'s function): its traced name
        (`"__inference_Dataset_map_augment_86"`) and its
        `tf.compat.v1.GraphDef`, whose `library` holds the functions it
        calls. Tensors a function captures are placeholders there.

    Raises:
        TypeError: if `dataset` is not a `tf.data.Dataset` (a distributed
            dataset).
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Expected a `tf.data.Dataset`. Received: {type(dataset).__name__}"
        )
    pipeline, stack, seen = [], [dataset], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        functions = []
        for wrapper in current._functions():
            function = wrapper.function
            name = function.name
            if isinstance(name, bytes):
                name = name.decode()
            functions.append((name, function.graph.as_graph_def()))
        pipeline.append((type(current).__name__.lstrip("_"), functions))
        stack.extend(reversed(current._inputs()))
    return pipeline


# ---- the layer graph ----------------------------------------------------


def functional_graph(model):
    """Returns the graph of layer calls of `model`, or `None`.

    Args:
        model: A `keras.Model`.

    Returns:
        The functional graph (an object with `inputs`, `outputs` and nodes):
        `model` itself for a functional model, its inner graph for a built
        `Sequential`; `None` for an unbuilt `Sequential` and for a
        subclassed model.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def graph_nodes(graph):
    """Returns the nodes of `graph` in topological order, inputs first.

    Each node is one call: `node.operation` (a layer or a `keras.ops`
    operation) on `node.input_tensors`, giving `node.output_tensors`;
    `node.is_input` marks the nodes of the graph's inputs.
    """
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        nodes.extend(graph._nodes_by_depth[depth])
    return nodes


def call_node(node, values, **kwargs):
    """Calls `node.operation` as recorded, on other tensors.

    Args:
        node: A node of `graph_nodes`.
        values: Dict from `id()` of each `KerasTensor` the node reads to the
            tensor to use instead.
        **kwargs: Further keyword arguments of the call (`training`).

    Returns:
        The outputs of the call.
    """
    args, recorded = node.arguments.fill_in(values)
    return node.operation(*args, **{**recorded, **kwargs})


def run_through_graph(graph, inputs, call_fn):
    """Runs `call_fn(operation, *args, **kwargs)` for each node of `graph`.

    Returns:
        The outputs of the graph, as `call_fn` computed them.
    """
    return graph._run_through_graph(
        inputs, operation_fn=lambda operation: operation, call_fn=call_fn
    )


def flatten_layers(layer, include_self=True):
    """Returns `layer` (if `include_self`) and every layer nested in it."""
    return list(layer._flatten_layers(include_self=include_self))


def created_trainable_variables(layer):
    """Returns the variables `layer` created as trainable.

    Unlike `layer.trainable_weights`, the list stays the same when the layer
    is frozen (`trainable=False`).
    """
    return list(layer._trainable_variables)


def seed_generators(layer):
    """Returns the `keras.random.SeedGenerator`s that `layer` draws from."""
    return [
        value
        for value in vars(layer).values()
        if isinstance(value, keras.random.SeedGenerator)
    ]


def is_input_augmentation(layer):
    """Whether `layer` is one of Keras's image augmentation layers."""
    return isinstance(layer, _image_preprocessing.BaseImagePreprocessingLayer)


# ---- the training step ---------------------------------------------------


def clear_losses(model):
    """Clears the losses that the layers of `model` added in a call."""
    model._clear_losses()


def loss_tracker(model):
    """Returns the `Mean` metric behind the `loss` of `fit`'s logs."""
    return model._loss_tracker


def reduce_per_replica(values, strategy):
    """Combines the per-replica logs of `strategy.run`, as `fit` does."""
    return _tf_trainer.reduce_per_replica(values, strategy, reduction="auto")


def unscale_loss_for_distribution(loss):
    """Undoes the scaling of `loss` by the number of replicas."""
    return _loss_module.unscale_loss_for_distribution(loss)
