"""Reproducible installs: the lock covers every package the extras pull in, and the Makefile installs
with it as constraints."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from serving.reliability import lock_versions

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "tests" / "requirements-lock.txt"


def extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
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
    needed = closure(wanted)
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
