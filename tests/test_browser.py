"""The book as a reader sees it: every page opened in headless Chromium, with the network off.

Per page, at 1400 px wide: the title (H1) comes first; no code block scrolls sideways and no
output is wider than the text column; every formula is typeset by MathJax (served with the
book, not from a CDN); every image has loaded and has a description for its alt text, not a
file name; no errors in the console; solutions are collapsed. A screenshot of each page's top, and of each figure, goes to
``_build/screenshots/`` so that a person can look.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them where it
can); without them the test is skipped with a message saying so.
"""

import re
import shutil
from pathlib import Path

import pytest

from tests.test_book import toc_files

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver packages "
           "(make test does so where it can) to check the book's pages in a browser",
)

# Each returns a list of problems found on the page (empty: all is well).
TITLE_FIRST = """
const article = document.querySelector('article') || document.body;
const h1 = article.querySelector('h1');
if (!h1) return ['no H1 title'];
const visible = e => e.offsetParent !== null && e.getBoundingClientRect().height > 0;
const top = h1.getBoundingClientRect().top;
return [...article.querySelectorAll('p, pre, img, table, ul, ol, div.cell')]
  .filter(visible).filter(e => e.getBoundingClientRect().bottom <= top + 1)
  .map(e => 'above the title: ' + (e.innerText || e.outerHTML).slice(0, 80));
"""
SOLUTIONS_COLLAPSED = """
return [...document.querySelectorAll('details')]
  .filter(d => /solution/i.test(d.querySelector('summary')?.innerText || ''))
  .filter(d => d.open).map(d => 'an open solution: ' + d.innerText.slice(0, 80));
"""
OPEN_ALL_DETAILS = "document.querySelectorAll('details').forEach(d => d.open = true);"
CODE_SCROLLS = """
return [...document.querySelectorAll('div.highlight pre')]
  .filter(p => !p.closest('.cell_output, .output'))
  .filter(p => p.scrollWidth > p.clientWidth + 1)
  .map(p => 'scrolls sideways: ' + p.innerText.split('\\n')
    .reduce((a, b) => a.length >= b.length ? a : b).slice(0, 100));
"""
OUTPUT_WIDER_THAN_PAGE = """
const column = (document.querySelector('article') || document.body).getBoundingClientRect().right;
const wide = e => e.getBoundingClientRect().right > column + 1
  || (e.scrollWidth > e.clientWidth + 1 && /auto|scroll/.test(getComputedStyle(e).overflowX));
return [...document.querySelectorAll('div.cell_output')]
  .filter(o => o.offsetParent !== null)
  .filter(o => wide(o) || [...o.querySelectorAll('*')].some(wide))
  .map(o => 'an output wider than the page: ' + o.innerText.split('\\n')
    .reduce((a, b) => a.length >= b.length ? a : b).slice(0, 100));
"""
MATH_TYPESET = """
const done = arguments[arguments.length - 1];
const math = [...document.querySelectorAll('.math')];
if (!math.length) { done([]); return; }
if (!window.MathJax || !MathJax.startup) { done(['MathJax did not load']); return; }
MathJax.startup.promise.then(() => done(math
  .filter(m => !m.querySelector('mjx-container'))
  .map(m => 'not typeset: ' + m.innerText.slice(0, 60))));
"""
IMAGES = """
return [...document.querySelectorAll('article img')].map(i => ({
  src: i.getAttribute('src'), alt: i.getAttribute('alt') || '',
  loaded: i.complete && i.naturalWidth > 0}));
"""
FILE_NAME = re.compile(r"(\.(png|jpe?g|svg|gif)$)|^[0-9a-f]{16,}")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--hide-scrollbars",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 "--allow-file-access-from-files", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    # The network is off: everything a page needs must come with the book.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()


def page_problems(driver, page: Path, name: str) -> list[str]:
    driver.get(page.as_uri())
    problems = driver.execute_script(TITLE_FIRST) + driver.execute_script(SOLUTIONS_COLLAPSED)
    problems += driver.execute_async_script(MATH_TYPESET)
    slug = name.replace("/", "_")
    driver.save_screenshot(str(SCREENSHOTS / f"{slug}.png"))
    for image in driver.execute_script(IMAGES):
        if not image["loaded"]:
            problems.append(f"image not loaded: {image['src']}")
        if not image["alt"].strip() or FILE_NAME.search(image["alt"].strip()):
            problems.append(f"image without a description: {image['src']} (alt {image['alt']!r})")
    from selenium.webdriver.common.by import By

    figures = driver.find_elements(By.CSS_SELECTOR, "div.cell_output img")
    for k, figure in enumerate(figures):
        driver.execute_script("arguments[0].scrollIntoView();", figure)
        figure.screenshot(str(SCREENSHOTS / f"{slug}-figure-{k + 1}.png"))
    driver.execute_script(OPEN_ALL_DETAILS)
    problems += driver.execute_script(CODE_SCROLLS)
    problems += driver.execute_script(OUTPUT_WIDER_THAN_PAGE)
    problems += [f"console: {entry['message'][:200]}" for entry in driver.get_log("browser")
                 if entry["level"] == "SEVERE"]
    return problems


def test_every_page_reads_well_in_a_browser_offline(built_book, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in toc_files():
        problems = page_problems(browser, built_book / f"{name}.html", name)
        if problems:
            report[name] = problems
    assert not report, "\n".join(f"{page}:\n  " + "\n  ".join(p) for page, p in report.items())
    assert (SCREENSHOTS / "notebooks_05_bert.png").exists()
