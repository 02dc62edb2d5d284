"""
``launch`` that also runs multi-process training without GPUs.

Detectron2 v0.6's ``launch`` asserts CUDA and always uses NCCL; the main branch falls back to gloo.
On v0.6 without GPUs, the processes are started here the way main does it (see
:mod:`deepfashion2.compat`). Without GPUs, each process gets its share of the CPU cores (its
torch threads): processes that each use every core oversubscribe them
(bench/results/demo_processes.json measures the demo's process and thread layouts).
"""

from __future__ import annotations

import functools
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from .. import compat
from ..utils.process import die_with_parent

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
) -> None:
    """``detectron2.engine.launch``; with no GPU, ``num_gpus_per_machine`` CPU processes (gloo)."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available():
        return d2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    threads = max(1, (os.cpu_count() or 1) // num_gpus_per_machine)
    main_func = functools.partial(_with_threads, threads, os.getpid(), main_func)
    if compat.launch_supports_cpu():
        return d2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    if dist_url == "auto":
        assert num_machines == 1, "dist_url=auto not supported in multi-machine jobs."
        dist_url = f"tcp://127.0.0.1:{compat.free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        daemon=False,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
    )


def _with_threads(threads: int, parent: int, main_func, *args):
    """In each CPU process: its share of the cores, and an end with the launching process (a
    killed ``make demo`` leaves no training process behind)."""
    die_with_parent(parent)
    torch.set_num_threads(threads)
    return main_func(*args)


def _cpu_worker(
    local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout
):
    """Detectron2 main's ``_distributed_worker`` on gloo, for v0.6."""
    global_rank = machine_rank * procs_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logging.getLogger(__name__).error(f"Process group URL: {dist_url}")
        raise
    # every process creates every group (torch requires it), and keeps its machine's
    for i in range(world_size // procs_per_machine):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        pg = dist.new_group(ranks)
        if i == machine_rank:
            compat.set_local_process_group(pg)
    comm.synchronize()
    main_func(*args)
