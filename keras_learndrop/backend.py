"""The one place where Keras and TensorFlow are imported.

keras-learndrop rebuilds TensorFlow training steps (`tf.function`, XLA,
`tf.distribute`), so it needs Keras 3 running on the TensorFlow backend.
Every other module imports `keras` and `tf` from here.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_learndrop needs the TensorFlow backend of Keras 3. "
        f"Received: KERAS_BACKEND={keras.backend.backend()!r}. "
        "Set the environment variable KERAS_BACKEND=tensorflow before "
        "importing keras."
    )

__all__ = ["keras", "tf"]
