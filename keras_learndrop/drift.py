"""How far each unit's features moved: linear CKA on a fixed probe set.

The weight scores of `scoring` fall with the learning rate, the same curve
for every unit (docs/results.md), so they say *when* but not *which* unit
is done. This module reads the network instead. At every evaluation each
unit's output on a fixed set of probe inputs is compared with its output
at the previous evaluation:

* **Gram matrix** of a unit's output `X` (one row per probe input, the
  feature map average-pooled to at most `grid x grid` positions, then
  flattened): `K = X X^T`, `n x n` whatever the feature map's size. Only
  Gram matrices are kept between evaluations, never activations.
* **Linear CKA** (Kornblith et al., ICML 2019) of two Gram matrices `K`
  and `L` of the same inputs, with the unbiased HSIC estimator of Song et
  al. (2012), which is not inflated when features outnumber inputs
  (Nguyen, Raghu & Kornblith, 2020):
  `CKA(K, L) = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))`, where,
  with `K~` and `L~` the matrices with their diagonals zeroed and `1` the
  vector of ones,
  `HSIC_1(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2))
  - 2 / (n-2) 1'K~L~1] / (n (n-3))`.
  It is 1 for the same representation, and invariant to orthogonal
  transforms and to isotropic scaling of the features.
* **drift** `d_u(k) = 1 - CKA(K_u(k-1), K_u(k))`, and the **relative
  drift** `d_u(k) / d_last(k)`, against the last unit (the output unit,
  which always trains) over the same interval: every unit's features jump
  together at some epochs (a learning-rate step, a batch of hard
  examples), which the ratio cancels.

The probe inputs are drawn once per `fit` (`draw_probe`), from the
validation data when `fit` validates, else from the training data; they run
through the model in inference mode, so Keras's augmentation layers leave
them as they are and `BatchNormalization` uses its moving statistics (what
a frozen stem's features are). The features of the frozen stem at the cut
do not change, so `DriftTracker` keeps those and runs only the head over
them: an evaluation costs one inference pass of the head over `n` inputs.
"""

import functools

import numpy as np

from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

# Probe inputs per `fit`: drawn at most (and with `probe_size="auto"`,
# kept for a training set of 8,192 samples or more). On 256 inputs a drift
# is within 5 % of the one on 512 (median; 13 % at the 90th percentile), on
# 128 within 9 % (21-25 %), on 64 within 13-14 % (34 %), for ResNet-20 from
# scratch and fine-tuned (`benchmarks/probe_size.py`, docs/results.md).
DEFAULT_PROBE_SIZE = 256
# `probe_size="auto"` keeps one probe input per this many training samples
# of an epoch, within [MIN_AUTO_PROBE_SIZE, DEFAULT_PROBE_SIZE]: an
# evaluation then costs about 1 % of a replay epoch (one inference pass of
# the head over the probe against a training pass over the epoch).
SAMPLES_PER_PROBE_INPUT = 32
MIN_AUTO_PROBE_SIZE = 64
# Feature maps are average-pooled to at most this many positions per side
# before the Gram matrix (see `pooled_features`).
DEFAULT_GRID = 4
# Inputs per chunk of the probe's forward pass (bounds the activations).
_CHUNK = 64


def gram(features):
    """Returns the Gram matrix `X X^T` of `features`, one row per input.

    Args:
        features: Array of shape `(n, ...)`; each input's features are
            flattened.

    Returns:
        A float64 NumPy array of shape `(n, n)`.

    Example:

    >>> gram(np.array([[1.0, 0.0], [1.0, 2.0]])).tolist()
    [[1.0, 1.0], [1.0, 5.0]]
    """
    x = np.asarray(features, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    return x @ x.T


def unbiased_hsic(gram_x, gram_y):
    """Returns the unbiased HSIC estimate of two Gram matrices (Song 2012).

    Args:
        gram_x: Float array `(n, n)`, the Gram matrix of one representation.
        gram_y: Float array `(n, n)`, of another representation of the
            same `n >= 4` inputs.

    Returns:
        A float.

    Raises:
        ValueError: for matrices of other shapes, or fewer than 4 inputs.
    """
    x, y = HsicTerms(gram_x), HsicTerms(gram_y)
    _check_same_inputs(x, y)
    return x.hsic(y)


def cka(gram_x, gram_y):
    """Returns the unbiased linear CKA of two Gram matrices.

    Args:
        gram_x: Float array `(n, n)`: `X X^T` of a representation `X`.
        gram_y: Float array `(n, n)`: `Y Y^T` of `Y` on the same inputs.

    Returns:
        A float, 1 for identical representations (up to rotation and
        scale). `NaN` when either representation is constant (zero
        self-similarity).

    Example:

    >>> x = np.random.default_rng(0).normal(size=(16, 5))
    >>> round(cka(gram(x), gram(3.0 * x)), 6)
    1.0
    """
    x, y = HsicTerms(gram_x), HsicTerms(gram_y)
    _check_same_inputs(x, y)
    return x.cka(y)


class HsicTerms:
    """What the unbiased HSIC needs of one Gram matrix, computed once.

    The matrix with its diagonal zeroed, its sum, its row sums and its HSIC
    with itself: an evaluation compares each unit's new Gram matrix with
    the last one, so each matrix is prepared once and used twice, and a
    CKA then costs one pass over the two matrices.

    Args:
        gram_matrix: Float array `(n, n)`, `n >= 4`.

    Raises:
        ValueError: for a matrix that is not square, or fewer than 4 inputs.
    """

    def __init__(self, gram_matrix):
        k = np.array(gram_matrix, dtype=np.float64)
        n = k.shape[0]
        if k.shape != (n, n):
            raise ValueError(
                "A Gram matrix must be square, one row and column per "
                f"input. Received: shape {k.shape}."
            )
        if n < 4:
            raise ValueError(
                "The unbiased HSIC needs at least 4 inputs. Received: Gram "
                f"matrices of {n} inputs."
            )
        np.fill_diagonal(k, 0.0)
        self.n = n
        self.zeroed = k
        self.rows = k.sum(axis=1)
        self.total = float(self.rows.sum())
        self.self_hsic = self.hsic(self)

    def hsic(self, other):
        """Returns `HSIC_1` of this Gram matrix and `other`'s."""
        n = self.n
        # tr(K~ L~) for symmetric matrices: the sum of their product.
        trace = float(np.vdot(self.zeroed, other.zeroed))
        sums = self.total * other.total / ((n - 1) * (n - 2))
        cross = 2.0 / (n - 2) * float(self.rows @ other.rows)
        return (trace + sums - cross) / (n * (n - 3))

    def cka(self, other):
        """Returns the linear CKA of this Gram matrix and `other`'s."""
        if not (self.self_hsic > 0 and other.self_hsic > 0):
            return float("nan")
        return self.hsic(other) / float(
            np.sqrt(self.self_hsic * other.self_hsic)
        )


def _check_same_inputs(x, y):
    if x.n != y.n:
        raise ValueError(
            "`gram_x` and `gram_y` must be square Gram matrices of the "
            f"same inputs. Received: shapes {(x.n, x.n)} and {(y.n, y.n)}."
        )


def relative_drift(drift):
    """Returns each unit's drift over the last unit's, `d_u / d_last`.

    Args:
        drift: Float array, one per unit (`NaN` where not measured).

    Returns:
        A float64 NumPy array; `NaN` where `drift` is `NaN` or the last
        unit did not move.

    Example:

    >>> relative_drift([0.01, 0.03, 0.04]).tolist()
    [0.25, 0.75, 1.0]
    """
    drift = np.asarray(drift, dtype=np.float64)
    last = drift[-1] if drift.size else np.nan
    if not last > 0:
        return np.full(drift.shape, np.nan)
    return drift / last


def auto_probe_size(train_samples):
    """Returns the probe size `probe_size="auto"` keeps for a training set.

    One input per `SAMPLES_PER_PROBE_INPUT` training samples of an epoch,
    at least `MIN_AUTO_PROBE_SIZE` and at most `DEFAULT_PROBE_SIZE`.

    Args:
        train_samples: Integer >= 0, the samples of one training epoch.

    Example:

    >>> [auto_probe_size(n) for n in (500, 4000, 50000)]
    [64, 125, 256]
    """
    return int(
        np.clip(
            train_samples // SAMPLES_PER_PROBE_INPUT,
            MIN_AUTO_PROBE_SIZE,
            DEFAULT_PROBE_SIZE,
        )
    )


def pooled_features(x, grid=DEFAULT_GRID):
    """Flattens a unit's output per input, pooling its positions first.

    A feature map `(n, h, w, c)` is average-pooled to at most `grid x grid`
    positions (`h // ceil(h / grid)` per side, the pool's stride equal to
    its size) before it is flattened: the Gram matrix then costs
    `O(n^2 grid^2 c)` whatever the image size, and keeps where in the image
    a feature fires, coarsely. `grid=None` flattens the whole map, `1`
    pools globally. Other ranks are flattened as they are.

    Args:
        x: Tensor `(n, ...)`.
        grid: Integer >= 1 or `None`. Defaults to `DEFAULT_GRID`.

    Returns:
        A float32 tensor `(n, p)`.
    """
    x = tf.cast(x, tf.float32)
    if grid is not None and x.shape.rank == 4:
        h, w = x.shape[1], x.shape[2]
        pool = (max(1, -(-h // grid)), max(1, -(-w // grid)))
        if pool != (1, 1):
            x = tf.nn.avg_pool2d(x, pool, pool, "VALID")
    return tf.reshape(x, (tf.shape(x)[0], -1))


def draw_probe(data, size, seed, input_rank=None):
    """Returns up to `size` inputs from `data`, drawn once, or `None`.

    Args:
        data: What `fit` got as `x` or `validation_data`'s inputs: a NumPy
            array or tensor (a seeded random subset), a `tf.data.Dataset`
            of batches or of single elements (its first inputs, read on an
            iterator of its own), a `keras.utils.PyDataset` (its first
            batches) or a tuple `(x, y[, sample_weight])` of these.
            Anything else (a Python generator, which cannot be read twice)
            gives `None`.
        size: Integer >= 4. Inputs to draw.
        seed: Integer. Seed of the random subset of arrays.
        input_rank: Integer or `None`. Rank of the model's input batches
            (4 for images): elements of a dataset one less are single
            inputs. `None` takes every element for a batch.

    Returns:
        A NumPy array of at most `size` inputs, or `None` when `data` cannot
        be read without disturbing `fit` or holds fewer than 4 inputs.
    """
    if isinstance(data, (tuple, list)) and data:
        data = data[0]
    if isinstance(data, dict) or data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        inputs = _read_batches(data.take(size), input_rank, size)
    elif isinstance(data, keras.utils.PyDataset):
        inputs = _read_batches(
            (data[i] for i in range(_py_dataset_length(data))),
            input_rank,
            size,
        )
    elif isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(
        data, "__array__"
    ):
        inputs = np.asarray(data)
        if inputs.ndim == 0:
            return None
        if len(inputs) > size:
            rng = np.random.default_rng(seed)
            chosen = np.sort(rng.choice(len(inputs), size, replace=False))
            inputs = inputs[chosen]
    else:
        return None
    if inputs is None or len(inputs) < 4:
        return None
    return np.asarray(inputs[:size])


def _py_dataset_length(data):
    try:
        return len(data)
    except TypeError:
        return 0


def _read_batches(elements, input_rank, limit):
    parts, count = [], 0
    for element in elements:
        if isinstance(element, (tuple, list)):
            element = element[0]
        if isinstance(element, dict):
            return None
        array = np.asarray(element)
        if input_rank is not None and array.ndim == input_rank - 1:
            array = array[None]  # A single input, not a batch.
        if input_rank is not None and array.ndim != input_rank:
            return None
        parts.append(array)
        count += len(array)
        if count >= limit:
            break
    if not parts:
        return None
    return np.concatenate(parts)


class DriftTracker:
    """Measures each unit's drift on a fixed probe set between evaluations.

    It keeps the probe inputs, their features at the current cut (the
    frozen stem's output, which no longer changes) and each unit's Gram
    matrix of the last evaluation.

    Args:
        chain: The model's `graph.UnitChain`.
        probe: NumPy array of the probe inputs (at least 4).
        grid: Integer >= 1 or `None`: see `pooled_features`. Defaults to
            `DEFAULT_GRID`.
    """

    def __init__(self, chain, probe, grid=DEFAULT_GRID):
        _check_probe_size(len(probe))
        self.chain = chain
        self.probe = np.asarray(probe)
        self.grid = grid
        self.grams = [None] * len(chain)
        self._terms = [None] * len(chain)
        self.cut = 0
        self._features = None
        # One compiled function per unit, traced once per fit: a growth of
        # the stem only starts the chain of calls at a later unit (one
        # function for the whole head would be traced again at each cut,
        # 0.07-1.14 s a growth for ResNet-20 at half width on one thread).
        self._unit_functions = [None] * len(chain)
        self.set_cut(0)

    def set_cut(self, cut):
        """Moves the stored probe features to the cut before unit `cut`."""
        if self._features is not None and cut == self.cut:
            return
        if self._features is None or cut < self.cut:
            # Features do not run backwards: start from the inputs again.
            inputs = tf.cast(tf.constant(self.probe), self.chain.input.dtype)
            self._features = tf.split(inputs, _chunk_sizes(len(self.probe)))
            self.cut = 0
        for unit in range(self.cut, cut):
            self._features = [
                self._run_unit(unit, x)[0] for x in self._features
            ]
        self.cut = cut

    def keep_first(self, size):
        """Keeps only the first `size` probe inputs (a smaller probe set).

        The kept Gram matrices are the blocks of the first `size` inputs,
        so the next `measure` compares what it would have compared with a
        probe of `size` inputs from the start. Does nothing when the probe
        set has `size` inputs or fewer.

        Raises:
            ValueError: if `size` is below 4.
        """
        _check_probe_size(size)
        if size >= len(self.probe):
            return
        self.probe = self.probe[:size]
        features = tf.concat(self._features, axis=0)[:size]
        self._features = tf.split(features, _chunk_sizes(size))
        self.grams = [
            None if g is None else g[:size, :size] for g in self.grams
        ]
        self._terms = [None] * len(self.grams)

    def current_grams(self):
        """Returns the Gram matrix of each unit from the cut on, now.

        A list with `None` for the units before the cut.
        """
        pooled = [[] for _ in self.chain.units]
        for x in self._features:
            for unit in range(self.cut, len(self.chain)):
                x, features = self._run_unit(unit, x)
                pooled[unit].append(features.numpy())
        grams = [None] * self.cut
        for unit in range(self.cut, len(self.chain)):
            grams.append(gram(np.concatenate(pooled[unit])))
        return grams

    def _run_unit(self, unit, x):
        """Returns unit `unit`'s output on `x` and its pooled features."""
        function = self._unit_functions[unit]
        if function is None:
            # A `partial` per unit, not a closure: TensorFlow counts the
            # traces of every function made from one code object together,
            # and warns of "retracing" when the units trace in a row.
            function = tf.function(
                functools.partial(self._unit_output, unit),
                autograph=False,
                reduce_retracing=True,
            )
            self._unit_functions[unit] = function
        return function(x)

    def _unit_output(self, unit, x):
        y = self.chain.forward(x, unit, unit + 1, training=False)
        return y, pooled_features(y, self.grid)

    def measure(self):
        """Returns each unit's drift since the last call; keeps the Grams.

        Returns:
            A float64 NumPy array, one per unit: `1 - CKA` against the Gram
            matrix of the last call, `NaN` for units before the cut and at
            the first call.
        """
        grams = self.current_grams()
        terms = [None if g is None else HsicTerms(g) for g in grams]
        drift = np.full(len(self.chain), np.nan)
        for unit in range(self.cut, len(self.chain)):
            if self.grams[unit] is not None:
                if self._terms[unit] is None:
                    self._terms[unit] = HsicTerms(self.grams[unit])
                drift[unit] = 1.0 - self._terms[unit].cka(terms[unit])
        self.grams, self._terms = grams, terms
        return drift

    def get_state(self):
        """Returns the Gram matrices of the last call, for a resumed fit."""
        return list(self.grams)

    def set_state(self, grams):
        """Restores Gram matrices from `get_state` (`None` where unset).

        Raises:
            ValueError: if they do not fit this chain and probe set.
        """
        n = len(self.probe)
        if len(grams) != len(self.chain) or any(
            g is not None and np.shape(g) != (n, n) for g in grams
        ):
            raise ValueError(
                f"The saved Gram matrices ({len(grams)} units) do not fit "
                f"{len(self.chain)} units and {n} probe inputs."
            )
        self.grams = [
            None if g is None else np.asarray(g, np.float64) for g in grams
        ]
        self._terms = [None] * len(grams)


def _check_probe_size(size):
    if size < 4:
        raise ValueError(
            f"The probe set needs at least 4 inputs. Received: {size}."
        )


def _chunk_sizes(n):
    sizes = [_CHUNK] * (n // _CHUNK)
    if n % _CHUNK:
        sizes.append(n % _CHUNK)
    return sizes
