"""The cross-request batcher: coalescing, order, splitting, errors, stale windows."""

import asyncio
import time

import numpy as np
import pytest

from core import errors
from service.batcher import Batcher


class FakeModel:
    """(B, T, M) -> ((B, 1), (B, 2)): two outputs, as the model's logits and embeddings, from each
    window's first value; records batch sizes; optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None):
        self.delay_s, self.fail_on, self.batches = delay_s, fail_on, []

    def __call__(self, patches):
        self.batches.append(len(patches))
        time.sleep(self.delay_s)
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("model failed")
        first = patches[:, :1, 0].copy()
        return first, np.concatenate([-first, 2 * first], axis=1)


def windows(first: int, n: int) -> np.ndarray:
    """(n, 2, 3) windows whose first value is first, first + 1, ..."""
    x = np.zeros((n, 2, 3), np.float32)
    x[:, 0, 0] = np.arange(first, first + n)
    return x


def assert_outputs(outputs, expected):
    """Both outputs of the fake model, for the windows whose first values are `expected`."""
    first, second = outputs
    np.testing.assert_array_equal(first[:, 0], expected)
    np.testing.assert_array_equal(second, np.stack([-np.asarray(expected), 2 * np.asarray(expected)], axis=1))


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_is_one_call():
    model = FakeModel()
    batcher = Batcher(model, max_batch_size=64, max_wait_s=10)
    out = run(batcher.infer(windows(0, 5)))
    assert_outputs(out, np.arange(5))
    assert model.batches == [5] and (batcher.calls, batcher.patches) == (1, 5)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    model = FakeModel(delay_s=0.02)
    sizes = []
    batcher = Batcher(model, max_batch_size=64, max_wait_s=10, on_batch=sizes.append)

    async def many():
        return await asyncio.gather(*(batcher.infer(windows(100 * i, 3)) for i in range(20)))

    outputs = run(many())
    for i, out in enumerate(outputs):
        assert_outputs(out, 100 * i + np.arange(3))
    assert len(model.batches) < 20 and sum(model.batches) == 60 and sizes == model.batches


def test_long_requests_are_split_at_the_batch_limit():
    model = FakeModel()
    batcher = Batcher(model, max_batch_size=8, max_wait_s=10)
    out = run(batcher.infer(windows(0, 30)))
    assert_outputs(out, np.arange(30))
    assert max(model.batches) <= 8 and sum(model.batches) == 30


def test_a_failed_call_fails_its_requests_only():
    model = FakeModel(delay_s=0.02, fail_on=1)
    batcher = Batcher(model, max_batch_size=4, max_wait_s=10)

    async def two():
        return await asyncio.gather(batcher.infer(windows(0, 4)), batcher.infer(windows(10, 4)), return_exceptions=True)

    first, second = run(two())
    assert isinstance(first, RuntimeError)
    assert_outputs(second, 10 + np.arange(4))


def test_windows_queued_too_long_are_refused():
    model = FakeModel(delay_s=0.1)
    batcher = Batcher(model, max_batch_size=4, max_wait_s=0.05)

    async def two():
        return await asyncio.gather(batcher.infer(windows(0, 4)), batcher.infer(windows(10, 4)), return_exceptions=True)

    first, second = run(two())
    assert_outputs(first, np.arange(4))
    assert isinstance(second, errors.Overloaded) and second.status_code == 503


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        run(Batcher(FakeModel(), 4, 1).infer(np.zeros((0, 2, 3), np.float32)))


def test_a_windows_outputs_do_not_depend_on_its_batch(tmp_path):
    """Cross-request batching must not change answers: on the CPU provider a window's logits and
    embedding are bit-identical alone, first, or last in batches of other windows."""
    from core.artifact import load_artifact
    from core.runtime import RuntimeConfig, create_runtime
    from tests.helpers import make_artifact

    artifact = load_artifact(make_artifact(tmp_path, width=8))
    runtime = create_runtime(artifact, RuntimeConfig(device="cpu"))
    fe = artifact.frontend
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((10, fe.patch_frames, fe.n_mels)).astype(np.float32)
    alone = runtime.run(clip)
    for others in (1, 7, 54):
        rest = rng.standard_normal((others, fe.patch_frames, fe.n_mels)).astype(np.float32)
        first = runtime.run(np.concatenate([clip, rest]))
        last = runtime.run(np.concatenate([rest, clip]))
        for a, f, la in zip(alone, first, last):
            np.testing.assert_array_equal(a, f[:10])
            np.testing.assert_array_equal(a, la[-10:])
