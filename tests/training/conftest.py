"""A tiny synthetic labelled set in ESC-50 layout: each class is a tone at its own frequency."""

from pathlib import Path

import pytest

from tests.helpers import write_esc50


@pytest.fixture(scope="session")
def tiny_esc(tmp_path_factory) -> Path:
    return write_esc50(tmp_path_factory.mktemp("esc"))
