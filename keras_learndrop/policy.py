"""When to freeze: policies that grow the stem from what they observe.

At every evaluation (each `eval_every` epochs) `LearnDrop` hands its policy
an `Observation`: for each unit still training, how far its weights moved
since the last evaluation (net change and path length, relative to the
weights' norm), the mean learning rate applied meanwhile, and where the run
stands (`epoch` of `epochs`, and the learning rate still to come). The
policy returns how many leading units it wants frozen. A policy is an
object, like Keras's `LearningRateSchedule`: the built-in ones are
documented below with their equations, and a new one subclasses
`FreezePolicy` and implements `propose`.

Every policy gets the same safeguards, applied by `FreezePolicy.update`
around `propose`:

* nothing freezes before `start_fraction` of the run's epochs, nor after
  its last epoch (nothing would run on the smaller head);
* one decision adds at most `max_new_units` units;
* the stem is a prefix, never shrinks, never holds more than
  `max_drop_fraction` of the units and never the output unit;
* a unit whose weights are not finite (a diverged step) is never frozen,
  nor anything behind it;
* with `freeze_augmented=False` (the default policy's setting), nothing
  freezes while the training inputs are randomly augmented.

Built in:

* `LearnDropScores` (the default): the change a unit would still make in
  the rest of the run at its present rate of change per unit of learning
  rate.
* `DirectionConsistency`: whether a unit's updates still point one way
  (the effective perturbation of APF, Chen et al. 2021).
* `AutoFreezeRule`: a unit's change rate against the median of the units
  still training (AutoFreeze, Liu et al. 2021).
* `FreezeOut`: unit `i` freezes at `(t0 + (1 - t0) i / n)^3` of the run
  (Brock et al. 2017); no measurement.
* `FixedSchedule`: `{evaluation: stem size}`, for experiments.

Policies are pure bookkeeping on NumPy arrays, so they are tested and
resumed (`get_state` / `set_state`) without a model.
"""

import dataclasses
import math

import numpy as np

from keras_learndrop import drift as drift_lib
from keras_learndrop import scoring
from keras_learndrop.checks import check_bool
from keras_learndrop.checks import check_int
from keras_learndrop.checks import check_number
from keras_learndrop.checks import is_int


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a policy sees at one evaluation.

    Attributes:
        epoch: Integer. Index (from 0) of the epoch that just ended.
        epochs: Integer or `None`. Epochs the `fit` call will run (Keras's
            `params["epochs"]`); `None` when unknown.
        change: Float array, one per unit: the net relative change of the
            unit's trainable weights since the last evaluation,
            `c_u = ||w_u(k) - w_u(k-1)|| / ||w_u(k-1)||`. `NaN` for frozen
            units, `inf` for units whose weights are not finite.
        path: Float array: the relative path length over the same interval,
            `p_u = sum_s ||w_u(t_s) - w_u(t_{s-1})|| / ||w_u(k-1)||` over the
            samples taken in between (`FreezePolicy.samples_per_epoch`);
            `p_u >= c_u`, equal without samples.
        learning_rate: Float or `None`. Mean learning rate of the optimizer
            over the interval (sampled with the weights), `None` when the
            optimizer has none.
        remaining_learning_rate: Float or `None`. The learning rate still to
            come: the sum, over the epochs of the `fit` call after this one,
            of each epoch's mean learning rate, from the optimizer's
            schedule (a constant rate counts as constant). `None` when the
            run's length is unknown.
        scheduled: Boolean. Whether the learning rates to come are known:
            the optimizer's rate is a `LearningRateSchedule`. `False` for a
            constant rate, which callbacks (`ReduceLROnPlateau`,
            `LearningRateScheduler`) may change at any epoch: then
            `remaining_learning_rate` counts the current rate as constant.
        augmented: Boolean. Whether the training inputs are randomly
            augmented: LearnDrop's `augmented_inputs=True`, random
            operations it found in the input pipeline, or Keras's random
            image augmentation layers in the model.
        drift: Float array or `None`, one per unit: how far the unit's
            output on the probe set moved since the last evaluation,
            `1 - CKA` (see `keras_learndrop.drift`). `NaN` for frozen units
            and where nothing was measured (the first evaluation of a
            `fit`); `None` when LearnDrop measures no drift
            (`probe_size=0`).
    """

    epoch: int
    epochs: int | None
    change: np.ndarray
    path: np.ndarray
    learning_rate: float | None = None
    remaining_learning_rate: float | None = None
    scheduled: bool = False
    augmented: bool = False
    drift: np.ndarray | None = None

    @property
    def relative_drift(self):
        """Each unit's drift over the last unit's (`drift.relative_drift`).

        `None` without drift.
        """
        if self.drift is None:
            return None
        return drift_lib.relative_drift(self.drift)

    @property
    def progress(self):
        """Fraction of the run done after this epoch, or `None`."""
        if not self.epochs:
            return None
        return (self.epoch + 1) / self.epochs


class FreezePolicy:
    """Base class of freeze policies: the safeguards around `propose`.

    Subclasses implement `propose(observation)`, which returns the stem
    size the policy would choose, and may keep state between evaluations
    (then override `reset`, `get_state` and `set_state`, calling the base
    class). `update` applies the safeguards and returns the stem size.

    Args:
        max_drop_fraction: Float in [0, 1). Largest fraction of the units
            the stem may hold (never the output unit). Defaults to `0.75`.
        start_fraction: Float in [0, 1). No unit freezes before this
            fraction of the run's epochs has been trained. Defaults to
            `0.0`.
        max_new_units: Integer >= 1, or `None`. Most units one decision may
            add to the stem. Defaults to `None` (no bound).
        freeze_augmented: Boolean. Whether to freeze while the training
            inputs are randomly augmented (`Observation.augmented`). Such
            a stem sees new images every epoch, so it is not replayed from
            a cache (a frozen stem saves its backward pass only), and in
            the runs of docs/results.md every freeze under augmentation
            cost accuracy (about a point even in the last third of the
            run). Defaults to `True`; the default policy sets `False`.

    Attributes:
        samples_per_epoch: Integer. How many times per epoch LearnDrop
            samples the weights' path between evaluations (1: only at
            epoch ends).
        uses_drift: Boolean. Whether the policy decides on
            `Observation.drift` (LearnDrop then refuses `probe_size=0`).
        num_units: Integer, set by `build`.
        stem_size: Integer. Units frozen so far.
        evaluations: Integer. Evaluations seen since the last `reset`.
        last_scores: Dict of the named per-unit scores of the last
            `propose` (reported by LearnDrop as `ld_<name>/unit_<i>`).
        notes: List of strings the policy has to say about its decisions
            (LearnDrop moves them to `history.notes` after each `update`).
    """

    samples_per_epoch = 1
    uses_drift = False

    def __init__(
        self,
        max_drop_fraction=0.75,
        start_fraction=0.0,
        max_new_units=None,
        freeze_augmented=True,
    ):
        check_number(
            "max_drop_fraction", max_drop_fraction, 0.0, 1.0, high_open=True
        )
        check_number("start_fraction", start_fraction, 0.0, 1.0, high_open=True)
        if max_new_units is not None:
            check_int("max_new_units", max_new_units, 1)
        check_bool("freeze_augmented", freeze_augmented)
        self.max_drop_fraction = max_drop_fraction
        self.start_fraction = start_fraction
        self.max_new_units = max_new_units
        self.freeze_augmented = freeze_augmented
        self.num_units = None
        self.max_units = 0
        self.stem_size = 0
        self.evaluations = 0
        self.last_scores = {}
        self.notes = []

    def build(self, num_units):
        """Prepares the policy for a chain of `num_units` units; resets it."""
        check_int("num_units", num_units, 1)
        self.num_units = num_units
        self.max_units = min(
            num_units - 1,
            math.floor(self.max_drop_fraction * num_units + 1e-9),
        )
        self.reset()

    def reset(self, stem_size=0):
        """Forgets all evaluations; keeps a stem of `stem_size` units."""
        self.evaluations = 0
        self.stem_size = stem_size
        self.last_scores = {}

    def update(self, observation):
        """Records one evaluation and returns the new stem size.

        Args:
            observation: An `Observation`.

        Returns:
            Integer. The number of leading units to freeze (never less than
            before).

        Raises:
            ValueError: if the observation does not hold one value per unit,
                or the policy was not built.
        """
        if self.num_units is None:
            raise ValueError(
                f"{type(self).__name__} must be built for a number of units "
                "(`policy.build(num_units)`) before `update`; LearnDrop does "
                "this when `fit` starts."
            )
        names = ("change", "path")
        if observation.drift is not None:
            names += ("drift",)
        for name in names:
            shape = np.shape(getattr(observation, name))
            if shape != (self.num_units,):
                raise ValueError(
                    f"`observation.{name}` must hold one value per unit "
                    f"({self.num_units}). Received: shape {shape}."
                )
        self.evaluations += 1
        proposal = int(self.propose(observation))
        progress = observation.progress
        if progress is not None and (
            progress < self.start_fraction - 1e-9 or progress >= 1.0
        ):
            proposal = self.stem_size
        if observation.augmented and not self.freeze_augmented:
            proposal = self.stem_size
        change = np.asarray(observation.change, dtype=np.float64)
        diverged = np.flatnonzero(np.isinf(change) | np.isinf(observation.path))
        diverged = diverged[diverged >= self.stem_size]
        if diverged.size:
            proposal = min(proposal, int(diverged[0]))
        if self.max_new_units is not None:
            proposal = min(proposal, self.stem_size + self.max_new_units)
        proposal = min(proposal, self.max_units)
        self.stem_size = max(self.stem_size, proposal)
        return self.stem_size

    def propose(self, observation):
        """Returns the stem size this policy chooses, before safeguards.

        Called once per evaluation, also while the safeguards hold the stem
        (so that windowed criteria see every evaluation).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `propose(observation)`."
        )

    def get_config(self):
        """Returns the constructor arguments, JSON-ready."""
        return {
            "max_drop_fraction": self.max_drop_fraction,
            "start_fraction": self.start_fraction,
            "max_new_units": self.max_new_units,
            "freeze_augmented": self.freeze_augmented,
        }

    @classmethod
    def from_config(cls, config):
        """Builds a policy from the output of `get_config`."""
        return cls(**config)

    def get_state(self):
        """Returns the policy's state as plain Python values."""
        return {
            "evaluations": int(self.evaluations),
            "stem_size": int(self.stem_size),
        }

    def set_state(self, state):
        """Restores a state returned by `get_state`."""
        self.evaluations = int(state["evaluations"])
        self.stem_size = int(state["stem_size"])

    def __repr__(self):
        arguments = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"


class _StreakPolicy(FreezePolicy):
    """A policy that freezes units settled for `patience` evaluations."""

    def __init__(self, patience, **kwargs):
        super().__init__(**kwargs)
        check_int("patience", patience, 1)
        self.patience = patience
        self.streak = np.zeros(0, dtype=np.int64)

    def reset(self, stem_size=0):
        super().reset(stem_size)
        self.streak = np.zeros(self.num_units or 0, dtype=np.int64)

    def settled(self, observation):
        """Returns a boolean array: units settled at this evaluation."""
        raise NotImplementedError

    def propose(self, observation):
        settled = np.asarray(self.settled(observation), dtype=bool)
        frozen = np.isnan(np.asarray(observation.change, dtype=np.float64))
        settled = settled | frozen
        self.streak = np.where(settled, self.streak + 1, 0)
        return _prefix(self.streak >= self.patience, self.stem_size)

    def get_config(self):
        return {"patience": self.patience, **super().get_config()}

    def get_state(self):
        return {
            **super().get_state(),
            "streak": [int(s) for s in self.streak],
        }

    def set_state(self, state):
        super().set_state(state)
        self.streak = np.asarray(state["streak"], dtype=np.int64)


class LearnDropScores(_StreakPolicy):
    """Learn&Drop's scores: how much of its learning a unit has still to do.

    For unit `u` at evaluation `k`, with net change `c_u(k)` over the last
    interval (see `Observation`) and mean learning rate `lr(k)` over it:

    * **rate**, the change per unit of learning rate,
      `v_u(k) = c_u(k) / lr(k)`. Under SGD a step moves the weights by the
      learning rate times the (momentum-averaged) gradient, so `v_u` says
      how fast the unit learns whatever the schedule does to `lr`;
    * **to come**, the change the unit would still make if it went on at
      that rate: `F_u(k) = v_u(k) * L(k)`, where `L(k)` is the learning
      rate still to come (`Observation.remaining_learning_rate`: the sum of
      the mean learning rates of the epochs left in `fit`, from the
      optimizer's schedule);
    * **continuation**, the share of the unit's learning still to come:
      `s_u(k) = F_u(k) / (P_u(k) + F_u(k))`, where `P_u(k)` is the change
      it made so far, the sum of `c_u(j)` over the evaluations
      `warmup < j <= k` (the warm-up's move away from the initialisation
      is left out). With `relative=False`, `s_u(k) = F_u(k)`: the change to
      come in units of the weights' norm.

    A unit is settled when `s_u(k) <= threshold`; the stem grows to the
    longest prefix of units settled for `patience` evaluations in a row.
    Units without trainable weights are settled from the start. With
    `last_unit_threshold`, the threshold falls geometrically with depth,
    from `threshold` for the first unit to `last_unit_threshold` for the
    last one (unit `i` of `n`: `threshold * (last_unit_threshold /
    threshold) ** (i / (n - 1))`), so deeper units freeze later.

    Why this form (docs/results.md, "Choosing the policy", has the runs): in a
    ResNet-20 trained from scratch under a cosine schedule, `v_u` of every
    unit stays within a factor of two from the second epoch to the last,
    so a score that compares the change with its own peak measures the
    schedule, or the first epoch's large move away from initialisation,
    not learning; what does fall is the learning rate still to come. The
    change to come in absolute terms (`relative=False`) froze VGG-11's
    units, which move less than ResNet-20's, a third of the way through
    the run and lost 6.8 points; as a share of the unit's own learning it
    does not depend on how far a unit's weights move.

    Args:
        threshold: Float in (0, 1] (any float > 0 with `relative=False`).
            Continuation at or below which a unit is settled. Defaults to
            `0.25`.
        patience: Integer >= 1. Evaluations in a row a unit must be settled.
            Defaults to `2`.
        warmup: Integer >= 0. First evaluations that never count as
            settled, nor in the learning done. Defaults to `1`.
        relative: Boolean. Divide the change to come by the unit's whole
            learning (done and to come). Defaults to `True`.
        last_unit_threshold: Float in (0, `threshold`] or `None`. The last
            unit's threshold, for a threshold that falls with depth; `None`
            keeps `threshold` for every unit. Defaults to `None`.
        **kwargs: The safeguards of `FreezePolicy`.

    Example:

    >>> policy = LearnDropScores(threshold=0.25, patience=1, warmup=0)
    >>> policy.build(3)
    >>> observe = lambda epoch, change: Observation(
    ...     epoch=epoch, epochs=10, change=np.array(change),
    ...     path=np.array(change), learning_rate=0.05,
    ...     remaining_learning_rate=0.05 * (9 - epoch))
    >>> [policy.update(observe(e, [0.05, 0.1, 0.1])) for e in range(3)]
    [0, 0, 0]
    >>> policy.update(observe(3, [0.005, 0.1, 0.1]))
    1
    """

    def __init__(
        self,
        threshold=0.25,
        patience=2,
        warmup=1,
        relative=True,
        last_unit_threshold=None,
        **kwargs,
    ):
        super().__init__(patience, **kwargs)
        check_bool("relative", relative)
        check_number(
            "threshold",
            threshold,
            0.0,
            1.0 if relative else math.inf,
            low_open=True,
        )
        if last_unit_threshold is not None:
            check_number(
                "last_unit_threshold",
                last_unit_threshold,
                0.0,
                threshold,
                low_open=True,
            )
        check_int("warmup", warmup, 0)
        self.threshold = threshold
        self.last_unit_threshold = last_unit_threshold
        self.warmup = warmup
        self.relative = relative
        self.learned = np.zeros(0)

    @classmethod
    def default(cls, **kwargs):
        """Returns `LearnDrop`'s default policy.

        `last_unit_threshold=0.02`: the first unit freezes once at most a
        quarter of its learning is still to come, the last stem unit once
        about 2 %, so the stem grows unit by unit, deeper units later.
        `freeze_augmented=False`: nothing freezes while the training
        inputs are randomly augmented, where every freeze measured cost
        accuracy. See the frontier in docs/results.md for what it gained
        and cost against `LearnDropScores()` (one threshold for every
        unit, which freezes the whole stem at once).

        Args:
            **kwargs: Arguments of `LearnDropScores` to change.
        """
        return cls(**{**DEFAULT_SCORES, **kwargs})

    @classmethod
    def aggressive(cls, **kwargs):
        """Returns the faster published setting, `threshold=0.7`.

        A unit freezes once at most 70 % of its learning is still to come:
        under a cosine schedule the whole stem freezes after about a fifth
        of the run. Meant for residual networks trained without random
        augmentation, and for fine-tuning: on the frontier of docs/results.md
        ResNet-20 from scratch trained 2.8x faster for 1.4 points of
        accuracy, but VGG-11 lost 17 points and ResNet-20 with random
        augmentation 9 (the stem was not done learning there; its weights'
        movement does not tell).

        Args:
            **kwargs: Arguments of `LearnDropScores` to change.
        """
        return cls(**{**AGGRESSIVE_SCORES, **kwargs})

    def reset(self, stem_size=0):
        super().reset(stem_size)
        self.learned = np.zeros(self.num_units or 0)

    def settled(self, observation):
        change = np.asarray(observation.change, dtype=np.float64)
        rate = scoring.per_learning_rate(change, observation.learning_rate)
        if self.evaluations > self.warmup:
            # The warm-up's move away from the initialisation is no
            # measure of the learning a unit does.
            moved = np.isfinite(change)
            self.learned = self.learned + np.where(moved, change, 0.0)
        remaining = observation.remaining_learning_rate
        with np.errstate(invalid="ignore", divide="ignore"):
            if remaining is None:
                # Without the run's length only a unit that does not move
                # at all (no trainable weights) is known to be settled.
                to_come = np.where(rate == 0, 0.0, np.inf)
            else:
                to_come = rate * remaining
            if self.relative:
                whole = self.learned + to_come
                continuation = np.where(
                    np.isinf(to_come),
                    np.inf,
                    np.where(whole > 0, to_come / whole, 0.0),
                )
            else:
                continuation = to_come
        continuation = np.where(np.isnan(rate), np.nan, continuation)
        self.last_scores = {"rate": rate, "continuation": continuation}
        if self.evaluations <= self.warmup:
            return np.zeros(rate.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.isfinite(continuation) & (
                continuation <= self.thresholds(len(continuation))
            )

    def thresholds(self, num_units):
        """Returns the threshold of each of `num_units` units."""
        if self.last_unit_threshold is None or num_units < 2:
            return np.full(num_units, float(self.threshold))
        depth = np.arange(num_units) / (num_units - 1)
        ratio = self.last_unit_threshold / self.threshold
        return self.threshold * ratio**depth

    def get_config(self):
        return {
            "threshold": self.threshold,
            "warmup": self.warmup,
            "relative": self.relative,
            "last_unit_threshold": self.last_unit_threshold,
            **super().get_config(),
        }

    def get_state(self):
        return {
            **super().get_state(),
            "learned": [float(v) for v in self.learned],
        }

    def set_state(self, state):
        super().set_state(state)
        self.learned = np.asarray(state["learned"], dtype=np.float64)


class DirectionConsistency(_StreakPolicy):
    """Freezes units whose updates no longer point one way (APF's rule).

    Between evaluations LearnDrop samples each unit's weights
    `samples_per_epoch` times. The **consistency** of unit `u` over the
    interval is its net change over its path length,

    `e_u(k) = ||w_u(k) - w_u(k-1)|| / sum_s ||w_u(t_s) - w_u(t_{s-1})||`,

    in (0, 1]: 1 while every update moves the weights the same way, about
    `1 / sqrt(S)` for `S` updates in random directions, the picture of a
    unit that oscillates around its optimum. It is the unit-level form of
    the effective perturbation `|EMA(delta)| / EMA(|delta|)` of APF (Chen et
    al., "Communication-Efficient Federated Learning with Adaptive
    Parameter Freezing", 2021). It does not depend on the learning rate's
    scale, and the first epoch's large move away from initialisation is as
    consistent as any other drift. A unit is settled when
    `e_u(k) <= threshold`, for `patience` evaluations in a row.

    Args:
        threshold: Float in (0, 1]. Consistency at or below which a unit
            is settled. Defaults to `0.5`.
        patience: Integer >= 1. Defaults to `2`.
        samples_per_epoch: Integer >= 2. Samples of the weights per epoch.
            Defaults to `8`.
        **kwargs: The safeguards of `FreezePolicy`.

    Example:

    >>> policy = DirectionConsistency(threshold=0.5, patience=1)
    >>> policy.build(3)
    >>> policy.update(Observation(1, 10, np.array([0.1, 0.4, 0.4]),
    ...                           np.array([0.4, 0.5, 0.5])))
    1
    """

    def __init__(self, threshold=0.5, patience=2, samples_per_epoch=8, **kw):
        super().__init__(patience, **kw)
        check_number("threshold", threshold, 0.0, 1.0, low_open=True)
        check_int("samples_per_epoch", samples_per_epoch, 2)
        self.threshold = threshold
        self.samples_per_epoch = samples_per_epoch

    def settled(self, observation):
        consistency = scoring.consistency(observation.change, observation.path)
        self.last_scores = {"consistency": consistency}
        return np.isfinite(consistency) & (consistency <= self.threshold)

    def get_config(self):
        return {
            "threshold": self.threshold,
            "samples_per_epoch": self.samples_per_epoch,
            **super().get_config(),
        }


class AutoFreezeRule(FreezePolicy):
    """Freezes the prefix of units that change slower than the median.

    AutoFreeze's rule (Liu et al., "AutoFreeze: Automatically Freezing
    Model Blocks to Accelerate Fine-tuning", 2021), on what LearnDrop
    observes. AutoFreeze accumulates the L1 norm of each block's gradient
    over an interval; here the accumulated gradient is
    `G_u(k) = p_u(k) / lr(k)`, the unit's relative path length per unit of
    learning rate (what plain SGD's updates add up to). Its change rate is
    `r_u(k) = |G_u(k-1) - G_u(k)| / G_u(k-1)`; every unit before the first
    unit still training with `r_u(k) >= median_v r_v(k)` (the median over
    the units still training) is frozen. It needs two evaluations before
    its first decision. Units without trainable weights never stop the
    prefix.

    Args:
        **kwargs: The safeguards of `FreezePolicy`.

    Example:

    >>> policy = AutoFreezeRule()
    >>> policy.build(4)
    >>> observe = lambda epoch, path: Observation(
    ...     epoch, 10, np.array(path), np.array(path), 0.1)
    >>> policy.update(observe(1, [1.0, 1.0, 1.0, 1.0]))
    0
    >>> policy.update(observe(2, [0.99, 0.98, 0.5, 0.6]))
    2
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.previous = np.zeros(0)

    def reset(self, stem_size=0):
        super().reset(stem_size)
        self.previous = np.full(self.num_units or 0, np.nan)

    def propose(self, observation):
        accumulated = scoring.per_learning_rate(
            np.asarray(observation.path, dtype=np.float64),
            observation.learning_rate,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.abs(self.previous - accumulated) / self.previous
        weightless = accumulated == 0
        rate = np.where(weightless, 0.0, rate)
        self.previous = accumulated
        self.last_scores = {"change_rate": rate}
        training = np.arange(self.num_units) >= self.stem_size
        candidates = training & np.isfinite(rate) & ~weightless
        if not candidates.any() or not np.isfinite(rate[training]).all():
            return self.stem_size
        median = np.median(rate[candidates])
        fast = np.flatnonzero(candidates & (rate >= median))
        return int(fast[0]) if fast.size else self.stem_size

    def get_state(self):
        return {
            **super().get_state(),
            "previous": [
                None if not np.isfinite(p) else float(p) for p in self.previous
            ],
        }

    def set_state(self, state):
        super().set_state(state)
        self.previous = np.array(
            [np.nan if p is None else p for p in state["previous"]],
            dtype=np.float64,
        )


class FreezeOut(FreezePolicy):
    """Freezes unit `i` at a fixed share of the run; no measurement.

    FreezeOut's cubic schedule (Brock et al., "FreezeOut: Accelerate
    Training by Progressively Freezing Layers", 2017): of `n` units, unit
    `i` (from 0) freezes after the first epoch at which

    `progress >= (t0 + (1 - t0) * i / n) ** 3`,

    where `progress` is the fraction of `fit`'s epochs done. FreezeOut also
    anneals each layer's learning rate to zero by its freezing time; here
    the optimizer's own schedule is left alone.

    Args:
        t0: Float in (0, 1]. Share of the run (before the cube) at which the
            first unit freezes. Defaults to `0.8`.
        **kwargs: The safeguards of `FreezePolicy`.

    Raises:
        ValueError: at `update`, if the run's length is unknown.

    Example:

    >>> policy = FreezeOut(t0=0.5)
    >>> policy.build(4)
    >>> [policy.update(Observation(e, 10, np.ones(4), np.ones(4)))
    ...  for e in range(10)]
    [0, 1, 2, 2, 3, 3, 3, 3, 3, 3]
    """

    def __init__(self, t0=0.8, **kwargs):
        super().__init__(**kwargs)
        check_number("t0", t0, 0.0, 1.0, low_open=True)
        self.t0 = t0

    def freeze_times(self):
        """Returns each unit's freezing time, as a share of the run."""
        i = np.arange(self.num_units)
        return (self.t0 + (1 - self.t0) * i / self.num_units) ** 3

    def propose(self, observation):
        if observation.progress is None:
            raise ValueError(
                "FreezeOut needs the number of epochs of the run; it is "
                "read from `fit` (Keras's `params['epochs']`). Received: "
                f"epochs={observation.epochs!r}."
            )
        due = self.freeze_times() <= observation.progress + 1e-9
        return _prefix(due, self.stem_size)

    def get_config(self):
        return {"t0": self.t0, **super().get_config()}


class FixedSchedule(FreezePolicy):
    """Freezes fixed numbers of units after fixed evaluations.

    For experiments that need a cut at a known time (benchmarks, ablations):
    the scores are still computed and reported, but ignored. The safeguards
    default to none (`max_drop_fraction` only keeps the output unit).

    Args:
        schedule: Dict mapping an evaluation number (1 for the first) to the
            stem size to reach after it. `{}` never freezes: LearnDrop then
            only records what it measures (see `benchmarks/
            simulate_policies.py`).
        samples_per_epoch: Integer >= 1. Samples of the weights' path per
            epoch, recorded in the history. Defaults to `1`.
        **kwargs: The safeguards of `FreezePolicy`.

    Example:

    >>> policy = FixedSchedule({2: 3})
    >>> policy.build(4)
    >>> [policy.update(Observation(e, 3, np.ones(4), np.ones(4)))
    ...  for e in range(3)]
    [0, 3, 3]
    """

    def __init__(self, schedule, samples_per_epoch=1, **kwargs):
        kwargs.setdefault("max_drop_fraction", 0.999)
        super().__init__(**kwargs)
        check_int("samples_per_epoch", samples_per_epoch, 1)
        self.samples_per_epoch = samples_per_epoch
        if not isinstance(schedule, dict):
            raise TypeError(
                "`schedule` must be a dict mapping an evaluation number to "
                f"a stem size. Received: schedule={schedule!r}."
            )
        for evaluation, size in schedule.items():
            valid = is_int(evaluation) and is_int(size)
            if not valid or evaluation < 1 or size < 0:
                raise (ValueError if valid else TypeError)(
                    "`schedule` maps evaluation numbers (integers >= 1) to "
                    "stem sizes (integers >= 0). Received: "
                    f"{{{evaluation!r}: {size!r}}} in schedule={schedule!r}."
                )
        self.schedule = {int(e): int(s) for e, s in schedule.items()}

    def build(self, num_units):
        for evaluation, size in self.schedule.items():
            if size >= num_units:
                raise ValueError(
                    "`schedule` maps evaluations to stem sizes in "
                    f"[0, {num_units - 1}] for this model of {num_units} "
                    f"units. Received: {{{evaluation}: {size}}}."
                )
        super().build(num_units)

    def propose(self, observation):
        return self.schedule.get(self.evaluations, self.stem_size)

    def update(self, observation):
        # The plan is the experiment: only the prefix rules apply.
        self.evaluations += 1
        size = min(self.propose(observation), self.num_units - 1)
        self.stem_size = max(self.stem_size, size)
        return self.stem_size

    def get_config(self):
        return {
            "schedule": {str(k): v for k, v in self.schedule.items()},
            "samples_per_epoch": self.samples_per_epoch,
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = {int(k): v for k, v in config["schedule"].items()}
        return cls(**config)


class FeatureDrift(_StreakPolicy):
    """Freezes a unit once its features stop changing.

    At every evaluation LearnDrop runs a fixed probe set (a few hundred
    inputs of the `fit`, see `LearnDrop(probe_size=...)`) through the model
    in inference mode and compares each unit's output with the one of the
    previous evaluation: its **drift** `d_u(k) = 1 - CKA`, one minus the
    linear centred kernel alignment of the two (`keras_learndrop.drift`).
    CKA ignores rotations and the scale of the features, so a unit drifts
    only when what it computes changes, not when its weights merely move
    (a kernel before `BatchNormalization` shrinking under weight decay, or
    turning in its rotational equilibrium). A unit's output depends on
    every unit before it, so a settled unit vouches for the whole prefix.

    A unit is settled when `d_u(k) <= threshold` and, with
    `relative_threshold`, its **relative drift** `d_u(k) / d_last(k)`
    against the output unit over the same interval (which cancels the
    jumps every unit makes together) is `<= relative_threshold`. The stem
    grows to the longest prefix of units settled for `patience`
    evaluations in a row. Nothing here reads the learning-rate schedule or
    the run's length, so it also decides in open-ended runs
    (`EarlyStopping`, `ReduceLROnPlateau`).

    Args:
        threshold: Float in (0, 1]. Drift per evaluation at or below which
            a unit is settled. Defaults to `0.005`: fine-tuning a
            pre-trained stem 1.64x faster at -0.14 points over four seeds,
            where `0.01` was 2.10x at -0.85 (docs/results.md). From scratch
            no threshold measured kept accuracy (open-ended runs: `0.01`
            -0.98 points over eight seeds, `0.005` -2.5 over four).
        patience: Integer >= 1. Evaluations in a row a unit must be settled.
            Defaults to `2`.
        warmup: Integer >= 0. First evaluations that never count as
            settled (the move away from the initialisation). Defaults to
            `1`.
        relative_threshold: Float in (0, 1] or `None`. Also require the
            relative drift at or below it; `None` does not. Defaults to
            `None`.
        **kwargs: The safeguards of `FreezePolicy`.

    Example:

    >>> policy = FeatureDrift(threshold=0.02, patience=2, warmup=0)
    >>> policy.build(3)
    >>> observe = lambda epoch, drift: Observation(
    ...     epoch=epoch, epochs=None, change=np.ones(3), path=np.ones(3),
    ...     drift=np.array(drift))
    >>> policy.update(observe(0, [0.01, 0.2, 0.5]))
    0
    >>> policy.update(observe(1, [0.005, 0.01, 0.5]))
    1
    >>> policy.update(observe(2, [0.004, 0.015, 0.4]))
    2
    """

    uses_drift = True

    def __init__(
        self,
        threshold=0.005,
        patience=2,
        warmup=1,
        relative_threshold=None,
        **kwargs,
    ):
        super().__init__(patience, **kwargs)
        check_number("threshold", threshold, 0.0, 1.0, low_open=True)
        check_int("warmup", warmup, 0)
        if relative_threshold is not None:
            check_number(
                "relative_threshold",
                relative_threshold,
                0.0,
                1.0,
                low_open=True,
            )
        self.threshold = threshold
        self.warmup = warmup
        self.relative_threshold = relative_threshold

    def settled(self, observation):
        if observation.drift is None:
            raise ValueError(
                "FeatureDrift decides on `observation.drift`, which is "
                "None: LearnDrop measures it unless `probe_size=0`."
            )
        drift = np.asarray(observation.drift, dtype=np.float64)
        relative = observation.relative_drift
        self.last_scores = {"relative_drift": relative}
        if self.evaluations <= self.warmup:
            return np.zeros(drift.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            settled = drift <= self.threshold
            if self.relative_threshold is not None:
                settled &= relative <= self.relative_threshold
        return settled

    def get_config(self):
        return {
            "threshold": self.threshold,
            "warmup": self.warmup,
            "relative_threshold": self.relative_threshold,
            **super().get_config(),
        }


class ScheduleOrDrift(FreezePolicy):
    """The default's scores, or the drift for a pre-trained stem.

    Two signals say when a unit is done, each where the other fails
    (docs/results.md, "Version 0.7: a pre-trained stem told apart"):

    * `scores` (`LearnDropScores.default()`) counts the learning a unit
      has still to come from the learning-rate schedule. From scratch it
      kept accuracy in every regime measured, but it reads a clock, not
      the network: it cannot tell a pre-trained stem from a fresh one, so
      fine-tuning waits for half the run as training from scratch does.
    * `drift` (`FeatureDrift()`) reads the network: how far each unit's
      features on the probe set still move. From scratch a frozen prefix
      makes the next units look settled in turn (they stop inheriting its
      drift): it lost 1 to 17 points there, also in runs of unknown length.

    On a pre-trained stem this policy fine-tuned 1.64x faster at -0.14
    points on the tuning split, but 1.77x at -1.00 on held-out images
    (four seeds each), where the default was 1.17x at -0.04: it trades
    about a point for the speed, which is why it is not the default.

    At the first evaluation of a `fit`, the policy picks one of them for
    the whole `fit`, and says which and why in `notes`:

    1. `scores` when no drift is measured (`probe_size=0`, or data the
       probe cannot read);
    2. `drift` when the stem starts pre-trained: over the first
       evaluation, the first half of the units with trainable weights
       drifted `pretrained_drift` or less on average, and at most
       `pretrained_relative_drift` times as much as the output unit (the
       head learns, the stem stays). Fine-tuning measured 0.012-0.055 and
       0.016-0.108 times the output's in eight runs; from scratch, every
       run drifted either more than 0.15, or more than 0.44 times the
       output's (keras.applications' ResNet50, 0.067: a deep residual
       network drifts little everywhere in its first epoch), in 19 runs of
       six regimes;
    3. `scores` otherwise, as LearnDrop's default. Without a schedule
       (`Observation.scheduled` is `False`: a constant rate, which
       `ReduceLROnPlateau` may change) the scores count the current rate
       as constant to the last of `fit`'s epochs, so under `EarlyStopping`
       they may freeze nothing; the note says so.

    The chosen policy's own safeguards apply, and this policy's on top.

    Args:
        scores: A `FreezePolicy` for runs whose schedule is known, from
            scratch. Defaults to `LearnDropScores.default()` (with
            `freeze_augmented=True`: this policy's own setting decides).
        drift: A `FreezePolicy` for pre-trained stems. Defaults to
            `FeatureDrift()`.
        pretrained_drift: Float in [0, 1]. Mean drift over the first
            evaluation at or below which the stem may count as pre-trained
            (`0` never counts it so). Defaults to `0.07`.
        pretrained_relative_drift: Float >= 0. The same mean over the
            output unit's drift must also be at or below it. Defaults to
            `0.15`.
        **kwargs: The safeguards of `FreezePolicy`; `freeze_augmented`
            defaults to `False` here.

    Attributes:
        choice: `"scores"`, `"drift"` or `None` before the first evaluation.

    Example:

    >>> policy = ScheduleOrDrift()
    >>> policy.build(4)
    >>> observation = Observation(
    ...     epoch=0, epochs=10, change=np.full(4, 0.1),
    ...     path=np.full(4, 0.1), learning_rate=0.01, scheduled=True,
    ...     drift=np.array([0.01, 0.03, 0.2, 0.8]))
    >>> policy.update(observation), policy.choice
    (0, 'drift')
    """

    def __init__(
        self,
        scores=None,
        drift=None,
        pretrained_drift=0.07,
        pretrained_relative_drift=0.15,
        **kwargs,
    ):
        kwargs.setdefault("freeze_augmented", False)
        super().__init__(**kwargs)
        if scores is None:
            # This policy's `freeze_augmented` governs, not the scores'.
            scores = LearnDropScores.default(freeze_augmented=True)
        drift = FeatureDrift() if drift is None else drift
        for name, value, example in (
            ("scores", scores, "LearnDropScores.default()"),
            ("drift", drift, "FeatureDrift()"),
        ):
            if not isinstance(value, FreezePolicy):
                raise TypeError(
                    f"`{name}` must be a FreezePolicy such as {example}. "
                    f"Received: {value!r}."
                )
        check_number("pretrained_drift", pretrained_drift, 0.0, 1.0)
        check_number(
            "pretrained_relative_drift",
            pretrained_relative_drift,
            0.0,
            math.inf,
        )
        self.scores = scores
        self.drift = drift
        self.pretrained_drift = pretrained_drift
        self.pretrained_relative_drift = pretrained_relative_drift
        self.choice = None

    @property
    def samples_per_epoch(self):
        return max(self.scores.samples_per_epoch, self.drift.samples_per_epoch)

    def build(self, num_units):
        self.scores.build(num_units)
        self.drift.build(num_units)
        super().build(num_units)

    def reset(self, stem_size=0):
        super().reset(stem_size)
        self.choice = None
        if self.num_units is not None:
            self.scores.reset(stem_size)
            self.drift.reset(stem_size)

    def choose(self, observation):
        """Returns `"scores"` or `"drift"` for `observation`, and why."""
        if observation.drift is None:
            return "scores", (
                "no drift is measured (`probe_size=0`, or data the probe "
                "cannot read)"
            )
        drift = np.asarray(observation.drift, dtype=np.float64)
        change = np.asarray(observation.change, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            measured = drift[np.isfinite(drift) & (change > 0)]
        first = measured[: max(1, len(measured) // 2)]
        mean = float(np.mean(first)) if first.size else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = mean / float(drift[-1])
        figures = (
            f"the first half of the units drifted {mean:.3f} on average "
            f"over the first evaluation, {relative:.3f} times the output "
            "unit's"
        )
        if (
            mean <= self.pretrained_drift
            and relative <= self.pretrained_relative_drift
        ):
            return "drift", (
                f"the stem starts pre-trained: {figures} (at most "
                f"pretrained_drift={self.pretrained_drift} and "
                f"pretrained_relative_drift={self.pretrained_relative_drift})"
            )
        why = (
            f"the stem trains from scratch: {figures} (pre-trained: at most "
            f"pretrained_drift={self.pretrained_drift} and "
            f"pretrained_relative_drift={self.pretrained_relative_drift})"
        )
        if not observation.scheduled:
            why += (
                "; the learning rate has no schedule, so the scores count "
                "it as constant to the last of fit's epochs (under "
                "EarlyStopping the run may end before anything freezes)"
            )
        return "scores", why

    def propose(self, observation):
        if self.choice is None:
            self.choice, why = self.choose(observation)
            policy = self.scores if self.choice == "scores" else self.drift
            self.notes.append(
                f"{type(self).__name__} decides with "
                f"{type(policy).__name__}: {why}"
            )
        policy = self.scores if self.choice == "scores" else self.drift
        policy.stem_size = self.stem_size
        stem = policy.update(observation)
        self.last_scores = policy.last_scores
        return stem

    def get_config(self):
        return {
            "scores": serialize(self.scores),
            "drift": serialize(self.drift),
            "pretrained_drift": self.pretrained_drift,
            "pretrained_relative_drift": self.pretrained_relative_drift,
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["scores"] = deserialize(config["scores"])
        config["drift"] = deserialize(config["drift"])
        return cls(**config)

    def get_state(self):
        return {
            **super().get_state(),
            "choice": self.choice,
            "scores": self.scores.get_state(),
            "drift": self.drift.get_state(),
        }

    def set_state(self, state):
        super().set_state(state)
        self.choice = state["choice"]
        self.scores.set_state(state["scores"])
        self.drift.set_state(state["drift"])


# The settings chosen from the frontier (docs/results.md, "Choosing the
# policy").
DEFAULT_SCORES = {"last_unit_threshold": 0.02, "freeze_augmented": False}
AGGRESSIVE_SCORES = {"threshold": 0.7}

POLICIES = {
    cls.__name__: cls
    for cls in (
        LearnDropScores,
        FeatureDrift,
        ScheduleOrDrift,
        DirectionConsistency,
        AutoFreezeRule,
        FreezeOut,
        FixedSchedule,
    )
}


def default_policy():
    """Returns the policy `LearnDrop` uses when given none."""
    return LearnDropScores.default()


def serialize(policy):
    """Returns `{"class_name": ..., "config": ...}` of a built-in policy."""
    return {"class_name": type(policy).__name__, "config": policy.get_config()}


def deserialize(config):
    """Builds a built-in policy from the output of `serialize`.

    Raises:
        ValueError: for an unknown class name.
    """
    name = config.get("class_name")
    if name not in POLICIES:
        raise ValueError(
            f"Unknown policy {name!r}; the built-in policies are "
            f"{', '.join(sorted(POLICIES))}."
        )
    return POLICIES[name].from_config(config["config"])


def _prefix(ready, start):
    """Returns the end of the run of `True` in `ready` from `start` on."""
    end = start
    while end < len(ready) and ready[end]:
        end += 1
    return end
