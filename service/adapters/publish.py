"""Making a version the one that serves: embedded engine (DB only) or vLLM (load, check, DB).

vLLM caches prefix KV blocks per adapter name, so a name is never reused for other weights:
every version has its own immutable name (`conscience-v7`), and re-loading an unloaded version
under its name loads the very same files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from service.adapters.registry import list_versions, mark_active
from service.settings import BackendKind, Settings, environment_secret
from service.store.db import Database
from service.store.models import AdapterStatus, AdapterVersion

VLLM_API_KEY_VARIABLE = "CONSCIENCE_VLLM_API_KEY"  # vLLM's key for the commands that publish

log = logging.getLogger("conscience.adapters.publish")


class PublishError(Exception):
    """The serving side refused or did not confirm the adapter; nothing was activated."""


class Publisher(Protocol):
    async def activate(self, db: Database, version: AdapterVersion) -> AdapterVersion:
        """Make `version` serve, then record it as the active one."""


class LocalPublisher:
    """The embedded engine polls the registry and hot-loads the active adapter itself."""

    async def activate(self, db: Database, version: AdapterVersion) -> AdapterVersion:
        return await mark_active(db, version.name)


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """Where and how a version is published; the same for the CLI, the trainer and the admin API."""

    vllm_url: str | None = None  # None: the embedded engine (the registry change is the activation)
    api_key: str | None = None
    adapters_dir_seen_by_vllm: Path | None = None
    keep_loaded: int = 3
    timeout_s: float = 120.0

    @classmethod
    def for_command(
        cls, vllm_url: str | None, adapters_dir_seen_by_vllm: Path | None, keep_loaded: int, timeout_s: float
    ) -> PublishOptions:
        """A command's (`train`, `adapters`): vLLM's key, if it has one, from CONSCIENCE_VLLM_API_KEY
        or the file CONSCIENCE_VLLM_API_KEY_FILE names, never a flag (`ps` shows flags to
        everyone). ValueError when that file cannot be read."""
        api_key = environment_secret(VLLM_API_KEY_VARIABLE)
        return cls(vllm_url, api_key, adapters_dir_seen_by_vllm, keep_loaded, timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> PublishOptions:
        """The proxy's: its upstream when it has one, else the embedded engine."""
        key = settings.upstream.api_key
        return cls(
            vllm_url=settings.upstream.url if settings.serving.backend is BackendKind.UPSTREAM else None,
            api_key=key.get_secret_value() if key is not None else None,
            adapters_dir_seen_by_vllm=settings.adapters.upstream_dir,
            keep_loaded=settings.adapters.keep_loaded,
            timeout_s=settings.upstream.timeout_s,
        )


def make_publisher(options: PublishOptions) -> Publisher:
    """vLLM when a URL is given, else the embedded engine."""
    if options.vllm_url is None:
        return LocalPublisher()
    return VllmPublisher(
        options.vllm_url,
        api_key=options.api_key,
        adapters_dir_seen_by_vllm=options.adapters_dir_seen_by_vllm,
        keep_loaded=options.keep_loaded,
        timeout_s=options.timeout_s,
    )


class VllmPublisher:
    """vLLM's runtime LoRA endpoints (needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        adapters_dir_seen_by_vllm: Path | None = None,
        keep_loaded: int = 3,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.adapters_dir_seen_by_vllm = adapters_dir_seen_by_vllm
        self.keep_loaded = keep_loaded
        self.timeout_s = timeout_s

    async def activate(self, db: Database, version: AdapterVersion) -> AdapterVersion:
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout_s
        ) as client:
            served = await self._served_names(client)
            if version.name not in served:
                await self._post(
                    client,
                    "/v1/load_lora_adapter",
                    {"lora_name": version.name, "lora_path": self._path_for_vllm(version)},
                )
                served = await self._served_names(client)
                if version.name not in served:
                    raise PublishError(
                        f"vLLM accepted {version.name} but /v1/models does not list it; "
                        "not activating"
                    )
            active = await mark_active(db, version.name)
            await self._unload_old(client, db, active, served)
        return active

    def _path_for_vllm(self, version: AdapterVersion) -> str:
        if self.adapters_dir_seen_by_vllm is None:
            return version.path
        return str(self.adapters_dir_seen_by_vllm / Path(version.path).name)

    async def _unload_old(
        self, client: httpx.AsyncClient, db: Database, active: AdapterVersion, served: set[str]
    ) -> None:
        """Unload our versions beyond the newest `keep_loaded` (the active one always stays)."""
        servable = [
            version
            for version in await list_versions(db)
            if version.status != AdapterStatus.FAILED.value and version.id != active.id
        ]
        keep = {active.name, *(version.name for version in servable[: self.keep_loaded - 1])}
        ours = {version.name for version in servable}
        for name in sorted((served & ours) - keep):
            try:
                await self._post(client, "/v1/unload_lora_adapter", {"lora_name": name})
            except PublishError as exc:
                # The new version already serves; a leftover adapter only costs vLLM memory.
                log.warning("could not unload %s: %s", name, exc)

    async def _served_names(self, client: httpx.AsyncClient) -> set[str]:
        response = await self._request(client, "GET", "/v1/models")
        return {entry["id"] for entry in response.json().get("data", [])}

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
        await self._request(client, "POST", path, json=body)

    async def _request(
        self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PublishError(f"vLLM at {self.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise PublishError(
                f"vLLM {method} {path} answered {response.status_code}: {_error_message(response)}"
            )
        return response


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return str(body)[:500]
