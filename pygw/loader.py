"""Loading user code named `module:callable` from a config's folders (handlers, authorizers).

A reload (SIGHUP, `POST /reload`) loads every handler again; a module from the config's folders
whose source file changed since it was imported is imported afresh, the others are reused as they
are (their state, connections and caches included). A fresh import gives a new module object, so
a snapshot still finishing its requests keeps running the code it started with. A module that did
`from helper import name` keeps the `name` it got unless it changed too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_import_lock = threading.Lock()

# (st_mtime_ns, st_size) of each config-folder module's source when it was imported, by name.
_Stamp = tuple[int, int]
_imported: dict[str, tuple[str, _Stamp]] = {}


def _stamp(path: str) -> _Stamp | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def _in_folders(module: ModuleType, folders: Sequence[str]) -> str | None:
    """The module's source file when it lies in one of the folders."""
    origin = getattr(module, "__file__", None)
    if not isinstance(origin, str) or not origin.endswith(".py"):
        return None
    if any(origin.startswith(folder + "/") for folder in folders):
        return origin
    return None


def _forget_changed(folders: Sequence[str]) -> None:
    """Drop the cached modules whose source changed since their import, so the next import
    reads the file again."""
    for name, (origin, stamp) in list(_imported.items()):
        module = sys.modules.get(name)
        if module is None or getattr(module, "__file__", None) != origin:
            # Gone, or replaced by another import: it is recorded again when seen.
            del _imported[name]
            continue
        if not any(origin.startswith(folder + "/") for folder in folders):
            continue
        if _stamp(origin) == stamp:
            continue
        del sys.modules[name]
        del _imported[name]
        # The bytecode cache is checked by whole seconds and size: an edit within the second
        # that keeps the size would otherwise be served from the old bytecode.
        with contextlib.suppress(NotImplementedError, ValueError, OSError):
            os.unlink(importlib.util.cache_from_source(origin))


def _remember_imported(folders: Sequence[str]) -> None:
    for name, module in list(sys.modules.items()):
        if name in _imported or module is None:
            continue
        origin = _in_folders(module, folders)
        if origin is None:
            continue
        stamp = _stamp(origin)
        if stamp is not None:
            _imported[name] = (origin, stamp)


def _forget_shadowed(module_name: str, folders: Sequence[str]) -> None:
    """Drop a cached module that a config's own folder would now provide.

    Modules are cached by name for the whole process, so without this a reload (or a second
    config in one process) naming `shop.handlers` would keep getting the first config's `shop`."""
    top = module_name.partition(".")[0]
    cached = sys.modules.get(top)
    if cached is None:
        return
    origins = [getattr(cached, "__file__", None) or ""]
    origins += [str(p) for p in getattr(cached, "__path__", [])]
    if any(origin.startswith(folder + "/") for origin in origins for folder in folders):
        return
    if not any(
        (Path(folder) / f"{top}.py").is_file() or (Path(folder) / top).is_dir()
        for folder in folders
    ):
        return  # not something the config provides: an installed or standard module
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def load_callable(spec: str, search_paths: Sequence[Path | str]) -> Callable[..., Any]:
    """Import `module:callable` (the callable may be dotted: `module:App.handler`), looking in
    `search_paths` first (in order), then on the usual import path.

    Raises ValueError naming the module or the attribute when either cannot be found, or when
    importing the module fails.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"handler {spec!r} is not module:callable")
    folders = [str(Path(p).resolve()) for p in search_paths]
    with _import_lock:
        for folder in reversed(folders):
            if folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)
        importlib.invalidate_caches()
        _forget_shadowed(module_name, folders)
        _forget_changed(folders)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            looked = ", ".join(str(p) for p in search_paths) or "the import path"
            if missing.name and module_name.startswith(missing.name):
                raise ValueError(
                    f"handler {spec!r}: module {module_name!r} not found (looked in {looked})"
                ) from None
            raise ValueError(
                f"handler {spec!r}: importing module {module_name!r} failed: {missing}"
            ) from None
        except Exception as broken:
            raise ValueError(
                f"handler {spec!r}: importing module {module_name!r} failed: "
                f"{type(broken).__name__}: {broken}"
            ) from None
        finally:
            _remember_imported(folders)
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(
                f"handler {spec!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(found):
        raise ValueError(f"handler {spec!r}: {attribute!r} in {module_name!r} is not callable")
    return found  # type: ignore[no-any-return]


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` gives an awaitable to await on the loop: a coroutine function, or an
    object whose class defines `async def __call__`."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(type(fn), "__call__", None)
    return inspect.iscoroutinefunction(call)
