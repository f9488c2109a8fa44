"""Reading params.yaml: a YAML loader that rejects duplicate keys, and one-line validation errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from kdcore.config.models import CNNSpec, MLPSpec, TorchvisionSpec
from kdcore.config.params import Params
from kdcore.errors import ConfigError
from kdcore.losses import TERMS

# discriminated-union tags (model kinds, loss terms): pydantic puts them in an error's location
_UNION_TAGS = {
    "mlp": MLPSpec,
    "cnn": CNNSpec,
    "torchvision": TorchvisionSpec,
    **{name: TERMS.get(name) for name in TERMS.names()},
}


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Discriminated-union tags in an error location are not keys the user wrote."""
    return i > 0 and (loc[i - 1] == "model" or isinstance(loc[i - 1], int)) and loc[i] in _UNION_TAGS


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else str(part) for i, part in enumerate(loc) if not _is_tag(loc, i)]
    return ".".join(parts).replace(".[", "[")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc`'s parent, for the message about an unknown key."""
    current: Any = model
    for i, part in enumerate(loc[:-1]):
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
        if _is_tag(loc, i):
            current = _UNION_TAGS[part]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_validation_error(err: ValidationError, source: str = "params.yaml") -> str:
    """One line: the key, the value, what is allowed."""
    errors = err.errors()
    # a misspelt model name makes its other keys "unknown" (to the torchvision spec): name the model first;
    # a misspelt key also makes the right one "missing": name the misspelling next
    first = next(
        (e for e in errors if e["loc"] and e["loc"][-1] == "name" and "unknown model" in e["msg"]),
        next((e for e in errors if e["type"] == "extra_forbidden"), errors[0]),
    )
    key = _loc(tuple(first["loc"])) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(Params, tuple(first["loc"]))
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{source}: {key}: unknown key{hint}"
    if first["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f", got {value!r}"
    if isinstance(value, bool) and first["type"] in ("int_type", "float_type"):
        shown += " (YAML reads yes/no/on/off as true/false)"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return f"{source}: {key}: {msg}{shown}{tail}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes: a key written twice in one mapping is an error (DVC
    rejects such a file too), and `1e-3` is a float as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a
    string, which strict validation would then refuse)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} written twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parses YAML as params files are read everywhere; ConfigError naming the file and line otherwise."""
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates params.yaml; raises ConfigError with one line naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    return parse_params(read_yaml(text, source=str(path)), source=str(path))
