"""Runs `pygw serve` as a real child process on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

_READY = re.compile(r"pygw listening on https?://([\d.]+):(\d+) \(admin http://([\d.]+):(\d+)\)")


class GatewayProcess:
    def __init__(
        self, config: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.admin_port = 0
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pygw",
            "serve",
            "-c",
            str(self.config),
            "--listen",
            "127.0.0.1:0",
            *self.args,
        ]

    def start(self, timeout_s: float = 20.0) -> GatewayProcess:
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                found = _READY.search(line)
                if found:
                    self.port = int(found.group(2))
                    self.admin_port = int(found.group(4))
                    ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start:\n" + "".join(self.output))
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self._release()
        return code

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.join(2)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._release()

    def text(self) -> str:
        return "".join(self.output)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
