"""Hostile model files (issue 14): DFL `_data.dat` and weight `.npy` files, S3FD/FAN weights,
FaceLab checkpoints and `.dfm` exports a user downloads. Each crafted file is one line naming it,
read before anything is allocated for it, and nothing is written.

The files are made here: pickles of the wrong shape or type, arrays asked of numpy's constructor
with no bytes behind them, arrays of Python objects, files far bigger than their network, states
whose options describe a network of gigabytes, ONNX files with lying metadata.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.errors import UserError
from facelab.io import checkpoint
from facelab.io import faceimage as fi
from golden import golden


class _Huge:
    """Pickles as numpy's `_reconstruct` asked for 10^12 float64 values outright."""

    def __reduce__(self):  # noqa: ANN204
        from numpy._core import multiarray

        return multiarray._reconstruct, (np.ndarray, (10**6, 10**6), b"d")


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 500, text
    for word in words:
        assert word in text, text
    return text


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:  # no data blocks: a huge file that costs nothing to make
        fh.truncate(size)
    return path


# ---------------------------------------------------------------- DFL _data.dat


@pytest.fixture
def dfl_folder(tmp_path) -> Path:
    """A copy of DFL's golden SAEHD model folder (its parts linked, not copied)."""
    folder = tmp_path / "dfl"
    folder.mkdir()
    for path in golden("saehd_liae_ud_64").iterdir():
        os.symlink(path, folder / path.name)
    return folder


def _data(folder: Path, **changes) -> None:  # noqa: ANN003
    real = fi.load_dfl_pickle((folder / "golden_SAEHD_data.dat").read_bytes(), "x", max_items=1 << 24)
    (folder / "golden_SAEHD_data.dat").unlink()
    (folder / "golden_SAEHD_data.dat").write_bytes(pickle.dumps({**real, **changes}, protocol=4))


@pytest.mark.parametrize("changes, words", [
    ({"options": [1, 2]}, ("no options inside",)),
    ({"options": {"resolution": 64, "archi": {"nested": [1]}}}, ("not plain values",)),
    ({"iter": "forty"}, ("iteration", "not a count")),
    ({"iter": -3}, ("not a count",)),
    ({"loss_history": [["a", "b"]]}, ("loss history",)),
    ({"loss_history": [[1.0, 2.0]] * 10 + [None]}, ("loss history",)),
    ({"sample_for_preview": np.array([[1], [2]], dtype=object)}, ("Python objects",)),
    ({"sample_for_preview": _Huge()}, ("not built from the file's own bytes",)),
])  # fmt: skip
def test_a_crafted_dfl_data_file_is_one_line_and_nothing_is_written(dfl_folder, tmp_path, changes, words):
    from facelab.stages.import_dfl import import_model

    _data(dfl_folder, **changes)
    with pytest.raises(UserError) as info:
        import_model(dfl_folder, "golden", "SAEHD", tmp_path / "models")
    _one_line(info, "golden_SAEHD_data.dat", *words)
    assert not (tmp_path / "models").exists()


def test_a_data_file_past_its_bound_is_refused_unread(dfl_folder, tmp_path, monkeypatch):
    from facelab.stages import import_dfl

    (dfl_folder / "golden_SAEHD_data.dat").unlink()
    _sparse(dfl_folder / "golden_SAEHD_data.dat", import_dfl.DAT_MAX_BYTES + 1)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} was read"))
    with pytest.raises(UserError) as info:
        import_dfl.import_model(dfl_folder, "golden", "SAEHD", tmp_path / "models")
    _one_line(info, "golden_SAEHD_data.dat", "MB")


def test_a_long_trained_dfl_models_history_is_not_mistaken_for_a_bomb(dfl_folder, tmp_path):
    from facelab.stages.import_dfl import read_model_data

    rng = np.random.default_rng(0)
    _data(dfl_folder, iter=1_000_000, loss_history=[[float(a), float(b)] for a, b in rng.random((1_000_000, 2))])
    data = read_model_data(dfl_folder / "golden_SAEHD_data.dat")
    assert data["iter"] == 1_000_000 and len(data["loss_history"]) == 1_000_000


# ---------------------------------------------------------------- DFL weight parts


def _part(folder: Path, part: str, table: object) -> Path:
    path = folder / f"golden_SAEHD_{part}.npy"
    path.unlink()
    path.write_bytes(pickle.dumps(table, protocol=4))
    return path


def _real_part(part: str) -> dict:
    path = golden("saehd_liae_ud_64") / f"golden_SAEHD_{part}.npy"
    return fi.load_dfl_pickle(path.read_bytes(), path.name)


@pytest.mark.parametrize("craft, words", [
    (lambda t: {**t, next(iter(t)): np.zeros((3, 3), np.float32)}, ("in the DFL model",)),
    (lambda t: {**t, "inter_AB/surprise/weight:0": np.zeros(4, np.float32)}, ("not part of this architecture",)),
    (lambda t: {**t, next(iter(t)): [[0.0] * 4] * 4}, ("not a table of numbers",)),
    (lambda t: {**t, next(iter(t)): np.array(["a", "b"])}, ("not a table of numbers",)),
    (lambda t: list(t.values()), ("not a DFL weights file",)),
    (lambda t: {**t, "x": _Huge()}, ("not built from the file's own bytes",)),
])  # fmt: skip
def test_a_crafted_dfl_weights_part_is_one_line_and_nothing_is_written(dfl_folder, tmp_path, craft, words):
    from facelab.stages.import_dfl import import_model

    _part(dfl_folder, "inter_AB", craft(_real_part("inter_AB")))
    with pytest.raises(UserError) as info:
        import_model(dfl_folder, "golden", "SAEHD", tmp_path / "models")
    _one_line(info, "golden_SAEHD_inter_AB.npy", *words)
    assert not (tmp_path / "models").exists()


def test_a_weights_part_far_bigger_than_its_network_is_refused_unread(dfl_folder, tmp_path, monkeypatch):
    from facelab.stages.import_dfl import import_model

    (dfl_folder / "golden_SAEHD_encoder.npy").unlink()
    _sparse(dfl_folder / "golden_SAEHD_encoder.npy", 8 << 30)  # 8 GB for a 1 M-value encoder
    reads = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real_read(self))
    with pytest.raises(UserError) as info:
        import_model(dfl_folder, "golden", "SAEHD", tmp_path / "models")
    _one_line(info, "golden_SAEHD_encoder.npy", "not the right weights file")
    assert "golden_SAEHD_encoder.npy" not in reads


def test_detector_weights_far_bigger_than_the_detector_are_refused_unread(tmp_path):
    from facelab.detect.s3fd_fan import S3FDNet, build_net

    path = _sparse(tmp_path / "S3FD.npy", 4 << 30)
    with pytest.raises(UserError) as info:
        build_net(S3FDNet(), str(path), "cpu", "S3FD", "s3fd detector", "--detector-weights")
    _one_line(info, "S3FD.npy", "MB")


def test_detector_weights_that_hold_no_tensors_are_one_line(tmp_path):
    from facelab.detect.s3fd_fan import S3FDNet, build_net

    net = S3FDNet()
    table = {k: "not a tensor" for k in net.state_dict()}
    torch.save(table, tmp_path / "s3fd.pth")
    with pytest.raises(UserError) as info:
        build_net(net, str(tmp_path / "s3fd.pth"), "cpu", "S3FD", "s3fd detector", "--detector-weights")
    _one_line(info, "s3fd.pth")


# ---------------------------------------------------------------- FaceLab checkpoints


def _tiny_checkpoint(folder: Path, state: dict, weights: dict | None = None) -> None:
    net = torch.nn.Linear(4, 2)
    weights = weights if weights is not None else {f"model.{k}": v for k, v in net.state_dict().items()}
    checkpoint.save(folder, 5, weights, {}, state)  # a consistent manifest: only the content lies


@pytest.mark.parametrize("state, words", [
    ({"iteration": "five"}, "iteration"),
    ({"loss_history": "lots"}, "loss_history is not a list"),
    ({"loss_history": [[0.1, 0.2], ["x"]]}, "loss history"),
    ({"options": [1]}, "options is not a dict"),
    ({"seed": 1.5}, "seed"),
    ({"optimizer_steps": {"model": "ten"}}, "optimizer step"),
    ({"schema": "something.else"}, "not a FaceLab checkpoint"),
])  # fmt: skip
def test_a_checkpoint_with_a_lying_state_is_not_used(tmp_path, state, words):
    _tiny_checkpoint(tmp_path / "m", state)
    with pytest.raises(UserError) as info:
        checkpoint.load_latest(tmp_path / "m")
    _one_line(info, "no intact checkpoint", words)


def test_a_lying_newest_generation_falls_back_to_the_last_good_one(tmp_path):
    _tiny_checkpoint(tmp_path / "m", {})
    checkpoint.save(tmp_path / "m", 9, {"model.weight": torch.zeros(2, 4)}, {}, {"architecture": "huge"})
    ckpt = checkpoint.load_latest(tmp_path / "m")
    assert ckpt.iteration == 5


def test_a_checkpoint_with_manifest_of_another_shape_is_damaged_not_a_crash(tmp_path):
    _tiny_checkpoint(tmp_path / "m", {})
    gen = checkpoint.generations(tmp_path / "m")[0]
    (gen / "manifest.json").write_text('["weights.safetensors"]')
    assert "not one of ours" in checkpoint.verify(gen)
    (gen / "manifest.json").write_text('{"weights.safetensors": 3}')
    assert "checksum" in checkpoint.verify(gen)


def test_weights_of_another_shape_are_one_line_not_a_torch_error(tmp_path):
    _tiny_checkpoint(tmp_path / "m", {}, {"model.weight": torch.zeros(3, 4), "model.bias": torch.zeros(2)})
    ckpt = checkpoint.load_latest(tmp_path / "m")
    with pytest.raises(UserError) as info:
        checkpoint.load_into(torch.nn.Linear(4, 2), ckpt, "model")
    _one_line(info, "model.weight", "(3, 4)", "(2, 4)")
    with pytest.raises(UserError) as info:
        checkpoint.load_into(torch.nn.Linear(4, 2), ckpt.__class__(ckpt.folder, 5, {}, {}, ckpt.state), "model")
    _one_line(info, "tensors missing")


def test_optimizer_slots_of_another_shape_are_dropped_with_a_warning(tmp_path, caplog):
    from facelab.nn.optim import RMSprop
    from facelab.training.trainer import load_slots

    net = torch.nn.Linear(4, 2)
    opt = RMSprop(net.parameters(), lr=1e-3)
    ckpt = checkpoint.Checkpoint(tmp_path, 5, {}, {"m.weight": torch.ones(7), "m.bias": torch.ones(2)}, {})
    load_slots(opt, dict(net.named_parameters()), ckpt, "", 3)
    assert "m" in opt.state[net.bias] and net.weight not in opt.state
    assert "1 optimiser slots do not fit" in caplog.text


@pytest.mark.parametrize("arch, words", [
    ({"resolution": 10**6}, "resolution"),
    ({"ae_dims": 10**7}, "ae_dims"),
    ({"archi": "liae-ud", "e_dims": "64"}, "e_dims"),
    ({"archi": 7}, "archi"),
])  # fmt: skip
def test_a_shared_model_whose_options_describe_gigabytes_is_refused_before_it_is_built(tmp_path, arch, words):
    from facelab.models import store
    from facelab.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    ws.create_layout()
    state = {"model": "saehd", "options": {"face_type": "wf"}, "architecture": {"resolution": 64, **arch}}
    _tiny_checkpoint(ws.model_dir / "shared_SAEHD", state)
    with pytest.raises(UserError) as info:
        store.load(ws, "saehd", "shared", "cpu")
    _one_line(info, "shared_SAEHD", "network FaceLab can build", words)


# ---------------------------------------------------------------- .dfm


def _onnx(path: Path, shape: list, meta: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from facelab.models.dfm import INPUT, OUTPUTS

    nodes = [helper.make_node("Identity", [INPUT], [name]) for name in OUTPUTS]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in OUTPUTS])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("shape, meta, words", [
    (["n", "h", "w", 3], {"resolution": "abc"}, "'resolution' metadata 'abc'"),
    (["n", "h", "w", 3], {"resolution": "1e9"}, "not a whole number"),
    (["n", "h", "w", 3], {"resolution": "99999999"}, "not from 16 to"),
    (["n", 64, 64, 3], {"iteration": "-1"}, "'iteration'"),
    (["n", 64, 64, 3], {"face_type": "x" * 10_000}, "face type"),
    (["n", 64, 64], {}, "not a batch of colour faces"),
])  # fmt: skip
def test_a_dfm_with_lying_metadata_is_one_line(tmp_path, shape, meta, words):
    from facelab.models.dfm import DFMModel

    path = _onnx(tmp_path / "shared.dfm", shape, meta)
    with pytest.raises(UserError) as info:
        DFMModel(path, device="cpu")
    _one_line(info, "shared.dfm", words)


def test_an_honest_dfm_with_dynamic_size_takes_its_resolution_from_metadata(tmp_path):
    from facelab.models.dfm import DFMModel

    model = DFMModel(_onnx(tmp_path / "ok.dfm", ["n", "h", "w", 3], {"resolution": "96", "iteration": "12"}), device="cpu")
    assert (model.resolution, model.iteration) == (96, 12)
