"""The lab panel in a real browser (headless Chromium): lesson 00 in JupyterLab, then the panel in Notebook 7.

In JupyterLab (its default layout, file browser open) the lesson runs once, top to bottom; then Run is pressed in
the panel, checkpointing is toggled, and Run is pressed again. After each press the panel is measured at
1024×768 and at 1440×900 (the same kernel, the window resized), and each look is judged on its own:

* nothing in or around the panel scrolls sideways;
* every control (labelled inputs and buttons) lies inside the panel and the window, unclipped, its words uncut;
* the chart is at least 300 px tall and its axis text at least 10 px on screen;
* every row of the result table is one line;
* the quantities the delta line names are rows of the table;
* no cell of the notebook printed to stderr.

Screenshots of every look go to runs/browser/ for a person to check what the numbers say.
"""
import base64
import json
import re
import shutil

import pytest

from jupyter_browser import (PANEL_FACTS_JS, PANEL_RUN_S, PNG_BYTES_JS, REPO, Page, browser_tools_missing,
                             png_size_and_dpi)

MISSING = browser_tools_missing()
if MISSING:
    pytest.skip(f"browser tests skipped: {MISSING}", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.long]

LESSON = "notebooks/00_start_here.ipynb"
SHOTS = REPO / "runs" / "browser"
SIZES = [(1024, 768), (1440, 900)]
STATES = ["after-first-run", "after-toggle-run"]
LOOKS = [(state, size) for state in STATES for size in SIZES]
MIN_CHART_PX, MIN_AXIS_TEXT_PX = 300, 10


# ---- driving the lab ---------------------------------------------------------------------------------------------
def code_cells(path) -> int:
    return sum(cell["cell_type"] == "code" for cell in json.loads(path.read_text())["cells"])


def panel_state(page: Page):
    """What changes when a run ends: the messages, the delta line and the chart's source."""
    return page.js("const q = s => document.querySelector('.labkit-lab ' + s);"
                   "const img = document.querySelector('.labkit-lab img.labkit-chart, .labkit-lab .labkit-chart img');"
                   "return [q('.labkit-messages') && q('.labkit-messages').textContent,"
                   "        q('.labkit-delta') && q('.labkit-delta').textContent, img && img.src];")


def press(page: Page, selector: str):
    """A real click on the first element matching `selector` inside the panel."""
    from selenium.webdriver.common.by import By
    element = page.driver.find_element(By.CSS_SELECTOR, f".labkit-lab {selector}")
    page.js("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    return element


def press_run(page: Page):
    """Press the panel's Run button and wait until the run has shown its result and the kernel is idle again."""
    before = panel_state(page)
    button = press(page, "button.labkit-run, .labkit-run button")

    def finished():
        return (panel_state(page) != before and button.is_enabled() and button.text.strip() == "Run"
                and page.kernel_status() == "idle")

    page.wait(PANEL_RUN_S, finished, "the run started from the panel's Run button to finish")


def toggle_checkpointing(page: Page):
    """Click the checkpointing box; wait until it shows the other state and the kernel has taken it."""
    from selenium.webdriver.common.by import By
    checkbox = page.driver.find_element(By.CSS_SELECTOR, ".labkit-lab .labkit-checkpointing input[type=checkbox]")
    before = checkbox.is_selected()
    press(page, ".labkit-checkpointing input[type=checkbox]")
    page.wait(60, lambda: checkbox.is_selected() != before and page.kernel_status() == "idle",
              "the checkpointing box to change and the kernel to take it")


def chart_png(page: Page, chart: dict | None) -> dict | None:
    """The chart image's own size and dpi, read from its PNG bytes."""
    if not chart or not chart["src"]:
        return None
    encoded = page.driver.execute_async_script(PNG_BYTES_JS, chart["src"])
    if encoded.startswith("error"):
        return {"error": encoded}
    width, height, dpi = png_size_and_dpi(base64.b64decode(encoded))
    return {"width": width, "height": height, "dpi": dpi}


def look(page: Page, state: str, width: int, height: int) -> dict:
    page.set_viewport(width, height)
    facts = page.js(PANEL_FACTS_JS)
    assert facts is not None, "no .labkit-lab panel in the page"
    facts["png"] = chart_png(page, facts["chart"])
    shot = SHOTS / f"lab-{width}x{height}-{state}.png"
    page.screenshot(shot, width, height)
    facts["screenshot"] = str(shot.relative_to(REPO))
    return facts


@pytest.fixture(scope="module")
def lab_looks(jupyter_server, chromium):
    """Lesson 00 run in JupyterLab, then Run, toggle, Run in the panel; a look at each size after each press."""
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    page = Page(chromium)
    page.set_viewport(*SIZES[0])
    chromium.get(jupyter_server.url(f"lab/tree/{LESSON}"))
    looks = {}
    try:
        page.run_all_cells(code_cells(REPO / LESSON))
        press_run(page)
        looks.update({("after-first-run", size): look(page, "after-first-run", *size) for size in SIZES})
        toggle_checkpointing(page)
        press_run(page)
        looks.update({("after-toggle-run", size): look(page, "after-toggle-run", *size) for size in SIZES})
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        chromium.save_screenshot(str(SHOTS / "lab-failed.png"))     # where it stopped, for a person to see
        raise
    return looks


@pytest.fixture(params=LOOKS, ids=[f"{w}x{h}-{state}" for state, (w, h) in LOOKS])
def lab(request, lab_looks):
    return lab_looks[request.param]


# ---- what each look must show ------------------------------------------------------------------------------------
def test_nothing_scrolls_sideways(lab):
    assert lab["scrollers"] == [], (f"horizontal scrolling in or around the panel (scrollWidth > clientWidth): "
                                    f"{lab['scrollers']}; see {lab['screenshot']}")


def test_every_control_inside_the_panel_and_the_window(lab):
    panel, right_edge = lab["panel"], lab["viewportWidth"]
    names = [c["name"] for c in lab["controls"]]
    assert "Run" in names, f"no Run button among the controls {names}"
    outside = [c for c in lab["controls"]
               if c["left"] < max(panel["left"], 0) - 1 or c["right"] > min(panel["right"], right_edge) + 1
               or c["clippedBy"]]
    assert outside == [], (f"controls not fully visible (panel spans {panel['left']:.0f}–{panel['right']:.0f} px, "
                           f"window 0–{right_edge} px): {outside}; see {lab['screenshot']}")


def test_no_control_has_its_words_cut(lab):
    cut = {c["name"]: c["cut"] for c in lab["controls"] if c["cut"]}
    assert cut == {}, f"labels or buttons narrower than their words (ellipsized): {cut}; see {lab['screenshot']}"


def axis_text_points() -> float:
    """The chart's smallest axis text in points, as labkit.report.charts declares it (ticks and axis labels)."""
    from labkit.report import charts
    sizes = {name: getattr(charts, name, None) for name in ("TICK_PT", "LABEL_PT")}
    if None in sizes.values():
        pytest.fail("labkit.report.charts declares no axis font sizes (TICK_PT, LABEL_PT), so the axis text on "
                    "screen cannot be worked out")
    return min(sizes.values())


def test_chart_tall_enough_with_readable_axis_text(lab):
    chart, png = lab["chart"], lab["png"]
    assert chart is not None, f"no chart image shown (.labkit-chart); see {lab['screenshot']}"
    assert chart["height"] >= MIN_CHART_PX, (f"chart {chart['height']:.0f} px tall on screen, under "
                                             f"{MIN_CHART_PX} px; see {lab['screenshot']}")
    assert png and png.get("dpi"), f"the chart's PNG gives no dpi: {png}"
    assert png["width"] == chart["naturalWidth"], (png, chart)
    # axis text on screen = points × (PNG pixels per point) × (screen pixels per PNG pixel)
    points = axis_text_points()
    on_screen = points * png["dpi"] / 72 * chart["width"] / chart["naturalWidth"]
    assert on_screen >= MIN_AXIS_TEXT_PX, (
        f"axis text {on_screen:.1f} px on screen = {points} pt × {png['dpi']:.0f} dpi / 72 × "
        f"{chart['width']:.0f} / {chart['naturalWidth']} px; see {lab['screenshot']}")


def test_every_table_row_on_one_line(lab):
    assert lab["rows"], f"no result table (.labkit-table table.labkit-table-el); see {lab['screenshot']}"
    wrapped = [(r["name"], r["lines"]) for r in lab["rows"] if r["lines"] != 1]
    assert wrapped == [], f"table rows taking more than one line (row, lines): {wrapped}; see {lab['screenshot']}"


# a measured change as the delta line writes it: "+46%", "−81%", "±0%", "n/a", "not measured", "3.98×"
CHANGE = r"(?:[+\-−±]\d[\d.,]*\s?%|n/a|not measured|\d[\d.]*×)"


def delta_quantities(line: str) -> list[str]:
    """The quantities a delta line names: 'Δ vs run 2: checkpointing on: saved activations −81% (theory −83%),
    step time +46% (theory +50%)' → ['saved activations', 'step time']."""
    body = re.sub(r"\[[^\]]*\]", " ", re.sub(r"\([^()]*\)", " ", line))     # no "(theory …)", no "[labels]"
    return [m.group(1).strip() for m in re.finditer(rf"([A-Za-z][A-Za-z \-]*?)\s+{CHANGE}", body)]


def test_delta_parsing():
    line = ("Δ vs run 2 (the previous live run): checkpointing on, micro-batch 2 → 4: saved activations −81% "
            "(theory −83%), peak allocated not measured (theory +3%), step time +46% (theory +50%) "
            "[cpu · shape-only]")
    assert delta_quantities(line) == ["saved activations", "peak allocated", "step time"]


def test_delta_line_names_rows_of_the_table(lab):
    assert lab["delta"], f"no delta line (.labkit-delta); see {lab['screenshot']}"
    named = delta_quantities(lab["delta"])
    assert named, f"the delta line names no quantity: {lab['delta']!r}"
    rows = {r["name"].strip().lower() for r in lab["rows"] or []}
    unknown = [q for q in named if q.lower() not in rows]
    assert unknown == [], (f"the delta line names {unknown}, which the table does not (its rows: "
                           f"{sorted(rows)}); delta: {lab['delta']!r}")


def test_no_cell_printed_to_stderr(lab):
    assert lab["stderr"] == [], f"stderr output in the notebook: {lab['stderr']}"


# ---- Notebook 7 --------------------------------------------------------------------------------------------------
def test_panel_shows_in_notebook_7(jupyter_server, chromium):
    """The same lesson opened in Notebook 7 (/notebooks/…): the panel's cell run, the panel and its Run button in
    view. A copy of the lesson, so this kernel is not the JupyterLab one."""
    copy = jupyter_server.root / "notebook7" / "00_start_here.ipynb"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(REPO / LESSON, copy)
    chromium.switch_to.new_window("tab")
    page = Page(chromium)
    width, height = SIZES[-1]
    page.set_viewport(width, height)
    chromium.get(jupyter_server.url("notebooks/notebook7/00_start_here.ipynb"))
    page.wait_notebook_ready(code_cells(copy))
    page.run_cell_containing("lab(")
    shown = ("const e = document.querySelector(arguments[0]); if (!e) return null;"
             "const r = e.getBoundingClientRect(); return [r.left, r.right, r.width, r.height];")
    page.wait(PANEL_RUN_S, lambda: (page.js(shown, ".labkit-lab .labkit-run") or [0, 0, 0, 0])[3] > 0,
              "the panel and its Run button to show in Notebook 7")
    page.js("document.querySelector('.labkit-lab').scrollIntoView({block: 'start'});")
    panel, run = page.js(shown, ".labkit-lab"), page.js(shown, ".labkit-lab .labkit-run")
    page.screenshot(SHOTS / f"notebook7-{width}x{height}.png", width, height)
    assert panel[2] > 0 and panel[3] > 0, f"the panel has no size in Notebook 7: {panel}"
    assert 0 <= run[0] and run[1] <= width, f"Run button outside the window (0–{width} px): {run}"
