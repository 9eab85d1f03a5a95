"""ServeConfig: every shipped YAML validates, and bad configs fail with the field path and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from serving.__main__ import main
from serving.config import ServeConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "serving" / "configs").glob("*.yaml")) + [
    REPO / "cluster" / "k8s" / "serve-config.yaml"
]
CONFIGS = [p for p in SHIPPED if not p.name.startswith("serve-deploy")]  # ServeConfig files


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    """Every shipped file, none filtered out: ServeConfig files by ServeConfig, Serve deploy files by Serve's own
    schema and then the ServeConfig each application points at."""
    import yaml

    from cluster.deployment import check_serve_deploy

    assert path.read_text().startswith("#")  # starts with the command that runs it
    if path.name.startswith("serve-deploy"):
        apps = check_serve_deploy(yaml.safe_load(path.read_text()), path.name)
        assert apps and all(a["import_path"] == "serving.app:build_app" for a in apps)
    else:
        assert ServeConfig.from_file(path).model.served_name()


def test_tensor_parallel_needs_the_replicas_gpus() -> None:
    with pytest.raises(
        UserError, match=r"tensor_parallel_size 2 needs that many GPUs per replica.*num_gpus is 1"
    ):
        ServeConfig.from_file(
            REPO / "serving" / "configs" / "gpu-cluster.yaml", ["model.tensor_parallel_size=2"]
        )


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
