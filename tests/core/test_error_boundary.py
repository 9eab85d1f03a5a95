"""One error boundary for every CLI: a real failure of each kind prints one line (what failed, where the log
is), never a traceback; `--json` still ends with one JSON object; the log file holds the full traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.driver_output import own_lines

REPO = Path(__file__).resolve().parents[2]

# A main that fails for real inside pymilvus (Milvus Lite answers "collection does not exist").
MILVUS_MAIN = """
import sys
from core.cli import run_cli
def main(argv):
    from pymilvus import MilvusClient
    MilvusClient(uri=sys.argv[1]).query(collection_name="missing", filter="chunk >= 0")
    return 0
raise SystemExit(run_cli(main, ["--json"]))
"""
# A main that fails for real inside vLLM: the engine's own request validation refuses a sampling setting.
VLLM_MAIN = """
from core.cli import run_cli
def main(argv):
    from vllm import SamplingParams
    SamplingParams(temperature=-1.0)
    return 0
raise SystemExit(run_cli(main, ["--json"]))
"""
# A bug of ours (no library frame): still one line, called a bug, with the log.
BUG_MAIN = """
from core.cli import run_cli
def main(argv):
    return {}["missing"]
raise SystemExit(run_cli(main, ["--json"]))
"""


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def check_one_line(proc: subprocess.CompletedProcess[str], kind: str, tmp_path: Path) -> None:
    assert proc.returncode == 1, proc.stderr
    ours = own_lines(proc.stderr)  # in-process cases are the Ray driver: workers' lines may reach stderr
    assert "Traceback" not in "\n".join(ours) and "Traceback" not in proc.stdout
    errors = [line for line in ours if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {kind}"), proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["kind"].startswith(kind) and last["error"] in errors[0]
    log = Path(last["log"])
    assert log.parent == tmp_path / "data" / "logs" and "Traceback" in log.read_text()


def test_file_system_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run(["-m", "cluster", "adapters", "--store", str(blocker / "store"), "list", "--json"], tmp_path)
    check_one_line(proc, "file system", tmp_path)
    assert str(blocker / "store") in proc.stderr


def test_milvus_failure(tmp_path: Path) -> None:
    proc = run(["-c", MILVUS_MAIN, str(tmp_path / "m.db")], tmp_path)
    check_one_line(proc, "Milvus", tmp_path)
    assert "does not exist" in proc.stderr


def test_vllm_failure(tmp_path: Path) -> None:
    proc = run(["-c", VLLM_MAIN], tmp_path)
    check_one_line(proc, "vLLM engine", tmp_path)
    assert "temperature must be non-negative" in proc.stderr


def test_ray_failure(ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """In this process, on the session's real Ray: a remote task fails; the line names the task's own error."""
    from core.cli import run_cli

    monkeypatch.setenv("DE_DATA_DIR", str(tmp_path / "data"))

    @ray_local.remote(num_cpus=0)
    def step() -> None:
        raise ValueError("the shard is missing")

    def main(argv: list[str] | None) -> int:
        ray_local.get(step.remote())
        return 0

    assert run_cli(main, ["--json"]) == 1
    out, err = capsys.readouterr()
    proc = subprocess.CompletedProcess([], 1, out, err)
    check_one_line(proc, "Ray", tmp_path)
    assert "ValueError: the shard is missing" in err


def test_a_bug_is_called_one(tmp_path: Path) -> None:
    proc = run(["-c", BUG_MAIN], tmp_path)
    check_one_line(proc, "internal error", tmp_path)
    assert "a bug: please report it" in proc.stderr


@pytest.mark.parametrize(
    "argv", [["adapters", "rollback", "nope@1"], ["adapters", "prune", "x", "--keep", "0"]]
)
def test_user_errors_stay_exit_2_without_a_log(tmp_path: Path, argv: list[str]) -> None:
    proc = run(["-m", "cluster", *argv, "--store", str(tmp_path / "store"), "--json"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert set(json.loads(proc.stdout.strip().splitlines()[-1])) == {"error"}
    assert not (tmp_path / "data" / "logs").exists()


@pytest.mark.parametrize("prog", ["cluster", "retrieval", "serving", "training"])
def test_one_dispatch_style(prog: str, capsys) -> None:
    """Every `python -m <package>` dispatches subcommands the same way: `--help` lists them (exit 0); an unknown
    one is a usage error (exit 2) naming them, not a traceback."""
    import importlib

    main = importlib.import_module(f"{prog}.__main__").main
    subcommands = importlib.import_module(f"{prog}.__main__").SUBCOMMANDS
    if prog in ("serving", "training"):  # the default command's own help follows the list (argparse exits 0)
        with pytest.raises(SystemExit) as exited:
            main(["--help"])
        assert exited.value.code == 0
    else:
        assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in subcommands), out
    if prog in ("serving", "training"):  # these run their default command on unknown arguments
        return
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: usage: python -m {prog} {{") and "'frobnicate'" in err
