"""Runs the docstring examples of every module of keras_learndrop."""

import doctest
import importlib
import pkgutil

import numpy as np
from absl.testing import parameterized

import keras_learndrop
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

# The package and every module in it, found on disk, so a new module is
# never left out silently.
_MODULES = ["keras_learndrop"] + sorted(
    f"keras_learndrop.{info.name}"
    for info in pkgutil.iter_modules(keras_learndrop.__path__)
)


class DocstringsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # Examples print auto-generated layer names ("conv2d"), which count
        # from a fresh session.
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)

    def test_every_module_is_checked(self):
        self.assertContainsSubset(
            [
                f"keras_learndrop.{name}"
                for name in ("callback", "flops", "graph", "policy", "scoring")
            ],
            _MODULES,
        )

    @parameterized.named_parameters(
        (name.replace(".", "_"), name) for name in _MODULES
    )
    def test_examples(self, name):
        module = importlib.import_module(name)
        globs = {
            **vars(module),
            "keras": keras,
            "keras_learndrop": keras_learndrop,
            "np": np,
            "tf": tf,
        }

        result = doctest.testmod(
            module,
            globs=globs,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            report=True,
        )

        self.assertEqual(
            result.failed,
            0,
            f"{result.failed} of the {result.attempted} docstring examples "
            f"of {name} failed (details printed above).",
        )


if __name__ == "__main__":
    tf.test.main()
