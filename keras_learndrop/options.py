"""The checks of `LearnDrop`'s arguments, with errors that name them.

Each error says which argument was wrong, what it must be and what was
received, in Keras's wording (see `checks`).
"""

import os

from keras_learndrop import policy as policy_lib
from keras_learndrop import stem_cache
from keras_learndrop.checks import check_bool
from keras_learndrop.checks import check_choice
from keras_learndrop.checks import check_int

CACHE_MODES = ("auto", "off")
STEM_DROPOUT = ("train", "inference")


def check_arguments(
    policy,
    eval_every,
    cache,
    cache_dtype,
    memory_budget,
    cache_validation,
    augmented_inputs,
    augmented_views,
    stem_dropout,
    jit_compile,
    restore_trainable,
    keep_frozen,
    seed,
    verbose,
    backup_dir,
    probe_size,
):
    """Checks `LearnDrop`'s arguments; returns the policy to use.

    Returns:
        `policy`, or the default policy for `None`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an argument out of range.
    """
    if policy is None:
        policy = policy_lib.default_policy()
    if not isinstance(policy, policy_lib.FreezePolicy):
        raise TypeError(
            "`policy` must be a `keras_learndrop.FreezePolicy` (such as "
            "`LearnDropScores()` or `FixedSchedule({2: 3})`) or None. "
            f"Received: policy={policy!r} of type "
            f"{type(policy).__name__}."
        )
    check_int("eval_every", eval_every, 1)
    check_choice("cache", cache, CACHE_MODES)
    check_choice("cache_dtype", cache_dtype, stem_cache.CACHE_DTYPES)
    if memory_budget is not None:
        check_int("memory_budget", memory_budget, 0)
    check_bool("cache_validation", cache_validation)
    if augmented_inputs is not None:
        check_bool("augmented_inputs", augmented_inputs, extra="or None")
    check_int("augmented_views", augmented_views, 0)
    check_choice("stem_dropout", stem_dropout, STEM_DROPOUT)
    if jit_compile != "auto":
        check_bool("jit_compile", jit_compile, extra="or 'auto'")
    check_bool("restore_trainable", restore_trainable)
    check_bool("keep_frozen", keep_frozen)
    if seed is not None:
        check_int("seed", seed, 0)
    check_int("verbose", verbose, 0)
    if probe_size != "auto":
        _check_probe_size(probe_size, policy)
    if backup_dir is not None and not isinstance(
        backup_dir, (str, os.PathLike)
    ):
        raise TypeError(
            "`backup_dir` must be a path (the `backup_dir` of your "
            "`keras.callbacks.BackupAndRestore`) or None. Received: "
            f"backup_dir={backup_dir!r}."
        )
    if backup_dir is not None and not os.fspath(backup_dir):
        raise ValueError(
            "`backup_dir` must not be empty: pass the `backup_dir` of "
            "your `keras.callbacks.BackupAndRestore`, or None. Received: "
            f"backup_dir={backup_dir!r}."
        )
    return policy


def _check_probe_size(probe_size, policy):
    if isinstance(probe_size, str):
        raise ValueError(
            "`probe_size` must be 'auto', 0 (no drift measured) or an "
            f"integer >= 4. Received: probe_size={probe_size!r}."
        )
    check_int("probe_size", probe_size, 0)
    if 0 < probe_size < 4:
        raise ValueError(
            "`probe_size` must be 'auto', 0 (no drift measured) or at "
            "least 4 (the unbiased CKA needs 4 inputs). Received: "
            f"probe_size={probe_size}."
        )
    if policy.uses_drift and not probe_size:
        raise ValueError(
            f"The policy {type(policy).__name__} decides on the units' "
            "drift, which `probe_size=0` switches off. Pass "
            "`probe_size='auto'` (the default) or >= 4, or another policy."
        )
