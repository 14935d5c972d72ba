"""End to end in a real browser: log in, upload a chest radiograph, read the result card (and, with a case index,
its similar confirmed cases), upload a CT slice
and read its rejection, log out; a fundus photograph given to a vessel segmentation model, whose mask
is drawn over the image under the opacity slider; and a low-dose image given to a restoration model, whose
synthetic image shows under a visible red "SYNTHETIC – not acquired" banner.

The real service runs in a subprocess (uvicorn, see ``_server.py``) with a
freshly trained tiny model declared a chest X-ray model (DICOM CR/DX of the
chest) and a clinician account; Selenium drives headless Chromium through
chromedriver. The accepted upload is a chest radiograph DICOM made here; the
rejected one is the mirror's real CT slice (``format-samples/dicom/CT_small.dcm``).
The result cards' screenshots are kept as test artefacts in
``$MEDDX_TEST_ARTIFACTS`` (default ``build/test-artifacts/``).

Without Chromium or chromedriver the test skips locally and FAILS under CI
(``CI`` set), saying how to install them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service._server import Home, ServerProcess, prepare_home, train_tiny_model
from tests.service._task_models import fundus, train_tiny_segmenter

pytestmark = pytest.mark.mirror

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "Install them with `apt-get install chromium chromium-driver` (Debian/Ubuntu)."
CT_SLICE = Path("format-samples") / "dicom" / "CT_small.dcm"
REJECTION = "Not analysed: this input is not what the model was made for"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _find(names: tuple[str, ...], fallback: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return fallback if os.access(fallback, os.X_OK) else None


def require_browser() -> tuple[str, str]:
    """(chromium, chromedriver), or skip (locally) / fail (under CI) with how to install them."""
    chromium = _find(("chromium", "chromium-browser", "google-chrome"), "/usr/bin/chromium")
    driver = _find(("chromedriver",), "/usr/bin/chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if chromium is None or driver is None:
        missing = ", ".join(n for n, p in (("chromium", chromium), ("chromedriver/selenium", driver)) if p is None)
        message = f"end-to-end browser test needs {missing}. {INSTALL_HINT}"
        if _under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


def artifacts_dir() -> Path:
    value = os.environ.get("MEDDX_TEST_ARTIFACTS", "").strip()
    path = Path(value).expanduser() if value else REPO / "build" / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Home, ServerProcess]]:
    run = train_tiny_model(tmp_path / "work")
    home = prepare_home(tmp_path / "home", run, one_time=True)
    with ServerProcess(home.home) as server:
        yield home, server


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = 30.0, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def _image_loaded(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(
        "const i = document.getElementById(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;",
        element_id))


def _log_in(driver: Any, base: str, home: Home) -> None:
    """Log ``home``'s clinician in (a password already set) and wait for the upload page."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "username").send_keys(home.username)
    driver.find_element(By.ID, "password").send_keys(home.password)
    driver.find_element(By.ID, "login-button").click()
    _wait(driver, lambda d: d.current_url.rstrip("/") == base, message="login did not open the upload page")


def _upload(driver: Any, base: str, home: Home, path: Path) -> str:
    """Upload ``path`` with the form; the result card's URL (the test fails on an error instead)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(base + "/")
    driver.find_element(By.ID, "file").send_keys(str(path))
    Select(driver.find_element(By.ID, "model")).select_by_value(home.model)
    driver.find_element(By.ID, "upload-button").click()
    _wait(driver, lambda d: "/results/" in d.current_url or d.find_elements(By.CSS_SELECTOR, "p.error"),
          60, "no result page and no error after the upload")
    if "/results/" not in driver.current_url:
        pytest.fail(f"{path.name} was refused: {driver.find_element(By.CSS_SELECTOR, 'p.error').text}")
    return str(driver.current_url)


def chest_radiograph(folder: Path) -> Path:
    """A small chest radiograph DICOM (Modality CR, BodyPartExamined CHEST): what the model was made for."""
    import numpy as np
    import pydicom

    from tests._factories import write_dicom

    pixels = np.random.default_rng(0).integers(0, 80, (32, 32)).astype(np.uint8)
    pixels[8:24, 8:24] += 150
    path = write_dicom(folder / "chest.dcm", pixels, modality="CR")
    ds = pydicom.dcmread(path)
    ds.BodyPartExamined = "CHEST"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_clinician_uploads_a_dicom_and_reads_the_result_card(service: tuple[Home, ServerProcess], browser: Any,
                                                            mirror: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    home, server = service
    driver, base = browser, server.url
    started = time.monotonic()

    # log in
    driver.get(base + "/login")
    assert "Log in" in driver.title
    driver.find_element(By.ID, "username").send_keys(home.username)
    driver.find_element(By.ID, "password").send_keys(home.password)
    driver.find_element(By.ID, "login-button").click()
    # a one-time password: the page asks for the user's own before anything else
    _wait(driver, lambda d: d.current_url.endswith("/password"), message="login did not ask for a new password")
    driver.get(base + "/")
    assert driver.current_url.endswith("/password"), "pages stay closed until the password is changed"
    new_password = "a passphrase the clinician chose"
    driver.find_element(By.ID, "current_password").send_keys(home.password)
    driver.find_element(By.ID, "new_password").send_keys(new_password)
    driver.find_element(By.ID, "confirm_password").send_keys(new_password)
    driver.find_element(By.ID, "password-button").click()
    _wait(driver, lambda d: d.current_url.rstrip("/") == base, message="the new password did not open the upload page")
    assert driver.find_element(By.ID, "upload-button").is_displayed()

    # upload a chest radiograph DICOM and wait for the result card
    uploaded = chest_radiograph(tmp_path)
    result_url = _upload(driver, base, home, uploaded)
    _wait(driver, lambda d: d.find_element(By.ID, "decision").text.strip(), message="empty decision")
    decision = driver.find_element(By.ID, "decision").text.strip()
    assert decision
    for element_id in ("image", "overlay"):
        _wait(driver, lambda d, i=element_id: _image_loaded(d, i), message=f"#{element_id} did not load")
    assert driver.execute_script("return document.getElementById('overlay').naturalWidth") > 0

    # the opacity slider drives the overlay
    before = driver.execute_script("return document.getElementById('overlay').style.opacity")
    driver.execute_script(
        "const s = document.getElementById('opacity'); s.value = 25;"
        "s.dispatchEvent(new Event('input', {bubbles: true}));")
    after = driver.execute_script("return document.getElementById('overlay').style.opacity")
    assert before == "0.6" and after == "0.25", (before, after)
    assert driver.find_element(By.ID, "opacity-value").text == "25%"

    # no errors in the console (the page, its script, its images)
    entries = driver.get_log("browser")
    severe = [e for e in entries if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"

    screenshot = artifacts_dir() / "e2e_result_card.png"
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 1000

    # a CT slice given to the chest X-ray model: stored, not analysed, and the card says so in plain words
    ct = mirror / CT_SLICE
    if not ct.is_file():
        pytest.fail(f"the mirror has no {CT_SLICE}: refresh the data mirror")
    _upload(driver, base, home, ct)
    _wait(driver, lambda d: d.find_element(By.ID, "decision").text.strip(), message="empty decision for the CT")
    rejected = driver.find_element(By.ID, "decision").text.strip()
    assert rejected.startswith(REJECTION) and "this file is CT" in rejected, rejected
    card = driver.find_element(By.ID, "rejection")
    assert card.is_displayed() and "The model did not look at this file" in card.text
    assert "paediatric frontal chest radiographs (CR/DX)" in card.text
    assert not driver.find_elements(By.ID, "overlay") and "Calibrated probabilities" not in driver.page_source
    _wait(driver, lambda d: _image_loaded(d, "image"), message="the CT slice's picture did not load")
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors on the rejection card: {severe}"
    rejection_shot = artifacts_dir() / "e2e_rejected_ct.png"
    assert driver.save_screenshot(str(rejection_shot))

    # log out: back to /login, and the result card is gone with the session
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button[type='submit']").click()
    _wait(driver, lambda d: d.current_url.endswith("/login"), message="logout did not lead to /login")
    driver.get(result_url)
    assert driver.current_url == base + "/login", driver.current_url
    assert not driver.find_elements(By.ID, "decision")
    print(f"uploaded {uploaded.name}: decision {decision!r}; CT slice: {rejected!r}; "
          f"browser part {time.monotonic() - started:.1f} s; screenshots {screenshot}, {rejection_shot}")


@pytest.fixture
def segmentation_service(tmp_path: Path) -> Iterator[tuple[Home, ServerProcess]]:
    pytest.importorskip("onnxruntime")
    run = train_tiny_segmenter(tmp_path / "work")
    home = prepare_home(tmp_path / "home", run)
    with ServerProcess(home.home) as server:
        yield home, server


def test_clinician_sees_a_segmentation_mask_over_the_image(segmentation_service: tuple[Home, ServerProcess],
                                                           browser: Any, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    home, server = segmentation_service
    driver, base = browser, server.url
    _log_in(driver, base, home)

    photo = tmp_path / "fundus.png"
    Image.fromarray(fundus(3, (120, 110))[0]).save(photo)
    _upload(driver, base, home, photo)
    _wait(driver, lambda d: d.find_element(By.ID, "decision").text.strip(), message="empty decision")
    for element_id in ("image", "overlay"):
        _wait(driver, lambda d, i=element_id: _image_loaded(d, i), message=f"#{element_id} did not load")
    sizes = driver.execute_script(
        "const i = document.getElementById('image'), o = document.getElementById('overlay');"
        "const a = i.getBoundingClientRect(), b = o.getBoundingClientRect();"
        "return [i.naturalWidth, i.naturalHeight, o.naturalWidth, o.naturalHeight, a.left, a.top, a.width,"
        " b.left, b.top, b.width];")
    assert sizes[:4] == [110, 120, 110, 120], f"the mask is on the image's own grid: {sizes[:4]}"
    assert sizes[4:7] == sizes[7:10], f"the mask lies exactly over the image: {sizes[4:]}"
    legend = driver.find_element(By.ID, "legend")
    assert legend.is_displayed() and "vessel" in legend.text and "of the analysed area" in legend.text
    assert "Mean uncertainty" in legend.text

    # the opacity slider drives the mask overlay
    opacity = "return getComputedStyle(document.getElementById('overlay')).opacity"
    assert driver.execute_script(opacity) == "0.6"
    driver.execute_script(
        "const s = document.getElementById('opacity'); s.value = 25;"
        "s.dispatchEvent(new Event('input', {bubbles: true}));")
    assert driver.execute_script(opacity) == "0.25"
    assert driver.find_element(By.ID, "opacity-value").text == "25%"
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"
    shot = artifacts_dir() / "e2e_segmentation_card.png"
    assert driver.save_screenshot(str(shot))


@pytest.fixture
def restoration_service(tmp_path: Path) -> Iterator[tuple[Home, ServerProcess]]:
    """A tiny low-dose restorer (DnCNN-small, 30 steps on phantoms) served alone."""
    pytest.importorskip("monai")
    from meddx.synthesis import package as restoration
    from tests.synthesis.test_restoration import write_phantoms

    run = restoration.train(str(write_phantoms(tmp_path / "phantoms", 10)), noise="xray-poisson", out=tmp_path / "run",
                            steps=30, patch=32, batch=4, eval_every=15, n_boot=50, progress=False, model="dncnn-small",
                            threads=1)
    home = prepare_home(tmp_path / "home", run)
    with ServerProcess(home.home) as server:
        yield home, server


def test_clinician_sees_the_synthetic_banner_on_a_restored_image(restoration_service: tuple[Home, ServerProcess],
                                                                 browser: Any, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from meddx.synthesis.dose import get
    from tests.synthesis.test_restoration import phantom

    home, server = restoration_service
    driver, base = browser, server.url
    _log_in(driver, base, home)
    low = tmp_path / "low-dose.png"
    Image.fromarray((get("xray-poisson").degrade(phantom(64, 3), 0.1, 0) * 255).astype(np.uint8)).save(low)
    driver.get(base + "/")
    driver.find_element(By.ID, "file").send_keys(str(low))
    Select(driver.find_element(By.ID, "model")).select_by_value(home.model)
    driver.find_element(By.ID, "dose").send_keys("0.1")
    driver.find_element(By.ID, "upload-button").click()
    _wait(driver, lambda d: "/results/" in d.current_url or d.find_elements(By.CSS_SELECTOR, "p.error"),
          60, "no result page and no error after the upload")
    assert "/results/" in driver.current_url, driver.find_element(By.CSS_SELECTOR, "p.error").text
    for element_id in ("image", "synthetic-image"):
        _wait(driver, lambda d, i=element_id: _image_loaded(d, i), message=f"#{element_id} did not load")
    banner = driver.find_element(By.ID, "synthetic-banner")
    assert banner.is_displayed() and "SYNTHETIC \u2013 not acquired" in banner.text
    red, green, blue = (int(v) for v in driver.execute_script(
        "return getComputedStyle(arguments[0]).backgroundColor.match(/\\d+/g).slice(0, 3);", banner))
    assert red > 150 and green < 60 and blue < 60, f"the banner is red: {(red, green, blue)}"
    checks = driver.find_element(By.ID, "synthetic-checks")
    assert "0.1 of the full dose" in checks.text and "Hallucination checks" in checks.text
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"
    assert driver.save_screenshot(str(artifacts_dir() / "e2e_restoration_card.png"))


@pytest.fixture
def indexed_service(tmp_path: Path) -> Iterator[tuple[Home, ServerProcess]]:
    """The chest X-ray model served with a case index of 12 labelled cases and their thumbnails."""
    pytest.importorskip("faiss")
    from meddx.retrieval.build import build_index
    from meddx.service.similar import thumbnails_from_source
    from tests._factories import make_labelled_pngs

    run = train_tiny_model(tmp_path / "work")
    gallery = make_labelled_pngs(tmp_path / "gallery", n=12, size=16, seed=3)
    index = build_index(run, gallery, tmp_path / "index", progress=False)
    assert thumbnails_from_source(tmp_path / "index", run) == 12
    home = prepare_home(tmp_path / "home", run)
    env = {"MEDDX_INDEXES": f"{home.model}={tmp_path / 'index'}"}
    assert index.info["model"]["name"] == home.model
    with ServerProcess(home.home, env=env) as server:
        yield home, server


def test_clinician_sees_similar_confirmed_cases_on_the_result_card(indexed_service: tuple[Home, ServerProcess],
                                                                   browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    home, server = indexed_service
    driver, base = browser, server.url
    _log_in(driver, base, home)

    _upload(driver, base, home, chest_radiograph(tmp_path))
    _wait(driver, lambda d: d.find_element(By.ID, "decision").text.strip(), message="empty decision")
    panel = driver.find_element(By.ID, "similar")
    assert panel.is_displayed() and "Similar confirmed cases" in panel.text
    cases = panel.find_elements(By.CSS_SELECTOR, "li.case")
    assert len(cases) == 6, panel.text
    for case in cases:
        assert case.find_element(By.CSS_SELECTOR, ".case-label").text in ("lesion", "normal")
        assert case.find_element(By.CSS_SELECTOR, ".case-similarity").text.endswith("% similar")
    all_loaded = ("return [...document.querySelectorAll('#similar img.case-thumb')]"
                  ".map(i => i.complete && i.naturalWidth > 0)")
    _wait(driver, lambda d: (lambda s: len(s) == 6 and all(s))(d.execute_script(all_loaded)),
          message="the similar cases' thumbnails did not load")
    assert "img0" not in panel.text and ".png" not in panel.text  # case ids, never file names
    for element_id in ("image", "overlay"):  # the rest of the card still works
        _wait(driver, lambda d, i=element_id: _image_loaded(d, i), message=f"#{element_id} did not load")
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"
    driver.execute_script("document.getElementById('similar').scrollIntoView()")
    assert driver.save_screenshot(str(artifacts_dir() / "e2e_similar_cases.png"))
