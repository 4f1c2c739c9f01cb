"""Loading a configuration file: YAML, ``${env:...}`` interpolation, validation, readable errors.

Every problem is reported as ``FILE: path.to.field: what is wrong (what to do)``, and all problems
of a file are reported together.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pygw.config.model import GatewayConfig, closest

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "format_issues",
    "interpolate_env",
    "load_config",
    "parse_config",
]

PathElem = str | int


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    path: str  # "apis[0].routes.GET /items.integration.uri"; "" for the document as a whole
    message: str
    fix: str
    line: int | None = None  # 1-based line of the offending key or value, when known

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}: {where}{self.message} ({self.fix})"


class ConfigError(Exception):
    def __init__(self, errors: list[ConfigIssue]) -> None:
        super().__init__(format_issues(errors))
        self.errors = errors

    def __str__(self) -> str:
        return format_issues(self.errors)


def format_issues(issues: Iterable[ConfigIssue]) -> str:
    """One line per issue, in the ``FILE: path: message (fix)`` shape that `pygw check` prints."""
    return "\n".join(str(issue) for issue in issues)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: GatewayConfig
    path: Path  # the config file, absolute
    folder: Path  # its folder: relative paths in the config are relative to it

    def resolve(self, relative: str | Path) -> Path:
        """A path from the config (python_path, file:// JWKS, ...) made absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else (self.folder / path)

    def python_paths(self) -> list[Path]:
        """Folders handlers are imported from: the config's folder, then ``python_path``."""
        return [self.folder, *(self.resolve(p) for p in self.config.python_path)]

    def summary(self) -> str:
        cfg = self.config
        stages = sum(len(api.stages) for api in cfg.apis)
        routes = sum(len(api.routes) for api in cfg.apis)
        return (
            f"{self.path}: ok: {_count(len(cfg.apis), 'API')}, {_count(stages, 'stage')}, "
            f"{_count(routes, 'route')}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def format_path(path: Iterable[PathElem]) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else elem
    return out


# --------------------------------------------------------------------------------------------------
# YAML


class _Node:
    """Line numbers of the YAML document, by data path."""

    def __init__(self) -> None:
        self.lines: dict[tuple[PathElem, ...], int] = {}

    def line_of(self, path: tuple[PathElem, ...]) -> int | None:
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def _scalar_key(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        return node.value


def _walk_nodes(
    node: yaml.Node,
    path: tuple[PathElem, ...],
    loader: yaml.SafeLoader,
    index: _Node,
    issues: list[tuple[tuple[PathElem, ...], str, str, int]],
    depth: int = 0,
) -> None:
    # Index line numbers and find duplicate keys, which yaml.safe_load would silently collapse
    # (the last one winning), before constructing the data.
    if depth > 64:
        return
    index.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _scalar_key(key_node, loader)
            if isinstance(key, bool | int | float):
                key = str(key)
            line = key_node.start_mark.line + 1
            child = (*path, key) if isinstance(key, str) else path
            if isinstance(key, str) and key in seen:
                issues.append(
                    (
                        child,
                        f"duplicate key (first defined at line {seen[key]})",
                        "remove one of the two; YAML keeps only the last",
                        line,
                    )
                )
                continue
            if isinstance(key, str):
                seen[key] = line
                index.lines[child] = line
            _walk_nodes(value_node, child, loader, index, issues, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_nodes(item, (*path, i), loader, index, issues, depth + 1)


# libyaml's parser when PyYAML was built with it: large route tables load about ten times faster.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, file: str) -> tuple[Any, _Node]:
    loader = _Loader(text)
    index = _Node()
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(
                [
                    ConfigIssue(
                        file,
                        "",
                        "the file is empty",
                        "start from examples/quickstart.yaml",
                        1,
                    )
                ]
            )
        dups: list[tuple[tuple[PathElem, ...], str, str, int]] = []
        _walk_nodes(node, (), loader, index, dups)
        if dups:
            raise ConfigError([ConfigIssue(file, format_path(p), m, f, ln) for p, m, f, ln in dups])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        what = err.problem or err.context or "invalid YAML"
        raise ConfigError(
            [
                ConfigIssue(
                    file,
                    "",
                    f"YAML syntax error at {where}: {what}",
                    _yaml_fix(what),
                    mark.line + 1 if mark else None,
                )
            ]
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(
            [ConfigIssue(file, "", f"YAML error: {err}", "check the file's YAML syntax")]
        ) from None
    finally:
        loader.dispose()
    return data, index


def _yaml_fix(problem: str) -> str:
    if "mapping values are not allowed" in problem:
        return "check the indentation, and quote values that contain ': '"
    if "'\\t'" in problem or "tab" in problem:
        return "indent with spaces, not tabs"
    if "found character '@'" in problem or "found character '`'" in problem:
        return "quote the value"
    if "could not find expected ':'" in problem:
        return "add ':' after the key, or quote the value"
    if "expected <block end>" in problem:
        return "check the indentation of this line and the one above"
    return "check the indentation and quoting near that position"


# --------------------------------------------------------------------------------------------------
# Environment interpolation

_ENV_RE = re.compile(r"(\$?)\$\{env:([^}]*)\}")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _EnvResult:
    issues: list[tuple[tuple[PathElem, ...], str, str]] = field(default_factory=list)


def interpolate_env(
    data: Any, env: Mapping[str, str] | None = None
) -> tuple[Any, list[tuple[tuple[PathElem, ...], str, str]]]:
    """Replace ``${env:NAME}`` and ``${env:NAME:-default}`` in string values.

    Returns the new data and the problems found as (path, message, fix). ``$${env:X}`` is written
    as a literal ``${env:X}``; other ``${...}`` forms (``${stageVariables.x}``) are left alone.
    """
    environ = os.environ if env is None else env
    result = _EnvResult()
    return _interpolate(data, (), environ, result), result.issues


def _interpolate(
    value: Any, path: tuple[PathElem, ...], env: Mapping[str, str], result: _EnvResult
) -> Any:
    if isinstance(value, str):
        return _interpolate_str(value, path, env, result)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, str(k)), env, result) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, result) for i, v in enumerate(value)]
    return value


def _interpolate_str(
    text: str, path: tuple[PathElem, ...], env: Mapping[str, str], result: _EnvResult
) -> str:
    if "${env:" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        escaped, inner = match.group(1), match.group(2)
        if escaped:
            return match.group(0)[1:]
        name, sep, default = inner.partition(":-")
        if not _ENV_NAME_RE.match(name):
            result.issues.append(
                (
                    path,
                    f"${{env:{inner}}} is not a valid environment reference",
                    "write ${env:NAME} or ${env:NAME:-default}",
                )
            )
            return ""
        found = env.get(name)
        if found is not None:
            return found
        if sep:
            return default
        result.issues.append(
            (
                path,
                f"environment variable {name} is not set",
                f"set {name}, or give a default: ${{env:{name}:-VALUE}}",
            )
        )
        return ""

    out = _ENV_RE.sub(replace, text)
    rest = _ENV_RE.sub("", text)
    if "${env:" in rest:
        result.issues.append(
            (path, "unterminated ${env:...} reference", "close it with '}': ${env:NAME}")
        )
    return out


# --------------------------------------------------------------------------------------------------
# Validation errors → issues


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str | int | float | bool) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_loc(loc: tuple[PathElem, ...], data: Any) -> list[PathElem]:
    """A pydantic location made a data path: union tags and member names dropped."""
    node = data
    out: list[PathElem] = []
    for i, elem in enumerate(loc):
        last = i == len(loc) - 1
        if elem == "[key]":
            continue
        if isinstance(elem, int):
            out.append(elem)
            node = node[elem] if isinstance(node, list) and 0 <= elem < len(node) else None
            continue
        if isinstance(node, dict):
            if node.get("type") == elem and not last and elem not in node:
                continue  # discriminated union tag
            if elem in node:
                out.append(elem)
                node = node[elem]
                continue
            if last:
                out.append(elem)  # a missing or unknown key
                node = None
            continue  # a union member's name
        # Below a value that is not a mapping, further elements name union members.
    return out


def _strip_annotated(ann: Any) -> Any:
    while get_origin(ann) is typing.Annotated:
        ann = get_args(ann)[0]
    return ann


def _resolve_model(ann: Any, node: Any) -> Any:
    """Narrow an annotation to the type that applies to ``node`` (unions by their ``type`` tag)."""
    ann = _strip_annotated(ann)
    if get_origin(ann) in (typing.Union, types.UnionType):
        members = [_strip_annotated(a) for a in get_args(ann) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(members) == 1:
            return members[0]
        tag = node.get("type") if isinstance(node, dict) else None
        for model in models:
            type_field = model.model_fields.get("type")
            if type_field is not None and tag in get_args(type_field.annotation):
                return model
        return models[0] if len(models) == 1 else ann
    return ann


def _field_of(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info.annotation
    return None


def _annotation_at(path: list[PathElem], data: Any) -> Any:
    ann: Any = GatewayConfig
    node = data
    for elem in path:
        ann = _resolve_model(ann, node)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if not isinstance(elem, str):
                return None
            ann = _field_of(ann, elem)
            if ann is None:
                return None
        else:
            origin = get_origin(ann)
            if origin is list:
                ann = get_args(ann)[0]
            elif origin is dict:
                ann = get_args(ann)[1]
            else:
                return None
        if isinstance(node, dict):
            node = node.get(elem)
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node = node[elem]
        else:
            node = None
    return _resolve_model(ann, node)


def _model_at(path: list[PathElem], data: Any) -> type[BaseModel] | None:
    ann = _annotation_at(path, data)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _union_tags(path: list[PathElem], data: Any) -> list[str]:
    ann = _strip_annotated(_annotation_at(path, None if data is None else data))
    tags: list[str] = []
    if get_origin(ann) in (typing.Union, types.UnionType):
        for member in get_args(ann):
            member = _strip_annotated(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                type_field = member.model_fields.get("type")
                if type_field is not None and get_origin(type_field.annotation) is Literal:
                    tags.extend(str(t) for t in get_args(type_field.annotation))
    return tags


def _expected_literals(ctx: dict[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get("expected", "")))


def _describe(err: ErrorDetails, data: Any) -> tuple[list[PathElem], str, str]:
    """(data path, message, fix) for one pydantic error."""
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    path = _clean_loc(tuple(err["loc"]), data)
    key = str(path[-1]) if path else ""

    if kind == "pygw":
        return (
            path,
            str(ctx.get("message", err["msg"])),
            str(ctx.get("fix", "see docs/configuration.md")),
        )
    if kind == "missing":
        return path, "required key is missing", f"add {key}: ..."
    if kind == "extra_forbidden":
        model = _model_at(path[:-1], data)
        valid = _keys_of(model) if model else []
        near = closest(key, valid)
        if near:
            fix = f"did you mean {near!r}?"
        elif valid:
            fix = "remove it; valid keys here: " + ", ".join(valid)
        else:
            fix = "remove it"
        return path, f"unknown key {key!r}", fix
    if kind == "union_tag_invalid":
        tags = _union_tags(path, data)
        tag = str(ctx.get("tag", value))
        near = closest(tag, tags)
        fix = (f"did you mean {near!r}? " if near else "") + "use one of: " + ", ".join(tags)
        return [*path, "type"], f"unknown type {tag!r}", fix
    if kind == "union_tag_not_found":
        tags = _union_tags(path, data)
        return [*path, "type"], "required key is missing", "add type: one of " + ", ".join(tags)
    if kind == "literal_error":
        choices = _expected_literals(ctx)
        near = closest(str(value), choices)
        fix = f"did you mean {near!r}?" if near else "use one of the values listed"
        return path, f"{_shown(value)} is not one of: {', '.join(choices)}", fix
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return path, f"expected an integer, got {_shown(value)}", "write a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return path, f"expected a number, got {_shown(value)}", "write a number such as 10 or 0.5"
    if kind in ("bool_type", "bool_parsing"):
        return path, f"expected true or false, got {_shown(value)}", "write true or false"
    if kind in ("string_type", "string_sub_type"):
        return path, f"expected a string, got {_kind(value)}", "write text (quote it if needed)"
    if kind in ("list_type", "tuple_type", "set_type"):
        return path, f"expected a list, got {_kind(value)}", "write a list, e.g. [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return path, f"expected a mapping, got {_kind(value)}", "write key: value pairs"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound_key = {"greater_than_equal": "ge", "greater_than": "gt"}.get(kind)
        bound_key = bound_key or {"less_than_equal": "le", "less_than": "lt"}[kind]
        bound = ctx.get(bound_key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        words = {
            "ge": ("at least", f"use {bound} or more"),
            "gt": ("more than", f"use a value above {bound}"),
            "le": ("at most", f"use {bound} or less"),
            "lt": ("less than", f"use a value below {bound}"),
        }[bound_key]
        return path, f"must be {words[0]} {bound}, got {_shown(value)}", words[1]
    if kind in ("string_too_short", "too_short"):
        return path, "must not be empty", "give a value"
    if kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        return path, message, "see docs/configuration.md"
    return path, str(err["msg"]), "see docs/configuration.md"


def _overlaps(a: tuple[PathElem, ...], b: tuple[PathElem, ...]) -> bool:
    # A failed ${env:...} leaves an empty string behind, which may fail a check of the value itself
    # or of the mapping holding it (an API key's empty value).
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n] and (len(a) >= len(b) or len(b) - len(a) <= 1)


def _issues_from_validation(
    exc: ValidationError,
    data: Any,
    file: str,
    index: _Node,
    skip: set[tuple[PathElem, ...]],
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        path, message, fix = _describe(err, data)
        tpath = tuple(path)
        if any(_overlaps(tpath, s) for s in skip):
            continue  # follows from an environment problem already reported
        text = format_path(path)
        if (text, message) in seen:
            continue
        seen.add((text, message))
        issues.append(ConfigIssue(file, text, message, fix, index.line_of(tpath)))
    return issues


# --------------------------------------------------------------------------------------------------
# Entry points


def parse_config(
    text: str, source_name: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse and validate configuration text; raises ConfigError listing every problem."""
    data, index = _parse_yaml(text, source_name)
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    source_name,
                    "",
                    f"the file must be a mapping of sections, got {_kind(data)}",
                    "start from examples/quickstart.yaml",
                    1,
                )
            ]
        )
    data, env_problems = interpolate_env(data, env)
    issues = [
        ConfigIssue(source_name, format_path(p), m, f, index.line_of(p)) for p, m, f in env_problems
    ]
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        skip = {p for p, _, _ in env_problems}
        issues.extend(_issues_from_validation(exc, data, source_name, index, skip))
        raise ConfigError(issues) from None
    if issues:
        raise ConfigError(issues)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, interpolate and validate a configuration file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(str(path), "", "file not found", "check the path given with -c")]
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"cannot read the file: {err}", "check the file")]
        ) from None
    config = parse_config(text, str(path), env)
    absolute = file.resolve()
    return LoadedConfig(config=config, path=absolute, folder=absolute.parent)
