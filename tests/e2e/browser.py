"""Headless Debian Chromium for the browser checks: the plain CLI, and chromedriver for logged-in pages.

The CLI (``--dump-dom``, ``--screenshot``) needs nothing else but cannot carry a login. The Airflow
UI (SimpleAuthManager) reads its JWT from the ``_token`` cookie, which its own login page sets from
``POST /auth/token``; so for Airflow the page is opened through chromedriver (Debian's
chromium-driver, installed with chromium by ``make test-deps``), spoken to over its W3C WebDriver
HTTP API with the standard library: open the origin, add the cookie, open the page, wait until its
text shows what we look for, screenshot.
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]
# The CLI has no "wait until"; a virtual-time budget lets the React apps finish their API calls.
CLI_FLAGS = [*CHROMIUM_FLAGS, "--virtual-time-budget=20000"]
# Words an error page or an error boundary of the two UIs shows.
ERROR_MARKERS = ("Something went wrong", "Internal Server Error", "Traceback (most recent call last)",
                 "Unexpected Application Error", "Page Not Found", "Dag Not Found", "404 Not Found", "Error 500",
                 "RESOURCE_DOES_NOT_EXIST", "Unauthorized", "Forbidden")


def chromium_binary() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(found).exists(), "chromium missing: `make test-deps` installs it (scripts/system_deps.sh chromium)"
    return found


def chromium(workdir: Path, *args) -> subprocess.CompletedProcess:
    """One run of the Chromium CLI with a fresh profile under ``workdir``."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
    return subprocess.run([chromium_binary(), *CLI_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def page_errors(text: str) -> list[str]:
    return [m for m in ERROR_MARKERS if m in text]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One chromedriver and one headless Chromium session; a context manager that stops both."""

    def __init__(self, workdir: Path):
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        assert Path(driver).exists(), "chromedriver missing: `make test-deps` installs chromium-driver"
        self.port = _free_port()
        self.log = Path(workdir) / "chromedriver.log"
        self.proc = subprocess.Popen([driver, f"--port={self.port}", "--allowed-ips=127.0.0.1",
                                      f"--log-path={self.log}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        self.session = None
        try:
            self._wait(lambda: self._call("GET", "/status").get("ready"), 30, "chromedriver ready")
            profile = tempfile.mkdtemp(prefix="profile-", dir=workdir)
            caps = {"browserName": "chrome", "goog:chromeOptions": {
                "binary": chromium_binary(), "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}}
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}").get("value") or {}
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {err.code} {err.read()[:2000]!r}") from err
        except (urllib.error.URLError, ConnectionError):
            if path == "/status":
                return {}
            raise

    @staticmethod
    def _wait(condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f}s for {what}")
            time.sleep(0.25)

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def open(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def add_cookie(self, name: str, value: str, path: str = "/") -> None:
        """A cookie for the origin of the page open now (WebDriver sets cookies only there)."""
        self._call("POST", self._s("/cookie"), {"cookie": {"name": name, "value": value, "path": path}})

    def text(self) -> str:
        return self._call("POST", self._s("/execute/sync"),
                          {"script": "return document.body ? document.body.innerText : ''", "args": []}) or ""

    def html(self) -> str:
        return self._call("GET", self._s("/source")) or ""

    def wait_for_text(self, needles: list[str], timeout: float = 60) -> str:
        """The page text once it holds every needle (or shows an error); fails with what it showed."""
        last = {"text": ""}

        def ready():
            last["text"] = self.text()
            return all(n in last["text"] for n in needles) or bool(page_errors(last["text"]))

        try:
            self._wait(ready, timeout, f"{needles} on the page")
        except TimeoutError as err:
            raise AssertionError(f"{err}; the page showed:\n{last['text'][:3000]}") from None
        return last["text"]

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))
        return path

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", self._s(""))
            except Exception:  # the browser is gone already; the driver is stopped below anyway
                pass
            self.session = None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def airflow_login(browser: Browser, airflow_url: str, token: str) -> None:
    """Log in as the UI's own login page does: the JWT from POST /auth/token in the `_token` cookie."""
    browser.open(f"{airflow_url.rstrip('/')}/api/v2/version")  # any page of the origin
    browser.add_cookie("_token", token)


def shoot(browser: Browser, url: str, needles: list[str], name: str, timeout: float = 90) -> str:
    """Open ``url``, wait for ``needles``, keep a screenshot as tests/artifacts/<name>.png; return the text.

    Fails when the page shows an error marker or the needles never appear.
    """
    browser.open(url)
    text = browser.wait_for_text(needles, timeout)
    shot = browser.screenshot(ARTIFACTS / f"{name}.png")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000, shot
    errors = page_errors(text)
    assert not errors, f"{url} shows {errors}:\n{text[:3000]}"
    missing = [n for n in needles if n not in text]
    assert not missing, f"{url} lacks {missing}:\n{text[:3000]}"
    return text
