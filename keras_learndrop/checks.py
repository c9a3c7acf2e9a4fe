"""Argument checks whose errors name the argument, the rule and the value.

Errors follow Keras's wording: "`threshold` must be in (0, 1]. Received:
threshold=1.5". `TypeError` for a wrong type, `ValueError` for a value out
of range.
"""

import numpy as np


def is_int(value):
    """Whether `value` is an integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name, value, low):
    """Raises a clear error unless `value` is an integer >= `low`."""
    if not is_int(value):
        raise TypeError(
            f"`{name}` must be an integer. Received: {name}={value!r} of "
            f"type {type(value).__name__}."
        )
    if value < low:
        raise ValueError(
            f"`{name}` must be >= {low}. Received: {name}={value}."
        )


def check_number(name, value, low, high, low_open=False, high_open=False):
    """Raises a clear error unless `value` is a number in the interval."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.number)
    ):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r} of type "
            f"{type(value).__name__}."
        )
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or np.isnan(value):
        interval = (
            ("(" if low_open else "[")
            + f"{low}, {high}"
            + (")" if high_open else "]")
        )
        raise ValueError(
            f"`{name}` must be in {interval}. Received: {name}={value}."
        )


def check_bool(name, value, extra=""):
    """Raises a clear error unless `value` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False{' ' + extra if extra else ''}. "
            f"Received: {name}={value!r}."
        )


def check_choice(name, value, choices):
    """Raises a clear error unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}. "
            f"Received: {name}={value!r}."
        )
