"""Run inside NeMo Guardrails' venv (test_nemo.py): the rails of the config folder argv[1],
asked argv[2]; prints the bot's answer as JSON. Imports nothing of Conscience."""

import asyncio
import json
import sys

from nemoguardrails import LLMRails, RailsConfig


async def main() -> None:
    rails = LLMRails(RailsConfig.from_path(sys.argv[1]))
    answer = await rails.generate_async(messages=[{"role": "user", "content": sys.argv[2]}])
    print(json.dumps({"content": answer["content"]}))


asyncio.run(main())
