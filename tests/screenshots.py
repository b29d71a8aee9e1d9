"""Screenshots of local web pages in Debian's headless Chromium (selenium): the app test's, and TensorBoard's.

    driver = browser()                                   # chromium + chromedriver from PATH
    save_small(driver.get_screenshot_as_png(), Path("docs/img/app.png"))
    tensorboard_screenshot("runs/x/tb", Path("docs/img/tensorboard.png"))   # needs tensorboard installed

`.ci/run` installs chromium and chromium-driver.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(width: int = 1300, height: int = 1150):
    """A headless Chromium driven by selenium (call .quit() when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "needs Debian's chromium and chromium-driver (.ci/run installs them)"
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=opts)


def save_small(png: bytes, path: Path, width: int = 900) -> Path:
    """A small palette PNG of a screenshot (for the README)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        path.parent.mkdir(parents=True, exist_ok=True)
        im.quantize(colors=128).save(path, optimize=True)
    return path


def tensorboard_screenshot(logdir: str | Path, out: Path, timeout: float = 180.0) -> Path:
    """Serve `logdir` with TensorBoard on a free loopback port, screenshot its scalars page into `out` (small PNG)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "tensorboard did not start"
                time.sleep(0.5)
        driver = browser(1300, 900)
        driver.get(url + "#timeseries")
        WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "canvas, svg path.line"))
        time.sleep(2)  # let the charts finish drawing
        return save_small(driver.get_screenshot_as_png(), out)
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
