"""The web UI served on a free local port, and a headless Debian chromium driven by selenium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
the ``[ui]`` extra; without them it skips, saying what is missing. Selenium is pointed at the system
driver so Selenium Manager never tries to download one. ``FACERIG_UI_SHOTS=DIR`` keeps screenshots.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio", reason="the web UI needs the [ui] extra (gradio)")
    from facerig.ui.app import build_app
    from facerig.ui.core import Studio

    studio = Studio(work_dir=tmp_path_factory.mktemp("ui-work"), max_upload_mb=5)
    demo = build_app(studio)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                show_error=False, allowed_paths=[str(studio.work_dir)])
    yield f"http://127.0.0.1:{port}/", studio
    demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs the [ui] extra (selenium)")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if os.environ.get("FACERIG_NO_BROWSER") == "1":
        pytest.skip("FACERIG_NO_BROWSER=1: the browser test is skipped on purpose")
    if not chrome or not driver:
        pytest.skip("no system chromium/chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000",
              "--disable-gpu"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    d.downloads = downloads
    yield d
    d.quit()


@pytest.fixture
def shot(browser):
    """shot(name): a screenshot into FACERIG_UI_SHOTS (nothing when unset)."""
    folder = os.environ.get("FACERIG_UI_SHOTS")

    def take(name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(folder) / f"{name}.png"))

    return take
