"""Optimizer state per trial at MER2024's dims: what Adam keeps for the parameters it updates.

Not a registered benchmark (it counts, it does not time; nothing to compare against in the same
run but the other arm): run by hand with `python -m benchmarks.optimizer_state` and copied into
`benchmarks/RESULTS.md` (section "optimizer state").

For each arm it builds the trainer's own `TrainNet` (`fresh_net`) and optimizer (`make_optimizer`)
for `mer_core/configs/mrccl.yaml` at dims audio 1024, text 5120, video 768 and 6 classes, takes one
step on zero gradients (Adam allocates its moments lazily, on the first step) and sums the bytes of
the state tensors it then holds (`exp_avg`, `exp_avg_sq`; the per-parameter `step` counters are
left out, they are scalars). Arms:

- `attention_shortcut: true`: the default, length-1 `FastEncoderLayer`s;
- `attention_shortcut: false`: `nn.TransformerEncoderLayer`s, which hold exactly the parameters the
  length-1 layer held before it dropped its unused Q/K rows (same names, shapes and seeded values).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mer_core.configs import ExperimentConfig, load_config
from mer_core.train.objective import fresh_net
from mer_core.train.single import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
MER2024_DIMS = {"audio": 1024, "text": 5120, "video": 768}
N_CLASSES = 6
MB = 1e6  # decimal megabytes, as the report states them


def measure(cfg: ExperimentConfig) -> dict[str, float]:
    """Trainable parameter elements and the bytes of Adam's moments after one step, for `cfg`."""
    net = fresh_net(cfg, MER2024_DIMS, N_CLASSES, torch.device("cpu"), seed=0)
    opt = make_optimizer(net, cfg.optim)
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    state = sum(t.nbytes for s in opt.state.values() for k, t in s.items() if k != "step")
    return {"params": sum(p.numel() for p in params), "state_mb": state / MB}


def main() -> None:
    """Prints one line per arm."""
    base = ROOT / "mer_core" / "configs" / "mrccl.yaml"
    for shortcut in (True, False):
        cfg = load_config(base, [f"model.attention_shortcut={str(shortcut).lower()}"])
        got = measure(cfg)
        print(
            f"attention_shortcut={shortcut}: {got['params']:,} trainable parameter elements, "
            f"Adam state {got['state_mb']:.1f} MB ({got['state_mb'] / (got['params'] * 4 / MB):.2f} x fp32 parameters)"
        )


if __name__ == "__main__":
    main()
