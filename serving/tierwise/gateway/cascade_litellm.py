"""The cascade inside LiteLLM: retries go through the same `litellm.Router` (the SDK's, or the proxy's
`llm_router`), so they get its deployments, keys, fallbacks, retries and spend logging.

- Non-streamed answers are checked; a failed one is replaced by the next tier's answer (the SDK
  wrapper returns it; the proxy's `async_post_call_success_hook` returns it and the proxy sends it).
- Streams: a stream that asks for JSON (`response_format`) or offers tools is buffered whole, checked,
  and retried as a stream one tier up when it fails; the client then gets the chunks of the answer
  that passed (or of the last one tried) at once, so its first token comes after the whole answer.
  `streams: pass` in the policy turns this off. A plain-text stream is passed through unchecked:
  its tokens are the client's as they come, so there is nothing left to retry.
- A request opts out with `metadata: {"tierwise_cascade": false}`.

What was tried and why is in the request metadata (`metadata["tierwise"]["cascade"]`, which LiteLLM's
logs and callbacks see) and in the `x-tierwise-cascade` response header, e.g.
`fast:invalid_json balanced:ok; stop=passed` (and `x-tierwise-cascade-added-ms`: the latency it
added); for a stream the header is sent before the answer, so it
says `stream=buffered` or `stream=unchecked` and the tiers tried are in the metadata.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tierwise.gateway.cascade import RetryPlanner, Rung, is_structured
from tierwise.gateway.cascade_config import load_cascade_config
from tierwise.gateway.cascade_outcome import HEADER, Answer, CascadeOutcome
from tierwise.gateway.cascade_runner import Cascade, PrivateCheck, cascade_stats
from tierwise.gateway.cascade_stats import CascadeStats
from tierwise.gateway.wire import Routing

logger = logging.getLogger("tierwise.cascade")

OPT_OUT_KEY = "tierwise_cascade"  # metadata: false turns the cascade off for one request
MODE_CHECK = "check"  # a non-streamed answer: checked
MODE_BUFFER = "buffered"  # a stream asking for JSON or tools: buffered and checked
MODE_UNCHECKED = "unchecked"  # a plain-text stream (or `streams: pass`): passed through
MODE_OFF = "off"  # opted out
# Request fields a retry must not reuse: the proxy's per-call logging object and call id.
_PER_CALL_KEYS = ("litellm_logging_obj", "litellm_call_id")


def answered_group(response: Any, default: str | None) -> str | None:
    """The model group that answered (after LiteLLM's own fallbacks), from the router's headers."""
    hidden = getattr(response, "_hidden_params", None) or {}
    headers = hidden.get("additional_headers") or {} if isinstance(hidden, Mapping) else {}
    group = headers.get("x-litellm-model-group") if isinstance(headers, Mapping) else None
    return str(group) if group else default


def build_from_chunks(chunks: Sequence[Any], messages: Any) -> Any:
    """One response from a stream's chunks (what the checks read)."""
    import litellm

    return litellm.stream_chunk_builder(list(chunks), messages=messages) if chunks else {"choices": []}


def routing_from_metadata(meta: Mapping[str, Any]) -> Routing:
    """The decision the pre-call hook wrote into the request's metadata (`annotate`)."""
    chain = [str(g) for g in meta.get("chain") or []]
    return Routing(
        tier=str(meta.get("tier")),
        model=chain[0] if chain else "",
        fallbacks=tuple(chain[1:]),
        request_id=meta.get("request_id"),
        model_version=meta.get("model_version"),
        reasons=tuple(meta.get("reasons") or ()),
        failed_upward=bool(meta.get("failed_upward")),
    )


class LiteLLMCascade:
    """A `Cascade` whose retries and judge calls go through a LiteLLM router."""

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade
        self.config = cascade.config

    @classmethod
    def from_policy(
        cls,
        policy_file: Path | None,
        feedback_client: Any = None,
        model_groups: Mapping[str, str] | None = None,
        prometheus: bool = False,
    ) -> LiteLLMCascade | None:
        """The cascade of a policy file's `cascade:` section (None when it has none or it is off)."""
        from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy

        path = policy_file or DEFAULT_POLICY_FILE
        config = load_cascade_config(path)
        if config is None:
            return None
        planner = RetryPlanner(load_policy(path), config, model_groups)
        return cls(Cascade(planner, feedback_client, cascade_stats(planner, prometheus)))

    @property
    def stats(self) -> CascadeStats:
        return self.cascade.stats

    def use_model_groups(self, model_groups: Mapping[str, str]) -> None:
        """The router's names of the policy's models ({policy model: group}), from the wrapper or hook
        that routes with them, so the retries read the same chain (`from_policy`'s own is replaced)."""
        if model_groups:
            self.cascade.planner.use_model_groups(model_groups)

    def mode(self, request: Mapping[str, Any]) -> str:
        metadata = request.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get(OPT_OUT_KEY) is False:
            return MODE_OFF
        if not request.get("stream"):
            return MODE_CHECK
        if self.config.streams == "buffer" and is_structured(request):
            return MODE_BUFFER
        return MODE_UNCHECKED

    # -- calls through the router --------------------------------------------------------------------

    @staticmethod
    def retry_kwargs(request: Mapping[str, Any], rung: Rung, attempt: int) -> dict[str, Any]:
        """The request's fields for a call of `rung`: its group and the chain's rest as fallbacks."""
        kwargs = {k: v for k, v in request.items() if k not in _PER_CALL_KEYS}
        metadata = copy.deepcopy(dict(kwargs.get("metadata") or {}))
        tierwise = dict(metadata.get("tierwise") or {})
        tierwise["cascade_attempt"] = attempt
        metadata["tierwise"] = tierwise
        kwargs.update(model=rung.group, fallbacks=list(rung.fallbacks), metadata=metadata)
        kwargs["litellm_call_id"] = str(uuid.uuid4())
        return kwargs

    def _judge_kwargs(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        from tierwise.evidence.judge import JUDGE_MAX_TOKENS

        assert self.config.judge is not None
        return {"model": self.config.judge.model, "messages": messages, "max_tokens": JUDGE_MAX_TOKENS}

    def _async_judge(self, router: Any) -> Callable[[list[dict[str, str]]], Any] | None:
        if self.config.judge is None:
            return None

        async def judge(messages: list[dict[str, str]]) -> str | None:
            response = await router.acompletion(**self._judge_kwargs(messages))
            return str(response.choices[0].message.content or "")

        return judge

    def _sync_judge(self, router: Any) -> Callable[[list[dict[str, str]]], str | None] | None:
        if self.config.judge is None:
            return None

        def judge(messages: list[dict[str, str]]) -> str | None:
            response = router.completion(**self._judge_kwargs(messages))
            return str(response.choices[0].message.content or "")

        return judge

    # -- non-streamed answers ------------------------------------------------------------------------

    async def acheck(
        self,
        router: Any,
        request: Mapping[str, Any],
        routing: Routing,
        chain: Sequence[str],
        response: Any,
        private: PrivateCheck,
        route: str | None = None,
    ) -> CascadeOutcome:
        """Check `response` to `request` and retry through `router` while it fails."""
        attempts = 0

        async def call(rung: Rung) -> Answer:
            nonlocal attempts
            attempts += 1
            answer = await router.acompletion(**self.retry_kwargs(request, rung, attempts))
            return Answer(answer, answered_group(answer, rung.group), answer)

        first = Answer(response, answered_group(response, chain[0] if chain else None), response)
        return await self.cascade.arun(
            request, routing, chain, first, call, private, self._async_judge(router), route
        )

    def check(
        self,
        router: Any,
        request: Mapping[str, Any],
        routing: Routing,
        chain: Sequence[str],
        response: Any,
        private: bool | Callable[[], bool],
        route: str | None = None,
    ) -> CascadeOutcome:
        """`acheck` for blocking code (`litellm.Router.completion`)."""
        attempts = 0

        def call(rung: Rung) -> Answer:
            nonlocal attempts
            attempts += 1
            answer = router.completion(**self.retry_kwargs(request, rung, attempts))
            return Answer(answer, answered_group(answer, rung.group), answer)

        first = Answer(response, answered_group(response, chain[0] if chain else None), response)
        return self.cascade.run(
            request, routing, chain, first, call, private, self._sync_judge(router), route
        )

    # -- streams -------------------------------------------------------------------------------------

    async def abuffered_stream(
        self,
        router: Any,
        request: Mapping[str, Any],
        routing: Routing,
        chain: Sequence[str],
        stream: Any,
        private: PrivateCheck,
        route: str | None = None,
        on_outcome: Callable[[CascadeOutcome], None] | None = None,
    ) -> AsyncIterator[Any]:
        """A stream asking for JSON or tools: buffered, checked, retried as a stream one tier up; the
        chunks of the answer that passed (or of the last one tried) are yielded."""
        messages = request.get("messages")
        attempts = 0

        async def call(rung: Rung) -> Answer:
            nonlocal attempts
            attempts += 1
            retried = await router.acompletion(
                **{**self.retry_kwargs(request, rung, attempts), "stream": True}
            )
            chunks = [chunk async for chunk in retried]
            return Answer(build_from_chunks(chunks, messages), answered_group(retried, rung.group), chunks)

        chunks = [chunk async for chunk in stream]
        group = answered_group(stream, chain[0] if chain else None)
        first = Answer(build_from_chunks(chunks, messages), group, chunks)
        outcome = await self.cascade.arun(
            request, routing, chain, first, call, private, self._async_judge(router), route
        )
        if on_outcome is not None:
            on_outcome(outcome)
        for chunk in outcome.answer.deliver:
            yield chunk


def attach(response: Any, outcome: CascadeOutcome) -> Any:
    """The outcome on the response LiteLLM returns: its `x-tierwise-cascade` header (the proxy sends
    `additional_headers`) and `_hidden_params["tierwise_cascade"]`."""
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict):
        headers = hidden.get("additional_headers")
        headers = headers if isinstance(headers, dict) else {}
        headers.update(outcome.headers())
        hidden["additional_headers"] = headers
        hidden["tierwise_cascade"] = outcome.metadata()
    return response


async def after_call(
    cascade: LiteLLMCascade,
    router: Any,
    request: dict[str, Any],
    response: Any,
    private: PrivateCheck,
    route: str | None,
) -> Any:
    """What the SDK wrapper and the proxy hook return for a routed request's answer: checked and
    retried (non-streamed), buffered and checked (a stream asking for JSON or tools), or as it came."""
    metadata = request.setdefault("metadata", {})
    routing = routing_from_metadata(metadata.get("tierwise") or {})
    chain = [routing.model, *routing.fallbacks]
    mode = cascade.mode(request)
    if mode == MODE_CHECK:
        outcome = await cascade.acheck(router, request, routing, chain, response, private, route)
        record_outcome(metadata, outcome, mode)
        return attach(outcome.answer.deliver, outcome)
    record_outcome(metadata, None, mode)
    if mode == MODE_BUFFER:
        return cascade.abuffered_stream(
            router, request, routing, chain, response, private, route,
            on_outcome=lambda outcome: record_outcome(metadata, outcome, mode),
        )  # fmt: skip
    return response


def after_call_sync(
    cascade: LiteLLMCascade,
    router: Any,
    request: dict[str, Any],
    response: Any,
    private: Callable[[], bool] | bool,
    route: str | None,
) -> Any:
    """`after_call` for `litellm.Router.completion`; a blocking stream passes unchecked."""
    metadata = request.setdefault("metadata", {})
    routing = routing_from_metadata(metadata.get("tierwise") or {})
    mode = cascade.mode(request)
    if mode == MODE_BUFFER:
        mode = MODE_UNCHECKED
    if mode != MODE_CHECK:
        record_outcome(metadata, None, mode)
        return response
    chain = [routing.model, *routing.fallbacks]
    outcome = cascade.check(router, request, routing, chain, response, private, route)
    record_outcome(metadata, outcome, mode)
    return attach(outcome.answer.deliver, outcome)


def record_outcome(metadata: dict[str, Any], outcome: CascadeOutcome | None, mode: str) -> None:
    """The cascade's account in the request metadata (`metadata["tierwise"]["cascade"]`)."""
    tierwise = metadata.setdefault("tierwise", {})
    account: dict[str, Any] = {"mode": mode}
    if outcome is not None:
        account |= outcome.metadata()
        account["headers"] = outcome.headers()
    tierwise["cascade"] = account


def cascade_headers(metadata: Mapping[str, Any]) -> dict[str, str]:
    """`x-tierwise-cascade` (and `-added-ms`) for a request's metadata; none when the cascade did not
    look at it. A stream's headers go out before its answer: `stream=buffered` or `stream=unchecked`."""
    tierwise = metadata.get("tierwise") if isinstance(metadata, Mapping) else None
    account = tierwise.get("cascade") if isinstance(tierwise, Mapping) else None
    if not isinstance(account, Mapping):
        return {}
    if isinstance(account.get("headers"), Mapping):
        return {str(k): str(v) for k, v in account["headers"].items()}
    mode = account.get("mode")
    return {HEADER: f"stream={mode}"} if mode in (MODE_BUFFER, MODE_UNCHECKED) else {}


__all__ = ["HEADER", "LiteLLMCascade", "after_call", "after_call_sync", "cascade_headers", "record_outcome"]
