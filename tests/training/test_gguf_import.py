"""`python -m training import-gguf`: the default model from its PyPI wheel, reuse by fingerprint, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "DE_DATA_DIR": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", "training", "import-gguf", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def test_default_import_is_a_clean_transformers_folder(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    stamp = json.loads((smollm2_dir / "import.json").read_text())
    assert stamp["provenance"]["license"] == "Apache-2.0" and stamp["parameters"] == 134_515_008
    assert "<|im_start|>" in (smollm2_dir / "chat_template.jinja").read_text()
    from safetensors import safe_open

    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as f:
        t = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert str(t.dtype) == "torch.bfloat16" and t.shape == (576, 576)


def test_rerun_reuses_the_folder_and_prints_one_json_line(smollm2_dir: Path, session_data_dir: Path) -> None:
    proc = _cli("--out", str(smollm2_dir), "--json", env_dir=session_data_dir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["reused"] is True and result["path"] == str(smollm2_dir)
    assert result["fingerprint"] == json.loads((smollm2_dir / "import.json").read_text())["fingerprint"]


def test_not_a_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    proc = _cli(str(bad), "--out", str(tmp_path / "out"), "--json", env_dir=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a GGUF file" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_names_what_is_supported(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "tiny-gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = _cli(str(path), "--out", str(tmp_path / "out"), env_dir=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'gpt2' is not supported" in proc.stderr and "llama" in proc.stderr


@pytest.mark.parametrize("missing", ["nope.gguf"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    proc = _cli(str(tmp_path / missing), env_dir=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
