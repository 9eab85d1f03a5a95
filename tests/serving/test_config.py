"""ServeConfig: every shipped YAML validates, and bad configs fail with the field path and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import UserError
from serving.__main__ import main
from serving.config import ServeConfig

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "serving" / "configs").glob("*.yaml")
    if "serve-deploy" not in p.name
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    assert path.read_text().startswith("#")  # starts with the command that runs it
    cfg = ServeConfig.from_file(path)
    assert cfg.model.served_name()


def test_lite_file_with_several_retriever_replicas_is_rejected() -> None:
    with pytest.raises(UserError) as exc:
        ServeConfig.from_file(
            CONFIGS[-1], ["retriever.uri=data:milvus.db", "retriever.replicas.num_replicas=2"]
        )
    assert "retriever:" in str(exc.value) and "Milvus server" in str(exc.value)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("routes.x.adapter=../etc", "routes.x.adapter"),
        ("model.max_loras=64", "model"),
        ("router.port=0", "router.port"),
        ("routes.x.on_retriever_error=ignore", "routes.x.on_retriever_error"),
        ("retriever.collection=helix-docs", "retriever.collection"),
    ],
)
def test_bad_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(UserError) as exc:
        ServeConfig.from_file(CONFIGS[-1], [override])
    assert f"- {field}" in str(exc.value)


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(UserError) as exc:
        ServeConfig.from_file(CONFIGS[-1], ["router.prot=1"])
    assert "router.port" in str(exc.value)


def test_validate_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(CONFIGS[-1]), "--json"]) == 0
    assert '"valid": true' in capsys.readouterr().out
