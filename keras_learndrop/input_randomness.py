"""Whether the training inputs of a `fit` call change from epoch to epoch.

A cached view of the stem's features is only right if `fit` hands the model
the same inputs every epoch. Random augmentation in the input pipeline
(keras.io's `train_ds.map(lambda x, y: (data_augmentation(x), y))`, a
`tf.image.random_*` function, a `PyDataset` that flips at random) breaks
that, and the model itself cannot tell. What the input is decides how
LearnDrop finds out (`inspect_input`):

* NumPy arrays and tensors: Keras batches (and shuffles) them, nothing
  else; fixed.
* A `tf.data.Dataset`: its pipeline is read (`scan_dataset`): the kind
  of each dataset in it, and the traced graphs of the functions its
  `map`s (and `filter`s, `interleave`s, ...) call, nested functions
  included; tensors those functions capture (in-memory images) are not
  copied, so this takes about a millisecond whatever the data's size. A
  random operation
  (`RANDOM_OPS`) anywhere in it means random inputs: stateful ops
  (`RandomUniform`, which `tf.image.random_flip_left_right` uses), stateless
  ones with their key (`StatelessRandomUniformV2`,
  `StatelessRandomGetKeyCounter`: Keras's random layers under the
  TensorFlow backend, whose `SeedGenerator` feeds them a new seed each
  call), a `tf.random.Generator` (`RngReadAndSkip`) and
  `tf.data.Dataset.random` (`RandomDataset`). Shuffling alone
  (`ShuffleDatasetV3` and its seed generator) only reorders the samples,
  which a replay does too: it is not augmentation. A pipeline that calls
  Python (`py_function`, `numpy_function`, `from_generator`) cannot be read
  through: unknown.
* A `keras.utils.PyDataset`: batch 0 is read twice (`probe_py_dataset`).
  Two different batches mean random inputs; equal ones, fixed. This costs
  two reads of one batch before training starts.
* A Python generator, or anything else: nothing can be read twice without
  consuming it; unknown.

A random op whose values are in fact the same every epoch (a stateless op
with a fixed seed) is still reported as random: LearnDrop's
`augmented_inputs=False` overrides the finding.
"""

import dataclasses
import re
import time

import numpy as np

from keras_learndrop import keras_internals
from keras_learndrop.backend import tf

# Operations that draw random numbers: a cached view would replay one draw.
RANDOM_OPS = frozenset(
    {
        # Stateful ops (`tf.random.*`, `tf.image.random_*`).
        "Multinomial",
        "ParameterizedTruncatedNormal",
        "RandomCrop",
        "RandomGamma",
        "RandomPoisson",
        "RandomPoissonV2",
        "RandomShuffle",
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "SampleDistortedBoundingBox",
        "SampleDistortedBoundingBoxV2",
        "TruncatedNormal",
        # `tf.random.Generator`.
        "NonDeterministicInts",
        "RngReadAndSkip",
        "RngSkip",
        "StatefulRandomBinomial",
        "StatefulStandardNormal",
        "StatefulStandardNormalV2",
        "StatefulTruncatedNormal",
        "StatefulUniform",
        "StatefulUniformFullInt",
        "StatefulUniformInt",
        # Stateless ops, `tf.random.stateless_*` and Keras's random layers
        # under the TensorFlow backend (with the seed of a `SeedGenerator`).
        "StatelessMultinomial",
        "StatelessParameterizedTruncatedNormal",
        "StatelessRandomBinomial",
        "StatelessRandomGammaV2",
        "StatelessRandomGammaV3",
        "StatelessRandomGetAlg",
        "StatelessRandomGetKeyCounter",
        "StatelessRandomGetKeyCounterAlg",
        "StatelessRandomNormal",
        "StatelessRandomNormalV2",
        "StatelessRandomPoisson",
        "StatelessRandomUniform",
        "StatelessRandomUniformFullInt",
        "StatelessRandomUniformFullIntV2",
        "StatelessRandomUniformInt",
        "StatelessRandomUniformIntV2",
        "StatelessRandomUniformV2",
        "StatelessSampleDistortedBoundingBox",
        "StatelessShuffle",
        "StatelessTruncatedNormal",
        "StatelessTruncatedNormalV2",
        # `tf.data.Dataset.random`.
        "RandomDataset",
        "RandomDatasetV2",
    }
)
# Operations that run Python: what they return cannot be read in a graph.
OPAQUE_OPS = frozenset(
    {"EagerPyFunc", "PyFunc", "PyFuncStateless", "GeneratorDataset"}
)
# How many findings a note names.
_NAMED = 3


@dataclasses.dataclass(frozen=True)
class InputRandomness:
    """What `inspect_input` found about the training inputs of a `fit`.

    Attributes:
        random: `True` if the inputs differ between epochs, `False` if they
            are the same, `None` if that cannot be told.
        source: String. What the input is, for a note ("the `tf.data`
            pipeline", "the `PyDataset` `Flips`", ...).
        findings: Tuple of strings: what was found (a random op and where,
            or what cannot be read), for a note.
        seconds: Float. Time the inspection took.
    """

    random: bool | None
    source: str
    findings: tuple = ()
    seconds: float = 0.0

    def describe(self):
        """Returns the findings as one phrase (at most three named)."""
        named = ", ".join(self.findings[:_NAMED])
        more = len(self.findings) - _NAMED
        return named + (f" and {more} more" if more > 0 else "")


def inspect_input(kind, source):
    """Tells whether the input of a `fit` call is random.

    Args:
        kind: String, one of `keras_internals.FIT_INPUT_KINDS`.
        source: The dataset or `PyDataset` of `keras_internals.fit_input`.

    Returns:
        An `InputRandomness`.
    """
    if kind == "arrays":
        return InputRandomness(False, "the arrays")
    if kind == "tf_data":
        return scan_dataset(source)
    if kind == "py_dataset":
        return probe_py_dataset(source)
    if kind == "generator":
        return InputRandomness(None, "the Python generator")
    return InputRandomness(None, f"the input ({type(source).__name__})")


def scan_dataset(dataset):
    """Looks for random operations in a `tf.data.Dataset`'s pipeline.

    Args:
        dataset: A `tf.data.Dataset`.

    Returns:
        An `InputRandomness`: `random=True` with the random ops found,
        else `None` where the pipeline calls Python or cannot be read,
        else `False`.

    Example:

    >>> images = tf.data.Dataset.from_tensor_slices(np.zeros((4, 2, 2, 1)))
    >>> def augment(x):
    ...     return tf.image.random_flip_left_right(x)
    >>> found = scan_dataset(images.shuffle(4).map(augment))
    >>> found.random, found.describe()
    (True, '`RandomUniform` in the `map` function `augment`')
    >>> scan_dataset(images.shuffle(4).map(lambda x: x / 2)).random
    False
    """
    start = time.perf_counter()
    source = "the `tf.data` pipeline"
    try:
        pipeline = keras_internals.dataset_functions(dataset)
    except (TypeError, AttributeError, NotImplementedError) as error:
        return InputRandomness(
            None,
            source,
            (f"it could not be read ({error})",),
            time.perf_counter() - start,
        )
    random, opaque = _find_ops(pipeline)
    seconds = time.perf_counter() - start
    if random:
        return InputRandomness(True, source, tuple(random), seconds)
    if opaque:
        return InputRandomness(None, source, tuple(opaque), seconds)
    return InputRandomness(False, source, (), seconds)


def _find_ops(pipeline):
    """Returns the random and the opaque ops of a pipeline.

    Each is a list of phrases naming the ops and where they are: the
    pipeline itself (a dataset such as `Dataset.random`), or the function
    that a transformation (`map`, ...) calls.

    Args:
        pipeline: The list of `keras_internals.dataset_functions`.
    """
    # Where (the pipeline, a `map` function, ...) -> the ops found there.
    random, opaque = {}, {}

    def add(op, where):
        if op in RANDOM_OPS:
            found = random.setdefault(where, [])
        elif op in OPAQUE_OPS:
            found = opaque.setdefault(where, [])
        else:
            return
        if op not in found:
            found.append(op)

    for kind, functions in pipeline:
        add(kind, "in the pipeline")
        transformation = _transformation(kind)
        for name, graph_def in functions:
            where = (
                f"in the `{transformation}` function "
                f"`{_python_name(name, transformation)}`"
            )
            for op in _ops(graph_def):
                add(op, where)
    return _phrases(random), _phrases(opaque)


def _ops(graph_def):
    """Op types of a function's graph and of the functions it calls."""
    ops = [node.op for node in graph_def.node]
    for function in graph_def.library.function:
        ops.extend(node.op for node in function.node_def)
    return ops


def _transformation(kind):
    """`"ParallelMapDataset"` -> `"map"`: the `tf.data.Dataset` method."""
    name = re.sub(r"Dataset(V\d+)?$", "", kind)
    name = re.sub(r"^Parallel(?=[A-Z])", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _phrases(found):
    return [
        ", ".join(f"`{op}`" for op in sorted(ops)) + f" {where}"
        for where, ops in found.items()
    ]


def _python_name(function_name, transformation):
    """The Python name of a traced function: `augment`, `lambda`, ..."""
    name = re.sub(r"^__inference_", "", function_name)
    name = re.sub(r"_\d+$", "", name)
    prefix = f"Dataset_{transformation}_"
    if name.startswith(prefix):
        name = name[len(prefix) :]
    return name


def probe_py_dataset(py_dataset):
    """Reads batch 0 of a `keras.utils.PyDataset` twice and compares.

    Args:
        py_dataset: A `keras.utils.PyDataset`.

    Returns:
        An `InputRandomness`: `random=True` if the two reads differ,
        `False` if they are equal, `None` if reading raised an error.

    Example:

    >>> class Noisy(keras.utils.PyDataset):
    ...     def __len__(self):
    ...         return 1
    ...     def __getitem__(self, index):
    ...         return np.random.rand(2, 3), np.zeros(2)
    >>> probe_py_dataset(Noisy()).random
    True
    """
    start = time.perf_counter()
    source = f"the `PyDataset` `{type(py_dataset).__name__}`"
    try:
        first = py_dataset[0]
        second = py_dataset[0]
    except Exception as error:  # A user's own code: anything may fail.
        return InputRandomness(
            None,
            source,
            (f"reading batch 0 raised {type(error).__name__}: {error}",),
            time.perf_counter() - start,
        )
    same = _same_batch(first, second)
    seconds = time.perf_counter() - start
    if same:
        return InputRandomness(False, source, (), seconds)
    return InputRandomness(
        True,
        source,
        ("two reads of batch 0 (`__getitem__(0)`) differ",),
        seconds,
    )


def _same_batch(first, second):
    """Whether two reads of a batch hold equal arrays in equal structures."""
    try:
        tf.nest.assert_same_structure(first, second)
    except (TypeError, ValueError):
        return False
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(second)):
        if a is None or b is None:
            if a is not b:
                return False
            continue
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        try:
            equal = np.array_equal(a, b, equal_nan=True)
        except TypeError:  # Strings and objects have no NaN.
            equal = np.array_equal(a, b)
        if not equal:
            return False
    return True


def fit_inputs_random(augmented_inputs, fit_iterator, can_cache):
    """Whether `fit`'s training inputs are random: declared, else found.

    Args:
        augmented_inputs: LearnDrop's argument: `True`/`False` declare,
            `None` finds out (`inspect_input`).
        fit_iterator: Keras's `EpochIterator` of the `fit`, or `None`.
        can_cache: Boolean. Whether the stem's features could be cached in
            this `fit` (an unknown input matters only then).

    Returns:
        `(random, note, unknown)`: whether the inputs are random; the note
        for the history (what was found, or why it cannot be known), or
        `None`; and that note again when it is the one to warn about once
        the stem is first cached (inputs that cannot be checked), else
        `None`.
    """
    if augmented_inputs is not None:
        return augmented_inputs, None, None
    if fit_iterator is None:
        return False, None, None
    found = inspect_input(*keras_internals.fit_input(fit_iterator))
    if found.random:
        return (
            True,
            f"random training inputs in {found.source}: "
            f"{found.describe()}; treated as `augmented_inputs=True`. "
            "Pass `augmented_inputs=False` if they are the same every "
            "epoch",
            None,
        )
    if found.random is None and can_cache:
        reason = f" ({found.describe()})" if found.findings else ""
        note = (
            f"{found.source}{reason} cannot be checked for random "
            "augmentation, and the stem's cache assumes the same inputs "
            "every epoch. Pass `augmented_inputs=True` if it draws "
            "random augmentations, `augmented_inputs=False` if not"
        )
        return False, note, note
    return False, None, None
