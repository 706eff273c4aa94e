"""Client keys end to end: created with the CLI, enforced by the running proxy."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import openai
import pytest

from service.store.models import Check
from tests.api.conftest import Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "Hello?"}]


def create_key(proxy: Proxy, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "keys", "create", "--name", "team-a",
         "--db-url", proxy.settings.store.db_url, *options],
        capture_output=True, text=True, check=True, timeout=60,
    )
    [key] = re.findall(r"sk-cons-[A-Za-z0-9_\-]+", done.stdout)
    return key


def wait_until_required(proxy: Proxy) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            proxy.client(api_key="wrong").models.list()
        except openai.AuthenticationError:
            return
        time.sleep(0.1)
    raise AssertionError("the proxy never started requiring keys")


def test_keys_are_required_once_one_exists(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(api_key_refresh_s=0.2)
    proxy.client(api_key="anything").chat.completions.create(model="policy", messages=ASK)  # open

    key = create_key(proxy, "--framework", "wwjd")
    wait_until_required(proxy)

    with pytest.raises(openai.AuthenticationError) as caught:
        proxy.client(api_key="sk-cons-wrong").chat.completions.create(model="policy", messages=ASK)
    assert caught.value.status_code == 401 and "sk-cons-wrong" not in str(caught.value)

    completion = proxy.client(api_key=key).chat.completions.create(model="policy", messages=ASK)
    assert completion.model_extra["conscience"]["framework"] == "wwjd"  # the key's framework
    rows = proxy.wait_rows(Check, 2)
    assert rows[-1].api_key_id is not None
    assert all(key not in str(vars(row)) for row in rows)  # never the key itself


def test_a_client_may_not_swap_its_keys_framework_unless_the_operator_allows_it(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy(api_key_refresh_s=0.2)
    key = create_key(proxy, "--framework", "wwjd")
    wait_until_required(proxy)
    client = proxy.client(api_key=key)

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model="policy", messages=ASK, extra_body={"conscience": {"framework": "three_laws"}}
        )
    assert caught.value.body["code"] == "framework_not_allowed"
    assert caught.value.body["param"] == "conscience.framework"
    assert caught.value.body["type"] == "permission_error"
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model="policy", prompt="Hi", extra_body={"conscience": {"framework": "four_laws"}})
    own = client.chat.completions.create(model="policy", messages=ASK, extra_body={"conscience": {"framework": "wwjd"}})
    assert own.model_extra["conscience"]["framework"] == "wwjd"

    lenient = start_proxy(api_key_refresh_s=0.2, client_frameworks="four_laws")
    wait_until_required(lenient)
    chosen = lenient.client(api_key=key).chat.completions.create(
        model="policy", messages=ASK, extra_body={"conscience": {"framework": "four_laws"}}
    )
    assert chosen.model_extra["conscience"]["framework"] == "four_laws"
    with pytest.raises(openai.PermissionDeniedError):
        lenient.client(api_key=key).chat.completions.create(
            model="policy", messages=ASK, extra_body={"conscience": {"framework": "three_laws"}}
        )
