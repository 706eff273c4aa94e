"""openapi.yaml is the contract: it must equal what the app serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.openapi_spec import served_openapi

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"


def test_openapi_yaml_equals_the_served_document() -> None:
    committed = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    assert committed == served_openapi(), (
        "openapi.yaml drifted from the app: regenerate it with `conscience openapi --output openapi.yaml`"
    )


def test_every_openai_route_is_in_the_contract() -> None:
    paths = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))["paths"]
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings", "/v1/moderations",
                  "/v1/conscience/check",
                  "/healthz", "/readyz", "/metrics"):
        assert route in paths
    assert any(path.startswith("/admin/") for path in paths)
