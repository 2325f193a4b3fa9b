"""Headless Debian Chromium driven by Playwright (no browser download: Playwright is pointed at /usr/bin/chromium).

Use from async tests::

    from browser import launch_chromium, save_screenshot

    async def test_page(server):
        async with launch_chromium(fake_mic=wav_path) as browser:
            page = await browser.new_page()
            await page.goto(server.url + "/console")
            await save_screenshot(page, "console-live-call")

Without Chromium (or the ``playwright`` package) the test skips with the reason, and fails under ``CI=true``.
Screenshots go to ``$TELEBRIDGE_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the project root).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("TELEBRIDGE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))

# The machine has no internet: without these Chromium keeps trying to reach Google's hosts.
QUIET_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--autoplay-policy=no-user-gesture-required",  # the agent's audio may play without a click
]


def chromium_executable() -> str:
    """The system Chromium, or skip (fail under CI) with the reason."""
    path = os.environ.get("TELEBRIDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if not path:
        missing = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    assert path is not None
    return path


def fake_mic_flags(wav: Path | None) -> list[str]:
    """A fake microphone (and camera) that needs no permission prompt, fed from ``wav`` when given (looped)."""
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if wav is not None:
        flags.append(f"--use-file-for-fake-audio-capture={wav}")
    return flags


@asynccontextmanager
async def launch_chromium(*, fake_mic: Path | None = None, extra_flags: list[str] | None = None) -> AsyncIterator:
    """A fresh headless Chromium (empty profile) for one test; closed on exit."""
    executable = chromium_executable()
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="telebridge-chromium-")
    flags = QUIET_FLAGS + fake_mic_flags(fake_mic) + (extra_flags or [])
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=flags,
                viewport={"width": 1280, "height": 860},
                # The pages' Content-Security-Policy forbids eval; Playwright's wait_for_function(string) needs it.
                bypass_csp=True)
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def save_screenshot(page, name: str) -> Path:
    """A full-page PNG under the artifacts folder, kept after the run for CI to collect."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
