"""The `tools` and `tool_choice` of a chat request, read for the model's chat template.

- `tool_choice: "none"`: the tools are not shown to the model and nothing is parsed (vLLM's
  `--exclude-tools-when-tool-choice-none`), so the answer is text;
- `"auto"` (the default with tools): the template shows the tools; calls in the answer
  (service/backends/local/tool_parser.py) come back as OpenAI `tool_calls`;
- `"required"` or a named function: the answer is started for the model with the opening of a
  call (`<tool_call>\\n{"name": "` or the whole name), so it calls a tool — that one, if named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.backends.local.prompts import invalid
from service.backends.local.tool_parser import OPEN
from service.core.backend import JSON


@dataclass(frozen=True, slots=True)
class ToolUse:
    tools: list[JSON]  # what the template shows: OpenAI `{"type": "function", "function": {…}}`
    forced_start: str  # the start of the answer written for the model ("" under "auto")

    @property
    def names(self) -> list[str]:
        return [tool["function"]["name"] for tool in self.tools]


def _checked_tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise invalid("tools must be a list of function tools", "tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise invalid('each tool must be {"type": "function", "function": {...}}', f"tools[{index}]")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid("each function needs a non-empty name", f"tools[{index}].function.name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid("function parameters must be a JSON Schema object", f"tools[{index}].function.parameters")
    return tools


def _named_choice(choice: JSON, names: list[str]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise invalid('tool_choice must be "none", "auto", "required" or {"type": "function", '
                      '"function": {"name": ...}}', "tool_choice")
    if name not in names:
        raise invalid(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    return name


def tool_use(body: JSON) -> ToolUse | None:
    """How the request uses tools; None when the answer is plain text."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools:
        if choice not in (None, "none"):
            raise invalid("tool_choice needs tools", "tool_choice")
        return None
    tools = _checked_tools(tools)
    names = [tool["function"]["name"] for tool in tools]
    if choice == "none":
        return None
    if choice in (None, "auto"):
        return ToolUse(tools, "")
    if choice == "required":
        return ToolUse(tools, f'{OPEN}\n{{"name": "')
    if isinstance(choice, dict):
        name = _named_choice(choice, names)
        return ToolUse(tools, f'{OPEN}\n{{"name": {json.dumps(name)}, "arguments": ')
    raise invalid('tool_choice must be "none", "auto", "required" or a named function', "tool_choice")
