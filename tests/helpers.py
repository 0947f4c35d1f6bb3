"""Helpers shared by the test files (pytest puts this folder on the path)."""
import pytest


def raises(exc, fn, *parts):
    "Call `fn`, expect `exc`, and check that its message holds every one of `parts` (the parameter's name first), no traceback."
    with pytest.raises(exc) as e: fn()
    msg = str(e.value)
    for p in parts: assert p in msg, f"{p!r} not in {msg!r}"
    assert "Traceback" not in msg
    return msg
