"""Importing DeepFaceLab's golden SAEHD and XSeg models: DFL's outputs reproduced, training continues."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from conftest import copy_workspace
from facelab.io import checkpoint
from golden import golden


def test_imported_golden_model_reproduces_dfl_and_trains_on(train_workspace, tmp_path, script):
    folder = golden("saehd_liae_ud_64")
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    proc = script("6_import_DFL_model", str(folder), "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    assert "imported golden_SAEHD (iteration 40)" in proc.stdout
    ckpt = checkpoint.load_latest(ws.model_dir / "golden_SAEHD")
    assert ckpt.iteration == 40 and len(ckpt.state["loss_history"]) == 40
    assert ckpt.state["options"]["archi"] == "liae-ud" and ckpt.state["options"]["resolution"] == 64

    # outputs through FaceLab's own checkpoint: within 1e-5 of DFL's, logits within 1e-4 relative
    from facelab.models.saehd import SAEHD, Architecture

    model = SAEHD(Architecture(64, "liae-ud", 64, 32, 32, 16)).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in ckpt.weights.items()})
    r = np.load(folder / "reference.npz")
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    back = lambda x: x.permute(0, 2, 3, 1).numpy()  # noqa: E731
    with torch.no_grad():
        face, src_m, dst_m = model.swap(t(r["dst_in"]))
        np.testing.assert_allclose(back(face), r["dst_swap_face"], atol=1e-5)
        np.testing.assert_allclose(back(src_m), r["dst_swap_src_dstm"], atol=1e-5)
        np.testing.assert_allclose(back(dst_m), r["dst_pred_dst_dstm"], atol=1e-5)
        logits, _ = model.decoder.logits(model.swap_code(t(r["merge_in"])))
        np.testing.assert_allclose(back(logits), r["merge_swap_face_logits"], rtol=1e-4, atol=1e-5)

    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--model-name", "golden",
                  "--target-iter", "43", "--no-preview")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "starting at iteration 40" in proc.stderr and "3 iterations this run, now at 43" in proc.stdout
    # importing again over it needs --overwrite
    proc = script("6_import_DFL_model", str(folder), "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    # with it, the import is what loads (the trained iteration 43 no longer shadows DFL's 40), and
    # the replaced model is kept aside
    proc = script("6_import_DFL_model", str(folder), "--workspace", str(ws.root), "--non-interactive", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    target = ws.model_dir / "golden_SAEHD"
    assert checkpoint.load_latest(target).iteration == 40
    kept = list(target.glob("replaced_*/checkpoints"))
    assert len(kept) == 1 and checkpoint.load_latest(kept[0].parent).iteration == 43


def test_a_dfl_folder_with_a_malicious_data_file_is_refused(tmp_path, ws, script):
    (tmp_path / "bad_SAEHD_data.dat").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    proc = script("6_import_DFL_model", str(tmp_path), "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and "os.system" in proc.stderr and not (tmp_path / "pwned").exists()


def test_imported_dfl_xseg_matches_dfl_applies_exports_and_trains_on(tmp_path, ws, script):
    """DFL's XSeg model folder (no optimiser file): our network reproduces DFL's outputs on DFL's
    own inputs within the tolerances its README measured for DFL itself (its float32 runs differ
    by 3e-5 in logits between oneDNN on and off); then apply, export and training use it."""
    import onnxruntime as ort

    from facelab.io.faceimage import read_meta
    from facelab.io.frames import list_images
    from facelab.models import store

    folder = golden("xseg")
    args = ("--workspace", str(ws.root), "--non-interactive")
    proc = script("6_import_DFL_model", str(folder), *args)
    assert proc.returncode == 0, proc.stderr
    assert "imported XSeg (iteration 6)" in proc.stdout and not (folder / "XSeg_256_opt.npy").exists()
    loaded = store.load(ws, "xseg", device="cpu")
    assert loaded.iteration == 6 and loaded.face_type.dfl_name == "whole_face" and loaded.resolution == 256
    r = np.load(folder / "reference.npz")
    x = torch.from_numpy(r["inputs"]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits = loaded.net(x).permute(0, 2, 3, 1).numpy()
    ref = r["logits"]
    assert np.abs(logits - ref).max() / np.abs(ref).max() < 1e-4
    np.testing.assert_allclose(logits, ref, rtol=1e-3, atol=5e-5)
    assert np.abs(1 / (1 + np.exp(-logits)) - r["sigmoid"]).max() < 2e-5

    # apply: DFL's own faces get DFL's masks (its output thresholded at 0.5, as DFL's apply does)
    for name in r["face_files"]:
        shutil.copy(folder / "faces" / str(name), ws.aligned_dir("dst") / str(name))
    proc = script("5_xseg_apply", *args, "--side", "dst")
    assert proc.returncode == 0, proc.stderr
    for k, name in enumerate(r["face_files"]):  # stored at 256 x 256, as DFL stores them
        mask = read_meta(ws.aligned_dir("dst") / str(name)).xseg_mask()
        dfl = np.where(r["sigmoid"][k] < 0.1, 0, r["sigmoid"][k]) >= 0.5
        assert mask.shape == (256, 256, 1) and (dfl == (mask > 0.5)).mean() > 0.999, name
    assert len(list_images(ws.aligned_dir("dst"))) == 4

    # export: the ONNX file gives the same mask
    proc = script("6_export_SAEHD_onnx", *args, "--model", "xseg")
    assert proc.returncode == 0, proc.stderr
    session = ort.InferenceSession(str(ws.model_dir / "XSeg" / "XSeg_model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"in_face:0": r["inputs"][:1]})[0]  # the sigmoid, NHWC, as DFL's exported XSeg
    np.testing.assert_allclose(out.reshape(1, 256, 256, 1), r["sigmoid"][:1], atol=2e-5)

    # training goes on from DFL's iteration, on faces labelled in FaceLab
    from test_xseg import _label

    _label(ws.aligned_dir("dst"), occluder=False)
    proc = script("5_xseg_train", *args, "--target-iter", "8", "--no-preview", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert store.load(ws, "xseg", device="cpu").iteration == 8
