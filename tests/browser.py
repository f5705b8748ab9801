"""Headless Chromium for tests, driven over its DevTools protocol (CDP) with a small websocket
client on the standard library (the venv has no websocket package, and the protocol needs only
text frames): load a page, collect its console errors and the network requests it makes, evaluate
JavaScript in it, take a screenshot.

    with Browser(tmp_path / "profile") as browser:
        page = browser.load(Path("report.html"))   # Page: errors, requests
        browser.evaluate("document.title")
        browser.screenshot(tmp_path / "report.png")

Chromium is Debian's `chromium` (`make browser` installs it); as root it needs --no-sandbox. Every
host name resolves to nothing, so a page that needs the network shows it as errors and requests.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


def chromium() -> str | None:
    """The chromium executable on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class WebSocket:
    """A client websocket (RFC 6455) over a plain TCP socket: text frames out (masked, as a
    client must), whole messages in (fragments joined, pings ignored)."""

    def __init__(self, url: str, timeout: float = 30):
        host, port, path = re.match(r"ws://([^:/]+):(\d+)(/.*)", url).groups()
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        size = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16
                                                  else bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x81]) + size + mask + masked)

    def _exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("websocket closed by the browser")
            out += chunk
        return bytes(out)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            n = second & 0x7F
            n = struct.unpack(">H", self._exactly(2))[0] if n == 126 else (
                struct.unpack(">Q", self._exactly(8))[0] if n == 127 else n)
            payload, opcode = self._exactly(n), first & 0x0F
            if opcode == 8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0, 1):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Page:
    """What a loaded page did: console errors and uncaught exceptions (one line each), and the
    URLs it requested other than file: and data: ones."""
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium with one tab, a fresh profile in `profile`; close() (or the `with`
    block's end) ends it and every process it started."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 2400, timeout: float = 30):
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"   # a file, not a pipe: a full pipe would stall chromium
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "about:blank"], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.timeout, self.next_id, self.page, self.ws = timeout, 0, Page(), None
        try:
            port = self._devtools_port()
            targets = json.loads(_http_get(port, "/json/list"))
            tab = next(t for t in targets if t["type"] == "page")
            self.ws = WebSocket(tab["webSocketDebuggerUrl"], timeout)
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            # the page's viewport exactly width x height (the window's frame would take some)
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """The port from Chromium's 'DevTools listening on ws://127.0.0.1:PORT/...' line."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", self.log.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port (see {self.log})")

    def call(self, method: str, **params) -> dict:
        """Send one CDP command and return its result, noting the events that arrive meanwhile."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._note(message.get("method"), message.get("params", {}))

    def _note(self, event: str | None, p: dict) -> None:
        if event == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.page.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in p["args"]))
        elif event == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            self.page.errors.append("exception: " + details.get("exception", {}).get(
                "description", details.get("text", "")))
        elif event == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.page.errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
        elif event == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:")):
                self.page.requests.append(url)
        elif event == "Page.loadEventFired":
            self.loaded = True

    def load(self, path: Path) -> Page:
        """Open the file and wait for its load event; returns the page's errors and requests so
        far (the Page keeps filling while later calls run)."""
        self.page, self.loaded = Page(), False
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while not self.loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not load within {self.timeout} s")
            message = json.loads(self.ws.receive())
            self._note(message.get("method"), message.get("params", {}))
        return self.page

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True,
                           timeout=self.timeout * 1000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """The visible window (its --window-size) as a PNG at `path`."""
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        """Ask chromium to quit, then kill what is left of the process group it was started in."""
        if self.ws is not None:
            try:
                self.call("Browser.close")
            except (OSError, RuntimeError):
                pass   # it closes the connection as it quits
            self.ws.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)   # the group start_new_session made: chromium's
        except ProcessLookupError:
            pass
        self.process.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _http_get(port: int, path: str) -> str:
    """GET from chromium's DevTools HTTP endpoint (directly: no proxy from the environment)."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()
