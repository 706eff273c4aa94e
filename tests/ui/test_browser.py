"""The console in a real browser (Debian's Chromium, headless, through Playwright) in front of
the real proxy and the fake upstream: a request logs a triple, the operator approves it with
the keyboard, the database says `approved`; a wrong key gets no page; the charts render.

With CONSCIENCE_SCREENSHOTS=DIR the pages are also saved there (docs/screenshots/, shown on
docs/review.md, come from `CONSCIENCE_SCREENSHOTS=docs/screenshots pytest tests/ui/test_browser.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from service.store.models import AdapterVersion, Check, Triple
from tests.api.conftest import ASK_BODY, HARMFUL, REPAIRED, Proxy, ProxyFactory, fake, start_proxy  # noqa: F401  (pytest fixtures)
from tests.fakes.upstream import FakeUpstream

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ADMIN_KEY = "console-admin-key-for-tests"

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    return []


@pytest.fixture
def page(chromium: Any, console_errors: list[str]) -> Iterator[Any]:
    """A fresh browser context; the test fails on any console error or page exception left
    in `console_errors`."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(5000)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    yield page
    context.close()
    assert console_errors == []


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("CONSCIENCE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def _seed_adapters(proxy: Proxy) -> None:
    gate = {"held_out_rows": 12, "passed": True,
            "held_out": {"candidate": {"accuracy": 0.83, "mean_margin": 0.41},
                         "previous": {"accuracy": 0.75, "mean_margin": 0.22}},
            "refusal_rate": {"candidate": 0.04, "previous": 0.03, "prompts": 50}}
    engine = create_engine(proxy.settings.store.db_url.replace("+aiosqlite", ""))
    with Session(engine) as session, session.begin():
        session.add_all([
            AdapterVersion(id="v1", name="conscience-v1", base_model="base-model", path="/a/v1",
                           status="active", activated_at=datetime.now(UTC), triple_count=40,
                           metrics={"gate": gate}),
            AdapterVersion(id="v2", name="conscience-v2", base_model="base-model", path="/a/v2",
                           status="candidate", parent_id="v1", triple_count=64,
                           metrics={"gate": gate}),
        ])


def _log_in(page: Any, origin: str, key: str) -> None:
    page.goto(f"{origin}/ui/login")
    page.fill('input[name="key"]', key)
    page.click('button[type="submit"]')


def test_review_dashboard_and_adapters_in_chromium(
    start_proxy: ProxyFactory, fake: FakeUpstream, page: Any, console_errors: list[str],  # noqa: F811
) -> None:
    proxy = start_proxy(admin_key=ADMIN_KEY, judge_model=None, adapter_poll_s=60)
    origin = proxy.server.origin
    client = proxy.client()
    fake.policy_answer = HARMFUL
    client.chat.completions.create(**ASK_BODY)  # flagged, repaired: a triple
    fake.base_model_answer = HARMFUL + " Again."  # no repair passes: blocked
    client.chat.completions.create(**ASK_BODY)
    [triple] = proxy.wait_rows(Triple, 1)
    [blocked] = proxy.wait_rows(Check, 1, verdict="unethical", repaired=False)
    assert blocked.answer == HARMFUL and blocked.prompt == ASK_BODY["messages"]
    _seed_adapters(proxy)

    # A wrong key: the login form again, and no console page behind it.
    _log_in(page, origin, "wrong-key-but-long-enough")
    assert page.locator(".error").inner_text() == "Incorrect admin key."
    assert page.locator("nav").count() == 0
    page.goto(f"{origin}/ui/review")
    assert page.url == f"{origin}/ui/login"
    assert console_errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    console_errors.clear()  # the refused login's own status; from here on, none at all

    _log_in(page, origin, ADMIN_KEY)
    assert page.url.startswith(f"{origin}/ui/review")
    section = page.locator(f'section.triple[data-triple-id="{triple.id}"]')
    assert HARMFUL in section.locator(".answer.rejected").inner_text()
    assert REPAIRED in section.locator(".answer.chosen").inner_text()
    _screenshot(page, "review")
    with page.expect_navigation():
        page.keyboard.press("a")
    assert "Approved 1 triple." in page.locator(".notice").inner_text()
    assert [t.status for t in proxy.triples(id=triple.id)] == ["approved"]

    page.goto(f"{origin}/ui/blocked")
    assert HARMFUL in page.locator("section.blocked .answer").inner_text()
    assert "Again." in page.locator("section.blocked .drafts").text_content()

    page.goto(f"{origin}/ui/dashboard")
    bars = page.locator("svg.chart rect.bar")
    assert bars.count() > 0
    assert max(float(v) for v in bars.evaluate_all("bars => bars.map(b => b.dataset.value)")) > 0
    assert page.locator("svg.chart line.marker").count() == 1
    _screenshot(page, "dashboard")

    page.goto(f"{origin}/ui/adapters")
    _screenshot(page, "adapters")
    page.click('tr[data-version="conscience-v2"] a.button')
    assert page.locator("h1").inner_text() == "Activate conscience-v2?"
    page.click("#confirm")
    assert "conscience-v2 is active." in page.locator(".notice").inner_text()
    assert fake.adapters == {"conscience-v2": "/a/v2"}


def _seed_for_reading(proxy: Proxy) -> None:
    """Two triples, one slow check (20.7 s upstream), and a lineage: v1 (from the base), v2
    active (from v1, gated on one held-out row), v3 a candidate."""
    one_row = {"held_out_rows": 1, "passed": True,
               "held_out": {"candidate": {"accuracy": 1.0, "mean_margin": 0.2},
                            "previous": {"accuracy": 0.0, "mean_margin": 0.0}},
               "refusal_rate": {"candidate": 0.0, "previous": 0.0, "prompts": 24}}
    engine = create_engine(proxy.settings.store.db_url.replace("+aiosqlite", ""))
    with Session(engine) as session, session.begin():
        session.add_all([
            Triple(request_id=f"r{i}", check_id=f"c{i}", framework="three_laws",
                   prompt=[{"role": "user", "content": f"question number {i}"}],
                   rejected=f"harmful {i}", chosen=f"repaired {i}", details={},
                   policy_model="policy", judge_model="judge")
            for i in range(2)
        ])
        session.add(Check(request_id="slow", endpoint="chat", framework="three_laws", mode="enforce",
                          verdict="ethical", score=0.1, policy_model="policy", judge_model="judge",
                          upstream_ms=20_700.0, judge_ms=35.0, repair_ms=0.0))
        session.add_all([
            AdapterVersion(id="v1", name="conscience-v1", base_model="base-model", path="/a/v1",
                           status="retired", triple_count=30, metrics={"gate": one_row}),
            AdapterVersion(id="v2", name="conscience-v2", base_model="base-model", path="/a/v2",
                           status="active", parent_id="v1", activated_at=datetime.now(UTC),
                           triple_count=30, metrics={"gate": one_row}),
            AdapterVersion(id="v3", name="conscience-v3", base_model="base-model", path="/a/v3",
                           status="candidate", parent_id="v2", triple_count=30, metrics={"gate": one_row}),
        ])


@pytest.fixture
def seeded(start_proxy: ProxyFactory, fake: FakeUpstream, page: Any) -> str:  # noqa: F811
    """A logged-in page on a proxy seeded by `_seed_for_reading`; returns the origin."""
    proxy = start_proxy(admin_key=ADMIN_KEY, judge_model=None, adapter_poll_s=60)
    _seed_for_reading(proxy)
    _log_in(page, proxy.server.origin, ADMIN_KEY)
    return proxy.server.origin


def test_a_row_of_the_list_opens_its_triple(seeded: str, page: Any) -> None:
    page.goto(f"{seeded}/ui/review")
    rows = page.locator("form.bulk tbody tr")
    assert rows.count() == 2
    second = rows.nth(1).get_attribute("data-triple-id")
    assert second and page.locator("section.triple").get_attribute("data-triple-id") != second
    with page.expect_navigation():
        rows.nth(1).locator("td").nth(2).click()  # the status cell: plain text, not a link
    assert page.locator("section.triple").get_attribute("data-triple-id") == second
    assert "Triple 2 of 2" in page.locator("section.triple h1").inner_text()


def test_latencies_read_in_seconds(seeded: str, page: Any) -> None:
    page.goto(f"{seeded}/ui/dashboard")
    labels = page.locator('svg.chart[aria-label="Latency per stage"] text').all_text_contents()
    assert "p50 20.7 s" in labels and "p50 35 ms" in labels
    assert not any("e+" in label for label in labels)


def test_charts_use_the_cards_width(seeded: str, page: Any) -> None:
    page.goto(f"{seeded}/ui/dashboard")
    widths = page.locator("svg.chart").evaluate_all(
        "charts => charts.map(c => { const card = c.closest('section'); const style = getComputedStyle(card);"
        " return [c.getBoundingClientRect().width,"
        " card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)]; })"
    )
    assert len(widths) >= 3 and all(abs(chart - card) < 2 for chart, card in widths), widths


def test_roll_back_shows_only_where_there_is_a_version_to_go_back_to(seeded: str, page: Any) -> None:
    page.goto(f"{seeded}/ui/adapters")
    assert page.locator("a.button", has_text="Roll back").count() == 1
    assert page.locator('tr[data-version="conscience-v2"] a#rollback').inner_text() == "Roll back"
    page.click("#rollback")
    page.click("#confirm")
    assert "conscience-v1 is active." in page.locator(".notice").inner_text()
    assert page.locator("a.button", has_text="Roll back").count() == 0  # v1 came from the base


def test_gate_figures_from_few_rows_show_their_counts(seeded: str, page: Any) -> None:
    page.goto(f"{seeded}/ui/adapters")
    cells = page.locator('tr[data-version="conscience-v2"] td')
    assert cells.nth(5).inner_text() == "1/1 (0/1)"  # accuracy on the one held-out row (previous)
    assert cells.nth(7).inner_text() == "0/24 (0/24)"  # benign refusals
    assert "0.000" not in page.locator("table.adapters").inner_text()
