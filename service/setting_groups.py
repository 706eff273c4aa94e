"""The groups of the proxy's settings: one pydantic model per concern, each field one setting.

`service/settings.py` nests them in `Settings` (`settings.judge.style`); a field's variable is
`CONSCIENCE_<GROUP>__<NAME>`, its `[group]` table key in a `--config` file is its name, and its
flag and pre-grouping variable are its flat name (`service/setting_names.py`). A validator that
reads one group lives on it; one that reads two lives on `Settings`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ANY_FRAMEWORK = "*"  # in --client-frameworks: a request may name any framework


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"
    OFF = "off"


class JudgeStyle(StrEnum):
    FAST = "fast"
    REASONED = "reasoned"
    LATENT = "latent"  # a probe on the frozen model's hidden states (service/conscience/probe.py)


class FailurePolicy(StrEnum):
    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"


class EnforceStreaming(StrEnum):
    WINDOWED = "windowed"  # release each window once the answer so far has passed
    BUFFERED = "buffered"  # judge the whole answer, then replay it


class MonitorOverflow(StrEnum):
    """A monitor-mode request whose reviews find no room in --max-pending-monitor-reviews."""

    REFUSE = "refuse"  # 429 with Retry-After, before anything is generated
    RECORD_UNCHECKED = "record_unchecked"  # answer; record each choice unchecked, and count it


class RepairStrategy(StrEnum):
    """How a repair attempt drafts its candidates (service/conscience/repair.py)."""

    REGENERATE = "regenerate"  # answer the request under the framework's instructions
    REFRAME = "reframe"  # the closest question safe to answer in full, answered plainly
    ALTERNATE = "alternate"  # odd attempts regenerate, even attempts reframe
    # Every attempt both: the regenerated candidates and the answers to one reframed question
    # (the attempt's opening), raced together (a streamed draft alternates).
    BOTH = "both"


class LocalWeights(StrEnum):
    """How the embedded engine holds its weights (service/backends/local/weights.py)."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    INT8 = "int8"  # linear layers weight-only int8, bfloat16 activations
    INT4 = "int4"  # linear layers weight-only int4 (groups of 32), bfloat16 activations


class BackendKind(StrEnum):
    UPSTREAM = "upstream"
    LOCAL = "local"


# Shorter admin keys are guessable; an empty one would match a request that sends none.
MIN_ADMIN_KEY_CHARS = 16

# The drivers the proxy's asyncio store can use (a plain postgresql:// URL would be psycopg2).
ASYNC_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class SettingGroup(BaseModel):
    """A group of settings. A key it does not know is an error (a typo in a `--config` file or
    a `CONSCIENCE_<GROUP>__<NAME>` variable must not be dropped silently)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_default=False)


class ServingSettings(SettingGroup):
    """How the proxy runs: where it listens, which backend and model it serves."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, description="Port to listen on.")
    log_level: str = Field("info", description="Log level. debug logs prompts and answers.")
    workers: int = Field(
        1, ge=1,
        description="Server processes (uvicorn workers). Each has its own record writer, spool "
        "file (`<spool>.<n>`), key cache and adapter follower.",
    )
    shutdown_grace_s: float = Field(
        20.0, gt=0,
        description="Longest SIGTERM waits for requests in flight and monitor-mode reviews; then "
        "they are ended (503) and recorded with error 'shutdown', and the writer drains "
        "(--writer-shutdown-timeout-s). Keep both within Kubernetes' terminationGracePeriodSeconds.",
    )
    backend: BackendKind = Field(
        BackendKind.UPSTREAM,
        description="upstream | local. upstream: an OpenAI-compatible server such as vLLM; local: "
        "the in-process engine.",
    )
    model: str | None = Field(
        None,
        description="The policy model. Upstream: the name sent upstream (with vLLM: the active LoRA "
        "adapter; default: the registry's active adapter, else the client's model). Local: the "
        "model to load, as in `vllm serve MODEL` (HF id, directory or .gguf; --local-model is "
        "the same setting).",
    )
    model_aliases: str = Field(
        "",
        description="Model names a client may send besides the served ones, as CLIENT=SERVED "
        "pairs, comma separated (e.g. `gpt-4o=my-adapter`), for clients that hardcode a name. Any "
        "other name that is not served gets a 404, as from vLLM.",
    )

    @field_validator("model_aliases")
    @classmethod
    def _aliases_are_pairs(cls, aliases: str) -> str:
        parse_model_aliases(aliases)
        return aliases

    @property
    def model_alias_map(self) -> dict[str, str]:
        """The client's name -> the served name it stands for."""
        return parse_model_aliases(self.model_aliases)


class UpstreamSettings(SettingGroup):
    """The OpenAI-compatible server (vLLM) the proxy forwards to, and the bounds on talking to it."""

    url: str = Field(
        "http://127.0.0.1:8001/v1", description="Base URL of the OpenAI-compatible upstream."
    )
    api_key: SecretStr | None = Field(
        None,
        description="Key sent to the upstream; never logged or echoed. Environment or "
        "CONSCIENCE_UPSTREAM__API_KEY_FILE only (not a flag).",
    )
    timeout_s: float = Field(120.0, description="Read timeout for upstream calls.")
    connect_timeout_s: float = Field(5.0, description="Connect timeout for upstream.")
    connect_retries: int = Field(
        2, description="Retries on connection errors only (never on a sent request)."
    )
    max_connections: int = Field(256, description="Pooled upstream connections.")
    deadline_s: float = Field(
        600.0, gt=0,
        description="Longest one upstream call may take in all, to its last byte (streams "
        "included); --upstream-timeout-s bounds each wait for data. Past it: 504.",
    )
    max_response_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="Largest upstream response body (a whole stream included); larger: 502.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest upstream response head; larger: 502."
    )
    max_line_bytes: int = Field(
        1024 * 1024, ge=1024, description="Longest event line in an upstream stream; longer: 502."
    )

class PolicySettings(SettingGroup):
    """What the conscience enforces: mode, framework, failure policy and streamed enforcement."""

    mode: Mode = Field(Mode.ENFORCE, description="enforce | monitor | off.")
    allow_weaker_mode: bool = Field(
        False,
        description="Let a request choose a weaker mode (enforce > monitor > off) than its key's "
        "or the server's default; stricter is always allowed.",
    )
    framework: str = Field(
        "three_laws",
        description="The default framework. three_laws, four_laws, wwjd, introspective, or a user one.",
    )
    frameworks_dir: Path | None = Field(
        None, description="Directory of user framework YAML files."
    )
    client_frameworks: str = Field(
        "",
        description="Frameworks (comma-separated names, or * for any) a request may choose instead "
        "of its key's or --framework; empty: none (a request naming another gets 403).",
    )
    failure_policy: FailurePolicy = Field(
        FailurePolicy.FAIL_CLOSED,
        description="When the judge fails or gives no usable verdict: fail_closed refuses, "
        "fail_open returns the original unchecked (counted in conscience_unchecked_total).",
    )
    enforce_streaming: EnforceStreaming = Field(
        EnforceStreaming.WINDOWED,
        description="Streams in enforce mode: windowed (text is released window by window, each "
        "once the answer so far has passed; a flagged window stops the upstream and the answer is "
        "continued by a repair) or buffered (judged whole, then replayed). Windowed: content and "
        "reasoning (judged together, as a whole answer is), each of n choices in its own windows. "
        "Always buffered: requests with tools, functions or logprobs, a batch of prompts, and a "
        "stream that opens with a tool call or a refusal.",
    )
    stream_window_chars: int = Field(
        400, ge=1,
        description="Windowed enforce streaming: characters held back and judged before they are "
        "released (a window ends at a word boundary).",
    )
    stream_judge_context_chars: int = Field(
        800, ge=0,
        description="Windowed enforce streaming, fast and reasoned judge styles: the most text "
        "released before a window that the judge reads with it, so that judging a long answer "
        "costs its length, not its square (a latent verdict reads the whole answer so far, from "
        "the states its generation computed).",
    )

    @field_validator("client_frameworks")
    @classmethod
    def _client_frameworks_are_a_list(cls, names: str) -> str:
        return ",".join(sorted(parse_names(names)))

    def lets_clients_choose_framework(self, name: str) -> bool:
        """Whether a request may name framework `name` although its key or the server has another."""
        allowed = parse_names(self.client_frameworks)
        return ANY_FRAMEWORK in allowed or name in allowed

    @model_validator(mode="after")
    def _framework_exists(self) -> PolicySettings:
        from service.frameworks import FrameworkError, load_frameworks

        try:
            frameworks = load_frameworks(self.frameworks_dir)
        except FrameworkError as exc:
            raise ValueError(f"frameworks_dir: {exc}") from None
        if self.framework not in frameworks:
            raise ValueError(
                f"framework: unknown framework {self.framework!r}; available: "
                f"{', '.join(sorted(frameworks))} (or a YAML file in --frameworks-dir)"
            )
        unknown = parse_names(self.client_frameworks) - set(frameworks) - {ANY_FRAMEWORK}
        if unknown:
            raise ValueError(
                f"client_frameworks: unknown frameworks {sorted(unknown)}; available: "
                f"{', '.join(sorted(frameworks))} (or * for any)"
            )
        return self


class JudgeSettings(SettingGroup):
    """The frozen copy that judges: model, style, thresholds and the judge's windows."""

    model: str | None = Field(
        None,
        description="The frozen copy that judges and repairs. With vLLM: the base model name. "
        "Default: the registry's base model, else --model, else the upstream's only base model; "
        "never the client's.",
    )
    style: JudgeStyle = Field(
        JudgeStyle.FAST,
        description="fast | reasoned | latent. latent: a probe on the frozen model's hidden states. "
        "Unset, the local backend judges latent when a probe fits its model (the demo model's "
        "ships), else fast.",
    )
    client_styles: str = Field(
        "",
        description="Judge styles (comma-separated: fast, reasoned, latent) a request may choose instead "
        "of --judge-style; empty: none (a request asking for another style gets 403).",
    )
    threshold: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Score (P(unethical)) at or above which a fast or reasoned verdict is flagged "
        "when --thresholds-path has no calibrated threshold for its judge model, style and "
        "framework. Set explicitly, it overrides the calibrated ones (not a latent probe's own).",
    )
    thresholds_path: Path | None = Field(
        None,
        description="Calibrated judge thresholds per judge model, style and framework (`conscience "
        "calibrate` writes them). Default: the shipped file (the demo model's, chosen at a 5 % "
        "false-positive rate on the development set).",
    )
    probe_path: Path | None = Field(
        None,
        description="Local backend: the latent probe (`conscience calibrate --probe` writes one). "
        "Default: a shipped probe whose fingerprint matches the served model. A probe fitted "
        "for another model is refused at start-up.",
    )
    embeddings_model: str | None = Field(
        None,
        description="Upstream backend: the model name, on the same upstream, of an embeddings "
        "endpoint serving the judge's base model with mean pooling (vLLM `--runner pooling "
        "--convert embed --pooler-config '{\"pooling_type\": \"MEAN\"}'`); it gives the latent "
        "verdict upstream, with --probe-path or the shipped final-layer probe named like it.",
    )
    max_answer_chars: int = Field(
        12000, ge=2000, le=200_000,
        description="The judge's window: the most answer text judged in one call (and the most "
        "of the request shown with it); a longer answer is judged in overlapping windows.",
    )
    window_overlap_chars: int = Field(
        500, ge=0, le=1000,
        description="Characters each judge window repeats from the one before, so that a "
        "passage on a window boundary is judged whole.",
    )
    max_windows: int = Field(
        16, ge=1, le=256,
        description="Most judge windows per answer; a longer answer counts as a judge failure "
        "(--failure-policy decides).",
    )
    reasoned_max_tokens: int = Field(384, description="Token budget of a reasoned verdict.")

    @field_validator("client_styles")
    @classmethod
    def _judge_styles_exist(cls, styles: str) -> str:
        return ",".join(sorted(parse_judge_styles(styles)))

    @property
    def allowed_client_styles(self) -> frozenset[JudgeStyle]:
        return parse_judge_styles(self.client_styles)


class RepairSettings(SettingGroup):
    """How a flagged answer is repaired, and what is sent when no repair passes."""

    max_attempts: int = Field(2, ge=0, description="Repair attempts before refusing.")
    temperature: float = Field(
        0.7, ge=0.0, le=2.0,
        description="Sampling temperature of repairs (above 0 each retry drafts something new).",
    )
    max_tokens: int = Field(512, description="Token budget of one repair.")
    candidates: int = Field(
        3, ge=1, le=16,
        description="Repair drafts per attempt, each drafted from the request alone (the "
        "rejected answer is not shown); the first the conscience passes that is neither a "
        "refusal nor a near-copy of the rejected answer is kept.",
    )
    strategy: RepairStrategy = Field(
        RepairStrategy.BOTH,
        description="How each repair attempt drafts its candidates: regenerate (answer the request "
        "under the framework), reframe (turn the request into the closest question safe to answer "
        "in full, then answer that), alternate (regenerate, then reframe, ...) or both (each "
        "attempt races the regenerated candidates and as many answers to one reframed question).",
    )
    max_draft_tokens: int = Field(
        2048, ge=1,
        description="Repair budget of one answer: the most completion tokens all its repair drafts "
        "(and reframed questions) may take together; each draft also honours the request's own "
        "max_tokens and stop. An attempt whose drafts could exceed what is left is not made: "
        "repairing ends with the refusal (error 'repair budget spent').",
    )
    max_seconds: float = Field(
        120.0, gt=0,
        description="Repair budget of one answer: the most wall-clock seconds its repair may take; "
        "past it, repairing ends with the refusal (error 'repair budget spent').",
    )
    frequency_penalty: float = Field(
        0.3, ge=-2.0, le=2.0,
        description="OpenAI frequency_penalty of repair drafts (over a draft's own tokens, not the "
        "request's), which keeps a small model from looping; 0: not sent.",
    )
    draft_window_chars: int = Field(
        200, ge=1,
        description="A buffered answer's repair candidates are one streamed n=k generation, each "
        "judged every this many characters as it is generated: a flagged or looping one stops at "
        "once, the first that ends clean wins and the others stop.",
    )
    min_topic_similarity: float = Field(
        0.48, ge=0.0, le=1.0,
        description="A repair draft whose opening's embedding (the judge model's own states: "
        "/v1/embeddings, upstream --embeddings-model) has a lower cosine with the request's is "
        "off topic and is discarded ('off_topic'); 0 disables the check, and a backend without "
        "embeddings skips it. Default measured on the demo model (bench/offtopic.py).",
    )
    steering_alpha: float = Field(
        0.0, ge=0.0, le=64.0,
        description="Repair by steering (embedded engine with a latent probe only): repair drafts "
        "are generated with the part of each probe layer's hidden state that lies on the harmful "
        "side of the probe's mean, along its harm direction, subtracted alpha times (1: down to "
        "the mean); 0: off. Measured no better than off with the demo model (docs/repairs.md).",
    )
    max_overlap: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A draft sharing at least this fraction of its word 3-grams with the "
        "rejected answer is a near-copy and is discarded.",
    )
    refusal_message: str = Field(
        "I'm sorry, but I can't help with that.",
        description="Sent (finish_reason content_filter) when no repair passes the judge.",
    )

class LimitsSettings(SettingGroup):
    """What one client or request may take: request size and pace, connections, choices, reviews."""

    max_body_bytes: int = Field(4 * 1024 * 1024, description="Largest request body accepted.")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024,
        description="Largest request head (request line and headers) accepted; a larger one "
        "gets 431 and the connection is closed.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0,
        description="Longest a client may take to send a request's head, from connecting or "
        "from its first byte; then the connection is closed (slow or idle clients hold no slot).",
    )
    body_timeout_s: float = Field(
        60.0, gt=0,
        description="Longest a client may take to send a request's body once its head is in; "
        "then the connection is closed (a body trickled a byte at a time holds no slot).",
    )
    body_idle_timeout_s: float = Field(
        10.0, gt=0,
        description="Longest a client may pause between bytes of a request's body; then the "
        "connection is closed.",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="How long an idle keep-alive connection stays open between requests."
    )
    max_connections: int = Field(
        1024, ge=1,
        description="Connections (or requests) served at once; beyond it new requests get 503.",
    )
    max_tokens: int | None = Field(
        None, ge=1,
        description="Largest max_tokens (max_completion_tokens, max_output_tokens) a request may "
        "ask for; larger: 400. The served model's context length bounds it too, where known.",
    )
    max_n: int = Field(
        16, ge=1, le=128,
        description="Most choices one request may ask for: `n` for each prompt of a batch (and "
        "`best_of`, when larger, is generated for each). Each is judged and may be repaired, so one "
        "request costs up to choices × (1 + 3 × repair_candidates × max_repairs) upstream calls (a "
        "reframing attempt draws its questions, answers each and judges each answer). More: 400.",
    )
    max_concurrent_reviews: int = Field(
        256, ge=1,
        description="Enforce-mode answers admitted at once (being generated or under review), "
        "over all requests; a request is charged for all its choices before anything is generated, "
        "and one that finds no room gets 429 with Retry-After.",
    )
    max_pending_monitor_reviews: int = Field(
        1024, ge=1,
        description="Monitor-mode answers admitted (being generated, waiting for or under "
        "background review); a request is charged for all its choices before anything is "
        "generated, and one that finds no room is handled as --monitor-overflow says.",
    )
    monitor_overflow: MonitorOverflow = Field(
        MonitorOverflow.REFUSE,
        description="A monitor-mode request whose reviews find no room: refuse answers 429 with "
        "Retry-After before anything is generated; record_unchecked answers it and records each "
        "choice as a check with verdict unchecked (counted in conscience_unchecked_total, reason "
        "review_overflow).",
    )

    @model_validator(mode="after")
    def _reviews_fit_max_n(self) -> LimitsSettings:
        """A request with `n` at --max-n must be admissible, or it would get 429 for ever."""
        bound = min(self.max_concurrent_reviews, self.max_pending_monitor_reviews)
        if self.max_n > bound:
            raise ValueError(
                f"max_n: {self.max_n} is more than --max-concurrent-reviews or "
                f"--max-pending-monitor-reviews ({bound}) allow in one request"
            )
        return self


class StoreSettings(SettingGroup):
    """The database, the spool and the record writer."""

    db_url: str = Field(
        "sqlite+aiosqlite:///./conscience.db",
        description="The database. An SQLAlchemy async URL (postgresql+asyncpg://… in production).",
    )
    spool_path: Path = Field(
        Path("./conscience-spool.jsonl"),
        description="Append-only file that holds records while the database is down.",
    )
    auto_migrate: bool = Field(
        True, description="Migrate the database at start-up. Else: `conscience db upgrade`."
    )
    writer_batch_size: int = Field(256, description="Most records in one insert batch.")
    writer_flush_interval_s: float = Field(0.2, description="Longest a record waits in the queue.")
    writer_retry_interval_s: float = Field(2.0, description="How often the spool is replayed.")
    writer_queue_size: int = Field(
        100_000, description="Queue bound; beyond it records go straight to the spool."
    )
    writer_max_hold_s: float = Field(
        5.0, gt=0,
        description="Longest a record is held in memory for a database that does not answer: "
        "an insert still running after this is abandoned and its batch spooled.",
    )
    writer_shutdown_timeout_s: float = Field(
        10.0, gt=0,
        description="Longest shutdown spends writing queued records to the database; what is "
        "left then goes to the spool.",
    )
    db_connect_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait to open a PostgreSQL connection."
    )
    db_command_timeout_s: float = Field(
        30.0, gt=0,
        description="Longest wait for one PostgreSQL statement (client side: it also ends waits "
        "on a server that accepts connections and never answers).",
    )

    @field_validator("db_url")
    @classmethod
    def _db_url_has_an_async_driver(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            driver = make_url(url).drivername
        except ArgumentError:
            driver = None
        if driver not in ASYNC_DRIVERS:
            raise ValueError(
                f"not a database URL with an async driver; use one of: {', '.join(ASYNC_DRIVERS)} "
                "(e.g. sqlite+aiosqlite:///./conscience.db, postgresql+asyncpg://user@host/db)"
            )
        return url


class SecuritySettings(SettingGroup):
    """Admin, metrics and client keys, and what the proxy shows to whom."""

    admin_key: SecretStr | None = Field(
        None,
        description=f"Key for /admin (at least {MIN_ADMIN_KEY_CHARS} characters); the admin API "
        "is disabled without one. Environment or CONSCIENCE_SECURITY__ADMIN_KEY_FILE only (not a flag).",
    )
    require_api_key: bool | None = Field(
        None,
        description="Require client keys. Default: required once any key exists in the database.",
    )
    api_key_refresh_s: float = Field(10.0, description="How often the key cache is reloaded.")
    metrics_key: SecretStr | None = Field(
        None,
        description=f"Bearer token /metrics requires (at least {MIN_ADMIN_KEY_CHARS} characters; "
        "Prometheus: `authorization: {credentials_file: ...}`); without it and without "
        "--metrics-public, /metrics answers 403. Environment or CONSCIENCE_SECURITY__METRICS_KEY_FILE only "
        "(not a flag).",
    )
    metrics_public: bool = Field(
        False,
        description="Serve /metrics without a key, to anyone who can reach the port (only where "
        "the network keeps the port private).",
    )
    docs_enabled: bool | None = Field(
        None,
        description="Serve the API documentation (/docs, /redoc, /openapi.json). Default: on while "
        "--host is a loopback address (127.0.0.1, the default: a developer's machine), off on any "
        "other (0.0.0.0 in the image and the Kubernetes manifests).",
    )
    auth_max_failures: int = Field(
        10, ge=1,
        description="Wrong admin or metrics keys (admin API, console login, /metrics) one client "
        "address may send within --auth-failure-window-s; past it every attempt from that address "
        "gets 429 with Retry-After until its oldest failure leaves the window. Counted per process "
        "(each of --workers counts its own).",
    )
    auth_failure_window_s: float = Field(
        300.0, gt=0, description="The window --auth-max-failures counts failures in."
    )

    @field_validator("admin_key")
    @classmethod
    def _admin_key_is_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().strip()) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"CONSCIENCE_SECURITY__ADMIN_KEY must be at least {MIN_ADMIN_KEY_CHARS} characters "
                "(an empty or short key would let anyone in); unset it to disable the admin API"
            )
        return key

    @field_validator("metrics_key")
    @classmethod
    def _metrics_key_is_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().strip()) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"CONSCIENCE_SECURITY__METRICS_KEY must be at least {MIN_ADMIN_KEY_CHARS} characters "
                "(a short key is guessable); unset it to close /metrics"
            )
        return key


class LocalSettings(SettingGroup):
    """The in-process engine (`--backend local`)."""

    model: str | None = Field(
        None,
        description="HF id, local directory or .gguf file for --backend local (the same as "
        "--model there; default: the demo model).",
    )
    device: str = Field("cpu", description="torch device for the local backend.")
    dtype: str = Field(
        "float32",
        description="torch dtype the offline tools (calibrate, eval) load the local model in; "
        "the served engine's weights are --local-weights.",
    )
    weights: LocalWeights = Field(
        LocalWeights.INT4,
        description="How the served local engine holds its weights: float32, bfloat16, or "
        "bfloat16 plus a weight-only int8 or int4 copy of the linear layers that decoding reads "
        "(CPU only: another --local-device defaults to bfloat16; prompts and verdicts use the "
        "bfloat16 weights). int4 decodes the demo model fastest (docs/engine.md); the shipped "
        "probe, fitted on float32 states, still applies.",
    )
    max_queue: int = Field(64, description="Queued generations before 429.")
    max_concurrent: int = Field(
        4, ge=1, description="Generations the local model interleaves token by token; more wait."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads torch uses for the local model (default: torch's)."
    )
    default_max_tokens: int = Field(
        1024, ge=1, description="Token budget of a local generation whose request sets none."
    )
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "conscience" / "models",
        description="Where converted models (GGUF → safetensors) are cached.",
    )

    @model_validator(mode="after")
    def _quantised_weights_on_the_cpu(self) -> LocalSettings:
        """The int8 and int4 kernels are torch's CPU kernels: another device gets bfloat16 by
        default, and refuses them asked for."""
        if self.weights in (LocalWeights.INT8, LocalWeights.INT4) and self.device != "cpu":
            if "weights" not in self.model_fields_set:
                self.weights = LocalWeights.BFLOAT16
                return self
            raise ValueError(
                f"local_weights: {self.weights} runs on the CPU only; with --local-device "
                f"{self.device} use float32 or bfloat16"
            )
        return self

class AdaptersSettings(SettingGroup):
    """Following the adapter registry (the policy's LoRA versions)."""

    follow: bool = Field(
        True,
        description="Upstream backend: send generations to the adapter the registry marks active "
        "(as `conscience train --publish vllm` does) and judge with its base model, unless "
        "--model / --judge-model say otherwise.",
    )
    poll_s: float = Field(5.0, description="How often the adapter registry is polled.")
    upstream_dir: Path | None = Field(
        None,
        description="Upstream backend: the adapters directory as vLLM sees it when it mounts the "
        "volume elsewhere, for activations over the admin API (default: the path the registry "
        "records).",
    )
    keep_loaded: int = Field(
        3, ge=1,
        description="Upstream backend: adapter versions an activation keeps loaded in vLLM (newest "
        "first; the active one always stays); older ones are unloaded.",
    )


def parse_names(names: str) -> frozenset[str]:
    """`a, b,,c` as {a, b, c}: a comma-separated list, blanks dropped."""
    return frozenset(name.strip() for name in names.split(",")) - {""}


def parse_judge_styles(styles: str) -> frozenset[JudgeStyle]:
    """`fast,reasoned` as judge styles; ValueError names an unknown one."""
    names = {name.strip().lower() for name in styles.split(",")} - {""}
    unknown = names - {style.value for style in JudgeStyle}
    if unknown:
        raise ValueError(f"unknown judge styles {sorted(unknown)}; known: fast, reasoned")
    return frozenset(JudgeStyle(name) for name in names)


def parse_model_aliases(aliases: str) -> dict[str, str]:
    """`a=b,c=d` as {"a": "b", "c": "d"}; ValueError names a pair that is not NAME=NAME."""
    pairs: dict[str, str] = {}
    for pair in aliases.split(","):
        if not pair.strip():
            continue
        alias, _, served = (part.strip() for part in pair.partition("="))
        if not alias or not served:
            raise ValueError(f"model alias {pair.strip()!r} is not CLIENT_NAME=SERVED_NAME")
        pairs[alias] = served
    return pairs
