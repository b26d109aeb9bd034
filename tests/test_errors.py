"""graftnet.errors: the hierarchy callers catch, and the message helpers."""

from __future__ import annotations

import doctest

import pytest

from graftnet.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GraftnetError,
    ImportFormatError,
    ShapeError,
    brief_error,
    did_you_mean,
    format_names,
)


@pytest.mark.parametrize("error", [ConfigError, DataError, ShapeError, CheckpointError, ImportFormatError])
def test_every_error_is_a_graftnet_error_and_a_value_error(error: type[Exception]) -> None:
    with pytest.raises(GraftnetError):
        raise error("x")
    with pytest.raises(ValueError, match="^x$"):
        raise error("x")


def test_did_you_mean() -> None:
    assert did_you_mean("hiden2", ["hidden1", "hidden2", "outputs"]) == " Did you mean 'hidden2'?"
    assert did_you_mean("sandal", ["Sandal", "Shirt"]) == " Did you mean 'Sandal'?"
    assert did_you_mean("zzz", ["hidden1", "outputs"]) == ""


def test_format_names_compresses_runs_and_cuts_long_lists() -> None:
    assert (
        format_names(["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs"]) == "hidden1..hidden5, outputs"
    )
    assert format_names(["hidden1", "hidden2", "outputs"]) == "hidden1, hidden2, outputs"  # runs of 2 stay
    assert (
        format_names(["conv1", "conv2", "conv3", "pool", "dense7", "dense8", "dense9"])
        == "conv1..conv3, pool, dense7..dense9"
    )
    assert format_names(["a1", "a2", "a4", "a5", "a6"]) == "a1, a2, a4..a6"
    assert format_names(["l01", "l02", "l03"]) == "l01, l02, l03"  # zero-padded names are left alone
    assert format_names([f"n{i}" for i in range(0, 60, 2)], limit=3) == "n0, n2, n4, ... (27 more)"
    assert format_names([]) == "(none)"


def test_docstring_examples_run() -> None:
    import graftnet.errors

    results = doctest.testmod(graftnet.errors)
    assert results.failed == 0 and results.attempted >= 5


def test_brief_error_keeps_the_type_and_a_short_first_line() -> None:
    assert brief_error(ValueError("bad header\nat byte 12")) == "ValueError: bad header"
    assert brief_error(OSError("x" * 500)) == "OSError: " + "x" * 200
    assert brief_error(KeyError(), with_type=False) == "KeyError"
    assert brief_error(RuntimeError("  first\nsecond"), with_type=False) == "first"
