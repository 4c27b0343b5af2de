"""Script 7, batch merge (dfl-spec §11): every data_dst frame with its faces swapped.

For each frame the faces come from `data_dst/aligned` (by source_filename, using the frame-space
source landmarks). Faces are cut at the model's framing, run through the model in batches on the
device, and composited in worker threads (`core.blend.paste_face`). Outputs: `merged/<stem>.png`
and `merged_mask/<stem>.png` (the union of the face masks, 0-255); frames without a face are
copied with an empty mask. Every merged PNG carries the synthetic-media label (ARCHITECTURE §6).
Resumable: `merged/.facelab_merge.json` records the config and model iteration; a re-run with the
same ones continues, other ones ask before replacing (`--overwrite` headless).

`--interactive` opens the merger window first (`ui/merger.py`, DFL's keys): each frame gets its own
config, saved with the window's place in `<model folder>/merger_session.json` on Esc or close and
offered next time; Esc then merges every frame with its config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facelab.core.blend import (
    COLOR_MODES, MASK_MODES, RANGES, SHARPEN_MODES, FaceInput, MergeConfig, compose_frame, list_modes, motion_of,
)  # fmt: skip
from facelab.core.landmarks import FaceType, get_transform_mat, transform_points
from facelab.errors import ConfirmationNeeded, UserError
from facelab.io.faceset import Face, load_faceset
from facelab.io.frames import encode_image, list_images, read_image, write_bytes_atomic, write_text_atomic
from facelab.io.names import plain_file_name
from facelab.labels import label_png
from facelab.log import progress
from facelab.models import store
from facelab.options import ask_yes_no, option, resolve_options
from facelab.pieces import Pieces
from facelab.report import Report
from facelab.ui import can_show_windows
from facelab.workspace import Workspace

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SESSION = ".facelab_merge.json"
SESSION_MAX_BYTES = 64 << 20  # about 200,000 per-frame configs
CHUNK = 8


def bounds(field: str) -> dict[str, int]:
    """The option's min and max: the merger's range of the setting (`core.blend.RANGES`)."""
    low, high = RANGES[field]
    return {"min": low, "max": high}


@dataclass(frozen=True)
class MergeOptions:
    model: str = option("Model", "saehd", choices=store.SWAP_MODELS, ask=False, help="which kind of model")
    model_name: str = option("Model name", "", ask=False, help="default: the most recently trained model")
    onnx: str = option("ONNX model", "", ask=False,
                       help="merge with an exported .dfm / .onnx through onnxruntime (CUDA with onnxruntime-gpu) instead")  # fmt: skip
    face_type: str = option("Face type", "", ask=False, help="of an --onnx model without it in its metadata (DFL's .dfm): wf, f, h, mf, head")
    interactive: bool = option("Use interactive merger", False, ask=lambda v: can_show_windows(), help="the merger window: DFL's keys, a config per frame")
    session: bool = option("Use saved merger session", True, ask=False, help="reopen the window where it was left (--no-session: start afresh)")
    mode: str = option("Mode", "overlay", choices=tuple(list_modes()),
                       help="overlay, hist-match, seamless, seamless-hist-match, raw-rgb, raw-predict, original")  # fmt: skip
    mask_mode: str = option("Mask mode", "learned-prd*dst", choices=MASK_MODES,
                            help="which mask cuts the face out: learned masks of the model, the landmark hull (dst), XSeg, "
                                 "or faceswap's landmark masks (components; extended: with the forehead)")  # fmt: skip
    erode: int = option("Erode mask", 0, **bounds("erode"), help="shrink (+) or grow (-) the mask")
    blur: int = option("Blur mask", 0, **bounds("blur"), help="soften the mask edge")
    motion_blur_power: int = option("Motion blur power", 0, **bounds("motion_blur_power"), help="blur the face along its movement")
    output_face_scale: int = option("Output face scale", 0, **bounds("output_face_scale"), help="percent bigger or smaller")
    color_transfer: str = option("Color transfer", "rct", choices=COLOR_MODES, help="match the face's colours to the frame")
    sharpen_mode: str = option("Sharpen mode", "none", choices=SHARPEN_MODES, help="sharpen or blur the face")
    blursharpen_amount: int = option("Blur/sharpen amount", 0, **bounds("blursharpen_amount"), ask=lambda v: v["sharpen_mode"] != "none",
                                     help="+ sharpens, - blurs")  # fmt: skip
    hist_match_threshold: int = option("Hist match threshold", 238, **bounds("hist_match_threshold"), ask=lambda v: "hist" in v["mode"],
                                       help="lower keeps more of the face's own contrast")  # fmt: skip
    masked_hist_match: bool = option("Masked hist match", True, ask=lambda v: "hist" in v["mode"], help="match inside the mask only")
    image_denoise_power: int = option("Image denoise power", 0, **bounds("image_denoise_power"), help="denoise the face")
    bicubic_degrade_power: int = option("Bicubic degrade power", 0, **bounds("bicubic_degrade_power"), help="soften the face to match a soft video")
    color_degrade_power: int = option("Color degrade power", 0, **bounds("color_degrade_power"), help="reduce the face's colours")
    brightness: int = option("Brightness", 0, **bounds("brightness"), ask=False, help="manual colour balance: lighter (+) or darker (-) face")
    contrast: int = option("Contrast", 0, **bounds("contrast"), ask=False, help="manual colour balance: more (+) or less (-) contrast")
    temperature: int = option("Temperature", 0, **bounds("temperature"), ask=False, help="manual colour balance: warmer (+) or cooler (-)")
    tint: int = option("Tint", 0, **bounds("tint"), ask=False, help="manual colour balance: magenta (+) or green (-)")
    device: str = option("Device", "auto", ask=False, help="auto, cpu, cuda, cuda:1, mps")
    precision: str = option("Precision", "auto", choices=("auto", "fp32", "bf16", "fp16"), ask=False,
                            help="how the models run: auto = bf16 on a GPU and on CPUs with native bf16 (faster; "
                                 "faces within ~1/255 of fp32), else fp32")  # fmt: skip
    workers: int = option("Workers", 2, min=1, max=64, ask=False, help="compositing threads")
    overwrite: bool = option("Replace merged frames", False, ask=False, help="replace frames merged with another config")
    person: int = option("Person", 0, min=0, max=999, ask=False,
                         help="swap only this person: 1 = the one with the most faces in data_dst/aligned, as the "
                              "split_identities script numbers them; 0 = everyone")  # fmt: skip
    reference: str = option("Reference", "", ask=False,
                            help="swap only this person: a photo, a folder of photos, or an aligned faceset")
    reference_threshold: float = option("Reference threshold", 0.6, min=0.2, max=1.2, ask=False,
                                        help="how far from the reference a face may be and still count as that person; "
                                             "higher swaps more faces, look-alikes too")  # fmt: skip
    contact_sheet: bool = option("Colour contact sheet", False, ask=False,
                                 help="also write workspace/merge_contact_sheet.png: the first face under every colour transfer")  # fmt: skip


def merge_config(opts: MergeOptions) -> MergeConfig:
    return MergeConfig(**{k: getattr(opts, k) for k in MergeConfig.__dataclass_fields__})


def resolve_merge(ws: Workspace, given: dict, interactive: bool) -> MergeOptions:
    """The options from flags and prompts; with the merger window and a saved session of the
    model, asks whether to reopen it (DFL: "Use saved session?")."""
    opts = resolve_options(MergeOptions, given, interactive=interactive)
    if not (interactive and opts.interactive) or "session" in given:
        return opts
    try:
        path = _session_file(Path(opts.onnx) if opts.onnx else store.find(ws, opts.model, opts.model_name))
        saved = json.loads(path.read_text(encoding="utf-8"))
        about = f"{len(saved['frames'])} frame configs, at frame {int(saved.get('index', 0)) + 1}"
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return opts  # no session (or no model: the stage says so)
    return replace(opts, session=ask_yes_no(f"Use the saved merger session ({about})", True))


# ---------------------------------------------------------------- the steps of a merge


@dataclass
class FramePlan:
    """The dst frames and the faces (frame-space landmarks) each one has."""

    frames: list[Path]
    faces: dict[str, list[np.ndarray]]
    centres: dict[str, list[np.ndarray]]
    position: dict[str, int]

    def neighbours(self, stem: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The face centres of the frames before and after (for motion blur)."""
        k = self.position[stem]
        before = self.centres.get(self.frames[k - 1].stem, []) if k else []
        after = self.centres.get(self.frames[k + 1].stem, []) if k + 1 < len(self.frames) else []
        return before, after


def plan_frames(ws: Workspace, frames: list[Path], face_type: FaceType, opts: MergeOptions | None = None) -> FramePlan:
    faces: dict[str, list[np.ndarray]] = {}
    usable = [f for f in sorted(load_faceset(ws.aligned_dir("dst")), key=lambda f: f.name)
              if f.meta is not None and f.meta.source_filename and f.meta.source_landmarks is not None]  # fmt: skip
    if not usable:
        raise UserError(f"{ws.aligned_dir('dst')} has no faces: run 5_dst_faceset_extract first")
    if opts is not None and (opts.person or opts.reference):
        usable = chosen_person(usable, opts, ws.aligned_dir("dst"))
    for face in usable:
        faces.setdefault(Path(face.meta.source_filename).stem, []).append(face.meta.source_landmarks)
    centres = {stem: [_centre(lm, face_type) for lm in lms] for stem, lms in faces.items()}
    return FramePlan(frames, faces, centres, {f.stem: k for k, f in enumerate(frames)})


def chosen_person(faces: list[Face], opts: MergeOptions, folder: Path) -> list[Face]:
    """The faces of the one person `--person N` / `--reference PATH` names; a track goes with the
    verdict of most of its faces (a profile or a blink does not drop a frame or two)."""
    from facelab.core.identity import clusters, nearest
    from facelab.detect.identity import default_model, faceset_identities

    if opts.person and opts.reference:
        raise UserError("give --person or --reference, not both")
    emb, have, _ = faceset_identities(faces, folder)
    if opts.reference:
        from facelab.detect.base import create_detector, create_identity, create_landmarker
        from facelab.detect.identity import reference_identities

        refs = reference_identities(Path(opts.reference), create_identity(), create_detector("blazeface"), create_landmarker("facemesh68"))
        picked, who = nearest(emb, refs) < opts.reference_threshold, f"the reference person ({opts.reference})"
    else:
        labels = clusters(emb, default_model().threshold)
        if opts.person > labels.max() + 1:
            raise UserError(f"--person {opts.person}: {folder} holds {labels.max() + 1} people (the split_identities script shows them)")
        picked, who = labels == opts.person - 1, f"person {opts.person}"
    votes: dict[int, list[bool]] = {}
    for i, k in enumerate(have):
        if faces[k].meta.track_id is not None:
            votes.setdefault(faces[k].meta.track_id, []).append(bool(picked[i]))
    chosen = []
    for i, k in enumerate(have):
        track = faces[k].meta.track_id
        if (np.mean(votes[track]) > 0.5) if track is not None else picked[i]:
            chosen.append(faces[k])
    if not chosen:
        raise UserError(f"no face of {who} in {folder}: check the reference, or raise --reference-threshold")
    log.info("swapping %s only: %d of %d faces", who, len(chosen), len(faces))
    return chosen


@dataclass
class Swapper:
    """The models a merge runs (the swap model, XSeg when a mask mode needs it) and how a chunk
    of frames goes through them."""

    net: Any  # a SAEHD / Quick96 module, or a DFMModel (onnxruntime)
    face_type: FaceType
    res: int
    iteration: int
    folder: Path  # the model folder, or the .dfm file
    device: torch.device  # where XSeg (and the PyTorch model) run
    amp: torch.dtype | None  # autocast dtype of the PyTorch models, None: fp32
    onnx: bool
    xseg_device: str
    xseg: store.LoadedModel | None = None
    pieces: Pieces = field(default_factory=lambda: Pieces("merge"))  # fewer faces per call after an out-of-memory error

    def precision(self):  # noqa: ANN201 - a context manager
        import torch

        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def ensure_xseg(self, ws: Workspace) -> bool:
        """Load the XSeg model the first time a mask mode needs it (UserError if none is
        trained); True when it was loaded just now."""
        if self.xseg is not None:
            return False
        self.xseg = store.load(ws, "xseg", device=self.xseg_device)
        return True

    def _swap(self, x):  # noqa: ANN001, ANN202
        with self.precision():
            return tuple(t.float().cpu().numpy() for t in self.net.swap(x))

    def _xseg(self, frames: list, lms: list, face: np.ndarray, part: range) -> tuple[np.ndarray, np.ndarray]:
        with self.precision():
            return xseg_masks(self.xseg, [frames[k] for k in part], [lms[k] for k in part], self.face_type, self.res, face[part.start:part.stop])

    def infer(self, chunk: list[Path], plan: FramePlan, pool: ThreadPoolExecutor,
              seconds: dict[str, float] | None = None) -> list[tuple[Path, np.ndarray, list[FaceInput]]]:  # fmt: skip
        """Read a chunk of frames, cut their faces and run them through the model(s) as one batch.
        `seconds` (part -> wall seconds) gains the time of each part: read, cut, model, xseg."""
        import torch

        clock = _Clock(seconds)
        images = list(pool.map(read_image, chunk))
        clock.lap("read")
        jobs, crops, where = [], [], []
        for path, img in zip(chunk, images):
            if img is None:
                raise UserError(f"{path} cannot be read as an image")
            items = []
            around = plan.neighbours(path.stem)
            for lm, centre in zip(plan.faces.get(path.stem, []), plan.centres.get(path.stem, [])):
                mat = get_transform_mat(lm, self.res, self.face_type)
                crop = cv2.warpAffine(img, mat, (self.res, self.res), flags=cv2.INTER_CUBIC).astype(np.float32) / 255
                crops.append(crop)
                where.append((len(jobs), len(items)))
                items.append([lm, crop, face_motion(centre, *around)])
            jobs.append((path, img, items))
        clock.lap("cut")
        if crops:
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(self.device)
            face, face_mask, dst_mask = self.pieces.run(self._swap, x, _join_arrays)
            clock.lap("model")
            xp = xd = None
            if self.xseg is not None:
                lms = [jobs[j][2][i][0] for j, i in where]
                frames = [jobs[j][1] for j, _ in where]
                xp, xd = self.pieces.run(lambda part: self._xseg(frames, lms, face, part), range(len(where)), _join_arrays)
                clock.lap("xseg")
            for n, (j, i) in enumerate(where):
                lm, crop, motion = jobs[j][2][i]
                jobs[j][2][i] = FaceInput(lm, self.face_type, self.res, face[n].transpose(1, 2, 0), face_mask[n, 0], dst_mask[n, 0],
                                          crop, None if xp is None else xp[n], None if xd is None else xd[n], motion)  # fmt: skip
        return jobs


def _join_arrays(parts: list[tuple]) -> tuple:
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def load_swapper(ws: Workspace, opts: MergeOptions) -> Swapper:
    """The swap model (a trained one, or an exported .dfm through onnxruntime), and XSeg if the
    mask mode needs it now."""
    import torch

    from facelab.nn.device import describe, inference_dtype, resolve_device

    if opts.onnx:
        from facelab.models.dfm import DFMModel

        net = DFMModel(Path(opts.onnx), opts.face_type, opts.device)
        device = torch.device(resolve_device(opts.device)) if xseg_wanted(opts.mask_mode) else torch.device("cpu")
        swapper = Swapper(net, net.face_type, net.resolution, net.iteration, Path(opts.onnx), device, None, True, opts.device)
    else:
        model = store.load(ws, opts.model, opts.model_name, opts.device)
        swapper = Swapper(model.net, model.face_type, model.resolution, model.iteration, model.folder, model.device, None,
                          False, opts.device)  # fmt: skip
    swapper.amp = inference_dtype(swapper.device, opts.precision)  # onnxruntime runs the .dfm as it is
    log.info("%s%s", describe(swapper.device, swapper.amp), " (the .dfm through onnxruntime on its own providers)" if opts.onnx else "")
    if xseg_wanted(opts.mask_mode):
        swapper.ensure_xseg(ws)
    return swapper


def prepare_output(ws: Workspace, opts: MergeOptions, cfg: MergeConfig, per_frame: dict[str, MergeConfig],
                   swapper: Swapper, frames: list[Path]) -> list[Path]:  # fmt: skip
    """Record this merge's session in merged/; replace frames of another session (asking first,
    except for the window's own session); return the frames still to merge."""
    merged_dir, mask_dir = ws.merged_dir, ws.merged_mask_dir
    merged_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    session = {"config": asdict(cfg), "model": swapper.folder.name, "iteration": swapper.iteration, "window": opts.interactive}
    if opts.person or opts.reference:  # another choice of person is another merge
        session["person"] = opts.person or opts.reference
    if per_frame:
        session["frames"] = {stem: asdict(c) for stem, c in per_frame.items() if c != cfg}
    session_path = merged_dir / SESSION
    try:
        previous = json.loads(session_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    existing = list_images(merged_dir)
    same = previous == session
    if existing and not same and not opts.overwrite and not opts.interactive:  # the window's session keeps its work
        raise ConfirmationNeeded(f"{merged_dir} holds {len(existing)} frames merged with another config or model, which will be replaced", "overwrite")
    if not same:
        for p in existing + list_images(mask_dir):
            p.unlink()
    write_text_atomic(session_path, json.dumps(session, indent=1))
    done = {p.stem for p in list_images(merged_dir)} & {p.stem for p in list_images(mask_dir)}
    return [f for f in frames if f.stem not in done]


class _Clock:
    """Adds the seconds since the last lap to `seconds[part]` (a no-op without a table). Parts run
    in worker threads add their own time, so those parts are thread-seconds."""

    def __init__(self, seconds: dict[str, float] | None):
        self.seconds = seconds
        self.last = time.perf_counter()

    def lap(self, part: str) -> None:
        if self.seconds is None:
            return
        now = time.perf_counter()
        with _CLOCK_LOCK:
            self.seconds[part] = self.seconds.get(part, 0.0) + now - self.last
        self.last = now


_CLOCK_LOCK = threading.Lock()


def write_merged(ws: Workspace, path: Path, frame: np.ndarray, faces: list[FaceInput], cfg: MergeConfig,
                 seconds: dict[str, float] | None = None) -> int:  # fmt: skip
    """Composite one frame and write it (labelled) and its mask; returns its number of faces."""
    clock = _Clock(seconds)
    out, mask = compose_frame(frame, faces, cfg)
    clock.lap("composite")
    merged, merged_mask = label_png(encode_image(out, ".png", fast_png=True)), encode_image(mask, ".png", fast_png=True)
    clock.lap("encode")
    write_bytes_atomic(ws.merged_dir / f"{path.stem}.png", merged)
    write_bytes_atomic(ws.merged_mask_dir / f"{path.stem}.png", merged_mask)
    clock.lap("write")
    return len(faces)


def merge_frames(ws: Workspace, opts: MergeOptions, cfg: MergeConfig, per_frame: dict[str, MergeConfig],
                 swapper: Swapper, plan: FramePlan, todo: list[Path]) -> dict:  # fmt: skip
    """The batch loop: chunks of frames through the model, each chunk composited in the worker
    threads while the next one runs through the model. Returns the counts."""
    import torch

    counts = {"frames": 0, "faces": 0, "no_face": 0, "skipped": len(plan.frames) - len(todo)}
    bar = progress(total=len(todo), desc="merge", unit="frame")
    started = time.perf_counter()
    seconds: dict[str, float] = {}  # where the time goes (bench/merge.py prints it)

    def settle(futures: list) -> None:
        for fut in futures:
            n_faces = fut.result()
            counts["frames"] += 1
            counts["faces"] += n_faces
            counts["no_face"] += n_faces == 0
            bar.update(1)

    pending: list = []
    with ThreadPoolExecutor(opts.workers) as pool, torch.no_grad():
        if opts.contact_sheet:
            first = next((f for f in plan.frames if f.stem in plan.faces), None)
            if first is not None:
                (_, img, items), = swapper.infer([first], plan, pool)
                write_contact_sheet(ws.root / "merge_contact_sheet.png", img, items, cfg)
        it = iter(todo)
        # (reading the next chunk while this one runs through the model was measured slower on 2 cores:
        # the model's threads then share them with PNG decoding; bench/merge.py's parts show it)
        while chunk := list(islice(it, CHUNK)):
            jobs = swapper.infer(chunk, plan, pool, seconds)
            clock = _Clock(seconds)
            settle(pending)  # the previous chunk composited while this one ran through the model
            clock.lap("waiting for compositing")
            pending = [pool.submit(write_merged, ws, path, img, items, per_frame.get(path.stem, cfg), seconds)
                       for path, img, items in jobs]  # fmt: skip
        settle(pending)
    bar.close()
    counts["merging_seconds"] = round(time.perf_counter() - started, 3)  # without loading the model and faces
    counts.update({f"seconds {part}": round(value, 3) for part, value in seconds.items()})
    return counts


def _summary(ws: Workspace, opts: MergeOptions, cfg: MergeConfig, per_frame: dict, swapper: Swapper, counts: dict) -> str:
    how = "each frame with its config from the merger window" if per_frame else f"{cfg.mode}, mask {cfg.mask_mode}, colour {cfg.color_transfer}"
    amp = swapper.amp
    summary = (f"{counts['frames']} frames merged ({counts['faces']} faces, {how}) with {swapper.folder.name}"
               + (f" via onnxruntime ({swapper.net.providers[0]})" if swapper.onnx else f" at iteration {swapper.iteration}")
               + (f" ({str(amp).removeprefix('torch.')})" if amp is not None and (swapper.xseg is not None or not swapper.onnx) else "")
               + f" -> {ws.merged_dir}; {counts['no_face']} without a face copied")  # fmt: skip
    if counts["skipped"]:
        summary += f"; {counts['skipped']} already merged"
    if opts.contact_sheet:
        summary += f"; colour contact sheet: {ws.root / 'merge_contact_sheet.png'}"
    return summary


def merge(ws: Workspace, opts: MergeOptions) -> Report:
    started = time.perf_counter()
    ws.require()
    if opts.interactive and not can_show_windows():
        raise UserError("the merger window needs a display: run without --interactive (batch merge) on this machine")
    cfg = merge_config(opts)
    frames = list_images(ws.frames_dir("dst"))
    if not frames:
        raise UserError(f"{ws.frames_dir('dst')} has no frames: run 3_extract_images_dst first")
    swapper = load_swapper(ws, opts)
    plan = plan_frames(ws, frames, swapper.face_type, opts)
    per_frame: dict[str, MergeConfig] = {}
    if opts.interactive:
        _ask_before_replacing_a_batch_merge(ws, opts, swapper)
        per_frame, finished = _interactive(ws, opts, cfg, swapper, plan)
        if not finished:
            return Report("merge", f"merger window closed: session saved to {_session_file(swapper.folder)}; nothing merged "
                          "(run again to go on, Esc in the window merges every frame)", time.perf_counter() - started)  # fmt: skip
        if any(xseg_wanted(c.mask_mode) for c in per_frame.values()):
            swapper.ensure_xseg(ws)
    todo = prepare_output(ws, opts, cfg, per_frame, swapper, frames)
    counts = merge_frames(ws, opts, cfg, per_frame, swapper, plan, todo)
    return Report("merge", _summary(ws, opts, cfg, per_frame, swapper, counts), time.perf_counter() - started, counts)


def _ask_before_replacing_a_batch_merge(ws: Workspace, opts: MergeOptions, swapper: Swapper) -> None:
    """The window's merge replaces merged/ when it ends: frames of another merge (a batch merge,
    another model) are asked about before the window opens, not deleted after it closes."""
    existing = list_images(ws.merged_dir)
    if not existing or opts.overwrite:
        return
    try:
        previous = json.loads((ws.merged_dir / SESSION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("window") and previous.get("model") == swapper.folder.name:
        return  # this model's window merged them: its session goes on
    raise ConfirmationNeeded(f"{ws.merged_dir} holds {len(existing)} frames of another merge, which the window's merge "
                             "will replace when you finish it", "overwrite")  # fmt: skip


def _session_file(folder: Path) -> Path:
    """The window's session: in the model folder (next to an exported .dfm for --onnx)."""
    return folder / "merger_session.json" if folder.is_dir() else folder.with_name(f"{folder.name}.merger_session.json")


def _interactive(ws: Workspace, opts: MergeOptions, cfg: MergeConfig, swapper: Swapper,
                 plan: FramePlan) -> tuple[dict[str, MergeConfig], bool]:  # fmt: skip
    """Run the window; returns (a config for every frame, whether the user asked to merge).

    An XSeg mask mode chosen in the window loads the XSeg model then; without one the window
    says so (`render` raises UserError) and keeps the config."""
    import torch

    from facelab.ui.merger import run_merger_window

    path = _session_file(swapper.folder)
    configs, index = _read_window_session(path) if opts.session and path.exists() else ({}, 0)
    cache: dict[int, tuple[np.ndarray, list]] = {}
    frames, stems = plan.frames, [f.stem for f in plan.frames]

    def faces(i: int, c: MergeConfig) -> tuple[np.ndarray, list[FaceInput]]:
        """Frame i and its faces through the model(s), kept for the next key presses."""
        if xseg_wanted(c.mask_mode) and swapper.ensure_xseg(ws):
            cache.clear()  # the cached faces have no XSeg masks yet
        if i not in cache:
            if len(cache) > 8:
                cache.pop(next(iter(cache)))
            with ThreadPoolExecutor(1) as pool, torch.no_grad():
                (_, img, items), = swapper.infer([frames[i]], plan, pool)
            cache[i] = (img, items)
        return cache[i]

    def render(i: int, c: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
        return compose_frame(*faces(i, c), c)

    def sheet(i: int, c: MergeConfig) -> tuple[np.ndarray, str]:
        img, items = faces(i, c)
        if not items:
            raise UserError(f"frame {stems[i]} has no face: go to a frame with one to compare the colour transfers")
        target = ws.root / f"merge_contact_sheet_{stems[i]}.png"
        return write_contact_sheet(target, img, items, c), str(target)

    who = f"person {opts.person}" if opts.person else f"the reference person ({Path(opts.reference).name})" if opts.reference else ""
    finished, index = run_merger_window(stems, configs, render, cfg, index, contact_sheet=sheet, swapping=who)
    last = cfg
    for stem in stems:  # frames never shown take the config of the frame before them, as in the window
        last = configs.setdefault(stem, last)
    write_text_atomic(path, json.dumps({"model": swapper.folder.name, "iteration": swapper.iteration, "index": index,
                                        "frames": {stem: asdict(c) for stem, c in configs.items()}}, indent=1))  # fmt: skip
    return configs, finished


def _read_window_session(path: Path) -> tuple[dict[str, MergeConfig], int]:
    """The window's saved per-frame configs and place; nothing (with a warning) if unreadable."""
    try:
        if path.exists() and path.stat().st_size > SESSION_MAX_BYTES:
            raise ValueError(f"larger than {SESSION_MAX_BYTES >> 20} MB")
        saved = json.loads(path.read_text(encoding="utf-8"))
        configs = {plain_file_name(stem, str(path)): MergeConfig.from_dict(c) for stem, c in saved["frames"].items()}
        index = int(saved.get("index", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, UserError) as e:
        log.warning("ignoring the merger session %s (%s)", path, e)
        return {}, 0
    log.info("merger session from %s: %d frame configs, at frame %d", path, len(configs), index + 1)
    return configs, index


def write_contact_sheet(path: Path, frame: np.ndarray, faces: list[FaceInput], cfg: MergeConfig) -> np.ndarray:
    """The frame under every colour transfer side by side (`core.blend.contact_sheet`), written
    to `path` with the synthetic label; returns the sheet."""
    from facelab.core.blend import contact_sheet

    sheet = contact_sheet(frame.astype(np.float32) / 255, faces, cfg)
    write_bytes_atomic(path, label_png(encode_image(sheet, ".png")))
    return sheet


def xseg_wanted(mask_mode: str) -> bool:
    return mask_mode.startswith("xseg") or mask_mode == "all"


def face_motion(centre: np.ndarray, before: list[np.ndarray], after: list[np.ndarray]) -> tuple[float, float]:
    """(power px, angle deg) of a face's movement: from the nearest face centre in the frame
    before to the nearest in the frame after (DFL uses one face per frame and turns motion blur
    off when any frame has more; following each face keeps it with several)."""
    if not before or not after:
        return 0.0, 0.0
    nearest = lambda cs: min(cs, key=lambda c: float(np.sum((c - centre) ** 2)))  # noqa: E731
    return motion_of(nearest(before), nearest(after))


def _centre(landmarks: np.ndarray, face_type: FaceType) -> np.ndarray:
    mat = get_transform_mat(landmarks, 256, face_type)
    return transform_points(np.array([[128.0, 128.0]]), mat, invert=True)[0]


def xseg_masks(xseg: store.LoadedModel, frames: list[np.ndarray], landmarks: list[np.ndarray], face_type: FaceType,
               res: int, swapped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """XSeg masks (N x S x S, at the model's framing) of the swapped faces and of the dst faces.

    XSeg sees each face at its own framing (face type and size), as it was trained: the dst face
    is cut from the frame, the swapped face is pasted over that cut; the masks are warped back
    to the model's framing. (DFL resizes the model's crop instead, which is only right when
    both use the same face type.) `swapped`: N x 3 x S x S float [0, 1]."""
    import torch

    net, xseg_type, xres, device = xseg.net, xseg.face_type, xseg.resolution, xseg.device
    dst_in, prd_in, back = [], [], []
    ones = np.ones((res, res), np.float32)
    for frame, lm, face in zip(frames, landmarks, swapped):
        x_mat = np.vstack([get_transform_mat(lm, xres, xseg_type), [0, 0, 1]])  # frame -> XSeg
        model_to_x = (x_mat @ np.linalg.inv(np.vstack([get_transform_mat(lm, res, face_type), [0, 0, 1]])))[:2]
        dst = cv2.warpAffine(frame, x_mat[:2], (xres, xres), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).astype(np.float32) / 255
        pasted = cv2.warpAffine(np.ascontiguousarray(face.transpose(1, 2, 0)), model_to_x, (xres, xres), flags=cv2.INTER_CUBIC)
        inside = cv2.warpAffine(ones, model_to_x, (xres, xres), flags=cv2.INTER_LINEAR)[..., None]
        dst_in.append(dst)
        prd_in.append(dst * (1 - inside) + np.clip(pasted, 0, 1) * inside)
        back.append(cv2.invertAffineTransform(model_to_x))
    out = []
    for batch in (prd_in, dst_in):
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device)
        masks = net.predict(x)[:, 0].float().cpu().numpy()
        out.append(np.stack([np.clip(cv2.warpAffine(m, b, (res, res), flags=cv2.INTER_LINEAR), 0, 1) for m, b in zip(masks, back)]))
    return out[0], out[1]
