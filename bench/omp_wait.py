"""Two torch jobs at once on a small CPU: OpenMP threads that spin while they wait, or that sleep.

    python bench/omp_wait.py                    # the demo's model, batch 32, 2 threads, 40 steps
    python bench/omp_wait.py --steps 20 --threads 2

Runs `bench/train.py` (one full training step of the demo's model and codebook sizes) alone and
then two copies at once, first with OpenMP's default wait policy and then with OMP_WAIT_POLICY=PASSIVE,
and prints each ms/step and the ratio "two at once / alone" against the same policy's lone run. Why the
test command runs two pytest processes with the passive policy: docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from common import demo_model_sizes

HERE = Path(__file__).resolve().parent
MS = re.compile(r"\(([\d.]+) ms/step")


def train_cmd(steps: int, threads: int, batch: int) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in demo_model_sizes().items()]
    return [sys.executable, str(HERE / "train.py"), "--preset", "tiny", "--device", "cpu", "--precision", "fp32",
            "--batch", str(batch), "--threads", str(threads), "--steps", str(steps), "--warmup", "3", *sets]


def run_together(n: int, cmd: list[str], policy: str | None) -> list[float]:
    """ms/step of each of `n` copies of `cmd` started at once."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(n)]
    out = []
    for p in procs:
        text = p.communicate()[0]
        found = MS.search(text)
        if p.returncode != 0 or not found:
            raise SystemExit(f"bench/train.py failed:\n{text[-2000:]}")
        out.append(float(found.group(1)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    cmd = train_cmd(args.steps, args.threads, args.batch)
    for policy in (None, "PASSIVE"):
        alone = run_together(1, cmd, policy)[0]
        pair = run_together(2, cmd, policy)
        name = policy or "default"
        print(f"OMP_WAIT_POLICY={name}: alone {alone:.0f} ms/step | two at once "
              f"{' and '.join(f'{ms:.0f}' for ms in pair)} ms/step (×{max(pair) / alone:.2f} of alone)", flush=True)


if __name__ == "__main__":
    main()
