"""The errors graftnet raises, and two helpers that make their messages useful.

Every error is a subclass of :class:`GraftnetError` *and* of the built-in
exception a caller would expect (``ValueError`` for bad values), so
``except ValueError`` keeps working for code that does not know graftnet.

Messages say what was given, what was expected and what exists::

    >>> from graftnet.errors import ConfigError, format_names, did_you_mean
    >>> names = ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs"]
    >>> format_names(names)
    'hidden1..hidden5, outputs'
    >>> did_you_mean("hiden2", names)
    " Did you mean 'hidden2'?"
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "GraftnetError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "CheckpointError",
    "ImportFormatError",
    "brief_error",
    "did_you_mean",
    "format_names",
]


class GraftnetError(Exception):
    """Base class of every error graftnet raises on purpose."""


class ConfigError(GraftnetError, ValueError):
    """A bad spec, recipe, selector or argument value."""


class DataError(GraftnetError, ValueError):
    """Data that cannot be found, read or used as asked (missing files, unknown class, ...)."""


class ShapeError(GraftnetError, ValueError):
    """Tensors or layers whose shapes do not fit together."""


class CheckpointError(GraftnetError, ValueError):
    """A checkpoint that is missing, incomplete, corrupt or does not match its spec."""


class ImportFormatError(GraftnetError, ValueError):
    """A foreign model file (Keras, ONNX, state_dict, npz) graftnet cannot convert."""


def brief_error(err: BaseException, *, limit: int = 200, with_type: bool = True) -> str:
    """An exception's type and the first line of its message, cut to ``limit`` characters.

    For quoting a library's exception inside a graftnet message: parsers of damaged files
    raise messages that run over many lines or embed raw bytes.

        >>> brief_error(ValueError("bad header\\nat byte 12"))
        'ValueError: bad header'
        >>> brief_error(OSError("disk full"), with_type=False)
        'disk full'
    """
    lines = str(err).strip().splitlines()
    first = lines[0][:limit] if lines else ""
    if with_type:
        return f"{type(err).__name__}: {first}"
    return first or type(err).__name__


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """A ``" Did you mean 'x'?"`` suffix naming the closest option, or ``""`` if none is close.

    Meant to be appended to a message:

        >>> "No class 'Sandle'." + did_you_mean("Sandle", ["Sandal", "Shirt"])
        "No class 'Sandle'. Did you mean 'Sandal'?"
    """
    choices = [str(option) for option in options]
    matches = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if not matches:
        # Case-only differences ("sandal" vs "Sandal") score below the cutoff on short names.
        lowered = {choice.lower(): choice for choice in choices}
        matches = [lowered[str(name).lower()]] if str(name).lower() in lowered else []
    return f" Did you mean {matches[0]!r}?" if matches else ""


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _compress_runs(names: list[str]) -> list[str]:
    """Collapse runs like hidden1, hidden2, hidden3 into 'hidden1..hidden3' (runs of 3 or more)."""
    items: list[str] = []
    index = 0
    while index < len(names):
        match = _NUMBERED.match(names[index])
        end = index + 1
        if match:
            prefix, number = match.group(1), int(match.group(2))
            while end < len(names):
                following = _NUMBERED.match(names[end])
                expected = number + (end - index)
                if not following or following.group(1) != prefix or int(following.group(2)) != expected:
                    break
                if following.group(2) != str(expected):  # "hidden01" is not "hidden1"
                    break
                end += 1
        if end - index >= 3:
            items.append(f"{names[index]}..{names[end - 1]}")
        else:
            items.extend(names[index:end])
        index = end
    return items


def format_names(names: Iterable[str], limit: int = 20) -> str:
    """A short, readable list of names for error messages.

    Runs of numbered names are compressed and long lists are cut after ``limit`` items:

        >>> format_names(["hidden1", "hidden2", "hidden3", "outputs"])
        'hidden1..hidden3, outputs'
        >>> format_names([f"x{i}" for i in range(0, 100, 2)], limit=3)
        'x0, x2, x4, ... (47 more)'
        >>> format_names([])
        '(none)'
    """
    items = _compress_runs([str(name) for name in names])
    if not items:
        return "(none)"
    if limit > 0 and len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"
    return ", ".join(items)
