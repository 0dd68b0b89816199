"""The HTML report in a real headless Chromium: self-contained, every plot drawn, a screenshot kept."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/nnverify-audit-report.png")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system package (never downloaded); missing is a failure, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install the Debian `chromium` package to run the report page test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_report_page_renders_self_contained(browser, mlp_audit, tmp_path):
    """Only the page itself is fetched; every image decodes; verdict, tables and counterexamples shown."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    url = (mlp_audit["out"] / "report.html").as_uri()
    page.goto(url)
    page.wait_for_load_state("load")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    shutil.copyfile(tmp_path / "report.png", SCREENSHOT)   # kept for a person to look at
    assert [u for u in requests if not u.startswith("data:")] == [url]
    sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 4 and all(ok and w > 100 and h > 100 for ok, w, h in sizes), sizes   # accuracy, time, cex, tightness
    text = page.inner_text("body")
    verdict = mlp_audit["report"]["claim_verdict"]
    assert f"Verdict on the claim: {verdict}" in text
    assert "IBP tightness per layer" in text and "counterexamples; the perturbation is scaled" in text
    rows = page.evaluate("document.querySelectorAll('.samples tr').length")
    assert rows == mlp_audit["claim"].n_samples + 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1200
    assert not errors
    page.close()
