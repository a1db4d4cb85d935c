"""Reproducible installs: the lock covers every package the extras pull in, and the Makefile installs
with it as constraints."""

import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from tierwise.core.policy_file import load_policy

from tools.reliability import lock_versions

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "tests" / "requirements-lock.txt"


def extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]


def training_dependencies() -> list[str]:
    """The `tierwise-training` distribution's requirements (training/pyproject.toml)."""
    return tomllib.loads((REPO / "training" / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]


def closure(requirements: list[str]) -> dict[str, Requirement]:
    """Every requirement reachable from `requirements` through the installed distributions' metadata
    (markers evaluated for this interpreter, extras followed)."""
    seen: dict[tuple[str, str], Requirement] = {}
    todo = [(Requirement(text), "") for text in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        wanted = sorted(requirement.extras) or [""]
        for wanted_extra in wanted:
            if (name, wanted_extra) in seen:
                continue
            seen[(name, wanted_extra)] = requirement
            for text in metadata.requires(requirement.name) or []:
                todo.append((Requirement(text), wanted_extra))
    return {name: requirement for (name, _), requirement in seen.items()}


def test_the_lock_pins_every_package_the_extras_pull_in():
    locked = {canonicalize_name(name): version for name, version in lock_versions(LOCK).items()}
    wanted = [text for requirements in extras().values() for text in requirements]
    needed = closure([*wanted, *training_dependencies()])
    assert "torch" in needed, "the training distribution's requirements must be walked too"
    assert len(needed) > 50, "the walk should reach the transitive dependencies"
    missing = sorted(name for name in needed if name not in locked)
    assert not missing, f"not in {LOCK.name}: {missing}; run `make lock` and commit the lock"
    mismatched = [
        f"{name}: lock has {locked[name]}, {requirement} is needed"
        for name, requirement in needed.items()
        if not requirement.specifier.contains(Version(locked[name]), prereleases=True)
    ]
    assert not mismatched, f"the lock contradicts the extras: {mismatched}"


def test_the_closure_walk_finds_a_missing_package():
    # The check above must be able to fail: a dependency dropped from the lock is reported.
    needed = closure(["fastapi==0.165.0"])
    assert {"fastapi", "starlette", "pydantic", "pydantic-core"} <= set(needed)


def test_make_install_uses_the_lock_as_constraints():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    installs = [line for line in makefile.splitlines() if re.search(r"\$\(PIP\) install .*-e ", line)]
    assert len(installs) == 2, installs
    assert all("-c $(LOCK)" in line for line in installs), installs
    all_extras = re.search(r"^ALL_EXTRAS := (.+)$", makefile, re.M)
    assert all_extras is not None
    assert set(all_extras.group(1).split(",")) == set(extras()), "make install must install every extra"
    assert any("-e $(TRAINING)" in line for line in installs), "make install must install tierwise-training"
    assert re.search(r"^TRAINING := \./training$", makefile, re.M), "TRAINING must name the training folder"


# -- deployment artifacts: Dockerfile and deploy/k8s ------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"
K8S = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (the dev extra): run make install")
    return str(path)


def test_the_dockerfile_passes_hadolint():
    done = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_manifests_pass_the_kubernetes_schemas_and_a_broken_one_does_not(tmp_path):
    validate = tool("kubernetes-validate")
    kinds = {yaml.safe_load_all(path.read_text()).__next__()["kind"] for path in K8S}
    assert {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    done = subprocess.run([validate, "--strict", *map(str, K8S)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "pdb.yaml"
    broken.write_text(
        (REPO / "deploy" / "k8s" / "pdb.yaml").read_text().replace("minAvailable", "minAvailabel")
    )
    assert subprocess.run([validate, "--strict", str(broken)], capture_output=True).returncode != 0


def test_the_manifests_fit_the_image_and_the_service():
    deployment = next(yaml.safe_load_all((REPO / "deploy" / "k8s" / "deployment.yaml").read_text()))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {item["name"]: item for item in container["env"]}
    assert env["TIERWISE_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "tierwise-keys"
    grace = int(env["TIERWISE_GRACEFUL_SHUTDOWN_SECONDS"]["value"])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 5
    dockerfile = DOCKERFILE.read_text()
    assert (
        "USER 10001" in dockerfile
        and deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    )
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    assert "-c tests/requirements-lock.txt" in dockerfile


def test_the_configmap_is_the_packaged_policy(tmp_path):
    # A cluster must route as `make serve` does: the long-context rule, the routes, the private tier.
    configmap = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())
    packaged = REPO / "serving" / "tierwise" / "core" / "policy.yaml"
    assert configmap["data"]["policy.yaml"] == packaged.read_text(), "regenerate it: make k8s-policy"
    path = tmp_path / "policy.yaml"
    path.write_text(configmap["data"]["policy.yaml"])
    policy = load_policy(path)
    assert list(policy.tier_names) == ["fast", "balanced", "frontier"] and policy.private_tier is not None
    assert policy.long_context.threshold_tokens == 6000 and policy.long_context.min_tier == "balanced"
    assert policy.routes["legal-review"].tier == "frontier"


def test_the_configmap_generator_writes_any_policy_verbatim(tmp_path):
    from tools.k8s_policy import main as k8s_policy

    own = tmp_path / "mine.yaml"
    own.write_text("# my policy\ntiers:\n  - name: fast\n    models: [a]\n\n  - name: top\n    models: [b]\n")
    out = tmp_path / "configmap.yaml"
    assert k8s_policy(["--policy", str(own), "--output", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["kind"] == "ConfigMap" and written["metadata"]["name"] == "tierwise-policy"
    assert written["data"]["policy.yaml"] == own.read_text()


def dockerfile_build_steps() -> tuple[list[tuple[list[str], str]], list[str]]:
    """The build stage's COPY ([sources], destination) steps and RUN commands."""
    build = DOCKERFILE.read_text().split("\nFROM ", 2)[1]
    lines = build.replace("\\\n", " ").splitlines()
    copies = [(line.split()[1:-1], line.split()[-1]) for line in lines if line.startswith("COPY ")]
    runs = [line[4:].strip() for line in lines if line.startswith("RUN ")]
    return copies, runs


@pytest.mark.slow
def test_the_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path):
    """The image's build stage without a container engine: its COPY steps into a folder, its RUN
    commands there with a fresh venv in place of /opt/venv; the service then imports and starts."""
    copies, runs = dockerfile_build_steps()
    src = tmp_path / "src"
    for sources, destination in copies:
        for source in sources:
            target = src / destination
            if destination.endswith("/") or len(sources) > 1:
                target = target / Path(source).name
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    venv = tmp_path / "venv"
    started = time.monotonic()
    for command in runs:
        command = command.replace("/opt/venv", str(venv)).replace(
            "python -m venv", f"{sys.executable} -m venv"
        )
        done = subprocess.run(command, shell=True, cwd=src, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    seconds = time.monotonic() - started
    check = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import tierwise.service.app, psycopg, prometheus_client, sqlalchemy",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True).returncode == 0
    print(f"build-stage install steps: {seconds:.0f} s")
