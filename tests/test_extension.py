"""The compiled library loads (pid/_C), unless the fallback is forced."""

import os

import pytest

from pid import _extension


def test_extension_loaded():
    if os.environ.get("PID_DISABLE_EXTENSION", "") not in ("", "0"):
        pytest.skip("PID_DISABLE_EXTENSION is set")
    assert _extension.available(), f"compiled extension not loaded: {_extension.LOAD_ERROR}"
