"""keras-learndrop: faster CNN training by freezing and dropping layers.

Add `keras_learndrop.LearnDrop()` to the callbacks of `model.fit`. See the
README for how it works.
"""

from keras_learndrop.callback import LearnDrop
from keras_learndrop.flops import model_flops
from keras_learndrop.graph import Unit
from keras_learndrop.graph import UnitChain
from keras_learndrop.report import LearnDropHistory

__version__ = "0.1.0"

__all__ = [
    "LearnDrop",
    "LearnDropHistory",
    "Unit",
    "UnitChain",
    "model_flops",
]
