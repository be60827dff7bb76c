"""A JupyterLab server and a headless Chromium for the browser tests of the lab panel.

`browser_tools_missing()` says why these tests cannot run here (None when they can). `JupyterServer` starts
`jupyter lab` from this Python (so its kernel is this virtual environment's) on a free local port, with a token,
in a throwaway folder holding a copy of the lessons; `stop()` ends it. `Page` drives one browser tab: the viewport
size, the kernel's state, "Run All Cells", clicks, and screenshots. `PANEL_FACTS_JS` measures the lab panel in the
page and returns plain numbers and strings, which the tests then judge.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PYTHON_PACKAGES = ("selenium", "jupyterlab", "notebook")     # the `browser` extra: pip install -e ".[browser]"

# Patience, not timing: a wait ends as soon as its condition holds. Lesson 00 runs in about 30 s on an idle CPU;
# a busy machine can take ten times that.
SERVER_START_S = 180
KERNEL_START_S = 300
LESSON_S = 1200
PANEL_RUN_S = 600
LAYOUT_S = 30


def browser_tools_missing() -> str | None:
    """Why the browser tests cannot run here, in a few words; None when Chromium, its driver and the Python
    packages are all present."""
    missing = []
    if chromium_path() is None:
        missing.append("chromium")
    if shutil.which("chromedriver") is None:
        missing.append("chromedriver")
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install chromium chromium-driver)"
    absent = [name for name in PYTHON_PACKAGES if importlib.util.find_spec(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (pip install -e '.[browser]')"
    return None


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the server ------------------------------------------------------------------------------------------------------
# JupyterLab settings for a quiet, predictable page: no "get Jupyter news?" toast over the panel, and every cell kept
# in the page (no windowing), so the stderr check sees every output.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterServer:
    """`jupyter lab` on 127.0.0.1:<free port> serving `root` (a temporary folder with a copy of notebooks/)."""

    def __init__(self):
        self.home = Path(tempfile.mkdtemp(prefix="labkit-browser-"))
        self.root = self.home / "root"
        shutil.copytree(REPO / "notebooks", self.root / "notebooks")
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.log_path = self.home / "server.log"
        self.process: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def start(self):
        for name, values in SETTINGS.items():
            path = self.home / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   JUPYTER_CONFIG_DIR=str(self.home / "config"), JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(self.home / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.home / "workspaces"),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--allow-root"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                why = f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}"
                self.stop()
                raise RuntimeError(why)
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=5).read()
                return self
            except OSError:
                time.sleep(0.5)   # polling the port, not a test of timing
        why = f"jupyter lab did not answer within {SERVER_START_S} s:\n{self.log_tail()}"
        self.stop()
        raise RuntimeError(why)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()          # jupyter shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


# ---- the browser -----------------------------------------------------------------------------------------------------
def start_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


class Page:
    """One browser tab on a notebook, JupyterLab or Notebook 7 (they share the notebook's CSS classes)."""

    def __init__(self, driver):
        self.driver = driver

    def wait(self, seconds, condition, what: str):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.5).until(lambda d: condition())
        except TimeoutException:
            raise AssertionError(f"waited {seconds} s for {what}; kernel {self.kernel_status()!r}, "
                                 f"prompts {self.prompts()}, dialog {self.dialog()!r}") from None

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # -- the viewport --------------------------------------------------------------------------------------------------
    def set_viewport(self, width: int, height: int):
        """Exactly width × height CSS pixels of page (no browser frame), then wait until the layout has settled:
        the panel's (or else the body's) box the same on two looks in a row."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        seen = []

        def settled():
            box = self.js("const e = document.querySelector('.labkit-lab') || document.body;"
                          "const r = e.getBoundingClientRect();"
                          "return [window.innerWidth, window.innerHeight, r.left, r.width, r.height];")
            seen.append(box)
            return box[:2] == [width, height] and len(seen) > 1 and seen[-2] == box

        self.wait(LAYOUT_S, settled, f"the page to settle at {width}×{height}")

    def screenshot(self, path: Path, width: int, height: int):
        """The page at `width` with the whole panel in view: the viewport is made tall enough for it (same
        width, so the same layout), the panel scrolled to the top, then back to width × height."""
        tall = self.js("const e = document.querySelector('.labkit-lab');"
                       "if (!e) return 0; e.scrollIntoView({block: 'start'});"
                       "return Math.ceil(e.getBoundingClientRect().height);")
        if tall + 200 > height:
            self.set_viewport(width, tall + 200)
            self.js("const e = document.querySelector('.labkit-lab'); if (e) e.scrollIntoView({block: 'start'});")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        if tall + 200 > height:
            self.set_viewport(width, height)

    # -- the notebook --------------------------------------------------------------------------------------------------
    def kernel_status(self) -> str | None:
        """'idle', 'busy', 'starting', 'unknown'…, from the notebook toolbar's kernel indicator."""
        return self.js("const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
                       "return e ? e.getAttribute('data-status') : null;")

    def prompts(self) -> list[str]:
        """The input prompt of every code cell: '[ ]:' not run, '[*]:' running or queued, '[7]:' done."""
        return self.js("return Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))"
                       ".map(e => e.textContent.trim());")

    def wait_notebook_ready(self, code_cells: int):
        """Every code cell shown and the kernel idle on three looks in a row: a kernel that has only just started
        reads "idle" for a moment before its connection settles, and cells run then are dropped."""
        looks = []

        def ready():
            prompts = self.prompts()
            looks.append(len(prompts) == code_cells and all(re.fullmatch(r"\[.*\]:", p) for p in prompts)
                         and self.kernel_status() == "idle" and not self.dialog())
            return looks[-3:] == [True] * 3

        self.wait(KERNEL_START_S, ready, f"the notebook's {code_cells} code cells and an idle kernel")

    def run_all_cells(self, code_cells: int):
        """Run → Run All Cells, through the menu bar as a person would. Returns when every code cell has run;
        AssertionError with the notebook's errors when one failed (the cells after it do not run)."""
        for attempt in range(3):
            self.wait_notebook_ready(code_cells)
            before = self.prompts()
            self._choose_run_all()
            self.wait(60, lambda: self.prompts() != before, "the cells to be queued")
            # done: nothing queued or running ("[*]:"), and the kernel idle
            self.wait(LESSON_S, lambda: "[*]:" not in self.prompts() and self.kernel_status() == "idle",
                      "every code cell to run")
            not_run = [i for i, p in enumerate(self.prompts()) if not re.fullmatch(r"\[\d+\]:", p)]
            if not not_run:
                return
            errors = self.stderr_outputs()
            assert not errors, f"code cells {not_run} did not run (prompts {self.prompts()}); errors: {errors}"
            # no error and nothing ran: the run was dropped (the kernel's connection changed under it); again
        raise AssertionError(f"Run All Cells ran nothing, three times (prompts {self.prompts()})")

    def _choose_run_all(self):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.js("document.querySelector('.jp-Notebook .jp-Cell').click();")     # the notebook becomes current
        item_css = ".lm-Menu-item[data-command='runmenu:run-all']"

        def chosen():
            """Run → Run All Cells once the item is enabled (it is not until the notebook is the current one)."""
            assert not self.dialog(), f"a dialog is in the way: {self.dialog()!r}"
            if not self.driver.find_elements(By.CSS_SELECTOR, item_css):
                next(e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                     if e.text == "Run").click()
            items = self.driver.find_elements(By.CSS_SELECTOR, item_css)
            if not items:
                return False
            if "lm-mod-disabled" in items[0].get_attribute("class"):
                ActionChains(self.driver).send_keys(Keys.ESCAPE).perform()
                return False
            items[0].click()
            return True

        self.wait(60, chosen, "Run → Run All Cells to be enabled")

    def dialog(self) -> str | None:
        """The text of an open JupyterLab dialog (select a kernel, a server error…), None when there is none."""
        return self.js("const d = document.querySelector('.jp-Dialog');"
                       "return d ? d.innerText.replace(/\\s+/g, ' ').slice(0, 300) : null;")

    def stderr_outputs(self) -> list[str]:
        """The text of every stderr output (warnings, tracebacks) in the notebook, 300 characters each."""
        return self.js("return Array.from(document.querySelectorAll("
                       "'.jp-RenderedText[data-mime-type=\"application/vnd.jupyter.stderr\"]'))"
                       ".map(e => e.textContent.slice(0, 300));")

    def run_cell_containing(self, text: str):
        """Select the code cell whose source contains `text` and press Shift+Enter."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        prompt = self.js("const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'));"
                         "const cell = cells.find(c => c.querySelector('.jp-InputArea-editor')"
                         "  .textContent.includes(arguments[0]));"
                         "if (!cell) return null; cell.scrollIntoView({block: 'center'});"
                         "return cell.querySelector('.jp-InputPrompt');", text)
        assert prompt is not None, f"no code cell contains {text!r}"
        prompt.click()
        ActionChains(self.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


# ---- measuring the panel ---------------------------------------------------------------------------------------------
# One look at the lab panel (the first `.labkit-lab` in the page). Every number is CSS pixels as rendered.
PANEL_FACTS_JS = r"""
const root = document.querySelector('.labkit-lab');
if (!root) return null;
const box = e => { const r = e.getBoundingClientRect();
                   return {left: r.left, right: r.right, top: r.top, width: r.width, height: r.height}; };
const shown = e => { const r = e.getBoundingClientRect();
                     return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; };
const name = e => (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\s+/)
                   .filter(c => /^(labkit|widget|jp-|jupyter-button)/.test(c)).join('.') : e.tagName);
const text = e => (e.innerText || e.textContent || '').replace(/\s+/g, ' ').trim();
const viewportWidth = document.documentElement.clientWidth;
const panel = box(root);

// Horizontal scrolling: the panel itself, any scroller inside it, and the output area and notebook around it.
const around = [];
for (let a = root.parentElement; a && a !== document.body; a = a.parentElement) {
  around.push(a);
  if (a.classList.contains('jp-NotebookPanel') || a.classList.contains('jp-Notebook')) break;
}
const scrollers = [];
for (const e of [root, ...root.querySelectorAll('*'), ...around]) {
  if (['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON', 'OPTION'].includes(e.tagName) || !shown(e)) continue;
  const ox = getComputedStyle(e).overflowX;
  const scrolls = e === root || ox === 'auto' || ox === 'scroll';
  if (!scrolls || e.scrollWidth <= e.clientWidth + 1) continue;
  // what sticks out: the outermost elements inside whose right edge passes this one's
  const edge = e.getBoundingClientRect().left + e.clientWidth + 1;
  const out = Array.from(e.querySelectorAll('*')).filter(c => c.getBoundingClientRect().right > edge
    && !(c.parentElement !== e && c.parentElement.getBoundingClientRect().right > edge));
  scrollers.push({what: name(e), scrollWidth: e.scrollWidth, clientWidth: e.clientWidth,
                  wider: out.slice(0, 5).map(c => name(c) + ' "' + text(c).slice(0, 40) + '"')});
}

// Controls: every labelled input (checkbox, dropdown, slider, text box, progress) and every button.
const controls = [];
for (const e of root.querySelectorAll('.widget-inline-hbox:not(.widget-html), .jupyter-button')) {
  if (!shown(e)) continue;
  const r = box(e);
  const label = e.querySelector('.widget-label, .widget-label-basic');
  const who = text(label && getComputedStyle(label).display !== 'none' ? label : e) || name(e);
  const clippedBy = [];
  for (let a = e.parentElement; a && a !== root.parentElement; a = a.parentElement) {
    if (getComputedStyle(a).overflowX === 'visible') continue;
    const ar = box(a);
    if (r.left < ar.left - 1 || r.right > ar.right + 1) clippedBy.push(name(a));
  }
  // text cut short inside the control: a label or button narrower than its words (ipywidgets ellipsize)
  const cut = [e, ...e.querySelectorAll('.widget-label, .widget-label-basic span')]
    .filter(t => shown(t) && getComputedStyle(t).display !== 'none' && t.scrollWidth > t.clientWidth + 1
                 && (t.tagName === 'BUTTON' || t !== e))
    .map(t => text(t));
  controls.push({name: who, left: r.left, right: r.right, width: r.width, clippedBy, cut});
}

// The chart: an <img> that is, or is inside, .labkit-chart.
const img = root.querySelector('img.labkit-chart, .labkit-chart img');
const chart = img && shown(img) ? {width: img.getBoundingClientRect().width, height: img.getBoundingClientRect().height,
                                   naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                                   src: img.currentSrc || img.src} : null;

// The result table: how many text lines each row takes (distinct line boxes over the text of its cells).
const lines = cell => {
  const tops = [];
  const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (!n.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(n);
    for (const r of range.getClientRects())
      if (r.width >= 1 && !tops.some(t => Math.abs(t - r.top) < r.height / 2)) tops.push(r.top);
  }
  return tops.length;
};
const tableEl = root.querySelector('.labkit-table table.labkit-table-el');
const rows = tableEl ? Array.from(tableEl.rows).filter(tr => tr.querySelector('td')).map(tr => ({
  name: text(tr.cells[0]), lines: Math.max(...Array.from(tr.cells).map(lines)),
  height: tr.getBoundingClientRect().height, text: text(tr)})) : null;

const delta = root.querySelector('.labkit-delta');
const messages = root.querySelector('.labkit-messages');
const stderr = Array.from(document.querySelectorAll(
  '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => text(e).slice(0, 300));
return {viewportWidth, panel, scrollers, controls, chart, rows,
        delta: delta ? text(delta) : null, messages: messages ? text(messages) : null, stderr};
"""

# The chart's PNG bytes as base64, whatever its src is (a data: URL or a blob: URL made by the widget).
PNG_BYTES_JS = r"""
const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(r => r.arrayBuffer()).then(buf => {
  let s = ''; const b = new Uint8Array(buf);
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  done(btoa(s));
}).catch(e => done('error: ' + e));
"""


# ---- the chart's PNG -------------------------------------------------------------------------------------------------
def png_chunks(data: bytes):
    """(type, payload) for each chunk of a PNG file."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        yield data[pos + 4:pos + 8].decode("latin-1"), data[pos + 8:pos + 8 + length]
        pos += 12 + length        # length, type, payload, CRC


def png_size_and_dpi(data: bytes) -> tuple[int, int, float | None]:
    """(width px, height px, dots per inch) of a PNG; dpi from its pHYs chunk (pixels per metre × 0.0254),
    None when it has none (matplotlib always writes one)."""
    width = height = dpi = None
    for kind, payload in png_chunks(data):
        if kind == "IHDR":
            width, height = int.from_bytes(payload[0:4], "big"), int.from_bytes(payload[4:8], "big")
        elif kind == "pHYs" and payload[8] == 1:          # unit 1: pixels per metre
            dpi = int.from_bytes(payload[0:4], "big") * 0.0254
    return width, height, dpi
