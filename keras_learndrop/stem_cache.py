"""Stem features computed once and replayed: the cache behind dropping.

During a **fill** epoch the training step hands every batch of stem outputs
(with its targets and sample weights) to `StemCache.add`; at the end of the
epoch they are joined into one **view** of the training set at the current
cut. Every later epoch **replays** a view: `StemCache.index_batches` yields
the batches of sample indices for that epoch, in a fresh seeded order, of
the same batch size, each sample exactly once. When the stem grows,
`StemCache.extend` runs only the newly frozen units over the cached features
of every view, so the old stem is never run again.

Features are stored in a chosen dtype, within a memory budget, on the GPU
when there is one (on the host when the device runs out of memory).
"""

import dataclasses
import os

import numpy as np

from keras_learndrop import keras_internals
from keras_learndrop.backend import tf

CACHE_DTYPES = ("float32", "float16", "bfloat16")


class CacheBudgetExceeded(Exception):
    """Raised when cached features would not fit in the memory budget."""


def default_memory_budget():
    """Returns half of the host memory available now, in bytes.

    The features of a cut share the host with the input data and the
    model, so the default leaves the other half to them.
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return pages // 4


def default_device():
    """Returns the device where features are cached: the GPU if any."""
    if tf.config.list_logical_devices("GPU"):
        return "/GPU:0"
    return "/CPU:0"


@dataclasses.dataclass
class View:
    """One pass over the training set, seen at the current cut."""

    features: object
    y: object
    sample_weight: object

    @property
    def num_samples(self):
        return int(self.features.shape[0])


def tensor_nbytes(tensor):
    """Bytes held by `tensor` (0 for `None`)."""
    if tensor is None:
        return 0
    return int(np.prod(tensor.shape)) * tensor.dtype.size


class StemCache:
    """Cached stem features of the training set for one `fit` call.

    Args:
        dtype: String. One of `"float32"`, `"float16"`, `"bfloat16"`.
        memory_budget: Integer. Largest number of bytes the cached features,
            targets and sample weights of all views may take.
        device: String. Device where the features are kept.
    """

    def __init__(self, dtype, memory_budget, device):
        self.dtype = tf.as_dtype(dtype)
        self.memory_budget = int(memory_budget)
        self.device = device
        self.views = []
        self.batch_size = 0
        self._pending = []
        self._pending_bytes = 0

    @property
    def nbytes(self):
        """Bytes held by the finished views and the view being filled."""
        return self._pending_bytes + sum(
            tensor_nbytes(v.features)
            + tensor_nbytes(v.y)
            + tensor_nbytes(v.sample_weight)
            for v in self.views
        )

    @property
    def num_samples(self):
        """Samples in one view (0 before the first view is finished)."""
        return self.views[0].num_samples if self.views else 0

    def add_replica_parts(
        self, features, y, sample_weight, replicas, steps_per_epoch, views
    ):
        """Stores one step's batch, given as the parts of the local replicas.

        Each part is stored apart; replay splits its batches among all
        replicas again, so the cache's batch size becomes the global size
        of `fit`'s batches.

        Args:
            features: Sequence of the local replicas' stem outputs.
            y: Sequence of their targets, or `None`.
            sample_weight: Sequence of their sample weights, or `None`.
            replicas: Integer. Replicas in sync (all workers).
            steps_per_epoch: Integer or `None`, when known.
            views: Integer. Number of views that will be cached.

        Raises:
            CacheBudgetExceeded: as `add`.
        """
        count = len(features)
        expected = None if steps_per_epoch is None else steps_per_epoch * count
        for i in range(count):
            self.add(
                features[i],
                None if y is None else y[i],
                None if sample_weight is None else sample_weight[i],
                expected_batches=expected,
                views=views,
            )
        local = sum(int(part.shape[0]) for part in features)
        self.batch_size = max(self.batch_size, local * replicas // count)

    def add(self, features, y, sample_weight, expected_batches=None, views=1):
        """Stores one batch of the view being filled.

        Args:
            features: Tensor of stem outputs, batch first.
            y: Tensor of targets, or `None`.
            sample_weight: Tensor of sample weights, or `None`.
            expected_batches: Integer or `None`. Batches in one epoch, when
                known, to refuse a view that would not fit before filling.
            views: Integer. Number of views that will be cached.

        Raises:
            CacheBudgetExceeded: if the batch (or, when `expected_batches` is
                given, the whole cache) would exceed the memory budget.
        """
        batch = int(features.shape[0])
        self.batch_size = max(self.batch_size, batch)
        try:
            stored = self._place(features, y, sample_weight)
        except tf.errors.ResourceExhaustedError:
            # The accelerator is full: the cache moves to host memory.
            self._move_to("/CPU:0")
            stored = self._place(features, y, sample_weight)
        size = sum(tensor_nbytes(t) for t in stored)
        if expected_batches and not self._pending and not self.views:
            projected = size * expected_batches * views
            self._check_budget(projected)
        self._check_budget(self.nbytes + size)
        self._pending.append(stored)
        self._pending_bytes += size

    def _place(self, features, y, sample_weight):
        with tf.device(self.device):
            return (
                tf.identity(tf.cast(features, self.dtype)),
                None if y is None else tf.identity(y),
                None if sample_weight is None else tf.identity(sample_weight),
            )

    def _move_to(self, device):
        self.device = device

        def move(t):
            return None if t is None else tf.identity(t)

        with tf.device(device):
            self._pending = [tuple(move(t) for t in b) for b in self._pending]
            self.views = [
                View(move(v.features), move(v.y), move(v.sample_weight))
                for v in self.views
            ]

    def _check_budget(self, size):
        if size > self.memory_budget:
            raise CacheBudgetExceeded(
                f"the cached stem features need {size / 2**20:.1f} MiB, "
                f"more than the budget of "
                f"{self.memory_budget / 2**20:.1f} MiB"
            )

    def finish_view(self):
        """Joins the batches added since the last call into one view."""
        if not self._pending:
            raise ValueError("No batches were added to the view.")
        features, ys, weights = zip(*self._pending)
        with tf.device(self.device):
            view = View(
                features=tf.concat(features, axis=0),
                y=None if ys[0] is None else tf.concat(ys, axis=0),
                sample_weight=(
                    None if weights[0] is None else tf.concat(weights, 0)
                ),
            )
        self._pending, self._pending_bytes = [], 0
        self.views.append(view)
        return view

    def discard_pending(self):
        """Drops a view whose fill did not cover a whole epoch."""
        self._pending, self._pending_bytes = [], 0

    def view_for_epoch(self, epoch):
        """Returns the view replayed in `epoch` (views take turns)."""
        return self.views[epoch % len(self.views)]

    def index_batches(self, epoch, seed, strategy):
        """Returns an iterator over the batches of sample indices of `epoch`.

        The order is a permutation drawn from `(seed, epoch)`, so it differs
        between epochs and is the same in a rerun. Each batch is a small
        constant tensor (split over the local replicas of `strategy`, as
        `fit` splits a global batch): an epoch starts and ends no input
        pipeline, so nothing is built or torn down between epochs.

        With several workers each holds its own cache, and the indices of a
        step point into it: a worker's local replicas take their share of a
        global batch from its own permutation.
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(self.num_samples).astype(np.int32)
        replicas = strategy.num_replicas_in_sync
        if replicas == 1:
            for start in range(0, len(order), self.batch_size):
                yield tf.constant(order[start : start + self.batch_size])
            return
        local = len(strategy.extended.worker_devices)
        step = max(1, self.batch_size * local // replicas)
        for start in range(0, len(order), step):
            batch = order[start : start + step]
            parts = np.array_split(batch, local)
            yield strategy.experimental_distribute_values_from_function(
                lambda context, parts=parts: tf.constant(
                    parts[context.replica_id_in_sync_group % local]
                )
            )

    def extend(self, run_units, batch_size):
        """Moves every view to a deeper cut.

        Args:
            run_units: Callable mapping a batch of features at the old cut to
                features at the new cut (it runs only the new units).
            batch_size: Integer. Batch size to run them with.
        """
        self.views = [
            View(
                features=self._map_batches(
                    view.features, run_units, batch_size
                ),
                y=view.y,
                sample_weight=view.sample_weight,
            )
            for view in self.views
        ]
        self._check_budget(self.nbytes)

    def _map_batches(self, features, run_units, batch_size):
        outputs = []
        for start in range(0, int(features.shape[0]), batch_size):
            batch = run_units(features[start : start + batch_size])
            with tf.device(self.device):
                outputs.append(tf.identity(tf.cast(batch, self.dtype)))
        with tf.device(self.device):
            return tf.concat(outputs, axis=0)


def stochastic_layers(layers):
    """Returns the layers whose training-mode output is random.

    Random augmentation (`RandomFlip`, `RandomCrop`, ...), `Dropout` and
    noise layers draw from a `keras.random.SeedGenerator`; a single cached
    view of their output would replay one random draw forever.
    """
    return [layer for layer in layers if keras_internals.seed_generators(layer)]
