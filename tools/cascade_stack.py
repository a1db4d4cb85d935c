"""The cascade's real-parts stack: the LiteLLM proxy (`litellm --config`) with the config documented
in serving/tierwise/gateway/LITELLM.md and a policy holding its documented `cascade:` block, in front
of the scripted upstream of tools/cascade_fake.py, with a tierwise service (the tiny test model of
tools/tiny_model.py, decision log on) behind the hook. Everything listens on 127.0.0.1.

Used by `python -m tools.cascade_bench` and tests/gateway/test_cascade_proxy.py; the proxy launcher
(`litellm_proxy`, `proxy_environment`) also by tests/gateway/test_litellm_proxy.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tools.cascade_fake import AppServer, CascadeUpstream, create_cascade_app
from tools.harness import REPO_DIR, free_port

LITELLM_DOC = REPO_DIR / "serving" / "tierwise" / "gateway" / "LITELLM.md"
MASTER_KEY = "sk-tierwise-cascade-master-key"
START_SECONDS = 90.0
# The hook's wait for tierwise: generous here, so that on a busy 2-core machine every request is
# routed by the classifier (a late answer would fail upward to the top tier, which has no cascade).
BENCH_TIERWISE_TIMEOUT_SECONDS = 5.0


class StackError(RuntimeError):
    """A part of the stack did not start; the message holds its log's tail."""


def documented_blocks() -> list[Any]:
    """Every ```yaml block of LITELLM.md, parsed."""
    text = LITELLM_DOC.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]


def documented_proxy_config() -> dict[str, Any]:
    for block in documented_blocks():
        if isinstance(block, dict) and "model_list" in block:
            return block
    raise StackError(f"{LITELLM_DOC} has no ```yaml block with a model_list")


def documented_cascade() -> dict[str, Any]:
    for block in documented_blocks():
        if isinstance(block, dict) and set(block) == {"cascade"}:
            return block
    raise StackError(f"{LITELLM_DOC} has no ```yaml block holding only `cascade:`")


def policy_with_cascade(folder: Path, cascade: dict[str, Any] | None = None) -> Path:
    """The packaged policy plus the documented `cascade:` block (or `cascade`), written into `folder`."""
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE

    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    raw.update(cascade if cascade is not None else documented_cascade())
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Stack:
    proxy_url: str
    upstream: CascadeUpstream
    tierwise_app: Any
    decision_db: str
    policy_file: Path
    log_file: Path

    def chat(self, body: dict[str, Any], timeout: float = 60.0) -> httpx.Response:
        return httpx.post(
            f"{self.proxy_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json=body,
            timeout=timeout,
        )


def litellm_command() -> list[str]:
    script = Path(sys.executable).with_name("litellm")
    if not script.is_file():
        raise StackError(f"no `litellm` command next to {sys.executable}: pip install -e '.[gateway]'")
    return [str(script)]


def proxy_environment(
    upstream_url: str,
    tierwise_url: str,
    policy_file: Path,
    tierwise_timeout_seconds: float = BENCH_TIERWISE_TIMEOUT_SECONDS,
) -> dict[str, str]:
    """The proxy's environment: fake keys, every provider at `upstream_url`, the hook at `tierwise_url`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("LITELLM_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "TIERWISE_", "DATABASE_URL")
        )
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no network: the bundled price map
        LITELLM_MASTER_KEY=MASTER_KEY,
        OPENAI_API_KEY="sk-fake-openai",
        OPENAI_BASE_URL=f"{upstream_url}/v1",
        ANTHROPIC_API_KEY="sk-ant-fake",
        ANTHROPIC_API_BASE=upstream_url,
        GEMINI_API_KEY="fake-gemini-key",
        GEMINI_API_BASE=f"{upstream_url}/v1beta",  # LiteLLM calls {base}/models/{model}:generateContent
        PRIVATE_LLM_API_BASE=f"{upstream_url}/v1",
        PRIVATE_LLM_API_KEY="none",
        TIERWISE_URL=tierwise_url,
        TIERWISE_TIMEOUT_SECONDS=str(tierwise_timeout_seconds),
        TIERWISE_POLICY_FILE=str(policy_file),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _wait_for_proxy(process: subprocess.Popen[bytes], url: str, log_file: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise StackError(
                f"the LiteLLM proxy exited with {process.returncode}:\n{log_file.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise StackError(
                f"the LiteLLM proxy did not answer within {START_SECONDS:.0f} s:\n{log_file.read_text()}"
            )
        time.sleep(0.2)


@contextmanager
def litellm_proxy(config: dict[str, Any], env: dict[str, str], folder: Path) -> Iterator[str]:
    """`litellm --config` with `config` and `env` on a free port of 127.0.0.1, its log in `folder`;
    yields its URL once it answers, and stops it on exit. Raises StackError when it cannot start."""
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_file = folder / "proxy.log"
    command = [*litellm_command(), "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port)]
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_proxy(process, url, log_file)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def cascade_stack(upstream: CascadeUpstream, cascade: dict[str, Any] | None = None) -> Iterator[Stack]:
    """The stack, up; stopped on exit. `cascade`: a policy `cascade:` block instead of the documented one."""
    from tierwise.service.app import create_app

    from tools.tiny_model import make_settings, write_model_folder

    with tempfile.TemporaryDirectory(prefix="tierwise-cascade-") as tmp:
        folder = Path(tmp)
        policy_file = policy_with_cascade(folder, cascade)
        decision_db = f"sqlite:///{folder / 'decisions.sqlite'}"
        settings = make_settings(
            write_model_folder(folder / "tiny"),
            record_decisions=True,
            decision_db=decision_db,
            record_prompts=True,
            policy_file=policy_file,
        )
        tierwise_app = create_app(settings)
        tierwise = AppServer(tierwise_app, lifespan="on")
        fake = AppServer(create_cascade_app(upstream))
        env = proxy_environment(fake.url, tierwise.url, policy_file)
        try:
            with litellm_proxy(documented_proxy_config(), env, folder) as url:
                yield Stack(url, upstream, tierwise_app, decision_db, policy_file, folder / "proxy.log")
        finally:
            tierwise.stop()
            fake.stop()


def cascade_feedback(
    decision_db: str,
    settle_seconds: float = 30.0,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every feedback row with source `cascade`. The hook sends them in the background: with `until`,
    read until the rows satisfy it (`settle_seconds` only bounds a hang); without, until their number
    stops growing (the bench, which cannot know how many to expect)."""
    import sqlalchemy as sa
    from tierwise.core.cascade_names import CASCADE_SOURCE
    from tierwise.evidence.decision_log import DecisionStore
    from tierwise.evidence.decision_schema import feedback_table

    store = DecisionStore(decision_db)
    query = (
        sa.select(feedback_table)
        .where(feedback_table.c.source == CASCADE_SOURCE)
        .order_by(feedback_table.c.id)
    )
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle_seconds
    try:
        while True:
            with store.engine.connect() as connection:
                latest = [dict(r._mapping) for r in connection.execute(query)]
            settled = until(latest) if until is not None else bool(latest) and len(latest) == len(rows)
            if settled or time.monotonic() > deadline:
                return latest
            rows = latest
            time.sleep(0.05 if until is not None else 1.0)
    finally:
        store.close()


def exported_rows(decision_db: str) -> int:
    """Rows `tierwise export-feedback` writes for `make data USER_DATA=...` from cascade feedback."""
    from tierwise.core.cascade_names import CASCADE_SOURCE
    from tierwise.evidence.decision_log import DecisionStore
    from tierwise.ops.feedback_report import feedback_rows

    store = DecisionStore(decision_db)
    labeled = [
        r for r in store.labeled_decisions() if r.feedback is not None and r.feedback.source == CASCADE_SOURCE
    ]
    store.close()
    rows, _ = feedback_rows(labeled, ("fast", "balanced", "frontier"), "production")
    return len(rows)


def report_section(decision_db: str, policy_file: Path) -> list[str]:
    """The cascade section `tierwise report` writes from this decision log."""
    from tierwise.core.policy_file import load_policy
    from tierwise.evidence.decision_log import DecisionStore
    from tierwise.ops.cascade_report import cascade_checks, cascade_summary, render_cascade

    store = DecisionStore(decision_db)
    try:
        section = cascade_summary(
            store.labeled_decisions(), cascade_checks(store, None, None), load_policy(policy_file)
        )
    finally:
        store.close()
    return render_cascade(section)
