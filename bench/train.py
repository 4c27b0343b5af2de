"""Training speed: one JSON line per configuration (DFL's reference set-ups, issue "training core").

SAEHD liae-ud and df-ud at 128 px full face, ae 256, e 64, d 64, mask 22, batch 8, masked
training, random warp, AdaBelief; Quick96 at batch 4. Plus this machine's fp32 5x5 conv
throughput, so a step reads as a share of the machine's limit.

    _internal/venv/bin/python bench/train.py [--iters 6] [--device auto] [--precision fp32|bf16|auto]
        [--configs liae-ud,df-ud,quick96] [--profile]
    _internal/venv/bin/python bench/train.py --memory [--memory-resolution 256] [--memory-batch 4]

`--memory`: the peak memory of a fresh process training liae-ud (ae 256, e 64, d 64) at batch 4,
with and without gradient checkpointing (peak RSS on the CPU, PyTorch's reserved memory on a GPU),
measured by the same probe as `--batch-size auto`, and the step time of each.

Keys: model, archi, ms_per_iter, data_ms_per_iter, faces_per_s, gflop_per_iter, gflop_per_s,
peak_rss_mib, device, the machine (CPU model, cores, flags), and `limit`: this machine's GFLOP/s,
measured in the same run, on exactly the convolutions of the configuration's step (each shape
timed alone in its faster memory layout, weighted by its FLOPs) and on a large matmul, for fp32 and
bf16, with `share_of_limit`: the step's GFLOP/s as a share of the forward conv-mix limit of the
precision it ran in, and `share_of_train_limit`: as a share of the same convolutions run forward
and backward (what the step's convolutions reach at best; on oneDNN backward kernels run at about
half the forward rate in bf16, so the first share cannot approach 1 there).
`--profile` adds `profile`: the step's time by op family (conv forward / backward, other ops,
losses, optimiser, data, copies and reorders) from torch.profiler (bench/profile_step.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import conv_mix_limit, conv_shapes, machine  # noqa: E402
from media import media_file  # noqa: E402
from profile_step import profile_steps  # noqa: E402

from facelab.nn.augment import augment  # noqa: E402
from facelab.options import resolve_options  # noqa: E402
from facelab.stages.extract import ExtractOptions, extract  # noqa: E402
from facelab.training.options import TrainOptions  # noqa: E402
from facelab.training.trainer import Trainer  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402

CONFIGS = {
    "liae-ud": {"model": "saehd", "archi": "liae-ud"},
    "df-ud": {"model": "saehd", "archi": "df-ud"},
    "quick96": {"model": "quick96"},
}
COMMON = {"resolution": 128, "face_type": "f", "ae_dims": 256, "e_dims": 64, "d_dims": 64, "d_mask_dims": 22,
          "batch_size": 8, "masked_training": True, "random_warp": True, "adabelief": True, "seed": 1}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def conv_throughput(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a 5x5, 256 -> 256 channel conv on 8 x 32 x 32 maps (the shape of SAEHD's encoder)."""
    x = torch.randn(8, 256, 32, 32, device=device, dtype=dtype)
    conv = torch.nn.Conv2d(256, 256, 5, padding=2).to(device, dtype)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        _sync(device)
        t = time.perf_counter()
        n = 5
        for _ in range(n):
            conv(x)
        _sync(device)
    seconds = (time.perf_counter() - t) / n
    return 2 * 8 * 256 * 32 * 32 * 256 * 25 / seconds / 1e9


def build_workspace(root: Path) -> Workspace:
    ws = Workspace.at(root / "workspace")
    ws.create_layout()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg"):
        shutil.copy(media_file(name), ws.frames_dir("src") / name)
    cap = cv2.VideoCapture(str(media_file("carphone.mp4")))
    for i in range(120):
        ok, frame = cap.read()
        if ok and i % 4 == 0:
            cv2.imwrite(str(ws.frames_dir("dst") / f"{i + 1:05d}.png"), cv2.resize(frame, None, fx=2, fy=2))
    for side in ("src", "dst"):
        extract(ws, ExtractOptions(side=side, image_size=256))
    return ws


def checkpointing_memory(ws: Workspace, device: torch.device, res: int, tmp: Path, batch: int = 4) -> dict:
    """Peak memory of liae-ud `res` at `batch` in a fresh process, with and without gradient checkpointing."""
    from facelab.models import store
    from facelab.options import options_to_dict
    from facelab.training.memory import _build_caches, probe

    out = {"bench": "train-memory", "config": f"liae-ud {res} batch {batch}, ae 256 e 64 d 64, fp32", "device": str(device)}
    for ckpt in (False, True):
        opts = resolve_options(TrainOptions, saved={"resolution": res, "archi": "liae-ud", "batch_size": batch, "seed": 1, "device": str(device),
                                                    "gradient_checkpointing": ckpt, "precision": "fp32"})  # fmt: skip
        folder = tmp / f"mem_{int(ckpt)}_SAEHD"
        _build_caches(folder, opts, ws.aligned_dir("src"), ws.aligned_dir("dst"), res, store.spec("saehd").face_type(options_to_dict(opts)))
        t = time.perf_counter()
        fit = probe(folder, options_to_dict(opts), ws.aligned_dir("src"), ws.aligned_dir("dst"), batches=(batch,))
        out["with_checkpointing" if ckpt else "without_checkpointing"] = {"peak_mib": fit.probes[0][1], "step_ms": round(fit.step_seconds[0] * 1000),
                                                                          "probe_seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
    a, b = out["without_checkpointing"]["peak_mib"], out["with_checkpointing"]["peak_mib"]
    out["reduction"] = round(1 - b / a, 3)
    out["slowdown"] = round(out["with_checkpointing"]["step_ms"] / out["without_checkpointing"]["step_ms"], 2)
    out["what"] = "GPU memory reserved by PyTorch" if device.type == "cuda" else "peak RSS of the whole process"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--memory", action="store_true", help="peak memory with and without gradient checkpointing instead")
    ap.add_argument("--memory-resolution", type=int, default=256)
    ap.add_argument("--memory-batch", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="also the step's time by op family (torch.profiler)")
    ap.add_argument("--extra", default="", help="extra options as JSON, e.g. '{\"resolution\": 256, \"archi\": \"liae-udt\"}'")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-train-"))
    try:
        ws = build_workspace(tmp)
        if args.memory:
            from facelab.nn.device import resolve_device

            print(json.dumps(checkpointing_memory(ws, resolve_device(args.device), args.memory_resolution, tmp, args.memory_batch)))
            return
        for name in args.configs.split(","):
            saved = {**COMMON, **CONFIGS[name], "device": args.device, "precision": args.precision, **json.loads(args.extra or "{}")}
            opts = resolve_options(TrainOptions, saved=saved)
            trainer = Trainer(tmp / f"{name}_model", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
            device = trainer.device
            for _ in range(2):  # warm-up: allocations, kernels
                trainer.step()
            _sync(device)
            times = []
            for _ in range(args.iters):
                t = time.perf_counter()
                trainer.step()
                _sync(device)
                times.append(time.perf_counter() - t)
            data_times = []
            for _ in range(args.iters):  # the data path alone: sampling + device augmentation
                t = time.perf_counter()
                for side in ("src", "dst"):
                    augment(trainer._batch(side), trainer.aug[side], trainer.gen)
                _sync(device)
                data_times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1000
            batch = trainer._batch_size("src")
            gflop = trainer.model.gflop_per_sample() * 3 * 2 * batch  # forward + backward (2x), both sides
            probe = trainer.data["src"].gather(torch.arange(batch) % len(trainer.data["src"].cache))[:, :3].float().div(255)
            limit = conv_mix_limit(conv_shapes(trainer.model, probe, probe), device)
            used = "bf16" if trainer.amp_dtype == torch.bfloat16 else "fp32"
            extra = {"profile": profile_steps(trainer)} if args.profile else {}
            print(json.dumps({
                "bench": "train", "model": opts.model, "archi": trainer.arch.archi, "resolution": trainer.res,
                "batch": batch, "ms_per_iter": round(ms, 1), "data_ms_per_iter": round(statistics.median(data_times) * 1000, 1),
                "data_share": round(statistics.median(data_times) / statistics.median(times), 3),
                "faces_per_s": round(2 * batch / (ms / 1000), 2), "gflop_per_iter": round(gflop, 1),
                "gflop_per_s": round(gflop / (ms / 1000), 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
                "device": str(device), "precision": str(trainer.amp_dtype or "fp32"), "threads": torch.get_num_threads(),
                "limit": limit, "share_of_limit": round(gflop / (ms / 1000) / limit[used]["conv_mix_gflop_per_s"], 3),
                "share_of_train_limit": round(gflop / (ms / 1000) / limit[used]["conv_mix_train_gflop_per_s"], 3),
                **extra, **machine(),
            }))  # fmt: skip
            sys.stdout.flush()
        device = trainer.device
        print(json.dumps({"bench": "train", "what": "machine", "device": str(device), **machine(),
                          "conv5x5_fp32_gflop_per_s": round(conv_throughput(device), 1),
                          **({"conv5x5_bf16_gflop_per_s": round(conv_throughput(device, torch.bfloat16), 1)} if device.type == "cuda" else {})}))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
