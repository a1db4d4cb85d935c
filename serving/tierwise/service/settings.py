"""Service settings, read from `TIERWISE_*` environment variables (pydantic-settings).

Nothing is read at import time: call `get_settings()` (cached) or build `Settings(...)` directly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.service.batcher import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_MS

# Locations are relative to the working directory (the repository checkout for `make serve`, the
# container's WORKDIR in the image), never to where the package is installed.
DEFAULT_MODEL_DIR = Path("models") / "default"
DEFAULT_DECISION_DB = "sqlite:///runs/decisions.sqlite"
ONE_MIB = 1024 * 1024

# Admission control: send a request to the estimator when the encoder's expected wait is past this
# share of the deadline (`TIERWISE_ADMISSION_SHARE`). 0.4 beat 0.8 in two back-to-back pairs of
# `tools.capacity_bench` runs: past capacity a deep queue makes most of it miss the deadline anyway.
DEFAULT_ADMISSION_SHARE = 0.4


class Settings(BaseSettings):
    """Everything the service can be told; each field is `TIERWISE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TIERWISE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes, each loads the model")
    model_dir: Path = Field(default=DEFAULT_MODEL_DIR, description="folder with model.onnx, tokenizer.json")
    policy_file: Path = Field(default=DEFAULT_POLICY_FILE, description="routing policy YAML")
    max_batch_items: int = Field(default=256, ge=1, description="items per POST /classify/batch")
    max_body_bytes: int = Field(default=ONE_MIB, ge=1024, description="largest accepted request body")
    micro_batching: bool = True
    micro_batch_max_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    micro_batch_max_wait_ms: float = Field(default=DEFAULT_MAX_WAIT_MS, ge=0.0)
    onnx_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = all cores")
    log_prompts: bool = Field(default=False, description="write prompt text into the decision log")
    log_level: str = "info"
    deadline_ms: float | None = Field(
        default=None, gt=0, description="classifier deadline; overrides the policy file's deadline_ms"
    )
    admission_share: float = Field(
        default=DEFAULT_ADMISSION_SHARE,
        gt=0.0,
        le=1.0,
        description="with an estimator, a request whose expected wait for the encoder is past this share "
        "of the deadline is answered by the estimator at once instead of queueing",
    )
    score_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="encoder scores kept for repeated requests (keyed by a hash of what the classifier "
        "reads; least recently used go first); 0 turns the cache off",
    )
    estimator: bool = Field(
        default=True,
        description="when the encoder cannot answer within the deadline, answer from the model folder's "
        "cheap estimator (reason `estimated`) instead of the top tier; false: top tier, as before",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated API keys; when set, /classify, /classify/batch, /feedback, /model and "
        "/admin/* need one in X-API-Key or Authorization: Bearer",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="token for POST /admin/reload (header X-Admin-Token); unset = disabled"
    )
    reload_on_sighup: bool = Field(
        default=True, description="SIGHUP to a single-process server reloads the model folder in place"
    )
    drain_seconds: float = Field(
        default=30.0, gt=0, description="after a reload, how long the old model may finish its requests"
    )
    graceful_shutdown_seconds: int = Field(
        default=30, ge=1, description="on SIGTERM, how long in-flight requests may take before exit"
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="how long an idle keep-alive connection stays open; keep it above the gateways' own idle "
        "timeout (httpx's is 5 s, uvicorn's default 5 s): at equal timeouts a gateway reuses a connection the "
        "service is closing and the request fails",
    )
    worker_start_timeout_seconds: int = Field(
        default=30, ge=5, description="with several workers: how long a (re)started worker may load"
    )
    record_decisions: bool = Field(
        default=True, description="record every decision in the decision log (needed by POST /feedback)"
    )
    decision_db: str = Field(
        default=DEFAULT_DECISION_DB, description="SQLAlchemy URL of the decision log (SQLite file by default)"
    )
    record_prompts: bool = Field(
        default=False, description="store prompt text in the decision log (tierwise export-feedback needs it)"
    )
    decision_queue_size: int = Field(
        default=10000, ge=1, description="decision records waiting to be written; beyond it they are dropped"
    )
    tracing: bool = Field(
        default=False,
        description="an OpenTelemetry span per /classify (and per batch item), continuing the caller's "
        "traceparent; needs the tracing extra; exporter from OTEL_TRACES_EXPORTER (serving/tierwise/service/tracing.py)",
    )

    def api_key_list(self) -> tuple[str, ...]:
        """The configured API keys (empty: no key needed)."""
        if self.api_keys is None:
            return ()
        return tuple(key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
