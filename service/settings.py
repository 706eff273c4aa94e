"""Every runtime setting of the proxy, in one place.

Each field is an environment variable `CONSCIENCE_<NAME>` and (where it makes sense) a
`conscience serve` flag; the CLI builds its flags from this class so the two never drift.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"
    OFF = "off"


class JudgeStyle(StrEnum):
    FAST = "fast"
    REASONED = "reasoned"


class FailurePolicy(StrEnum):
    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"


class BackendKind(StrEnum):
    UPSTREAM = "upstream"
    LOCAL = "local"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSCIENCE_", env_file=".env", extra="ignore", use_enum_values=False
    )

    # --- serving -----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, description="Port to listen on.")
    log_level: str = Field("info", description="Log level (debug logs prompts and answers).")
    max_body_bytes: int = Field(4 * 1024 * 1024, description="Largest request body accepted.")

    # --- backend -----------------------------------------------------------------------------
    backend: BackendKind = Field(
        BackendKind.UPSTREAM,
        description="'upstream' (an OpenAI-compatible server such as vLLM) or 'local' (in-process).",
    )
    upstream_url: str = Field(
        "http://127.0.0.1:8001/v1", description="Base URL of the OpenAI-compatible upstream."
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="Key sent to the upstream; never logged or echoed."
    )
    upstream_timeout_s: float = Field(120.0, description="Read timeout for upstream calls.")
    upstream_connect_timeout_s: float = Field(5.0, description="Connect timeout for upstream.")
    upstream_connect_retries: int = Field(
        2, description="Retries on connection errors only (never on a sent request)."
    )
    upstream_max_connections: int = Field(256, description="Pooled upstream connections.")
    model: str | None = Field(
        None,
        description="Policy model name sent upstream (with vLLM: the active LoRA adapter). "
        "Default: the model the client asks for.",
    )
    follow_adapters: bool = Field(
        True,
        description="Upstream backend: send generations to the adapter the registry marks active "
        "(as `conscience train --publish vllm` does) and judge with its base model, unless "
        "--model / --judge-model say otherwise.",
    )
    judge_model: str | None = Field(
        None,
        description="The frozen copy that judges and repairs (with vLLM: the base model name). "
        "Default: same as --model.",
    )

    # --- conscience --------------------------------------------------------------------------
    mode: Mode = Field(Mode.ENFORCE, description="enforce | monitor | off.")
    allow_weaker_mode: bool = Field(
        False,
        description="Let a request choose a weaker mode (enforce > monitor > off) than its key's "
        "or the server's default; stricter is always allowed.",
    )
    framework: str = Field(
        "three_laws",
        description="Default framework: three_laws, four_laws, wwjd, introspective, or a user one.",
    )
    frameworks_dir: Path | None = Field(
        None, description="Directory of user framework YAML files."
    )
    judge_style: JudgeStyle = Field(JudgeStyle.FAST, description="fast | reasoned.")
    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Score (P(unethical)) at or above which an answer is flagged."
    )
    max_repairs: int = Field(2, ge=0, description="Repair attempts before refusing.")
    failure_policy: FailurePolicy = Field(
        FailurePolicy.FAIL_OPEN,
        description="When the judge fails: fail_open returns the original, fail_closed refuses.",
    )
    judge_max_answer_chars: int = Field(
        12000, description="Longest answer text shown to the judge (the tail is cut)."
    )
    refusal_message: str = Field(
        "I'm sorry, but I can't help with that.",
        description="Sent (finish_reason content_filter) when no repair passes the judge.",
    )
    repair_temperature: float = Field(
        0.7, ge=0.0, le=2.0,
        description="Sampling temperature of repairs (above 0 each retry drafts something new).",
    )
    repair_max_tokens: int = Field(512, description="Token budget of one repair.")
    reasoned_max_tokens: int = Field(384, description="Token budget of a reasoned verdict.")

    # --- store -------------------------------------------------------------------------------
    db_url: str = Field(
        "sqlite+aiosqlite:///./conscience.db",
        description="SQLAlchemy async URL (postgresql+asyncpg://… in production).",
    )
    spool_path: Path = Field(
        Path("./conscience-spool.jsonl"),
        description="Append-only file that holds records while the database is down.",
    )
    auto_migrate: bool = Field(
        True, description="Run the database migrations at start-up (else: `conscience db upgrade`)."
    )
    writer_batch_size: int = Field(256, description="Most records in one insert batch.")
    writer_flush_interval_s: float = Field(0.2, description="Longest a record waits in the queue.")
    writer_retry_interval_s: float = Field(2.0, description="How often the spool is replayed.")
    writer_queue_size: int = Field(
        100_000, description="Queue bound; beyond it records go straight to the spool."
    )

    # --- security ----------------------------------------------------------------------------
    admin_key: SecretStr | None = Field(
        None, description="Key for /admin; the admin API is disabled without one."
    )
    require_api_key: bool | None = Field(
        None,
        description="Require client keys. Default: required once any key exists in the database.",
    )
    api_key_refresh_s: float = Field(10.0, description="How often the key cache is reloaded.")

    # --- local backend (in-process engine) ---------------------------------------------------
    local_model: str | None = Field(
        None, description="HF id, local directory or .gguf file for --backend local."
    )
    local_device: str = Field("cpu", description="torch device for the local backend.")
    local_dtype: str = Field("float32", description="torch dtype for the local backend.")
    local_max_queue: int = Field(64, description="Queued generations before 429.")
    local_max_concurrent: int = Field(
        4, ge=1, description="Generations the local model interleaves token by token; more wait."
    )
    local_threads: int | None = Field(
        None, ge=1, description="CPU threads torch uses for the local model (default: torch's)."
    )
    local_default_max_tokens: int = Field(
        1024, ge=1, description="Token budget of a local generation whose request sets none."
    )
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "conscience" / "models",
        description="Where converted models (GGUF → safetensors) are cached.",
    )
    adapter_poll_s: float = Field(5.0, description="How often the adapter registry is polled.")

    # --- evaluation (`conscience eval`) ------------------------------------------------------
    eval_judge_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL of the judge that rates answers in `conscience "
        "eval misalignment`; unset: the frozen base model through the configured backend.",
    )
    eval_judge_model: str | None = Field(
        None, description="Model name of the misalignment judge at --eval-judge-url."
    )
    eval_judge_api_key: SecretStr | None = Field(
        None, description="Key sent to --eval-judge-url; never logged or echoed."
    )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**clean)
