"""Loads the image classification data of the examples and benchmarks.

`load_dataset` is the one loader the example runners and benchmarks share.
It returns a `Dataset` of in-memory NumPy arrays: float32 images in [0, 1]
of shape `(samples, height, width, channels)` and int32 labels. The data
sets used here fit in memory (CIFAR-10's 50,000 training images take 600 MB
as float32), and learndrop profits from in-memory data: once it freezes the
first layers of a model it computes their output for every training sample
once and trains the rest of the model on those cached features, which is
simplest and fastest when the samples are an array rather than a stream.

The data can come from (see `DATASET_HELP`):

- `"digits"`: the 1,797 8x8 grey hand-written digits that scikit-learn
  ships inside its wheel (`sklearn.datasets.load_digits`); needs nothing
  but scikit-learn.
- `"mnist"`, `"cifar10"`, `"imagenette"`: tensorflow-datasets, read from a
  data directory prepared beforehand (nothing is downloaded here).
- `"folder:PATH"`: an image folder `PATH/CLASS/FILE`, or
  `PATH/train/CLASS/FILE` with an optional `PATH/test/CLASS/FILE`.
- `"shared:mnist"`, `"shared:cifar10"`: the archives kept for machines
  without internet in the `shared/data` folder beside the repository. They
  are extracted once into a cache folder, decoded through the `folder:`
  loader, and the decoded images are cached as a `.npz` file next to the
  extracted folder, so that later loads take about a second.
"""

import dataclasses
import hashlib
import numbers
import os
import shutil
import tarfile
import tempfile
import time
import warnings

import numpy as np
from absl import logging
from PIL import Image

from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

DEFAULT_SHARED_DIR = os.path.join(os.path.dirname(_REPO_ROOT), "shared", "data")
SHARED_DIR_ENV = "LEARNDROP_SHARED_DATA"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "keras_learndrop")

DATASET_HELP = (
    "Data set. 'digits': scikit-learn's 1,797 real 8x8 grey digits, needs "
    "no download. 'mnist', 'cifar10', 'imagenette': tensorflow-datasets, "
    "prepared beforehand in --data_dir (never downloaded here). "
    "'shared:mnist', 'shared:cifar10': the archives in ../shared/data (or "
    f"${SHARED_DIR_ENV}), extracted once into a cache folder (--data_dir, "
    "default ~/.cache/keras_learndrop). 'folder:PATH': an image folder "
    "PATH/CLASS/FILE or PATH/train/CLASS/FILE with an optional "
    "PATH/test/CLASS/FILE."
)

# Spec -> (tensorflow-datasets name, split used for validation, image size
# used when none is given: None keeps the stored size).
_TFDS = {
    "mnist": ("mnist", "test", None),
    "cifar10": ("cifar10", "test", None),
    # The 160px version stores images with a shorter side of 160 pixels;
    # they differ in size, so they are always cropped and resized.
    "imagenette": ("imagenette/160px-v2", "validation", (160, 160)),
}


@dataclasses.dataclass(frozen=True)
class _SharedArchive:
    filename: str
    sha256: str
    description: str


_SHARED = {
    "cifar10": _SharedArchive(
        "cifar10-train-jpeg.tar.gz",
        "539a2defbe73f0e301e27c4ad6d0e5710c50a675f4bba542b3bc662ae55ed329",
        "the 50,000 CIFAR-10 training images re-encoded as JPEG "
        "(no test split: validation is held out from them)",
    ),
    "mnist": _SharedArchive(
        "mnist10k-png.tar.gz",
        "395da4a82b4c4d5e653b9d7395c629084f51628f1ff4bdfa1038c809f7cda924",
        "the 10,000 MNIST test-set images as PNG "
        "(indices 0-7999 train, 8000-9999 test)",
    ),
}

_VALIDATION_FOLDERS = ("test", "val", "validation")
_IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
# Bump when the layout of the cached .npz files changes.
_NPZ_FORMAT = 1
_BATCH = 512


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image classification data set held in NumPy arrays.

    Attributes:
        x_train: float32 array `(samples, height, width, channels)`, values
            in [0, 1].
        y_train: int32 array `(samples,)` of labels in
            `[0, num_classes)`.
        x_val: float32 array of validation images, like `x_train`.
        y_val: int32 array of validation labels.
        num_classes: Integer. Number of classes.
        input_shape: Tuple `(height, width, channels)` of one image.
        name: String. Short name of the data set, e.g. `"cifar10"`.
        source: String saying where the data came from, for logs and
            benchmark reports.
        class_names: Tuple of strings, the name of each label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str
    source: str
    class_names: tuple = ()

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, train={self.x_train.shape}, "
            f"val={self.x_val.shape}, num_classes={self.num_classes}, "
            f"source={self.source!r})"
        )


def load_dataset(
    spec,
    *,
    data_dir=None,
    image_size=None,
    validation_split=0.1,
    max_train=None,
    max_val=None,
    seed=0,
    shared_dir=None,
):
    """Loads an image classification data set into NumPy arrays.

    Data sets without a validation split of their own (`"digits"`,
    `"shared:cifar10"`, a `folder:` without a `test/` folder) hold out
    `validation_split` of their samples, stratified by class and chosen by
    `seed`. The returned training and validation samples are in a random
    order fixed by `seed`.

    Args:
        spec: String, which data set to load; one of `"digits"`,
            `"mnist"`, `"cifar10"`, `"imagenette"`, `"shared:mnist"`,
            `"shared:cifar10"` or `"folder:PATH"`. See `DATASET_HELP`.
        data_dir: String or `None`. For the tensorflow-datasets specs, the
            data directory where the data set was prepared (`None`: the
            tensorflow-datasets default, `~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`). For the `shared:` specs, the cache folder
            into which the archive is extracted (`None`:
            `~/.cache/keras_learndrop`); each data set gets its own
            subfolder, which must not lie inside the repository. Not used
            by the other specs. Defaults to `None`.
        image_size: `None`, an integer or a tuple `(height, width)`. If
            given, images are center-cropped to the aspect ratio of
            `image_size` and resized (bilinear, `tf.image.resize`) to it.
            `"imagenette"` images differ in size and default to 160x160.
            Defaults to `None`.
        validation_split: Float in [0, 1). Fraction of the samples held out
            for validation where the data set has no validation split of
            its own; ignored otherwise. Defaults to `0.1`.
        max_train: Positive integer or `None`. Keep a random subset of at
            most this many training samples, for quick runs. Defaults to
            `None` (all).
        max_val: Positive integer or `None`. The same for the validation
            samples. Defaults to `None` (all).
        seed: Integer or `None`. Seeds the validation hold-out, the subsets
            and the order of the samples. Defaults to `0`.
        shared_dir: String or `None`. Folder holding the archives of the
            `shared:` specs. `None` means `$LEARNDROP_SHARED_DATA` if set,
            else the `shared/data` folder beside the repository. Defaults
            to `None`.

    Returns:
        A `Dataset`.

    Raises:
        TypeError: if `spec` is not a string.
        ValueError: if `spec` names no known data set, if a folder or
            archive is missing or holds no images, if a tensorflow-datasets
            data set was not prepared in `data_dir`, or if another argument
            is out of range.

    Example:

    >>> data = load_dataset("digits", max_train=100, seed=0)
    >>> data.x_train.shape, data.x_val.shape
    ((100, 8, 8, 1), (180, 8, 8, 1))
    >>> data.num_classes
    10
    """
    if not isinstance(spec, str):
        raise TypeError(
            "`spec` must be a string such as 'digits' or 'folder:PATH'. "
            f"Received: spec={spec!r} of type {type(spec).__name__}"
        )
    image_size = _check_image_size(image_size)
    if (
        not isinstance(validation_split, numbers.Real)
        or isinstance(validation_split, bool)
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            "`validation_split` must be a number in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    for arg_name, value in (("max_train", max_train), ("max_val", max_val)):
        if value is not None and not _is_positive_int(value):
            raise ValueError(
                f"`{arg_name}` must be a positive integer or None. "
                f"Received: {arg_name}={value!r}"
            )
    if seed is not None and (
        not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
    ):
        raise ValueError(
            f"`seed` must be an integer or None. Received: seed={seed!r}"
        )

    kind, has_colon, argument = spec.partition(":")
    if data_dir is not None and (
        spec == "digits" or (has_colon and kind == "folder")
    ):
        warnings.warn(
            f"`data_dir` is only used by the tensorflow-datasets specs "
            f"({', '.join(_TFDS)}) and the shared: specs; it is ignored "
            f"for spec={spec!r}. Received: data_dir={data_dir!r}",
            stacklevel=2,
        )
    if spec == "digits":
        loaded = _load_digits()
    elif spec in _TFDS:
        loaded = _load_tfds(spec, data_dir, image_size)
    elif has_colon and kind == "folder":
        loaded = _load_folder(argument, image_size)
    elif has_colon and kind == "shared" and argument in _SHARED:
        loaded = _load_shared(argument, data_dir, shared_dir)
    else:
        valid = ["digits", *_TFDS, *(f"shared:{n}" for n in _SHARED)]
        raise ValueError(
            f"Unknown data set spec. Expected one of {', '.join(valid)}, or "
            "folder:PATH with PATH an image folder (a path is required "
            f"after 'folder:'). Received: spec={spec!r}"
        )
    return _finish(
        loaded,
        image_size=image_size,
        validation_split=validation_split,
        max_train=max_train,
        max_val=max_val,
        seed=seed,
    )


@dataclasses.dataclass
class _Loaded:
    """Images as stored by a source, before splitting and subsetting.

    Images are uint8 in [0, 255] or float32 in [0, 1]; `x_val` is `None`
    when the source has no validation split of its own.
    """

    name: str
    source: str
    class_names: tuple
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray = None
    y_val: np.ndarray = None


def _finish(loaded, *, image_size, validation_split, max_train, max_val, seed):
    rng = np.random.default_rng(seed)
    if loaded.x_val is None:
        train_idx, val_idx = _stratified_split(
            loaded.y_train, validation_split, rng
        )
        x_val, y_val = loaded.x_train, loaded.y_train
    else:
        train_idx = np.arange(len(loaded.y_train))
        val_idx = np.arange(len(loaded.y_val))
        x_val, y_val = loaded.x_val, loaded.y_val
    train_idx = rng.permutation(train_idx)[:max_train]
    val_idx = rng.permutation(val_idx)[:max_val]

    def take(x, y, idx):
        x = _to_unit_float(x[idx])
        if image_size is not None and x.shape[1:3] != image_size:
            x = _resize(x, image_size)
        return x, y[idx].astype(np.int32)

    x_train, y_train = take(loaded.x_train, loaded.y_train, train_idx)
    x_val, y_val = take(x_val, y_val, val_idx)
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        num_classes=len(loaded.class_names),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=loaded.name,
        source=loaded.source,
        class_names=tuple(loaded.class_names),
    )


def _stratified_split(labels, fraction, rng):
    """Returns `(train_indices, val_indices)`, `fraction` of each class held.

    Each class contributes its share of the validation samples to within
    one sample, and the total is exactly `round(fraction * len(labels))`
    (at least one sample for a positive `fraction`, and at least one left
    for training).
    """
    n = len(labels)
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if n < 2:
        raise ValueError(
            "Cannot hold out a validation split from fewer than 2 samples. "
            "Add images, or pass validation_split=0. "
            f"Received: {n} sample(s), validation_split={fraction}"
        )
    n_val = min(max(1, round(fraction * n)), n - 1)
    order = rng.permutation(n)
    shuffled = labels[order]
    classes, inverse, counts = np.unique(
        shuffled, return_inverse=True, return_counts=True
    )
    rank = np.empty(n)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        rank[members] = np.arange(len(members))
    # The k-th sample of a class of size m gets a key in [k/m, (k+1)/m): the
    # n_val smallest keys then take from every class in proportion to its
    # size, and the random jitter mixes the classes among equal ranks.
    keys = (rank + rng.random(n)) / counts[inverse]
    by_key = order[np.argsort(keys, kind="stable")]
    return by_key[n_val:], by_key[:n_val]


def _to_unit_float(images):
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    return images.astype(np.float32, copy=False)


def _center_crop_box(height, width, size):
    """Largest centered (top, left, height, width) box of `size`'s aspect."""
    crop_h = min(height, width * size[0] // size[1])
    crop_w = min(width, height * size[1] // size[0])
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _resize(images, size):
    """Center-crops float images to `size`'s aspect ratio and resizes."""
    top, left, crop_h, crop_w = _center_crop_box(*images.shape[1:3], size)
    images = images[:, top : top + crop_h, left : left + crop_w]
    out = np.empty((len(images), *size, images.shape[-1]), np.float32)
    # In chunks, so that TensorFlow holds only one chunk at a time.
    for start in range(0, len(images), _BATCH):
        chunk = tf.image.resize(images[start : start + _BATCH], size)
        out[start : start + _BATCH] = np.clip(chunk.numpy(), 0.0, 1.0)
    return out


def _to_uint8(images):
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _load_digits():
    import sklearn
    from sklearn import datasets as sk_datasets

    digits = sk_datasets.load_digits()
    # Pixel values are counts of set bits in 4x4 blocks, 0 to 16.
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    return _Loaded(
        name="digits",
        source=(
            f"scikit-learn {sklearn.__version__} load_digits: "
            f"{len(images):,} real 8x8 grey hand-written digits (UCI "
            "optical recognition of hand-written digits) shipped with "
            "scikit-learn"
        ),
        class_names=tuple(str(n) for n in digits.target_names),
        x_train=images,
        y_train=digits.target.astype(np.int32),
    )


def _load_tfds(spec, data_dir, image_size):
    import tensorflow_datasets as tfds

    tfds_name, val_split, default_size = _TFDS[spec]
    size = image_size or default_size
    try:
        splits, info = tfds.load(
            tfds_name,
            split=["train", val_split],
            data_dir=data_dir,
            download=False,
            as_supervised=True,
            with_info=True,
        )
    except AssertionError as error:
        # tensorflow-datasets asserts that the prepared files exist.
        shown_dir = data_dir or "the default ~/tensorflow_datasets"
        raise ValueError(
            f"The tensorflow-datasets data set {tfds_name!r} is not prepared "
            f"in {shown_dir}, and nothing is "
            "downloaded here. Prepare it on a machine with internet access "
            f"with `tfds build {tfds_name} --data_dir=DIR` and copy DIR "
            "here, then pass data_dir=DIR (or set TFDS_DATA_DIR); or use "
            "the offline specs 'shared:mnist', 'shared:cifar10' or "
            f"'folder:PATH'. Original error: {error}"
        ) from error

    def to_uint8_size(image, label):
        image = _tf_crop_and_resize(image, size)
        image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
        return tf.cast(image, tf.uint8), label

    arrays = []
    for ds in splits:
        if size is not None:
            ds = ds.map(to_uint8_size, num_parallel_calls=tf.data.AUTOTUNE)
        arrays.append(_collect(ds.batch(_BATCH).prefetch(2)))
    (x_train, y_train), (x_val, y_val) = arrays
    return _Loaded(
        name=spec,
        source=(
            f"tensorflow-datasets {tfds_name!r} {info.version} "
            f"(train / {val_split}) from {data_dir or 'the default data dir'}"
        ),
        class_names=tuple(info.features["label"].names),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
    )


def _tf_crop_and_resize(image, size):
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    crop_h = tf.minimum(height, width * size[0] // size[1])
    crop_w = tf.minimum(width, height * size[1] // size[0])
    image = tf.image.crop_to_bounding_box(
        image, (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
    )
    return tf.image.resize(image, size)


def _collect(ds):
    """Concatenates a batched `(images, labels)` dataset into arrays."""
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x if x.dtype == np.uint8 else _to_uint8(x))
        labels.append(y.astype(np.int32))
    if not images:
        raise ValueError(f"The data set {ds} holds no images.")
    return np.concatenate(images), np.concatenate(labels)


def _load_folder(path, image_size):
    if not path:
        raise ValueError(
            "The spec 'folder:PATH' needs the path of an image folder after "
            "'folder:'. Received: spec='folder:'"
        )
    path = os.path.expanduser(path)
    x_train, y_train, x_val, y_val, class_names = _read_image_folder(
        path, image_size
    )
    return _Loaded(
        name=os.path.basename(os.path.normpath(path)),
        source=f"image folder {os.path.abspath(path)}",
        class_names=class_names,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
    )


def _read_image_folder(path, image_size):
    """Reads an image folder into uint8 arrays.

    Args:
        path: String. A folder `CLASS/FILE`, or `train/CLASS/FILE` with an
            optional validation folder named one of `_VALIDATION_FOLDERS`.
        image_size: `None` or `(height, width)`. `None` keeps the size of
            the first image (images of other sizes are cropped and resized).

    Returns:
        A tuple `(x_train, y_train, x_val, y_val, class_names)`; `x_val`
        and `y_val` are `None` without a validation folder. The images are
        in file order, labels follow the alphabetical order of the class
        folders.
    """
    if not os.path.isdir(path):
        raise ValueError(
            "The image folder does not exist or is not a directory. Pass "
            "folder:PATH with PATH a folder of CLASS/FILE or "
            f"train/CLASS/FILE images. Received: path={path!r}"
        )
    train_dir, val_dir = path, None
    if os.path.isdir(os.path.join(path, "train")):
        train_dir = os.path.join(path, "train")
        for name in _VALIDATION_FOLDERS:
            if os.path.isdir(os.path.join(path, name)):
                val_dir = os.path.join(path, name)
                break
    class_names = sorted(
        entry.name for entry in os.scandir(train_dir) if entry.is_dir()
    )
    first = _first_image(train_dir, class_names)
    if first is None:
        raise ValueError(
            f"Found no images ({', '.join(_IMAGE_EXTENSIONS)}) in class "
            f"folders of {train_dir!r}. An image folder holds CLASS/FILE or "
            f"train/CLASS/FILE. Received: path={path!r}"
        )
    with Image.open(first) as image:
        mode = image.mode
        size = image_size or (image.height, image.width)
    color_mode = "grayscale" if mode in _GREY_MODES else "rgb"
    arrays = []
    for directory in (train_dir, val_dir):
        if directory is None:
            arrays.extend([None, None])
            continue
        start = time.perf_counter()
        ds = keras.utils.image_dataset_from_directory(
            directory,
            labels="inferred",
            label_mode="int",
            class_names=class_names,
            color_mode=color_mode,
            batch_size=_BATCH,
            image_size=size,
            shuffle=False,
            crop_to_aspect_ratio=True,
            verbose=False,
        )
        x, y = _collect(ds.prefetch(2))
        logging.info(
            "Read %d images of %d classes from %s in %.1f s.",
            len(x),
            len(class_names),
            directory,
            time.perf_counter() - start,
        )
        arrays.extend([x, y])
    return (*arrays, tuple(class_names))


def _first_image(directory, class_names):
    for class_name in class_names:
        for root, _, files in os.walk(os.path.join(directory, class_name)):
            for filename in sorted(files):
                if filename.lower().endswith(_IMAGE_EXTENSIONS):
                    return os.path.join(root, filename)
    return None


def _load_shared(name, data_dir, shared_dir):
    archive = _SHARED[name]
    cache_dir = os.path.join(
        os.path.expanduser(data_dir or DEFAULT_CACHE_DIR), name
    )
    real_cache = os.path.realpath(cache_dir)
    if real_cache == _REPO_ROOT or real_cache.startswith(_REPO_ROOT + os.sep):
        raise ValueError(
            "The cache folder of the shared: data sets must lie outside the "
            f"repository ({_REPO_ROOT}), which must not hold data. Pass "
            "another data_dir, e.g. a temporary folder or None for "
            f"{DEFAULT_CACHE_DIR}. Received: data_dir={data_dir!r}"
        )
    image_dir = os.path.join(cache_dir, "images")
    npz_path = os.path.join(cache_dir, f"{name}-uint8.npz")
    cached = _read_npz(npz_path, archive)
    if cached is not None:
        x_train, y_train, x_val, y_val, class_names = cached
        how = f"decoded images cached in {npz_path}"
    else:
        if not os.path.isdir(image_dir):
            _extract(archive, _find_archive(archive, shared_dir), image_dir)
        x_train, y_train, x_val, y_val, class_names = _read_image_folder(
            image_dir, None
        )
        _write_npz(
            npz_path, archive, x_train, y_train, x_val, y_val, class_names
        )
        how = f"decoded from {image_dir}, now cached in {npz_path}"
    return _Loaded(
        name=name,
        source=f"{archive.filename}: {archive.description}; {how}",
        class_names=class_names,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
    )


def _find_archive(archive, shared_dir):
    if shared_dir is not None:
        where = f"shared_dir={shared_dir!r}"
    elif os.environ.get(SHARED_DIR_ENV):
        shared_dir = os.environ[SHARED_DIR_ENV]
        where = f"${SHARED_DIR_ENV}={shared_dir!r}"
    else:
        shared_dir = DEFAULT_SHARED_DIR
        where = f"the default shared folder {shared_dir!r}"
    path = os.path.join(os.path.expanduser(shared_dir), archive.filename)
    if not os.path.isfile(path):
        raise ValueError(
            f"Cannot find the archive {archive.filename} in {where}. Pass "
            f"shared_dir=, or set ${SHARED_DIR_ENV}, to the folder that holds "
            "it, or load the data through tensorflow-datasets instead "
            f"(spec 'mnist' or 'cifar10'). Received: path={path!r}"
        )
    return path


def _extract(archive, archive_path, image_dir):
    """Checks the archive's sha256 and extracts it to `image_dir`.

    Extracts into a temporary sibling folder first and renames it, so that
    an interrupted or concurrent extraction never leaves a partial
    `image_dir` behind.
    """
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(archive_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != archive.sha256:
        raise ValueError(
            f"The archive {archive_path} is damaged or not the expected "
            f"one: its sha256 is {digest.hexdigest()}, expected "
            f"{archive.sha256}. Restore it from the shared data folder."
        )
    parent = os.path.dirname(image_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".extracting-", dir=parent)
    try:
        with tarfile.open(archive_path, "r:gz") as tar:
            _extract_all(tar, tmp_dir)
        try:
            os.rename(tmp_dir, image_dir)
        except OSError:
            if not os.path.isdir(image_dir):
                raise
            # Another process extracted the same archive meanwhile.
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logging.info(
        "Extracted %s to %s in %.1f s.",
        archive_path,
        image_dir,
        time.perf_counter() - start,
    )


def _extract_all(tar, directory):
    if hasattr(tarfile, "data_filter"):
        tar.extractall(directory, filter="data")
        return
    # Pythons before 3.10.12 have no extraction filters: accept only plain
    # files and folders that stay inside `directory`.
    for member in tar.getmembers():
        parts = member.name.replace("\\", "/").split("/")
        if (
            not (member.isfile() or member.isdir())
            or os.path.isabs(member.name)
            or ".." in parts
        ):
            raise ValueError(
                f"Refusing to extract {member.name!r} from {tar.name}: "
                "only plain files and folders inside the archive are "
                "expected."
            )
    tar.extractall(directory)


def _read_npz(npz_path, archive):
    """The cached arrays, or `None` if absent, stale or unreadable."""
    if not os.path.isfile(npz_path):
        return None
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            if (
                int(npz["format"]) != _NPZ_FORMAT
                or str(npz["archive_sha256"]) != archive.sha256
            ):
                logging.info("Ignoring the stale cache %s.", npz_path)
                return None
            has_val = "x_val" in npz.files
            return (
                npz["x_train"],
                npz["y_train"],
                npz["x_val"] if has_val else None,
                npz["y_val"] if has_val else None,
                tuple(str(c) for c in npz["class_names"]),
            )
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(
            f"Ignoring the unreadable cache {npz_path} and decoding the "
            f"images again: {error}",
            stacklevel=4,
        )
        return None


def _write_npz(npz_path, archive, x_train, y_train, x_val, y_val, names):
    arrays = {
        "format": np.int64(_NPZ_FORMAT),
        "archive_sha256": np.str_(archive.sha256),
        "class_names": np.array(names, dtype=np.str_),
        "x_train": x_train,
        "y_train": y_train,
    }
    if x_val is not None:
        arrays.update(x_val=x_val, y_val=y_val)
    # Written under a temporary name and renamed, so that a reader never
    # sees half a file.
    fd, tmp_path = tempfile.mkstemp(
        prefix=".writing-", suffix=".npz", dir=os.path.dirname(npz_path)
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp_path, npz_path)
    except BaseException:
        os.remove(tmp_path)
        raise


def _check_image_size(image_size):
    if image_size is None:
        return None
    if _is_positive_int(image_size):
        return (int(image_size), int(image_size))
    try:
        size = tuple(image_size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(_is_positive_int(d) for d in size):
        raise ValueError(
            "`image_size` must be None, a positive integer or a tuple of 2 "
            f"positive integers (height, width). Received: "
            f"image_size={image_size!r}"
        )
    return tuple(int(d) for d in size)


def _is_positive_int(value):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value > 0
    )
