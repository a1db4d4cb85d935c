"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from tierwise.core.policy import DecidedBy


class TextPart(BaseModel):
    """One part of an OpenAI multi-part `content` list; only `text` parts are read."""

    model_config = ConfigDict(extra="allow")

    type: StrictStr
    text: StrictStr | None = None


# The roles of an OpenAI chat message; any other role is a 422 that lists these.
ChatRole = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    """An OpenAI chat message; fields other than `role` and `content` (tool calls, names) are accepted,
    not read by the classifier, and scanned by the privacy rule."""

    model_config = ConfigDict(extra="allow")

    role: ChatRole
    content: StrictStr | list[TextPart] | None = None


class ClassifyRequest(BaseModel):
    """One request to route: `text`, or `messages` in OpenAI chat format (not both)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Summarise this paragraph in one sentence: ..."}]},
    )

    text: StrictStr | None = Field(default=None, description="the prompt")
    messages: list[ChatMessage] | None = Field(
        default=None, min_length=1, description="OpenAI chat messages; the last user turn matters most"
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=512,
        description="OpenAI tool definitions sent with `messages`: their names are read, every string "
        "of them is scanned by the privacy rule",
    )
    functions: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=512,
        description="legacy OpenAI function definitions sent with `messages`: every string of them is "
        "scanned by the privacy rule",
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        description="the OpenAI `response_format` sent with `messages` (a JSON schema, say): every "
        "string of it is scanned by the privacy rule",
    )
    min_tier: StrictStr | None = Field(default=None, description="never route below this tier")
    max_tier: StrictStr | None = Field(default=None, description="never route above this tier")
    route: StrictStr | None = Field(default=None, max_length=200, description="task name for overrides")
    metadata: dict[str, Any] | None = Field(
        default=None, description="echoed into the decision log, never interpreted"
    )

    @field_validator("text")
    @classmethod
    def text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must contain at least one non-whitespace character")
        return value

    @model_validator(mode="after")
    def text_or_messages(self) -> ClassifyRequest:
        if self.text is None and self.messages is None:
            raise ValueError("give either 'text' (a string) or 'messages' (a list of chat messages)")
        if self.text is not None and self.messages is not None:
            raise ValueError("give either 'text' or 'messages', not both")
        for name in ("tools", "functions", "response_format"):
            if getattr(self, name) is not None and self.messages is None:
                raise ValueError(f"'{name}' go with 'messages' (an OpenAI chat request), not with 'text'")
        return self

    def as_record(self) -> dict[str, Any]:
        """The shape `tierwise.core.request_text.request_input` reads."""
        if self.text is not None:
            return {"text": self.text}
        record: dict[str, Any] = {"messages": [m.model_dump() for m in self.messages or []]}
        for name in ("tools", "functions", "response_format"):  # scanned by the privacy rule
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        return record


class ClassifyResponse(BaseModel):
    """The routing decision for one request."""

    tier: str = Field(description="the tier to call")
    complexity_tier: str = Field(
        description="the public tier the request needs by the classifier and the policy's rules: `tier`, "
        "except for a private request (`tier` is then the private tier), where it says which size of "
        "private model to use"
    )
    confidence: float = Field(
        description="calibrated confidence in `complexity_tier`, against the error that tier can make: "
        "below the top tier, P(it suffices) = P(true tier <= it); at the top tier, P(a cheaper tier would "
        "not do) = 1 - P(true tier <= the tier below). 0.0 when no classifier answered (decided_by fallback)"
    )
    probabilities: dict[str, float] = Field(
        description="calibrated probability per tier; empty if unavailable"
    )
    predicted_tier: str | None = Field(description="the classifier's most likely tier, before the policy")
    escalated: bool = Field(description="the tier is stronger than the predicted tier")
    reasons: list[str] = Field(description="why the policy moved the tier, e.g. low_confidence, long_context")
    decided_by: DecidedBy = Field(
        description="encoder: the classifier answered in time; estimator: under load, the cheap estimator "
        "answered (reason `estimated`); fallback: nothing could answer, top tier (classifier_unavailable)"
    )
    model: str = Field(description="the model configured for the tier")
    fallbacks: list[str] = Field(description="models to try next, in order")
    segment: str | None = Field(
        default=None,
        description="the request's segment: its `route`, else the model folder's automatic segment "
        "(`auto-NN`); None when there is neither",
    )
    segment_bound: float | None = Field(
        default=None,
        description="with per-segment risk control on: the one-sided upper bound (at the controller's "
        "confidence) on the segment's under-routing at its current setting; None in cold start. The "
        "reason `segment_guard` says the segment's setting sent this request higher than the model's q",
    )
    model_version: str
    request_id: str


class BatchClassifyRequest(BaseModel):
    """Many requests in one call; the item limit is a setting (default 256)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ClassifyRequest] = Field(min_length=1)


class BatchClassifyResponse(BaseModel):
    results: list[ClassifyResponse]
    request_id: str


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: what was wrong, and with which field."""

    error: ErrorDetail
    request_id: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "ready", "not_ready"]
    model_version: str | None = None


class ReloadRequest(BaseModel):
    """POST /admin/reload: load a model folder and swap it in once it is warm."""

    model_config = ConfigDict(extra="forbid")

    model_dir: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="folder to load; default: TIERWISE_MODEL_DIR again (after swapping its contents)",
    )


class WorkerStatus(BaseModel):
    pid: int
    model_version: str
    generation: int = Field(description="reload generation the worker serves (0: as started)")
    model_dir: str


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    model_version: str
    previous_model_version: str
    model_dir: str
    worker_pid: int = Field(description="the worker that received the request and reloaded first")
    generation: int = Field(default=0, description="reload generation every worker was asked to serve")
    workers: list[WorkerStatus] = Field(default_factory=list, description="the model each live worker serves")
    all_workers_agree: bool = Field(
        default=True, description="false when some worker did not serve the new model in time: see GET /model"
    )
