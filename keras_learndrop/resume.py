"""LearnDrop's state beside `keras.callbacks.BackupAndRestore`.

`BackupAndRestore(backup_dir)` saves the weights and the optimizer at every
epoch end and, when a `fit` that crashed is started again, loads them and
skips the finished epochs. `LearnDrop(backup_dir=...)` keeps in the same
folder what it needs to go on from there, as separate files in the manner
of `BackupAndRestore` (`latest.weights.h5` and its `.bkp`):

- `learndrop_state.json`: the `RunState` after the last finished epoch;
- `learndrop_state.json.bkp`: the `RunState` of the epoch before. The two
  callbacks save one after the other: a crash between the two saves leaves
  the weights one epoch behind the newest state, and the resumed `fit`
  takes this one;
- `learndrop_reference_<epoch>.npz`: with `eval_every > 1`, the weights of
  the last evaluation, which the next change scores compare against;
- `learndrop_probe.npz` and `learndrop_grams_<epoch>.npz`: the probe set of
  the `fit` and each unit's Gram matrix of the last evaluation, which the
  next drift compares against (`drift.DriftTracker`).

A state is matched to the model by the structure of its units (their order,
layer types and weight shapes), not by layer names: a model built again in
a process that built other models first gets other automatic names
(`conv2d_4` for `conv2d`), and `BackupAndRestore` restores its weights all
the same.
"""

import dataclasses
import json
import os
import warnings

import numpy as np

from keras_learndrop import report

STATE_FILE = "learndrop_state.json"
_PREVIOUS_SUFFIX = ".bkp"
_REFERENCE_PREFIX = "learndrop_reference_"
_GRAMS_PREFIX = "learndrop_grams_"
PROBE_FILE = "learndrop_probe.npz"
_PREFIX = "learndrop_"


class StateMismatch(Exception):
    """The saved state cannot serve the resumed `fit`; says why."""


def unit_structure(chain):
    """Describes a model's units by their layers' types and weight shapes.

    Args:
        chain: The model's `UnitChain`.

    Returns:
        A JSON-ready list with one entry per unit: a list of
        `[layer class name, [weight shape, ...]]` for each of its layers.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2),
    ... ])
    >>> from keras_learndrop.graph import UnitChain
    >>> unit_structure(UnitChain(model))
    [[['Conv2D', [[3, 3, 1, 4], [4]]], ['GlobalAveragePooling2D', []]],
     [['Dense', [[4, 2], [2]]]]]
    """
    return [
        [
            [
                type(layer).__name__,
                [[int(d) for d in w.shape] for w in layer.weights],
            ]
            for layer in unit.layers
        ]
        for unit in chain.units
    ]


def _first_difference(saved, current):
    if len(saved) != len(current):
        return f"{len(saved)} units saved, {len(current)} in this model"
    for index, (old, new) in enumerate(zip(saved, current)):
        if old != new:
            return (
                f"unit {index} was {_describe(old)}, in this model it is "
                f"{_describe(new)}"
            )
    return None


def _describe(unit):
    return ", ".join(
        name + "".join(f" {tuple(shape)}" for shape in shapes)
        for name, shapes in unit
    )


@dataclasses.dataclass
class RunState:
    """What LearnDrop needs to go on with a `fit` after a crash.

    Attributes:
        epoch: Integer. The epoch (from 0) after which it was saved.
        structure: The model's `unit_structure`.
        policy: Dict, the freeze policy's `get_state()`, kept as it is.
        history: Dict, the `LearnDropHistory.to_dict()`.
        run_seed: Integer. Seed of the replay order of the run.
        cache_note: String or `None`: why the cache is not used.
        reference_epoch: Integer. The epoch of the weights that the next
            change scores compare against.
    """

    epoch: int
    structure: list
    policy: dict
    history: dict
    run_seed: int
    cache_note: str | None
    reference_epoch: int

    @classmethod
    def from_dict(cls, data):
        """Rebuilds a state from its JSON form (`dataclasses.asdict`)."""
        names = {field.name for field in dataclasses.fields(cls)}
        missing = names - set(data)
        if missing:
            raise KeyError(f"missing {sorted(missing)}")
        return cls(**{name: data[name] for name in names})


class Backup:
    """LearnDrop's files in the folder of a `BackupAndRestore` callback.

    It keeps in memory the state it saved (or loaded) last, which becomes
    the previous state at the next `save`.

    Args:
        directory: Path, the `backup_dir` of `BackupAndRestore`.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.state_path = os.path.join(self.directory, STATE_FILE)
        self.previous_path = self.state_path + _PREVIOUS_SUFFIX
        self._last = None
        self._probe_saved = False  # This fit's probe set is on disk.

    def reference_path(self, epoch):
        """The file of the weights after `epoch` (counted from 0)."""
        return os.path.join(
            self.directory, f"{_REFERENCE_PREFIX}{epoch + 1}.npz"
        )

    def grams_path(self, epoch):
        """The file of the Gram matrices after `epoch` (counted from 0)."""
        return os.path.join(self.directory, f"{_GRAMS_PREFIX}{epoch + 1}.npz")

    def save(self, state, reference_weights, drift=None):
        """Writes `state` as the newest, the last one saved as the previous.

        Args:
            state: The `RunState` after `state.epoch`.
            reference_weights: Callable returning the list of arrays of the
                weights of `state.reference_epoch`; called only when that
                file is needed and missing.
            drift: `None`, or a pair: the probe inputs (written once per
                `fit`) and the list of each unit's last Gram matrix (`None`
                where unset), written for `state.epoch`.
        """
        os.makedirs(self.directory, exist_ok=True)
        if drift is not None:
            probe, grams = drift
            if not self._probe_saved:
                self._write(
                    os.path.join(self.directory, PROBE_FILE),
                    lambda f: np.savez(f, probe=probe),
                )
                self._probe_saved = True
            self._write(
                self.grams_path(state.epoch),
                lambda f: np.savez(
                    f,
                    **{
                        f"unit_{i}": g
                        for i, g in enumerate(grams)
                        if g is not None
                    },
                    num_units=len(grams),
                ),
            )
        kept = [s for s in (state, self._last) if s is not None]
        references = {
            self.reference_path(s.reference_epoch)
            for s in kept
            if s.reference_epoch != s.epoch
        }
        reference = self.reference_path(state.reference_epoch)
        if reference in references and not os.path.exists(reference):
            self._write(reference, lambda f: np.savez(f, *reference_weights()))
        if self._last is None:
            _remove(self.previous_path)
        else:
            self._write_state(self.previous_path, self._last)
        self._write_state(self.state_path, state)
        self._last = state
        kept_grams = {self.grams_path(s.epoch) for s in kept}
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if (
                name.startswith(_REFERENCE_PREFIX)
                and name.endswith(".npz")
                and path not in references
            ) or (name.startswith(_GRAMS_PREFIX) and path not in kept_grams):
                _remove(path)

    def load(self, epoch, structure):
        """Returns the state to resume a `fit` at `epoch` from.

        Args:
            epoch: Integer. The first epoch the resumed `fit` runs.
            structure: The resumed model's `unit_structure`.

        Returns:
            `(state, lagging)`: the `RunState` saved after `epoch - 1`, and
            `False`; or, when only the one of `epoch - 2` is there (the
            weights were saved after this callback's last state), that state
            and `True`. `(None, False)` when there is no state file.

        Raises:
            StateMismatch: if the files cannot be read, are of other epochs,
                or are for a model of another structure.
        """
        if not os.path.exists(self.state_path):
            return None, False
        try:
            newest = self._read(self.state_path)
            previous = None
            if os.path.exists(self.previous_path):
                previous = self._read(self.previous_path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StateMismatch(
                f"cannot read the state in {self.directory} ({error})"
            ) from None
        state = next(
            (
                s
                for s in (newest, previous)
                if s is not None and s.epoch == epoch - 1
            ),
            None,
        )
        lagging = state is None and newest.epoch == epoch - 2
        state = newest if lagging else state
        if state is None:
            raise StateMismatch(
                f"the state in {self.state_path} was saved after epoch "
                f"{newest.epoch + 1}, but fit resumes at epoch {epoch + 1} "
                f"(it needs the state saved after epoch {epoch})"
            )
        difference = _first_difference(state.structure, structure)
        if difference is not None:
            raise StateMismatch(
                f"the state in {self.state_path} is for a model of another "
                f"structure ({difference}). Give each model its own "
                "`backup_dir`"
            )
        self._last = None if lagging else state
        return state, lagging

    def load_reference(self, epoch):
        """Returns the arrays of the weights saved after `epoch`."""
        with np.load(self.reference_path(epoch)) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]

    def load_drift(self, epoch):
        """Returns the probe inputs and the Gram matrices after `epoch`.

        Raises:
            OSError: if either file is missing or unreadable.
        """
        with np.load(os.path.join(self.directory, PROBE_FILE)) as data:
            probe = data["probe"]
        with np.load(self.grams_path(epoch)) as data:
            grams = [
                data[f"unit_{i}"] if f"unit_{i}" in data.files else None
                for i in range(int(data["num_units"]))
            ]
        self._probe_saved = True
        return probe, grams

    def clear(self):
        """Removes LearnDrop's files (at the end of a finished `fit`)."""
        self._last = None
        self._probe_saved = False
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith(_PREFIX):
                    _remove(os.path.join(self.directory, name))

    def _read(self, path):
        with open(path) as file:
            return RunState.from_dict(json.load(file))

    def _write_state(self, path, state):
        self._write(
            path,
            lambda f: f.write(json.dumps(dataclasses.asdict(state)).encode()),
        )

    def _write(self, path, write):
        # Workers sharing a folder write the same state: each through its
        # own temporary file, so that every rename is atomic.
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as file:
            write(file)
        os.replace(tmp, path)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def load_run(backup, epoch, chain):
    """Returns what a `fit` resumed at `epoch` goes on from, or `None`.

    Warns when the saved state cannot be used (it then starts afresh) and
    when it lags the weights by one epoch (the evaluation in between is
    lost).

    Args:
        backup: The `Backup`.
        epoch: Integer. The first epoch the resumed `fit` runs.
        chain: The model's `graph.UnitChain`.

    Returns:
        `(state, history, lagging)`: the `RunState`, its
        `report.LearnDropHistory` and whether the weights are one epoch
        ahead of it; or `None`.
    """
    try:
        state, lagging = backup.load(epoch, unit_structure(chain))
        history = state and report.LearnDropHistory.from_dict(state.history)
    except (StateMismatch, KeyError, TypeError, ValueError) as error:
        warnings.warn(f"LearnDrop: {error}; starting afresh.", stacklevel=3)
        return None
    if state is None:
        return None
    if lagging:
        warnings.warn(
            f"LearnDrop: the state in {backup.state_path} was "
            f"saved after epoch {epoch - 1}, the weights after epoch "
            f"{epoch}: the evaluation of epoch {epoch} is lost (the "
            "process stopped between the two saves). Resuming with the "
            f"stem and scores of epoch {epoch - 1}. Put LearnDrop before "
            "BackupAndRestore in `callbacks` to close this gap.",
            stacklevel=3,
        )
    return state, history, lagging
