"""Helpers for tests that start servers as subprocesses: a free loopback port, and waiting
until a URL answers (anything below 500) within a deadline."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


async def wait_until_up_async(url: str, timeout_s: float = 60.0) -> None:
    """`wait_until_up` off the event loop, for async tests."""
    await asyncio.to_thread(wait_until_up, url, timeout_s)
