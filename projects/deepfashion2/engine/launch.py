"""
``launch`` that also runs multi-process training on CPU.

Detectron2 v0.6's ``launch`` asserts CUDA and always uses NCCL, and ``create_ddp_model`` always
passes ``device_ids`` (invalid for a CPU module). Detectron2's main branch falls back to gloo when
there is no GPU; this mirrors that change in one place. On a GPU machine the stock path runs
unchanged.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import detectron2.engine.defaults as d2_defaults
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

DEFAULT_TIMEOUT = timedelta(minutes=30)
_stock_create_ddp_model = d2_defaults.create_ddp_model


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """The stock ``create_ddp_model``, without ``device_ids`` for a CPU model."""
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        if next(model.parameters()).device.type == "cpu":
            kwargs["device_ids"] = None
    return _stock_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)


# DefaultTrainer.__init__ looks the function up in its module at call time.
d2_defaults.create_ddp_model = create_ddp_model


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
    if dist_url == "auto":
        assert num_machines == 1, "dist_url=auto not supported in multi-machine jobs."
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        daemon=False,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
    )


def _cpu_worker(
    local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout
):
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
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // procs_per_machine):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        pg = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    comm.synchronize()
    main_func(*args)
