"""Shared configuration base: YAML files validated by pydantic, with dotted command-line overrides.

Every deployable (training, retrieval, serving) has one model derived from `BaseConfig`. Unknown keys are
rejected, and every problem is reported with its field path so a user can fix a file in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import UserError

T = TypeVar("T", bound="BaseConfig")


class BaseConfig(BaseModel):
    """Base for every config model: unknown fields are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def from_file(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
        """Load a YAML file, apply `key.sub=value` overrides, validate; raise UserError listing every problem."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: the top level must be a mapping of keys to values")
        return cls.from_dict(data, overrides, source=str(path))

    @classmethod
    def from_dict(
        cls: type[T], data: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
    ) -> T:
        data = apply_overrides(cls, dict(data), overrides or [])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, each naming its dotted field path."""
    lines = [f"{source}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """All dotted keys a model accepts, nested models expanded (used in error messages)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        sub = _submodel(field.annotation)
        if sub is not None:
            keys.extend(valid_keys(sub, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def apply_overrides(model: type[BaseModel], data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a raw dict; values are parsed as YAML scalars (`true`, `3`, `[a, b]`)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        _check_key(model, parts, key)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return data


def _check_key(model: type[BaseModel], parts: list[str], key: str) -> None:
    current: type[BaseModel] | None = model
    free_key = False  # the next part is a key of a dict[str, Model] field (e.g. routes.<name>.adapter)
    for i, part in enumerate(parts):
        if current is None:
            return  # a free-form dict below this point (e.g. extra engine kwargs)
        if free_key:
            free_key = False
            continue
        if part not in current.model_fields:
            options = ", ".join(valid_keys(current, ".".join(parts[:i]) + "." if i else ""))
            raise UserError(f"unknown config key {key!r}; valid keys: {options}")
        annotation = current.model_fields[part].annotation
        free_key = get_origin(annotation) is dict
        current = _submodel(annotation)
