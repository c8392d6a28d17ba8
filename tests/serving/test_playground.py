"""The playground in a real headless Chromium (Debian's, driven by Playwright) against the real
server: a photo's token preview, tile overlay and costs, a streamed answer with usage and
timings, the exported request; a corrupt file's error; a microphone recording (Chromium's fake
device); a spoken conversation in voice mode; a phone-sized screen; no console errors.
Screenshots go to ``test-artifacts/playground/``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, image_of_data_url

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts" / "playground"


FAKE_MICROPHONE = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver for the module (a second one in the same thread is refused)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        yield driver


def launch(playwright, *args: str):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *args])


@pytest.fixture(scope="module")
def browser(playwright):
    browser = launch(playwright, *FAKE_MICROPHONE)
    yield browser
    browser.close()


@pytest.fixture()
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(server_url + "/")
    page.wait_for_selector("#model option", state="attached")
    yield page
    context.close()


@pytest.fixture()
def photo(tmp_path, astronaut_jpeg) -> Path:
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(astronaut_jpeg)
    return path


def test_a_photo_is_previewed_answered_and_exported(page, photo):
    page.select_option("#detail", "high")
    page.select_option("#perception", "native")
    page.set_input_files("#file", str(photo))
    card = page.locator(".attachment").first
    card.locator(".count").wait_for()
    assert "tokens for omniloom-smol" in card.locator(".count").inner_text()
    overlay = card.locator("canvas.tiles")
    overlay.wait_for(state="attached")
    assert int(overlay.get_attribute("data-cols")) * int(overlay.get_attribute("data-rows")) > 1
    costs = card.locator("table.costs").inner_text()
    assert "gpt-4o" in costs and "claude-sonnet-4.5" in costs
    page.screenshot(path=ARTIFACTS / "1-preview.png", full_page=True)
    page.fill("#prompt", "What is in this picture?")
    page.click("#send")
    stats = page.locator(".message.assistant .stats")
    stats.wait_for(timeout=120_000)
    assert page.locator(".message.assistant .text").inner_text().strip()
    shown = stats.inner_text()
    assert "image" in shown and "time to first token" in shown and "tok/s" in shown
    assert "prefill" in shown and "perception" in shown
    page.screenshot(path=ARTIFACTS / "2-answer.png", full_page=True)
    page.click("#export")
    request = json.loads(page.locator("#export-json").inner_text())
    assert request["messages"][-1]["content"][0]["image_url"]["detail"] == "high"
    assert request["perception"] == "native"
    assert request["stream"] is True and "base_url" in page.locator("#export-python").inner_text()
    page.screenshot(path=ARTIFACTS / "3-export.png")
    assert page.console_errors == []


def test_a_corrupt_file_shows_the_servers_message(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    page.set_input_files("#file", str(broken))
    problem = page.locator(".attachment .problem")
    problem.wait_for()
    assert "image" in problem.inner_text().lower()
    page.screenshot(path=ARTIFACTS / "4-corrupt.png", full_page=True)
    # the refused /tokenize call is the only console entry: the browser logs a failed request
    assert all("status of 400" in e for e in page.console_errors)


def test_a_model_without_a_modality_refuses_the_file_in_words(page, tmp_path):
    clip = tmp_path / "note.txt"
    clip.write_text("plain text")
    page.set_input_files("#file", str(clip))
    assert "does not take" in page.locator("#error").inner_text()
    assert page.console_errors == []


def test_a_recording_from_the_microphone_is_attached_and_counted(page):
    page.click("#record")
    page.wait_for_timeout(1500)  # Chromium's fake microphone: a beep
    page.click("#record")
    card = page.locator('.attachment[data-kind="audio"]')
    card.locator(".count").wait_for(timeout=60_000)
    assert "recording." in card.inner_text() and "prompt tokens" in card.inner_text()
    page.screenshot(path=ARTIFACTS / "5-recording.png", full_page=True)
    assert page.console_errors == []


def test_a_video_shows_the_frames_the_model_will_see(page, tmp_path):
    """Four seconds, one colour a second: uniform sampling at 1 fps keeps one frame of each,
    and the page shows each kept frame as the server decoded it."""
    from PIL import Image

    from omniloom.media.video_out import write_mp4

    colours = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (240, 220, 30)]
    frames = [Image.new("RGB", (160, 96), c) for c in colours for _ in range(10)]
    clip = tmp_path / "colours.mp4"
    clip.write_bytes(write_mp4(frames, (160, 96), fps=10, gop=10, codec="libvpx-vp9"))
    page.set_input_files("#file", str(clip))
    card = page.locator('.attachment[data-kind="video"]')
    card.locator(".count").wait_for(timeout=60_000)
    assert "4 frames at 0.0 s, 1.0 s, 2.0 s, 3.0 s" in card.locator(".count").inner_text()
    shown = card.locator(".frames img")
    assert shown.count() == 4
    page.wait_for_function(
        "[...document.querySelectorAll('.frames img')].every((i) => i.complete && i.naturalWidth)"
    )
    for i, colour in enumerate(colours):
        image = shown.nth(i)
        assert image.get_attribute("alt") == f"frame at {i}.0 s"
        thumbnail = image_of_data_url(image.get_attribute("src"))
        pixel = thumbnail.getpixel((thumbnail.width // 2, thumbnail.height // 2))
        assert max(abs(p - c) for p, c in zip(pixel, colour, strict=True)) < 40, (pixel, colour)
    page.screenshot(path=ARTIFACTS / "8-video-frames.png", full_page=True)
    assert page.console_errors == []


def test_the_page_fits_a_phone(browser, server_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(server_url + "/")
    page.wait_for_selector("#model option", state="attached")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    assert page.locator("#settings").get_attribute("open") is None  # folded away
    page.screenshot(path=ARTIFACTS / "6-phone.png", full_page=True)
    context.close()


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory) -> Path:
    """A spoken question between stretches of silence, as a 24 kHz wav."""
    import numpy as np

    from omniloom.media.audio_out import OUTPUT_RATE, encode, resample
    from omniloom.speech import espeak

    said, rate = espeak.speak("What colour is the sky?")
    silence = np.zeros(OUTPUT_RATE, np.float32)
    samples = np.concatenate([silence / 2, resample(said, rate), silence, silence])
    path = tmp_path_factory.mktemp("voice") / "question.wav"
    path.write_bytes(encode(samples, "wav"))
    return path


@pytest.mark.parametrize("mode", ["hands-free", "push-to-talk"])
def test_voice_mode_hears_a_spoken_question_and_answers(playwright, server_url, spoken_wav, mode):
    """Voice over /v1/realtime, the microphone fed from a file of speech: hands-free (the
    server's VAD ends the turn) or push-to-talk held down with the keyboard's space bar."""
    speech = f"--use-file-for-fake-audio-capture={spoken_wav}%noloop"
    browser = launch(
        playwright, *FAKE_MICROPHONE, speech, "--autoplay-policy=no-user-gesture-required"
    )
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server_url + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#voice-mode", mode)
    page.click("#voice-start")
    if mode == "push-to-talk":
        page.locator("#voice-talk").wait_for()  # shown once the session is open
        page.locator("#voice-talk").focus()
        page.keyboard.down(" ")  # held through the question (0.5 s of silence, then speech)
        page.wait_for_timeout(3500)
        page.keyboard.up(" ")
    else:
        assert page.locator("#voice-talk").is_hidden()  # hands-free: no button to hold
    heard = page.locator(".message.user .text").first
    heard.wait_for(timeout=90_000)
    assert "sky" in heard.inner_text().lower()
    page.locator(".message.assistant .stats").first.wait_for(timeout=90_000)
    assert page.locator(".message.assistant .text").first.inner_text().strip()
    page.screenshot(path=ARTIFACTS / f"7-voice-{mode}.png", full_page=True)
    page.click("#voice-start")  # stops it
    browser.close()
    assert errors == []
