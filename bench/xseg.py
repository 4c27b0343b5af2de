"""XSeg speed: training ms/iteration and apply faces/s, at DFL's size (256 px, base 32).

    _internal/venv/bin/python bench/xseg.py [--iters 5] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from train import _sync, build_workspace  # noqa: E402

from facelab.nn.augment import augment  # noqa: E402
from facelab.options import resolve_options  # noqa: E402
from facelab.training.xseg import XSegTrainer, XSegTrainOptions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-xseg-"))
    ws = build_workspace(tmp)
    from dataclasses import replace

    import cv2
    import numpy as np

    from facelab.io.faceimage import XSegPolygon, read_meta, write_meta
    from facelab.io.frames import list_images

    for p in list_images(ws.aligned_dir("dst")):  # labels: the landmark hull
        meta = read_meta(p)
        write_meta(p, replace(meta, xseg_polygons=(XSegPolygon(True, cv2.convexHull(meta.landmarks)[:, 0].astype(np.float32)),)))
    opts = resolve_options(XSegTrainOptions, saved={"device": args.device, "preview": False, "seed": 1})
    trainer = XSegTrainer(tmp / "XSeg", opts, [ws.aligned_dir("src"), ws.aligned_dir("dst")])
    device = trainer.device
    for _ in range(2):
        trainer.step()
    _sync(device)
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        trainer.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    batch = augment(trainer.data.gather(torch.arange(8) % len(trainer.data.cache)), trainer.aug, trainer.gen).target
    trainer.model.eval()
    trainer.model.predict(batch)
    _sync(device)
    t = time.perf_counter()
    for _ in range(3):
        trainer.model.predict(batch)
    _sync(device)
    apply_fps = 3 * len(batch) / (time.perf_counter() - t)
    print(json.dumps({"bench": "xseg", "resolution": 256, "base": 32, "batch": opts.batch_size, "device": str(device),
                      "train_ms_per_iter": round(statistics.median(times) * 1000, 1),
                      "apply_faces_per_s": round(apply_fps, 2), "threads": torch.get_num_threads()}))  # fmt: skip


if __name__ == "__main__":
    main()
