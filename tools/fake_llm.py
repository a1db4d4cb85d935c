"""A local OpenAI-compatible server with scripted answers and judge verdicts (tests and benchmarks).

    python -m tools.fake_llm --port 8400 --judge-model judge   # then --base-url http://127.0.0.1:8400/v1

Each model has a strength (its tier index); each request needs a strength: the number after
`needs=` in its text, else a hash of the text modulo the number of tiers. An answer states its
model's strength, and the scripted judge reads both answers from its prompt: an answer is good when
its strength reaches what the request needs, so the right label of every request is known. The
script can also fail calls (any HTTP status), stall them past the client's timeout, hold every call
until the test releases it (`hold`), favour one position (`bias`) or write unreadable verdicts, so
retries, position swapping and parsing are tested against real HTTP. A call is counted in the `calls`
list the script had when the call arrived: one that a test's client gave up on and that ends later is
not counted in the next test's fresh script. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tierwise.evidence import judge

_NEEDS_RE = re.compile(r"needs=(\d)")
_STRENGTH_RE = re.compile(r"strength (\d)")


@dataclass
class FakeScript:
    """What the fake server answers. Mutate it between calls to script a test."""

    strengths: dict[str, int]  # model -> tier index (0 = cheapest)
    latency_seconds: float = 0.0
    statuses: list[int] = field(default_factory=list)  # the next calls answer these HTTP statuses, in order
    stalls: int = 0  # the next calls sleep `stall_seconds` (past the client's timeout)
    stall_seconds: float = 5.0
    hold: threading.Event | None = None  # when set to an unset event, every call waits until it is set
    held: int = 0  # calls that have waited for `hold`
    bias: str | None = None  # "A" or "B": the judge always prefers that position
    unreadable_verdicts: int = 0  # the next judge replies carry no verdict
    calls: list[tuple[str, str]] = field(default_factory=list)  # (model, "answer" | "judge")
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The server's base URL carries it (/g<generation>/v1): a test that swaps in a script of a new
    # generation never sees, nor has its statuses taken by, a call sent to an earlier one's URL,
    # however late the server gets to it.
    generation: int = 0
    # A replay's outcome labels: the strength a request (as the judge reads it) needs; None = as above.
    needs: Callable[[str], int] | None = None
    # Judge noise: flip(request, candidate strength) -> True turns that candidate's verdict around,
    # in both orders alike (so the pairwise judge sees a consistent, wrong verdict).
    verdict_flip: Callable[[str, int], bool] | None = None

    def needed(self, text: str) -> int:
        if self.needs is not None:
            return self.needs(text)
        match = _NEEDS_RE.search(text)
        if match:
            return int(match.group(1))
        levels = max(self.strengths.values()) + 1
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % levels

    def take(self, name: str) -> Any:
        """Pop one scripted event (a status, a stall, an unreadable verdict), if any is left."""
        with self.lock:
            if name == "status" and self.statuses:
                return self.statuses.pop(0)
            if name == "stall" and self.stalls:
                self.stalls -= 1
                return True
            if name == "unreadable" and self.unreadable_verdicts:
                self.unreadable_verdicts -= 1
                return True
        return None


def _text(messages: Sequence[Mapping[str, Any]]) -> str:
    return judge.conversation_block(messages)


def _between(text: str, start: str, end: str = judge.END_MARK) -> str:
    head = text.split(start, 1)[1] if start in text else ""
    return head.split(end, 1)[0]


def _strength(answer: str) -> int:
    match = _STRENGTH_RE.search(answer)
    return int(match.group(1)) if match else -1


def answer_text(script: FakeScript, model: str, messages: Sequence[Mapping[str, Any]]) -> str:
    strength = script.strengths.get(model, 0)
    digest = hashlib.sha256(_text(messages).encode()).hexdigest()[:12]
    return f"Answer from {model} (strength {strength}) to request {digest}."


def judge_text(script: FakeScript, messages: Sequence[Mapping[str, Any]]) -> str:
    prompt = str(messages[1]["content"]) if len(messages) > 1 else ""
    if script.take("unreadable"):
        return "Both answers have merit; I cannot decide."
    request = _between(prompt, judge.REQUEST_MARK)
    needed = script.needed(request)
    if judge.ANSWER_MARK in prompt:  # rubric
        good = _strength(_between(prompt, judge.ANSWER_MARK)) >= needed
        return f"Checked the answer.\nGRADE: {5 if good else 2}"
    if script.bias:
        return f"A is shown {'first' if script.bias == 'A' else 'second'}.\nVERDICT: {script.bias}"
    strength_a = _strength(_between(prompt, judge.ANSWER_A_MARK))
    strength_b = _strength(_between(prompt, judge.ANSWER_B_MARK))
    good_a, good_b = strength_a >= needed, strength_b >= needed
    if script.verdict_flip is not None:  # the weaker answer is the candidate
        if strength_a < strength_b and script.verdict_flip(request, strength_a):
            good_a = not good_a
        if strength_b < strength_a and script.verdict_flip(request, strength_b):
            good_b = not good_b
    verdict = "TIE" if good_a == good_b else ("A" if good_a else "B")
    return f"Compared both.\nVERDICT: {verdict}"


def is_judge_prompt(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Judge calls open with the judge's system prompt (the judge may be a tier's model too)."""
    first = messages[0].get("content") if messages else None
    return first in {judge.PAIRWISE_SYSTEM, judge.RUBRIC_SYSTEM}


def completion(model: str, messages: Sequence[Mapping[str, Any]], text: str) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4 + 1},
    }


def create_fake_app(script: FakeScript) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        return await answer(request, script.generation)

    @app.post("/g{generation}/v1/chat/completions")
    async def chat_of_generation(request: Request, generation: int) -> JSONResponse:
        return await answer(request, generation)

    async def answer(request: Request, generation: int) -> JSONResponse:
        body = await request.json()
        model, messages = str(body.get("model")), body.get("messages") or []
        if generation != script.generation:  # sent to a script that was swapped out: answer, record nothing
            if model not in script.strengths:
                return JSONResponse({"error": {"message": f"model {model} not found"}}, status_code=404)
            return JSONResponse(completion(model, messages, "a late answer"))
        # The script's lists as this call found them: a test that swaps in a fresh script (as the
        # tests' fixtures do) does not see the late end of a call an earlier test gave up on.
        calls, lock, hold = script.calls, script.lock, script.hold
        status = script.take("status")
        if status is not None:
            return JSONResponse({"error": {"message": f"scripted {status}"}}, status_code=status)
        if hold is not None:
            with lock:
                script.held += 1
            while not hold.is_set():
                await asyncio.sleep(0.005)
        if script.take("stall"):
            await asyncio.sleep(script.stall_seconds)
        if script.latency_seconds:
            await asyncio.sleep(script.latency_seconds)
        is_judge = is_judge_prompt(messages)
        with lock:
            calls.append((model, "judge" if is_judge else "answer"))
        if model not in script.strengths:
            return JSONResponse({"error": {"message": f"model {model} not found"}}, status_code=404)
        text = judge_text(script, messages) if is_judge else answer_text(script, model, messages)
        return JSONResponse(completion(model, messages, text))

    return app


class FakeServer:
    """The fake app under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, script: FakeScript, port: int = 0) -> None:
        import uvicorn

        self.script = script
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(create_fake_app(script), log_level="warning", lifespan="off", backlog=512)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def base_url(self) -> str:
        """The current script's URL: calls sent to it are never counted by a later script."""
        return f"http://127.0.0.1:{self.port}/g{self.script.generation}/v1"

    def start(self) -> FakeServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake LLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@contextmanager
def fake_server(script: FakeScript) -> Iterator[FakeServer]:
    server = FakeServer(script).start()
    try:
        yield server
    finally:
        server.stop()


def policy_strengths(policy_file: Any) -> dict[str, int]:
    """Every model of a policy's tiers, with its tier index as strength."""
    from tierwise.core.policy_file import load_policy

    policy = load_policy(policy_file)
    return {model: index for index, tier in enumerate(policy.tiers) for model in tier.models}


def main(argv: list[str] | None = None) -> int:
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--policy", default=str(DEFAULT_POLICY_FILE), help="models and their tiers")
    parser.add_argument("--judge-model", default="judge")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    strengths = policy_strengths(args.policy)
    strengths.setdefault(args.judge_model, max(strengths.values()))
    script = FakeScript(strengths, latency_seconds=args.latency_ms / 1000)
    server = FakeServer(script, args.port).start()
    print(
        f"fake OpenAI-compatible server at {server.base_url} (judge model {args.judge_model!r}); Ctrl-C stops"
    )
    try:
        while server.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
