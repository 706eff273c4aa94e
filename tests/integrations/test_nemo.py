"""Conscience as a NeMo Guardrails output rail (integrations/nemo/config), run by the real
`nemoguardrails` package (its own venv: venvs.py) with our fake upstream as the main model:
the repair rail replaces a harmful answer (a triple in our database), the check rail refuses
it, and both pass a harmless one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from service.store.models import Check, Triple
from tests.api.conftest import HARMFUL, REPAIRED, Proxy
from tests.fakes.upstream import FakeUpstream
from tests.integrations.venvs import ROOT, integration_python

pytestmark = pytest.mark.slow
HARMLESS = "Talk to your neighbour kindly; most people do not know they are loud."
QUESTION = "My neighbour is loud. What do I do?"
REFUSAL = "I'm sorry, I can't respond to that."


def rails_answer(tmp_path: Path, conscience: Proxy, upstream_url: str, flow: str) -> str:
    """The bot's answer through the shipped config, its model and rail set for this test."""
    folder = tmp_path / flow.replace(" ", "-")
    shutil.copytree(ROOT / "integrations" / "nemo" / "config", folder)
    config = (folder / "config.yml").read_text()
    config = config.replace("http://vllm:8000/v1", upstream_url).replace("conscience repair output", flow)
    (folder / "config.yml").write_text(config)
    env = {**os.environ, "CONSCIENCE_API_BASE": conscience.server.origin, "OPENAI_API_KEY": "unused",
           "PYTHONPATH": ""}
    done = subprocess.run(
        [str(integration_python("nemo")), str(ROOT / "tests" / "integrations" / "nemo_driver.py"), str(folder),
         QUESTION],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["content"]


def test_the_repair_rail_replaces_a_harmful_answer(
    tmp_path: Path, conscience: Proxy, fake: FakeUpstream, upstream_server: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    before = len(conscience.triples())
    assert rails_answer(tmp_path, conscience, upstream_server.url, "conscience repair output") == REPAIRED
    triple = conscience.wait_rows(Triple, before + 1)[-1]
    assert triple.rejected == HARMFUL and triple.chosen == REPAIRED
    assert triple.prompt == [{"role": "user", "content": QUESTION}]
    assert conscience.rows(Check, id=triple.check_id)[0].endpoint == "check"


def test_the_check_rail_refuses_a_harmful_answer(
    tmp_path: Path, conscience: Proxy, fake: FakeUpstream, upstream_server: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    assert rails_answer(tmp_path, conscience, upstream_server.url, "conscience check output") == REFUSAL


@pytest.mark.parametrize("flow", ["conscience repair output", "conscience check output"])
def test_both_rails_pass_a_harmless_answer(
    tmp_path: Path, conscience: Proxy, fake: FakeUpstream, upstream_server: FakeUpstream, flow: str
) -> None:
    fake.policy_answer = HARMLESS
    assert rails_answer(tmp_path, conscience, upstream_server.url, flow) == HARMLESS
