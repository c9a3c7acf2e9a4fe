"""Tests for examples/datasets.py."""

import doctest
import os
import shutil
from unittest import mock

import numpy as np
from absl.testing import parameterized
from PIL import Image
from sklearn import datasets as sk_datasets

from examples import datasets
from keras_learndrop.backend import tf

_MNIST_ARCHIVE = os.path.join(
    datasets.DEFAULT_SHARED_DIR, "mnist10k-png.tar.gz"
)

# Solid colors of the classes of the generated RGB folder.
_COLORS = {"cat": (255, 0, 0), "dog": (0, 128, 255), "eel": (40, 200, 90)}


def _write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def _rgb_folder(root, per_class=4, size=(6, 10)):
    """Writes `root/CLASS/i.png`, solid images in the color of the class."""
    for name, color in _COLORS.items():
        for i in range(per_class):
            pixels = np.broadcast_to(np.array(color), (*size, 3))
            _write_png(os.path.join(root, name, f"{i}.png"), pixels)
    return root


def _rows(x):
    """Images as sorted rows, to compare sets of images."""
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


class DigitsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        np.random.seed(0)

    def test_shapes_range_and_split_sizes(self):
        data = datasets.load_dataset("digits")

        self.assertEqual(data.x_train.shape, (1617, 8, 8, 1))
        self.assertEqual(data.x_val.shape, (180, 8, 8, 1))  # 10% of 1,797.
        self.assertEqual(data.x_train.dtype, np.float32)
        self.assertEqual(data.y_train.dtype, np.int32)
        self.assertEqual(data.x_train.min(), 0.0)
        self.assertEqual(data.x_train.max(), 1.0)
        self.assertEqual(data.num_classes, 10)
        self.assertEqual(data.input_shape, (8, 8, 1))
        self.assertEqual(data.name, "digits")
        self.assertIn("scikit-learn", data.source)
        self.assertEqual(data.class_names, tuple("0123456789"))

    def test_split_uses_every_sample_once_and_is_stratified(self):
        digits = sk_datasets.load_digits()
        data = datasets.load_dataset("digits", validation_split=0.2, seed=3)

        # Images with their label as a last column, compared as multisets.
        def labelled(x, y):
            return np.concatenate([x.reshape(len(x), -1), y[:, None]], 1)

        all_rows = labelled(
            np.concatenate([data.x_train, data.x_val]),
            np.concatenate([data.y_train, data.y_val]),
        )
        expected = labelled(digits.images / 16.0, digits.target)
        self.assertAllClose(_rows(all_rows), _rows(expected))
        per_class = np.bincount(digits.target)
        held_out = np.bincount(data.y_val, minlength=10)
        self.assertAllLessEqual(np.abs(held_out - 0.2 * per_class), 1.0)

    def test_seed_decides_split_and_order(self):
        first = datasets.load_dataset("digits", seed=5)
        again = datasets.load_dataset("digits", seed=5)
        other = datasets.load_dataset("digits", seed=6)

        self.assertAllEqual(first.x_train, again.x_train)
        self.assertAllEqual(first.y_val, again.y_val)
        self.assertNotAllClose(first.y_train, other.y_train)
        self.assertNotAllClose(_rows(first.x_val), _rows(other.x_val))

    def test_max_train_and_max_val_take_a_seeded_subset(self):
        full = datasets.load_dataset("digits", seed=1)
        subset = datasets.load_dataset(
            "digits", max_train=50, max_val=20, seed=1
        )

        self.assertEqual(subset.x_train.shape, (50, 8, 8, 1))
        self.assertEqual(subset.x_val.shape, (20, 8, 8, 1))
        # Same seed, same shuffled order: the subset is its first samples.
        self.assertAllEqual(subset.x_train, full.x_train[:50])
        self.assertAllEqual(subset.y_val, full.y_val[:20])
        self.assertLen(np.unique(subset.y_train), 10)

    def test_image_size_resizes(self):
        data = datasets.load_dataset("digits", image_size=16)

        self.assertEqual(data.x_train.shape[1:], (16, 16, 1))
        self.assertEqual(data.input_shape, (16, 16, 1))
        self.assertAllInRange(data.x_train, 0.0, 1.0)

    def test_image_size_of_other_aspect_crops_the_center(self):
        plain = datasets.load_dataset("digits", seed=2)
        cropped = datasets.load_dataset("digits", image_size=(4, 8), seed=2)

        # A 4x8 box of the 8x8 images needs no scaling: rows 2 to 5.
        self.assertAllClose(cropped.x_train, plain.x_train[:, 2:6])

    def test_validation_split_zero_keeps_everything_for_training(self):
        data = datasets.load_dataset("digits", validation_split=0)

        self.assertEqual(data.x_train.shape, (1797, 8, 8, 1))
        self.assertEqual(data.x_val.shape, (0, 8, 8, 1))

    def test_data_dir_is_ignored_with_a_warning(self):
        with self.assertWarnsRegex(UserWarning, "data_dir"):
            datasets.load_dataset("digits", data_dir="/tmp", max_train=5)


class FolderTest(tf.test.TestCase, parameterized.TestCase):
    def test_class_folders_are_labelled_and_split(self):
        root = _rgb_folder(os.path.join(self.get_temp_dir(), "colors"))

        data = datasets.load_dataset(
            f"folder:{root}", validation_split=0.25, seed=0
        )

        self.assertEqual(data.class_names, ("cat", "dog", "eel"))
        self.assertEqual(data.x_train.shape, (9, 6, 10, 3))
        self.assertEqual(data.x_val.shape, (3, 6, 10, 3))
        self.assertAllEqual(np.sort(data.y_val), [0, 1, 2])  # Stratified.
        self.assertEqual(data.name, "colors")
        self.assertIn(root, data.source)
        for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
            for image, label in zip(x, y):
                color = _COLORS[data.class_names[label]]
                self.assertAllClose(
                    image, np.broadcast_to(np.array(color) / 255, (6, 10, 3))
                )

    def test_train_and_test_folders_are_used_as_train_and_val(self):
        root = os.path.join(self.get_temp_dir(), "grey")
        for split, count in (("train", 3), ("test", 2)):
            for digit, value in (("0", 0), ("1", 255)):
                for i in range(count):
                    _write_png(
                        os.path.join(root, split, digit, f"{i}.png"),
                        np.full((5, 5), value),
                    )

        data = datasets.load_dataset(f"folder:{root}", validation_split=0.5)

        self.assertEqual(data.input_shape, (5, 5, 1))
        self.assertEqual(data.x_train.shape, (6, 5, 5, 1))
        self.assertEqual(data.x_val.shape, (4, 5, 5, 1))
        self.assertAllEqual(np.sort(data.y_val), [0, 0, 1, 1])
        self.assertAllEqual(data.x_val.max(axis=(1, 2, 3)), data.y_val)

    def test_image_size_resizes_folder_images(self):
        root = _rgb_folder(os.path.join(self.get_temp_dir(), "colors"))

        data = datasets.load_dataset(f"folder:{root}", image_size=(3, 4))

        self.assertEqual(data.input_shape, (3, 4, 3))
        image, label = data.x_train[0], data.y_train[0]
        color = np.array(_COLORS[data.class_names[label]]) / 255
        self.assertAllClose(image, np.broadcast_to(color, (3, 4, 3)))

    def test_missing_folder(self):
        missing = os.path.join(self.get_temp_dir(), "missing")

        with self.assertRaisesRegex(
            ValueError, f"does not exist.*Received: path='{missing}'"
        ):
            datasets.load_dataset(f"folder:{missing}")

    def test_folder_without_images(self):
        root = os.path.join(self.get_temp_dir(), "empty")
        os.makedirs(os.path.join(root, "cat"))

        with self.assertRaisesRegex(ValueError, "Found no images"):
            datasets.load_dataset(f"folder:{root}")


class SpecAndArgumentsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown", "imagenet"),
        ("unknown_shared", "shared:imagenette"),
        ("folder_without_colon", "folder"),
    )
    def test_unknown_spec_lists_valid_specs(self, spec):
        with self.assertRaisesRegex(
            ValueError,
            r"digits, mnist, cifar10, imagenette, shared:cifar10, "
            rf"shared:mnist, or folder:PATH.*Received: spec='{spec}'",
        ):
            datasets.load_dataset(spec)

    def test_spec_must_be_a_string(self):
        with self.assertRaisesRegex(TypeError, "Received: spec=3"):
            datasets.load_dataset(3)

    @parameterized.named_parameters(
        ("split_one", {"validation_split": 1.0}, "validation_split=1.0"),
        ("max_train_zero", {"max_train": 0}, "max_train=0"),
        ("max_val_float", {"max_val": 2.5}, "max_val=2.5"),
        ("image_size_zero", {"image_size": (0, 4)}, r"image_size=\(0, 4\)"),
        ("seed_string", {"seed": "a"}, "seed='a'"),
    )
    def test_invalid_arguments(self, kwargs, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.load_dataset("digits", **kwargs)

    def test_unprepared_tfds_data_says_how_to_prepare_it(self):
        empty = os.path.join(self.get_temp_dir(), "tfds")

        with self.assertRaisesRegex(
            ValueError, r"not prepared in .*tfds build mnist.*shared:mnist"
        ):
            datasets.load_dataset("mnist", data_dir=empty)

    @parameterized.named_parameters(
        ("mnist", "mnist", None, (28, 28, 1)),
        ("cifar10_resized", "cifar10", 16, (16, 16, 3)),
    )
    def test_tfds_specs(self, spec, image_size, input_shape):
        import tensorflow_datasets as tfds

        # Random examples with the real features, without any files.
        with tfds.testing.mock_data(num_examples=6):
            data = datasets.load_dataset(spec, image_size=image_size, max_val=4)

        self.assertEqual(data.x_train.shape, (6, *input_shape))
        self.assertEqual(data.x_val.shape, (4, *input_shape))
        self.assertEqual(data.x_train.dtype, np.float32)
        self.assertAllInRange(data.x_train, 0.0, 1.0)
        self.assertEqual(data.num_classes, 10)
        self.assertIn("tensorflow-datasets", data.source)

    def test_docstring_examples(self):
        results = doctest.testmod(datasets)

        self.assertGreater(results.attempted, 0)
        self.assertEqual(results.failed, 0)


class SharedTest(tf.test.TestCase):
    def test_shared_mnist_extracts_decodes_and_caches(self):
        if not os.path.isfile(_MNIST_ARCHIVE):
            self.skipTest(
                f"The shared MNIST archive {_MNIST_ARCHIVE} is absent; it "
                "lives in the shared/data folder beside the repository."
            )
        cache = os.path.join(self.get_temp_dir(), "cache")

        data = datasets.load_dataset(
            "shared:mnist", data_dir=cache, max_train=200, seed=0
        )

        self.assertEqual(data.x_train.shape, (200, 28, 28, 1))
        # The archive's own test/ folder: original indices 8000 to 9999.
        self.assertEqual(data.x_val.shape, (2000, 28, 28, 1))
        self.assertEqual(data.class_names, tuple("0123456789"))
        self.assertAllInRange(data.x_train, 0.0, 1.0)
        self.assertIn("mnist10k-png.tar.gz", data.source)
        # Labels come from the class folders: find one image among them.
        seven_dir = os.path.join(cache, "mnist", "images", "test", "7")
        first = sorted(os.listdir(seven_dir))[0]
        with Image.open(os.path.join(seven_dir, first)) as image:
            seven = np.asarray(image, np.float32)[..., None] / 255
        matches = np.flatnonzero((data.x_val == seven).all(axis=(1, 2, 3)))
        self.assertLen(matches, 1)
        self.assertEqual(data.y_val[matches[0]], 7)

        # The second load reads the decoded arrays, not the images.
        shutil.rmtree(os.path.join(cache, "mnist", "images"))
        again = datasets.load_dataset(
            "shared:mnist", data_dir=cache, max_train=200, seed=0
        )

        self.assertIn("cached", again.source)
        self.assertAllEqual(again.x_train, data.x_train)
        self.assertAllEqual(again.y_val, data.y_val)

    def test_missing_archive_says_where_it_looked(self):
        empty = self.get_temp_dir()
        cache = os.path.join(empty, "cache")

        with mock.patch.dict(os.environ, {datasets.SHARED_DIR_ENV: empty}):
            with self.assertRaisesRegex(
                ValueError,
                r"Cannot find the archive cifar10-train-jpeg\.tar\.gz in "
                r"\$LEARNDROP_SHARED_DATA",
            ):
                datasets.load_dataset("shared:cifar10", data_dir=cache)

    def test_cache_inside_the_repository_is_refused(self):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        inside = os.path.join(repo, "outputs", "cache")

        with self.assertRaisesRegex(ValueError, "outside the repository"):
            datasets.load_dataset("shared:mnist", data_dir=inside)
        self.assertFalse(os.path.exists(inside))


if __name__ == "__main__":
    tf.test.main()
