"""Importing DeepFaceLab's golden SAEHD model: DFL's outputs reproduced, training continues."""

from __future__ import annotations

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
