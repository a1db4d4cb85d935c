"""serving/ runs from a model folder alone: importing any of its modules pulls in no training code,
torch or transformers (a serve-only install has none of them)."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import serving
for module in pkgutil.iter_modules(serving.__path__):
    importlib.import_module(f"serving.{module.name}")
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("training", "torch", "transformers"))
print(",".join(bad))
"""


def test_serving_imports_no_training_torch_or_transformers():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"serving imported: {result.stdout.strip()}"
