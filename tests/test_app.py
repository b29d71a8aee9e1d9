"""`avtok app`: the page served on loopback, driven in a real headless Chromium and through the Gradio client.

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`, done by .ci/run).
Screenshots go to tests/artifacts/ (git-ignored); with AVTOK_UPDATE_DOCS_IMG=1 the small one is also
written to docs/img/app.png (the README's picture).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from av_folders import shared_folders, tiny_checkpoint
from PIL import Image
from screenshots import browser, free_port, save_small

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "app.png"
N_WAVE = 848 * 256  # samples of a generated clip (9.85 s at 22050 Hz)


def _rms(wav_bytes: bytes) -> tuple[float, int, int]:
    wave, sr = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    return float(np.sqrt(np.mean(wave ** 2))), sr, wave.shape[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`avtok app` in a subprocess on a free loopback port, with examples from the token shards."""
    folders = shared_folders(tmp_path_factory)
    ckpt = tiny_checkpoint(folders)
    port = free_port()
    cmd = [sys.executable, "-m", "avtok.cli.main", "app", "--checkpoint", str(ckpt), "--port", str(port),
           "--shards", str(folders["tokens"]), "--examples", "2", "--fast-vocoder"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    lines = []
    try:
        for line in proc.stdout:  # until the server says where it listens (or dies)
            lines.append(line)
            if "Running on local URL" in line:
                break
        assert proc.poll() is None, "".join(lines)
        url = lines[-1].split("URL:")[1].strip().rstrip("/")
        yield {"url": url, "port": port, "folders": folders, "log": lines}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_app_binds_loopback_by_default(server) -> None:
    import socket

    assert server["url"] == f"http://127.0.0.1:{server['port']}"
    with urllib.request.urlopen(server["url"] + "/", timeout=30) as r:
        assert r.status == 200 and b"avtok" in r.read()
    outward = _outward_address()
    if outward is not None:  # the same port on the machine's other address: nobody listens there
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outward, server["port"]), timeout=10).close()


def test_app_in_headless_chromium(server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(exist_ok=True)
    folders = server["folders"]
    image = folders["videos"].parent / "upload.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))).save(image)
    driver = browser(1300, 820)
    try:
        wait = WebDriverWait(driver, 180)
        driver.get(server["url"] + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image2audio-generate"))
        # examples from the token shards are offered by label
        assert {"tone", "noise"} <= {b.text for b in driver.find_elements(By.CSS_SELECTOR, "button")}
        steps = driver.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys("4", Keys.ENTER)
        driver.find_element(By.CSS_SELECTOR, "#image2audio-image input[type=file]").send_keys(str(image))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image2audio-image img"))
        driver.find_element(By.CSS_SELECTOR, "#image2audio-generate").click()

        def audio_src(d):
            srcs = [a.get_attribute("src") for a in d.find_elements(By.CSS_SELECTOR, "#image2audio-audio-0 audio")]
            return next((s for s in srcs if s), None)

        src = wait.until(audio_src)
        with urllib.request.urlopen(src, timeout=60) as r:
            rms, sr, n = _rms(r.read())
        assert sr == 22050 and n == N_WAVE
        assert rms > 1e-3  # not silence
        status = driver.find_element(By.CSS_SELECTOR, "#image2audio-status").text
        assert "4 steps" in status and "seed 0" in status
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image2audio-picture img"))
        time.sleep(0.5)  # let the picture finish drawing
        shot = driver.get_screenshot_as_png()
        (ARTIFACTS / "app-image2audio.png").write_bytes(shot)
        save_small(shot, ARTIFACTS / "app-small.png")
        if os.environ.get("AVTOK_UPDATE_DOCS_IMG") == "1":
            save_small(shot, DOCS_IMG)

        # a bad request: the message is shown on the page, no traceback
        driver.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Inpaint')]").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#inpaint-generate").is_displayed())
        driver.find_element(By.CSS_SELECTOR, "#inpaint-generate").click()
        wait.until(lambda d: "upload an image first" in d.find_element(By.TAG_NAME, "body").text)
        (ARTIFACTS / "app-error.png").write_bytes(driver.get_screenshot_as_png())
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


def test_app_through_client_api(server, tmp_path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    folders = server["folders"]
    client = Client(server["url"] + "/", verbose=False)
    frame = tmp_path / "frame.png"
    Image.fromarray(np.full((200, 300, 3), (200, 40, 40), np.uint8)).save(frame)
    sound = tmp_path / "sound.wav"
    sf.write(sound, 0.3 * np.sin(2 * np.pi * 440 * np.arange(22050 * 3) / 22050), 22050)

    status, picture, *players = client.predict(handle_file(frame), None, 3.0, 6.0, 3.0, 4, 7, 2,
                                               api_name="/image2audio")
    assert "2 sample(s)" in status and "seed 7" in status
    with Image.open(picture) as im:  # per sample a row: the image, a gap, the mel stretched to 256 rows
        assert im.size == (256 + 8 + 848, 2 * 256 + 8)
        pixels = np.asarray(im.convert("RGB"))
    assert (pixels[:256, :256] == (200, 40, 40)).all() and (pixels[264:, :256] == (200, 40, 40)).all()
    assert (pixels[256:264] == 255).all() and (pixels[:, 256:264] == 255).all()
    waves = [Path(p["value"]).read_bytes() for p in players[:2]]
    for data in waves:
        rms, sr, n = _rms(data)
        assert sr == 22050 and n == N_WAVE and rms > 1e-3
    assert waves[0] != waves[1]  # two samples, not one twice
    assert [p["value"] for p in players[2:]] == [None, None] and not players[2]["visible"]

    _, images, *_ = client.predict(None, handle_file(sound), 0, 0, 3.0, 2, 0, 2, api_name="/audio2image")
    assert Image.open(images).size == (2 * 256 + 8, 256)  # two images side by side
    status, _, player, *_ = client.predict(handle_file(frame), handle_file(sound), 8.0, 10.0, 3.0, 2, 0, 1,
                                           api_name="/inpaint")
    assert "regenerated 8-10 s" in status and _rms(Path(player["value"]).read_bytes())[0] > 1e-3
    status, _, player, *_ = client.predict(None, None, 0, 0, 0.0, 2, 0, 1, api_name="/joint")
    assert "Joint" in status and _rms(Path(player["value"]).read_bytes())[0] > 1e-3

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00 not a sound" * 40)
    bad = [((None, handle_file(junk), 0, 0), "/audio2image", "junk.wav: not a readable audio file"),
           ((handle_file(frame), handle_file(sound), 6.0, 3.0), "/inpaint", "bad time range 6-3"),
           ((None, None, 0, 0), "/image2audio", "upload an image first")]
    for inputs, api, message in bad:
        with pytest.raises(AppError) as err:
            client.predict(*inputs, 3.0, 2, 0, 1, api_name=api)
        assert message in str(err.value) and "/tmp/gradio" not in str(err.value)
    assert folders["tokens"].is_dir()


def test_app_cli_errors(tmp_path) -> None:
    from avtok.cli.main import cli
    from click.testing import CliRunner

    fake = tmp_path / "model.pt"
    fake.write_bytes(b"PK\x03\x04 no checkpoint")
    res = CliRunner().invoke(cli, ["app", "--checkpoint", str(fake), "--port", str(free_port())])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "model.pt" in res.output
    assert res.output.count("\n") == 1
    res = CliRunner().invoke(cli, ["app", "--checkpoint", str(fake), "--port", "0"])
    assert res.exit_code == 2 and "--port" in res.output


def test_app_port_taken(server, tmp_path_factory) -> None:
    from avtok.cli.main import cli
    from click.testing import CliRunner

    ckpt = tiny_checkpoint(shared_folders(tmp_path_factory))
    res = CliRunner().invoke(cli, ["app", "--checkpoint", str(ckpt), "--port", str(server["port"]), "--fast-vocoder"])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and f":{server['port']}" in res.output
    assert "--port" in res.output and "Traceback" not in res.output


def test_importing_avtok_does_not_import_gradio() -> None:
    code = ("import sys, avtok.cli.main, avtok.cli.app, avtok.pipeline.app, avtok.pipeline.inspect; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client', 'selenium')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
