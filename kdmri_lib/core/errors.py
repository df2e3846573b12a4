"""Error types and parameter checks shared by the whole toolkit.

Every user mistake (a wrong path, a parameter out of range, a file of the wrong kind) ends in
one of these exceptions with a message that names the input and says what was expected, instead
of a long traceback from deep inside torch or h5py.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable


class KdmriError(Exception):
    """Base class of the toolkit's own errors."""


class ConfigError(KdmriError, ValueError):
    """A parameter has the wrong type or value."""


class DataError(KdmriError, ValueError):
    """A data file or folder is missing, unreadable or not in the expected format."""


class CheckpointError(KdmriError, ValueError):
    """A checkpoint is missing, truncated, or belongs to another model / preset / task."""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ConfigError`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_float(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                strict_min: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be finite; got {value}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        raise ConfigError(f"{name} must be {'>' if strict_min else '>='} {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}; got {value}")
    return value


def first_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message (its type's name when the message is empty), at
    most ``limit`` characters: what an error message quotes of the exception it wraps."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
