"""Run every benchmark and write bench/results.json and bench/results.md (the README's table).

    _internal/venv/bin/python bench/run_all.py [--device auto] [--quick]

Each bench script prints JSON lines; this collects them with the machine they ran on. DFL's
figures are the ones measured on the same 2-core CPU (quoted in the issues).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DFL = {("extract", "end to end"): "0.26 frames/s", ("train", "liae-ud"): "11150 ms/iter", ("train", "df-ud"): "7930 ms/iter",
       ("train", "df-ud quick96"): "2300 ms/iter", ("merge", "overlay+rct"): "3.95 frames/s"}  # fmt: skip


def run(script: str, *args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [{"bench": script, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def rows(results: list[dict]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for r in results:
        dev = r.get("device", "cpu")
        if "error" in r:
            out.append((r["bench"], "error", r["error"], "", dev))
        elif r["bench"] == "extract" and "frames_per_s" in r:
            what = f"extract 720p, {r['frame_format']} frames, smoothing {'on' if r['smooth'] else 'off'}, identities {'on' if r.get('identity', True) else 'off'}"
            out.append(("extract", what, f"{r['frames_per_s']} frames/s", DFL[("extract", "end to end")], dev))
        elif r["bench"] == "train" and "ms_per_iter" in r:
            name = r["archi"] + (" quick96" if r["model"] == "quick96" else "")
            out.append(("train", f"{r['model']} {r['archi']} {r['resolution']} px, batch {r['batch']}",
                        f"{r['ms_per_iter']} ms/iter ({r['data_share'] * 100:.1f} % data, {r['gflop_per_s']} GFLOP/s, "
                        f"{r['peak_rss_mib']:.0f} MiB)", DFL.get(("train", name), ""), dev))  # fmt: skip
        elif r["bench"] == "train" and r.get("what") == "machine":
            out.append(("machine", "fp32 5x5 conv", f"{r['conv5x5_fp32_gflop_per_s']} GFLOP/s", "", dev))
        elif r["bench"] == "sort":
            out.append(("sort", f"{r['method']}, {r['faces']} faces of {r['face_px']} px", f"{r['seconds']} s", "", dev))
        elif r["bench"] == "xseg":
            out.append(("xseg", "train 256 px batch 4 / apply", f"{r['train_ms_per_iter']} ms/iter, {r['apply_faces_per_s']} faces/s", "", dev))
        elif r["bench"] == "merge":
            out.append(("merge", f"720p one face, overlay + rct, {r['model']} {r.get('precision', 'fp32')}, {r['workers']} workers",
                        f"{r['frames_per_s']} frames/s ({r.get('frames_per_s_with_loading', r['frames_per_s'])} with loading)",
                        DFL[("merge", "overlay+rct")], dev))  # fmt: skip
        elif r["bench"] == "merge-window":
            out.append(("merge", "merger window, 720p: new frame / key press", f"{r['first_show_ms']} ms / {r['key_press_ms']} ms",
                        "over 30 s reported (DFL#5348)", dev))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a rough table in a few minutes)")
    args = ap.parse_args()
    n = ["--iters", "3"] if args.quick else []
    results = (run("extract.py") + run("train.py", "--device", args.device, *n) + run("sort.py", *(["--count", "2000"] if args.quick else []))
               + run("xseg.py", "--device", args.device, *n) + run("merge.py", "--device", args.device))  # fmt: skip
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    (HERE / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    lines = [f"Measured with `bench/run_all.py` on {machine['cores']} cores ({machine['cpu']}); DeepFaceLab on the same CPU for comparison.", "",
             "| stage | what | FaceLab | DeepFaceLab | device |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {' | '.join(r)} |" for r in rows(results)]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
