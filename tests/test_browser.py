"""A real browser: JupyterLab on 127.0.0.1, the report notebook in headless Chromium (Playwright).

The test starts JupyterLab (free port, token, ``--no-browser``) on a temporary root holding a copy of
``notebooks/90_p100_report.ipynb`` (its parameters pointed at a small run folder made here) and a small
review notebook, with the workbook's kernel spec (``python -m lekutils kernelspec``) installed into a
temporary Jupyter path. In Chromium it runs all cells of the report, changes the explorer's condition
and probe dropdowns and checks that the response pane follows (planted markup stays text); then it
clicks Reject and Accept in the review panel and checks both decisions land in the review file.

Needs Playwright's Python package and the OS Chromium (``.ci/run`` installs both; never ``playwright
install``): skipped with the reason where either is missing. Screenshots go to ``$LEK_SCREENSHOTS``
(default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from lekutils.scoring import score

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("LEK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KERNEL = "lekutils"
MODEL = "embedded:smollm2-135m-instruct"  # display name SmolLM2-135M in params/models.yaml
PLANTED = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'
RESPONSES = {  # probe -> condition -> response (distinct per condition, so the pane visibly changes)
    "E01": {"baseline": "Baseline answer one: consent matters.", "json": "JSON-kernel answer one: however, "
            "the tension is real and both sides deserve a hearing."},
    "E02": {"baseline": "Baseline answer two.", "json": "JSON-kernel answer two, with care and dignity."},
    "E03": {"baseline": "Baseline answer three " + PLANTED, "json": "JSON-kernel answer three " + PLANTED},
}
READY_S, CELL_S = 60, 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ab_file(path: Path) -> None:
    """A small A/B result file in the workbook's own record shape (v2 scores stored)."""
    lines = []
    for pid, conds in RESPONSES.items():
        out = {}
        for cond, text in conds.items():
            h = score(text)
            out[cond] = {"response": text, "lek_score": h["lek_score"], "heuristic": h, "chars": len(text),
                         "condition": cond}
        lines.append({"type": "probe", "id": pid, "category": "consent" if pid != "E02" else "privacy",
                      "prompt": f"Prompt of {pid}?", "conditions": out, "scorer": "v2", "model": MODEL,
                      "adapter": None, "probe_set": "eval"})
    lines.append({"type": "summary", "model": MODEL, "probe_set": "eval", "scorer": "v2"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def _report_copy(repo_root: Path, root: Path, run: Path) -> Path:
    """The shipped report notebook with its parameters pointed at the small run (an injected cell after
    the parameters cell, as Papermill does)."""
    nb = nbformat.read(repo_root / "notebooks" / "90_p100_report.ipynb", as_version=4)
    params = {"run_dir": str(run), "results": [str(run / "ab" / "*.jsonl")], "gates": [],
              "models_table": str(repo_root / "params" / "models.yaml"), "figures_dir": str(root / "figures"),
              "n_boot": 200, "dpi": 60, "interactive": "auto"}
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "LEK workbook (test)", "language": "python"}
    out = root / "90_p100_report.ipynb"
    nbformat.write(nb, str(out))
    return out


def _review_notebook(root: Path, review_file: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Review panel (browser test)"), nbformat.v4.new_code_cell(
        "from lekutils.report.review import ReviewPanel\nfrom lekutils.tasks.extract import Example\n"
        "examples = [Example(probe_id=f'AX0{i}', sample_idx=0, category='consent', prompt=f'Prompt {i}?',\n"
        "                    response=f'Answer {i} <b>not bold</b>', lek_score=20.0 + i, group=f'AX0{i}')\n"
        "            for i in range(3)]\n"
        f"panel = ReviewPanel(examples, {str(review_file)!r}, reviewer='browser-test')\npanel.widget")]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "LEK workbook (test)", "language": "python"}
    out = root / "review.ipynb"
    nbformat.write(nb, str(out))
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, repo_root: Path):
    """JupyterLab on 127.0.0.1 over a temporary root; yields (base URL, token, root); stopped at the end."""
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                        "(pip install playwright; .ci/run installs it)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    from lekutils.runner.execute import install_kernelspec

    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    run = root / "runs" / "toy"
    _ab_file(run / "ab" / "ab-eval-smollm2.jsonl")
    _report_copy(repo_root, root, run)
    _review_notebook(root, root / "review.jsonl")
    spec_dir = install_kernelspec(KERNEL, prefix=str(tmp / "kernels"))  # the workbook's kernel spec
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_PATH": str(tmp / "kernels" / "share" / "jupyter"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython"),
           "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = (tmp / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp / 'settings'}",
         f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.terminals_enabled=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{(tmp / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab not ready in {READY_S}s:\n{(tmp / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "log": tmp / "lab.log", "kernels": spec_dir,
               "shots": Path(os.environ.get("LEK_SCREENSHOTS", tmp))}
    finally:
        try:  # a clean shutdown stops the kernels too; then make sure of the whole process group
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5).close()
            proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture()
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(CELL_S * 1000)
            yield pg
        finally:
            browser.close()


def _open_and_run_all(page, lab, notebook: str) -> None:
    workspace = Path(notebook).stem.replace("_", "-")  # one fresh workspace per notebook: no restored tabs
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={lab['token']}")
    page.wait_for_function(f"() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           f"&& window.jupyterapp.shell.currentWidget.context "
                           f"&& window.jupyterapp.shell.currentWidget.context.path === {json.dumps(notebook)} "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                           timeout=READY_S * 1000)
    kernel = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
    assert kernel == KERNEL, f"the notebook runs on kernel spec {kernel!r}, not the workbook's"
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


ERRORS_JS = """() => { const m = window.jupyterapp.shell.currentWidget.content.model, out = [];
  for (let i = 0; i < m.cells.length; i++) { const c = m.cells.get(i);
    if (c.type === 'code') for (const o of c.outputs.toJSON())
      if (o.output_type === 'error') out.push(`cell ${i}: ${o.ename}: ${o.evalue}`); }
  return out; }"""


def _wait_for_widget(page, locator, shots: Path) -> None:
    """Wait until ``locator`` shows; fail at once with the error where a cell raised (screenshot kept)."""
    deadline = time.monotonic() + CELL_S
    while not locator.first.is_visible():
        errors = page.evaluate(ERRORS_JS)
        late = time.monotonic() > deadline
        if errors or late:
            page.screenshot(path=str(shots / "lab-failure.png"))
        assert errors == [], errors
        assert not late, f"no widget after {CELL_S}s (screenshot: {shots / 'lab-failure.png'})"
        time.sleep(0.5)


def _response_text(page) -> str:
    """The explorer's response (the pane's top-level <pre>; the prompt sits in a closed <details>)."""
    return page.locator(".jp-OutputArea-output .widget-html-content > pre").first.inner_text()


def test_report_explorer_in_jupyterlab(page, lab) -> None:
    t0 = time.monotonic()
    _open_and_run_all(page, lab, "90_p100_report.ipynb")
    condition = page.locator(".widget-dropdown:has(label:text-is('condition')) select")
    _wait_for_widget(page, condition, lab["shots"])
    page.locator(".jp-OutputArea-output .widget-html-content > pre").first.wait_for()
    before = _response_text(page)
    assert "Baseline answer" in before
    page.screenshot(path=str(lab["shots"] / "lab-explorer-baseline.png"))
    condition.select_option(label="json")
    page.wait_for_function("() => [...document.querySelectorAll('.widget-html-content pre')]"
                           ".some(e => e.textContent.includes('JSON-kernel answer'))", timeout=20_000)
    after = _response_text(page)
    assert "JSON-kernel answer" in after and after != before
    probe = page.locator(".widget-dropdown:has(label:text-is('probe')) select")
    value = next(v for v in probe.locator("option").all_inner_texts() if v.startswith("E03"))
    probe.select_option(label=value)
    page.wait_for_function("() => [...document.querySelectorAll('.widget-html-content pre')]"
                           ".some(e => e.textContent.includes('JSON-kernel answer three'))", timeout=20_000)
    assert '<img src=x onerror="window.__pwned=1">' in _response_text(page)  # shown as text ...
    assert page.evaluate("() => window.__pwned") is None  # ... never run
    page.locator(".widget-dropdown:has(label:text-is('condition'))").scroll_into_view_if_needed()
    page.screenshot(path=str(lab["shots"] / "lab-explorer-json.png"))
    elapsed = time.monotonic() - t0
    assert elapsed < 90, f"report notebook in the browser took {elapsed:.0f}s"
    # figures inline in Lab (issue 14): the kernel spec sets no MPLBACKEND, lekutils.notebook.setup() is inline
    spec = json.loads((lab["kernels"] / "kernel.json").read_text())
    assert spec.get("env", {}).get("MPLBACKEND") is None
    figs = page.locator(".jp-OutputArea-output img")
    assert figs.count() >= 5, f"{figs.count()} inline figure image(s) in the report"
    figs.nth(1).screenshot(path=str(lab["shots"] / "lab-inline-figure.png"))


def test_review_panel_writes_decisions(page, lab) -> None:
    review_file = Path(lab["root"]) / "review.jsonl"
    _open_and_run_all(page, lab, "review.ipynb")
    reject = page.get_by_role("button", name="Reject")
    _wait_for_widget(page, reject, lab["shots"])
    assert page.locator(".widget-html-content pre").first.inner_text().startswith("Prompt 0?")
    page.locator(".widget-textarea textarea").fill("off-topic (browser test)")
    page.locator(".widget-textarea textarea").press("Tab")  # commit the note before the click
    reject.click()
    page.wait_for_function("() => document.body.innerText.includes('AX01')", timeout=20_000)
    page.get_by_role("button", name="Accept").click()
    page.wait_for_function("() => document.body.innerText.includes('2 of 3 reviewed')", timeout=20_000)
    page.screenshot(path=str(lab["shots"] / "lab-review.png"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        recs = [json.loads(x) for x in review_file.read_text().splitlines()] if review_file.exists() else []
        if len(recs) >= 2:
            break
        time.sleep(0.3)
    got = [(r["probe_id"], r["decision"], r["note"], r["reviewer"]) for r in recs]
    assert got == [("AX00", "reject", "off-topic (browser test)", "browser-test"),
                   ("AX01", "accept", "", "browser-test")]
