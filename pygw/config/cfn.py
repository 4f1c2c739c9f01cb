"""Reading a CloudFormation template: YAML with its short-form tags (or JSON), and intrinsics.

`read_template` gives plain data in which every short form (`!Ref X`, `!GetAtt A.B`, `!Sub ...`)
is written in its long form (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, ...). `Resolver`
evaluates intrinsic functions against the template's Parameters (defaults, overridden as
`--parameter-overrides` does), Mappings, Conditions and the pseudo parameters of a local stack. A
value that can only be known once deployed (`Fn::ImportValue`, an attribute other than a
function's Arn) is kept as readable text and reported as a warning at its path.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from pygw.config.load import ConfigError, ConfigIssue

__all__ = ["NO_VALUE", "REGION", "Resolver", "function_arn", "read_template"]

REGION: Final = "us-east-1"
ACCOUNT: Final = "000000000000"

_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class _NoValue:
    """`AWS::NoValue`: the property it stands in is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


# ---------------------------------------------------------------------------------------------
# Reading


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short-form tags."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        value = None
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def read_template(path: Path) -> Any:
    """The template as plain data; raises ConfigError naming the file when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(str(path), "", "file not found", "check the path of the template")]
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"cannot read the file: {err}", "check the file")]
        ) from None
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text)
        return yaml.load(text, Loader=_TemplateLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    "",
                    "not valid YAML or JSON: " + " ".join(str(err).split()),
                    "fix the template's syntax",
                )
            ]
        ) from None


# ---------------------------------------------------------------------------------------------
# Intrinsic functions


class Resolver:
    """Evaluates intrinsic functions; `warn(where, message)` receives what cannot be resolved."""

    def __init__(
        self,
        template: Mapping[str, Any],
        overrides: Mapping[str, str],
        stack_name: str,
        warn: Callable[[str, str], None],
    ) -> None:
        self.template = template
        self.warn = warn
        self.resources: Mapping[str, Any] = _mapping(template.get("Resources"))
        self.mappings: Mapping[str, Any] = _mapping(template.get("Mappings"))
        self.conditions: Mapping[str, Any] = _mapping(template.get("Conditions"))
        self._condition_values: dict[str, bool] = {}
        self.pseudo: dict[str, Any] = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self.parameters: dict[str, Any] = {}
        declared = _mapping(template.get("Parameters"))
        for name, spec in declared.items():
            spec = _mapping(spec)
            where = f"Parameters/{name}"
            if name in overrides:
                value: Any = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                warn(
                    where,
                    "has no Default and no --parameter-overrides value; pygw uses ''",
                )
                value = ""
            allowed = spec.get("AllowedValues")
            if isinstance(allowed, list) and allowed and str(value) not in map(str, allowed):
                warn(where, f"value {value!r} is not one of its AllowedValues {allowed}")
            if str(spec.get("Type", "String")) == "CommaDelimitedList" or str(
                spec.get("Type", "")
            ).startswith("List<"):
                value = [part.strip() for part in str(value).split(",")] if value != "" else []
            elif not isinstance(value, str):
                value = str(value)
            self.parameters[name] = value
        for name in overrides:
            if name not in declared:
                warn(f"--parameter-overrides {name}", "names no parameter of the template")

    # ------------------------------------------------------------------------------ conditions

    def condition(self, name: Any, where: str, seen: frozenset[str] = frozenset()) -> bool:
        if not isinstance(name, str) or name not in self.conditions:
            self.warn(where, f"condition {name!r} is not defined under Conditions; taken as false")
            return False
        if name in self._condition_values:
            return self._condition_values[name]
        if name in seen:
            self.warn(where, f"condition {name!r} refers to itself; taken as false")
            return False
        value = self._boolean(self.conditions[name], f"Conditions/{name}", seen | {name})
        self._condition_values[name] = value
        return value

    def _boolean(self, node: Any, where: str, seen: frozenset[str]) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            args = arg if isinstance(arg, list) else [arg]
            if key == "Condition":
                return self.condition(arg, where, seen)
            if key == "Fn::Equals" and len(args) == 2:
                left, right = (self.resolve(a, where) for a in args)
                return _text(left) == _text(right)
            if key == "Fn::And":
                return all(self._boolean(a, where, seen) for a in args)
            if key == "Fn::Or":
                return any(self._boolean(a, where, seen) for a in args)
            if key == "Fn::Not" and len(args) == 1:
                return not self._boolean(args[0], where, seen)
        value = self.resolve(node, where)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.warn(where, f"{node!r} is not a condition; taken as false")
        return False

    # ------------------------------------------------------------------------------- resolving

    def resolve(self, node: Any, where: str) -> Any:
        """`node` with every intrinsic function evaluated; `AWS::NoValue` properties removed."""
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, arg),) = node.items()
                if key == "Ref" or (isinstance(key, str) and key.startswith("Fn::")):
                    return self._intrinsic(key, arg, where)
                if key == "Condition" and isinstance(arg, str) and arg in self.conditions:
                    return self.condition(arg, where)
            out = {}
            for key, value in node.items():
                resolved = self.resolve(value, f"{where}/{key}")
                if resolved is not NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(node, list):
            items = [self.resolve(v, f"{where}/{i}") for i, v in enumerate(node)]
            return [v for v in items if v is not NO_VALUE]
        return node

    def _intrinsic(self, key: str, arg: Any, where: str) -> Any:
        here = f"{where}/{key}"
        if key == "Ref":
            return self.ref(self.resolve(arg, here), here)
        if key == "Fn::GetAtt":
            parts = self.resolve(arg, here)
            if isinstance(parts, str):
                parts = parts.split(".", 1)
            if not isinstance(parts, list) or len(parts) != 2:
                self.warn(here, f"{arg!r} is not [Resource, Attribute]; pygw uses ''")
                return ""
            return self.get_att(str(parts[0]), str(parts[1]), here)
        if key == "Fn::Sub":
            return self.sub(arg, here)
        if key == "Fn::Join":
            args = self.resolve(arg, here)
            if not (isinstance(args, list) and len(args) == 2 and isinstance(args[1], list)):
                self.warn(here, "is not [delimiter, [values]]; pygw uses ''")
                return ""
            return str(args[0]).join(_text(v) for v in args[1])
        if key == "Fn::Select":
            args = self.resolve(arg, here)
            if (
                isinstance(args, list)
                and len(args) == 2
                and isinstance(args[1], list)
                and str(args[0]).isdigit()
                and int(args[0]) < len(args[1])
            ):
                return args[1][int(args[0])]
            self.warn(here, "is not [index, [values]] with the index in range; pygw uses ''")
            return ""
        if key == "Fn::Split":
            args = self.resolve(arg, here)
            if isinstance(args, list) and len(args) == 2 and isinstance(args[1], str):
                return args[1].split(str(args[0]))
            self.warn(here, "is not [delimiter, text]; pygw uses []")
            return []
        if key == "Fn::FindInMap":
            args = self.resolve(arg, here)
            if isinstance(args, list) and len(args) >= 3:
                found = _mapping(_mapping(self.mappings.get(str(args[0]))).get(str(args[1])))
                if str(args[2]) in found:
                    return self.resolve(found[str(args[2])], here)
                if len(args) == 4 and isinstance(args[3], dict) and "DefaultValue" in args[3]:
                    return args[3]["DefaultValue"]
            self.warn(here, f"{args!r} is not in Mappings; pygw uses ''")
            return ""
        if key == "Fn::If":
            if not (isinstance(arg, list) and len(arg) == 3):
                self.warn(here, "is not [condition, value_if_true, value_if_false]")
                return NO_VALUE
            chosen = arg[1] if self.condition(arg[0], here) else arg[2]
            return self.resolve(chosen, here)
        if key in ("Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not"):
            return self._boolean({key: arg}, where, frozenset())
        if key == "Fn::ImportValue":
            name = _text(self.resolve(arg, here))
            self.warn(here, f"imports {name!r} from another stack; pygw cannot know it")
            return f"ImportValue:{name}"
        if key == "Fn::Base64":
            return base64.b64encode(_text(self.resolve(arg, here)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        if key == "Fn::Length":
            value = self.resolve(arg, here)
            return len(value) if isinstance(value, list) else 0
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg, here), separators=(",", ":"))
        self.warn(here, f"{key} is not supported; pygw uses ''")
        return ""

    def ref(self, name: Any, where: str) -> Any:
        if not isinstance(name, str):
            self.warn(where, f"Ref {name!r} is not a name; pygw uses ''")
            return ""
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.resources:
            # A function's or an API's physical name: its logical id, as `sam local` names them.
            return name
        self.warn(where, f"Ref {name!r} names no parameter or resource; pygw uses {name!r}")
        return name

    def get_att(self, resource: str, attribute: str, where: str) -> Any:
        spec = _mapping(self.resources.get(resource))
        kind = spec.get("Type")
        if kind is None:
            self.warn(where, f"GetAtt {resource}.{attribute}: no resource {resource!r}")
            return f"{resource}.{attribute}"
        if attribute == "Arn" and kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return function_arn(resource)
        if attribute in ("Arn", "Name") and kind in ("AWS::Serverless::Function",):
            return resource
        # Deploy-time values (table names, queue URLs) have no meaning to a local gateway; the
        # text stays readable for whoever reads the environment it ends up in.
        return f"{resource}.{attribute}"

    def sub(self, arg: Any, where: str) -> str:
        variables: Mapping[str, Any] = {}
        text = arg
        if isinstance(arg, list) and len(arg) == 2:
            text = arg[0]
            variables = _mapping(self.resolve(arg[1], where))
        if not isinstance(text, str):
            self.warn(where, "is not text or [text, {variables}]; pygw uses ''")
            return ""

        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return _text(variables[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                resource, attribute = name.split(".", 1)
                return _text(self.get_att(resource, attribute, where))
            return _text(self.ref(name, where))

        return _SUB_VAR.sub(replace, text)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    if value is NO_VALUE:
        return ""
    return str(value)
