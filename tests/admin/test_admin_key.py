"""The admin key: an empty or short one refuses to start instead of opening /admin."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from service.settings import MIN_ADMIN_KEY_CHARS, Settings
from tests.admin.conftest import ADMIN_KEY


@pytest.mark.parametrize("key", ["", "   ", "short-key", "x" * (MIN_ADMIN_KEY_CHARS - 1)])
def test_an_empty_or_short_admin_key_refuses_to_start(key: str) -> None:
    with pytest.raises(ValidationError, match="CONSCIENCE_SECURITY__ADMIN_KEY"):
        Settings(admin_key=key)


def test_an_empty_admin_key_from_the_environment_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSCIENCE_ADMIN_KEY", "")
    with pytest.raises(ValidationError, match="CONSCIENCE_SECURITY__ADMIN_KEY"):
        Settings()


def test_unset_and_long_enough_keys_are_accepted() -> None:
    assert Settings().security.admin_key is None
    key = Settings(admin_key="k" * MIN_ADMIN_KEY_CHARS).security.admin_key
    assert key is not None and key.get_secret_value() == "k" * MIN_ADMIN_KEY_CHARS


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
     {"Authorization": f"Bearer {ADMIN_KEY[:-1]}"}, {"Authorization": f"Bearer {ADMIN_KEY}x"},
     {"Authorization": f"Basic {ADMIN_KEY}"}],
)
async def test_anything_but_the_exact_key_is_refused(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/admin/triples", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_admin_key"
