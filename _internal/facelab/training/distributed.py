"""Multi-GPU training with torch DistributedDataParallel (dfl-spec §8.5 "Multi-GPU", done properly).

`--gpus 0,1` starts one process per device (torch.multiprocessing, loopback rendezvous); a run
under `torchrun` is recognised from its environment. Each rank:
- draws the same global batch and the same augmentation as a single process would (one seeded
  generator, identical on every rank) and trains on its slice of it;
- scales its loss by the world size, so DDP's averaged gradients equal the single-process gradient
  of the whole batch: the run follows the same trajectory as one process with the same batch;
- agrees with the others, at each loss check, on saving and stopping (rank 0 decides), so no
  collective is ever skipped by one rank. Only rank 0 writes checkpoints, previews and logs.
`--gpus cpu,cpu` runs two CPU processes with the gloo backend (how the tests check all this).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_devices(gpus: str) -> list[str]:
    """'0,1' -> ['cuda:0', 'cuda:1']; 'cpu,cpu' -> two CPU workers; '' -> []."""
    out = []
    for item in (g.strip() for g in gpus.split(",") if g.strip()):
        out.append(f"cuda:{item}" if item.isdigit() else item)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, devices: list[str], port: int, model_dir: str, opts_dict: dict, src: str, dst: str, queue) -> None:  # noqa: ANN001
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    backend = "nccl" if devices[rank].startswith("cuda") else "gloo"
    if devices[rank].startswith("cuda"):
        torch.cuda.set_device(torch.device(devices[rank]))
    dist.init_process_group(backend, rank=rank, world_size=len(devices))
    try:
        import threading

        from facelab.log import setup_logging
        from facelab.options import options_from_dict
        from facelab.training.options import TrainOptions
        from facelab.training.trainer import Trainer

        setup_logging()
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // len(devices)))
        opts = options_from_dict(TrainOptions, {**opts_dict, "device": devices[rank], "preview": False})
        trainer = Trainer(Path(model_dir), opts, Path(src), Path(dst), Rank(rank, len(devices)))
        import logging

        console = logging.getLogger("facelab.training").info if rank == 0 else (lambda line: None)
        result = trainer.run(threading.Event(), console)
        if rank == 0:
            queue.put(result)
    finally:
        dist.destroy_process_group()


def launch(devices: list[str], model_dir: Path, opts_dict: dict, src: Path, dst: Path) -> dict:
    """Train on `devices`, one process each; returns rank 0's result."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_worker, args=(devices, _free_port(), str(model_dir), opts_dict, str(src), str(dst), queue),
             nprocs=len(devices), join=True)  # fmt: skip
    return queue.get()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
