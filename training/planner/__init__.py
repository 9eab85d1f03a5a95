"""Memory planner: will this LoRA/QLoRA/full fine-tune fit, per GPU and on the host, and what would fit instead.

from training.planner import PlanSpec, estimate, preflight, recommend
est = preflight(PlanSpec(model="llama-2-70b", method="qlora", gpus=2, gpu_memory_gb=40, zero=3,
                         seq_len=2048, micro_batch=2, gradient_checkpointing=True))
"""

from training.planner.architectures import KNOWN, Arch, resolve
from training.planner.model import Estimate, PlanSpec, estimate
from training.planner.search import preflight, recommend

__all__ = ["KNOWN", "Arch", "Estimate", "PlanSpec", "estimate", "preflight", "recommend", "resolve"]
