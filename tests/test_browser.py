"""report.html in a real browser: headless Chromium (Debian's ``chromium`` package), offline,
driven over the DevTools protocol (tests/chromium.py). The page must load with every figure,
sort and filter its runs explorer by clicks and by a link's fragment, log no error, and look
right in a screenshot; a report whose script is broken must fail the same check."""

from urllib.parse import quote

import matplotlib.image
import pytest

from .chromium import Browser, find_chromium
from .conftest import required_in_ci

pytestmark = [pytest.mark.browser, pytest.mark.integration]

STATE = """(() => {
  const table = document.getElementById("runs-explorer-table");
  const columns = Array.from(table.tHead.rows[0].cells).map(th => th.dataset.column);
  const at = columns.indexOf("final_val_loss");
  const shown = Array.from(table.tBodies[0].rows).filter(row => !row.hidden);
  return {
    ready: table.dataset.ready || null,
    sortedBy: table.dataset.sortedBy || "",
    count: document.getElementById("runs-explorer-count").textContent,
    hash: location.hash,
    ids: shown.map(row => row.cells[0].dataset.value),
    losses: shown.map(row => Number(row.cells[at].dataset.value)),
    images: Array.from(document.images).map(img => img.complete && img.naturalWidth > 0),
  };
})()"""

CLICK = """(() => {
  document.querySelector('#runs-explorer-table th[data-column="%s"]').click();
})()"""


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        required_in_ci(
            "LORASWEEP_REQUIRE_BROWSER", "Chromium is not installed (apt-get install -y chromium)"
        )
    return path


def browse(chromium, tmp_path, name):
    return Browser(chromium, tmp_path / f"profile-{name}", tmp_path / f"chromium-{name}.log")


def test_report_sorts_filters_and_renders_without_errors(chromium, tiny_run, tmp_path):
    report = tiny_run / "results" / "report.html"
    with browse(chromium, tmp_path, "clicks") as browser:
        browser.open(report.as_uri())
        state = browser.evaluate(STATE)
        assert state["ready"] == "true" and state["count"] == "18 of 18 runs shown"
        assert state["images"] and all(state["images"]), "every figure must load"
        browser.evaluate(
            "(() => { const box = document.getElementById('runs-explorer-filter');"
            " box.value = 'method=lora rank>=4'; box.dispatchEvent(new Event('input')); })()"
        )
        browser.evaluate(CLICK % "final_val_loss")
        browser.evaluate(CLICK % "final_val_loss")
        state = browser.evaluate(STATE)
        browser.screenshot("#runs-explorer", tmp_path / "explorer.png", width=1600)
        problems = browser.problems()
    assert problems == []
    assert state["sortedBy"] == "final_val_loss:desc"
    assert state["count"] == "8 of 18 runs shown"
    assert all("_lora_r4_" in run_id for run_id in state["ids"])
    assert state["losses"] == sorted(state["losses"], reverse=True)
    assert state["hash"] == "#sort=final_val_loss:desc&filter=" + quote("method=lora rank>=4")
    pixels = matplotlib.image.imread(tmp_path / "explorer.png")
    assert pixels.shape[1] >= 1500 and pixels.shape[0] >= 400
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"


def test_a_link_opens_the_report_sorted_and_filtered(chromium, tiny_run, tmp_path):
    url = (tiny_run / "results" / "report.html").as_uri()
    with browse(chromium, tmp_path, "link") as browser:
        browser.open(url + "#sort=final_val_loss:asc&filter=method%3Dfull")
        state = browser.evaluate(STATE)
        problems = browser.problems()
    assert problems == []
    assert state["ready"] == "true" and state["sortedBy"] == "final_val_loss:asc"
    assert state["count"] == "2 of 18 runs shown"
    assert state["losses"] == sorted(state["losses"])


def test_the_check_fails_when_the_script_is_broken(chromium, tiny_run, tmp_path):
    html = (tiny_run / "results" / "report.html").read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace('"use strict";', '"use strict"; var x = ;', 1), "utf-8")
    with browse(chromium, tmp_path, "broken") as browser:
        browser.open(broken.as_uri() + "#sort=final_val_loss:asc")
        state = browser.evaluate(STATE)
        problems = browser.problems()
    assert state["ready"] is None and state["sortedBy"] == ""
    assert any("SyntaxError" in p for p in problems), problems


WIDTHS = """(() => ({scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth}))()"""


@pytest.mark.parametrize("run", ["tiny_run", "figures_run"])
def test_the_report_does_not_scroll_sideways_at_1280_px(chromium, run, request, tmp_path):
    """Not with the tiny config's report, nor with one whose dataset names are long."""
    report = request.getfixturevalue(run) / "results" / "report.html"
    with browse(chromium, tmp_path, "width") as browser:
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        browser.open(report.as_uri())
        widths = browser.evaluate(WIDTHS)
    assert widths["client"] == 1280
    assert widths["scroll"] <= widths["client"], widths


def test_a_filter_on_an_unknown_column_says_so_and_lists_the_columns(chromium, tmp_path):
    import pandas as pd

    from lorasweep.report.explorer import section

    runs = pd.DataFrame(
        {"run_id": ["a_lora_r4", "b_full"], "method": ["lora", "full"], "rank": [4, 0],
         "final_val_loss": [0.5, 0.25]}
    )  # fmt: skip
    page = tmp_path / "explorer.html"
    page.write_text(f"<!DOCTYPE html><html><body>{section(runs)}</body></html>", "utf-8")
    unknown = "(() => { const p = document.getElementById('runs-explorer-unknown');"
    unknown += " return p.hidden ? '' : p.textContent; })()"
    with browse(chromium, tmp_path, "unknown") as browser:
        browser.open(page.as_uri() + "#filter=" + quote("ranks>=4 method=lora"))
        state, message = browser.evaluate(STATE), browser.evaluate(unknown)
        known_page = tmp_path / "explorer-known.html"
        known_page.write_text(page.read_text("utf-8"), "utf-8")
        browser.open(known_page.as_uri() + "#filter=" + quote("rank>=4"))
        known = browser.evaluate(unknown)
        problems = browser.problems()
    assert problems == []
    assert state["count"] == "1 of 2 runs shown"
    assert message.startswith("unknown column ranks in the filter")
    assert "run_id, method, rank, final_val_loss" in message
    assert known == ""
