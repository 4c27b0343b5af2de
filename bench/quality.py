"""Swap quality per minute of training, measured with the identity model (issue 16).

src: the carphone man (60 frames of the real video; every 10th face held back), dst: four photos
of two other people (the three Obama photos, Biden). For each precision, a small SAEHD trains for
the same wall-clock budget from the same seed, the dst frames are merged as script 7 does, and:

- swap_to_src: mean identity distance of each swapped face to the src person (the mean of the
  src faces' embeddings). A swap that has learned anything is below dst_to_src, the distance of
  the untouched dst faces to src;
- swap_to_dst: mean distance of each swapped face to its own dst face (higher: less of dst left);
- src_recon_dssim: src -> src reconstruction DSSIM on the held-back src faces (lower is better).

    _internal/venv/bin/python bench/quality.py [--minutes 3] [--precisions fp32,bf16] [--resolution 64]

Prints one JSON object per precision, then a line comparing them. Figures compare only within
one run (the same machine, the same minute).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media import media_file  # noqa: E402

from facelab.core.landmarks import get_transform_mat, warp_face  # noqa: E402
from facelab.detect.base import create_identity  # noqa: E402
from facelab.io.faceimage import read_meta  # noqa: E402
from facelab.io.frames import list_images, read_image  # noqa: E402
from facelab.nn.losses import dssim, dssim_filter_sizes  # noqa: E402
from facelab.options import resolve_options  # noqa: E402
from facelab.stages.extract import ExtractOptions, extract  # noqa: E402
from facelab.stages.merge import MergeOptions, merge  # noqa: E402
from facelab.training.options import TrainOptions  # noqa: E402
from facelab.training.trainer import Trainer  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402

DST_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def build(root: Path) -> tuple[Workspace, list[Path]]:
    """The workspace, and the held-back src faces (moved out of the faceset)."""
    ws = Workspace.at(root / "workspace")
    ws.create_layout()
    cap = cv2.VideoCapture(str(media_file("carphone.mp4")))
    for i in range(120):
        ok, frame = cap.read()
        if ok and i % 2 == 0:
            cv2.imwrite(str(ws.frames_dir("src") / f"{i + 1:05d}.png"), cv2.resize(frame, None, fx=2, fy=2))
    for k, name in enumerate(DST_PHOTOS):
        shutil.copy(media_file(name), ws.frames_dir("dst") / f"{k + 1:05d}{Path(name).suffix}")
    for side in ("src", "dst"):
        extract(ws, ExtractOptions(side=side, image_size=256))
    held = root / "held"
    held.mkdir()
    kept = []
    for k, face in enumerate(list_images(ws.aligned_dir("src"))):
        if k % 10 == 5:
            kept.append(Path(shutil.move(str(face), held / face.name)))
    return ws, kept


def _embed_frames(model, items: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:  # noqa: ANN001
    return np.stack([model.embed(img, [lm])[0] for img, lm in items])


def measure(ws: Workspace, held: list[Path], trainer: Trainer, model_name: str, identity) -> dict:  # noqa: ANN001
    """Merge the dst photos with the trained model and measure the swap and the reconstruction."""
    merge(ws, resolve_options(MergeOptions, saved={"model": "saehd", "model_name": model_name, "mask_mode": "dst",
                                                   "overwrite": True, "interactive": False, "device": "cpu"}))  # fmt: skip
    src_faces = [(read_image(ws.frames_dir("src") / m.source_filename), m.source_landmarks)
                 for m in (read_meta(p) for p in list_images(ws.aligned_dir("src")))]  # fmt: skip
    src_centre = _embed_frames(identity, src_faces).mean(0)
    dst = [read_meta(p) for p in list_images(ws.aligned_dir("dst"))]
    before = _embed_frames(identity, [(read_image(ws.frames_dir("dst") / m.source_filename), m.source_landmarks) for m in dst])
    after = _embed_frames(identity, [(read_image(ws.merged_dir / (Path(m.source_filename).stem + ".png")), m.source_landmarks)
                                     for m in dst])  # fmt: skip
    # src -> src on faces the model never saw, framed as the model frames its faces
    res, ft = trainer.res, trainer.face_type
    faces = []
    for p in held:
        meta = read_meta(p)
        frame = read_image(ws.frames_dir("src") / meta.source_filename)
        faces.append(warp_face(frame, get_transform_mat(meta.source_landmarks, res, ft), res))
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().div(255).to(trainer.device)
    model = trainer.model.eval()
    with torch.no_grad():
        z, _ = model.codes(x, x)
        recon, _ = model.decode_src(z)
        d = float(dssim(recon.float(), x, dssim_filter_sizes(res)[0]).mean())
    model.train()
    dist = lambda a, b: float(np.linalg.norm(a - b, axis=-1).mean())  # noqa: E731
    return {"swap_to_src": round(dist(after, src_centre), 4), "dst_to_src": round(dist(before, src_centre), 4),
            "swap_to_dst": round(dist(after, before), 4), "src_recon_dssim": round(d, 4),
            "held_back_src_faces": len(held), "dst_faces": len(dst)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per precision (wall clock)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-quality-"))
    identity = create_identity()
    results = []
    try:
        ws, held = build(tmp)
        for precision in args.precisions.split(","):
            name = f"q_{precision}"
            saved = {"model": "saehd", "model_name": name, "resolution": args.resolution, "archi": "liae-ud", "face_type": "wf",
                     "ae_dims": 128, "e_dims": 32, "d_dims": 32, "d_mask_dims": 16, "batch_size": 8, "seed": 1,
                     "precision": precision, "device": args.device, "preview": False}  # fmt: skip
            opts = resolve_options(TrainOptions, saved=saved)
            trainer = Trainer(ws.model_dir / f"{name}_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
            started, iterations = time.perf_counter(), 0
            while time.perf_counter() - started < args.minutes * 60:
                trainer.step()
                iterations += 1
            seconds = time.perf_counter() - started
            trainer.save()
            row = {"bench": "quality", "precision": precision, "device": str(trainer.device), "resolution": trainer.res,
                   "minutes": args.minutes, "iterations": iterations, "seconds": round(seconds, 1),
                   "ms_per_iter": round(1000 * seconds / max(iterations, 1), 1), "identity_model": identity.key,
                   **measure(ws, held, trainer, name, identity)}  # fmt: skip
            results.append(row)
            print(json.dumps(row))
            sys.stdout.flush()
        if len(results) > 1:
            best = min(results, key=lambda r: r["swap_to_src"])
            print(json.dumps({"bench": "quality", "what": "closest to src after the same minutes", "precision": best["precision"],
                              **{r["precision"]: {"swap_to_src": r["swap_to_src"], "src_recon_dssim": r["src_recon_dssim"],
                                                  "iterations": r["iterations"]} for r in results}}))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
