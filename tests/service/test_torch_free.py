"""The serving path never imports torch (DESIGN §1)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MODULES = sorted(p.stem for p in (ROOT / "service").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_service_module_does_not_import_torch(module):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module('service.{module}')\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training', 'export')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
