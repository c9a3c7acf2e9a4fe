"""What LearnDrop did in a `fit` call: scores, freezes, epoch modes, FLOPs.

`LearnDropHistory` is filled by the callback and read by users, the example
runners and the benchmarks. Everything in it is plain Python data, so
`to_dict()` is JSON-ready and `from_dict()` restores it after a crash.
`print_line` shows a line to the person running `fit`. The `logs` keys
LearnDrop writes are named here: `unit_log_key` for the per-unit figures,
`PROGRESS_KEYS` for the few the progress bar shows.
"""

import dataclasses
import sys

import numpy as np
from absl import logging

from keras_learndrop.backend import keras

MODE_CODES = {"full": 0, "stem_forward": 1, "fill": 2, "replay": 3}

# The `logs` keys of LearnDrop on the epoch's progress line; its other
# `ld_` keys go only to `History`, `CSVLogger` and `TensorBoard`.
PROGRESS_KEYS = ("ld_epoch_mode", "ld_frozen_units", "ld_flops_saved")


def hidden_from_progress(key):
    """Whether `key` is one of LearnDrop's `logs` keys kept off the bar."""
    return key.startswith("ld_") and key not in PROGRESS_KEYS


def unit_log_key(name, unit, num_units):
    """Returns the `logs` key of a per-unit figure: `ld_<name>/unit_<i>`.

    The unit index is zero-padded to the width of the largest index, so
    that CSV columns and TensorBoard tags sort in unit order, and the
    `/` makes TensorBoard (which tags epoch logs `epoch_<key>` and groups
    tags by the part before the first `/`) show one group per figure.

    Args:
        name: String. The figure (`"change"`, or a policy's score name).
        unit: Integer. The unit's index in the chain.
        num_units: Integer. The number of units of the chain.

    Returns:
        A string such as `"ld_change/unit_07"` for unit 7 of 12.
    """
    width = len(str(max(num_units - 1, 0)))
    return f"ld_{name}/unit_{unit:0{width}d}"


@dataclasses.dataclass
class EpochRecord:
    """How one epoch ran."""

    epoch: int
    mode: str
    frozen_units: int
    samples: int
    forward_flops: int
    baseline_flops: int
    cache_bytes: int
    seconds: float
    scoring_seconds: float = 0.0
    # Of `scoring_seconds`, spent on the probe set's drift (`drift`).
    drift_seconds: float = 0.0
    # Inputs of the probe set the drift was measured on (0: none).
    probe_size: int = 0
    # How `fit` validated after this epoch: "" (it did not), "full" (the
    # whole model), "fill" (the whole model, caching the stem's features)
    # or "replay" (the head alone on cached features).
    validation_mode: str = ""


@dataclasses.dataclass
class Evaluation:
    """What one evaluation measured and decided (NaN: unit already frozen).

    Attributes:
        epoch: Integer. The epoch (from 0) after which it ran.
        change: List of each unit's change score `c_u`.
        path: List of each unit's relative path length `p_u`.
        learning_rate: Float or `None`. Mean learning rate of the interval.
        scores: Dict mapping the policy's score names (such as
            `"continuation"`) to one value per unit.
        stem_size: Integer. Units frozen after this evaluation.
        remaining_learning_rate: Float or `None`. The learning rate still
            to come in the run (see `policy.Observation`).
        drift: List of each unit's drift `1 - CKA` on the probe set since
            the last evaluation (see `drift`); NaN where not measured.
    """

    epoch: int
    change: list
    path: list
    learning_rate: float | None
    scores: dict
    stem_size: int
    remaining_learning_rate: float | None = None
    drift: list = dataclasses.field(default_factory=list)


class LearnDropHistory:
    """The record of one or more `fit` calls with a `LearnDrop` callback.

    Attributes:
        unit_names: List of the units' names, in chain order.
        unit_flops: List of each unit's forward FLOPs per sample.
        epochs: List of `EpochRecord`, one per epoch trained.
        evaluations: List of `Evaluation`, one per scoring.
        frozen_at: Dict mapping a unit's index to the epoch after which it
            was frozen.
        notes: List of strings: why the cache was not used, fallbacks.
        policy: Dict `{"class_name": ..., "config": ...}` of the freeze
            policy, or `None`.
    """

    def __init__(self, unit_names=(), unit_flops=(), policy=None):
        self.unit_names = list(unit_names)
        self.unit_flops = [int(f) for f in unit_flops]
        self.epochs = []
        self.evaluations = []
        self.frozen_at = {}
        self.notes = []
        self.policy = policy

    @property
    def stem_size(self):
        """Number of units frozen now."""
        return len(self.frozen_at)

    @property
    def forward_flops(self):
        """Forward FLOPs that ran in training, over all recorded epochs."""
        return sum(e.forward_flops for e in self.epochs)

    @property
    def baseline_flops(self):
        """Forward FLOPs the same epochs take without LearnDrop."""
        return sum(e.baseline_flops for e in self.epochs)

    @property
    def flops_reduction(self):
        """Fraction of the baseline's forward FLOPs that did not run."""
        if not self.baseline_flops:
            return 0.0
        return 1.0 - self.forward_flops / self.baseline_flops

    def note(self, message):
        """Records a message once."""
        if message not in self.notes:
            self.notes.append(message)

    def to_dict(self):
        """Returns the history as JSON-ready Python data."""
        return {
            "unit_names": self.unit_names,
            "unit_flops": self.unit_flops,
            "policy": self.policy,
            "epochs": [dataclasses.asdict(e) for e in self.epochs],
            "evaluations": [
                {
                    "epoch": e.epoch,
                    "change": _json_floats(e.change),
                    "path": _json_floats(e.path),
                    "learning_rate": e.learning_rate,
                    "scores": {
                        name: _json_floats(values)
                        for name, values in e.scores.items()
                    },
                    "stem_size": e.stem_size,
                    "remaining_learning_rate": e.remaining_learning_rate,
                    "drift": _json_floats(e.drift),
                }
                for e in self.evaluations
            ],
            "frozen_at": {str(k): v for k, v in self.frozen_at.items()},
            "notes": list(self.notes),
            "forward_flops": self.forward_flops,
            "baseline_flops": self.baseline_flops,
            "flops_reduction": self.flops_reduction,
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuilds a history from `to_dict()` output."""
        history = cls(
            data["unit_names"], data["unit_flops"], data.get("policy")
        )
        history.epochs = [EpochRecord(**e) for e in data["epochs"]]
        history.evaluations = [
            Evaluation(
                epoch=e["epoch"],
                change=_from_json_floats(e["change"]),
                path=_from_json_floats(e["path"]),
                learning_rate=e["learning_rate"],
                scores={
                    name: _from_json_floats(values)
                    for name, values in e["scores"].items()
                },
                stem_size=e["stem_size"],
                remaining_learning_rate=e.get("remaining_learning_rate"),
                drift=_from_json_floats(e.get("drift", [])),
            )
            for e in data["evaluations"]
        ]
        history.frozen_at = {int(k): v for k, v in data["frozen_at"].items()}
        history.notes = list(data["notes"])
        return history

    def plot(self, score=None):
        """Draws the run: each unit's score and drift, and the epoch times.

        Panels: (a) the policy's score per unit (its last named score, or
        the change score `c_u`), with an X where the unit froze and the
        policy's `threshold`; (b) each unit's drift on the probe set (when
        measured), log scale, with the freeze points; (c) the seconds of
        each epoch, coloured by mode (`full`, `stem_forward`, `fill`,
        `replay`). Needs matplotlib (`pip install "keras-learndrop[plot]"`).

        Args:
            score: String or `None`. The name of the score to draw in (a)
                (`"change"`, `"continuation"`, ...); `None` takes the
                policy's last one.

        Returns:
            A `matplotlib.figure.Figure` (not shown: in a notebook it shows
            as the cell's value; else `figure.savefig("run.png")`).

        Raises:
            ImportError: if matplotlib is not installed.
            ValueError: for a score the history does not hold.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "`LearnDropHistory.plot()` needs matplotlib: "
                '`pip install "keras-learndrop[plot]"` (or `pip install '
                "matplotlib`)."
            ) from error
        names = list(self.evaluations[0].scores) if self.evaluations else []
        score = score or (names[-1] if names else "change")
        known = names + ["change", "drift"]
        if score not in known:
            raise ValueError(
                f"`score` must be one of {', '.join(known)}. "
                f"Received: score={score!r}."
            )
        has_drift = any(np.isfinite(e.drift).any() for e in self.evaluations)
        figure = Figure(
            figsize=(6 * (2 + has_drift), 4.5), layout="constrained"
        )
        panels = list(figure.subplots(1, 2 + has_drift))
        self._plot_units(panels[0], score, _score_of(score))
        threshold = (self.policy or {}).get("config", {}).get("threshold")
        if threshold is not None and score != "change":
            panels[0].axhline(threshold, color="grey", ls="--", lw=1)
        panels[0].set_title(f"(a) {score} per unit; X: frozen after that epoch")
        if has_drift:
            self._plot_units(panels[1], "drift", _score_of("drift"))
            panels[1].set_yscale("log")
            panels[1].set_title("(b) drift 1 - CKA on the probe set")
        times = panels[-1]
        for mode, color in _MODE_COLORS.items():
            epochs = [e for e in self.epochs if e.mode == mode]
            if epochs:
                times.bar(
                    [e.epoch + 1 for e in epochs],
                    [e.seconds for e in epochs],
                    color=color,
                    label=mode,
                )
        times.set_title(f"({'c' if has_drift else 'b'}) seconds per epoch")
        times.set_xlabel("epoch")
        times.set_ylabel("seconds")
        times.legend(fontsize="small")
        return figure

    def _plot_units(self, axes, name, values):
        epochs = [e.epoch + 1 for e in self.evaluations]
        for unit, unit_name in enumerate(self.unit_names):
            series = [_finite_or_nan(values(e), unit) for e in self.evaluations]
            (line,) = axes.plot(
                epochs, series, marker=".", lw=1, label=unit_name
            )
            frozen = self.frozen_at.get(unit)
            at = [
                i for i, e in enumerate(self.evaluations) if e.epoch == frozen
            ]
            if at:
                axes.plot(
                    [frozen + 1],
                    [np.nan_to_num(series[at[0]])],
                    marker="X",
                    markersize=9,
                    color=line.get_color(),
                    ls="none",
                )
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.legend(fontsize="x-small", ncol=2)

    def summary(self):
        """Returns a text table: one row per unit, and the totals.

        Epochs are counted from 1 there, as Keras's progress bar does;
        `frozen_at` and `EpochRecord.epoch` count from 0, as `on_epoch_end`.
        """
        rows = [f"{'unit':<28} {'MFLOPs':>9} {'frozen after epoch':>19}"]
        for index, name in enumerate(self.unit_names):
            frozen = self.frozen_at.get(index)
            rows.append(
                f"{name[:28]:<28} {self.unit_flops[index] / 1e6:>9.2f} "
                f"{'-' if frozen is None else frozen + 1:>19}"
            )
        modes = " ".join(e.mode for e in self.epochs)
        rows.append(f"epoch modes: {modes}")
        rows.append(
            f"forward FLOPs of training: {self.forward_flops:.4g} of "
            f"{self.baseline_flops:.4g} ({100 * self.flops_reduction:.1f} % "
            "saved)"
        )
        rows.extend(f"note: {n}" for n in self.notes)
        return "\n".join(rows)


def epoch_record(history, epoch, mode, stem, samples, cache_bytes):
    """Returns the `EpochRecord` of an epoch, its FLOPs counted.

    An epoch costs the whole model in `full`, `fill` and `stem_forward`
    mode and the head behind `stem` in `replay` mode; the baseline is the
    whole model. Seconds are filled in at the epoch's end.
    """
    total = sum(history.unit_flops)
    per_sample = total if mode != "replay" else sum(history.unit_flops[stem:])
    return EpochRecord(
        epoch=epoch,
        mode=mode,
        frozen_units=stem,
        samples=samples,
        forward_flops=per_sample * samples,
        baseline_flops=total * samples,
        cache_bytes=cache_bytes,
        seconds=0.0,
    )


def write_epoch_logs(logs, history, record, stem, frozen_layers):
    """Adds LearnDrop's per-epoch keys to `fit`'s `logs`."""
    logs["ld_frozen_units"] = stem
    logs["ld_frozen_layers"] = frozen_layers
    logs["ld_epoch_mode"] = MODE_CODES[record.mode]
    logs["ld_cache_bytes"] = record.cache_bytes
    logs["ld_forward_flops"] = record.forward_flops
    logs["ld_flops_saved"] = history.flops_reduction


def epoch_line(history, record, stem):
    """The line `verbose=1` prints after an epoch."""
    return (
        f"LearnDrop epoch {record.epoch + 1}: {record.mode}, "
        f"{stem}/{len(history.unit_names)} units frozen, "
        f"cache {record.cache_bytes / 2**20:.1f} MiB, "
        f"{100 * history.flops_reduction:.1f} % of forward "
        "FLOPs saved so far"
    )


def print_line(message):
    """Prints `message` where Keras's own callbacks print theirs.

    To standard output while `keras.config.is_interactive_logging_enabled()`
    (the default), so that it shows in a terminal and a notebook; else
    through `absl.logging` at INFO level. This is what Keras's
    `io_utils.print_msg` does for `EarlyStopping(verbose=1)` and the
    others.
    """
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()
    else:
        logging.info(message)


_MODE_COLORS = {
    "full": "tab:grey",
    "stem_forward": "tab:orange",
    "fill": "tab:blue",
    "replay": "tab:green",
}


def _score_of(name):
    if name in ("change", "drift"):
        return lambda evaluation: getattr(evaluation, name)
    return lambda evaluation: evaluation.scores.get(name, [])


def _finite_or_nan(values, unit):
    value = values[unit] if unit < len(values) else np.nan
    return float(value) if np.isfinite(value) else np.nan


def _json_floats(values):
    return [None if np.isnan(v) else float(v) for v in values]


def _from_json_floats(values):
    return [float("nan") if v is None else float(v) for v in values]
