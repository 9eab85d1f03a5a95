"""Planner CPU mode against measured peak RSS of real PEFT LoRA training steps (benchmarks/planner_check.py)."""

from __future__ import annotations

import pytest

from benchmarks.planner_check import run

# The planner counts tensors autograd keeps; RSS also holds per-op temporaries (RoPE, SiLU, matmul scratch) and
# oneDNN workspaces, while the planner's RMSNorm fp32-upcast copies do not exist in fp32 training. Observed errors:
# +11% (no checkpointing) everywhere; -6% (checkpointing) run alone, but -26.1%, -26.4% and -26.7% inside the full
# suite on machines of this kind (cause not found; THP opt-out and a second round did not change it). This test
# guards the model's terms, not its calibration (benchmarks/planner_check.py prints that): 35% still fails if a term
# is dropped or doubled (without logits the checkpointed prediction is -60%, without weights -40%).
TOLERANCE = 0.35


@pytest.mark.slow
def test_predicted_cpu_memory_matches_measured_rss() -> None:
    rows = run(steps=2)
    assert len(rows) == 2
    for row in rows:
        assert row["measured_gb"] > 0.05, row  # model states + activations are visible above the baseline
        assert abs(row["error"]) <= TOLERANCE, row
    no_ckpt, ckpt = rows
    assert ckpt["measured_gb"] < no_ckpt["measured_gb"]  # checkpointing measurably saves memory, as predicted
