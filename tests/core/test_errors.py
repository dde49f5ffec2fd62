"""One error tree: every error class lives in core.errors, has its status, and makes one response."""

import inspect
import json

import pytest

from core import errors

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SoundarcError)]


def test_the_tree_is_complete_and_every_status_is_an_http_error():
    assert {c.__name__ for c in CLASSES} >= {"BadAudio", "SilentAudio", "Overloaded", "GPUUnavailable",
                                             "ExportValidationError", "ArtifactError", "ConfigError"}
    for cls in CLASSES:
        assert 400 <= cls.status_code <= 599, cls


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_one_response_per_error(cls):
    from service.http import error_response

    error = cls("what went wrong", "GET") if cls is errors.MethodNotAllowed else cls("what went wrong")
    response = error_response(error)
    assert response.status_code == error.status_code
    assert json.loads(response.body) == {"error": cls.__name__, "message": "what went wrong"}
    assert ("retry-after" in response.headers) == (cls is errors.Overloaded)
    assert ("allow" in response.headers) == (cls is errors.MethodNotAllowed)


def test_no_error_class_outside_the_tree():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    for package in ("core", "service", "batch", "training", "export"):
        for path in (root / package).glob("*.py"):
            if path.name != "errors.py":
                assert "(errors.SoundarcError)" not in path.read_text(), path
