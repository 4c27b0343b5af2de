"""Run every benchmark and write bench/results.json and bench/results.md (the README's table).

    _internal/venv/bin/python bench/run_all.py [--device auto] [--quick]

Each bench script prints JSON lines; this collects them with the machine they ran on (CPU model
and flags, `bench/machine.py`). The table holds this machine's figures only: a comparison with
DeepFaceLab is valid only when both ran side by side on one machine (README, "Performance").

    _internal/venv/bin/python bench/run_all.py --rewrite   re-renders results.md from results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
def run(script: str, *args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [{"bench": script, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def rows(results: list[dict]) -> list[tuple[str, str, str, str]]:
    out = []
    for r in results:
        dev = r.get("device", "cpu")
        if "error" in r:
            out.append((r["bench"], "error", r["error"], dev))
        elif r["bench"] == "extract" and "frames_per_s" in r:
            what = f"extract 720p, {r['frame_format']} frames, smoothing {'on' if r['smooth'] else 'off'}, identities {'on' if r.get('identity', False) else 'off'}"
            out.append(("extract", what, f"{r['frames_per_s']} frames/s", dev))
        elif r["bench"] == "landmarks":  # errors in % of the eye distance
            against_dlib = "" if r["landmarker"].startswith("dlib68") else (  # dlib is that reference
                f"against dlib on {r['faces']} photo faces: jaw {r['jaw_pct']} %, inner 51 {r['nme51_pct']} %; ")
            out.append(("landmarks", r["landmarker"].split(" (the reference")[0] + "; point errors in % of the eye distance",
                        f"{against_dlib}against 3 hand-annotated faces: jaw {r['truth_jaw_pct']} %, all 68 "
                        f"{r['truth_nme68_pct']} %, inner 51 {r['truth_nme51_pct']} %; video jitter {r['jitter_raw_pct_iod']} % "
                        f"({r['jitter_smoothed_pct_iod']} % smoothed); {r['ms_per_face']} ms a face", dev))  # fmt: skip
        elif r["bench"] == "train" and "ms_per_iter" in r:
            precision = str(r.get("precision", "fp32")).removeprefix("torch.")
            out.append(("train", f"{r['model']} {r['archi']} {r['resolution']} px, batch {r['batch']}, {precision}",
                        f"{r['ms_per_iter']} ms/iter ({r['data_share'] * 100:.1f} % data, {r['gflop_per_s']} GFLOP/s"
                        + (f" = {r['share_of_limit'] * 100:.0f} % of the limit" if "share_of_limit" in r else "")
                        + (f", {r['share_of_train_limit'] * 100:.0f} % of the forward+backward limit" if "share_of_train_limit" in r else "")
                        + ", "
                        f"{r['peak_rss_mib']:.0f} MiB)", dev))  # fmt: skip
        elif r["bench"] == "train" and r.get("what") == "machine":
            out.append(("machine", "fp32 5x5 conv", f"{r['conv5x5_fp32_gflop_per_s']} GFLOP/s", dev))
        elif r["bench"] == "sort":
            out.append(("sort", f"{r['method']}, {r['faces']} faces of {r['face_px']} px", f"{r['seconds']} s", dev))
        elif r["bench"] == "xseg":
            out.append(("xseg", "train 256 px batch 4 / apply", f"{r['train_ms_per_iter']} ms/iter, {r['apply_faces_per_s']} faces/s", dev))
        elif r["bench"] == "merge":
            out.append(("merge", f"720p one face, overlay + rct, {r['model']} {r.get('precision', 'fp32')}, {r['workers']} workers",
                        f"{r['frames_per_s']} frames/s ({r.get('frames_per_s_with_loading', r['frames_per_s'])} with loading)",
                        dev))  # fmt: skip
        elif r["bench"] == "merge-window":
            out.append(("merge", "merger window, 720p: new frame / key press", f"{r['first_show_ms']} ms / {r['key_press_ms']} ms", dev))
    return out


def write_tables(machine: dict, results: list[dict]) -> str:
    cpu = machine.get("cpu_model") or machine.get("cpu", "unknown CPU")
    flags = ", ".join(machine.get("cpu_flags", [])) or "flags not recorded"
    lines = [f"Measured with `bench/run_all.py` on {machine.get('cpu_cores', machine.get('cores'))} cores of {cpu} ({flags}), "
             "one run; FaceLab's figures only (see README, Performance, for DeepFaceLab side by side).", "",
             "| stage | what | FaceLab | device |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {' | '.join(r)} |" for r in rows(results)]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a rough table in a few minutes)")
    ap.add_argument("--rewrite", action="store_true", help="only re-render results.md from results.json")
    args = ap.parse_args()
    if args.rewrite:
        saved = json.loads((HERE / "results.json").read_text())
        sys.stdout.write(write_tables(saved["machine"], saved["results"]))
        return
    n = ["--iters", "3"] if args.quick else []
    results = (run("extract.py") + run("landmarks.py") + run("train.py", "--device", args.device, "--precision", "fp32", *n)
               + run("train.py", "--device", args.device, "--precision", "auto", *n)
               + run("sort.py", *(["--count", "2000"] if args.quick else []))
               + run("xseg.py", "--device", args.device, *n) + run("merge.py", "--device", args.device))  # fmt: skip
    sys.path.insert(0, str(HERE))
    from machine import machine as this_machine

    machine = this_machine()
    (HERE / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    sys.stdout.write(write_tables(machine, results))

if __name__ == "__main__":
    main()
