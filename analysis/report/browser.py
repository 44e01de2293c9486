"""Headless Chromium driven over the DevTools protocol: open a page, run a script in it, screenshot it.

`chromium --headless --dump-dom` and `--screenshot` see a page as it loads; MLflow's UI only shows a
sweep's trials once its parent row is expanded, which takes a click. The protocol is a JSON
exchange on one WebSocket; the standard library's sockets are enough for it, so this needs no
browser-automation package. Used by the README's pictures (`analysis.report.readme_pictures`) and
the MLflow UI test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sweeps.commands.servers import stop

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    """The Chromium binary on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


# What the page shows, in short: per document (the page, and each frame it may read), a hash of its
# markup and how many of its images are decoded. null while a navigation is under way.
_STILL_SIGNATURE = """(() => {
  const hash = (text) => {
    let h = 0;
    for (let i = 0; i < text.length; i++) h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0;
    return h;
  };
  const look = (doc) => hash(doc.documentElement.outerHTML) + ':' +
    Array.from(doc.images).filter((img) => img.complete && img.naturalWidth > 0).length;
  try {
    const frames = Array.from(document.querySelectorAll('iframe')).map((f) => {
      try { return f.contentDocument ? look(f.contentDocument) : 'closed'; } catch (e) { return 'closed'; }
    });
    return [look(document), ...frames].join('|');
  } catch (e) { return null; }
})()"""


class BrowserError(RuntimeError):
    """Chromium did not start, or a page did not do what a script waited for."""


class Browser:
    """One headless Chromium with one page; close it with `close()` (or use it as a context manager)."""

    def __init__(self, *, width: int = 1400, height: int = 900, timeout: float = 60.0) -> None:
        binary = chromium_path()
        if binary is None:
            raise BrowserError("chromium is not installed (apt-get install -y chromium)")
        self._profile = tempfile.mkdtemp(prefix="mersweep-chromium-")
        port = free_port()
        cmd = [binary, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={self._profile}"]
        cmd += [f"--window-size={width},{height}", "about:blank"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._next_id = 0
        try:
            self._sock = _connect(port, self._page_socket_path(port, timeout))
            self.call("Page.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _page_socket_path(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
                    pages = [t for t in json.load(resp) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"].split(str(port), 1)[1]
            except OSError:
                pass
            time.sleep(0.2)
        raise BrowserError(f"chromium's DevTools endpoint did not answer within {timeout:.0f} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        _send(self._sock, json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(_receive(self._sock))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, *, timeout: float = 60.0, what: str = "") -> Any:
        """Poll `expression` until it is truthy; its value. BrowserError after `timeout` seconds.

        While the page loads (no body yet, a navigation under way) a failing expression counts as false.
        """
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(guarded)
            if value:
                return value
            time.sleep(0.3)
        raise BrowserError(f"page did not show {what or expression} within {timeout:.0f} s")

    def text(self) -> str:
        """The page's visible text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path

    def wait_still(self, *, interval_s: float = 0.5, timeout: float = 60.0, what: str = "the page") -> None:
        """Wait until the page has stopped changing: its DOM, the images it has decoded and those of
        the frames it may read are the same in two looks `interval_s` apart.

        For views that go on drawing after the element one waits for is there (status icons, a
        frame's images): how long that takes depends on the machine, so no fixed pause fits.
        (Comparing screenshots would not do: Chromium answers a capture only once a new frame was
        drawn, so a second capture of a still page never returns.) BrowserError if the page is
        still changing after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            now = self.evaluate(_STILL_SIGNATURE)
            if now is not None and now == last:
                return
            if time.monotonic() > deadline:
                raise BrowserError(f"{what} was still changing after {timeout:.0f} s")
            last = now
            time.sleep(interval_s)

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
        # Its own session, renderer and GPU processes included, and any process of it that left the session.
        stop([self._proc], grace=0.0)
        shutil.rmtree(self._profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port: int, path: str) -> socket.socket:
    """A WebSocket (RFC 6455) to Chromium's DevTools endpoint."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise BrowserError("chromium closed the DevTools connection during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise BrowserError(f"DevTools handshake refused: {head.splitlines()[0]!r}")
    return sock


def _send(sock: socket.socket, text: str) -> None:
    """One text frame; a client masks what it sends (the protocol requires it)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    mask = os.urandom(4)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _receive(sock: socket.socket) -> str:
    """One message (its frames joined); control frames in between are skipped."""
    parts: list[bytes] = []
    while True:
        first, second = _exact(sock, 2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", _exact(sock, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", _exact(sock, 8))[0]
        payload = _exact(sock, n)
        opcode = first & 0x0F
        if opcode == 0x8:
            raise BrowserError("chromium closed the DevTools connection")
        if opcode in (0x9, 0xA):  # ping / pong
            continue
        parts.append(payload)
        if first & 0x80:  # FIN: the message is complete
            return b"".join(parts).decode()


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise BrowserError("chromium closed the DevTools connection")
        buf += chunk
    return bytes(buf)
