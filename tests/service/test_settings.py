"""SOUNDARC_* settings: parsed from the environment once, checked, and the cores shared among workers."""

import pytest

from core.errors import ConfigError
from service.settings import ServiceSettings, available_cores


def test_from_env_parses_types_and_ignores_other_variables():
    s = ServiceSettings.from_env({"SOUNDARC_MAX_TOP_K": "7", "SOUNDARC_MAX_UPLOAD_MB": "2.5",
                                  "SOUNDARC_REQUIRE_GPU": "false", "OTHER": "x"})
    assert (s.max_top_k, s.max_upload_mb, s.require_gpu) == (7, 2.5, False)


@pytest.mark.parametrize("env", [{"SOUNDARC_WORKERS": "-1"}, {"SOUNDARC_WORKERS": "two"},
                                 {"SOUNDARC_PREPARE_THREADS": "-1"}, {"SOUNDARC_DEVICE": "tpu"},
                                 {"SOUNDARC_MAX_DURATION_S": "inf"}, {"SOUNDARC_MAX_DURATION_S": "nan"},
                                 {"SOUNDARC_MAX_UPLOAD_MB": "inf"}, {"SOUNDARC_STREAM_IDLE_S": "nan"}])
def test_bad_values_name_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        ServiceSettings.from_env(env)


def test_workers_share_the_cores_for_decoding(monkeypatch):
    monkeypatch.setattr("service.settings.available_cores", lambda: 8)
    assert ServiceSettings(workers=1).cores_per_worker == 8
    assert ServiceSettings(workers=2).cores_per_worker == 4
    assert ServiceSettings(workers=16).cores_per_worker == 1
    assert ServiceSettings(workers=2).runtime.intra_op_threads == 0  # ONNX Runtime's default in each worker
    assert ServiceSettings(workers=2, intra_op_threads=3).runtime.intra_op_threads == 3


def test_default_workers_one_per_core_on_a_cpu_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr("service.settings.available_cores", lambda: 4)
    assert ServiceSettings(device="cpu").worker_count == 4
    monkeypatch.setattr("service.settings.requested_providers", lambda device: ["CUDAExecutionProvider"])
    assert ServiceSettings(device="cuda").worker_count == 1
    assert ServiceSettings(device="cuda").cores_per_worker == 4


def test_available_cores_is_at_least_one():
    assert 1 <= available_cores() <= (__import__("os").cpu_count() or 1)
