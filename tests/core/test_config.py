"""The shared config base: YAML loading, dotted overrides, and errors that name every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, model_validator

from core.config import BaseConfig, valid_keys
from core.errors import UserError


class Inner(BaseConfig):
    rank: int = Field(8, description="LoRA rank", gt=0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj"], description="modules")


class Outer(BaseConfig):
    name: str = Field(description="run name")
    steps: int = Field(10, description="steps", ge=1)
    lora: Inner = Field(default_factory=Inner, description="LoRA settings")

    @model_validator(mode="after")
    def _check(self) -> Outer:
        if self.name == "forbidden":
            raise ValueError("name 'forbidden' is reserved")
        return self


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_loads_and_applies_typed_overrides(tmp_path: Path) -> None:
    cfg = Outer.from_file(write(tmp_path, "name: a\nlora:\n  rank: 4\n"), ["steps=7", "lora.targets=[a, b]"])
    assert (cfg.name, cfg.steps, cfg.lora.rank, cfg.lora.targets) == ("a", 7, 4, ["a", "b"])


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("name: a\nbogus: 1\n", [], "bogus: unknown key"),
        ("name: a\nsteps: 0\nlora:\n  rank: -1\n", [], "lora.rank"),
        ("steps: 3\n", [], "name: Field required"),
        ("name: forbidden\n", [], "reserved"),
        ("name: a\n", ["lora.nope=3"], "valid keys: lora.rank, lora.targets"),
        ("name: a\n", ["steps"], "key.sub=value"),
        ("name: [unclosed\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "top level must be a mapping"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    with pytest.raises(UserError) as err:
        Outer.from_file(write(tmp_path, text), overrides)
    assert expected in str(err.value)


def test_every_problem_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        Outer.from_file(write(tmp_path, "name: a\nsteps: 0\nlora:\n  rank: 0\nextra: 1\n"))
    msg = str(err.value)
    assert "3 problem(s)" in msg and "steps" in msg and "lora.rank" in msg and "extra" in msg


def test_missing_file() -> None:
    with pytest.raises(UserError, match="config file not found"):
        Outer.from_file("/nonexistent/x.yaml")


def test_valid_keys_expand_nested_models() -> None:
    assert valid_keys(Outer) == ["name", "steps", "lora.rank", "lora.targets"]
