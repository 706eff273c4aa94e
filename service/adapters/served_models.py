"""Which model names the proxy sends upstream: the policy (generations) and the judge.

With vLLM the policy is the active LoRA adapter and the judge is its base model, the frozen
copy. Names can come from the settings, from the adapter registry (followed while serving, so
that `conscience train --publish vllm` switches the policy without a restart), or from a
backend that serves its own weights. A policy of `None` means: the model the client asked for.

The judge is the operator's choice, never the client's: --judge-model, else the registry's
base model, else --model, else the one base model the upstream serves (its `/models`, read at
start-up and, while that finds none, on every poll). A judge of `None` means none of these
named one: checked requests are refused (503 `judge_model_unknown`) until one does.

The client's model name is checked here too (`ModelCatalog`): where the proxy substitutes its
policy, a name that is neither served nor an alias (--model-aliases) is a 404, as vLLM answers
it, instead of being silently served by another model; where the client's name is forwarded
(no policy named), the upstream owns that answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from service.adapters.registry import active_adapter
from service.core.backend import JSON, Backend, BackendError, SelfNamingBackend
from service.polling import Poller
from service.settings import Settings
from service.store.db import Database

log = logging.getLogger("conscience.models")


class ModelNames(Protocol):
    @property
    def policy(self) -> str | None: ...

    @property
    def judge(self) -> str | None: ...

    async def start(self) -> None: ...

    async def refresh(self) -> None:
        """Re-read the adapter registry now (after an activation)."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SelfNamedModels:
    """Names read from a self-naming backend on every request: its adapters hot-swap."""

    settings: Settings
    backend: SelfNamingBackend

    @property
    def policy(self) -> str | None:
        return self.settings.serving.model or self.backend.active_adapter_name or self.backend.served_base_name

    @property
    def judge(self) -> str | None:
        return self.settings.judge.model or self.backend.served_base_name

    async def start(self) -> None:
        """Nothing to follow here: the backend watches the adapter registry itself."""

    async def refresh(self) -> None:
        await self.backend.refresh_adapters()

    async def aclose(self) -> None:
        """Nothing runs in the background."""


def model_names(settings: Settings, backend: Backend, db: Database | None) -> ModelNames:
    """The naming of this backend: its own names, or the settings and the registry in `db`
    (None: not followed) then the upstream's sole base model. The proxy and the evaluation
    both name their models here."""
    if isinstance(backend, SelfNamingBackend):
        return SelfNamedModels(settings, backend)
    return RegistryFollowingModels(settings, db if settings.adapters.follow else None, backend)


def sole_base_model(entries: list[dict[str, object]]) -> str | None:
    """The id of the only base model in `/models` entries (vLLM lists LoRA adapters with
    their base as `parent`); None when there are none or several."""
    bases = {entry.get("id") for entry in entries if not entry.get("parent")}
    sole = bases.pop() if len(bases) == 1 else None
    return sole if isinstance(sole, str) and sole else None


class RegistryFollowingModels:
    """Configured names first; else the registry's active adapter and its base model; else,
    for the judge only, the upstream's sole base model."""

    def __init__(self, settings: Settings, db: Database | None, backend: Backend) -> None:
        self._settings = settings
        self._db = db
        self._backend = backend
        self._adapter: str | None = None
        self._base: str | None = None
        self._served_base: str | None = None
        self._discoveries = 0  # only the first failed one is logged loudly: polls repeat it
        self._poller = Poller(self._refresh_logged, settings.adapters.poll_s, "conscience-adapter-follower")

    @property
    def policy(self) -> str | None:
        return self._settings.serving.model or self._adapter

    @property
    def judge(self) -> str | None:
        return self._configured_judge or self._served_base

    @property
    def _configured_judge(self) -> str | None:
        return self._settings.judge.model or self._base or self._settings.serving.model

    async def start(self) -> None:
        await self._refresh_logged()
        if self._db is not None or self.judge is None:
            self._poller.start()

    async def refresh(self) -> None:
        if self._db is None:
            return
        async with self._db.sessions() as session:
            row = await active_adapter(session)
        adapter, base = (row.name, row.base_model) if row is not None else (None, None)
        if adapter != self._adapter:
            log.info("policy model is now %s (judge: %s)", adapter or "the client's model", base)
        self._adapter, self._base = adapter, base

    async def aclose(self) -> None:
        await self._poller.stop()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a database outage keeps the last known names
            log.warning("adapter registry poll failed; keeping %s", self._adapter, exc_info=True)
        if self._configured_judge is None and self._served_base is None:
            await self._discover_judge()

    async def _discover_judge(self) -> None:
        self._discoveries += 1
        try:
            self._served_base = sole_base_model(await self._backend.models())
        except BackendError as exc:
            problem = f"the upstream's models are unknown ({exc})"
        else:
            if self._served_base is not None:
                log.info("judge model: %s, the one base model the upstream serves", self._served_base)
                return
            problem = "the upstream serves no single base model"
        log.log(
            logging.ERROR if self._discoveries == 1 else logging.DEBUG,
            "no judge model configured and %s: checked requests are refused until "
            "--judge-model (or --model) is set or the upstream serves one base model",
            problem,
        )


class ModelNotServed(BackendError):
    """404, in vLLM's words: the client asked for a model this server does not serve."""

    status_code = 404
    error_type = "not_found_error"

    def __init__(self, name: str) -> None:
        super().__init__(f"The model `{name}` does not exist.", param="model", code="model_not_found")


# A name not found re-reads the backend's list once it is this old: an adapter loaded since.
_MISS_REREAD_S = 1.0


class ModelCatalog:
    """What the backend serves (its `/models` entries, re-read at most every `max_age_s`): the
    names a client may ask for, each model's context length, and the operator's aliases."""

    def __init__(self, backend: Backend, *, aliases: dict[str, str], max_age_s: float) -> None:
        self._backend = backend
        self._aliases = aliases
        self._max_age_s = max_age_s
        self._entries: list[JSON] = []
        self._known = False  # whether the backend ever answered
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def serve(self, names: ModelNames, requested: str | None) -> str | None:
        """The model that serves a request for `requested` (None: the client named none): the
        policy where one is named, else the client's model (an alias replaced). None when
        nothing names a model. Raises ModelNotServed for a name this server does not serve.
        The backend's list is read only for a name that is not the policy or the judge."""
        requested = self._aliases.get(requested, requested) if requested is not None else None
        if names.policy is not None and requested is not None:
            await self._check_served(names, requested)
        return names.policy or requested

    async def context_len(self, name: str) -> int | None:
        """`name`'s context length as the backend lists it (vLLM's `max_model_len`), else its
        base model's (an adapter shares its context); None where the backend does not say."""
        entries = await self._read(self._max_age_s)
        by_id = {entry.get("id"): entry for entry in entries}
        entry = by_id.get(name) or {}
        length = entry.get("max_model_len") or (by_id.get(entry.get("parent")) or {}).get("max_model_len")
        return length if isinstance(length, int) and length > 0 else None

    async def _check_served(self, names: ModelNames, requested: str) -> None:
        if requested in (names.policy, names.judge):
            return
        entries = await self._read(self._max_age_s)
        if not _listed(entries, requested):
            entries = await self._read(_MISS_REREAD_S)
        # While the backend never answered, nothing is known to be missing: the request goes on
        # (and meets the outage itself).
        if self._known and not _listed(entries, requested):
            raise ModelNotServed(requested)

    async def _read(self, max_age_s: float) -> list[JSON]:
        """The entries, re-read when older than `max_age_s`; the last known ones while the
        backend cannot answer (an outage is retried after `max_age_s`, not on every request)."""
        async with self._lock:
            if time.monotonic() - self._read_at > max_age_s:
                self._read_at = time.monotonic()
                try:
                    listed = await self._backend.models()
                    self._entries = [entry for entry in listed if isinstance(entry, dict)]
                    self._known = True
                except BackendError as exc:
                    log.warning("the served models are unknown for now (%s); keeping the last known", exc)
        return self._entries


def _listed(entries: list[JSON], name: str) -> bool:
    return any(entry.get("id") == name for entry in entries)
