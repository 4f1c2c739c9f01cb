"""Headless Chromium driven over the Chrome DevTools protocol (a websocket, with aiohttp).

Enough of the protocol for page tests: open a page, evaluate script, collect console errors and
uncaught exceptions, take a screenshot. The browser is Debian's `chromium` (or the binary named
by PYGW_CHROMIUM); `find_chromium()` returns None when there is none, for tests to skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiohttp


def find_chromium() -> str | None:
    named = os.environ.get("PYGW_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(Exception):
    pass


class Page:
    """One tab: commands by id, events kept for the test to read."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = message.json()
            waiter = self._waiting.pop(data["id"], None) if "id" in data else None
            if waiter is not None and not waiter.done():
                if "error" in data:
                    waiter.set_exception(BrowserError(str(data["error"])))
                else:
                    waiter.set_result(data.get("result", {}))
                continue
            self._event(data.get("method", ""), data.get("params", {}))
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrowserError("the browser closed the connection"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in args)
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            shown = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {shown}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        number = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = waiter
        await self._socket.send_json({"id": number, "method": method, "params": params or {}})
        return await asyncio.wait_for(waiter, 20)

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    async def open(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Page.navigate", {"url": url})

    async def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Evaluates until the answer is truthy; the timeout only bounds a hung page."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                value = await self.evaluate(expression)
            except BrowserError:
                value = None  # the page is still loading its scripts
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"{expression!r} still false after {timeout_s} s")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path, width: int = 1400) -> None:
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        await self._socket.close()
        self._reader.cancel()


class Browser:
    """`async with Browser(binary) as browser: page = await browser.page()`"""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        # Chromium's helper processes may still be writing the profile while it is removed.
        self._folder = tempfile.TemporaryDirectory(
            prefix="pygw-chromium-", ignore_cleanup_errors=True
        )
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pages: list[Page] = []
        self._port = 0

    async def __aenter__(self) -> Browser:
        profile = Path(self._folder.name)
        self._process = await asyncio.create_subprocess_exec(
            self._binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--window-size=1400,1000",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own process group, so that stopping it stops its helper processes too.
            start_new_session=True,
        )
        announced = profile / "DevToolsActivePort"
        for _ in range(600):
            if announced.exists() and announced.read_text().strip():
                break
            if self._process.returncode is not None:
                raise BrowserError(f"{self._binary} exited with {self._process.returncode}")
            await asyncio.sleep(0.05)
        else:
            await self._stop()
            raise BrowserError(f"{self._binary} did not announce its DevTools port")
        self._port = int(announced.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        return self

    async def page(self) -> Page:
        assert self._session is not None
        async with self._session.put(f"http://127.0.0.1:{self._port}/json/new?about:blank") as made:
            target = await made.json()
        socket = await self._session.ws_connect(
            target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024
        )
        page = Page(socket)
        self._pages.append(page)
        return page

    async def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        # The group is the one the browser was started in (its pid): renderers and other
        # helpers that outlived it are ended before their profile is removed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        for page in self._pages:
            await page.close()
        if self._session is not None:
            await self._session.close()
        await self._stop()
        self._folder.cleanup()
