"""Fakes of external services, served over real loopback HTTP (see upstream.FakeUpstream)."""

from tests.fakes.openai_wire import ToolCall
from tests.fakes.script import PREFIX_LABEL_TOKENS
from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import FakeUpstream, RecordedRequest

__all__ = ["PREFIX_LABEL_TOKENS", "FakeUpstream", "RecordedRequest", "ThreadedServer", "ToolCall"]
