"""Validation inside `fit` on cached stem features.

A frozen stem runs in inference mode when `fit` validates, so it computes
the same features of the validation data every epoch. The first validation
after a freeze runs the whole model and keeps the stem's output of every
batch (**fill**); later validations run the head alone on them, in the same
order (**replay**), and never read the validation data. When the stem
grows, `ValidationCache.extend` runs only the newly frozen units over the
cached batches, in inference mode.

`ValidationFunction` is `model.test_function` while `fit` validates (the
callback installs it in `on_test_begin` and puts Keras's own back in
`on_test_end`); any other `evaluate` runs Keras's own function on the whole
model.
"""

from keras_learndrop import stem_cache
from keras_learndrop import train_step
from keras_learndrop.backend import tf

VALIDATION_MODES = ("fill", "replay")


def _nbytes(structure, strategy):
    return sum(
        stem_cache.tensor_nbytes(part)
        for tensor in tf.nest.flatten(structure)
        for part in strategy.experimental_local_results(tensor)
    )


class ValidationCache:
    """The stem's features of each validation batch, in order, at one cut.

    Args:
        cut: Integer. Number of frozen leading units the features come
            after.
        dtype: String. Dtype of the stored features.
        strategy: The model's `tf.distribute.Strategy`: batches are kept as
            its per-replica values, where the replicas computed them.
    """

    def __init__(self, cut, dtype, strategy):
        self.cut = cut
        self.dtype = tf.as_dtype(dtype)
        self.strategy = strategy
        self.batches = []
        self.complete = False
        self.nbytes = 0

    def add(self, features, y, sample_weight):
        """Stores one batch (per-replica values); returns its bytes."""
        features = self.strategy.run(
            lambda t: tf.cast(t, self.dtype), args=(features,)
        )
        batch = (features, y, sample_weight)
        size = _nbytes([t for t in batch if t is not None], self.strategy)
        self.batches.append(batch)
        self.nbytes += size
        return size

    def extend(self, run_units, new_cut):
        """Moves every batch to the deeper cut `new_cut`.

        Args:
            run_units: Callable mapping a batch of features at `self.cut`
                to features at `new_cut`, on one replica (it runs only the
                newly frozen units, in inference mode).
            new_cut: Integer. The new cut.
        """
        step = train_step.AnyBatchFunction(
            lambda f: self.strategy.run(
                lambda t: tf.cast(run_units(t), self.dtype), args=(f,)
            ),
            reduce_retracing=True,
            autograph=False,
        )
        batches = [(step(f), y, w) for f, y, w in self.batches]
        self.batches = batches
        self.nbytes = sum(
            _nbytes([t for t in b if t is not None], self.strategy)
            for b in batches
        )
        self.cut = new_cut


class ValidationFunction(train_step.ExecutionLoop):
    """The callable that `evaluate` calls as `model.test_function` in `fit`.

    Args:
        model: The compiled Keras model.
        on_batch: Callable receiving `(features, y, sample_weight)` of every
            batch in `"fill"` mode, as per-replica values. It returns False
            to stop storing (the rest of the pass still validates).

    Attributes:
        mode: String, one of `VALIDATION_MODES`.
        step: The `train_step.HeadStep` of the current cut.
        cache: The `ValidationCache` replayed in `"replay"` mode.
        steps: Integer. Batches validated since `begin`.
        exhausted: Boolean. Whether the validation data ran out in this
            pass (a dataset of unknown length).
        active: Boolean. Between `begin` and `end`; outside them calls go
            to Keras's own test function.
    """

    def __init__(self, model, on_batch):
        self.model = model
        self.on_batch = on_batch
        self.mode = "fill"
        self.step = None
        self.cache = None
        self.active = False
        self.steps = 0
        self.exhausted = False
        self._storing = False

    def begin(self, mode, step, cache):
        """Prepares one validation pass in `mode`."""
        if mode not in VALIDATION_MODES:
            raise ValueError(f"Unknown validation mode: {mode!r}.")
        self.mode = mode
        self.step = step
        self.cache = cache
        self.steps = 0
        self.exhausted = False
        self._storing = mode == "fill"
        self.active = True

    def end(self):
        """Ends the pass: later calls run Keras's own test function."""
        self.active = False

    def __call__(self, iterator):
        if not self.active:
            # A `fit` that stopped with an exception inside validation left
            # this function in `model.test_function`.
            self.model.make_test_function(force=True)
            return self.model.test_function(iterator)
        return self._run_execution(iterator)

    def _after_step(self):
        self.steps += 1

    def _one_step(self, iterator):
        if self.mode == "replay":
            if self.steps >= len(self.cache.batches):
                raise StopIteration
            batch = self.cache.batches[self.steps]
            return train_step.call_step(self.step, "eval_replay_step", *batch)
        data = next(iterator)
        logs, stored = train_step.call_step(self.step, "eval_stem_step", data)
        if self._storing:
            self._storing = self.on_batch(*stored)
        return logs
