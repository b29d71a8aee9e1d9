"""The modality tables spread over the 521 positions: indexing (`table[ids]`) against `index_select`.

    python bench/modality_rows.py                   # the demo's widths (32 and 16) and tiny's 64, 2 threads
    python bench/modality_rows.py --reps 500 --threads 1

Times one forward and backward of each way of building the [521, dim] rows from a [2, dim] table, prints
µs per call and the ratio to indexing, and whether the table's gradients are bit-equal (why
`model/transformer.py` uses `index_select`: docs/method.md, "Training").
"""

from __future__ import annotations

import argparse
import time

import torch
from avtok.model.config import preset
from avtok.model.transformer import AVTransformer
from common import demo_model_sizes

WAYS = {"index": lambda table, ids: table[ids], "index_select": lambda table, ids: torch.index_select(table, 0, ids)}


def time_way(way: str, ids: torch.Tensor, dim: int, reps: int) -> tuple[float, torch.Tensor]:
    """µs per forward + backward, and the table's gradient after one call."""
    table = torch.randn(2, dim, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grad_out = torch.randn(ids.numel(), dim, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        WAYS[way](table, ids).backward(grad_out)
    start = time.perf_counter()
    for _ in range(reps):
        WAYS[way](table, ids).backward(grad_out)
    spent = (time.perf_counter() - start) / reps * 1e6
    table.grad = None
    WAYS[way](table, ids).backward(grad_out)
    return spent, table.grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300, help="timed forward+backward calls per way and width")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64], help="table widths to time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ids = AVTransformer(preset("tiny", **demo_model_sizes())).modality_ids  # the model's own position → table row
    for dim in args.dims:
        base_us, base_grad = time_way("index", ids, dim, args.reps)
        us, grad = time_way("index_select", ids, dim, args.reps)
        print(f"dim {dim:4d}: index {base_us:8.1f} µs, index_select {us:8.1f} µs (x{base_us / us:.2f} faster), "
              f"gradients bit-equal: {torch.equal(grad, base_grad)}")


if __name__ == "__main__":
    main()
