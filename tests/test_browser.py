"""The HTML report in a real browser: headless Debian chromium, driven through its DevTools
protocol over a pipe (--remote-debugging-pipe: JSON messages separated by NUL on fds 3 and 4), so
the test needs nothing beyond the standard library and the browser.

Without chromium the test is skipped with the reason, except in CI: .ci/run installs chromium and
sets BENCH_REQUIRE_BROWSER=1, and there a missing browser is a failure. The screenshot is kept in
tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.report.publish import write_reports
from tests.builders import sweep_store

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--remote-debugging-pipe"]


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe:
        return exe
    if os.environ.get("BENCH_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium is not installed, and BENCH_REQUIRE_BROWSER=1 (CI) requires the browser test to run: "
                    "apt-get install chromium")
    pytest.skip("chromium is not installed (apt-get install chromium); CI sets BENCH_REQUIRE_BROWSER=1 and fails "
                "instead of skipping")


class Chromium:
    """A headless chromium and one page, spoken to through the DevTools protocol on a pipe."""

    def __init__(self, exe: str, profile_dir: Path, timeout: float = 60.0):
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def wire_fds():  # in the child: its fd 3 reads our commands, its fd 4 carries its answers
            a, b = fcntl.fcntl(to_chrome, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     close_fds=False, preexec_fn=wire_fds)
        os.close(to_chrome)
        os.close(from_chrome)
        self.timeout, self.buf, self.next_id, self.events = timeout, b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit code {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str):
        for i, e in enumerate(self.events):
            if e.get("method") == event:
                return self.events.pop(i)
        while True:
            e = self._read()
            if e.get("method") == event:
                return e
            self.events.append(e)

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, width: int = 1400, height: int = 1000):
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        if self.call("Page.navigate", session=True, url=url).get("loaderId"):  # none: a same-document jump
            self.wait_for("Page.loadEventFired")

    def click(self, selector: str):
        """A real mouse click (pressed and released) at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                      f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def screenshot(self, path: Path, full_page: bool = False):
        r = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=full_page)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Chromium(chromium_or_skip(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report written the way a run writes it: a store, then bench.report.publish.write_reports."""
    root = tmp_path_factory.mktemp("results") / "quick"
    board = write_reports(sweep_store(root).store, root)
    return root / "index.html", board


def column(browser, col: str):
    return browser.js(f"""(() => {{
        const t = document.getElementById('leaderboard');
        const i = Array.from(t.tHead.rows[0].cells).findIndex(th => th.dataset.col === {json.dumps(col)});
        return Array.from(t.tBodies[0].rows, r => r.cells[i].getAttribute('data-v'));
    }})()""")


def test_report_in_chromium(browser, page):
    path, board = page
    browser.open(path.as_uri())
    assert browser.js("document.title") == "tempbench: quick"
    # one row per model of the leaderboard, in its order
    assert browser.js("document.querySelectorAll('#leaderboard tbody tr').length") == len(board)
    assert column(browser, "model") == list(pd.read_csv(path.parent / "leaderboard.csv").model)
    # every image is there and decoded
    images = browser.js("Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
    assert len(images) == len(list((path.parent / "plots").glob("*.png"))) > 5
    assert all(done and width > 0 for done, width, _ in images), [alt for d, w, alt in images if not (d and w)]
    # clicking a header sorts by it (numbers as numbers); clicking again reverses
    browser.click("#leaderboard th[data-col=clean]")
    clean = [float(v) for v in column(browser, "clean")]
    assert clean == sorted(clean) and clean != list(board.clean)
    assert browser.js("document.querySelector('#leaderboard th[data-col=clean]').getAttribute('aria-sort')") \
        == "ascending"
    browser.click("#leaderboard th[data-col=clean]")
    assert [float(v) for v in column(browser, "clean")] == sorted(clean, reverse=True)
    browser.click("#leaderboard th[data-col=model]")
    assert column(browser, "model") == sorted(board.model)
    # a masking verdict opens to its reasons
    browser.click("#leaderboard details.mask summary")
    assert browser.js("document.querySelector('#leaderboard details.mask').open") is True
    browser.js("window.scrollTo(0, 0)")
    browser.screenshot(ARTIFACTS / "report.png")
    browser.screenshot(ARTIFACTS / "report-full.png", full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_claims_in_chromium(browser, page):
    path, _ = page
    browser.open(path.as_uri() + "#claims")
    verdicts = browser.js("Array.from(document.querySelectorAll('#glance-table .v'), e => e.textContent)")
    assert len(verdicts) == 7
    from bench.report.claims import VERDICTS
    assert set(verdicts) <= set(VERDICTS)
    # the page does not ask the network for anything
    assert browser.js("performance.getEntriesByType('resource').filter(r => !r.name.startsWith('data:')).length") \
        == 0


def test_make_screenshot_draws_the_page_and_names_its_leaderboard(page, tmp_path):
    """scripts/report_screenshot.py (`make screenshot`, the README's picture): the page at
    1600x1200 with the sha256 of the leaderboard and of the page (less its generation time) in tEXt
    chunks; a folder without a page, or an output
    that is a folder, is one line and exit 2 with nothing written."""
    import hashlib
    import re
    import sys

    from PIL import Image
    chromium_or_skip()
    path, _ = page
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "report_screenshot.py")]
    out = tmp_path / "docs" / "report.png"
    done = subprocess.run([*script, str(path.parent), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    picture = Image.open(out)
    assert picture.size == (1600, 1200) and len(picture.convert("L").getcolors(256)) > 20  # drawn, not blank
    digest = hashlib.sha256((path.parent / "leaderboard.csv").read_bytes()).hexdigest()
    assert set(picture.text) == {"tempbench-leaderboard-sha256", "tempbench-page-sha256"}
    assert picture.text["tempbench-leaderboard-sha256"] == digest
    html = (path.parent / "index.html").read_text()
    assert "Generated 20" in html.replace("\n", " ")  # the time left out of the page's digest is there
    untimed = re.sub(r"Generated\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated", html)
    assert untimed != html and picture.text["tempbench-page-sha256"] == hashlib.sha256(untimed.encode()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.png"]  # no temp file left
    for args, phrase in [([str(tmp_path), str(tmp_path / "x.png")], "has no index.html"),
                         ([str(path.parent), str(tmp_path)], "is a folder")]:
        done = subprocess.run([*script, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and phrase in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "x.png").exists()
