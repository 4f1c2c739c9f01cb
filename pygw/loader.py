"""Loading user code named `module:callable` from a config's folders (handlers, authorizers)."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_import_lock = threading.Lock()


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
