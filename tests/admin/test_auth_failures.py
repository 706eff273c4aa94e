"""The wrong-key counter itself (service/security/throttle.py): a sliding window per address,
and bounded memory however many addresses guess."""

from __future__ import annotations

from service.security.throttle import MAX_TRACKED_ADDRESSES, AuthFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides() -> None:
    clock = Clock()
    failures = AuthFailures(max_failures=2, window_s=10.0, clock=clock)
    failures.failed("a")
    clock.now += 4
    failures.failed("a")
    assert failures.retry_after_s("a") == 6 and failures.retry_after_s("b") is None
    clock.now += 6  # the first failure leaves the window: one left, under the limit
    assert failures.retry_after_s("a") is None
    failures.failed("a")
    assert failures.retry_after_s("a") == 4  # now the second one holds it


def test_many_addresses_cost_bounded_memory() -> None:
    failures = AuthFailures(max_failures=3, window_s=60.0, clock=Clock())
    for n in range(MAX_TRACKED_ADDRESSES + 50):
        failures.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(failures._failures) == MAX_TRACKED_ADDRESSES
    assert "10.0.0.0" not in failures._failures  # the quietest were forgotten
