"""The `LearnDrop` callback: it orchestrates, the other modules do the work.

Its hooks follow the README's "How it works": when `fit` starts, find the
units (`graph`), tell whether the inputs are random (`input_randomness`)
and install the training step (`train_step`); each epoch, the training
stream of stem features decides its mode (`features`); each evaluation,
observe the units (`observer`), let the policy decide (`policy`), freeze
the new stem (`freezing`) and move both streams' caches to the new cut
(`features`). The record goes to `report.LearnDropHistory`, the state for
a resumed `fit` to `resume.Backup`. What it needs of Keras beyond its
public API comes from `keras_internals`.
"""

import time

import numpy as np

from keras_learndrop import features
from keras_learndrop import flops
from keras_learndrop import freezing
from keras_learndrop import graph
from keras_learndrop import input_randomness
from keras_learndrop import keras_internals
from keras_learndrop import observer
from keras_learndrop import options
from keras_learndrop import policy as policy_lib
from keras_learndrop import report
from keras_learndrop import resume
from keras_learndrop import stem_cache
from keras_learndrop import train_step
from keras_learndrop import validation
from keras_learndrop.backend import keras


class LearnDrop(keras.callbacks.Callback):
    """Freezes the leading layers that stopped learning, and drops them.

    At every evaluation (each `eval_every` epochs) LearnDrop measures how
    far the weights of each unit of the model (a stretch between two cuts
    of its graph, see `UnitChain`) moved and how far its features on a
    probe set drifted, and its `policy` decides how many leading units to
    freeze (`policy.FreezePolicy`; the default, `LearnDropScores.default()`,
    freezes a unit once a small share of its learning is still to come,
    a smaller share the deeper the unit). The
    frozen units form a prefix, the stem, which only grows.

    Frozen layers become non-trainable and training goes on in the same
    `fit` call with the same optimizer state. In the next epoch the stem
    runs forward once more while its outputs are cached ("fill"); every
    later epoch trains the head alone on the cached features in a fresh
    order ("replay"), so the stem costs nothing. The validation of `fit`
    does the same with the stem's features of the validation data
    (`cache_validation`); `evaluate` and `predict` outside `fit` always run
    the whole model.

    Leading layers that you froze yourself (a `keras.applications` base
    with `base_model.trainable = False`) need no decision: the leading
    units without trainable weights are the stem from the start, so the
    first epoch fills the cache and the second replays it, and the policy
    decides only about the units after them. `history.frozen_at` records
    them at epoch `-1`.

    Put `LearnDrop` before loggers (`CSVLogger`, `TensorBoard`) in
    `callbacks` so that they see its `logs` keys: `ld_frozen_units`,
    `ld_frozen_layers`, `ld_epoch_mode` (0 full, 1 stem forward, 2 fill,
    3 replay), `ld_cache_bytes`, `ld_forward_flops`, `ld_flops_saved`
    (fraction of the baseline's forward FLOPs saved so far), and at
    evaluations, per unit `i` still training, `ld_change/unit_<i>`,
    `ld_drift/unit_<i>` and the policy's scores
    (`ld_continuation/unit_<i>`, ...), with `i` zero-padded so that they
    sort in unit order (TensorBoard shows one group per figure). All of
    them reach `History`, `CSVLogger` and `TensorBoard`; the progress bar
    of `fit` shows only `ld_epoch_mode`, `ld_frozen_units` and
    `ld_flops_saved` (`report.PROGRESS_KEYS`).

    Args:
        policy: A `FreezePolicy` (`LearnDropScores`, `FeatureDrift`,
            `ScheduleOrDrift`, `DirectionConsistency`, `AutoFreezeRule`,
            `FreezeOut`, `FixedSchedule` or your own), or `None` for
            `LearnDropScores.default()`. The policy keeps state: give each
            `LearnDrop` its own.
        eval_every: Integer >= 1. Epochs between evaluations. Defaults to
            `1`.
        cache: `"auto"` caches stem features whenever that is exact;
            `"off"` always runs the frozen stem forward. Defaults to
            `"auto"`.
        cache_dtype: One of `"float32"`, `"float16"`, `"bfloat16"`: dtype of
            the cached features. Defaults to `"float32"`.
        memory_budget: Integer bytes (`0` never caches), or `None` for half
            of the memory available when training starts: the features of
            the training and the validation data together. Defaults to
            `None`.
        cache_validation: Boolean. When `fit` validates, keep the frozen
            stem's features of the validation data (the stem runs in
            inference mode there, so they do not change) and validate the
            head alone on them in later epochs. The `val_` figures equal
            the whole model's (up to `cache_dtype`'s rounding). Where that
            cannot be exact, the whole model validates, with a note in the
            history. `evaluate` and `predict` outside `fit` always run the
            whole model. Defaults to `True`.
        augmented_inputs: `None`, `True` or `False`. Whether the input
            pipeline draws random augmentations, so that a cached view
            would be stale. `None` finds out when `fit` starts (see
            `input_randomness`): it reads a `tf.data.Dataset`'s pipeline
            (the traced functions of its `map`s included) for random
            operations, under a millisecond, and reads batch 0 of a
            `keras.utils.PyDataset` twice and compares (two reads of one
            batch);
            `history.notes` says what it found, or that a Python generator
            or `py_function` cannot be checked. `True` declares random
            inputs, `False` fixed ones, whatever would be found (for a
            random op that draws the same values every epoch). Random
            layers in the model (`RandomFlip`, `Dropout`, ...) are detected
            either way. The default policy does not freeze under random
            augmentation (`freeze_augmented=False`, see `FreezePolicy`).
            Defaults to `None`.
        augmented_views: Integer >= 0. With random inputs or a random stem:
            `0` runs the stem forward every epoch (exact, slower); `K > 0`
            caches `K` augmented views, filled in `K` epochs and replayed in
            turn. Defaults to `0`.
        stem_dropout: `"train"` or `"inference"`. How the frozen stem's
            `Dropout`, stochastic depth and noise layers run in training.
            `"train"` draws as before the freeze, so the stem's features
            differ every epoch and the cache does not engage (the stem runs
            forward, or `augmented_views` are cached). `"inference"` runs
            them as in inference (no dropout, no noise), like the frozen
            `BatchNormalization` layers: the stem's features are fixed and
            the cache engages. Its image augmentation layers (`RandomFlip`,
            ...) draw either way. Defaults to `"inference"`: on ResNet-20
            with dropout in every block it was faster and no less accurate
            than `"train"` (docs/results.md).
        jit_compile: Boolean or `"auto"`. XLA-compile the rebuilt steps;
            `"auto"` tries it on a GPU (falling back when a step does not
            compile) and skips it on a CPU. Defaults to `"auto"`.
        restore_trainable: Boolean. Give every layer back its own
            `trainable` flag when `fit` ends. Defaults to `True`, so that the
            model leaves `fit` as the user built it (later `fit`/`compile`
            calls and saved configs are unaffected); the history records
            what was frozen.
        keep_frozen: Boolean. For repeated `fit` calls (online training on
            new data): start each call with the stem of the previous call
            frozen and the scores' state kept. The feature cache is always
            rebuilt from the new data. Defaults to `False` (each call starts
            afresh).
        seed: Integer or `None`. Seed of the replay order; `None` draws one
            from NumPy's global generator (which
            `keras.utils.set_random_seed` seeds). Defaults to `None`.
        verbose: Integer. `1` prints one line per epoch where Keras's own
            callbacks print (stdout, or `absl.logging` when
            `keras.config.is_interactive_logging_enabled()` is false).
            Defaults to `0`.
        backup_dir: Path or `None`. Give the `backup_dir` of a
            `keras.callbacks.BackupAndRestore` callback: LearnDrop then
            saves its state there at every epoch end and, when a `fit` that
            crashed is resumed, restores the frozen stem, the scores and the
            cache policy (the cache is refilled from the data). The state is
            matched to the model by the structure of its units, not by layer
            names (see `resume`). Put LearnDrop before `BackupAndRestore` in
            `callbacks`: a crash between their two saves then loses nothing.
            Defaults to `None`.
        probe_size: `"auto"`, or an integer, 0 or >= 4. Inputs of the
            probe set on which each unit's drift is measured at every
            evaluation (see `keras_learndrop.drift`): drawn once per `fit`
            from the validation data when `fit` validates, else from the
            training data, and run in inference mode. `"auto"` draws 256
            and, once the first epoch has counted the training samples,
            keeps one per 32 of them (at least 64): an evaluation then
            costs about 1 % of a replay epoch, and the drift stays within
            about 9 % of a 512-input probe's at 128 inputs
            (docs/results.md). `0` measures no drift (then `FeatureDrift`
            cannot be used, and `ScheduleOrDrift` decides on the schedule).
            Defaults to `"auto"`.

    Raises:
        ValueError: for an argument out of range.
        TypeError: for an argument of the wrong type.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, activation="relu"),
    ...     keras.layers.Conv2D(4, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2, activation="softmax"),
    ... ])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> x = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> y = np.random.randint(0, 2, 32)
    >>> learn_drop = LearnDrop(policy=keras_learndrop.FixedSchedule({1: 2}))
    >>> _ = model.fit(x, y, epochs=3, callbacks=[learn_drop], verbose=0)
    >>> [record.mode for record in learn_drop.history.epochs]
    ['full', 'fill', 'replay']
    """

    def __init__(
        self,
        policy=None,
        eval_every=1,
        cache="auto",
        cache_dtype="float32",
        memory_budget=None,
        cache_validation=True,
        augmented_inputs=None,
        augmented_views=0,
        stem_dropout="inference",
        jit_compile="auto",
        restore_trainable=True,
        keep_frozen=False,
        seed=None,
        verbose=0,
        backup_dir=None,
        probe_size="auto",
    ):
        super().__init__()
        arguments = dict(
            eval_every=eval_every,
            cache=cache,
            cache_dtype=cache_dtype,
            memory_budget=memory_budget,
            cache_validation=cache_validation,
            augmented_inputs=augmented_inputs,
            augmented_views=augmented_views,
            stem_dropout=stem_dropout,
            jit_compile=jit_compile,
            restore_trainable=restore_trainable,
            keep_frozen=keep_frozen,
            seed=seed,
            verbose=verbose,
            backup_dir=backup_dir,
            probe_size=probe_size,
        )
        self.policy = options.check_arguments(policy, **arguments)
        for name, value in arguments.items():
            setattr(self, name, value)
        self._backup = None if backup_dir is None else resume.Backup(backup_dir)
        # What outlives a `fit` call (with `keep_frozen`, the next one
        # goes on from it): the units and the policy with its state.
        self.history = report.LearnDropHistory()
        self._chain = None
        self._policy = None
        self._reset()

    def _reset(self):
        """Clears the state of one `fit` call (the next one starts clean)."""
        self._freezer = None  # `freezing.Freezer`: the flags, the stems.
        self._step = None  # The head's `train_step.HeadStep`.
        self._function = None  # `train_step.TrainFunction` of this fit.
        self._training = None  # `features.TrainingFeatures`.
        self._validation = None  # `features.ValidationFeatures`.
        self._observer = None  # `observer.UnitObserver`.
        self._run_seed = None
        self._random_inputs = False  # Whether `fit`'s input pipeline is.
        self._augmented = False  # Whether the training inputs are random.
        self._first_epoch = True
        self._epoch_start = None
        self._extend_flops = 0  # FLOPs of moving the cache to a new cut.
        self._show_all_logs = lambda: None  # Ends the progress bar filter.

    # ---- the fit: units, the step, the streams of features -------------

    def on_train_begin(self, logs=None):
        model = self.model
        _check_model(model)
        stale = getattr(model, "train_function", None)
        if isinstance(stale, train_step.TrainFunction):
            # A fit that ended with an exception skipped `on_train_end`:
            # give the layers it froze back before reading their flags.
            stale.release()
        if isinstance(model.test_function, validation.ValidationFunction):
            model.test_function = None  # Keras makes its own again.
        self._show_all_logs()
        self._reset()
        fit_iterator = keras_internals.fit_epoch_iterator(model)
        if not model.built and fit_iterator is not None:
            # Keras builds a model without an `Input` in its first step,
            # after `on_train_begin`; LearnDrop needs the graph now.
            keras_internals.symbolic_build(model, fit_iterator)
        keep = self.keep_frozen and self._chain is not None
        if not keep or self._chain.model is not model:
            self._start_afresh(model)
        if not model.trainable_weights:
            raise ValueError(
                f"The model {model.name!r} has no trainable weights, so "
                "there is nothing to score or freeze. Set `trainable=True` "
                "on the layers to train, or train without LearnDrop."
            )
        self._freezer = freezing.Freezer(
            model,
            self._chain,
            train_step.resolve_jit_compile(self.jit_compile),
            self.stem_dropout,
            self.restore_trainable,
        )
        self._run_seed = (
            self.seed
            if self.seed is not None
            else int(np.random.randint(0, 2**31 - 1))
        )
        budget = features.FeatureBudget(self.memory_budget)
        self._training = features.TrainingFeatures(
            self.history,
            budget,
            self.cache_dtype,
            fit_iterator,
            self.cache,
            self.augmented_views,
        )
        self._training.steps_per_epoch = (self.params or {}).get("steps")
        self._training.note = self._training.refusal()
        self._detect_augmentation(fit_iterator)
        self._validation = features.ValidationFeatures(
            self.history, budget, self.cache_dtype, model
        )
        self._function = train_step.TrainFunction(
            model,
            self._store_batch,
            on_release=self._freezer.restore_flags,
            epoch_iterator=fit_iterator,
        )
        self._training.function = self._function
        self._apply_stem(self._policy.stem_size)
        self._observer = observer.UnitObserver(
            model,
            self._chain,
            self._policy,
            self.probe_size,
            self._run_seed,
            self.history,
        )
        self._observer.set_cut(self._policy.stem_size)
        self._check_random_stem()
        if self._policy.samples_per_epoch > 1:
            self._function.on_step = self._observer.on_step
        keras_internals.install_train_function(model, self._function)
        # Only a few of LearnDrop's keys on the progress line of this fit.
        self._show_all_logs = keras_internals.filter_progress_logs(
            model, report.hidden_from_progress
        )

    def _start_afresh(self, model):
        self._chain = graph.UnitChain(model)
        units = self._chain.units
        unit_flops = [
            sum(flops.node_flops(s.node) for s in unit.steps if s.node)
            for unit in units
        ]
        self.history = report.LearnDropHistory(
            [unit.name for unit in units],
            unit_flops,
            policy_lib.serialize(self.policy),
        )
        self._policy = self.policy
        self._policy.build(len(units))
        base = freezing.frozen_base(units)
        if base:
            # A base the user froze needs no decision: it is the stem from
            # the first epoch, and the policy decides about the rest.
            self._policy.reset(stem_size=base)
            self.history.frozen_at.update(dict.fromkeys(range(base), -1))
            self.history.note(
                f"the first {base} units have no trainable weights (layers "
                "you froze): they are the stem from the first epoch"
            )

    def _detect_augmentation(self, fit_iterator):
        """Finds out whether the training inputs are random (notes it)."""
        random, note, unknown = input_randomness.fit_inputs_random(
            self.augmented_inputs, fit_iterator, self._training.note is None
        )
        self._random_inputs = random
        self._training.input_note = unknown
        layers = keras_internals.flatten_layers(self.model)
        self._augmented = random or any(
            keras_internals.is_input_augmentation(layer)
            for layer in stem_cache.stochastic_layers(layers)
        )
        if self._augmented and not self._policy.freeze_augmented:
            note = (note,) if note else ()
            note += (
                "the training inputs are randomly augmented, and the policy "
                "does not freeze then (`freeze_augmented=False`, the "
                "default's setting: every freeze measured under random "
                "augmentation cost accuracy). To trade accuracy for speed, "
                "pass a policy with `freeze_augmented=True`, e.g. "
                "`LearnDropScores.default(freeze_augmented=True)`",
            )
        else:
            note = (note,) if note else ()
        for line in note:
            self._say(line)

    def _say(self, line):
        """Notes `line` in the history, and prints it when verbose."""
        self.history.note(line)
        if self.verbose:
            report.print_line(f"LearnDrop: {line}.")

    # ---- each epoch: its mode, then its record -------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self._observer.begin_epoch(self._training.known_steps)
        if self._first_epoch:
            self._first_epoch = False
            if not self._restore_state(epoch):
                # `BackupAndRestore` may have loaded weights after this
                # callback's `on_train_begin`: score from those.
                self._observer.start(epoch)
            self._observer.rates.start_interval()
        self._epoch_start = time.perf_counter()
        self._validation.mode = ""
        self._extend_flops = 0
        self._training.begin_epoch(
            epoch,
            self._policy.stem_size,
            self._run_seed,
            self.model.distribute_strategy,
        )

    def _store_batch(self, stem_output, y, sample_weight):
        self._training.store(
            stem_output, y, sample_weight, self.model.distribute_strategy
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        function = self._function
        self._training.end_epoch(self.model.stop_training)
        record = report.epoch_record(
            self.history,
            epoch,
            function.mode,
            function.step.cut,
            function.samples,
            self._training.nbytes,
        )
        self.history.epochs.append(record)
        self._observer.fit_probe(function.samples)
        if (epoch + 1) % self.eval_every == 0:
            self._evaluate(epoch, logs)
        record.scoring_seconds = self._observer.scoring_seconds
        record.drift_seconds = self._observer.drift_seconds
        record.probe_size = self._observer.probe_size
        record.validation_mode = self._validation.mode
        record.forward_flops += self._extend_flops
        record.seconds = time.perf_counter() - self._epoch_start
        stem = self._policy.stem_size
        report.write_epoch_logs(
            logs,
            self.history,
            record,
            stem,
            len(self._chain.layers_of(0, stem)),
        )
        self._save_state(epoch)
        if self.verbose:
            report.print_line(report.epoch_line(self.history, record, stem))

    def on_train_end(self, logs=None):
        if self._training is not None:
            self._training.pause_input(False)
        if self._validation is not None:
            self._validation.release()
        if self._function is not None:
            self._function.release()
        keras_internals.install_train_function(self.model, None)
        self._show_all_logs()
        if self._backup is not None:
            self._backup.clear()
        self._reset()

    # ---- the validation of `fit` on cached features ---------------------

    def on_test_begin(self, logs=None):
        if self._validation is not None:
            stem = self._policy.stem_size
            self._validation.begin(
                stem,
                self._step,
                features.validation_refusal(
                    self._chain.layers_of(0, stem),
                    self.cache_validation,
                    self.cache,
                ),
            )

    def on_test_end(self, logs=None):
        if self._validation is not None:
            self._validation.end()

    # ---- evaluations: observe, decide, freeze, grow ----------------------

    def _evaluate(self, epoch, logs):
        stem = self._policy.stem_size
        observation = self._observer.observe(
            epoch,
            stem,
            (self.params or {}).get("epochs"),
            self._training.known_steps,
            self._augmented,
        )
        new_stem = self._policy.update(observation)
        for line in self._policy.notes:
            self._say(line)
        self._policy.notes.clear()
        self._observer.record(observation, stem, new_stem, logs)
        if new_stem > stem:
            for index in range(stem, new_stem):
                self.history.frozen_at[index] = epoch
            self._grow(stem, new_stem)

    def _apply_stem(self, stem):
        """Freezes the first `stem` units; the head's step trains the rest."""
        self._step = self._freezer.freeze(stem)
        self._function.step = self._step
        if self._observer is not None:
            self._observer.set_cut(stem)

    def _check_random_stem(self):
        stem = self._policy.stem_size
        self._training.check_random_stem(
            stem,
            self._freezer.random_stem(stem, self._random_inputs),
            self.stem_dropout,
        )

    def _grow(self, old_stem, new_stem):
        self._apply_stem(new_stem)
        self._check_random_stem()
        self._validation.grow(old_stem, new_stem, self._chain)
        samples = self._training.grow(old_stem, new_stem, self._step)
        new_flops = sum(self.history.unit_flops[old_stem:new_stem])
        self._extend_flops += new_flops * samples

    # ---- crash and resume ------------------------------------------------

    def _save_state(self, epoch):
        """Saves the state after `epoch` for a resumed `fit` (`resume`)."""
        if self._backup is None:
            return
        state = resume.RunState(
            epoch=epoch,
            structure=resume.unit_structure(self._chain),
            policy=self._policy.get_state(),
            history=self.history.to_dict(),
            run_seed=self._run_seed,
            cache_note=self._training.note,
            reference_epoch=self._observer.reference_epoch,
        )
        self._backup.save(
            state, self._observer.tracker.reference, self._observer.get_state()
        )

    def _restore_state(self, epoch):
        """Resumes a crashed `fit` that `BackupAndRestore` restarts at epoch.

        `BackupAndRestore` has restored the weights and the optimizer by the
        first `on_epoch_begin`, whatever the order of the callbacks.

        Returns:
            Whether a state was restored.
        """
        if epoch == 0 or self._backup is None:
            return False
        loaded = resume.load_run(self._backup, epoch, self._chain)
        if loaded is None:
            return False
        state, history, lagging = loaded
        # The same structure under this model's names (a model built again
        # in one process gets other automatic layer names).
        history.unit_names = list(self.history.unit_names)
        self._policy.set_state(state.policy)
        self.history = history
        for part in (self._training, self._validation, self._observer):
            part.history = history
        self._run_seed = state.run_seed
        self._training.note = self._training.note or state.cache_note
        self._observer.restore(
            self._backup, state.epoch, epoch, lagging, state.reference_epoch
        )
        self._apply_stem(self._policy.stem_size)
        self._check_random_stem()
        return True


def _check_model(model):
    if getattr(model, "optimizer", None) is None or not getattr(
        model, "compiled", False
    ):
        raise ValueError(
            f"LearnDrop needs a compiled model. The model {model.name!r} has "
            "no optimizer: call `model.compile(optimizer, loss)` before "
            "`fit`."
        )
    if type(model).train_step is not keras.Model.train_step:
        raise ValueError(
            f"The model {model.name!r} overrides `train_step`. LearnDrop "
            "rebuilds the training step over the unfrozen layers from "
            "`compute_loss` and `compute_metrics`, which it cannot do for a "
            "custom step. Override `compute_loss` instead, or train without "
            "LearnDrop."
        )
