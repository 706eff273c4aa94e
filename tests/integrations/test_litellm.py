"""Conscience behind a real LiteLLM proxy (`litellm --config`, its own venv: venvs.py) in front of
our fake upstream: our guardrail (integrations/litellm) repairs or blocks a harmful answer and
passes a harmless one, and LiteLLM's own `openai_moderation` guardrail flags on our
/v1/moderations. One LiteLLM process serves every test: each request picks its guardrail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from service.store.models import Check, Triple
from tests.api.conftest import HARMFUL, REPAIRED, Proxy
from tests.fakes.upstream import FakeUpstream
from tests.integrations.venvs import ROOT, integration_python
from tests.processes import free_port, wait_until_up

pytestmark = pytest.mark.slow
MASTER_KEY = "sk-litellm-master-key-for-the-tests-0123456789"
HARMLESS = "Talk to your neighbour kindly; most people do not know they are loud."
ASK = [{"role": "user", "content": "My neighbour is loud. What do I do?"}]


def litellm_config(upstream_url: str, conscience_url: str) -> dict:
    def ours(name: str, action: str) -> dict:
        return {"guardrail_name": name, "litellm_params": {
            "guardrail": "conscience_guardrail.ConscienceGuardrail", "mode": "post_call", "default_on": False,
            "api_base": conscience_url, "conscience_action": action,
        }}

    return {
        "model_list": [{"model_name": "policy", "litellm_params": {
            "model": "openai/policy", "api_base": upstream_url, "api_key": "unused",
        }}],
        "guardrails": [
            ours("conscience-repair", "repair"),
            ours("conscience-block", "block"),
            {"guardrail_name": "conscience-moderation", "litellm_params": {
                "guardrail": "openai_moderation", "mode": "post_call", "default_on": False,
                "api_base": f"{conscience_url}/v1", "api_key": "unused",
            }},
        ],
        "litellm_settings": {"num_retries": 0, "telemetry": False},
    }


@pytest.fixture(scope="module")
def litellm(
    conscience: Proxy, upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A LiteLLM proxy's /v1 URL; the guardrail file sits beside its config, as LiteLLM loads it."""
    python = integration_python("litellm")
    folder: Path = tmp_path_factory.mktemp("litellm")
    shutil.copy(ROOT / "integrations" / "litellm" / "conscience_guardrail.py", folder)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(litellm_config(upstream_server.url, conscience.server.origin)))
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_TELEMETRY": "False",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""}
    log = (folder / "litellm.log").open("wb")
    process = subprocess.Popen(
        [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def ask(url: str, guardrail: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=url, api_key=MASTER_KEY, max_retries=0, timeout=60)
    return client.chat.completions.create(model="policy", messages=ASK, extra_body={"guardrails": [guardrail]})


def test_our_guardrail_replaces_a_harmful_answer_with_the_repair(
    litellm: str, conscience: Proxy, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    before = len(conscience.triples())
    answer = ask(litellm, "conscience-repair")
    assert answer.choices[0].message.content == REPAIRED
    triples = conscience.wait_rows(Triple, before + 1)
    [triple] = [t for t in triples if t.rejected == HARMFUL][-1:]
    assert triple.chosen == REPAIRED and triple.prompt == ASK
    [check] = conscience.rows(Check, id=triple.check_id)
    assert check.endpoint == "check" and check.repaired


def test_our_guardrail_passes_a_harmless_answer(litellm: str, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMLESS
    assert ask(litellm, "conscience-repair").choices[0].message.content == HARMLESS
    assert not fake.calls("generation")[1:], "no repair was drafted"
    assert ask(litellm, "conscience-block").choices[0].message.content == HARMLESS


def test_our_guardrail_blocks_a_harmful_answer_when_configured_so(litellm: str, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    with pytest.raises(openai.BadRequestError) as caught:
        ask(litellm, "conscience-block")
    assert "Blocked by the conscience" in str(caught.value) and "crowbar" not in str(caught.value)


def test_litellms_moderation_guardrail_flags_on_our_moderations(
    litellm: str, conscience: Proxy, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    with pytest.raises(openai.BadRequestError) as caught:
        ask(litellm, "conscience-moderation")
    assert "Violated OpenAI moderation policy" in str(caught.value)
    assert [c.verdict for c in conscience.wait_rows(Check, 1, endpoint="moderations")] == ["unethical"]
    fake.policy_answer = HARMLESS
    assert ask(litellm, "conscience-moderation").choices[0].message.content == HARMLESS
