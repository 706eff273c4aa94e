"""Run inside NeMo Guardrails' venv (bench/integrations.py): the latency of `generate_async`
with the rails of the config folder argv[1] ("nemo + rail") and with no rails ("nemo"),
argv[2] requests each; prints the samples (ms) as JSON. Imports nothing of Conscience."""

import asyncio
import json
import sys
import time

import yaml
from nemoguardrails import LLMRails, RailsConfig


async def samples(rails: LLMRails, count: int) -> list:
    ask = [{"role": "user", "content": "Say hello."}]
    await rails.generate_async(messages=ask)  # warm
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await rails.generate_async(messages=ask)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


async def main() -> None:
    folder, count = sys.argv[1], int(sys.argv[2])
    with_rail = RailsConfig.from_path(folder)
    config = yaml.safe_load(open(f"{folder}/config.yml"))
    config.pop("rails", None)
    without = RailsConfig.from_content(yaml_content=yaml.safe_dump(config))
    print(json.dumps({"nemo": await samples(LLMRails(without), count),
                      "nemo + rail": await samples(LLMRails(with_rail), count)}))


asyncio.run(main())
