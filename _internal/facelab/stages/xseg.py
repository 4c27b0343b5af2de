"""Script 5.XSeg: mask editor, training, apply / remove / remove-labels / fetch (dfl-spec §7).

- train: `training.xseg` into `workspace/model/XSeg/` (crash-safe generations, exact resume, the
  preview window; face type asked on the first run, fixed afterwards).
- apply: the newest XSeg model predicts a mask for every face; faces of another face type are
  re-framed through their source landmarks into the model's framing and the mask is warped back,
  as DFL does. Unlike DFL the mask is stored losslessly at the face's own resolution (not a 256 px
  JPEG); it is binarised at 0.5 as DFL's. SAEHD training then uses it automatically.
- remove / remove-labels: delete applied masks / drawn polygons (after a confirmation).
- fetch: copy the faces that have polygons to `<aligned>_xseg/`.
- edit: the polygon editor window (`ui.xseg_editor`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from facelab.core.landmarks import FACE_TYPE_CHOICES, get_transform_mat
from facelab.errors import ConfirmationNeeded, UserError
from facelab.io.faceimage import write_meta
from facelab.io.faceset import load_faceset
from facelab.io.frames import decode_image
from facelab.log import iterate
from facelab.models import store
from facelab.options import option, options_from_dict
from facelab.report import Report
from facelab.ui import can_show_windows
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

ACTIONS = ("edit", "train", "apply", "remove", "remove-labels", "fetch")


@dataclass(frozen=True)
class XSegOptions:
    action: str = option("Action", "apply", choices=ACTIONS, ask=False, positional=True, help="what to do")
    side: str = option("Side", "both", choices=("src", "dst", "both"), ask=False, help="which faceset(s)")
    yes: bool = option("Without asking", False, ask=False, help="remove / remove-labels without asking")
    # training (the first run asks; afterwards the model's saved options are used)
    face_type: str = option("Face type", "wf", choices=FACE_TYPE_CHOICES, ask=lambda v: v["action"] == "train",
                            help="the framing masks are learned and applied in")  # fmt: skip
    batch_size: int = option("Batch size", 4, min=2, max=16, ask=lambda v: v["action"] == "train", help="faces per step")
    pretrain: bool = option("Enable pretraining mode", False, ask=False, help="XSeg pretraining (needs --pretraining-data-dir)")
    pretraining_data_dir: str = option("Pretraining faceset", "", ask=False, help="faces for pretrain mode")
    target_iter: int = option("Target iteration", 0, min=0, max=10**9, ask=False, help="stop and save here; 0 = never")
    autosave_minutes: float = option("Autosave every N minutes", 25.0, min=0, max=1440, ask=False, help="minutes between saves")
    resolution: int = option("Resolution", 256, min=64, max=512, ask=False, help="XSeg input size (DFL: 256)")
    base: int = option("Base width", 32, min=4, max=64, ask=False, help="XSeg width (DFL: 32)")
    device: str = option("Device", "auto", ask=False, help="auto, cpu, cuda, cuda:1, mps")
    preview: bool = option("Preview window", True, ask=False, help="--no-preview trains headless")
    seed: int = option("Seed", 0, min=0, max=2**31 - 1, ask=False, help="random seed of a new model")


def _folders(ws: Workspace, side: str) -> list[Path]:
    return [ws.aligned_dir(s) for s in (("src", "dst") if side == "both" else (side,))]  # type: ignore[arg-type]


def run(ws: Workspace, opts: XSegOptions) -> Report:
    started = time.perf_counter()
    ws.require()
    handler = {"edit": _edit, "train": _train, "apply": _apply, "remove": _remove, "remove-labels": _remove_labels,
               "fetch": _fetch}[opts.action]  # fmt: skip
    summary, counts = handler(ws, opts)
    return Report(f"xseg {opts.action}", summary, time.perf_counter() - started, counts)


# ---------------------------------------------------------------- train


def _train(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    import signal

    from facelab.io import checkpoint
    from facelab.training.xseg import XSegTrainer, XSegTrainOptions

    folder = store.spec("xseg").folder(ws)
    latest = checkpoint.generations(folder)
    flat = {k: getattr(opts, k) for k in ("face_type", "batch_size", "pretrain", "target_iter", "autosave_minutes",
                                          "resolution", "base", "device", "preview", "seed", "pretraining_data_dir")}  # fmt: skip
    if latest:  # fixed options come from the model
        saved = store.saved_options(folder) or {}
        for key in ("face_type", "resolution", "base"):
            if key in saved:
                flat[key] = saved[key]
    train_opts = options_from_dict(XSegTrainOptions, flat)
    from facelab.nn.device import describe, resolve_device

    log.info(describe(resolve_device(opts.device)))
    trainer = XSegTrainer(folder, train_opts, _folders(ws, "both"))
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set()) if threading.current_thread() is threading.main_thread() else None
    try:
        if opts.preview and can_show_windows():
            from facelab.training.control import run_with_window

            result = run_with_window(lambda control: trainer.run(stop, log.info, control), "XSeg")
        else:
            result = trainer.run(stop, log.info)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return f"XSeg: {result['iterations']} iterations this run, now at {result['iteration']}; saved to {result['saved']}", result


# ---------------------------------------------------------------- apply


def _apply(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    import torch

    from facelab.training.memory import tune_allocator

    tune_allocator(low_memory=False)  # 256 px activations: as in training (bench/xseg.py: apply 1.2x faster)
    model = store.load(ws, "xseg", device=opts.device)
    net, model_type, res, device = model.net, model.face_type, model.resolution, model.device
    from facelab.nn.device import describe

    log.info(describe(device))
    done = skipped = 0
    for folder in _folders(ws, opts.side):
        faces = [f for f in load_faceset(folder) if f.meta is not None and f.path is not None]
        for chunk_start in iterate(list(range(0, len(faces), 8)), f"apply XSeg to {folder.name}", "batch"):
            chunk = faces[chunk_start : chunk_start + 8]
            crops, mats, types = [], [], []
            for face in chunk:
                img = decode_image(face.read_bytes()).astype(np.float32) / 255
                h, w = img.shape[:2]
                meta = face.meta
                if meta.face_type != model_type and meta.image_to_face_mat is not None and meta.source_landmarks is not None:
                    new = get_transform_mat(meta.source_landmarks, res, model_type)
                    m = (np.vstack([new, [0, 0, 1]]) @ np.vstack([cv2.invertAffineTransform(meta.image_to_face_mat), [0, 0, 1]]))[:2]
                    crops.append(cv2.warpAffine(img, m, (res, res), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE))
                    types.append(meta.face_type)
                else:  # as DFL's apply: the float face resized with Lanczos, not clipped
                    m = np.array([[res / w, 0, 0], [0, res / h, 0]])
                    crops.append(img if (w, h) == (res, res) else cv2.resize(img, (res, res), interpolation=cv2.INTER_LANCZOS4))
                    types.append(model_type)
                mats.append((m, (w, h)))
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(device)
            masks = net.predict(x)[:, 0].cpu().numpy()
            for face, mask, (m, (w, h)), crop_type in zip(chunk, masks, mats, types):
                if crop_type != model_type:  # back into the face's own framing; stored at the model's size, as DFL
                    back = cv2.warpAffine(mask, cv2.invertAffineTransform(m), (w, h), flags=cv2.INTER_LINEAR)
                    mask = cv2.resize(back, (res, res), interpolation=cv2.INTER_LANCZOS4)
                write_meta(face.path, face.meta.with_xseg_mask((mask >= 0.5).astype(np.float32)))
                done += 1
        skipped += sum(1 for f in load_faceset(folder) if f.meta is None)
    return f"XSeg masks applied to {done} faces ({model_type.dfl_name}, {res} px model)", {"faces": done, "skipped": skipped}


def _remove(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    faces = [f for folder in _folders(ws, opts.side) for f in load_faceset(folder) if f.meta is not None and f.meta.xseg_mask_png]
    if faces and not opts.yes:
        raise ConfirmationNeeded(f"the applied XSeg masks of {len(faces)} faces will be removed", "yes")
    for face in faces:
        write_meta(face.path, face.meta.with_xseg_mask(None))
    return f"applied XSeg masks removed from {len(faces)} faces", {"faces": len(faces)}


def _remove_labels(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    faces = [f for folder in _folders(ws, opts.side) for f in load_faceset(folder) if f.meta is not None and f.meta.xseg_polygons]
    if faces and not opts.yes:
        raise ConfirmationNeeded(f"the drawn XSeg polygons of {len(faces)} faces will be deleted", "yes")
    for face in faces:
        write_meta(face.path, replace(face.meta, xseg_polygons=()))
    return f"XSeg polygons deleted from {len(faces)} faces", {"faces": len(faces)}


def _fetch(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    copied = 0
    for folder in _folders(ws, opts.side):
        labelled = [f for f in load_faceset(folder) if f.meta is not None and f.meta.xseg_polygons and f.path is not None]
        if not labelled:
            continue
        out = folder.parent / f"{folder.name}_xseg"
        out.mkdir(exist_ok=True)
        for face in labelled:
            shutil.copy2(face.path, out / face.name)
            copied += 1
    return f"{copied} labelled faces copied to <aligned>_xseg", {"faces": copied}


def _edit(ws: Workspace, opts: XSegOptions) -> tuple[str, dict]:
    if opts.side == "both":
        raise UserError("the editor works on one faceset: pass --side src or --side dst")
    if not can_show_windows():
        raise UserError("the XSeg editor opens a window and this machine has no display: run it on your desktop")
    from facelab.ui.xseg_editor import run_editor

    folder = ws.aligned_dir(opts.side)  # type: ignore[arg-type]
    if not any(f.path is not None for f in load_faceset(folder)):
        raise UserError(f"{folder} has no faces (or is packed: unpack it first)")
    saved = run_editor(folder)
    return f"XSeg editor closed; {saved} faces saved", {"saved": saved}
