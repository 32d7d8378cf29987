"""A headless Chromium driven over the DevTools protocol: open a page, run JavaScript in it,
take a screenshot. For pages that keep talking to their server (a Bokeh server page), which
``--dump-dom`` would cut off at the load event."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request

__all__ = ["chromium_exe", "Browser"]


def chromium_exe():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """``with Browser(url, tmp_path) as b: b.evaluate("document.title")``."""

    def __init__(self, url, tmp_path, width=1400, height=1800):
        self.cmd = [
            chromium_exe(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--window-size={width},{height}",
            url,
        ]
        self.proc = None
        self.ws_url = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port is not None, "chromium did not start its DevTools server"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()

    def _call(self, method, **params):
        async def go():
            from tornado.websocket import websocket_connect

            ws = await websocket_connect(self.ws_url, max_message_size=64 * 2**20)
            try:
                await ws.write_message(json.dumps({"id": 1, "method": method, "params": params}))
                while True:
                    msg = json.loads(await ws.read_message())
                    if msg.get("id") == 1:
                        return msg
            finally:
                ws.close()

        return asyncio.run(asyncio.wait_for(go(), 60))

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        msg = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        # While the page is still loading there is no context to evaluate in (an "error"), or
        # the expression throws ("exceptionDetails"): nothing to read yet.
        result = msg.get("result", {})
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def wait_for(self, expression, timeout=30.0):
        """Evaluate ``expression`` until it is truthy; return its value (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        return None

    def screenshot(self, path):
        msg = self._call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(msg["result"]["data"]))
        return path
