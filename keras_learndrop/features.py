"""The features of a frozen stem over a fixed data stream, and their life.

Once a stem is frozen, its output on a data stream that does not change is
the same every epoch: it can be computed once and replayed. `fit` has two
such streams, the training data and the validation data, and both go
through the same life, in `StemFeatures`:

* **decide** (`mode`): run the whole model, fill a cache, or replay it;
* **fill** (`store`): keep the stem's output of each batch while the head
  trains (or validates) on it;
* **replay**: the head alone on the cached features;
* **grow** (`grow`): when the stem grows, run only the newly frozen units
  over the cache;
* **refuse** (`refuse`): run without a cache from then on, with the reason
  in the history (and a warning where the user did not ask for it).

`TrainingFeatures` and `ValidationFeatures` supply what differs: the
training cache replays in a fresh order, holds `augmented_views` views and
cannot serve a stem that draws random numbers; the validation cache keeps
its batches in order and refuses where cached features would not be exact.
Both count against one `memory_budget` (`FeatureBudget`).
"""

import warnings

from keras_learndrop import keras_internals
from keras_learndrop import stem_cache
from keras_learndrop import train_step
from keras_learndrop import validation
from keras_learndrop.backend import tf


class FeatureBudget:
    """The bytes both caches of a `fit` may take together.

    Args:
        memory_budget: Integer bytes, or `None` for half of the memory
            available when first asked (`stem_cache.default_memory_budget`).
    """

    def __init__(self, memory_budget):
        self._asked = memory_budget
        self._bytes = None
        self.streams = []

    @property
    def bytes(self):
        """The budget, resolved once per `fit`."""
        if self._bytes is None:
            self._bytes = (
                stem_cache.default_memory_budget()
                if self._asked is None
                else self._asked
            )
        return self._bytes

    def used(self):
        """Bytes held by the caches of every stream."""
        return sum(stream.nbytes for stream in self.streams)


class StemFeatures:
    """One data stream's cached stem features: decide, fill, grow, refuse.

    Args:
        history: The `LearnDropHistory` that gets the notes.
        budget: The `FeatureBudget` shared by the streams of the `fit`.
        cache_dtype: String. Dtype of the cached features.

    Attributes:
        note: String or `None`: why this stream runs without a cache.
        cache: The cache of the current cut, or `None`.
    """

    def __init__(self, history, budget, cache_dtype):
        self.history = history
        self.budget = budget
        self.cache_dtype = cache_dtype
        self.note = None
        self.cache = None
        budget.streams.append(self)

    @property
    def nbytes(self):
        return 0 if self.cache is None else self.cache.nbytes

    def refuse(self, reason, warn=True):
        """Runs this stream without a cache from now on, saying why."""
        self.note = reason
        self.cache = None
        self.history.note(reason)
        if warn:
            warnings.warn(f"LearnDrop: {reason}.", stacklevel=3)


class TrainingFeatures(StemFeatures):
    """The stem's features of the training data, replayed in a new order.

    Args:
        history, budget, cache_dtype: As `StemFeatures`.
        fit_iterator: Keras's `EpochIterator` of the `fit`, or `None`.
        cache: `"auto"` or `"off"` (LearnDrop's argument).
        augmented_views: Integer. Views to cache of a random stem.
    """

    def __init__(
        self, history, budget, cache_dtype, fit_iterator, cache, augmented_views
    ):
        super().__init__(history, budget, cache_dtype)
        self.fit_iterator = fit_iterator
        self.cache_option = cache
        self.augmented_views = augmented_views
        self.random_stem = False  # Set by `check_random_stem`.
        # Why the input's randomness is unknown, until warned (when the
        # stem is first cached).
        self.input_note = None
        self.data_steps = None  # Batches of a dataset of unknown length.
        self.steps_per_epoch = None  # Steps `fit` announced, if any.
        self.function = None  # The `train_step.TrainFunction`.

    @property
    def known_steps(self):
        """The steps of this fit's epochs, once known; else `None`.

        `fit` tells callbacks the steps per epoch unless the data are of
        unknown length; those are counted in their first full pass.
        """
        return self.steps_per_epoch or self.data_steps

    def refusal(self):
        """Returns why features cannot be cached in this fit, or None."""
        if self.cache_option == "off":
            return "cache='off': the frozen stem runs forward every epoch"
        if self.fit_iterator is None:
            return (
                "the input of this fit call could not be inspected, so the "
                "stem runs forward every epoch"
            )
        steps = self.known_steps
        data_batches = keras_internals.data_batches(self.fit_iterator)
        if steps and steps != data_batches:
            return (
                f"steps_per_epoch={steps} does not cover the training data "
                f"exactly once per epoch (it has {data_batches} batches), "
                "so cached features would replay the same batches; the stem "
                "runs forward every epoch. Pass a finite dataset without "
                "`steps_per_epoch` to use the cache"
            )
        return None

    def refuse(self, reason):
        # Asked for with `cache='off'`: no need to warn.
        super().refuse(reason, self.cache_option != "off")

    def views_wanted(self):
        return self.augmented_views if self.random_stem else 1

    def mode(self, stem):
        """Decides how the coming epoch runs with a stem of `stem` units."""
        if stem == 0:
            return "full"
        if self.note is not None:
            if self.note not in self.history.notes:
                self.refuse(self.note)
            return "stem_forward"
        if self.cache is not None and len(self.cache.views) >= max(
            1, self.views_wanted()
        ):
            return "replay"
        return "fill"

    def begin_epoch(self, epoch, stem, seed, strategy):
        """Sets the coming epoch's mode (and replay order) on `function`."""
        mode = self.mode(stem)
        view = indices = None
        if mode == "replay":
            view = self.cache.view_for_epoch(epoch)
            indices = self.cache.index_batches(epoch, seed, strategy)
            self.pause_input(True)
        self.function.begin_epoch(mode, view, indices)

    def end_epoch(self, stop_training):
        """Ends an epoch: counts the data, finishes or drops a fill."""
        function = self.function
        self.pause_input(False)
        if function.exhausted and function.mode != "replay":
            self.data_steps = function.steps
        if function.mode != "fill" or self.cache is None:
            return
        expected = self.known_steps
        complete = function.exhausted or (
            expected is not None and function.steps >= expected
        )
        if complete and not stop_training:
            self.cache.finish_view()
        else:
            self.cache.discard_pending()

    def store(self, features, y, sample_weight, strategy):
        """Fills the cache with one step's batch (per-replica values)."""
        parts = [
            strategy.experimental_local_results(t) if t is not None else None
            for t in (features, y, sample_weight)
        ]
        if self.cache is None:
            self.cache = stem_cache.StemCache(
                self.cache_dtype,
                self.budget.bytes,
                stem_cache.default_device(),
            )
        try:
            self.cache.add_replica_parts(
                *parts,
                replicas=strategy.num_replicas_in_sync,
                steps_per_epoch=self.known_steps,
                views=max(1, self.views_wanted()),
            )
        except stem_cache.CacheBudgetExceeded as error:
            self.refuse(f"{error}; the stem runs forward instead")
            self.function.mode = "stem_forward"

    def grow(self, old_stem, new_stem, step):
        """Moves the cache to the new cut; returns the samples run there.

        Args:
            old_stem, new_stem: Integers. The cut before and after.
            step: The `train_step.HeadStep` of the new cut.

        Returns:
            Integer. Samples the newly frozen units ran over (their forward
            FLOPs count in this epoch).
        """
        if self.cache is None:
            return 0
        if not self.cache.views:
            self.cache = None
            return 0
        self.cache.discard_pending()
        dtype = step.chain.cut_tensor(old_stem).dtype

        def run_new_units(features):
            return step.run_stem(tf.cast(features, dtype), old_stem, new_stem)

        try:
            self.cache.extend(
                train_step.AnyBatchFunction(
                    run_new_units, reduce_retracing=True, autograph=False
                ),
                self.cache.batch_size,
            )
        except stem_cache.CacheBudgetExceeded as error:
            self.refuse(f"{error}; the stem runs forward instead")
            return 0
        return self.cache.num_samples * len(self.cache.views)

    def check_random_stem(self, stem, random_stem, stem_dropout):
        """Refuses one cached view of a stem that draws random numbers."""
        self.random_stem = random_stem
        if (
            stem
            and self.note is None
            and random_stem
            and not (self.augmented_views)
        ):
            hint = ""
            if stem_dropout == "train":
                hint = (
                    ", or `stem_dropout='inference'` to switch a frozen "
                    "stem's dropout and noise off"
                )
            self.refuse(
                "the stem draws random numbers in training (random "
                "augmentation or dropout, or random training inputs), so "
                "one cached view would be wrong; the stem runs forward "
                "every epoch. Pass `augmented_views=K` to cache K views" + hint
            )
        if (
            self.input_note is not None
            and stem
            and self.note is None
            and not random_stem
        ):
            warnings.warn(f"LearnDrop: {self.input_note}.", stacklevel=3)
            self.input_note = None

    def pause_input(self, paused):
        """Stops (or restarts) the input pipeline of `fit` for an epoch.

        A replay epoch never reads `fit`'s iterator, but Keras still creates
        it at the start of each epoch, which starts prefetching (reading and
        decoding) batches. An empty stand-in avoids that work.
        """
        if self.fit_iterator is not None:
            keras_internals.pause_fit_input(self.fit_iterator, paused)


class ValidationFeatures(StemFeatures):
    """The stem's features of the validation data of `fit`, in order.

    Args:
        history, budget, cache_dtype: As `StemFeatures`.
        model: The compiled Keras model.
        model: The compiled Keras model.

    Attributes:
        mode: How the last validation ran: `""` (none), `"full"`, `"fill"`
            or `"replay"`.
    """

    def __init__(self, history, budget, cache_dtype, model):
        super().__init__(history, budget, cache_dtype)
        self.model = model
        self.function = validation.ValidationFunction(model, self.store)
        self.mode = ""
        self._iterator = None
        self._keras_function = None

    def begin(self, stem, step, refusal):
        """Serves a validation of `fit` with a stem of `stem` units.

        Args:
            stem: Integer. Frozen units.
            step: The `train_step.HeadStep` of that cut.
            refusal: String or `None`: a reason of the caller not to cache.
        """
        iterator = keras_internals.fit_validation_iterator(self.model)
        if iterator is None:
            return  # A user's own `evaluate`: the whole model runs.
        self.mode = "full"
        if stem == 0:
            return
        note = self.note or refusal or _batches_refusal(iterator)
        if note is not None:
            self.history.note(note)
            return
        cache = self.cache
        if cache is not None and cache.complete and cache.cut == stem:
            mode = "replay"
            keras_internals.pause_fit_input(iterator, True)
        else:
            mode = "fill"
            self.cache = cache = validation.ValidationCache(
                stem, self.cache_dtype, self.model.distribute_strategy
            )
        self._iterator = iterator
        self.function.begin(mode, step, cache)
        self._keras_function = keras_internals.install_test_function(
            self.model, self.function
        )
        self.mode = mode

    def end(self):
        """Ends a validation: a complete fill is kept, else dropped."""
        function = self.function
        if not function.active:
            return
        self.release()
        cache = self.cache
        if function.mode != "fill" or cache is None:
            return
        expected = [
            n
            for n in (
                self._iterator.num_batches,
                keras_internals.data_batches(self._iterator),
            )
            if n
        ]
        cache.complete = function.exhausted or (
            bool(expected) and function.steps >= min(expected)
        )
        if not cache.complete:
            self.cache = None

    def release(self):
        """Gives `evaluate` Keras's own test function back."""
        function = self.function
        if not function.active:
            return
        function.end()
        if self.model.test_function is function:
            keras_internals.install_test_function(
                self.model, self._keras_function
            )
        self._keras_function = None
        keras_internals.pause_fit_input(self._iterator, False)

    def store(self, features, y, sample_weight):
        """Adds a batch to the cache; False stops storing."""
        try:
            self.cache.add(features, y, sample_weight)
        except tf.errors.ResourceExhaustedError:
            self.refuse(
                "the device ran out of memory for the cached validation "
                "features; the whole model validates"
            )
            return False
        return self.fits("the cached training and validation features")

    def fits(self, features):
        """Whether both caches fit the budget; if not, refuses this one.

        Args:
            features: String. What needs the bytes, for the note.
        """
        if self.budget.used() <= self.budget.bytes:
            return True
        self.refuse(
            f"{features} need more than the budget of "
            f"{self.budget.bytes / 2**20:.1f} MiB; the whole model "
            "validates. Raise `memory_budget` or lower `cache_dtype` to "
            "cache them"
        )
        return False

    def grow(self, old_stem, new_stem, chain):
        """Moves a complete cache to the new cut; drops any other."""
        cache = self.cache
        if cache is None or not cache.complete or cache.cut != old_stem:
            self.cache = None
            return
        dtype = chain.cut_tensor(old_stem).dtype

        def run_new_units(features):
            features = tf.cast(features, dtype)
            return chain.forward(features, old_stem, new_stem, False)

        try:
            cache.extend(run_new_units, new_stem)
        except tf.errors.ResourceExhaustedError:
            self.refuse(
                "the device ran out of memory for the cached validation "
                "features at the new cut; the whole model validates"
            )
            return
        self.fits("the cached features at the new cut")


def validation_refusal(stem_layers, cache_validation, cache):
    """Why the validation of a stem of these layers cannot be cached.

    Args:
        stem_layers: The frozen layers.
        cache_validation, cache: LearnDrop's arguments.

    Returns:
        A string, or `None` when nothing stands in the way.
    """
    if not cache_validation:
        return "cache_validation=False: the whole model validates"
    if cache == "off":
        return "cache='off': the whole model validates"
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
    return None


def _batches_refusal(iterator):
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
