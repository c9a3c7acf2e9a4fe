"""The rebuilt training step, and the function `model.fit` calls per step.

Keras 3's `fit` calls `model.train_function(iterator)` once per step (once
per `steps_per_execution` steps) and stops the epoch on `StopIteration`.
`TrainFunction` is installed there. Each epoch runs in one of four modes:

* `"full"`: the whole model trains, as with plain Keras
  (`model.train_step` on the next batch of `iterator`).
* `"stem_forward"`: the frozen stem runs forward only (no tape, no backward
  work); the head trains on its output.
* `"fill"`: as `"stem_forward"`, and every batch of stem outputs goes into
  the `StemCache`.
* `"replay"`: the head trains on cached features in a fresh order; the
  iterator of `fit` is never read, so the stem and the input pipeline do no
  work.

The head step mirrors `keras.Model.train_step` of the TensorFlow backend
(loss through `compute_loss`, loss tracker, `optimizer.scale_loss`,
`apply_gradients`, `compute_metrics`), restricted to the head's variables,
so the optimizer keeps its slots and iteration count and learning-rate
schedules carry on.
"""

import inspect
import warnings

from keras_learndrop import keras_internals
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

EPOCH_MODES = ("full", "stem_forward", "fill", "replay")


def resolve_jit_compile(jit_compile):
    """Resolves `"auto"`: XLA is tried on a GPU, off on a CPU.

    On the CPU of a 2-core machine XLA-compiled convolution steps measured
    slower than TensorFlow's own kernels (docs/results.md, "XLA on a CPU").
    """
    if jit_compile == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return bool(jit_compile)


class AnyBatchFunction:
    """A `tf.function` traced once for every batch size.

    A `tf.function` traces once per input shape, and with
    `reduce_retracing=True` once more at the second shape (an epoch's last,
    smaller batch) with the batch dimension unknown. Every growth of the stem
    builds new steps, so that second trace would come back with each growth.
    This one traces the general form at its first call: each tensor argument
    with its leading dimension unknown (a Keras functional model takes any
    batch size). Values distributed over several replicas keep their shapes
    (`tf.function` generalizes them at the second shape, as before).

    Args:
        python_function: The function to trace.
        **options: Arguments of `tf.function`.
    """

    def __init__(self, python_function, **options):
        self.function = tf.function(python_function, **options)
        self._traced = False

    def __call__(self, *args):
        if not self._traced:
            self.function.get_concrete_function(
                *tf.nest.map_structure(_any_batch_spec, args)
            )
            self._traced = True
        return self.function(*args)

    def tracing_count(self):
        """Returns how many times the function was traced."""
        return self.function.experimental_get_tracing_count()


def _any_batch_spec(value):
    if isinstance(value, tf.Tensor) and value.shape.rank:
        return tf.TensorSpec((None,) + tuple(value.shape[1:]), value.dtype)
    return value


class HeadStep:
    """The `tf.function`s that train the head behind one cut.

    Args:
        model: The compiled Keras model.
        chain: The model's `UnitChain`.
        cut: Integer. Number of frozen leading units.
        jit_compile: Boolean. Whether to XLA-compile the steps.
        stem_dropout: `"train"` runs the stem's `Dropout` and noise layers
            as in training; `"inference"` switches them off (see
            `LearnDrop`). Its image augmentation layers draw either way.
    """

    def __init__(self, model, chain, cut, jit_compile, stem_dropout="train"):
        self.model = model
        self.chain = chain
        self.cut = cut
        self.jit_compile = jit_compile
        self.stem_dropout = stem_dropout
        self.feature_dtype = chain.cut_tensor(cut).dtype
        self._strategy = model.distribute_strategy
        self._build()

    def _build(self):
        # Like Keras's own steps, these run no Python control flow on
        # tensors, so AutoGraph is off (it only slows tracing down).
        options = dict(
            reduce_retracing=True,
            jit_compile=self.jit_compile,
            autograph=False,
        )
        self.full_step = AnyBatchFunction(self._distributed_full, **options)
        self.stem_step = AnyBatchFunction(self._distributed_stem, **options)
        self.replay_step = AnyBatchFunction(self._distributed_replay, **options)
        self.eval_stem_step = AnyBatchFunction(
            self._distributed_eval, **options
        )
        self.eval_replay_step = AnyBatchFunction(
            self._distributed_eval_replay, **options
        )

    def disable_jit(self):
        """Rebuilds the steps without XLA (after a failed compilation)."""
        self.jit_compile = False
        self._build()

    def stem_features(self, x):
        """Runs the frozen stem on inputs `x` (forward only)."""
        x = tf.cast(x, self.chain.input.dtype)
        return tf.stop_gradient(self.run_stem(x, 0, self.cut))

    def run_stem(self, x, start, stop):
        """Runs frozen units `start` to `stop - 1` as training sees them."""
        return self.chain.forward(
            x,
            start,
            stop,
            training=True,
            augmentation_only=self.stem_dropout == "inference",
        )

    def train_head(self, features, y, sample_weight):
        """Trains the head on one batch of stem features; returns logs."""
        model = self.model
        keras_internals.clear_losses(model)
        features = tf.cast(features, self.feature_dtype)
        with tf.GradientTape() as tape:
            y_pred = self.chain.forward(
                features, self.cut, len(self.chain), training=True
            )
            loss = _compute_loss(model, y, y_pred, sample_weight)
            keras_internals.loss_tracker(model).update_state(
                keras_internals.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(features)[0],
            )
            loss = model.optimizer.scale_loss(loss)
        variables = model.trainable_weights
        gradients = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(gradients, variables))
        return model.compute_metrics(None, y, y_pred, sample_weight)

    def evaluate_head(self, features, y, sample_weight):
        """Validates the head on one batch of stem features; returns logs.

        Mirrors `keras.Model.test_step` of the TensorFlow backend.
        """
        model = self.model
        keras_internals.clear_losses(model)
        features = tf.cast(features, self.feature_dtype)
        y_pred = self.chain.forward(
            features, self.cut, len(self.chain), training=False
        )
        loss = _compute_loss(model, y, y_pred, sample_weight, training=False)
        keras_internals.loss_tracker(model).update_state(
            keras_internals.unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(features)[0],
        )
        return model.compute_metrics(None, y, y_pred, sample_weight)

    def _eval_on_replica(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, self.chain.input.dtype)
        features = self.chain.forward(x, 0, self.cut, training=False)
        logs = self.evaluate_head(features, y, sample_weight)
        return logs, (features, y, sample_weight)

    def _distributed_eval(self, data):
        logs, stored = self._strategy.run(self._eval_on_replica, (data,))
        logs = keras_internals.reduce_per_replica(logs, self._strategy)
        return logs, stored

    def _distributed_eval_replay(self, features, y, sample_weight):
        logs = self._strategy.run(
            self.evaluate_head, args=(features, y, sample_weight)
        )
        return keras_internals.reduce_per_replica(logs, self._strategy)

    def _stem_on_replica(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        features = self.stem_features(x)
        logs = self.train_head(features, y, sample_weight)
        return logs, (features, y, sample_weight)

    def _distributed_full(self, data):
        outputs = self._strategy.run(self.model.train_step, args=(data,))
        return keras_internals.reduce_per_replica(outputs, self._strategy)

    def _distributed_stem(self, data):
        logs, stored = self._strategy.run(self._stem_on_replica, (data,))
        logs = keras_internals.reduce_per_replica(logs, self._strategy)
        return logs, stored

    def _distributed_replay(self, features, y, sample_weight, indices):
        def on_replica(batch_indices):
            return self.train_head(
                tf.gather(features, batch_indices),
                None if y is None else tf.gather(y, batch_indices),
                (
                    None
                    if sample_weight is None
                    else tf.gather(sample_weight, batch_indices)
                ),
            )

        logs = self._strategy.run(on_replica, args=(indices,))
        return keras_internals.reduce_per_replica(logs, self._strategy)


def _compute_loss(model, y, y_pred, sample_weight, training=True):
    """Calls `model.compute_loss` as Keras's `train_step`/`test_step` do.

    `training` is passed only where an override of `compute_loss` takes it.
    """
    kwargs = {}
    if "training" in inspect.signature(model.compute_loss).parameters:
        kwargs["training"] = training
    return model.compute_loss(None, y, y_pred, sample_weight, **kwargs)


class ExecutionLoop:
    """Runs up to `steps_per_execution` steps per call, as Keras's do.

    Subclasses define `model`, `exhausted`, `_one_step(iterator)` and
    `_after_step()`. A call ends early when the input runs out (setting
    `exhausted`), and raises `StopIteration` if it ran no step at all.
    """

    def _run_execution(self, iterator):
        logs = None
        for _ in range(self.model.steps_per_execution):
            try:
                logs = self._one_step(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                self.exhausted = True
                if logs is None:
                    raise StopIteration from None
                break
            self._after_step()
        return logs


class TrainFunction(ExecutionLoop):
    """The callable that `model.fit` calls as `model.train_function`.

    Args:
        model: The compiled Keras model.
        on_batch: Callable receiving `(features, y, sample_weight)` of every
            batch in `"fill"` mode, as per-replica tuples.
        on_release: Callable or `None`, called once by `release()`: it gives
            the model back to the user (restores `trainable` flags). Until
            then `model.compile` releases first, so that a model recompiled
            after a crashed `fit` has its own flags.
        epoch_iterator: The `EpochIterator` of the `fit` call this function
            serves, or `None` when it is unknown.

    Attributes:
        mode: String, one of `EPOCH_MODES`.
        step: The `HeadStep` in use (`None` in `"full"` mode before any
            freezing).
        on_step: Callable or `None`, called after every training step with
            the number of steps run in this epoch (LearnDrop samples the
            weights there).
        samples: Integer. Training samples processed since `begin_epoch`.
        exhausted: Boolean. Whether the input ran out during this epoch.
        active: Boolean. False after `release()`: calls go to Keras's own
            training step.
    """

    def __init__(self, model, on_batch, on_release=None, epoch_iterator=None):
        self.model = model
        self.on_batch = on_batch
        self.on_release = on_release
        self.epoch_iterator = epoch_iterator
        self.mode = "full"
        self.step = None
        self.on_step = None
        self.active = True
        self._last_iterator = None
        self._replay_view = None
        self._replay_indices = None
        self.begin_epoch("full")
        # A fit that ended with an exception never reaches `on_train_end`,
        # so the layers stay frozen until something gives them back: the
        # next `fit` (see `__call__`), or a `compile`, which would otherwise
        # drop this function with the flags still frozen.
        self._compile_hook = self._compile_after_release
        vars(model)["compile"] = self._compile_hook

    def begin_epoch(self, mode, view=None, indices=None):
        """Sets the mode of the coming epoch (and its replay order)."""
        if mode not in EPOCH_MODES:
            raise ValueError(f"Unknown epoch mode: {mode!r}.")
        self.mode = mode
        self._replay_view = view
        self._replay_indices = indices
        self.samples = 0
        self.steps = 0
        self.exhausted = False

    def release(self):
        """Hands the model back to Keras's own training step (once)."""
        if self.active:
            self.active = False
            self._last_iterator = self._replay_view = None
            if vars(self.model).get("compile") is self._compile_hook:
                del vars(self.model)["compile"]
            if self.on_release is not None:
                self.on_release()

    def _compile_after_release(self, *args, **kwargs):
        self.release()
        return self.model.compile(*args, **kwargs)

    def __call__(self, iterator):
        if self.active and iterator is not self._last_iterator:
            # Once per epoch (Keras passes one iterator per epoch).
            self._last_iterator = iterator
            if self._called_by_another_fit():
                # A fit that ended with an exception never reached
                # `on_train_end`, so this function stayed in
                # `model.train_function` and a later `fit` without
                # LearnDrop calls it.
                self.release()
        if not self.active:
            self.model.make_train_function(force=True)
            return self.model.train_function(iterator)
        return self._run_execution(iterator)

    def _after_step(self):
        if self.on_step is not None:
            self.on_step(self.steps)

    def _called_by_another_fit(self):
        if self.epoch_iterator is None:
            return False
        running = keras_internals.fit_epoch_iterator(self.model)
        return running is not None and running is not self.epoch_iterator

    def _one_step(self, iterator):
        if self.mode == "replay":
            indices = next(self._replay_indices)
            view = self._replay_view
            logs = self._call(
                "replay_step",
                view.features,
                view.y,
                view.sample_weight,
                indices,
            )
            self._count(indices)
            return logs
        data = next(iterator)
        if self.mode == "full":
            logs = self._call("full_step", data)
        else:
            logs, stored = self._call("stem_step", data)
            if self.mode == "fill":
                self.on_batch(*stored)
        self._count(keras.utils.unpack_x_y_sample_weight(data)[0])
        return logs

    def _call(self, name, *args):
        return call_step(self.step, name, *args)

    def _count(self, batch):
        strategy = self.model.distribute_strategy
        for part in strategy.experimental_local_results(batch):
            self.samples += int(part.shape[0])
        self.steps += 1


def call_step(step, name, *args):
    """Calls the step function `name` of the `HeadStep` `step`.

    Where XLA cannot compile the step (an op without an XLA kernel, say),
    warns once and runs the same step without it.
    """
    try:
        return getattr(step, name)(*args)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        if not step.jit_compile:
            raise
        warnings.warn(
            "XLA compilation of the LearnDrop training step failed; "
            "continuing without XLA. Pass `jit_compile=False` to skip "
            "the attempt.",
            stacklevel=2,
        )
        step.disable_jit()
        return getattr(step, name)(*args)
