"""The web page in a real headless Chromium (Selenium): upload a shapes-world image, see its caption, ask a
question, search the index. The screenshot goes to $LAVISLITE_SCREENSHOT_DIR (docs/images/serve_page.png was
made that way) or the test's temporary folder."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [test] extra")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from lavislite.serve.app import ServeConfig, create_app
from lavislite.serve.heads import Heads
from lavislite.serve.search import Searcher
from lavislite.serve.server import BackgroundServer

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _find() -> tuple[str | None, str | None]:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def chrome():
    """A headless Chromium driven by Debian's chromedriver; installed with apt-get when missing and possible."""
    browser, driver = _find()
    if (browser is None or driver is None) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], capture_output=True, timeout=900, check=False)
        browser, driver = _find()
    if browser is None or driver is None:
        pytest.skip("no chromium + chromedriver on this machine and apt-get cannot install them "
                    "(Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1180,900"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_page_caption_vqa_search(chrome, loaded, world_index, tmp_path):
    images, index = world_index
    heads = Heads(caption=loaded("blip_caption"), vqa=loaded("blip_vqa"), retrieval=loaded("blip_retrieval"),
                  searcher=Searcher.open(str(index), loaded("blip_retrieval")))
    heads.decode.update(num_beams=2, max_length=10, min_length=3)
    with BackgroundServer(create_app(heads, ServeConfig())) as url:
        chrome.get(url + "/")
        wait = WebDriverWait(chrome, 60)
        wait.until(lambda d: "caption:" in d.find_element(By.ID, "heads").text)
        upload = chrome.find_element(By.ID, "file")
        chrome.execute_script("arguments[0].hidden = false", upload)  # the drop zone opens it on click; selenium types into it
        upload.send_keys(str(images / "scene03.png"))
        wait.until(lambda d: d.find_element(By.ID, "caption").text.strip())
        chrome.find_element(By.ID, "question").send_keys("what color is the shape on the left?")
        chrome.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_element(By.ID, "answer").text.strip())
        chrome.find_element(By.ID, "query").send_keys("a red circle")
        chrome.find_element(By.ID, "search").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) == 8)
        # every result image has loaded and shows its score
        wait.until(lambda d: all(d.execute_script("return arguments[0].naturalWidth", img) > 0
                                 for img in d.find_elements(By.CSS_SELECTOR, "#results .hit img")))
        scores = [e.text for e in chrome.find_elements(By.CSS_SELECTOR, "#results .hit .score")]
        assert scores[0].startswith("#1 ") and all(s.split()[-1].replace(".", "").lstrip("-").isdigit() for s in scores)
        assert chrome.find_element(By.ID, "status").text == ""  # no error shown
        out = Path(os.environ.get("LAVISLITE_SCREENSHOT_DIR") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        assert chrome.save_screenshot(str(out / "serve_page.png"))
