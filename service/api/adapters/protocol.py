"""Wire types of the adapter admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AdapterVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    base_model: str
    path: str
    status: str
    parent: str | None = None  # the version it was trained from; None: the base model
    triple_count: int
    dataset_hash: str | None
    failure_reason: str | None
    metrics: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None


class AdapterVersionList(BaseModel):
    data: list[AdapterVersionOut]
