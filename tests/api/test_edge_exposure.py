"""What a stranger who reaches the port sees (issue 26): /metrics behind a key, the API
documentation off unless the server listens on loopback only, and wrong admin keys (admin API
and console login together) limited per client address."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from service.app import create_app
from service.openapi_spec import served_openapi
from service.settings import Settings
from tests.api.conftest import METRICS_KEY, Proxy, ProxyFactory

ADMIN_KEY = "admin-key-for-the-edge-tests"
DOCS = ("/docs", "/redoc", "/openapi.json")


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_need_the_metrics_key(proxy: Proxy) -> None:
    url = f"{proxy.server.origin}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong-metrics-key-123"}, {"Authorization": f"Basic {METRICS_KEY}"}):
        response = httpx.get(url, headers=headers, timeout=10)
        assert_openai_error(response, 401, "invalid_metrics_key")
        assert response.headers["www-authenticate"] == "Bearer"
        assert "conscience_" not in response.text
    assert "conscience_requests_total" in proxy.metrics_text()


def test_without_a_metrics_key_metrics_are_closed(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(metrics_key=None)
    response = httpx.get(f"{proxy.server.origin}/metrics", timeout=10)
    assert_openai_error(response, 403, "metrics_disabled")
    assert "CONSCIENCE_SECURITY__METRICS_KEY" in response.json()["error"]["message"]


def test_metrics_public_opens_them(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(metrics_key=None, metrics_public=True)
    response = httpx.get(f"{proxy.server.origin}/metrics", timeout=10)
    assert response.status_code == 200 and "conscience_requests_total" in response.text


@pytest.mark.parametrize("key", ["", "short-metrics"])
def test_a_short_metrics_key_refuses_to_start(key: str) -> None:
    with pytest.raises(ValueError, match="CONSCIENCE_SECURITY__METRICS_KEY"):
        Settings(metrics_key=key)


# --- API documentation -----------------------------------------------------------------------


def docs_statuses(proxy: Proxy) -> set[int]:
    return {httpx.get(f"{proxy.server.origin}{path}", timeout=10).status_code for path in DOCS}


def test_docs_are_off_on_a_public_address(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(host="0.0.0.0")  # what the image and the manifests listen on
    for path in DOCS:
        assert_openai_error(httpx.get(f"{proxy.server.origin}{path}", timeout=10), 404, None)


def test_docs_are_on_for_loopback_and_when_asked(start_proxy: ProxyFactory) -> None:
    assert docs_statuses(start_proxy()) == {200}  # 127.0.0.1, the default
    assert docs_statuses(start_proxy(host="0.0.0.0", docs_enabled=True)) == {200}
    assert docs_statuses(start_proxy(docs_enabled=False)) == {404}


def test_the_contract_is_still_generated_with_docs_off() -> None:
    app = create_app(Settings(_env_file=None, host="0.0.0.0"))
    assert app.openapi_url is None and app.openapi()["paths"].keys() == served_openapi()["paths"].keys()


# --- wrong admin keys ------------------------------------------------------------------------


def login_attempt(origin: str, key: str) -> httpx.Response:
    """The console's login form, as a browser posts it (its cookie sent by hand: it is Secure,
    and this is plain HTTP on loopback)."""
    form = httpx.get(f"{origin}/ui/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    cookie = form.headers["set-cookie"].split(";")[0]
    assert csrf, form.text
    return httpx.post(
        f"{origin}/ui/login", data={"csrf": csrf[1], "key": key}, headers={"Cookie": cookie}, timeout=10
    )


def admin_get(origin: str, key: str) -> httpx.Response:
    return httpx.get(f"{origin}/admin/triples", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_wrong_admin_keys_are_limited_per_address(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(admin_key=ADMIN_KEY, auth_max_failures=3, auth_failure_window_s=2.0)
    origin = proxy.server.origin
    for _ in range(20):  # the right key is never counted
        assert admin_get(origin, ADMIN_KEY).status_code == 200
    assert admin_get(origin, "wrong-admin-key-1").status_code == 401
    assert login_attempt(origin, "wrong-admin-key-2").status_code == 401  # one count for both doors
    assert admin_get(origin, "wrong-admin-key-3").status_code == 401
    limited = admin_get(origin, "wrong-admin-key-4")
    assert_openai_error(limited, 429, "too_many_auth_failures")
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    # Now even the right key is not compared: a different answer would let guessing go on.
    assert_openai_error(admin_get(origin, ADMIN_KEY), 429, "too_many_auth_failures")
    page = login_attempt(origin, ADMIN_KEY)
    assert page.status_code == 429 and "retry-after" in page.headers and "Too many" in page.text
    time.sleep(2.1)  # the failures leave the window
    assert admin_get(origin, ADMIN_KEY).status_code == 200
    assert login_attempt(origin, ADMIN_KEY).status_code == 303


def test_wrong_metrics_keys_count_too(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(auth_max_failures=2)
    url = f"{proxy.server.origin}/metrics"
    for _ in range(2):
        assert httpx.get(url, headers={"Authorization": "Bearer wrong-metrics-key"}, timeout=10).status_code == 401
    assert_openai_error(httpx.get(url, timeout=10), 429, "too_many_auth_failures")
