"""The `LearnDrop` callback: it orchestrates, the other modules do the work.

Per `fit` call: find the units (`graph`), install the training step
(`train_step`), and per epoch choose its mode; per evaluation score the
units (`scoring`), grow the stem (`policy`), freeze it, and move the feature
cache to the new cut (`stem_cache`). FLOPs come from `flops`, the record
goes to `report.LearnDropHistory`, the state for a resumed `fit` to
`resume.Backup`. What it needs of Keras beyond its public API comes from
`keras_internals`.
"""

import os
import time
import warnings

import numpy as np

from keras_learndrop import flops
from keras_learndrop import graph
from keras_learndrop import input_randomness
from keras_learndrop import keras_internals
from keras_learndrop import policy as policy_lib
from keras_learndrop import report
from keras_learndrop import resume
from keras_learndrop import scoring
from keras_learndrop import stem_cache
from keras_learndrop import train_step
from keras_learndrop import validation
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf
from keras_learndrop.checks import check_bool
from keras_learndrop.checks import check_choice
from keras_learndrop.checks import check_int

CACHE_MODES = ("auto", "off")
STEM_DROPOUT = ("train", "inference")


class LearnDrop(keras.callbacks.Callback):
    """Freezes the leading layers that stopped learning, and drops them.

    At every evaluation (each `eval_every` epochs) LearnDrop measures how
    far the weights of each unit of the model (a stretch between two cuts
    of its graph, see `UnitChain`) moved, and its `policy` decides how many
    leading units to freeze (`policy.FreezePolicy`; the default,
    `LearnDropScores.default()`, freezes a unit once a small share of its
    learning is still to come, a smaller share the deeper the unit). The
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
    evaluations, per unit `i` still training, `ld_change/unit_<i>` and the
    policy's scores (`ld_continuation/unit_<i>`, ...), with `i` zero-padded
    so that they sort in unit order (TensorBoard shows one group per
    figure). All of them reach `History`, `CSVLogger` and `TensorBoard`;
    the progress bar of `fit` shows only `ld_epoch_mode`,
    `ld_frozen_units` and `ld_flops_saved` (`report.PROGRESS_KEYS`).

    Args:
        policy: A `FreezePolicy` (`LearnDropScores`, `DirectionConsistency`,
            `AutoFreezeRule`, `FreezeOut`, `FixedSchedule` or your own), or
            `None` for `LearnDropScores.default()`. The policy keeps
            state: give each `LearnDrop` its own.
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
            than `"train"` (see the README).
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
    ):
        super().__init__()
        if policy is None:
            policy = policy_lib.default_policy()
        if not isinstance(policy, policy_lib.FreezePolicy):
            raise TypeError(
                "`policy` must be a `keras_learndrop.FreezePolicy` (such as "
                "`LearnDropScores()` or `FixedSchedule({2: 3})`) or None. "
                f"Received: policy={policy!r} of type "
                f"{type(policy).__name__}."
            )
        check_int("eval_every", eval_every, 1)
        check_choice("cache", cache, CACHE_MODES)
        check_choice("cache_dtype", cache_dtype, stem_cache.CACHE_DTYPES)
        if memory_budget is not None:
            check_int("memory_budget", memory_budget, 0)
        check_bool("cache_validation", cache_validation)
        if augmented_inputs is not None:
            check_bool("augmented_inputs", augmented_inputs, extra="or None")
        check_int("augmented_views", augmented_views, 0)
        check_choice("stem_dropout", stem_dropout, STEM_DROPOUT)
        if jit_compile != "auto":
            check_bool("jit_compile", jit_compile, extra="or 'auto'")
        check_bool("restore_trainable", restore_trainable)
        check_bool("keep_frozen", keep_frozen)
        if seed is not None:
            check_int("seed", seed, 0)
        check_int("verbose", verbose, 0)
        self.policy = policy
        if backup_dir is not None and not isinstance(
            backup_dir, (str, os.PathLike)
        ):
            raise TypeError(
                "`backup_dir` must be a path (the `backup_dir` of your "
                "`keras.callbacks.BackupAndRestore`) or None. Received: "
                f"backup_dir={backup_dir!r}."
            )
        if backup_dir is not None and not os.fspath(backup_dir):
            raise ValueError(
                "`backup_dir` must not be empty: pass the `backup_dir` of "
                "your `keras.callbacks.BackupAndRestore`, or None. Received: "
                f"backup_dir={backup_dir!r}."
            )
        self.backup_dir = backup_dir
        self.eval_every = eval_every
        self.cache = cache
        self.cache_dtype = cache_dtype
        self.memory_budget = memory_budget
        self.cache_validation = cache_validation
        self.augmented_inputs = augmented_inputs
        self.augmented_views = augmented_views
        self.stem_dropout = stem_dropout
        self.jit_compile = jit_compile
        self.restore_trainable = restore_trainable
        self.keep_frozen = keep_frozen
        self.seed = seed
        self.verbose = verbose
        self._backup = None if backup_dir is None else resume.Backup(backup_dir)
        # What outlives a `fit` call (with `keep_frozen`, the next one
        # goes on from it): the units and the policy with its state.
        self.history = report.LearnDropHistory()
        self._chain = None
        self._policy = None
        self._reset()

    def _reset(self):
        """Clears the state of one `fit` call (the next one starts clean)."""
        self._fit_iterator = None  # Keras's `EpochIterator` of this fit.
        self._trainable = {}  # id(layer) -> the user's `trainable` flag.
        self._run_seed = None
        self._cache_note = None  # Why this fit does not cache, or None.
        self._augmented = False  # Whether the training inputs are random.
        self._random_inputs = False  # Whether `fit`'s input pipeline is.
        self._input_note = None  # Why that is unknown, until warned.
        self._cache = None
        self._budget = None  # Bytes for both caches, once known.
        self._validation = None  # `validation.ValidationFunction`.
        self._val_cache = None
        self._val_note = None  # Why validation is not cached, or None.
        self._val_iterator = None  # Keras's iterator of the validation.
        self._keras_test_function = None
        self._val_mode = ""  # How this epoch validated (`EpochRecord`).
        self._jit = False
        self._tracker = None
        self._step = None
        self._function = None
        self._data_steps = None  # Batches of a dataset of unknown length.
        self._first_epoch = True
        self._reference_epoch = None
        self._epoch_start = None
        self._extend_flops = 0
        self._rates = None  # `scoring.LearningRates` of the optimizer.
        self._sample_every = 0  # Steps between samples of the weights.
        self._scoring_seconds = 0.0  # Spent measuring in this epoch.
        self._show_all_logs = lambda: None  # Ends the progress bar filter.

    # ---- the fit call -------------------------------------------------

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
        self._fit_iterator = keras_internals.fit_epoch_iterator(model)
        if not model.built and self._fit_iterator is not None:
            # Keras builds a model without an `Input` in its first step,
            # after `on_train_begin`; LearnDrop needs the graph now.
            keras_internals.symbolic_build(model, self._fit_iterator)
        keep = self.keep_frozen and self._chain is not None
        if not keep or self._chain.model is not model:
            self._start_afresh(model)
        if not model.trainable_weights:
            raise ValueError(
                f"The model {model.name!r} has no trainable weights, so "
                "there is nothing to score or freeze. Set `trainable=True` "
                "on the layers to train, or train without LearnDrop."
            )
        self._trainable = {
            id(layer): layer.trainable
            for layer in keras_internals.flatten_layers(model)
        }
        self._run_seed = (
            self.seed
            if self.seed is not None
            else int(np.random.randint(0, 2**31 - 1))
        )
        self._cache_note = self._cache_refusal()
        self._random_inputs = self._detect_random_inputs()
        self._augmented = self._inputs_augmented()
        if self._augmented and not self._policy.freeze_augmented:
            note = (
                "the training inputs are randomly augmented, and the policy "
                "does not freeze then (`freeze_augmented=False`, the "
                "default's setting: every freeze measured under random "
                "augmentation cost accuracy). To trade accuracy for speed, "
                "pass a policy with `freeze_augmented=True`, e.g. "
                "`LearnDropScores.default(freeze_augmented=True)`"
            )
            self.history.note(note)
            if self.verbose:
                report.print_line(f"LearnDrop: {note}.")
        self._jit = train_step.resolve_jit_compile(self.jit_compile)
        self._freeze(self._policy.stem_size)
        self._check_stochastic_stem()
        self._tracker = scoring.WeightTracker(
            [unit.trainable_weights for unit in self._chain.units]
        )
        self._function = train_step.TrainFunction(
            model,
            self._store_batch,
            on_release=self._restore_flags,
            epoch_iterator=self._fit_iterator,
        )
        self._function.step = self._step
        self._validation = validation.ValidationFunction(
            model, self._store_validation_batch
        )
        if self._policy.samples_per_epoch > 1:
            self._function.on_step = self._sample
        self._rates = scoring.LearningRates(model.optimizer)
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
        base = _frozen_base(units)
        if base:
            # A base the user froze needs no decision: it is the stem from
            # the first epoch, and the policy decides about the rest.
            self._policy.reset(stem_size=base)
            self.history.frozen_at.update(dict.fromkeys(range(base), -1))
            self.history.note(
                f"the first {base} units have no trainable weights (layers "
                "you froze): they are the stem from the first epoch"
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._first_epoch = False
            if not self._restore_state(epoch):
                # `BackupAndRestore` may have loaded weights after this
                # callback's `on_train_begin`: score from those.
                self._tracker.snapshot()
                self._reference_epoch = epoch - 1
            self._rates.start_interval()
        self._epoch_start = time.perf_counter()
        self._scoring_seconds = 0.0
        self._val_mode = ""
        self._sample_every = _sample_interval(
            self._steps_per_epoch, self._policy.samples_per_epoch
        )
        self._extend_flops = 0
        mode = self._epoch_mode()
        view = indices = None
        if mode == "replay":
            view = self._cache.view_for_epoch(epoch)
            indices = self._cache.index_batches(
                epoch, self._run_seed, self.model.distribute_strategy
            )
            self._skip_fit_input(True)
        self._function.begin_epoch(mode, view, indices)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        function = self._function
        self._skip_fit_input(False)
        if function.exhausted and function.mode != "replay":
            self._data_steps = function.steps
        if function.mode == "fill":
            self._finish_fill()
        self._record_epoch(epoch, function)
        if (epoch + 1) % self.eval_every == 0:
            self._evaluate(epoch, logs)
        record = self.history.epochs[-1]
        record.scoring_seconds = self._scoring_seconds
        record.validation_mode = self._val_mode
        record.forward_flops += self._extend_flops
        record.seconds = time.perf_counter() - self._epoch_start
        self._write_logs(logs, record)
        self._save_state(epoch)
        if self.verbose:
            report.print_line(
                f"LearnDrop epoch {epoch + 1}: {record.mode}, "
                f"{self._policy.stem_size}/{len(self._chain)} units frozen, "
                f"cache {record.cache_bytes / 2**20:.1f} MiB, "
                f"{100 * self.history.flops_reduction:.1f} % of forward "
                "FLOPs saved so far"
            )

    def on_train_end(self, logs=None):
        self._skip_fit_input(False)
        self._end_validation()
        if self._function is not None:
            self._function.release()
        keras_internals.install_train_function(self.model, None)
        self._show_all_logs()
        if self._backup is not None:
            self._backup.clear()
        self._reset()

    def _restore_flags(self):
        if self.restore_trainable:
            for layer in keras_internals.flatten_layers(self.model):
                if id(layer) in self._trainable:
                    layer.trainable = self._trainable[id(layer)]

    # ---- validation on cached features ---------------------------------

    def on_test_begin(self, logs=None):
        if self._validation is None:
            return
        iterator = keras_internals.fit_validation_iterator(self.model)
        if iterator is None:
            return  # A user's own `evaluate`: the whole model runs.
        self._val_mode = "full"
        stem = self._policy.stem_size
        if stem == 0:
            return
        note = self._validation_refusal(iterator)
        if note is not None:
            if note not in self.history.notes:
                self.history.note(note)
            return
        cache = self._val_cache
        if cache is not None and cache.complete and cache.cut == stem:
            mode = "replay"
            keras_internals.pause_fit_input(iterator, True)
        else:
            mode = "fill"
            self._val_cache = cache = validation.ValidationCache(
                stem, self.cache_dtype, self.model.distribute_strategy
            )
        self._val_iterator = iterator
        self._validation.begin(mode, self._step, cache)
        self._keras_test_function = keras_internals.install_test_function(
            self.model, self._validation
        )
        self._val_mode = mode

    def on_test_end(self, logs=None):
        function = self._validation
        if function is None or not function.active:
            return
        self._end_validation()
        cache = self._val_cache
        if function.mode != "fill" or cache is None:
            return
        expected = [
            n
            for n in (
                self._val_iterator.num_batches,
                keras_internals.data_batches(self._val_iterator),
            )
            if n
        ]
        cache.complete = function.exhausted or (
            bool(expected) and function.steps >= min(expected)
        )
        if not cache.complete:
            self._val_cache = None

    def _end_validation(self):
        function = self._validation
        if function is None or not function.active:
            return
        function.end()
        if self.model.test_function is function:
            keras_internals.install_test_function(
                self.model, self._keras_test_function
            )
        self._keras_test_function = None
        keras_internals.pause_fit_input(self._val_iterator, False)

    def _validation_refusal(self, iterator):
        """Returns why this validation cannot run on cached features."""
        if self._val_note is not None:
            return self._val_note
        if not self.cache_validation:
            return "cache_validation=False: the whole model validates"
        if self.cache == "off":
            return "cache='off': the whole model validates"
        stem_layers = self._chain.layers_of(0, self._policy.stem_size)
        regularized = [
            layer.name
            for layer in stem_layers
            if getattr(layer, "activity_regularizer", None) is not None
        ]
        if regularized:
            return (
                f"the frozen layers {regularized} add activity "
                "regularization to the validation loss, which the cached "
                "features would leave out; the whole model validates"
            )
        custom = [
            layer.name
            for layer in stem_cache.stochastic_layers(stem_layers)
            if not type(layer).__module__.startswith("keras.")
        ]
        if custom:
            return (
                f"the frozen layers {custom} draw random numbers and may "
                "do so in inference too, so cached validation features "
                "could differ from the model's; the whole model validates"
            )
        steps = iterator.steps_per_epoch
        batches = keras_internals.data_batches(iterator)
        if (
            steps
            and steps != batches
            and not keras_internals.repeats_leading_batches(iterator)
        ):
            return (
                f"validation_steps={steps} does not cover the validation "
                f"dataset exactly once (it has {batches or 'unknown'} "
                "batches), so each validation may see other samples; the "
                "whole model validates. Pass validation data of known "
                "length without `validation_steps` to cache it"
            )
        return None

    def _store_validation_batch(self, features, y, sample_weight):
        """Adds a batch to the validation cache; False stops storing."""
        cache = self._val_cache
        try:
            cache.add(features, y, sample_weight)
        except tf.errors.ResourceExhaustedError:
            self._refuse_validation_cache(
                "the device ran out of memory for the cached validation "
                "features; the whole model validates"
            )
            return False
        return self._validation_cache_fits(
            "the cached training and validation features"
        )

    def _validation_cache_fits(self, features):
        """Whether both caches fit the budget; if not, refuses validation's.

        Args:
            features: String. What needs the bytes, for the note.
        """
        used = self._val_cache.nbytes + (
            self._cache.nbytes if self._cache else 0
        )
        if used <= self._memory_budget():
            return True
        self._refuse_validation_cache(
            f"{features} need more than the budget of "
            f"{self._memory_budget() / 2**20:.1f} MiB; the whole model "
            "validates. Raise `memory_budget` or lower `cache_dtype` to "
            "cache them"
        )
        return False

    def _refuse_validation_cache(self, reason):
        self._val_note = reason
        self._val_cache = None
        self.history.note(reason)
        warnings.warn(f"LearnDrop: {reason}.", stacklevel=2)

    def _memory_budget(self):
        """Bytes the cached features may take (resolved once per fit)."""
        if self._budget is None:
            self._budget = (
                stem_cache.default_memory_budget()
                if self.memory_budget is None
                else self.memory_budget
            )
        return self._budget

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
            cache_note=self._cache_note,
            reference_epoch=self._reference_epoch,
        )
        self._backup.save(state, self._tracker.reference)

    def _restore_state(self, epoch):
        """Resumes a crashed `fit` that `BackupAndRestore` restarts at epoch.

        `BackupAndRestore` has restored the weights and the optimizer by the
        first `on_epoch_begin`, whatever the order of the callbacks.

        Returns:
            Whether a state was restored.
        """
        if epoch == 0 or self._backup is None:
            return False
        try:
            state, lagging = self._backup.load(
                epoch, resume.unit_structure(self._chain)
            )
            history = state and report.LearnDropHistory.from_dict(state.history)
        except (resume.StateMismatch, KeyError, TypeError, ValueError) as e:
            warnings.warn(f"LearnDrop: {e}; starting afresh.", stacklevel=2)
            return False
        if state is None:
            return False
        if lagging:
            warnings.warn(
                f"LearnDrop: the state in {self._backup.state_path} was "
                f"saved after epoch {epoch - 1}, the weights after epoch "
                f"{epoch}: the evaluation of epoch {epoch} is lost (the "
                "process stopped between the two saves). Resuming with the "
                f"stem and scores of epoch {epoch - 1}. Put LearnDrop before "
                "BackupAndRestore in `callbacks` to close this gap.",
                stacklevel=2,
            )
        # The same structure under this model's names (a model built again
        # in one process gets other automatic layer names).
        history.unit_names = list(self.history.unit_names)
        self._policy.set_state(state.policy)
        self.history = history
        self._run_seed = state.run_seed
        self._cache_note = self._cache_note or state.cache_note
        self._freeze(self._policy.stem_size)
        self._check_stochastic_stem()
        self._tracker.snapshot()
        self._reference_epoch = epoch - 1
        if not lagging and state.reference_epoch != epoch - 1:
            self._reference_epoch = state.reference_epoch
            self._restore_reference()
        return True

    def _restore_reference(self):
        try:
            arrays = self._backup.load_reference(self._reference_epoch)
            self._tracker.set_reference(arrays)
        except (OSError, ValueError) as error:
            path = self._backup.reference_path(self._reference_epoch)
            warnings.warn(
                f"LearnDrop: cannot read the weights of the last evaluation "
                f"from {path} ({error}); the next change scores measure the "
                "change since the resumed epoch only.",
                stacklevel=2,
            )

    # ---- epoch modes and the cache -------------------------------------

    def _epoch_mode(self):
        if self._policy.stem_size == 0:
            return "full"
        if self._cache_note is not None:
            if self._cache_note not in self.history.notes:
                self._refuse_cache(self._cache_note)
            return "stem_forward"
        if self._cache is not None and len(self._cache.views) >= max(
            1, self._views_wanted()
        ):
            return "replay"
        return "fill"

    def _views_wanted(self):
        return self.augmented_views if self._stochastic() else 1

    def _stochastic(self):
        stem_layers = self._chain.layers_of(0, self._policy.stem_size)
        random_layers = stem_cache.stochastic_layers(stem_layers)
        if self.stem_dropout == "inference":
            random_layers = [
                layer
                for layer in random_layers
                if keras_internals.is_input_augmentation(layer)
            ]
        return self._random_inputs or bool(random_layers)

    def _inputs_augmented(self):
        """Whether this fit's training inputs are randomly augmented."""
        layers = keras_internals.flatten_layers(self.model)
        return self._random_inputs or any(
            keras_internals.is_input_augmentation(layer)
            for layer in stem_cache.stochastic_layers(layers)
        )

    def _detect_random_inputs(self):
        """Whether `fit`'s input pipeline is random: declared, else found.

        Notes what was found (see `input_randomness`).
        """
        if self.augmented_inputs is not None:
            return self.augmented_inputs
        if self._fit_iterator is None:
            return False
        found = input_randomness.inspect_input(
            *keras_internals.fit_input(self._fit_iterator)
        )
        if found.random:
            note = (
                f"random training inputs in {found.source}: "
                f"{found.describe()}; treated as `augmented_inputs=True`. "
                "Pass `augmented_inputs=False` if they are the same every "
                "epoch"
            )
        elif found.random is None and self._cache_note is None:
            reason = f" ({found.describe()})" if found.findings else ""
            note = self._input_note = (
                f"{found.source}{reason} cannot be checked for random "
                "augmentation, and the stem's cache assumes the same inputs "
                "every epoch. Pass `augmented_inputs=True` if it draws "
                "random augmentations, `augmented_inputs=False` if not"
            )
        else:
            return False
        self.history.note(note)
        if self.verbose:
            report.print_line(f"LearnDrop: {note}.")
        return bool(found.random)

    def _cache_refusal(self):
        """Returns why features cannot be cached in this fit, or None."""
        if self.cache == "off":
            return "cache='off': the frozen stem runs forward every epoch"
        epoch_iterator = self._fit_iterator
        if epoch_iterator is None:
            return (
                "the input of this fit call could not be inspected, so the "
                "stem runs forward every epoch"
            )
        steps = self._steps_per_epoch
        data_batches = keras_internals.data_batches(epoch_iterator)
        if steps and steps != data_batches:
            return (
                f"steps_per_epoch={steps} does not cover the training data "
                f"exactly once per epoch (it has {data_batches} batches), "
                "so cached features would replay the same batches; the stem "
                "runs forward every epoch. Pass a finite dataset without "
                "`steps_per_epoch` to use the cache"
            )
        return None

    @property
    def _steps_per_epoch(self):
        """The steps of this fit's epochs, once known; else `None`.

        `fit` tells callbacks the steps per epoch unless the data are of
        unknown length; those are counted in their first full pass.
        """
        return (self.params or {}).get("steps") or self._data_steps

    def _refuse_cache(self, reason):
        self._cache_note = reason
        self._cache = None
        self.history.note(reason)
        if self.cache != "off":  # Asked for: no need to warn.
            warnings.warn(f"LearnDrop: {reason}.", stacklevel=2)

    def _store_batch(self, features, y, sample_weight):
        strategy = self.model.distribute_strategy
        parts = [
            strategy.experimental_local_results(t) if t is not None else None
            for t in (features, y, sample_weight)
        ]
        if self._cache is None:
            self._cache = stem_cache.StemCache(
                self.cache_dtype,
                self._memory_budget(),
                stem_cache.default_device(),
            )
        try:
            self._cache.add_replica_parts(
                *parts,
                replicas=strategy.num_replicas_in_sync,
                steps_per_epoch=self._steps_per_epoch,
                views=max(1, self._views_wanted()),
            )
        except stem_cache.CacheBudgetExceeded as error:
            self._refuse_cache(f"{error}; the stem runs forward instead")
            self._function.mode = "stem_forward"

    def _finish_fill(self):
        if self._cache is None:
            return
        expected = self._steps_per_epoch
        complete = self._function.exhausted or (
            expected is not None and self._function.steps >= expected
        )
        if complete and not self.model.stop_training:
            self._cache.finish_view()
        else:
            self._cache.discard_pending()

    def _skip_fit_input(self, skip):
        """Stops (or restarts) the input pipeline of `fit` for an epoch.

        A replay epoch never reads `fit`'s iterator, but Keras still creates
        it at the start of each epoch, which starts prefetching (reading and
        decoding) batches. An empty stand-in avoids that work.
        """
        if self._fit_iterator is not None:
            keras_internals.pause_fit_input(self._fit_iterator, skip)

    # ---- scoring and freezing ------------------------------------------

    def _sample(self, steps):
        """Samples the weights' path `samples_per_epoch` times an epoch."""
        if self._sample_every and steps % self._sample_every == 0:
            start = time.perf_counter()
            self._tracker.sample()
            self._rates.sample()
            self._scoring_seconds += time.perf_counter() - start

    def _evaluate(self, epoch, logs):
        start = time.perf_counter()
        stem = self._policy.stem_size
        measured = self._tracker.measure(first_unit=stem)
        self._reference_epoch = epoch
        change = scoring.change_scores(measured.delta, measured.previous)
        path = scoring.change_scores(measured.path, measured.previous)
        learning_rate = self._rates.end_interval()
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
        change = np.where(diverged, np.inf, change)
        path = np.where(diverged, np.inf, path)
        epochs = (self.params or {}).get("epochs")
        remaining = self._rates.remaining(epoch, epochs, self._steps_per_epoch)
        new_stem = self._policy.update(
            policy_lib.Observation(
                epoch=epoch,
                epochs=epochs,
                change=change,
                path=path,
                learning_rate=learning_rate,
                remaining_learning_rate=remaining,
                augmented=self._augmented,
            )
        )
        scores = {
            name: [float(v) for v in values]
            for name, values in self._policy.last_scores.items()
        }
        self.history.evaluations.append(
            report.Evaluation(
                epoch,
                list(change),
                list(path),
                learning_rate,
                scores,
                new_stem,
                remaining,
            )
        )
        for i in range(stem, len(change)):
            logs[report.unit_log_key("change", i, len(change))] = float(
                change[i]
            )
            for name, values in scores.items():
                logs[report.unit_log_key(name, i, len(change))] = values[i]
        self._scoring_seconds += time.perf_counter() - start
        if new_stem > stem:
            for index in range(stem, new_stem):
                self.history.frozen_at[index] = epoch
            self._grow(stem, new_stem)

    def _check_stochastic_stem(self):
        if (
            self._policy.stem_size
            and self._cache_note is None
            and self._stochastic()
            and not self.augmented_views
        ):
            hint = ""
            if self.stem_dropout == "train":
                hint = (
                    ", or `stem_dropout='inference'` to switch a frozen "
                    "stem's dropout and noise off"
                )
            self._refuse_cache(
                "the stem draws random numbers in training (random "
                "augmentation or dropout, or random training inputs), so "
                "one cached view would be wrong; the stem runs forward "
                "every epoch. Pass `augmented_views=K` to cache K views" + hint
            )
        if (
            self._input_note is not None
            and self._policy.stem_size
            and self._cache_note is None
            and not self._stochastic()
        ):
            warnings.warn(f"LearnDrop: {self._input_note}.", stacklevel=2)
            self._input_note = None

    def _grow(self, old_stem, new_stem):
        self._freeze(new_stem)
        self._check_stochastic_stem()
        self._grow_validation_cache(old_stem, new_stem)
        if self._cache is not None and self._cache.views:
            self._cache.discard_pending()
            chain = self._chain

            step = self._step

            def run_new_units(features):
                features = tf.cast(features, chain.cut_tensor(old_stem).dtype)
                return step.run_stem(features, old_stem, new_stem)

            try:
                self._cache.extend(
                    train_step.AnyBatchFunction(
                        run_new_units, reduce_retracing=True, autograph=False
                    ),
                    self._cache.batch_size,
                )
            except stem_cache.CacheBudgetExceeded as error:
                self._refuse_cache(f"{error}; the stem runs forward instead")
                return
            new_flops = sum(self.history.unit_flops[old_stem:new_stem])
            self._extend_flops += (
                new_flops * self._cache.num_samples * len(self._cache.views)
            )
        elif self._cache is not None:
            self._cache = None

    def _grow_validation_cache(self, old_stem, new_stem):
        cache = self._val_cache
        if cache is None or not cache.complete or cache.cut != old_stem:
            self._val_cache = None
            return
        chain = self._chain

        def run_new_units(features):
            features = tf.cast(features, chain.cut_tensor(old_stem).dtype)
            return chain.forward(features, old_stem, new_stem, False)

        try:
            cache.extend(run_new_units, new_stem)
        except tf.errors.ResourceExhaustedError:
            self._refuse_validation_cache(
                "the device ran out of memory for the cached validation "
                "features at the new cut; the whole model validates"
            )
            return
        self._validation_cache_fits("the cached features at the new cut")

    def _freeze(self, stem):
        for layer in self._chain.layers_of(0, stem):
            layer.trainable = False
        self._step = train_step.HeadStep(
            self.model, self._chain, stem, self._jit, self.stem_dropout
        )
        if self._function is not None:
            self._function.step = self._step

    # ---- reporting ---------------------------------------------------------

    def _record_epoch(self, epoch, function):
        unit_flops = self.history.unit_flops
        stem = self._function.step.cut
        total = sum(unit_flops)
        per_sample = (
            total if function.mode != "replay" else sum(unit_flops[stem:])
        )
        self.history.epochs.append(
            report.EpochRecord(
                epoch=epoch,
                mode=function.mode,
                frozen_units=stem,
                samples=function.samples,
                forward_flops=per_sample * function.samples,
                baseline_flops=total * function.samples,
                cache_bytes=0 if self._cache is None else self._cache.nbytes,
                seconds=0.0,
            )
        )

    def _write_logs(self, logs, record):
        stem = self._policy.stem_size
        logs["ld_frozen_units"] = stem
        logs["ld_frozen_layers"] = len(self._chain.layers_of(0, stem))
        logs["ld_epoch_mode"] = report.MODE_CODES[record.mode]
        logs["ld_cache_bytes"] = record.cache_bytes
        logs["ld_forward_flops"] = record.forward_flops
        logs["ld_flops_saved"] = self.history.flops_reduction


def _frozen_base(units):
    """Counts the leading units without trainable weights (never all)."""
    count = 0
    while count < len(units) - 1 and not units[count].trainable_weights:
        count += 1
    return count


def _sample_interval(steps, samples_per_epoch):
    """Steps between samples of the weights, or 0 for none within epochs."""
    if samples_per_epoch <= 1 or not steps:
        return 0
    return max(1, steps // samples_per_epoch)


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
