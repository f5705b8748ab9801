"""report.html in a real browser: the tiny study's report (conftest's `analysed`, shared with
test_analysis) opened in headless Chromium (tests/browser.py, driven over its DevTools protocol)
with every host name unresolvable, so a report that needed the network would show it.

    python -m pytest tests/test_report_browser.py    # needs chromium: `make browser` installs it

Checked: no console error and no request off the machine (plotly.js is embedded), every figure
drawn (a plot per figure, one drawn group per trace; an empty figure shows why), the headline
(the terminal's text) before the first figure; and that these checks catch a broken page. The
screenshot (1280 x 2400, the top of the report) is left for people to look at; the run prints
its path: /tmp/pytest-of-$USER/pytest-current/report-browser0/report.png
"""
from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest

from analysis.report import HEADLINE_FIGURE, SECTIONS
from browser import Browser, chromium

# Every figure's plot once drawn (or after 30 s): its id, its visible traces, the trace groups
# drawn in its SVG (g.trace for scatter and bars, g.hm for heatmaps), its annotations' text.
PLOTS = """new Promise(done => {
  const started = performance.now();
  const stats = d => ({id: d.id, traces: (d._fullData || []).filter(t => t.visible === true).length,
                       drawn: d.querySelectorAll("g.trace, g.hm").length,
                       notes: [...d.querySelectorAll(".annotation-text")].map(a => a.textContent)});
  const check = () => {
    const divs = [...document.querySelectorAll("div[id^='fig-']")];
    if (divs.every(d => d.classList.contains("js-plotly-plot") && d._fullLayout) ||
        performance.now() - started > 30000)
      requestAnimationFrame(() => done(divs.map(stats)));
    else
      setTimeout(check, 50);
  };
  check();
})"""
# Whether the headline's sentences come before the first plot (in document order), and its text.
HEADLINE = """(() => {
  const head = document.getElementById("headline"), plot = document.querySelector(".js-plotly-plot");
  const sentences = head && head.querySelector("ul.answers");
  return {before: !!(sentences && plot &&
                     sentences.compareDocumentPosition(plot) & Node.DOCUMENT_POSITION_FOLLOWING),
          text: head ? head.innerText : ""};
})()"""
BROKEN = """<!doctype html><html><head><script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script>
</head><body><script>console.error("planted error"); undefinedFunction();</script></body></html>"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if chromium() is None:
        pytest.fail("chromium is not installed: `make browser` installs Debian's package")
    with Browser(tmp_path_factory.mktemp("chromium-profile"), timeout=60) as b:
        yield b


@pytest.fixture(scope="module")
def shown(browser, analysed, tmp_path_factory):
    """The tiny study's report.html once loaded and drawn: page (errors, requests), plots,
    headline, the terminal's printed headline, and the screenshot's path."""
    out, code, printed = analysed
    assert code == 0
    page = browser.load(out / "report.html")
    plots = browser.evaluate(PLOTS)
    screenshot = browser.screenshot(tmp_path_factory.mktemp("report-browser") / "report.png")
    return SimpleNamespace(page=page, plots=plots, headline=browser.evaluate(HEADLINE),
                           printed=printed, screenshot=screenshot,
                           answers=json.loads((out / "answers.json").read_text()))


def test_the_report_opens_offline_without_console_errors(shown):
    assert shown.page.errors == []
    assert shown.page.requests == []   # plotly.js embedded: nothing fetched from a CDN


def test_every_figure_is_drawn_in_its_section_order(shown):
    expected = [HEADLINE_FIGURE] + [f for s in SECTIONS for f in s.figures if f != HEADLINE_FIGURE]
    assert [p["id"] for p in shown.plots] == [f"fig-{name}" for name in expected]
    empty = {p["id"] for p in shown.plots if p["traces"] == 0}
    # the tiny study has 3 search trials per arm: too few for parameter importances, and it says so
    assert empty == {"fig-importance_bars"}
    assert any(n.startswith("too few completed search trials") for p in shown.plots
               if p["id"] in empty for n in p["notes"])
    for p in shown.plots:
        if p["traces"]:
            assert p["drawn"] == p["traces"], p


def test_the_headline_comes_first_with_the_terminals_text(shown):
    assert shown.headline["before"]
    text = " ".join(shown.headline["text"].split())
    head = shown.printed.split("\nreport: ")[0]
    title_line, *table_and_sentences = head.split("\n- ")[0].splitlines()
    assert title_line.startswith("Answer (") and title_line[len("Answer ("):-2] in text
    for line in table_and_sentences[1:]:          # each ranking row, header left out
        assert " ".join(line.split()) in text, line
    sentences = [" ".join(s.split()) for s in head.split("\n- ")[1:]]
    assert len(sentences) >= 3 and all(s in text for s in sentences)


def test_the_screenshot_is_left_for_people(shown, capsys):
    head = shown.screenshot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 2400)
    with capsys.disabled():
        print(f"\nreport.html screenshot: {shown.screenshot}")


def test_a_broken_page_is_caught(browser, tmp_path):
    """The checks above can fail: a console error, an exception and a CDN script are all seen."""
    path = tmp_path / "broken.html"
    path.write_text(BROKEN)
    page = browser.load(path)
    browser.evaluate("new Promise(done => setTimeout(done, 100))")   # let the events arrive
    assert any("planted error" in e for e in page.errors)
    assert any("undefinedFunction" in e for e in page.errors)
    assert any("cdn.plot.ly" in e for e in page.errors)   # the script that could not load
    assert page.requests == ["https://cdn.plot.ly/plotly-2.35.2.min.js"]
