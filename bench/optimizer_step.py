"""One AdamW step on the CPU: the per-tensor loop (torch's CPU default), multi-tensor (foreach) and fused.

    python bench/optimizer_step.py                  # the demo's model, 200 steps, 1 thread
    python bench/optimizer_step.py --steps 500 --threads 2

Builds the demo's model and the parameter groups of `avtok.model.train.make_optimizer`, gives
every parameter the same random gradients in each variant, and prints ms per `step()`, the ratio to the
loop, and whether the weights after the last step are bit-equal to the loop's (why `avtok train` uses
foreach on the CPU: model/train.py `make_optimizer`).
"""

from __future__ import annotations

import argparse
import time

import torch
from avtok.model.config import preset
from avtok.model.train import TrainConfig, make_optimizer
from avtok.model.transformer import AVTransformer
from common import demo_model_sizes

VARIANTS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def demo_model() -> AVTransformer:
    cfg = preset("tiny", **demo_model_sizes())
    torch.manual_seed(0)
    return AVTransformer(cfg)


def run(variant: dict, steps: int) -> tuple[list[torch.Tensor], float]:
    """(weights after `steps` updates, mean seconds per step) with AdamW(**variant)."""
    model = demo_model()
    tc = TrainConfig(shards="", out="")
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}  # avtok train's groups
              for g in make_optimizer(model, 2e-3, tc, torch.device("cpu")).param_groups]
    opt = torch.optim.AdamW(groups, lr=2e-3, betas=tc.betas, **variant)
    g = torch.Generator().manual_seed(1)
    params = [p for group in groups for p in group["params"]]
    spent = 0.0
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        t0 = time.perf_counter()
        opt.step()
        spent += time.perf_counter() - t0
    return [p.detach().clone() for p in params], spent / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run(VARIANTS["loop"], 5)  # warm-up: first-call costs belong to no variant
    base_w, base_s = run(VARIANTS["loop"], args.steps)
    for name, variant in VARIANTS.items():
        w, s = (base_w, base_s) if name == "loop" else run(variant, args.steps)
        same = all(torch.equal(a, b) for a, b in zip(base_w, w, strict=True))
        print(f"{name:8s} {s * 1e3:6.2f} ms/step  ×{base_s / s:4.2f} vs loop  weights {'equal' if same else 'differ'}")


if __name__ == "__main__":
    main()
