"""Trained models on disk, in one place: which kinds there are, where each lives, how it frames
faces and how its network is rebuilt from a checkpoint.

Every stage that touches a trained model (train, merge, export, import, XSeg) asks here instead
of knowing the layout itself:

    workspace/model/<name>_SAEHD/      a SAEHD model     (spec("saehd").folder(ws, name))
    workspace/model/<name>_Quick96/    a Quick96 model
    workspace/model/XSeg/              the XSeg model (one per workspace, no name)
    workspace/model/SAEHD_default_options.json   the options a new SAEHD model starts from

A folder holds checkpoint generations (`io.checkpoint`); its `state.json` is read only through
`io.checkpoint.read_state`. torch is imported only by `load`, so listing models stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.core.landmarks import FaceType
from facelab.errors import UserError
from facelab.io import checkpoint
from facelab.workspace import Workspace

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """What FaceLab knows about one kind of model.

    Attributes:
        kind: the registry name (`models.registry.create_model`).
        suffix: the folder is `<name>_<suffix>`; for an unnamed kind (XSeg) the folder itself.
        train_script: the numbered script that trains it (named in "train it first" messages).
        fixed_face_type: the face type every model of this kind uses, or None: from its options.
        default_face_type: the face type of a model whose options lack one.
        fixed_resolution: the resolution every model of this kind has, or None: from its options.
        fixed_recipe: trained with one fixed recipe (DFL's Quick96: batch 4, random warp, no
            options asked); otherwise every option is asked for a new model.
        named: whether models of this kind have names (one folder each).
    """

    kind: str
    suffix: str
    train_script: str
    fixed_face_type: str | None = None
    default_face_type: str = "f"
    fixed_resolution: int | None = None
    fixed_recipe: bool = False
    named: bool = True

    def folder(self, ws: Workspace, name: str = "") -> Path:
        return ws.model_dir / (f"{name}_{self.suffix}" if self.named else self.suffix)

    def face_type(self, options: dict[str, Any]) -> FaceType:
        return FaceType.parse(self.fixed_face_type or options.get("face_type") or self.default_face_type)

    def resolution(self, options: dict[str, Any]) -> int:
        return self.fixed_resolution or int(options.get("resolution", 256 if self.kind == "xseg" else 128))

    def architecture(self, options: dict[str, Any]):  # noqa: ANN201 - saehd.Architecture
        """The network's shape from a model's options (SAEHD, Quick96)."""
        from facelab.models.saehd import QUICK96, Architecture

        if self.kind == "quick96":
            return QUICK96
        fields = Architecture.__dataclass_fields__
        return Architecture(**{k: options[k] for k in fields if k in options})

    def default_options_path(self, ws: Workspace) -> Path:
        return ws.default_options_path(self.suffix)


SPECS: dict[str, ModelSpec] = {
    spec.kind: spec
    for spec in (
        ModelSpec("saehd", "SAEHD", "6_train_SAEHD"),
        ModelSpec("quick96", "Quick96", "6_train_Quick96", fixed_face_type="f", fixed_resolution=96, fixed_recipe=True),
        ModelSpec("xseg", "XSeg", "5_xseg_train", default_face_type="wf", named=False),
    )
}
SWAP_MODELS = ("saehd", "quick96")
"""The kinds that swap faces (train, merge and export choose among these)."""


def spec(kind: str) -> ModelSpec:
    if kind not in SPECS:
        raise UserError(f"unknown model kind {kind!r}: choose {', '.join(SPECS)}")
    return SPECS[kind]


def list_trained(ws: Workspace, kind: str) -> list[tuple[str, Path]]:
    """(name, folder) of the trained models of this kind, most recently trained first."""
    s = spec(kind)
    suffix = "_" + s.suffix
    found = []
    if ws.model_dir.is_dir():
        for p in ws.model_dir.iterdir():
            gens = checkpoint.generations(p) if p.is_dir() and p.name.endswith(suffix) else []
            if gens:
                found.append((p.name[: -len(suffix)], p, gens[0].stat().st_mtime))
    return [(n, p) for n, p, _ in sorted(found, key=lambda t: -t[2])]


def find(ws: Workspace, kind: str, name: str = "") -> Path:
    """The folder of the named model, or of the most recently trained one (UserError if none)."""
    s = spec(kind)
    if name or not s.named:
        return s.folder(ws, name)
    models = list_trained(ws, kind)
    if not models:
        raise UserError(f"no trained {s.suffix} model in {ws.model_dir}: run {s.train_script} first")
    return models[0][1]


def saved_options(folder: Path) -> dict | None:
    """Options of the newest readable generation (unverified: to show and prompt; loading verifies)."""
    for gen in checkpoint.generations(folder):
        state = checkpoint.read_state(gen)
        if state is not None:
            return state.get("options")
    return None


@dataclass
class LoadedModel:
    """A trained model ready to run (eval mode, on its device)."""

    net: Any  # torch.nn.Module
    kind: str
    face_type: FaceType
    resolution: int
    iteration: int
    device: torch.device
    folder: Path
    options: dict[str, Any]


def load(ws: Workspace, kind: str, name: str = "", device: str = "auto") -> LoadedModel:
    """The newest intact checkpoint of a model, rebuilt and loaded (UserError if there is none)."""
    import torch

    from facelab.models.registry import create_model
    from facelab.nn.device import prefers_channels_last, resolve_device

    s = spec(kind)
    folder = find(ws, kind, name)
    ckpt = checkpoint.load_latest(folder)
    if ckpt is None:
        raise UserError(f"no trained {s.suffix} model in {folder}: run {s.train_script} first")
    options = ckpt.state.get("options", {})
    try:
        if kind == "xseg":
            resolution = s.resolution(options)
            net = create_model("xseg", options.get("base", 32), resolution)
        else:
            arch = s.architecture(ckpt.state.get("architecture", options))
            resolution = arch.resolution
            net = create_model(kind, arch)
    except (ValueError, TypeError) as exc:  # a shared model's options are untrusted input
        raise UserError(f"{ckpt.folder}: its options do not describe a network FaceLab can build ({exc})") from None
    checkpoint.load_into(net, ckpt, "model")
    dev = torch.device(resolve_device(device))
    if kind != "xseg" and prefers_channels_last(dev):  # as it trains (XSeg measured no faster)
        net = net.to(memory_format=torch.channels_last)
    return LoadedModel(net.to(dev).eval(), kind, s.face_type(options), resolution, ckpt.iteration, dev, folder, options)
