"""One command that proves a GPU machine: environment, the CUDA tests, speed and memory.

    _internal/venv/bin/python bench/gpu_check.py                  # on the GPU machine, < 8 minutes
    _internal/venv/bin/python bench/gpu_check.py --device cpu --quick   # here, < 3 minutes

Prints one JSON object on stdout (the same keys on every device: parts that need a GPU say
`{"skipped": why}`), and a Markdown summary on stderr and in `<out>/gpu_check.md` (`--out`,
default `bench/gpu_check_out/`, git-ignored). Each part runs on its own: one that fails records
`{"error": ...}` and the others still run, so a short GPU slot is never wasted on one bug.

Parts:
- env: GPU name, compute capability, memory, driver, torch / CUDA / cuDNN, whether this torch has
  kernels for the GPU (an RTX 50xx needs sm_120), onnxruntime's providers, the CPU.
- tests: `pytest -m gpu tests/gpu` on the device (FACELAB_TEST_DEVICE), counts and failures.
- peak: matmul GFLOP/s in fp32 / bf16 / fp16 and the 5x5 conv of SAEHD's encoder, measured here.
- train: ms per iteration, faces/s, the data path's share, GFLOP/s and its share of this run's
  peak for the precision (the best of its matmul and 5x5 conv), peak GPU memory; SAEHD liae-udt 256 bf16 batch 8 and 16, df-ud 128,
  Quick96, and XSeg (--quick on a CPU: the same models at 64-128 px, batch 2, fewer steps).
- memory: peak of a fresh process training liae-ud 256 batch 4 (128 px with --quick) with and
  without gradient checkpointing, through the same probe as `--batch-size auto`.
- extract / merge: frames/s end to end at 720p and 1080p (one face), and the merger window's
  re-render time after a key press.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from train import _sync, build_workspace, checkpointing_memory, conv_throughput  # noqa: E402

from facelab.nn.device import cpu_has_native_bf16, cpu_name, missing_kernels, resolve_device  # noqa: E402
from facelab.options import resolve_options  # noqa: E402
from facelab.training.options import TrainOptions  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def part(fn):  # noqa: ANN001, ANN201
    """Run one part; its failure is recorded, not raised."""
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - the check goes on with the next part
        out = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:400], "trace": traceback.format_exc()[-1500:]}
    if isinstance(out, dict):
        out.setdefault("seconds", round(time.perf_counter() - t, 1))
    return out


# ---------------------------------------------------------------- env


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16(),
           "device": str(device)}  # fmt: skip
    try:
        import onnxruntime as ort

        env["onnxruntime"], env["onnxruntime_providers"] = ort.__version__, ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    if device.type != "cuda":
        env["gpu"] = {"skipped": f"no GPU asked for (--device {device})"}
        return env
    p = torch.cuda.get_device_properties(device)
    env["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 2),
                  "multiprocessors": p.multi_processor_count, "torch_arch_list": torch.cuda.get_arch_list(),
                  "bf16_supported": torch.cuda.is_bf16_supported(), "count": torch.cuda.device_count()}  # fmt: skip
    why = missing_kernels(device)
    env["gpu"]["kernels_for_this_gpu"] = why is None
    if why:
        env["gpu"]["WARNING"] = why
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)  # fmt: skip
        env["gpu"]["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        env["gpu"]["nvidia_smi"] = f"not run: {exc}"
    return env


# ---------------------------------------------------------------- tests


def gpu_tests(device: torch.device, out: Path, quick: bool) -> dict:
    xml = out / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", str(REPO / "tests" / "gpu"), "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}"]  # fmt: skip
    env = {**os.environ, "FACELAB_TEST_DEVICE": str(device)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420 if quick else 300, env=env, cwd=REPO, check=False)
    if not xml.exists():
        return {"error": "pytest wrote no report", "output": proc.stdout[-2000:] + proc.stderr[-1000:]}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed, skipped = [], []
    for case in suite.iter("testcase"):
        name = case.get("name")
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            failed.append({"test": name, "message": (node.get("message") or "")[:300]})
        elif case.find("skipped") is not None:
            skipped.append({"test": name, "why": case.find("skipped").get("message", "")[:200]})
    total = int(suite.get("tests", 0))
    return {"device": str(device), "collected": total, "passed": total - len(failed) - len(skipped), "failed": failed,
            "skipped": skipped, "exit_code": proc.returncode}  # fmt: skip


# ---------------------------------------------------------------- peak throughput


def matmul_throughput(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    with torch.no_grad():
        for _ in range(2):
            a @ b
        _sync(device)
        reps = 10 if device.type == "cuda" else 3
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def peaks(device: torch.device, quick: bool) -> dict:
    n = 8192 if device.type == "cuda" else 2048
    out = {"matmul_n": n}
    for name, dtype in DTYPES.items():
        if device.type == "cpu" and name == "fp16":
            out[f"matmul_{name}_gflop_per_s"] = {"skipped": "fp16 is a GPU precision here"}
            continue
        out[f"matmul_{name}_gflop_per_s"] = round(matmul_throughput(device, dtype, n), 1)
    out["conv5x5_fp32_gflop_per_s"] = round(conv_throughput(device), 1)
    out["conv5x5_bf16_gflop_per_s"] = round(conv_throughput(device, torch.bfloat16), 1)
    return out


# ---------------------------------------------------------------- training


def train_configs(device: torch.device, quick: bool) -> list[dict]:
    big = {"ae_dims": 256, "e_dims": 64, "d_dims": 64, "d_mask_dims": 22}
    if quick and device.type == "cpu":  # the same four, small enough for a CPU, named as they are
        small = {"resolution": 64, "ae_dims": 64, "e_dims": 32, "d_dims": 32, "d_mask_dims": 16, "batch_size": 2}
        return [{"name": "liae-udt 64 bf16 b2 (small dims)", **small, "archi": "liae-udt", "precision": "bf16"},
                {"name": "liae-udt 64 bf16 b4 (small dims)", **small, "archi": "liae-udt", "precision": "bf16", "batch_size": 4},
                {"name": "df-ud 64 b2 (small dims)", **small, "archi": "df-ud", "precision": "auto"},
                {"name": "quick96", "model": "quick96", "precision": "auto"}]  # fmt: skip
    return [{"name": "liae-udt 256 bf16 b8", **big, "resolution": 256, "archi": "liae-udt", "precision": "bf16", "batch_size": 8},
            {"name": "liae-udt 256 bf16 b16", **big, "resolution": 256, "archi": "liae-udt", "precision": "bf16", "batch_size": 16},
            {"name": "df-ud 128 b8", **big, "resolution": 128, "archi": "df-ud", "precision": "auto", "batch_size": 8},
            {"name": "quick96", "model": "quick96", "precision": "auto"}]  # fmt: skip


def _peak_for(peak: dict, precision: str) -> float | None:
    """This run's best measured GFLOP/s in `precision` (the matmul or SAEHD's 5x5 conv)."""
    found = [v for k, v in peak.items() if k.endswith(f"{precision}_gflop_per_s") and isinstance(v, (int, float))]
    return max(found) if found else None


def train_speed(ws, device: torch.device, quick: bool, peak: dict, tmp: Path) -> list[dict]:  # noqa: ANN001
    from facelab.nn.augment import augment
    from facelab.training.trainer import Trainer

    iters = 2 if quick else 8
    results = []
    for cfg in train_configs(device, quick):
        def one(cfg=cfg) -> dict:
            name = cfg["name"]
            saved = {k: v for k, v in cfg.items() if k != "name"}
            opts = resolve_options(TrainOptions, saved={"face_type": "f", "masked_training": True, "random_warp": True, "seed": 1,
                                                        "device": str(device), **saved})  # fmt: skip
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            trainer = Trainer(tmp / f"{name.replace(' ', '_')}_model", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
            for _ in range(1 if quick else 3):
                trainer.step()
            _sync(device)
            times, data_times = [], []
            for _ in range(iters):
                t = time.perf_counter()
                trainer.step()
                _sync(device)
                times.append(time.perf_counter() - t)
            for _ in range(iters):
                t = time.perf_counter()
                for side in ("src", "dst"):
                    augment(trainer._batch(side), trainer.aug[side], trainer.gen)
                _sync(device)
                data_times.append(time.perf_counter() - t)
            sec = statistics.median(times)
            batch = trainer._batch_size("src")
            gflop = trainer.model.gflop_per_sample() * 3 * 2 * batch
            precision = str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else "fp32"
            prec_key = {"bfloat16": "bf16", "float16": "fp16"}.get(precision, "fp32")
            limit = _peak_for(peak, prec_key)
            return {"config": name, "model": opts.model, "archi": trainer.arch.archi, "resolution": trainer.res, "batch": batch,
                    "precision": precision, "ms_per_iter": round(sec * 1000, 1), "faces_per_s": round(2 * batch / sec, 2),
                    "data_share": round(statistics.median(data_times) / sec, 3), "gflop_per_iter": round(gflop, 1),
                    "gflop_per_s": round(gflop / sec, 1),
                    "share_of_peak": round(gflop / sec / limit, 3) if limit else None,
                    "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else
                    {"skipped": "CPU: see the memory part (a fresh process per configuration)"}}  # fmt: skip

        results.append(part(one))
    results.append(part(lambda: xseg_speed(ws, device, quick, tmp)))
    return results


def xseg_speed(ws, device: torch.device, quick: bool, tmp: Path) -> dict:  # noqa: ANN001
    from dataclasses import replace

    import cv2
    import numpy as np

    from facelab.io.faceimage import XSegPolygon, read_meta, write_meta
    from facelab.io.frames import list_images
    from facelab.training.xseg import XSegTrainer, XSegTrainOptions

    for p in list_images(ws.aligned_dir("dst")):  # labels: the landmark hull
        meta = read_meta(p)
        write_meta(p, replace(meta, xseg_polygons=(XSegPolygon(True, cv2.convexHull(meta.landmarks)[:, 0].astype(np.float32)),)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    opts = resolve_options(XSegTrainOptions, saved={"device": str(device), "preview": False, "seed": 1})
    trainer = XSegTrainer(tmp / "XSeg", opts, [ws.aligned_dir("src"), ws.aligned_dir("dst")])
    trainer.step()
    _sync(device)
    times = []
    for _ in range(2 if quick else 6):
        t = time.perf_counter()
        trainer.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    return {"config": "xseg 256", "batch": opts.batch_size, "ms_per_iter": round(sec * 1000, 1),
            "faces_per_s": round(opts.batch_size / sec, 2),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else
            {"skipped": "CPU: not measured per configuration"}}  # fmt: skip


# ---------------------------------------------------------------- memory with and without checkpointing


# ---------------------------------------------------------------- extraction and merging


def _frames(folder: Path, count: int, size: tuple[int, int]) -> None:
    import cv2

    from extract import make_frames

    make_frames(folder, count, "png")
    if size != (1280, 720):
        for p in folder.glob("*.png"):
            cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_CUBIC))


def extract_and_merge(device: torch.device, quick: bool, tmp: Path) -> dict:
    from facelab.stages.extract import ExtractOptions, extract
    from facelab.stages.merge import MergeOptions, merge
    from facelab.training.trainer import Trainer
    from facelab.workspace import Workspace

    frames = 16 if quick else 96
    out = {}
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        ws = Workspace.at(tmp / f"ws_{label}")
        ws.create_layout()
        _frames(ws.frames_dir("dst"), frames, size)
        report = extract(ws, ExtractOptions(side="dst", image_size=256, device=str(device)))
        out[f"extract_{label}_frames_per_s"] = round(frames / report.seconds, 2)
        shutil.copytree(ws.aligned_dir("dst"), ws.aligned_dir("src"), dirs_exist_ok=True)
        if label == "720p":
            opts = resolve_options(TrainOptions, saved={"resolution": 128, "batch_size": 2, "target_iter": 1, "preview": False,
                                                         "device": str(device), "seed": 1})  # fmt: skip
            Trainer(ws.model_dir / "bench_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst")).run(threading.Event(), lambda s: None)
            model_dir = ws.model_dir
        else:
            shutil.copytree(model_dir / "bench_SAEHD", ws.model_dir / "bench_SAEHD")
        report = merge(ws, resolve_options(MergeOptions, saved={"device": str(device), "overwrite": True, "mask_mode": "learned-prd*dst",
                                                                "color_transfer": "rct"}))  # fmt: skip
        out[f"merge_{label}_frames_per_s"] = round(report.counts["frames"] / report.counts["merging_seconds"], 2)
        if label == "720p":
            from merge import window_timing

            out["merger_window"] = window_timing(ws, str(device), quiet=True)
    out["extract_note"] = "the embedded detector and landmarker run on the CPU (TFLite); S3FD/FAN use the GPU"
    return out


# ---------------------------------------------------------------- summary


def markdown(result: dict) -> str:
    env = result["env"]
    gpu = env.get("gpu", {})
    lines = ["# FaceLab GPU check", "", f"- device: {env.get('device')}; torch {env.get('torch')}, CUDA {env.get('cuda')}",
             f"- GPU: {gpu.get('name', gpu.get('skipped'))} {gpu.get('compute_capability', '')} "
             f"{gpu.get('memory_gib', '')} GiB; kernels for it: {gpu.get('kernels_for_this_gpu', 'n/a')}",
             f"- CPU: {env.get('cpu')} ({env.get('cpu_threads')} threads, native bf16: {env.get('cpu_native_bf16')})"]  # fmt: skip
    if gpu.get("WARNING"):
        lines.append(f"- **WARNING: {gpu['WARNING']}**")
    t = result["tests"]
    lines += ["", "## Tests (pytest -m gpu)", f"{t.get('passed')} passed of {t.get('collected')}, "
              f"{len(t.get('failed', []))} failed, {len(t.get('skipped', []))} skipped" if "error" not in t else f"error: {t['error']}"]  # fmt: skip
    lines += [f"- FAILED {f['test']}: {f['message']}" for f in t.get("failed", [])]
    lines += ["", "## Training", "", "| config | precision | batch | ms/iter | faces/s | data share | GFLOP/s | share of peak | peak GPU MiB |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["train"]:
        if "error" in r:
            lines.append(f"| {r.get('config', '?')} | error: {r['error'][:80]} |")
            continue
        peak = r.get("peak_gpu_mib")
        lines.append(f"| {r['config']} | {r.get('precision', '')} | {r['batch']} | {r['ms_per_iter']} | {r['faces_per_s']} | "
                     f"{r.get('data_share', '')} | {r.get('gflop_per_s', '')} | {r.get('share_of_peak', '')} | "
                     f"{peak if not isinstance(peak, dict) else '-'} |")  # fmt: skip
    m = result["memory"]
    if "error" not in m:
        lines += ["", "## Memory", f"{m['config']} on {m['device']} ({m['what']}): {m['without_checkpointing']['peak_mib']:.0f} MiB "
                  f"without gradient checkpointing, {m['with_checkpointing']['peak_mib']:.0f} MiB with it ({m['reduction']:.0%} less)"]  # fmt: skip
    em = result["extract_merge"]
    if "error" not in em:
        w = em.get("merger_window", {})
        lines += ["", "## Extraction and merging (frames/s, one face)",
                  f"extract 720p {em['extract_720p_frames_per_s']}, 1080p {em['extract_1080p_frames_per_s']}; "
                  f"merge 720p {em['merge_720p_frames_per_s']}, 1080p {em['merge_1080p_frames_per_s']}; "
                  f"merger window: first show {w.get('first_show_ms')} ms, key press {w.get('key_press_ms')} ms"]  # fmt: skip
    for name in ("memory", "extract_merge", "peak"):
        if "error" in result[name]:
            lines += ["", f"## {name}: error", result[name]["error"]]
    p = result["peak"]
    if "error" not in p:
        lines += ["", "## Peak", ", ".join(f"{k} {v}" for k, v in p.items() if not isinstance(v, dict) and k != "seconds")]
    lines += ["", f"Total {result['seconds']} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu (default cuda)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and frames (the CPU self-check)")
    ap.add_argument("--out", default=str(HERE / "gpu_check_out"))
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(args.device)
    except Exception as exc:  # noqa: BLE001 - no such device: say so in the same JSON shape
        print(json.dumps({"error": str(exc)}))
        return 2
    result: dict = {"check": "gpu_check", "quick": args.quick, "env": part(lambda: environment(device))}
    result["tests"] = {"skipped": "--skip-tests"} if args.skip_tests else part(lambda: gpu_tests(device, out, args.quick))
    tmp = Path(tempfile.mkdtemp(prefix="facelab-gpu-check-"))
    try:
        result["peak"] = part(lambda: peaks(device, args.quick))
        ws = build_workspace(tmp)
        result["memory"] = part(lambda: checkpointing_memory(ws, device, 128 if args.quick else 256, tmp))
        result["train"] = train_speed(ws, device, args.quick, result["peak"], tmp)
        result["extract_merge"] = part(lambda: extract_and_merge(device, args.quick, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    summary = markdown(result)
    (out / "gpu_check.md").write_text(summary, encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result))
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
