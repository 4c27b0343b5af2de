"""Script 6_export_SAEHD_onnx: a trained model to ONNX with DeepFaceLive's `.dfm` contract (dfl-spec §13).

- SAEHD / Quick96 -> `workspace/model/<name>_<Model>.dfm` (plain ONNX): input `in_face:0` float32
  N x R x R x 3 BGR [0, 1]; outputs `out_face_mask:0` (dst-decoder mask, N x R x R x 1),
  `out_celeb_face:0` (swapped face, N x R x R x 3), `out_celeb_face_mask:0` (src-decoder mask).
  Unlike DFL, the face type and resolution are written into the ONNX metadata (with the
  synthetic-media label), so a consumer need not guess the framing.
- XSeg -> `workspace/model/XSeg/XSeg_model.onnx`: `in_face:0` -> `out_mask:0` (N x R x R x 1).
Each export is checked with onnxruntime against the PyTorch model (max difference reported).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from facelab.errors import UserError
from facelab.labels import SYNTHETIC_TAGS
from facelab.models import store
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

if TYPE_CHECKING:
    from torch import nn

OPSET = 17


@dataclass(frozen=True)
class ExportOptions:
    model: str = option("Model", "saehd", choices=tuple(store.SPECS), ask=False, help="which model to export")
    model_name: str = option("Model name", "", ask=False, help="default: the most recently trained one")


def export_onnx(module: nn.Module, res: int, path: Path, outputs: list[str], metadata: dict[str, str]) -> float:
    """Export, add metadata, verify with onnxruntime; returns the max |onnx - torch| difference."""
    import onnx
    import onnxruntime as ort
    import torch

    module = module.eval().float()
    x = torch.rand(2, res, res, 3)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp), input_names=["in_face:0"], output_names=outputs, opset_version=OPSET,
                          dynamic_axes={"in_face:0": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}, dynamo=False)  # fmt: skip
    proto = onnx.load(str(tmp))
    with torch.no_grad():
        channels = [t.shape[-1] for t in (lambda o: o if isinstance(o, tuple) else (o,))(module(x))]
    for out, ch in zip(proto.graph.output, channels):  # only the batch is dynamic; the exporter left the rest symbolic
        dims = out.type.tensor_type.shape.dim
        dims[1].dim_value, dims[2].dim_value, dims[3].dim_value = res, res, ch
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(tmp))
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(None, {"in_face:0": x.numpy()})
    with torch.no_grad():
        want = module(x)
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    tmp.replace(path)
    return diff


def export(ws: Workspace, opts: ExportOptions) -> Report:
    started = time.perf_counter()
    ws.require()
    meta = {"producer": "FaceLab", **SYNTHETIC_TAGS}
    from facelab.models.dfm import DFMWrapper, XSegWrapper

    model = store.load(ws, opts.model, opts.model_name, "cpu")
    res, about = model.resolution, {**meta, "face_type": model.face_type.dfl_name, "resolution": str(model.resolution)}
    if opts.model == "xseg":
        path = model.folder / "XSeg_model.onnx"
        diff = export_onnx(XSegWrapper(model.net), res, path, ["out_mask:0"], about)
    else:
        path = model.folder.parent / f"{model.folder.name}.dfm"
        diff = export_onnx(DFMWrapper(model.net), res, path, ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"],
                           {**about, "iteration": str(model.iteration)})  # fmt: skip
    if diff > 1e-4:
        raise UserError(f"the exported {path.name} differs from the model by {diff:.2g}: please report this")
    return Report("export", f"{path} ({path.stat().st_size / 1e6:.1f} MB); onnxruntime matches PyTorch within {diff:.1e}",
                  time.perf_counter() - started, {"max_diff": diff})  # fmt: skip
