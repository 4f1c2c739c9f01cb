"""`pygw serve --watch`: reload the gateway when the files it was built from change.

Uses watchfiles (a Rust notify backend: inotify on Linux, no polling). Changes are batched over
`debounce_ms`, so an editor's save-as-rename or a `git checkout` is one reload. The reload is the
one SIGHUP does: a new snapshot is compiled (handler modules whose source changed are imported
afresh), requests in flight finish on the old one, and an invalid change keeps the old one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

__all__ = ["SourceFilter", "watch_and_reload"]

log = logging.getLogger("pygw.watch")


class SourceFilter(DefaultFilter):
    """watchfiles' default (no VCS folders, bytecode, editor swap files), and also no build
    output or installed packages, whose churn says nothing about the sources."""

    ignore_dirs = (*DefaultFilter.ignore_dirs, ".aws-sam", "node_modules", ".venv", "target")


async def watch_and_reload(
    paths: Sequence[Path],
    reload: Callable[[], Awaitable[tuple[bool, str]]],
    stop: asyncio.Event,
    debounce_ms: int = 300,
) -> None:
    existing = [p for p in paths if p.exists()]
    if not existing:
        log.warning("--watch: none of %s exists; nothing is watched", ", ".join(map(str, paths)))
        return
    log.info("watching %s for changes", ", ".join(str(p) for p in existing))
    async for changes in awatch(
        *existing, watch_filter=SourceFilter(), debounce=debounce_ms, stop_event=stop
    ):
        names = sorted({Path(path).name for _, path in changes})
        kinds = {change for change, _ in changes}
        what = "removed" if kinds == {Change.deleted} else "changed"
        log.info("%s %s: reloading", ", ".join(names[:5]) + ("..." if len(names) > 5 else ""), what)
        await reload()
