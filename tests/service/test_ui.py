"""The web page end to end in a real headless Chromium (Debian's package) driven by Playwright:
upload a committed CC0 clip and see its label, the timeline, the spectrogram and the similar
items; record from a (fake) microphone; enrol and delete a class; take a screenshot.

Skipped, saying why, where /usr/bin/chromium or Playwright is missing (.ci/run installs both)."""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.service.conftest import ROOT, SERVER_SETTINGS, start_server, stop_server

CHROMIUM = os.environ.get("SOUNDARC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream"]  # a fake microphone that plays a beep
ROOSTER = "1-27724-A-1.ogg"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (or set SOUNDARC_CHROMIUM) to run the web page test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """The shipped model, with an index of the fixtures for the "similar" list."""
    from batch.index import build_index
    from batch.scoring import ScoreOptions, score

    root = tmp_path_factory.mktemp("ui")
    model = ROOT / "models" / "default"
    score([str(FIXTURES)], model, root / "scores", ScoreOptions(workers=0, embeddings=True))
    build_index(root / "scores", root / "index")
    settings = {**SERVER_SETTINGS, "SOUNDARC_INDEX": str(root / "index"), "SOUNDARC_CLASSES": str(root / "enrolled.json"),
                "SOUNDARC_MAX_UPLOAD_MB": "20", "SOUNDARC_MAX_DURATION_S": "600"}  # the long clip
    proc, url = start_server(model, settings, root / "server.log")
    yield url
    stop_server(proc)


def write_long_clip(fixtures, path, seconds):
    """Fixture clips one after another, with silence between them, to `seconds` (22.05 kHz WAV)."""
    import numpy as np
    import soundfile as sf

    from core.audio import decode

    rate = 22_050
    clips = [decode(p, rate) for p in sorted(fixtures.glob("*.ogg"))]
    parts, total, i = [], 0, 0
    while total < seconds * rate:
        parts += [clips[i % len(clips)], np.zeros(7 * rate, np.float32)]
        total += parts[-2].size + parts[-1].size
        i += 1
    sf.write(path, np.concatenate(parts)[: seconds * rate], rate, subtype="PCM_16")


def test_web_page_in_chromium(browser, default_server, fixtures, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{default_server}/ui")
    page.wait_for_function("document.getElementById('model').textContent.includes('default-')")

    page.set_input_files("#file", str(fixtures / ROOSTER))  # choosing a file classifies it
    page.wait_for_function("document.getElementById('label').textContent !== ''")
    assert page.text_content("#label") == "rooster"
    assert page.locator("#bars .bar").count() == 5
    runs = page.eval_on_selector_all("#timeline .window", "cells => cells.map(c => Number(c.dataset.windows))")
    assert sum(runs) == 10 and len(runs) < 10  # 5 s: 10 windows, runs of the same answer as one segment
    assert page.locator("#timeline .window", has_text="silence").last.get_attribute("title").endswith("(5 windows)")
    assert "rooster" in page.locator("#events .event").first.text_content()  # the sound events, on the same track
    assert page.eval_on_selector("#spectrogram", "c => c.width") > 100
    page.wait_for_function("document.querySelectorAll('#similar li').length > 0")
    assert ROOSTER in page.locator("#similar li").first.text_content()
    page.screenshot(path=str(tmp_path / "classified.png"), full_page=True)

    long_clip = tmp_path / "three_minutes.wav"  # a long clip: events on a timeline that zooms
    write_long_clip(fixtures, long_clip, seconds=180)
    page.set_input_files("#file", str(long_clip))
    page.wait_for_function("document.getElementById('clip-status').textContent.startsWith('180')")
    assert page.locator("#events .event").count() >= 2
    ticks = page.locator("#axis .tick").count()
    assert 3 <= ticks <= 15  # a readable axis for the whole clip
    assert page.eval_on_selector("#track-view", "v => v.scrollWidth <= v.clientWidth + 1")  # the whole clip in view
    for _ in range(3):
        page.click("#zoom-in")
    assert page.eval_on_selector("#track", "t => t.style.width") == "800%"
    assert page.eval_on_selector("#track-view", "v => v.scrollWidth > 7 * v.clientWidth")
    assert page.locator("#axis .tick").count() > ticks  # finer steps when zoomed in
    page.screenshot(path=str(tmp_path / "zoomed.png"), full_page=True)
    if os.environ.get("SOUNDARC_SCREENSHOTS"):
        shutil.copy(tmp_path / "zoomed.png", Path(os.environ["SOUNDARC_SCREENSHOTS"]) / "ui-zoomed.png")
    page.click("#zoom-fit")
    assert page.eval_on_selector("#track", "t => t.style.width") == "100%"

    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n")
    page.set_input_files("#file", str(bad))  # the error beside the clip, and no stale answer
    page.wait_for_function("document.getElementById('clip-status').className.includes('error')")
    assert "400" in page.text_content("#clip-status") and page.is_hidden("#result")
    page.set_input_files("#file", str(fixtures / ROOSTER))
    page.wait_for_function("!document.getElementById('result').hidden")
    page.fill("#threshold", "10")  # the request's "unknown" angle, stricter than the rooster's 18°
    page.click("#classify")
    page.wait_for_function("document.getElementById('label').textContent === 'unknown'")
    events = page.eval_on_selector_all("#events .event", "bars => bars.map(b => b.style.background)")
    assert events and all(events), events  # every event coloured, its class in the ranking or not
    page.fill("#threshold", "200")  # the page's unit is degrees: said on the page, nothing sent
    page.click("#classify")
    page.wait_for_function("document.getElementById('clip-status').textContent.includes('degrees')")
    page.fill("#threshold", "")

    page.fill("#enrol-label", "my rooster")
    page.check("#enrol-current")
    page.click("#enrol")
    page.wait_for_function("document.getElementById('class-list').textContent.includes('my rooster')")
    page.click("#classify")
    page.wait_for_function("document.getElementById('bars').textContent.includes('my rooster')")
    page.locator("#class-list li", has_text="my rooster").locator("button").click()
    page.wait_for_function("!document.getElementById('class-list').textContent.includes('my rooster')")

    page.click("#record")  # the fake microphone
    page.wait_for_timeout(1500)
    page.click("#record")
    page.wait_for_function("document.getElementById('clip-name').textContent === 'recording.wav'")
    page.click("#classify")
    page.wait_for_function("document.getElementById('clip-status').textContent.includes('s of audio')")
    assert page.text_content("#label") != ""
    assert "error" not in (page.get_attribute("#clip-status", "class") or "")
    page.screenshot(path=str(tmp_path / "recorded.png"), full_page=True)

    page.click("#listen")  # the fake microphone, streamed live to /stream
    page.wait_for_timeout(6500)  # windows come once a 5 s segment and the next second are in
    page.click("#listen")
    page.wait_for_function("document.getElementById('live-summary').textContent.includes(' s')")
    assert page.locator("#live-timeline .window").count() >= 10
    cells = page.eval_on_selector_all("#live-timeline .window", "cells => cells.map(c => c.style.background)")
    assert all(cells), cells  # every live window coloured (a class first heard live too)
    assert "error" not in (page.get_attribute("#live-status", "class") or "")
    live_status = page.text_content("#live-status")
    assert " windows, " in live_status and "undefined" not in live_status, live_status  # the summary's counts
    assert (tmp_path / "classified.png").stat().st_size > 10_000
    if os.environ.get("SOUNDARC_SCREENSHOTS"):
        shutil.copy(tmp_path / "classified.png", Path(os.environ["SOUNDARC_SCREENSHOTS"]) / "ui.png")
