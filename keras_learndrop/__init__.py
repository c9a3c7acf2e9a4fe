"""keras-learndrop: faster CNN training by freezing and dropping layers.

Add `keras_learndrop.LearnDrop()` to the callbacks of `model.fit`. See the
README for how it works.
"""

from keras_learndrop.callback import LearnDrop
from keras_learndrop.flops import model_flops
from keras_learndrop.graph import Unit
from keras_learndrop.graph import UnitChain
from keras_learndrop.policy import AutoFreezeRule
from keras_learndrop.policy import DirectionConsistency
from keras_learndrop.policy import FeatureDrift
from keras_learndrop.policy import FixedSchedule
from keras_learndrop.policy import FreezeOut
from keras_learndrop.policy import FreezePolicy
from keras_learndrop.policy import LearnDropScores
from keras_learndrop.policy import Observation
from keras_learndrop.policy import ScheduleOrDrift
from keras_learndrop.report import LearnDropHistory

__version__ = "0.8.1"

__all__ = [
    "AutoFreezeRule",
    "DirectionConsistency",
    "FeatureDrift",
    "FixedSchedule",
    "FreezeOut",
    "FreezePolicy",
    "LearnDrop",
    "LearnDropHistory",
    "LearnDropScores",
    "Observation",
    "ScheduleOrDrift",
    "Unit",
    "UnitChain",
    "model_flops",
]
