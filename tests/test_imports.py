"""The product runs from a model folder alone: importing every module of the `tierwise` package (but
`tierwise.training`, its own distribution) pulls in no training code, torch or transformers, since a
serve-only install has none of them."""

import subprocess
import sys

import pytest

CHECK = """
import importlib, pkgutil, sys
import tierwise
for module in pkgutil.walk_packages(tierwise.__path__, "tierwise."):
    if module.name.startswith("tierwise.training") or module.name.startswith("tierwise.ops.migrations."):
        continue
    importlib.import_module(module.name)
bad = sorted(
    m for m in sys.modules
    if m.startswith("tierwise.training") or m.split(".")[0] in ("training", "torch", "transformers", "tools")
)
print(len([m for m in sys.modules if m.startswith("tierwise.")]), ",".join(bad))
"""


@pytest.mark.slow
def test_the_product_imports_no_training_torch_or_transformers():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True
    )
    imported, bad = result.stdout.strip().partition(" ")[::2]
    assert int(imported) >= 30, f"only {imported} tierwise modules imported: the walk missed the package"
    assert bad == "", f"the product imported: {bad}"


CORE_CHECK = """
import importlib, pkgutil, sys
import tierwise.core
for module in pkgutil.iter_modules(tierwise.core.__path__, "tierwise.core."):
    importlib.import_module(module.name)
rooms = ("tierwise.service", "tierwise.ops", "tierwise.cli", "tierwise.gateway", "tierwise.training")
print(",".join(sorted(m for m in sys.modules if m.startswith(rooms))))
"""


@pytest.mark.slow
def test_core_depends_on_no_other_room():
    # core is what a model folder needs: the service, ops, CLI and gateway build on it, never the reverse.
    result = subprocess.run(
        [sys.executable, "-c", CORE_CHECK], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"tierwise.core imported: {result.stdout.strip()}"
