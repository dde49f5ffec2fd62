"""core, service and batch never import torch, nor the training or export packages (docs/design.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_FREE_MODULES = sorted(f"{package}.{p.stem}" for package in ("core", "service", "batch")
                            for p in (ROOT / package).glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_module_does_not_import_torch(module):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module('{module}')\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training', 'export')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
