"""Helpers for tests (and benchmarks) that start servers as subprocesses: a free loopback port,
the fake OpenAI upstream in its own process, waiting until a URL answers (anything below 500)
within a deadline; a console session over plain http."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake_upstream(port: int, delay_ms: float = 0.0) -> subprocess.Popen[bytes]:
    """The tests' fake OpenAI server (`python -m tests.fakes`) in its own process: answers after
    `delay_ms` (0: at once), keeps no request history."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", str(port), "--no-record", "--delay-ms", str(delay_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


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


class ConsoleSession:
    """A console session driven over plain http against a server started as a subprocess:
    its cookies are Secure, which httpx keeps only for https, so this holds them itself."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.cookies: dict[str, str] = {}

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        header = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = httpx.request(method, f"{self.origin}{path}", headers={"cookie": header},
                                 timeout=10.0, **kwargs)  # type: ignore[arg-type]
        for name, value in response.cookies.items():
            self.cookies[name] = value
        return response

    @staticmethod
    def _csrf(page: httpx.Response) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def log_in(self, admin_key: str) -> None:
        form = self._request("GET", "/ui/login")
        answer = self._request("POST", "/ui/login", data={"csrf": self._csrf(form), "key": admin_key})
        assert answer.status_code == 303 and "conscience_session" in self.cookies, answer.text

    def page(self, path: str = "/ui/review") -> httpx.Response:
        """A page: 200 while the session is valid, 303 to the login form once it is not."""
        return self._request("GET", path)

    def log_out(self) -> None:
        page = self.page()
        assert page.status_code == 200, page.text
        answer = self._request("POST", "/ui/logout", data={"csrf": self._csrf(page)})
        assert answer.status_code == 303, answer.text

    def on(self, origin: str) -> ConsoleSession:
        """The same cookies sent to another worker or replica (a copied cookie)."""
        other = ConsoleSession(origin)
        other.cookies = dict(self.cookies)
        return other
