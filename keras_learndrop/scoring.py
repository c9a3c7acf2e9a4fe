"""Scores of how much each unit is still learning.

This module defines the two scores of Learn&Drop as this project implements
them. For unit `u` with trainable weights `w_u` at evaluation `k`:

* **change score**, the relative change of the weights since the previous
  evaluation:

  `c_u(k) = ||w_u(k) - w_u(k-1)||_2 / (||w_u(k-1)||_2 + eps)`

* **continuation score**, how much of its fastest learning the unit still
  shows: its change score over the largest change score it has had so far,

  `s_u(k) = c_u(k) / max_{j <= k} c_u(j)`  (`s_u(k) = 0` when `c_u = 0`).

  It is 1 while the unit learns as fast as it ever did and falls towards 0
  as the unit settles. Being a ratio, it does not depend on the learning
  rate or on the scale of the weights, so one threshold serves every unit
  and every model.

Non-trainable state (BatchNorm moving statistics) is not part of `w`.
The pure functions take NumPy arrays; `WeightTracker` measures the norms on
the device that holds the weights and brings only one pair of scalars per
unit to the host.
"""

import numpy as np

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


def continuation_scores(change_history):
    """Returns the continuation score of every unit at the last evaluation.

    Args:
        change_history: Array of shape `(evaluations, units)` with the change
            scores of each evaluation so far, the newest last. `NaN` marks
            evaluations where a unit was not scored (it was frozen).

    Returns:
        A float64 NumPy array of `s_u(k) = c_u(k) / max_j c_u(j)`, 0 where
        the unit's change score is 0.

    Example:

    >>> continuation_scores([[0.4, 0.0], [0.1, 0.0]]).tolist()
    [0.25, 0.0]
    """
    history = np.asarray(change_history, dtype=np.float64)
    if history.ndim != 2 or history.shape[0] == 0:
        raise ValueError(
            "`change_history` must be a non-empty 2D array "
            f"(evaluations, units). Received: shape {history.shape}."
        )
    current = history[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = np.nanmax(np.where(np.isnan(history), -np.inf, history), 0)
        scores = np.where(current > 0, current / peak, 0.0)
    return np.where(np.isnan(current), np.nan, scores)


class WeightTracker:
    """Measures the change of each unit's weights between evaluations.

    The previous weights are kept as tensors on the weights' own device, so
    an evaluation costs one subtraction and two norms per weight there, and
    moves one pair of scalars per unit to the host.

    Args:
        unit_weights: List with, for each unit, the list of its trainable
            variables.
    """

    def __init__(self, unit_weights):
        self._unit_weights = [list(weights) for weights in unit_weights]
        self._previous = None
        self.snapshot()

    def snapshot(self):
        """Remembers the current weights as the reference for `measure`."""
        self._previous = [
            [tf.identity(w.value) for w in weights]
            for weights in self._unit_weights
        ]

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

    def measure(self, first_unit=0):
        """Returns norms of the change since the last snapshot, and snapshots.

        Args:
            first_unit: Integer. Units before it (frozen ones) are skipped
                and get `NaN`.

        Returns:
            A pair of float64 NumPy arrays `(delta_norms, previous_norms)`.
        """
        count = len(self._unit_weights)
        delta = np.full(count, np.nan)
        previous = np.full(count, np.nan)
        pairs = []
        for u in range(first_unit, count):
            weights = self._unit_weights[u]
            if not weights:
                delta[u], previous[u] = 0.0, 0.0
                continue
            pairs.append((u, weights, self._previous[u]))
        if pairs:
            values = _squared_norms(
                [[w.value for w in ws] for _, ws, _ in pairs],
                [prev for _, _, prev in pairs],
            )
            values = np.sqrt(np.maximum(values.numpy(), 0.0))
            for (u, _, _), (d, p) in zip(pairs, values):
                delta[u], previous[u] = d, p
        self.snapshot()
        return delta, previous


def _squared_norms(current, previous):
    rows = []
    for weights, before in zip(current, previous):
        diff = tf.add_n(
            [
                tf.reduce_sum(tf.square(tf.cast(w - b, tf.float64)))
                for w, b in zip(weights, before)
            ]
        )
        norm = tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(b, tf.float64))) for b in before]
        )
        rows.append(tf.stack([diff, norm]))
    return tf.stack(rows)
