"""Sorting speed: seconds for hist, absdiff and best on N faces (default 5,000).

The faceset is synthetic copies of real aligned faces (extracted from the test photos and the
carphone video), each with a random brightness/contrast change so that no two are identical.

    _internal/venv/bin/python bench/sort.py [--count 5000] [--size 256]

Prints one JSON object per method.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media import media_file  # noqa: E402

from facelab.io.faceimage import read_face, write_face  # noqa: E402
from facelab.io.faceset import load_faceset  # noqa: E402
from facelab.io.frames import list_images  # noqa: E402
from facelab.stages.extract import ExtractOptions, extract  # noqa: E402
from facelab.stages.sort import SortOptions, sort_faces  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402


def build(folder: Path, count: int, size: int) -> None:
    ws = Workspace.at(folder / "src_ws")
    ws.create_layout()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg"):
        shutil.copy(media_file(name), ws.frames_dir("src") / name)
    extract(ws, ExtractOptions(side="src", image_size=size))
    seeds = [read_face(p) for p in list_images(ws.aligned_dir("src"))]
    out = folder / "aligned"
    out.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        img, meta = seeds[i % len(seeds)]
        a, b = rng.uniform(0.7, 1.3), rng.uniform(-40, 40)
        varied = np.clip(img.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
        write_face(out / f"{i:05d}_0.jpg", varied, replace(meta, source_filename=f"{i:05d}.png"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-sort-"))
    try:
        t = time.perf_counter()
        build(tmp, args.count, args.size)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        faces = load_faceset(tmp / "aligned")
        load_s = time.perf_counter() - t
        for by in ("hist", "absdiff", "best"):
            t = time.perf_counter()
            ordering = sort_faces(faces, SortOptions(by=by, target_count=2000))
            seconds = time.perf_counter() - t
            print(json.dumps({"bench": "sort", "method": by, "faces": len(faces), "face_px": args.size,
                              "seconds": round(seconds, 2), "load_metadata_s": round(load_s, 2),
                              "kept": len(ordering.keep), "trashed": len(ordering.trash),
                              "cores": os.cpu_count(), "device": "cpu", "build_faceset_s": round(build_s, 1)}))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
