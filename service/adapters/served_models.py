"""Which model names the proxy sends upstream: the policy (generations) and the judge.

With vLLM the policy is the active LoRA adapter and the judge is its base model, the frozen
copy. Names can come from the settings, from the adapter registry (followed while serving, so
that `conscience train --publish vllm` switches the policy without a restart), or from a
backend that serves its own weights. A policy of `None` means: the model the client asked for.

The judge is the operator's choice, never the client's: --judge-model, else the registry's
base model, else --model, else the one base model the upstream serves (its `/models`, read at
start-up and, while that finds none, on every poll). A judge of `None` means none of these
named one: checked requests are refused (503 `judge_model_unknown`) until one does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from service.adapters.registry import active_adapter
from service.backends.base import Backend, BackendError, SelfNamingBackend
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
        return self.settings.model or self.backend.active_adapter_name or self.backend.served_base_name

    @property
    def judge(self) -> str | None:
        return self.settings.judge_model or self.backend.served_base_name

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
    return RegistryFollowingModels(settings, db if settings.follow_adapters else None, backend)


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
        self._poller = Poller(self._refresh_logged, settings.adapter_poll_s, "conscience-adapter-follower")

    @property
    def policy(self) -> str | None:
        return self._settings.model or self._adapter

    @property
    def judge(self) -> str | None:
        return self._configured_judge or self._served_base

    @property
    def _configured_judge(self) -> str | None:
        return self._settings.judge_model or self._base or self._settings.model

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
