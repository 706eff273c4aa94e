"""The served OpenAPI document as YAML: `openapi.yaml` is this, and a test keeps it so."""

from __future__ import annotations

from typing import Any

import yaml

from service.app import create_app
from service.settings import Settings


def served_openapi() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()


def openapi_yaml() -> str:
    return yaml.safe_dump(served_openapi(), sort_keys=False, allow_unicode=True, width=100)
