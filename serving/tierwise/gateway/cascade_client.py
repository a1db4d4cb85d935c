"""The cascade for applications that call the models themselves, with the tierwise client:

    from tierwise.gateway.cascade_client import cascade_from_policy
    cascade = cascade_from_policy(None, client)        # the policy's `cascade:` section (None: off)

    async def call(model: str, body: dict) -> dict:     # your call of one model (OpenAI SDK, httpx ...)
        return (await openai.chat.completions.create(model=model, **body)).model_dump()

    response, routing, outcome = await client.complete(call, cascade, messages=[...], response_format=...)

`complete` classifies the request, calls the routed model, checks the answer and, while it fails,
calls the next tier up (`call` gets the policy's model names; an exception from a retry keeps the last
answer), records each failed check as feedback and returns the answer with what was tried
(`outcome.header()`, `outcome.metadata()`). A private request is never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tierwise.core.privacy import PRIVATE_DATA
from tierwise.gateway.cascade import RetryPlanner, Rung
from tierwise.gateway.cascade_config import load_cascade_config
from tierwise.gateway.cascade_outcome import Answer, CascadeOutcome
from tierwise.gateway.cascade_runner import Cascade
from tierwise.gateway.wire import Routing

AsyncModelCall = Callable[[str, dict[str, Any]], Awaitable[Any]]
ModelCall = Callable[[str, dict[str, Any]], Any]


def cascade_from_policy(policy_file: Path | None, feedback_client: Any = None) -> Cascade | None:
    """The cascade of a policy file's `cascade:` section (the packaged policy when None); None when off."""
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy

    path = policy_file or DEFAULT_POLICY_FILE
    config = load_cascade_config(path)
    if config is None:
        return None
    return Cascade(RetryPlanner(load_policy(path), config), feedback_client)


def _private(routing: Routing, client: Any) -> bool:
    private_tier = getattr(getattr(client, "upward", None), "private_tier", None)
    return PRIVATE_DATA in routing.reasons or (private_tier is not None and routing.tier == private_tier)


def _body(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "model"}


def classify_arguments(body: Mapping[str, Any], route: str | None) -> dict[str, Any]:
    """`classify`'s arguments for a chat body: everything of it that reaches the model and may carry
    personal data (messages, tools, legacy functions, response_format) is scanned by the privacy rule."""
    return {
        "messages": body.get("messages"),
        "route": route,
        "tools": body.get("tools"),
        "functions": body.get("functions"),
        "response_format": body.get("response_format"),
    }


async def acomplete(
    client: Any, call: AsyncModelCall, cascade: Cascade | None, route: str | None = None, **body: Any
) -> tuple[Any, Routing, CascadeOutcome | None]:
    """Classify with `client` (an AsyncTierwiseClient), call the routed model, cascade upward."""
    routing = await client.classify(**classify_arguments(body, route))
    chain = list(routing.models)
    response = await call(chain[0], _body(body))
    if cascade is None:
        return response, routing, None

    async def retry(rung: Rung) -> Answer:
        answer = await call(rung.group, _body(body))
        return Answer(answer, rung.group, answer)

    first = Answer(response, chain[0], response)
    outcome = await cascade.arun(body, routing, chain, first, retry, _private(routing, client), route=route)
    return outcome.answer.deliver, routing, outcome


def complete(
    client: Any, call: ModelCall, cascade: Cascade | None, route: str | None = None, **body: Any
) -> tuple[Any, Routing, CascadeOutcome | None]:
    """`acomplete` for blocking code (a TierwiseClient and a blocking `call`)."""
    routing = client.classify(**classify_arguments(body, route))
    chain = list(routing.models)
    response = call(chain[0], _body(body))
    if cascade is None:
        return response, routing, None

    def retry(rung: Rung) -> Answer:
        answer = call(rung.group, _body(body))
        return Answer(answer, rung.group, answer)

    first = Answer(response, chain[0], response)
    outcome = cascade.run(body, routing, chain, first, retry, _private(routing, client), route=route)
    return outcome.answer.deliver, routing, outcome
