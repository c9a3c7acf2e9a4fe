"""Tiny models and data shared by the tests (seconds on 2 CPU cores)."""

import numpy as np

from keras_learndrop.backend import keras
from keras_learndrop.backend import tf


class SampleRecorder(keras.layers.Layer):
    """Pass-through layer that records what it sees in training.

    `count` adds up the samples and `total` the sum of the inputs of every
    training call, so a test can check that each sample reached the head
    exactly once per epoch. Its trainable `gate` (which gets no gradient)
    makes it a learning layer, so it starts a unit of its own.
    """

    def build(self, input_shape):
        self.gate = self.add_weight(
            shape=(), initializer="zeros", trainable=True, name="gate"
        )
        self.count = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="count"
        )
        self.total = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="total",
            dtype="float64",
        )

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(tf.cast(tf.shape(inputs)[0], "float32"))
            self.total.assign_add(tf.reduce_sum(tf.cast(inputs, "float64")))
        return inputs

    def reset(self):
        self.count.assign(0.0)
        self.total.assign(0.0)


def conv_net(
    recorder=False, front=(), seed=0, dense_activation="softmax", named=True
):
    """A 4-unit CNN on 8x8x1 inputs: conv, conv, conv, dense.

    Args:
        recorder: Whether to put a `SampleRecorder` at the entry of the
            third unit (after the second conv unit).
        front: Layers to put before the first conv (augmentation, say).
        seed: Seed of the initial weights.
        dense_activation: Activation of the output layer.
        named: Whether the layers get fixed names (`conv1`, ...) or Keras's
            automatic ones (`conv2d`, `conv2d_1`, ..., which depend on the
            models built before in the process).
    """
    keras.utils.set_random_seed(seed)

    def name(text):
        return {"name": text} if named else {}

    layers = [keras.Input((8, 8, 1)), *front]
    layers += [
        keras.layers.Conv2D(4, 3, padding="same", **name("conv1")),
        keras.layers.BatchNormalization(**name("bn1")),
        keras.layers.ReLU(**name("relu1")),
        keras.layers.Conv2D(6, 3, padding="same", **name("conv2")),
        keras.layers.ReLU(**name("relu2")),
        keras.layers.MaxPooling2D(**name("pool2")),
    ]
    if recorder:
        layers.append(SampleRecorder(**name("recorder")))
    layers += [
        keras.layers.Conv2D(8, 3, padding="same", **name("conv3")),
        keras.layers.ReLU(**name("relu3")),
        keras.layers.GlobalAveragePooling2D(**name("gap")),
        keras.layers.Dense(3, activation=dense_activation, **name("dense")),
    ]
    return keras.Sequential(layers, **name("conv_net"))


def compile_model(model, optimizer=None, **kwargs):
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **kwargs,
    )
    return model


def data(n=48, seed=0):
    """Returns `n` random 8x8x1 images with labels in {0, 1, 2}."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) * 30).astype(np.int64) % 3
    return x, y


class RecorderLog(keras.callbacks.Callback):
    """Resets a `SampleRecorder` each epoch and keeps what it saw.

    `epochs` holds one `(count, total)` pair per epoch.
    """

    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.reset()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(
            (
                float(self.recorder.count.numpy()),
                self.recorder.total.numpy(),
            )
        )
