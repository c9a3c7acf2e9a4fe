"""What LearnDrop observes of the units at each evaluation.

`UnitObserver` gathers, for one `fit`, everything a policy's `Observation`
holds: each unit's weight change and path (`scoring.WeightTracker`), the
learning rate of the interval and still to come (`scoring.LearningRates`),
and each unit's drift on the probe set (`drift.DriftTracker`). It also
writes what was observed to the history and to `fit`'s logs, and keeps
the seconds it spent.
"""

import time
import warnings

import numpy as np

from keras_learndrop import drift
from keras_learndrop import keras_internals
from keras_learndrop import policy as policy_lib
from keras_learndrop import report
from keras_learndrop import scoring


class UnitObserver:
    """Measures the units of one `fit` between evaluations.

    Args:
        model: The compiled Keras model.
        chain: Its `graph.UnitChain`.
        policy: The `FreezePolicy` (for its `samples_per_epoch` and whether
            it needs the drift).
        probe_size: `"auto"` or an integer: `LearnDrop`'s `probe_size`.
            `"auto"` draws `drift.DEFAULT_PROBE_SIZE` inputs, of which
            `fit_probe` keeps as many as the training set calls for; 0
            measures no drift.
        seed: Integer. Seed of the probe set's draw.
        history: The `LearnDropHistory` that gets the notes.

    Attributes:
        scoring_seconds: Float. Seconds spent measuring in this epoch.
        drift_seconds: Float. Of which on the probe set.
        reference_epoch: Integer. The epoch of the weights that the next
            change scores compare against.
    """

    def __init__(self, model, chain, policy, probe_size, seed, history):
        self.chain = chain
        self.policy = policy
        self.history = history
        self.tracker = scoring.WeightTracker(
            [unit.trainable_weights for unit in chain.units]
        )
        self.rates = scoring.LearningRates(model.optimizer)
        self.drift = self._start_drift(model, probe_size, seed)
        self.reference_epoch = None
        self.scoring_seconds = 0.0
        self.drift_seconds = 0.0
        self._sample_every = 0
        # With probe_size="auto", the first epoch that counts its samples
        # sizes the probe set.
        self._probe_to_fit = probe_size == "auto"

    def _start_drift(self, model, probe_size, seed):
        """Draws this fit's probe set; returns its `DriftTracker` or None.

        The probe inputs come from the validation data when `fit`
        validates, else from the training data.
        """
        if not probe_size:
            return None
        if probe_size == "auto":
            probe_size = drift.DEFAULT_PROBE_SIZE
        for data in keras_internals.fit_data(model):
            probe = drift.draw_probe(
                data,
                probe_size,
                seed,
                input_rank=len(self.chain.input.shape),
            )
            if probe is not None:
                return drift.DriftTracker(self.chain, probe)
        note = (
            "no probe inputs could be read from the data of this fit (a "
            "Python generator, or inputs that are dicts), so no unit's "
            "drift is measured"
        )
        if self.policy.uses_drift:
            note += (
                f" and {type(self.policy).__name__} freezes nothing. Pass "
                "the data as arrays, a `tf.data.Dataset` or a "
                "`keras.utils.PyDataset`"
            )
        self.history.note(note)
        warnings.warn(f"LearnDrop: {note}.", stacklevel=3)
        return None

    def start(self, epoch):
        """Takes the references of the first epoch (`fit` from `epoch`)."""
        self.tracker.snapshot()
        self.measure_drift()
        self.scoring_seconds += self.drift_seconds
        self.reference_epoch = epoch - 1

    def begin_epoch(self, steps_per_epoch):
        """Resets the epoch's seconds; plans the samples within it."""
        self.scoring_seconds = 0.0
        self.drift_seconds = 0.0
        samples = self.policy.samples_per_epoch
        self._sample_every = (
            0
            if samples <= 1 or not steps_per_epoch
            else max(1, steps_per_epoch // samples)
        )

    def on_step(self, steps):
        """Samples the weights' path `samples_per_epoch` times an epoch."""
        if self._sample_every and steps % self._sample_every == 0:
            start = time.perf_counter()
            self.tracker.sample()
            self.rates.sample()
            self.scoring_seconds += time.perf_counter() - start

    def fit_probe(self, train_samples):
        """Keeps `drift.auto_probe_size(train_samples)` probe inputs.

        Called at the end of each epoch; only with `probe_size="auto"`
        and only at the first call with samples does it act (a resumed
        `fit` restores the probe set it had, which this then leaves as it
        is).
        """
        if not self._probe_to_fit or self.drift is None or not train_samples:
            return
        self._probe_to_fit = False
        self.drift.keep_first(drift.auto_probe_size(train_samples))

    @property
    def probe_size(self):
        """Inputs of the probe set now (0 without drift)."""
        return 0 if self.drift is None else len(self.drift.probe)

    def set_cut(self, stem):
        """The stem is now `stem` units: its probe features are kept."""
        if self.drift is not None:
            self.drift.set_cut(stem)

    def measure_drift(self):
        """Returns each unit's drift since the last call (NaN: unmeasured)."""
        if self.drift is None:
            return np.full(len(self.chain), np.nan)
        start = time.perf_counter()
        values = self.drift.measure()
        self.drift_seconds += time.perf_counter() - start
        return values

    def observe(self, epoch, stem, epochs, steps_per_epoch, augmented):
        """Measures every unit after `epoch`; returns the `Observation`.

        Args:
            epoch: Integer. The epoch (from 0) that just ended.
            stem: Integer. Units frozen now (they are not measured).
            epochs: Integer or `None`. Epochs of the `fit`.
            steps_per_epoch: Integer or `None`, when known.
            augmented: Boolean. Whether the training inputs are random.
        """
        start = time.perf_counter()
        measured = self.tracker.measure(first_unit=stem)
        self.reference_epoch = epoch
        change = scoring.change_scores(measured.delta, measured.previous)
        path = scoring.change_scores(measured.path, measured.previous)
        learning_rate = self.rates.end_interval()
        # Weights that are NaN or inf (a diverged step) tell nothing about
        # settling, and NaN is the policy's mark of a frozen unit: such a
        # unit is marked `inf`, which no policy may freeze.
        diverged = ~np.isfinite(change) | ~np.isfinite(path)
        diverged[:stem] = False
        if diverged.any():
            self.history.note(
                f"non-finite weights at epoch {epoch + 1} in units "
                f"{np.flatnonzero(diverged).tolist()}: not frozen"
            )
        observation = policy_lib.Observation(
            epoch=epoch,
            epochs=epochs,
            change=np.where(diverged, np.inf, change),
            path=np.where(diverged, np.inf, path),
            learning_rate=learning_rate,
            remaining_learning_rate=self.rates.remaining(
                epoch, epochs, steps_per_epoch
            ),
            scheduled=self.rates.scheduled,
            augmented=augmented,
            drift=self.measure_drift(),
        )
        self.scoring_seconds += time.perf_counter() - start
        return observation

    def record(self, observation, stem, new_stem, logs):
        """Writes an evaluation to the history and its figures to `logs`.

        Args:
            observation: The `Observation` the policy saw.
            stem: Integer. Units frozen before it.
            new_stem: Integer. Units frozen after it.
            logs: The epoch's `logs` dict.
        """
        start = time.perf_counter()
        scores = {
            name: [float(v) for v in values]
            for name, values in self.policy.last_scores.items()
        }
        change, drifts = observation.change, observation.drift
        self.history.evaluations.append(
            report.Evaluation(
                observation.epoch,
                list(change),
                list(observation.path),
                observation.learning_rate,
                scores,
                new_stem,
                observation.remaining_learning_rate,
                list(drifts),
            )
        )
        count = len(change)
        for i in range(stem, count):
            logs[report.unit_log_key("change", i, count)] = float(change[i])
            if np.isfinite(drifts[i]):
                logs[report.unit_log_key("drift", i, count)] = float(drifts[i])
            for name, values in scores.items():
                logs[report.unit_log_key(name, i, count)] = values[i]
        self.scoring_seconds += time.perf_counter() - start

    def get_state(self):
        """Returns what a resumed `fit` needs: the probe set and its Grams.

        `None` without drift.
        """
        if self.drift is None:
            return None
        return self.drift.probe, self.drift.get_state()

    def restore(self, backup, state_epoch, epoch, lagging, reference_epoch):
        """Goes on from a backup after a crash (see `resume`).

        Args:
            backup: The `resume.Backup`.
            state_epoch: Integer. The epoch the restored state was saved
                after.
            epoch: Integer. The first epoch of the resumed `fit`.
            lagging: Boolean. Whether the weights are one epoch ahead of
                the state.
            reference_epoch: Integer. The saved state's reference epoch.
        """
        self._restore_drift(backup, state_epoch)
        self.tracker.snapshot()
        self.reference_epoch = epoch - 1
        if not lagging and reference_epoch != epoch - 1:
            self.reference_epoch = reference_epoch
            try:
                arrays = backup.load_reference(reference_epoch)
                self.tracker.set_reference(arrays)
            except (OSError, ValueError) as error:
                path = backup.reference_path(reference_epoch)
                warnings.warn(
                    f"LearnDrop: cannot read the weights of the last "
                    f"evaluation from {path} ({error}); the next change "
                    "scores measure the change since the resumed epoch "
                    "only.",
                    stacklevel=3,
                )

    def _restore_drift(self, backup, epoch):
        """Takes back the probe set and the Gram matrices after `epoch`."""
        if self.drift is None:
            return
        try:
            probe, grams = backup.load_drift(epoch)
            tracker = drift.DriftTracker(self.chain, probe)
            tracker.set_state(grams)
        except (OSError, KeyError, ValueError) as error:
            warnings.warn(
                "LearnDrop: cannot read the probe set and Gram matrices of "
                f"epoch {epoch + 1} from {backup.directory} ({error}); the "
                "drift is measured afresh from the resumed epoch.",
                stacklevel=3,
            )
            self.measure_drift()
            return
        self.drift = tracker
