"""When to freeze: the growth of the stem from the units' scores.

A unit is **settled** at an evaluation when its continuation score is at or
below `threshold`. The stem grows to the longest prefix of units that have
each been settled for `patience` consecutive evaluations, counted only after
the first `warmup` evaluations. It never shrinks, never holds more than
`max_drop_fraction` of the units, and never takes the output unit. Units
without trainable weights are settled from the start.

The policy is pure bookkeeping on NumPy arrays, so it can be tested and
resumed (`get_state` / `set_state`) without a model.
"""

import math

import numpy as np


class FreezePolicy:
    """Decides the stem size after each evaluation.

    Args:
        num_units: Integer. Number of units in the model's chain.
        threshold: Float in (0, 1]. A unit is settled when its continuation
            score is at or below it.
        patience: Integer >= 1. Consecutive settled evaluations a unit needs.
        warmup: Integer >= 0. Evaluations that never count as settled.
        max_drop_fraction: Float in [0, 1). Largest fraction of the units the
            stem may hold.

    Example:

    >>> policy = FreezePolicy(3, threshold=0.5, patience=1, warmup=0,
    ...                       max_drop_fraction=0.7)
    >>> policy.update([0.2, 0.9, 0.1])
    1
    """

    def __init__(
        self, num_units, threshold, patience, warmup, max_drop_fraction
    ):
        self.num_units = num_units
        self.threshold = threshold
        self.patience = patience
        self.warmup = warmup
        self.max_units = min(
            num_units - 1, math.floor(max_drop_fraction * num_units + 1e-9)
        )
        self.reset()

    def reset(self, stem_size=0):
        """Forgets all evaluations; keeps a stem of `stem_size` units."""
        self.evaluations = 0
        self.streak = np.zeros(self.num_units, dtype=np.int64)
        self.stem_size = stem_size

    def update(self, continuation):
        """Records one evaluation and returns the new stem size.

        Args:
            continuation: Array of the units' continuation scores (`NaN` for
                frozen units, which stay frozen).

        Returns:
            Integer. The number of leading units to freeze (never less than
            before).
        """
        scores = np.asarray(continuation, dtype=np.float64)
        if scores.shape != (self.num_units,):
            raise ValueError(
                f"`continuation` must hold one score per unit "
                f"({self.num_units}). Received: shape {scores.shape}."
            )
        self.evaluations += 1
        settled = np.isnan(scores) | (scores <= self.threshold)
        if self.evaluations <= self.warmup:
            settled[:] = False
        self.streak = np.where(settled, self.streak + 1, 0)
        ready = self.streak >= self.patience
        prefix = self.stem_size
        while prefix < self.max_units and ready[prefix]:
            prefix += 1
        self.stem_size = max(self.stem_size, prefix)
        return self.stem_size

    def get_state(self):
        """Returns the policy's state as plain Python values."""
        return {
            "evaluations": int(self.evaluations),
            "streak": [int(s) for s in self.streak],
            "stem_size": int(self.stem_size),
        }

    def set_state(self, state):
        """Restores a state returned by `get_state`."""
        self.evaluations = int(state["evaluations"])
        self.streak = np.asarray(state["streak"], dtype=np.int64)
        self.stem_size = int(state["stem_size"])


class FixedSchedule(FreezePolicy):
    """Freezes fixed numbers of units after fixed evaluations.

    For experiments that need a cut at a known time (benchmarks, ablations):
    the scores are still computed and reported, but ignored.

    Args:
        num_units: Integer. Number of units in the model's chain.
        schedule: Dict mapping an evaluation number (1 for the first) to the
            stem size to reach after it.

    Example:

    >>> policy = FixedSchedule(4, {2: 3})
    >>> [policy.update([1.0] * 4) for _ in range(3)]
    [0, 3, 3]
    """

    def __init__(self, num_units, schedule):
        for evaluation, size in schedule.items():
            if not 0 <= size < num_units or evaluation < 1:
                raise ValueError(
                    "`schedule` maps evaluations (>= 1) to stem sizes in "
                    f"[0, {num_units - 1}] for this model of {num_units} "
                    f"units. Received: {{{evaluation}: {size}}}."
                )
        self.schedule = dict(schedule)
        super().__init__(num_units, 1.0, 1, 0, 1.0 - 1.0 / num_units)

    def update(self, continuation):
        self.evaluations += 1
        size = self.schedule.get(self.evaluations, self.stem_size)
        self.stem_size = max(self.stem_size, size)
        return self.stem_size
