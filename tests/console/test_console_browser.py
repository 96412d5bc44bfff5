"""The console in a real browser (Debian's Chromium, driven by Playwright) against the local
runtime: draw a 7 and see a prediction, open a sheet and see its overlay, correct a tile in
Review and see the correction stored, roll the champion back. Screenshots of each view are kept
under build/screenshots/ (the README's pictures come from them)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from tessera.corrections import current_corrections, tile_history
from tessera.registry import ModelRegistry
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs
from tests.conftest import drop_digit_sheets

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _chromium_or_skip() -> None:
    """Debian's Chromium, which `make test` installs; CI sets TESSERA_REQUIRE_BROWSER=1 so a
    missing browser fails there instead of skipping."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("TESSERA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests need {CHROMIUM} (make browser installs it)")
        pytest.skip(f"no {CHROMIUM} here: `make browser` installs it")


@pytest.fixture(scope="module")
def console(digits: Glyphs) -> Iterator[dict[str, Any]]:
    """A local runtime with two sheets of digits, two trained versions, and a browser page."""
    _chromium_or_skip()
    with LocalRuntime(bucket="tessera-console") as runtime:
        drop_digit_sheets(runtime, digits)
        s3 = runtime.client("s3")
        versions = [runtime.train(["digits"])["version"] for _ in range(2)]
        store = S3ObjectStore(bucket=runtime.bucket, client=s3)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield {"page": page, "url": runtime.api_url, "store": store, "versions": versions}
            browser.close()
            assert errors == []


def shown(image: Any, seconds: float = 10) -> bool:
    """Whether the <img> got a picture (a blob the page fetched) within `seconds`. The page's
    content policy forbids eval, so this polls instead of page.wait_for_function."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if image.evaluate("img => img.complete && img.naturalWidth > 0"):
            return True
        time.sleep(0.1)
    return False


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


def test_drawing_a_seven_shows_a_prediction_and_the_nearest_tiles(console: dict[str, Any]) -> None:
    page = console["page"]
    page.goto(f"{console['url']}/#draw")
    box = page.locator("#pad").bounding_box()
    # a 7: the top bar, then the stroke down to the left
    page.mouse.move(box["x"] + 70, box["y"] + 60)
    page.mouse.down()
    for x, y in ((140, 60), (210, 60), (180, 130), (150, 200), (125, 250)):
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^[0-9]$"))
    assert page.locator("#top li").count() == 3
    # the 28x28 input the model saw: ink, scaled and centred the MNIST way (a blank margin)
    seen = np.array(
        page.evaluate(
            """() => Array.from($seen.getContext("2d").getImageData(0, 0, 28, 28).data)
                     .filter((_, i) => i % 4 === 0)""".replace(
                "$seen", "document.getElementById('seen')"
            )
        ),
        dtype=np.uint8,
    ).reshape(28, 28)
    ink = seen > 128  # white ink on black, as the stored tiles
    assert ink.sum() > 30
    rows, cols = np.nonzero(ink)
    assert np.ptp(rows) <= 21 and np.ptp(cols) <= 21  # fitted into the 20x20 box
    mass = seen.astype(float)
    centre = [(mass.sum(axis=1 - a) * np.arange(28)).sum() / mass.sum() for a in (0, 1)]
    assert all(abs(c - 13.5) <= 2 for c in centre)  # centred by its mass
    page.wait_for_selector("#neighbours li img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#neighbours img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    shot(page, "draw")


def test_a_sheet_opens_to_its_overlay_and_tiles(console: dict[str, Any]) -> None:
    page = console["page"]
    page.goto(f"{console['url']}/#sheets")
    # the gallery shows each sheet's overlay
    expect(page.locator("#sheet-list li img.thumb")).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sheet-list img.thumb')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    page.locator("#sheet-list li").first.click()
    expect(page.locator("#sheet-tiles li")).to_have_count(100)
    assert shown(page.locator("#overlay"))
    # tiles are fetched as they scroll into view: the last one too, once it is there
    page.locator("#sheet-tiles li img").last.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sheet-tiles img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    shot(page, "sheets")


def test_review_corrects_a_tile_with_one_key_and_the_correction_is_stored(
    console: dict[str, Any],
) -> None:
    page = console["page"]
    page.goto(f"{console['url']}/#review")
    page.wait_for_selector("#review-card:not([hidden])")
    tile = page.text_content("#review-source")
    suggested = page.text_content("#review-suggested")
    shot(page, "review")
    page.press("#review-input", "Enter")  # accept the suggestion
    expect(page.locator("#review-progress")).to_contain_text("1 of")
    stored = current_corrections(console["store"], "digits")
    assert stored[tile].label == suggested and stored[tile].by == "local"


def test_a_long_sheet_list_comes_a_page_at_a_time(console: dict[str, Any]) -> None:
    """The two sheets one to a page (the requests are sent with limit=1): the first page shows
    one card and a More button, which brings the second and goes."""
    page = console["page"]
    asked: list[str] = []

    def one_per_page(route: Any) -> None:
        asked.append(route.request.url)
        route.continue_(url=f"{route.request.url}&limit=1")

    page.goto("about:blank")
    page.route(re.compile(r".*/sheets\?dataset=.*"), one_per_page)
    try:
        page.goto(f"{console['url']}/#sheets")
        expect(page.locator("#sheet-list li")).to_have_count(1)
        expect(page.locator("#more-sheets")).to_be_visible()
        first = page.text_content("#sheet-list li strong")
        page.locator("#more-sheets").click()
        expect(page.locator("#sheet-list li")).to_have_count(2)
        expect(page.locator("#more-sheets")).to_be_hidden()
    finally:
        page.unroute(re.compile(r".*/sheets\?dataset=.*"), one_per_page)
    second = page.locator("#sheet-list li strong").nth(1).text_content()
    assert first != second
    assert len(asked) == 2 and "after=" in asked[1]


def test_a_throttled_correction_is_sent_again_and_stored_once(console: dict[str, Any]) -> None:
    """API Gateway answers 429 past the stage's rate: the page waits and sends it again."""
    page = console["page"]
    refused: list[str] = []

    def throttle(route: Any) -> None:
        if route.request.method == "POST" and len(refused) < 2:
            refused.append(route.request.url)
            route.fulfill(
                status=429,
                content_type="application/json",
                body='{"message": "Too Many Requests"}',
            )
        else:
            route.continue_()

    page.goto("about:blank")
    page.goto(f"{console['url']}/#review")
    page.wait_for_selector("#review-card:not([hidden])")
    tile = page.text_content("#review-source")
    before = len(tile_history(console["store"], "digits", tile))
    page.route("**/corrections", throttle)
    try:
        page.press("#review-input", "x")  # exclude
        page.wait_for_timeout(200)
        page.press("#review-input", "x")  # pressed again while it waits: still one correction
        expect(page.locator("#review-source")).not_to_have_text(tile, timeout=15_000)
    finally:
        page.unroute("**/corrections", throttle)
    assert len(refused) == 2
    history = tile_history(console["store"], "digits", tile)
    assert len(history) == before + 1 and history[-1].action == "exclude"


def test_the_champion_is_rolled_back_from_the_models_view(console: dict[str, Any]) -> None:
    page = console["page"]
    first, second = console["versions"]
    registry = ModelRegistry(console["store"], "digits")
    assert champion_of(registry) in {first, second}
    page.goto(f"{console['url']}/#models")
    page.wait_for_selector("#versions tbody tr")
    target = next(v for v in (first, second) if v != champion_of(registry))
    page.click(f"#versions tr[data-version='{target}'] button.promote")
    expect(page.locator("#champion")).to_have_text(target)
    assert champion_of(registry) == target
    page.click(f"#versions tr[data-version='{target}'] button")  # its report
    assert shown(page.locator("#plot-confusion"))
    shot(page, "models")
    # the full report opens in a tab of its own, its pictures and styles with it
    with page.context.expect_page() as opened:
        page.click("#report-link")
    report = opened.value
    report.wait_for_load_state()
    expect(report.locator("h1")).to_contain_text(target)
    pictures = report.locator("img")
    assert pictures.count() >= 3
    assert report.evaluate(
        "() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)"
    )
    # its own style sheet applies (table cells bordered), not blocked by the console's policy
    cell = report.locator("td").first
    assert cell.evaluate("(td) => getComputedStyle(td).borderTopStyle") == "solid"
    report.close()


def test_labels_that_are_markup_are_shown_as_text(console: dict[str, Any]) -> None:
    page = console["page"]
    page.goto(f"{console['url']}/#sheets")
    page.fill("#dataset", "<img src=x onerror=alert(1)>")
    page.dispatch_event("#dataset", "change")
    expect(page.locator("#status")).to_contain_text("bad_dataset_name")
    assert page.locator("img[src='x']").count() == 0


def test_a_late_answer_for_a_view_left_behind_does_not_paint_over_the_new_one(
    console: dict[str, Any],
) -> None:
    """The sheets of `digits` are held back until the person has already asked for another
    dataset; when they arrive they must not replace what is on screen (the race CI once hit)."""
    page = console["page"]
    held: list[Any] = []
    pattern = re.compile(r"/sheets\?dataset=digits")

    def hold(route: Any) -> None:
        held.append(route)

    page.route(pattern, hold)
    try:
        page.goto("about:blank")  # a fresh load, not a same-document hash change
        page.goto(f"{console['url']}/#sheets")
        page.wait_for_function("() => document.querySelector('#dataset') !== null")
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert held, "the page never asked for the sheets of digits"
        page.fill("#dataset", "no such name!")
        page.dispatch_event("#dataset", "change")
        expect(page.locator("#status")).to_contain_text("bad_dataset_name")
        for route in held:
            # the page has already aborted it (the point of the fix): continuing may refuse
            with contextlib.suppress(PlaywrightError):
                route.continue_()
        page.wait_for_timeout(500)
        expect(page.locator("#status")).to_contain_text("bad_dataset_name")
        assert page.locator("#sheet-list li").count() == 0
    finally:
        page.unroute(pattern)
        page.fill("#dataset", "digits")


def champion_of(registry: ModelRegistry) -> str:
    pointer = registry.champion()
    assert pointer is not None
    return str(pointer["version"])


def test_training_is_started_from_the_models_view_with_the_family_picked(
    console: dict[str, Any],
) -> None:
    page = console["page"]
    # (last in the module: the version it trains may become the champion)
    registry = ModelRegistry(console["store"], "digits")
    before = set(registry.versions())
    page.goto(f"{console['url']}/#models")
    page.wait_for_selector("#versions tbody tr")
    page.select_option("#train-family", "dense")
    page.click("#train")
    expect(page.locator("#train-status")).to_contain_text("succeeded", timeout=180_000)
    # the new version is a dense net, listed once the run is over
    expect(page.locator("#versions tbody tr td:nth-child(2)", has_text="dense")).to_have_count(1)
    (new,) = set(registry.versions()) - before
    expect(page.locator(f"#versions tr[data-version='{new}'] td:nth-child(2)")).to_have_text(
        "dense"
    )
