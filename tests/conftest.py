import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

FIXTURES = Path(__file__).parent / "fixtures"
# the fixture whose embedding is each class prototype of the test artifact (dog, rain, siren)
FIXTURE_CLASSES = ("1-100032-A-0.ogg", "1-17367-A-10.ogg", "1-27724-A-1.ogg")


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def test_artifact(tmp_path_factory) -> Path:
    """A small random model (width 16; the batching test uses a wider one of its own) with an open
    set whose prototypes are the clip embeddings of the three committed fixtures, labelled dog, rain
    and siren: each fixture is near its own prototype, other audio is mostly "unknown"."""
    import numpy as np

    from core.answer import clip_embedding
    from core.artifact import load_artifact
    from core.clip import prepare
    from core.openset import OpenSet
    from core.runtime import RuntimeConfig, create_runtime
    from export.open_set import save_open_set
    from tests.helpers import make_artifact

    root = make_artifact(tmp_path_factory.mktemp("served"), width=16)
    artifact = load_artifact(root)
    runtime = create_runtime(artifact, RuntimeConfig(device="cpu"))
    prototypes = []
    for name in FIXTURE_CLASSES:
        clip = prepare(FIXTURES / name, artifact.frontend, artifact.activity)
        prototypes.append(clip_embedding(runtime.run(clip.patches[clip.active])[1]))
    # a random model's embeddings lie within a few degrees of each other: a tight threshold (0.01 rad)
    save_open_set(root, OpenSet(np.stack(prototypes), artifact.labels, 0.01, 0.05, "test", cosine_logit=(4.0, 0.0)))
    return root
