"""`facelab import-dfl-model <DFL model folder>`: DeepFaceLab SAEHD / Quick96 models into FaceLab.

Reads `<name>_<Model>_data.dat` (iteration, options, loss history) and the weight files
`<name>_<Model>_<part>.npy` through the allow-list unpickler (numpy arrays and plain values only;
anything else is refused before it can run), and writes a FaceLab checkpoint generation at the
same iteration into `workspace/model/<name>_<Model>/`. Training then continues from there with the
same options. DFL's optimiser state is not carried over (AdaBelief restarts its moments, as after
DFL's own "reset optimizer"); DFL's preview samples are not needed.
XSeg models (`XSeg_data.dat` + `XSeg_256.npy`, DFL's generic XSeg too; `XSeg_256_opt.npy` is not
needed) become `workspace/model/XSeg/`: applying, merging with the `xseg-*` mask modes and
`5_xseg_train` then use it (RMSprop restarts its moments).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import UserError
from facelab.io import checkpoint
from facelab.io.faceimage import FaceMetaError, load_dfl_pickle
from facelab.options import option, options_from_dict, options_to_dict
from facelab.report import Report
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

KINDS = {"SAEHD": "saehd", "Quick96": "quick96"}


@dataclass(frozen=True)
class ImportOptions:
    dfl_model_dir: str = option("DFL model folder", "", ask=False, positional=True,
                                help="DeepFaceLab's workspace/model folder (drop it on 6_import_DFL_model)")  # fmt: skip
    name: str = option("Model name", "", ask=False, help="import only this DFL model (default: every SAEHD / Quick96 model)")
    overwrite: bool = option("Replace", False, ask=False, help="replace a FaceLab model of the same name")


def find_dfl_models(folder: Path) -> list[tuple[str, str]]:
    """(name, kind) of each DFL model in `folder`, from its `<name>_<Kind>_data.dat` (XSeg's has
    no name: `XSeg_data.dat`)."""
    found = []
    for path in sorted(folder.glob("*_data.dat")):
        m = re.fullmatch(r"(?:(.+)_)?(SAEHD|Quick96|XSeg|AMP)_data\.dat", path.name)
        if m:
            found.append((m.group(1) or "", m.group(2)))
    return found


DAT_MAX_BYTES = 512 << 20  # options, a loss pair per iteration and a few preview faces: tens of MB
DAT_MAX_ITEMS = 1 << 24  # 3 values per iteration: over 5 million iterations


def read_model_data(path: Path) -> dict:
    """A DFL `<name>_<Model>_data.dat`, bounded and checked: `options` a table of plain values,
    `iter` a count, `loss_history` rows of finite numbers (first two kept, as src and dst)."""
    bad = f"{path} is not a DFL model data file"
    try:
        if path.stat().st_size > DAT_MAX_BYTES:
            raise UserError(f"{bad} (over {DAT_MAX_BYTES >> 20} MB)")
        data = load_dfl_pickle(path.read_bytes(), path.name, max_items=DAT_MAX_ITEMS)
    except FaceMetaError as exc:
        raise UserError(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise UserError(f"{bad} (no options inside)")
    options = {k: _plain(v) for k, v in data["options"].items()}
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool, type(None))) for k, v in options.items()):
        raise UserError(f"{bad}: its options are not plain values")
    iteration = _plain(data.get("iter", 0))
    if not isinstance(iteration, int) or not 0 <= iteration < 1 << 40:
        raise UserError(f"{bad}: its iteration {str(iteration)[:40]!r} is not a count")
    history = []
    for row in data.get("loss_history") or []:
        try:
            pair = [float(row[0]), float(row[1] if len(row) > 1 else row[0])]
        except (TypeError, ValueError, IndexError, KeyError):
            raise UserError(f"{bad}: its loss history holds {str(row)[:40]!r}, not numbers") from None
        if all(np.isfinite(pair)):
            history.append(pair)
    return {"options": options, "iter": iteration, "loss_history": history}


def _plain(value):  # noqa: ANN001, ANN202
    """numpy scalars in DFL's options -> Python values."""
    return value.item() if isinstance(value, np.generic) else value


def import_model(folder: Path, name: str, kind: str, target_root: Path, overwrite: bool = False) -> tuple[Path, int]:
    """Convert one DFL model; returns (FaceLab model folder, iteration)."""
    from facelab.models.dfl_import import load_dfl_weights
    from facelab.models.registry import create_model
    from facelab.models import store
    from facelab.training.options import TrainOptions, model_options

    prefix = f"{name}_{kind}"
    data = read_model_data(folder / f"{prefix}_data.dat")
    dfl_opts = data["options"]
    model = KINDS[kind]
    known = set(options_to_dict(TrainOptions()))
    opts = options_from_dict(TrainOptions, {k: v for k, v in dfl_opts.items() if k in known} | {"model": model})
    arch = store.spec(model).architecture(options_to_dict(opts))
    net = create_model(model, arch)
    load_dfl_weights(net, folder, prefix, arch.kind)
    target = target_root / f"{name}_{kind}"
    _make_room(target, overwrite)
    iteration = data["iter"]
    history = data["loss_history"][-100_000:]
    state = {
        "model": model,
        "options": model_options(opts),
        "seed": int(np.random.default_rng().integers(1, 2**31)),
        "loss_history": history,
        "optimizer_steps": {},
        "imported_from": {"dfl_folder": str(folder), "name": prefix, "iteration": iteration},
        "architecture": arch.__dict__,
    }
    weights = {f"model.{k}": v for k, v in net.state_dict().items()}
    checkpoint.save(target, iteration, weights, {}, state)
    return target, iteration


def _make_room(target: Path, overwrite: bool) -> None:
    """Refuse to import over a FaceLab model, unless `overwrite`: then its checkpoints are set
    aside in `replaced_<time>/`, not deleted (its newer generations would shadow the import)."""
    if not checkpoint.generations(target):
        return
    if not overwrite:
        raise UserError(f"{target} already holds a FaceLab model: pass --overwrite to replace it, or --name another")
    kept = target / f"replaced_{time.strftime('%Y%m%d_%H%M%S')}"
    kept.mkdir()
    (target / "checkpoints").rename(kept / "checkpoints")
    log.info("the model it replaces is kept in %s", kept)


def import_xseg(folder: Path, target_root: Path, overwrite: bool = False) -> tuple[Path, int]:
    """DFL's XSeg model folder -> `<target_root>/XSeg` (a FaceLab XSeg checkpoint at DFL's iteration)."""
    from facelab.models.dfl_import import load_dfl_xseg
    from facelab.models.registry import create_model
    from facelab.training.xseg import RUN_ONLY, XSegTrainOptions

    data = read_model_data(folder / "XSeg_data.dat")
    weights = sorted(p for p in folder.glob("XSeg_*.npy") if re.fullmatch(r"XSeg_\d+\.npy", p.name))
    if not weights:
        raise UserError(f"{folder} has XSeg_data.dat but no XSeg_256.npy (the network's weights): copy the whole DFL model folder")
    resolution = int(weights[0].stem.split("_")[1])
    dfl = data["options"]
    wanted = {"face_type": dfl.get("face_type", "wf"), "pretrain": bool(dfl.get("pretrain", False)),
              "batch_size": min(max(int(dfl.get("batch_size") or 4), 2), 16), "resolution": resolution, "base": 32}  # fmt: skip
    opts = options_from_dict(XSegTrainOptions, wanted)
    net = create_model("xseg", opts.base, resolution)
    load_dfl_xseg(net, weights[0])
    target = target_root / "XSeg"
    _make_room(target, overwrite)
    state = {
        "model": "xseg",
        "options": {k: v for k, v in options_to_dict(opts).items() if k not in RUN_ONLY},
        "seed": int(np.random.default_rng().integers(1, 2**31)),
        "loss_history": data["loss_history"][-100_000:],
        "optimizer_step": 0,
        "imported_from": {"dfl_folder": str(folder), "name": "XSeg", "iteration": data["iter"]},
    }
    checkpoint.save(target, data["iter"], {f"model.{k}": v for k, v in net.state_dict().items()}, {}, state)
    return target, data["iter"]


def import_dfl_model(ws: Workspace, opts: ImportOptions) -> Report:
    started = time.perf_counter()
    ws.require()
    if not opts.dfl_model_dir:
        raise UserError("give the DFL model folder: python -m facelab import-dfl-model PATH (or drop it on 6_import_DFL_model)")
    folder = Path(opts.dfl_model_dir).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give DeepFaceLab's workspace/model folder")
    models = [(n, k) for n, k in find_dfl_models(folder) if not opts.name or n == opts.name]
    if not models:
        raise UserError(f"no DFL model in {folder}" + (f" named {opts.name}" if opts.name else "") + " (looked for <name>_SAEHD_data.dat, XSeg_data.dat)")
    done, skipped = [], []
    for name, kind in models:
        label = f"{name}_{kind}" if name else kind
        if kind == "XSeg":
            target, iteration = import_xseg(folder, ws.model_dir, opts.overwrite)
        elif kind in KINDS:
            target, iteration = import_model(folder, name, kind, ws.model_dir, opts.overwrite)
        else:
            skipped.append(f"{label} ({kind} import is not built yet)")
            continue
        log.info("imported %s at iteration %d -> %s", label, iteration, target)
        done.append(f"{label} (iteration {iteration})")
    if not done:
        raise UserError(f"nothing imported from {folder}: " + "; ".join(skipped))
    summary = f"imported {', '.join(done)} into {ws.model_dir}" + (f"; skipped {', '.join(skipped)}" if skipped else "")
    return Report("import-dfl-model", summary, time.perf_counter() - started, {"imported": len(done), "skipped": len(skipped)})
