"""Batch merge speed: frames/s for 720p frames with one face, overlay + rct (for DeepFaceLab side by
side see README, Performance: its figure is valid only from the same sitting on the same machine).

Uses a SAEHD liae-ud 128 px model (ae 256, e 64, d 64) with fresh weights (speed does not depend
on training) on 720p frames built from the carphone video, including PNG writing.

    _internal/venv/bin/python bench/merge.py [--frames 96] [--device auto]

frames_per_s is the merging itself (reading, model, compositing, writing); frames_per_s_with_loading
adds loading the model and the faceset, which a long video amortises. Precision "auto" runs the
model in bf16 where the CPU has native bf16 (AVX512-BF16/AMX) and in fp32 elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import make_frames  # noqa: E402
from machine import machine  # noqa: E402

from facelab.nn.device import inference_dtype, resolve_device  # noqa: E402
from facelab.options import resolve_options  # noqa: E402
from facelab.stages.export import ExportOptions, export  # noqa: E402
from facelab.stages.extract import ExtractOptions, extract  # noqa: E402
from facelab.stages.merge import MergeOptions, merge  # noqa: E402
from facelab.training.options import TrainOptions  # noqa: E402
from facelab.training.trainer import Trainer  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-merge-"))
    try:
        ws = Workspace.at(tmp / "workspace")
        ws.create_layout()
        make_frames(ws.frames_dir("dst"), args.frames, "png")
        extract(ws, ExtractOptions(side="dst", image_size=256))
        shutil.copytree(ws.aligned_dir("dst"), ws.aligned_dir("src"), dirs_exist_ok=True)
        opts = resolve_options(TrainOptions, saved={"resolution": 128, "batch_size": 2, "target_iter": 1, "preview": False,
                                                     "device": args.device, "seed": 1})  # fmt: skip
        Trainer(ws.model_dir / "bench_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst")).run(threading.Event(), lambda s: None)
        export(ws, ExportOptions())
        dfm = str(ws.model_dir / "bench_SAEHD.dfm")
        runs = [(2, "", "fp32"), (2, "", "auto"), (2, dfm, "fp32")] + ([(os.cpu_count(), "", "auto")] if (os.cpu_count() or 2) > 2 else [])
        for workers, onnx, precision in runs:
            report = merge(ws, resolve_options(MergeOptions, saved={"device": args.device, "workers": workers, "overwrite": True, "onnx": onnx,
                                                                    "precision": precision, "mask_mode": "learned-prd*dst",
                                                                    "color_transfer": "rct"}))  # fmt: skip
            device = resolve_device(args.device)
            dtype = inference_dtype(device, precision)
            n = report.counts["frames"]
            print(json.dumps({"bench": "merge", "frame": "1280x720", "faces_per_frame": 1, "mode": "overlay", "color": "rct",
                              "model": "saehd liae-ud 128" + (" .dfm (onnxruntime)" if onnx else ""), "workers": workers,
                              "precision": "fp32" if onnx or dtype is None else str(dtype).removeprefix("torch."), "frames": n,
                              "seconds": round(report.seconds, 2), "frames_per_s": round(n / report.counts["merging_seconds"], 2),
                              "frames_per_s_with_loading": round(n / report.seconds, 2),
                              "device": "cpu (onnxruntime)" if onnx else str(device),
                              # where the time goes: the main thread's parts (read, cut, model, xseg, waiting for
                              # the workers) and the workers' thread-seconds (composite, encode, write), per frame
                              "ms_per_frame_by_part": {k.removeprefix("seconds "): round(v * 1000 / max(1, n), 1)
                                                       for k, v in report.counts.items() if k.startswith("seconds ")},
                              **machine()}))  # fmt: skip
            for p in ws.merged_dir.glob("*.png"):
                p.unlink()
        window_timing(ws, args.device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def window_timing(ws: Workspace, device: str, quiet: bool = False) -> dict:
    """The merger window's wait per key press: the first showing of a frame runs the model, later
    key presses only re-composite. Measured through the stage's own render callback."""
    from dataclasses import replace

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no window is shown; the stage only checks one could be
    from facelab.ui import merger

    times: dict[str, list[float]] = {"first": [], "key": []}

    def fake_window(stems, configs, render, default, index=0, contact_sheet=None, swapping=""):  # noqa: ANN001, ANN202
        for i in range(3):
            t = time.perf_counter()
            render(i, default)
            times["first"].append(time.perf_counter() - t)
            for cfg in (replace(default, erode=20), replace(default, mode="hist-match"), replace(default, color_transfer="lct")):
                t = time.perf_counter()
                render(i, cfg)
                times["key"].append(time.perf_counter() - t)
        return False, 0

    real = merger.run_merger_window
    merger.run_merger_window = fake_window
    try:
        merge(ws, resolve_options(MergeOptions, saved={"device": device, "interactive": True, "session": False, "overwrite": True}))
    finally:
        merger.run_merger_window = real
    result = {"bench": "merge-window", "frame": "1280x720", "first_show_ms": round(1000 * statistics.median(times["first"])),
              "key_press_ms": round(1000 * statistics.median(times["key"])), "device": str(resolve_device(device))}  # fmt: skip
    if not quiet:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
