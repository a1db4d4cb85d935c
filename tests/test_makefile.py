"""`make help` lists every target for people and for pipes: variables by name, no colour codes."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_help_lists_each_target_without_unexpanded_variables_or_colour_in_a_pipe():
    result = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    documented = re.findall(r"^([a-zA-Z_-]+):.*## ", (REPO / "Makefile").read_text(), re.MULTILINE)
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert listed == documented and {"serve", "test", "lint", "train"} <= set(listed)
    assert "$(" not in result.stdout and "\033[" not in result.stdout
    train = next(line for line in result.stdout.splitlines() if line.split()[0] == "train")
    assert "models/MODEL" in train
