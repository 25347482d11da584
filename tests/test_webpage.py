"""The HTML pages in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium. Tables and trend plots render, sorting and filtering work, hovering a point shows
its row, the wheel zooms, and the page logs no console error. Skipped where Chromium is absent."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segbench.rows.files import save_rows
from segbench.rows.schema import make_row

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def write_history_page(tmp_path: Path) -> Path:
    """Eight made runs of two models, the second slower from run 5: the page of `segbench history`."""
    rows = []
    for i in range(8):
        for model, base, step in (("alpha", 10.0, 1.0), ("beta", 20.0, 1.3)):
            value = base * (step if i >= 4 else 1.0) * (1 + 0.003 * (i % 3))
            rows.append(
                make_row(
                    model=model,
                    kind="model",
                    latency_ms_median=value,
                    latency_ms_ci_low=value * 0.99,
                    latency_ms_ci_high=value * 1.01,
                    run_id=f"{model}-r{i}",
                    timestamp=f"2026-12-01T00:00:{i:02d}",
                )
            )
    save_rows(rows, tmp_path / "latency-made")
    page = tmp_path / "history.html"
    with page.open("w") as out:
        subprocess.run(
            [sys.executable, "-m", "segbench", "history", str(tmp_path / "latency-made.json"), "--format", "html"],
            stdout=out,
            check=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
    return page


def column(driver, name: str) -> list[str]:
    headers = [th.text.strip(" \u25b2\u25bc") for th in driver.find_elements("css selector", "table.sortable th")]
    index = headers.index(name) + 1
    return [td.text for td in driver.find_elements("css selector", f"table.sortable tbody tr td:nth-child({index})")]


def test_history_page_renders_sorts_filters_hovers_and_zooms(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    browser.get(write_history_page(tmp_path).as_uri())
    assert column(browser, "model") == ["alpha", "beta"]
    assert len(browser.find_elements("css selector", "figure.trend svg")) == 2
    assert len(browser.find_elements("css selector", "figure.trend svg circle.point")) == 16
    assert len(browser.find_elements("css selector", "figure.trend svg line.change")) == 1  # beta's step

    last = browser.find_element("xpath", "//table[contains(@class,'sortable')]//th[text()='last']")
    last.click()
    assert column(browser, "model") == ["alpha", "beta"] and last.get_attribute("aria-sort") == "ascending"
    last.click()
    assert column(browser, "model") == ["beta", "alpha"] and last.get_attribute("aria-sort") == "descending"

    browser.find_element("css selector", "input.filter").send_keys("alph")
    shown = [tr for tr in browser.find_elements("css selector", "table.sortable tbody tr") if tr.is_displayed()]
    assert [tr.find_element("css selector", "td").text for tr in shown] == ["alpha"]

    point = browser.find_elements("css selector", "figure.trend svg circle.point")[12]  # beta, run 5
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
    ActionChains(browser).move_to_element(point).perform()
    tip = browser.find_element("css selector", ".tip")
    assert tip.is_displayed() and "run_id: beta-r4" in tip.text

    svg = browser.find_elements("css selector", "figure.trend svg")[1]
    for _ in range(3):
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(svg), 0, -100).perform()
    assert len(svg.find_elements("css selector", "circle.point")) < 8  # zoomed in on fewer runs
    ActionChains(browser).double_click(svg).perform()
    assert len(svg.find_elements("css selector", "circle.point")) == 8

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_report_page_tables_scroll_and_sort_without_console_errors(browser, tmp_path):
    rows = [
        make_row(
            model=name, kind="model", params=params, latency_ms_median=ms, run_id="r", timestamp="2026-12-01T00:00:00"
        )
        for name, params, ms in (
            ("fcn8s", 134_000_000, 240.0),
            ("fast_scnn", 1_100_000, 30.0),
            ("unet", 31_000_000, 90.0),
        )
    ]
    save_rows(rows, tmp_path / "run-made")
    page = tmp_path / "report.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "segbench",
            "report",
            str(tmp_path / "run-made.json"),
            "--format",
            "html",
            "--out",
            str(page),
        ],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    browser.get(page.as_uri())
    params = browser.find_element("xpath", "//table[contains(@class,'sortable')]//th[text()='params']")
    params.click()
    assert column(browser, "model") == ["fast_scnn", "unet", "fcn8s"]
    wrapper = browser.find_element("css selector", "div.scroll")
    assert wrapper.value_of_css_property("overflow-x") == "auto"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
