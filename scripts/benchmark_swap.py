"""Measure one AutoLR swap (copying the winner's state to the other runs) on this machine; prints a Markdown row.

A swap copies the winner's network ``state_dict``, optimizer ``state_dict`` (momentum) and, with isample, its error
maps to every other run (``AutoLR.spread``). The script builds the bundle's population (3 runs) for a setup,
then times ``spread`` from each run in turn, ``--repeats`` times. In one process the copy is in memory; under
``torchrun`` (one run per process, gloo on CPU, NCCL on GPUs) the winner's state is broadcast.

    python scripts/benchmark_swap.py --setup demo
    OMP_NUM_THREADS=1 torchrun --nproc_per_node=3 scripts/benchmark_swap.py --setup demo

``--setup paper`` uses the paper-size network and a 3-case phantom dataset at 1 x 1 x 1.5 mm
(``bundle/data/phantoms-bench``), so the error maps are paper-resolution volumes.
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import time
from pathlib import Path

import fire
import ignite.distributed as idist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_training import bundle_parser  # noqa: E402


def main(setup: str = "demo", repeats: int = 3, run_dir: str = "/tmp/autolr_swap_benchmark") -> None:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        idist.initialize("gloo")
    parser = bundle_parser(setup, num_workers=0, run_dir=run_dir, max_epochs=1)
    autolr = parser.get_parsed_content("autolr#engine")
    local = autolr.members[0]
    state_bytes = len(pickle.dumps(local.swap_state()))
    times = []
    for _ in range(repeats):
        for winner in range(autolr.schedule.runs):
            if distributed:
                idist.barrier()
            start = time.perf_counter()
            autolr.spread(winner)
            if distributed:
                idist.barrier()
            times.append(time.perf_counter() - start)
    if idist.get_rank() == 0:
        mode = f"{idist.get_world_size()} processes, gloo" if distributed else "one process"
        params = sum(p.numel() for p in local.trainer.network.parameters())
        print("| setup | where | parameters | swapped state | swap time, median (min-max) |")
        print("|---|---|---|---|---|")
        print(f"| {setup} | {mode} | {params:,} | {state_bytes / 2**20:.1f} MiB | {statistics.median(times):.3f} s "
              f"({min(times):.3f}-{max(times):.3f}) |")
    if distributed:
        idist.finalize()


if __name__ == "__main__":
    fire.Fire(main)
