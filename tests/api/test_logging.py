"""Nothing secret in logs: no keys ever; prompts and answers only at DEBUG (docs/architecture.md, invariant 5)."""

from __future__ import annotations

import json
import logging

import pytest

from service.logs import JsonFormatter
from tests.api.conftest import ProxyFactory
from tests.fakes.upstream import FakeUpstream

PROMPT = "my-secret-medical-question-4711"
UPSTREAM_KEY = "sk-upstream-never-logged-0815"


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_info_logs_hold_no_prompt_and_no_key(
    start_proxy: ProxyFactory, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = start_proxy(upstream_api_key=UPSTREAM_KEY)
    proxy.client(api_key="sk-client-key-not-logged").chat.completions.create(
        model="policy", messages=[{"role": "user", "content": PROMPT}]
    )
    logged = _everything_logged(caplog)
    access = [json.loads(line) for line in logged.splitlines() if '"message": "request"' in line]
    assert access and access[-1]["path"] == "/v1/chat/completions" and access[-1]["status"] == 200
    assert access[-1]["request_id"] != "-"
    assert PROMPT not in logged and UPSTREAM_KEY not in logged and "sk-client-key" not in logged


def test_debug_logs_show_prompts_but_never_keys(
    start_proxy: ProxyFactory, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = start_proxy(upstream_api_key=UPSTREAM_KEY)
    proxy.client().chat.completions.create(model="policy", messages=[{"role": "user", "content": PROMPT}])
    logged = _everything_logged(caplog)
    assert "Sure, here is a helpful answer." in logged
    assert UPSTREAM_KEY not in logged
