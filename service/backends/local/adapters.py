"""LoRA adapters inside the one model: which are loaded, which is active, who still uses them.

The frozen judge is the same weights with adapters disabled, so there is one copy in memory.
A swap loads the new adapter next to the old one and makes it active; the old one is deleted
only when no request that was given it is still running. Model changes happen on the model
thread only; leases are taken on the event loop, hence the lock around the bookkeeping.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

log = logging.getLogger("conscience.local.adapters")

_UNKNOWN = object()  # the model's adapter state after a load or delete, until the next `use`


class AdapterSlots:
    def __init__(self, model: Any) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._active: str | None = None
        self._users: Counter[str] = Counter()
        self._retired: set[str] = set()
        self._applied: object = None

    @property
    def active_name(self) -> str | None:
        return self._active

    def lease(self, name: str) -> bool:
        """Reserve the adapter `name` for one request; False when it is not the active one."""
        with self._lock:
            if name != self._active:
                return False
            self._users[name] += 1
            return True

    def release(self, name: str) -> None:
        with self._lock:
            self._users[name] -= 1
            if self._users[name] <= 0:
                del self._users[name]

    # --- model thread only -----------------------------------------------------------------

    def use(self, name: str | None) -> None:
        """Make the next forward pass compute with adapter `name`, or with the base weights."""
        self._collect()
        if self._applied == name:
            return
        if name is None:
            if getattr(self._model, "_hf_peft_config_loaded", False):
                self._model.disable_adapters()
        else:
            self._model.enable_adapters()
            self._model.set_adapter(name)
        self._applied = name

    def activate(self, name: str, path: str) -> None:
        """Load the PEFT adapter directory `path` as `name` and make it the active adapter."""
        if name == self._active:
            return
        if name not in self._loaded():
            try:
                self._model.load_adapter(path, adapter_name=name, hotswap=False)
            except Exception:
                if name in self._loaded():
                    self._model.delete_adapter(name)
                self._applied = _UNKNOWN
                raise
        self._applied = _UNKNOWN
        with self._lock:
            previous, self._active = self._active, name
            self._retired.discard(name)
            if previous is not None:
                self._retired.add(previous)
        log.info("adapter %s active (was %s)", name, previous)
        self._collect()

    def deactivate(self) -> None:
        """No adapter is active any more: the policy is the base model too."""
        with self._lock:
            previous, self._active = self._active, None
            if previous is not None:
                self._retired.add(previous)
        if previous is not None:
            log.info("adapter %s deactivated", previous)
        self._collect()

    def _loaded(self) -> set[str]:
        if not getattr(self._model, "_hf_peft_config_loaded", False):
            return set()
        return set(self._model.peft_config)

    def _collect(self) -> None:
        if not self._retired:
            return
        with self._lock:
            unused = {name for name in self._retired if self._users[name] == 0}
            self._retired -= unused
        for name in unused & self._loaded():
            self._model.delete_adapter(name)
            self._applied = _UNKNOWN
            log.info("adapter %s unloaded", name)
