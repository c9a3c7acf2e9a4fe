"""What LearnDrop measures of each unit's weights between evaluations.

For unit `u` with trainable weights `w_u`, between evaluations `k - 1` and
`k` (with `S` samples `t_1 ... t_S` of the weights in between):

* **change score**, the relative net change,
  `c_u(k) = ||w_u(k) - w_u(k-1)||_2 / (||w_u(k-1)||_2 + eps)`;
* **path length**, the relative distance travelled,
  `p_u(k) = sum_s ||w_u(t_s) - w_u(t_{s-1})||_2 / (||w_u(k-1)||_2 + eps)`,
  so `p_u >= c_u`, with equality when the weights moved in one direction;
* **consistency** `c_u / p_u` and the change **per unit of learning rate**
  `c_u / lr`, which the policies (`policy.py`) build on.

Non-trainable state (BatchNorm moving statistics) is not part of `w`.
The pure functions take NumPy arrays; `WeightTracker` measures the norms on
the device that holds the weights and brings only a scalar or two per unit
to the host.
"""

import typing

import numpy as np

from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

EPSILON = 1e-12


def change_scores(delta_norms, previous_norms, eps=EPSILON):
    """Returns the change score of every unit.

    Args:
        delta_norms: Array of `||w_u(k) - w_u(k-1)||_2`, one per unit.
        previous_norms: Array of `||w_u(k-1)||_2`, one per unit.
        eps: Float. Guards the division for all-zero weights. Defaults to
            `1e-12`.

    Returns:
        A float64 NumPy array of `c_u(k)`.

    Example:

    >>> change_scores([0.5, 0.0], [2.0, 1.0], eps=0.0).tolist()
    [0.25, 0.0]
    """
    delta = np.asarray(delta_norms, dtype=np.float64)
    previous = np.asarray(previous_norms, dtype=np.float64)
    if delta.shape != previous.shape:
        raise ValueError(
            "`delta_norms` and `previous_norms` must have the same shape. "
            f"Received: shapes {delta.shape} and {previous.shape}."
        )
    return delta / (previous + eps)


def per_learning_rate(change, learning_rate):
    """Returns the change per unit of learning rate.

    Args:
        change: Array of change scores (or path lengths), one per unit.
        learning_rate: Float or `None`: the mean learning rate over the
            interval. `None` or a value that is not positive leaves
            `change` as it is.

    Returns:
        A float64 NumPy array `change / learning_rate`.

    Example:

    >>> per_learning_rate([0.03, 0.0], 0.5).tolist()
    [0.06, 0.0]
    """
    change = np.asarray(change, dtype=np.float64)
    if learning_rate is None or not learning_rate > 0:
        return change
    return change / learning_rate


def consistency(change, path):
    """Returns each unit's net change over its path length, in [0, 1].

    Args:
        change: Array of net changes `||w(k) - w(k-1)||` (any common scale).
        path: Array of path lengths `sum_s ||w(t_s) - w(t_{s-1})||` over the
            same interval, on the same scale.

    Returns:
        A float64 NumPy array: 1 when every update moved the weights the
        same way, near 0 when they cancel out; 0 where nothing moved, `NaN`
        where `change` is `NaN` (a frozen unit).

    Example:

    >>> consistency([0.5, 0.0, 0.2], [0.5, 0.0, 1.0]).tolist()
    [1.0, 0.0, 0.2]
    """
    change = np.asarray(change, dtype=np.float64)
    path = np.asarray(path, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(path > 0, change / path, 0.0)
    ratio = np.where(np.isnan(change) | np.isnan(path), np.nan, ratio)
    return np.minimum(ratio, 1.0)


class WeightTracker:
    """Measures the change of each unit's weights between evaluations.

    Two references are kept as tensors on the weights' own device: the
    weights of the last evaluation (for the net change `||w(k) - w(k-1)||`)
    and those of the last sample within the interval (for the path length,
    the sum of `||w(t_s) - w(t_{s-1})||` over the samples). An evaluation
    or a sample costs one subtraction and one norm per weight there, and
    moves one or two scalars per unit to the host.

    Args:
        unit_weights: List with, for each unit, the list of its trainable
            variables.
    """

    def __init__(self, unit_weights):
        self._unit_weights = [list(weights) for weights in unit_weights]
        self._previous = None
        self._last_sample = None
        self._path = None
        self.snapshot()

    def snapshot(self):
        """Remembers the current weights as the reference for `measure`."""
        self._previous = [
            [tf.identity(w.value) for w in weights]
            for weights in self._unit_weights
        ]
        self._last_sample = self._previous
        self._path = np.zeros(len(self._unit_weights))

    def reference(self):
        """Returns the weights of the last snapshot, as NumPy arrays.

        One flat list, unit by unit, for saving beside a backup.
        """
        return [t.numpy() for weights in self._previous for t in weights]

    def set_reference(self, arrays):
        """Makes `arrays` (from `reference()`) the last snapshot.

        Raises:
            ValueError: if they do not match the tracked weights.
        """
        flat = [w for weights in self._unit_weights for w in weights]
        shapes = [tuple(w.shape) for w in flat]
        if [tuple(np.shape(a)) for a in arrays] != shapes:
            raise ValueError(
                f"The reference weights have shapes "
                f"{[tuple(np.shape(a)) for a in arrays]}, not {shapes}."
            )
        values = iter(arrays)
        self._previous = [
            [tf.constant(next(values), dtype=w.dtype) for w in weights]
            for weights in self._unit_weights
        ]
        self._last_sample = self._previous
        self._path = np.zeros(len(self._unit_weights))

    def sample(self):
        """Adds the change since the last sample to each unit's path length.

        Called several times between evaluations by policies that look at
        the direction of the updates (see `policy.DirectionConsistency`).
        """
        units = self._scored_units()
        last_sample = list(self._last_sample)
        if units:
            values, copies = _sample_step(
                [[w.value for w in self._unit_weights[u]] for u in units],
                [self._last_sample[u] for u in units],
            )
            norms = np.sqrt(np.maximum(values.numpy(), 0.0))
            for u, norm, copy in zip(units, norms, copies):
                self._path[u] += norm
                last_sample[u] = copy
        self._last_sample = last_sample

    def measure(self, first_unit=0):
        """Returns the norms of the change since the last snapshot; snapshots.

        Args:
            first_unit: Integer. Units before it (frozen ones) are skipped
                and get `NaN`.

        Returns:
            A `UnitChanges` of float64 NumPy arrays: `delta` (the norm of the
            net change), `previous` (the norm of the reference weights) and
            `path` (the sum of the norms of the changes between samples,
            `>= delta`; equal to `delta` without samples).
        """
        count = len(self._unit_weights)
        if self._last_sample is not self._previous:
            self.sample()
        delta = np.full(count, np.nan)
        previous = np.full(count, np.nan)
        path = np.full(count, np.nan)
        units = self._scored_units()
        for u in range(first_unit, count):
            if not self._unit_weights[u]:
                delta[u], previous[u], path[u] = 0.0, 0.0, 0.0
        reference = list(self._previous)
        if units:
            values, copies = _measure_step(
                [[w.value for w in self._unit_weights[u]] for u in units],
                [self._previous[u] for u in units],
            )
            values = np.sqrt(np.maximum(values.numpy(), 0.0))
            for u, (d, p), copy in zip(units, values, copies):
                reference[u] = copy
                if u < first_unit:
                    continue
                delta[u], previous[u] = d, p
                sampled = self._path[u]
                path[u] = max(d, sampled) if sampled > 0 else d
        self._previous = reference
        self._last_sample = self._previous
        self._path = np.zeros(len(self._unit_weights))
        return UnitChanges(delta, previous, path)

    def _scored_units(self):
        # Frozen units are measured too (and their figures dropped): the
        # compiled step then keeps one structure for the whole run instead
        # of tracing again at every growth of the stem.
        return [u for u, weights in enumerate(self._unit_weights) if weights]


class UnitChanges(typing.NamedTuple):
    """Norms of the change of each unit's weights over one interval."""

    delta: np.ndarray
    previous: np.ndarray
    path: np.ndarray


@tf.function(autograph=False, reduce_retracing=True)
def _sample_step(current, previous):
    """Returns `||current - previous||^2` per unit, and copies of `current`.

    One compiled call: a sample costs one dispatch, not one per weight.
    """
    squared = tf.stack(
        [
            _squared_norm(w - b for w, b in zip(weights, before))
            for weights, before in zip(current, previous)
        ]
    )
    return squared, _copies(current)


@tf.function(autograph=False, reduce_retracing=True)
def _measure_step(current, previous):
    """Returns `[||current - previous||^2, ||previous||^2]` per unit, and
    copies of `current`."""
    rows = [
        tf.stack(
            [
                _squared_norm(w - b for w, b in zip(weights, before)),
                _squared_norm(before),
            ]
        )
        for weights, before in zip(current, previous)
    ]
    return tf.stack(rows), _copies(current)


def _squared_norm(tensors):
    """The squared L2 norm of several tensors together, in float64."""
    return tf.add_n(
        [tf.reduce_sum(tf.square(tf.cast(t, tf.float64))) for t in tensors]
    )


def _copies(weights_by_unit):
    return [[tf.identity(w) for w in weights] for weights in weights_by_unit]


class LearningRates:
    """Reads an optimizer's learning rate: the past interval's, and to come.

    `start_interval`, `sample` and `end_interval` give the mean of the
    learning rates read at an evaluation interval's start, its samples and
    its end. `remaining` sums the learning rate still to come in a run:
    each remaining epoch's value at its middle step, from the optimizer's
    schedule; a learning rate without one counts as constant.

    Keras does not expose the schedule object of an optimizer, but
    serializes it in the optimizer's public config: the schedule is
    rebuilt from there. One that cannot be (an unregistered custom class)
    counts as a constant learning rate.

    Args:
        optimizer: A Keras optimizer (a `LossScaleOptimizer`'s inner one
            is read).
    """

    def __init__(self, optimizer):
        # A `LossScaleOptimizer` (mixed precision) runs the user's one.
        self._optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self._schedule = _schedule_of(self._optimizer)
        self._values = []

    @property
    def scheduled(self):
        """Whether the rates to come are known: the optimizer has a schedule.

        `False` for a constant learning rate, which callbacks such as
        `ReduceLROnPlateau` or `LearningRateScheduler` may change at any
        epoch.
        """
        return self._schedule is not None

    def current(self):
        """Returns the learning rate of the next step, or `None`."""
        try:
            rate = float(
                keras.ops.convert_to_numpy(self._optimizer.learning_rate)
            )
        except (AttributeError, TypeError, ValueError):
            return None
        return rate if np.isfinite(rate) else None

    def start_interval(self):
        """Starts an interval with the current learning rate."""
        self._values = [self.current()]

    def sample(self):
        """Adds the current learning rate to the interval."""
        self._values.append(self.current())

    def end_interval(self):
        """Returns the interval's mean learning rate (or `None`); restarts.

        Example:

        >>> rates = LearningRates(keras.optimizers.SGD(0.1))
        >>> rates.start_interval()
        >>> round(rates.end_interval(), 6)
        0.1
        """
        values = [v for v in self._values + [self.current()] if v is not None]
        self.start_interval()
        return float(np.mean(values)) if values else None

    def remaining(self, epoch, epochs, steps):
        """Sums the mean learning rate of each epoch after `epoch`.

        Args:
            epoch: Integer. The epoch (from 0) that just ended.
            epochs: Integer or `None`. Epochs of the run.
            steps: Integer or `None`. Steps per epoch.

        Returns:
            A float, or `None` when `epochs` is unknown.

        Example:

        >>> schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        ...     [10], [0.1, 0.01])
        >>> rates = LearningRates(keras.optimizers.SGD(schedule))
        >>> round(rates.remaining(epoch=-1, epochs=2, steps=10), 6)
        0.11
        """
        if not epochs:
            return None
        remaining = max(0, epochs - epoch - 1)
        if self._schedule is None or not steps:
            current = self.current()
            return None if current is None else current * remaining
        step = int(keras.ops.convert_to_numpy(self._optimizer.iterations))
        middles = step + steps * (np.arange(remaining) + 0.5)
        try:
            # Keras's schedules take a vector of steps: one call.
            rates = keras.ops.convert_to_numpy(
                self._schedule(keras.ops.convert_to_tensor(middles, "float32"))
            )
            if np.shape(rates) != (remaining,):
                rates = [
                    keras.ops.convert_to_numpy(self._schedule(int(s)))
                    for s in middles
                ]
            return float(np.sum(rates))
        except (TypeError, ValueError):
            current = self.current()
            return None if current is None else current * remaining


def _schedule_of(optimizer):
    try:
        config = optimizer.get_config()["learning_rate"]
        if not isinstance(config, dict):
            return None
        return keras.optimizers.schedules.deserialize(config)
    except (KeyError, TypeError, ValueError, NotImplementedError):
        return None
