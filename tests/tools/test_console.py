"""tools/console.py: start-up errors on the terminal, a real server, and the page in headless Chromium.

The browser tests drive the page end to end (pick with images for the NN column -> preview ->
compress -> comparison -> download the report -> quantize -> evaluate fp32 / compressed / int8 on
synthetic val scenes, with the accuracy-vs-latency chart) on a tiny exported PIDNet. They need Debian's ``chromium`` and
``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and skip without them.
Screenshots of each step go to ``tmp_path``; with ``PIDNET_CONSOLE_SCREENSHOTS=DIR`` they are
also written, shrunk, to DIR (the README's come from ``samples/console``).
"""
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

import tools.console as console
from models.netspresso import export_pidnet
from models.pidnet import PIDNet
from utils.cli import run_main
from utils.io import atomic_save

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


@contextlib.contextmanager
def running_console(workdir, *extra):
    """``tools/console.py`` in a subprocess on a free port; always stopped, bounded waits."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "console.py"), "--workdir", str(workdir),
                             "--port", str(port), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the console exited early: {proc.stdout.read()}")
            try:
                _get(url + "/api/catalog", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError("the console did not answer within 60 s") from None
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


SYNTH_CONFIG = "builtin:configs/synthetic/pidnet_small_synthetic.yaml"
VAL_IMAGES = "data/cityscapes/leftImg8bit/val/synth"


@pytest.fixture
def workdir(tmp_path):
    """A tiny 19-class body + head, 2 synthetic val scenes in data/ and 2 calibration images."""
    from datasets.synthetic import generate

    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=19).eval())
    root = tmp_path / "work"
    atomic_save(body, root / "tiny" / "model_modelfx.pt")
    atomic_save(head, root / "tiny" / "model_headfx.pt")
    generate(str(root / "data"), num_train=0, num_val=2, num_test=0, size=(128, 64), layouts=("cityscapes",))
    import cv2
    import numpy as np

    mixed = os.path.join(ROOT, "tests", "utils", "console", "data", "quantize_report_mixed.json")
    (root / "mixed").mkdir()
    shutil.copy(mixed, root / "mixed" / "quantize_report.json")  # a tools/quantize.py --mixed report
    (root / "calib").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(root / "calib" / f"{i}.png"), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    return root


def test_port_in_use_is_one_terminal_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = console.get_args_parser().parse_args(["--workdir", str(tmp_path / "w"), "--port", str(port)])
        assert run_main(console.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: port") and "already in use" in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_bad_host_is_one_terminal_line(tmp_path, capsys):
    args = console.get_args_parser().parse_args(["--workdir", str(tmp_path), "--host", "203.0.113.7",
                                                 "--port", str(free_port())])
    assert run_main(console.main, args) == 2
    assert "cannot listen on 203.0.113.7" in capsys.readouterr().err


def test_server_starts_on_localhost_serves_the_page_and_stops(workdir):
    with running_console(workdir) as (url, proc):
        status, page = _get(url + "/")
        assert status == 200 and b"PIDNet compression console" in page
        status, files = _get(url + "/api/files")
        assert [m["name"] for m in json.loads(files)["models"]] == ["tiny/model_headfx.pt", "tiny/model_modelfx.pt"]
    assert proc.returncode is not None
    assert f"http://127.0.0.1:{url.rsplit(':', 1)[1]}/" in proc.stdout.read()


# --------------------------------------------------------------------------- browser

def _browser(download_dir):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("headless browser tests need chromium + chromedriver "
                    "(apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -r requirements-dev.txt (selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def _shot(driver, tmp_path, name, element=None):
    if element is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("PIDNET_CONSOLE_SCREENSHOTS")
    if target:
        from PIL import Image

        os.makedirs(target, exist_ok=True)
        image = Image.open(path).convert("RGB")
        image.quantize(colors=64).save(os.path.join(target, f"{name}.png"), optimize=True)
    return path


@pytest.mark.browser
@pytest.mark.slow
def test_browser_pick_preview_compress_compare_download(workdir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(downloads)
    try:
        with running_console(workdir) as (url, _):
            wait = WebDriverWait(driver, 120)
            by_id = lambda name: driver.find_element(By.ID, name)  # noqa: E731

            def step(value):
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-step") == value)

            driver.get(url)
            step("ready")

            # 1. pick the exported body (+ images for the NN column) and load its layer table
            Select(by_id("model-select")).select_by_value("tiny/model_modelfx.pt")
            Select(by_id("images-select")).select_by_value(VAL_IMAGES)
            by_id("input-h").send_keys("64")
            by_id("input-w").send_keys("128")
            by_id("load-button").click()
            step("loaded")
            rows = driver.find_elements(By.CSS_SELECTOR, "#layer-table tbody tr")
            assert len(rows) > 20 and by_id("total-macs").text.endswith("M")
            assert "2 images" in by_id("total-nn").text and int(by_id("total-vbmf").text.split()[-1]) > 20
            first = driver.find_element(By.CSS_SELECTOR, "#layer-table tbody tr[data-name='conv1.0']").text
            assert "TK [" in first  # its VBMF rank
            _shot(driver, tmp_path, "1_model")

            # a manual value that cannot be: one clear line in the page
            Select(by_id("recommendation-select")).select_by_value("manual")
            cell = driver.find_element(By.CSS_SELECTOR, "input.manual[data-layer='layer3.0.conv1']")
            cell.send_keys("1.5")
            by_id("preview-button").click()
            wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
            assert "ratio of layer 'layer3.0.conv1'" in by_id("error").text
            cell.clear()

            # 2. method + ratio, preview per layer before anything runs
            Select(by_id("method-select")).select_by_value("PR_L2")
            Select(by_id("recommendation-select")).select_by_value("slamp")
            by_id("ratio-input").clear()
            by_id("ratio-input").send_keys("0.5")
            by_id("preview-button").click()
            step("previewed")
            assert not by_id("error").is_displayed()
            assert re.search(r"\((49|50)\.\d%\)", by_id("preview-ratio").text)  # SLAMP: about the ratio
            assert driver.find_elements(By.CSS_SELECTOR, "#layer-table tbody tr.changed")
            _shot(driver, tmp_path, "2_preview", by_id("step-method"))

            # 3. compress in the background, then the before/after comparison
            by_id("compress-button").click()
            step("compressed")
            comparison = by_id("comparison").text
            assert "parameters" in comparison and "CPU latency (eager, ms)" in comparison
            assert "python tools/compress.py --model" in by_id("command").text
            _shot(driver, tmp_path, "3_compare", by_id("step-compress"))

            # 4. download the JSON report
            by_id("report-link").click()
            target = downloads / "compressed_pidnet.json"
            deadline = time.time() + 30
            while not target.exists() and time.time() < deadline:
                time.sleep(0.2)
            report = json.loads(target.read_text())
            assert report["method"] == "PR_L2" and report["after"]["params"] < report["before"]["params"]
            assert report["latency_ms"]["runtime"] == "eager"

            # 5. quantize the result, where the toolkit has tools/quantize.py
            if by_id("step-quantize").is_displayed():
                Select(by_id("calib-select")).select_by_value("calib")
                by_id("quantize-button").click()
                step("quantized")
                assert "quantize_report.json" in by_id("quantize-downloads").text
                assert by_id("quantize-command").text.startswith("python tools/quantize.py")
                assert "dB" in by_id("snr-onnxruntime").text and by_id("float-count").text.endswith("0")
                _shot(driver, tmp_path, "4_quantize", by_id("step-quantize"))
                # a --mixed report of the work directory: per-layer SNR, the layers kept in float
                Select(by_id("qreport-select")).select_by_value("mixed/quantize_report.json")
                by_id("qreport-button").click()
                step("report")
                assert len(driver.find_elements(By.CSS_SELECTOR, "#quantize-layers tr.float")) > 10
                assert int(by_id("float-count").text.split()[-1]) > 10
                _shot(driver, tmp_path, "4b_quantize_layers", by_id("quantize-snr"))

            # 6. evaluate on the synthetic val set: first without a dataset root (one clear line) ...
            Select(by_id("eval-config-select")).select_by_value(SYNTH_CONFIG)
            by_id("evaluate-button").click()
            wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
            assert "dataset root 'data/synthetic/' is not a folder of the work directory" in by_id("error").text
            # ... then with it: fp32 vs compressed (vs int8) mIoU and latency, table and chart
            Select(by_id("eval-root-select")).select_by_value("data")
            by_id("evaluate-button").click()
            step("evaluated")
            assert not by_id("error").is_displayed()
            table = by_id("evaluate-table").text
            assert "fp32" in table and "PR_L2" in table and "mIoU" in table
            if by_id("step-quantize").is_displayed():
                assert "PR_L2 + int8" in table
            wait.until(lambda d: d.execute_script(
                "const i = document.getElementById('evaluate-chart'); return i.complete && i.naturalWidth > 0"))
            assert "python tools/eval.py --cfg" in by_id("evaluate-command").text
            _shot(driver, tmp_path, "5_evaluate", by_id("step-evaluate"))
    finally:
        driver.quit()
