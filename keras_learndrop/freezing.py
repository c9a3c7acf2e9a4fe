"""Freezing a stem, and giving the user's `trainable` flags back.

`Freezer` remembers every layer's own `trainable` flag when `fit` starts,
makes the stem's layers non-trainable when it grows (building the head's
`train_step.HeadStep` for the new cut) and gives the flags back when `fit`
ends (`restore_trainable`). `frozen_base` counts the leading units that the
user froze: they are the stem from the first epoch.
"""

from keras_learndrop import keras_internals
from keras_learndrop import stem_cache
from keras_learndrop import train_step


class Freezer:
    """Applies stem sizes to one model.

    Args:
        model: The compiled Keras model.
        chain: Its `graph.UnitChain`.
        jit_compile: Boolean. Whether the head's steps are XLA-compiled.
        stem_dropout: `"train"` or `"inference"` (see `LearnDrop`).
        restore_trainable: Boolean. Whether `restore_flags` gives the
            flags back.
    """

    def __init__(self, model, chain, jit_compile, stem_dropout, restore):
        self.model = model
        self.chain = chain
        self.jit_compile = jit_compile
        self.stem_dropout = stem_dropout
        self.restore_trainable = restore
        self._flags = {
            id(layer): layer.trainable
            for layer in keras_internals.flatten_layers(model)
        }

    def freeze(self, stem):
        """Makes the first `stem` units non-trainable; returns their step.

        Returns:
            The `train_step.HeadStep` that trains the units after them.
        """
        for layer in self.chain.layers_of(0, stem):
            layer.trainable = False
        return train_step.HeadStep(
            self.model, self.chain, stem, self.jit_compile, self.stem_dropout
        )

    def random_stem(self, stem, random_inputs):
        """Whether the stem's output differs between epochs.

        Args:
            stem: Integer. Frozen units.
            random_inputs: Boolean. Whether `fit`'s inputs are random.
        """
        layers = stem_cache.stochastic_layers(self.chain.layers_of(0, stem))
        if self.stem_dropout == "inference":
            layers = [
                layer
                for layer in layers
                if keras_internals.is_input_augmentation(layer)
            ]
        return random_inputs or bool(layers)

    def restore_flags(self):
        """Gives every layer its own `trainable` flag back (if asked)."""
        if self.restore_trainable:
            for layer in keras_internals.flatten_layers(self.model):
                if id(layer) in self._flags:
                    layer.trainable = self._flags[id(layer)]


def frozen_base(units):
    """Counts the leading units without trainable weights (never all)."""
    count = 0
    while count < len(units) - 1 and not units[count].trainable_weights:
        count += 1
    return count
