"""The web page in a real headless Chromium against a real stack: sign in, submit, watch, download."""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
import redis

from workers.client import Client
from workers.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "mlp.onnx"
HOLDS, VIOLATED = ROOT / "examples" / "robust.vnnlib", ROOT / "examples" / "fragile.vnnlib"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/nnverify-page.png")
FINISH_MS = 120_000


@pytest.fixture(scope="module")
def web_stack(tmp_path_factory):
    """API and one worker on their own Redis key prefix; the prefix's keys are deleted afterwards."""
    r = redis.Redis(host="127.0.0.1", port=6379)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.fail("no Redis on 127.0.0.1:6379")
    prefix = f"web{uuid.uuid4().hex[:8]}:"
    stack = LocalStack(tmp_path_factory.mktemp("web"), {"NNVERIFY_QUEUE_PREFIX": prefix})
    try:
        stack.start_api()
        stack.start_worker(concurrency=1)
        stack.web_token = stack.token("webtenant")
        yield stack
    finally:
        stack.stop()
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)


@pytest.fixture(scope="module")
def api(web_stack) -> Client:
    return Client(web_stack.url, web_stack.web_token)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system package (never downloaded); missing is a failure, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install the Debian `chromium` package to run the web page test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, web_stack):
    """A fresh browser context (empty localStorage) on the service's page; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 940}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(web_stack.url + "/")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login-submit")


def submit(page, spec: Path, timeout: str = "60") -> str:
    """Submit the example model with ``spec`` through the form; the new job's id (from the page URL)."""
    page.set_input_files("#model", str(MODEL))
    page.set_input_files("#spec", str(spec))
    page.fill("#timeout", timeout)
    page.select_option("#method", "auto")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"#job/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[-1]


def shown_verdict(page) -> str:
    """Wait until the job view shows a final verdict; its word."""
    page.wait_for_selector("#final:not([hidden]) #verdict-word", state="visible", timeout=FINISH_MS)
    return page.text_content("#verdict-word")


def download_json(page, button: str) -> tuple[str, object]:
    """Click a download button; the saved file's suggested name and parsed JSON."""
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    return download.suggested_filename, json.loads(Path(download.path()).read_text())


def test_wrong_token_shows_the_401_and_the_page_stays_signed_out(page):
    sign_in(page, "not-a-real-token")
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert "401" in error.text_content() and "unknown API token" in error.text_content()
    assert page.locator("#app-view").is_hidden()
    assert page.evaluate("localStorage.getItem('nnverify.token')") is None


def test_violated_job_runs_and_its_counterexample_downloads(page, api, web_stack):
    sign_in(page, web_stack.web_token)
    page.locator("#app-view").wait_for(state="visible")
    job_id = submit(page, VIOLATED)
    verdict = shown_verdict(page)
    job = api.job(job_id)
    assert job["state"] == "done" and verdict == job["verdict"] == "violated", job["reason"]
    assert page.get_attribute("#verdict", "class") == "verdict verdict-violated"
    assert page.locator("#dl-certificate").is_hidden()
    name, data = download_json(page, "#dl-counterexample")
    assert name == f"{job_id}-counterexample.json"
    assert data == json.loads(api.text(job_id, "counterexample"))
    assert data["format"] == "nnverify-counterexample"


def test_holds_job_shows_route_timings_and_its_certificate_downloads(page, api, web_stack, tmp_path):
    sign_in(page, web_stack.web_token)
    page.locator("#app-view").wait_for(state="visible")
    job_id = submit(page, HOLDS)
    verdict = shown_verdict(page)
    job = api.job(job_id)
    assert job["state"] == "done" and verdict == job["verdict"] == "holds", job["reason"]
    assert page.text_content("#verdict-reason") == job["reason"]
    facts = page.text_content("#facts")
    assert job["route"] in facts and job["route_reason"] in facts
    timing_rows = page.locator("#timings tbody tr")
    assert timing_rows.count() == len(job["timings"])
    assert page.locator("#dl-counterexample").is_hidden()
    name, data = download_json(page, "#dl-certificate")
    assert name == f"{job_id}-certificate.json"
    assert data == json.loads(api.text(job_id, "certificate"))
    with page.expect_download() as info:
        page.click("#dl-result")
    assert Path(info.value.path()).read_text() == api.text(job_id, "result")
    page.locator(f'.job-item[data-id="{job_id}"]').wait_for()
    page.screenshot(path=str(tmp_path / "nnverify-page.png"), full_page=True)
    shutil.copyfile(tmp_path / "nnverify-page.png", SCREENSHOT)


def test_job_list_opens_a_job_and_the_token_survives_a_reload(page, api, web_stack):
    job_id = api.submit(str(MODEL), str(VIOLATED), timeout=60)
    final = api.wait(job_id, limit=FINISH_MS / 1000)
    sign_in(page, web_stack.web_token)
    item = page.locator(f'.job-item[data-id="{job_id}"]')
    item.click()
    assert shown_verdict(page) == final["verdict"]
    assert page.url.endswith(f"#job/{job_id}")
    page.reload()
    assert shown_verdict(page) == final["verdict"]      # signed in from localStorage, job from the URL
    page.click("#logout")
    page.locator("#login-view").wait_for(state="visible")
    assert page.evaluate("localStorage.getItem('nnverify.token')") is None


def test_bad_submission_shows_the_api_detail(page, web_stack):
    sign_in(page, web_stack.web_token)
    page.locator("#app-view").wait_for(state="visible")
    page.set_input_files("#model", str(MODEL))
    page.set_input_files("#spec", str(HOLDS))
    page.fill("#timeout", "999999")
    page.click("#submit-button")
    error = page.locator("#submit-error")
    error.wait_for(state="visible")
    assert "422" in error.text_content() and "timeout must be in" in error.text_content()


def test_cancel_from_the_page_ends_a_queued_job(page, api, web_stack):
    """With no worker running the job stays queued: the list and the view offer Cancel, and it works."""
    import signal

    for proc in list(web_stack.workers):
        web_stack.kill_worker(proc, signal.SIGTERM)
        web_stack.workers.remove(proc)
    try:
        sign_in(page, web_stack.web_token)
        page.locator("#app-view").wait_for(state="visible")
        job_id = submit(page, HOLDS)
        page.wait_for_selector("#job-state.badge-queued")
        assert page.locator("#live").is_visible() and page.text_content("#live-step").startswith("Queued on")
        page.locator(f'.job-item[data-id="{job_id}"] button', has_text="Cancel").wait_for()
        page.click("#job-cancel")
        assert shown_verdict(page) == "cancelled"
        job = api.job(job_id)
        assert job["state"] == page.text_content("#job-state") == "cancelled"
        page.wait_for_selector(f'.job-item[data-id="{job_id}"] .pill-cancelled')
        assert page.locator(f'.job-item[data-id="{job_id}"] button').count() == 0
    finally:
        web_stack.start_worker(concurrency=1)
