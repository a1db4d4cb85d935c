"""The installed product, not the checkout: build the wheels, install the serving one into a bare folder,
and run it from a temporary working directory with nothing of the repository on its path.

- the `tierwise` wheel holds the `tierwise` package (core, service, ops, gateway, cli, the policy file,
  the migrations' template) and nothing else: no `tierwise.training`, no tools/, no tests/, no
  generic top-level `serving` or `training` package;
- installed, `python -m tierwise classify` routes a file, the service answers /classify, and the
  default paths (model folder, decision log) are relative to the working directory while the
  policy file is the packaged one;
- the `tierwise-training` wheel holds `tierwise.training` only.

The wheels are built from a clean copy of the sources (a build in the checkout would leave a build/
folder there, and a stale one could slip removed modules into the wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default"
SHIPPED_PACKAGES = ("core", "evidence", "service", "ops", "gateway", "cli")
COPY_IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "*.pyc")


def build_wheel(source: Path, out_dir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir)]
        + [str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    [wheel] = out_dir.glob("*.whl")
    return wheel


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def serving_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("serving-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "serving", source / "serving", ignore=COPY_IGNORED)
    return build_wheel(source, tmp_path_factory.mktemp("serving-wheel"))


@pytest.fixture(scope="module")
def installed(serving_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving wheel installed into a bare folder (its dependencies are the venv's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(serving_wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


def without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TIERWISE_", "PROMETHEUS_"))}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def most_likely(answer: dict) -> str:
    probabilities = answer["probabilities"]
    return max(probabilities, key=probabilities.get)


def run_installed(target: Path, cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The venv's python with only the installed folder on PYTHONPATH, in `cwd`, no TIERWISE_* settings."""
    env = without_settings()
    env["PYTHONPATH"] = str(target)
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_the_serving_wheel_ships_the_product_and_nothing_else(serving_wheel: Path):
    names = wheel_names(serving_wheel)
    for package in SHIPPED_PACKAGES:
        assert f"tierwise/{package}/__init__.py" in names, package
    assert "tierwise/__main__.py" in names and "tierwise/service/__main__.py" in names
    assert "tierwise/core/policy.yaml" in names
    assert "tierwise/evidence/migrations/script.py.mako" in names
    assert not [n for n in names if n.startswith(("tierwise/training/", "tools/", "tests/"))]
    sources = {
        p.relative_to(REPO / "serving").as_posix() for p in (REPO / "serving" / "tierwise").rglob("*.py")
    }
    missing = sorted(sources - set(names))
    assert not missing, f"not in the wheel (a package missing from pyproject's packages?): {missing}"
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"tierwise", serving_wheel.name.split("-py3")[0] + ".dist-info"}, top_level


def test_the_training_wheel_holds_tierwise_training_only(tmp_path: Path):
    source = tmp_path / "training-source"
    shutil.copytree(REPO / "training", source, ignore=COPY_IGNORED)
    names = wheel_names(build_wheel(source, tmp_path / "wheel"))
    code = [n for n in names if ".dist-info/" not in n]
    assert "tierwise/training/__init__.py" in code and "tierwise/training/train.py" in code
    assert all(n.startswith("tierwise/training/") for n in code), code
    assert "tierwise/__init__.py" not in code  # it adds to the serving wheel's package, never replaces it


def test_installed_defaults_are_relative_to_the_working_directory(installed: Path, tmp_path: Path):
    script = """
import json, tierwise
from pathlib import Path
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.service.settings import Settings
s = Settings()
print(json.dumps({"package": tierwise.__file__, "model_dir": str(s.model_dir),
    "model_dir_resolved": str(s.model_dir.resolve()), "decision_db": s.decision_db,
    "policy_file": str(s.policy_file), "default_policy": str(DEFAULT_POLICY_FILE),
    "policy_exists": DEFAULT_POLICY_FILE.is_file()}))
"""
    seen = json.loads(run_installed(installed, tmp_path, "-c", script).stdout)
    assert Path(seen["package"]).is_relative_to(installed)
    assert Path(seen["model_dir"]) == Path("models/default")
    assert Path(seen["model_dir_resolved"]) == (tmp_path / "models" / "default").resolve()
    assert seen["decision_db"] == "sqlite:///runs/decisions.sqlite"  # ./runs of the working directory
    assert Path(seen["default_policy"]).is_relative_to(installed) and seen["policy_exists"]
    assert seen["policy_file"] == seen["default_policy"]


def test_installed_classify_routes_every_row(installed: Path, tmp_path: Path):
    rows = [{"text": "hi"}, {"text": "Prove that there are infinitely many primes."}, {"id": 3, "text": "ok"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run_installed(
        installed, tmp_path, "-m", "tierwise", "classify", "--model", str(MODEL),
        "--input", "in.jsonl", "--output", "out.jsonl",
    )  # fmt: skip
    routed = read_jsonl(tmp_path / "out.jsonl")
    assert len(routed) == len(rows)
    # By hand: a proof needs the top tier; a greeting is most likely fast and never sent to the top.
    assert routed[1]["tier"] == "frontier"
    for greeting in (routed[0], routed[2]):
        assert greeting["tier"] in ("fast", "balanced") and most_likely(greeting) == "fast"
    assert routed[2]["id"] == 3  # other fields pass through
    # The checkout routes the same file the same way: same code, same packaged policy.
    subprocess.run(
        [sys.executable, "-m", "tierwise", "classify", "--model", str(MODEL), "--input", "in.jsonl"]
        + ["--output", "checkout.jsonl"],
        cwd=tmp_path, env=without_settings(), check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    checkout = read_jsonl(tmp_path / "checkout.jsonl")
    assert [(r["tier"], r["reasons"]) for r in routed] == [(r["tier"], r["reasons"]) for r in checkout]
    for ours, theirs in zip(routed, checkout, strict=True):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)


def test_installed_service_answers_classify(installed: Path, tmp_path: Path):
    script = f"""
import json, tierwise
from pathlib import Path
from fastapi.testclient import TestClient
from tierwise.service.app import create_app
from tierwise.service.settings import Settings
app = create_app(Settings(model_dir=Path({str(MODEL)!r})))
with TestClient(app) as client:
    ready = client.get("/readyz").status_code
    answer = client.post("/classify", json={{"text": "hello, how are you?"}})
print(json.dumps({{"package": tierwise.__file__, "ready": ready, "status": answer.status_code,
    "body": answer.json()}}))
"""
    seen = json.loads(run_installed(installed, tmp_path, "-c", script).stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(installed)
    assert seen["ready"] == 200 and seen["status"] == 200, seen
    assert seen["body"]["tier"] in ("fast", "balanced") and most_likely(seen["body"]) == "fast"  # a greeting
    assert set(seen["body"]["probabilities"]) == {"fast", "balanced", "frontier"}
    assert (tmp_path / "runs" / "decisions.sqlite").is_file()  # the decision log, under ./runs
    assert not list(installed.rglob("*.sqlite"))  # nothing written into the installed package
