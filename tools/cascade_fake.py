"""A scripted OpenAI-compatible upstream whose cheap deployment fails some answers, for the cascade.

    python -m tools.cascade_fake --port 8401   # then point a LiteLLM config's api_base at /v1

It answers `/v1/chat/completions` for any model, streamed (SSE) or not, and honours what a request
asks for: JSON (`response_format` json_object, or an instance of a json_schema), tool calls (a call of
the first offered tool with arguments made from its parameter schema), and the project's rubric judge
prompt (tools/fake_llm.py's scripted grades). Per model, `Faults` make a share of its answers bad, chosen
by a hash of (seed, model, request text), so a run is the same for the same seed:

- `malformed`: of the requests asking for JSON or tools, the JSON is cut short (it does not parse);
- `truncate`: the answer stops on its token limit (`finish_reason: length`);
- `refuse`: "I'm sorry, but I can't help with that."

The stronger models answer well. Every call is recorded (model, the request's text), so a benchmark can
count calls per model and check that no personal data reached a public model. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tools.fake_llm import FakeScript, is_judge_prompt, judge_text

REFUSAL_TEXT = "I'm sorry, but I can't help with that."


@dataclass(frozen=True)
class Faults:
    malformed: float = 0.0  # of JSON / tool requests
    truncate: float = 0.0
    refuse: float = 0.0


@dataclass
class CascadeUpstream:
    """What the fake answers; `hits` records each call as (model, request text)."""

    faults: dict[str, Faults] = field(default_factory=dict)
    seed: int = 0
    latency_seconds: float = 0.0
    judge_script: FakeScript = field(default_factory=lambda: FakeScript({}))
    hits: list[tuple[str, str]] = field(default_factory=list)
    usage: list[tuple[str, int, int]] = field(default_factory=list)  # (model, prompt, completion tokens)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, model: str, text: str) -> float:
        """A number in [0, 1) fixed by (seed, model, text)."""
        digest = hashlib.sha256(f"{self.seed}|{model}|{text}".encode()).hexdigest()[:12]
        return int(digest, 16) / float(16**12)

    def fault(self, model: str, text: str, structured: bool) -> str | None:
        """Which fault this call gets: malformed, truncate, refuse, or None."""
        faults = self.faults.get(model)
        if faults is None:
            return None
        x = self.draw(model, text)
        for name, share in (
            ("malformed", faults.malformed if structured else 0.0),
            ("truncate", faults.truncate),
            ("refuse", faults.refuse),
        ):
            if x < share:
                return name
            x -= share
        return None

    def take(self) -> list[tuple[str, str]]:
        with self.lock:
            hits, self.hits, self.usage = self.hits, [], []
        return hits

    def take_usage(self) -> list[tuple[str, int, int]]:
        with self.lock:
            usage, self.usage = self.usage, []
        return usage


def request_text(messages: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        parts.append(str(content or ""))
    return "\n".join(parts)


def instance_of(schema: Any, depth: int = 0) -> Any:
    """A small value matching a JSON schema (object, array, string, number, integer, boolean, enum)."""
    if not isinstance(schema, Mapping) or depth > 6:
        return "value"
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance_of(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [instance_of(schema.get("items") or {"type": "string"}, depth + 1)]
    return {"string": "value", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(
        str(kind), "value"
    )


def json_answer(body: Mapping[str, Any], model: str) -> str | None:
    form = body.get("response_format")
    if not isinstance(form, Mapping):
        return None
    if form.get("type") == "json_object":
        return json.dumps({"answer": f"from {model}", "ok": True})
    if form.get("type") == "json_schema":
        spec = form.get("json_schema") or {}
        return json.dumps(instance_of(spec.get("schema") if isinstance(spec, Mapping) else {}))
    return None


def tool_call(body: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = [
        t
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    if not tools:
        return None
    function = tools[0]["function"]
    arguments = json.dumps(instance_of(function.get("parameters") or {"type": "object"}))
    return {
        "id": "call_fake",
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments},
    }


def answer_message(
    upstream: CascadeUpstream, body: Mapping[str, Any], model: str
) -> tuple[dict[str, Any], str]:
    """(the assistant message, finish_reason) for a request, faults included."""
    messages = body.get("messages") or []
    if is_judge_prompt(messages):
        return {"role": "assistant", "content": judge_text(upstream.judge_script, messages)}, "stop"
    text = request_text(messages)
    call, as_json = tool_call(body), json_answer(body, model)
    fault = upstream.fault(model, text, call is not None or as_json is not None)
    if fault == "refuse":
        return {"role": "assistant", "content": REFUSAL_TEXT}, "stop"
    if call is not None:
        if fault in ("malformed", "truncate"):
            call["function"]["arguments"] = call["function"]["arguments"][:-2]
        finish = "length" if fault == "truncate" else "tool_calls"
        return {"role": "assistant", "content": None, "tool_calls": [call]}, finish
    content = as_json if as_json is not None else f"Answer from {model}: " + "a complete reply. " * 4
    if fault == "malformed":
        content = content[: max(1, len(content) // 2)]
    if fault == "truncate":
        return {"role": "assistant", "content": content[: max(1, len(content) // 3)]}, "length"
    return {"role": "assistant", "content": content}, "stop"


def _usage(body: Mapping[str, Any], message: Mapping[str, Any]) -> dict[str, int]:
    prompt = len(request_text(body.get("messages") or [])) // 4 + 1
    completion = (
        len(
            json.dumps(message.get("tool_calls"))
            if message.get("tool_calls")
            else message.get("content") or ""
        )
        // 4
        + 1
    )
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunks(
    model: str, message: Mapping[str, Any], finish: str, usage: dict[str, int]
) -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        deltas.append({"tool_calls": [{"index": 0, **call}]})
    else:
        text = str(message.get("content") or "")
        step = max(1, len(text) // 3)
        deltas += [{"content": text[i : i + step]} for i in range(0, len(text), step)]
    out = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage})
    return out


def stream_response(lines: list[str]) -> dict[str, Any]:
    """One chat completion from a stream's SSE lines: text joined, tool calls merged, last finish."""
    text, finish, calls = "", None, {}
    for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                merged = calls.setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                merged["function"]["name"] += function.get("name") or ""
                merged["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message = {"role": "assistant", "content": text or None, "tool_calls": list(calls.values()) or None}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def create_cascade_app(upstream: CascadeUpstream) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = str(body.get("model"))
        with upstream.lock:
            upstream.hits.append((model, request_text(body.get("messages") or [])))
        if upstream.latency_seconds:
            await asyncio.sleep(upstream.latency_seconds)
        message, finish = answer_message(upstream, body, model)
        usage = _usage(body, message)
        with upstream.lock:
            upstream.usage.append((model, usage["prompt_tokens"], usage["completion_tokens"]))
        if body.get("stream"):

            async def events() -> AsyncIterator[str]:
                for chunk in _chunks(model, message, finish, usage):
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    return app


class AppServer:
    """An ASGI app under uvicorn in a thread, on a free port of 127.0.0.1 (stop() ends it)."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, backlog=1024)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("a local test server did not start within 30 s")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8401)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-model", default="gpt-4o-mini")
    args = parser.parse_args(argv)
    upstream = CascadeUpstream({args.fast_model: Faults(0.20, 0.05, 0.03)}, seed=args.seed)
    uvicorn.run(create_cascade_app(upstream), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
