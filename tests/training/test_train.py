"""Training end to end on real faces: headless script, exact resume, crash safety, rollback."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, copy_workspace
from facelab.io import checkpoint
from media import REPO


def _weights(ws, name: str = "new") -> dict[str, torch.Tensor]:
    gen = checkpoint.generations(ws.model_dir / f"{name}_SAEHD")[0]
    return load_file(str(gen / "weights.safetensors"))


def test_headless_train_resume_continues_bit_for_bit(train_workspace, tmp_path, script):
    straight = copy_workspace(train_workspace, tmp_path / "straight")
    resumed = copy_workspace(train_workspace, tmp_path / "resumed")
    proc = script("6_train_SAEHD", "--workspace", str(straight.root), "--non-interactive", *TINY, "--target-iter", "60")
    assert proc.returncode == 0, proc.stderr
    proc = script("6_train_SAEHD", "--workspace", str(resumed.root), "--non-interactive", *TINY, "--target-iter", "50")
    assert proc.returncode == 0, proc.stderr
    assert "now at 50 (target reached)" in proc.stdout
    at50 = _weights(resumed)
    # resume: the same weights come back, and training goes on from 50
    from facelab.io.checkpoint import load_latest

    ckpt = load_latest(resumed.model_dir / "new_SAEHD")
    assert ckpt.iteration == 50 and all(torch.equal(ckpt.weights[k], at50[k]) for k in at50)
    proc = script("6_train_SAEHD", "--workspace", str(resumed.root), "--non-interactive", "--target-iter", "60")
    assert proc.returncode == 0, proc.stderr
    assert "10 iterations this run, now at 60" in proc.stdout
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "50 + resume + 10 differs from 60 in one go"
    assert not all(torch.equal(a[k], at50[k]) for k in a)
    # fixed options cannot change on resume
    proc = script("6_train_SAEHD", "--workspace", str(resumed.root), "--non-interactive", "--resolution", "128")
    assert proc.returncode == 2 and "fixed when a model is created" in proc.stderr


def test_a_damaged_newest_checkpoint_falls_back_and_none_never_starts_over(train_workspace, tmp_path, script, caplog):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    assert script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", *TINY, "--target-iter", "3",
                  "--autosave-minutes", "0.0001").returncode == 0  # fmt: skip
    gens = checkpoint.generations(ws.model_dir / "new_SAEHD")
    assert [g.name for g in gens] == ["00000003", "00000002", "00000001"]
    (gens[0] / "weights.safetensors").write_bytes(b"\0" * 100)  # power loss mid-write, say
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--target-iter", "4")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint 00000003 is damaged (weights.safetensors does not match its checksum): using 00000002" in proc.stderr
    assert "now at 4" in proc.stdout
    for gen in checkpoint.generations(ws.model_dir / "new_SAEHD"):
        (gen / "state.json").write_text("{")
    before = {p: p.read_bytes() for p in (ws.model_dir / "new_SAEHD").rglob("*.safetensors")}
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--target-iter", "10")
    assert proc.returncode == 2 and "no intact checkpoint" in proc.stderr and "Nothing was overwritten" in proc.stderr
    assert {p: p.read_bytes() for p in (ws.model_dir / "new_SAEHD").rglob("*.safetensors")} == before


def _newest_generation(folder: Path) -> int:
    """The iteration of the newest checkpoint folder on disk (0 if none), without loading it."""
    names = [p.name for p in (folder / "checkpoints").glob("[0-9]*")] if (folder / "checkpoints").is_dir() else []
    return max((int(n) for n in names), default=0)


def _wait_for_generation(proc: subprocess.Popen, folder: Path, beyond: int, timeout: float = 600) -> int:
    """Wait (however slow the machine) until the process saved a generation past `beyond`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = _newest_generation(folder)
        if newest > beyond:
            return newest
        assert proc.poll() is None, f"training exited early with code {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint past iteration {beyond} within {timeout} s")


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_the_model(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    folder = ws.model_dir / "new_SAEHD"
    cmd = [sys.executable, "-m", "facelab", "train", "--workspace", str(ws.root), "--non-interactive", *TINY,
           "--autosave-minutes", "0.003"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(3)
    last = 0
    for attempt in range(12):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        # a sign of progress first (a new save), then, at random, right away or once the next
        # save has landed: kills come in training and around saves, whatever the machine's speed
        newest = _wait_for_generation(proc, folder, last)
        if rng.random() < 0.5:
            _wait_for_generation(proc, folder, newest)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = checkpoint.load_latest(folder)
        assert ckpt is not None, f"attempt {attempt}: the model vanished"
        assert ckpt.iteration > last, f"attempt {attempt}: went from {last} to {ckpt.iteration}"
        assert all(torch.isfinite(t).all() for t in ckpt.weights.values())
        last = ckpt.iteration


def test_nan_rolls_back_to_the_last_good_generation(train_workspace, tmp_path, caplog):
    from facelab.options import resolve_options
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    given = dict(zip([a.lstrip("-").replace("-", "_") for a in TINY[::2]], TINY[1::2]))
    opts = resolve_options(TrainOptions, saved={k: (int(v) if v.isdigit() else v) for k, v in given.items()})
    folder = ws.model_dir / "m_SAEHD"
    trainer = Trainer(folder, opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    for _ in range(5):
        trainer.step()
    trainer.save()
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    trainer.step()
    assert trainer._check() is None
    assert "the loss became NaN/Inf at iteration 6: rolled back to the last good checkpoint, iteration 5" in caplog.text
    assert trainer.iteration == 5
    assert all(torch.equal(good[k], v) for k, v in trainer.model.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_decreases_on_real_faces(train_workspace, tmp_path, precision):
    """On the CPU in fp32 and in bf16 (autocast: fp32 weights, bf16 convolutions)."""
    import torch

    from facelab.options import resolve_options
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    opts = resolve_options(TrainOptions, saved={"resolution": 64, "ae_dims": 64, "e_dims": 32, "d_dims": 32,
                                                 "d_mask_dims": 16, "batch_size": 4, "seed": 1, "device": "cpu",
                                                 "precision": precision})  # fmt: skip
    trainer = Trainer(ws.model_dir / "m_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    assert trainer.amp_dtype == (torch.bfloat16 if precision == "bf16" else None)
    curve = []
    for _ in range(300):
        losses = trainer.step()
        curve.append(float(losses.src + losses.dst))
    first, last = np.mean(curve[:25]), np.mean(curve[-25:])
    assert last < 0.75 * first, (first, last)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_training_uses_the_applied_xseg_mask(train_workspace, tmp_path):
    import cv2

    from facelab.core.landmarks import FaceType
    from facelab.io.faceimage import read_face, write_face
    from facelab.io.frames import list_images
    from facelab.training.data import FacesetCache

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    path = list_images(ws.aligned_dir("src"))[0]
    img, meta = read_face(path)
    mask = np.zeros((256, 256), np.float32)
    mask[40:200, 60:180] = 1.0  # deliberately unlike the landmark hull
    write_face(path, img, meta.with_xseg_mask(mask))
    cache = FacesetCache.load_or_build(ws.aligned_dir("src"), tmp_path / "cache", "src", 128, FaceType.WHOLE_FACE)
    used = cache.images[cache.names.index(path.name), 3].astype(np.float32) / 255
    want = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_LINEAR)
    assert np.abs(used - want).max() < 0.02
    # and the cache notices the change of the faceset
    write_face(path, img, meta)
    again = FacesetCache.load_or_build(ws.aligned_dir("src"), tmp_path / "cache", "src", 128, FaceType.WHOLE_FACE)
    assert np.abs(again.images[again.names.index(path.name), 3].astype(np.float32) / 255 - want).max() > 0.2


def test_ctrl_c_saves_and_exits_with_backups_and_history(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    cmd = [sys.executable, "-m", "facelab", "train", "--workspace", str(ws.root), "--non-interactive", *TINY,
           "--write-preview-history", "--autobackup-hour", "0.00002", "--autosave-minutes", "0.002"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    folder = ws.model_dir / "new_SAEHD"
    _wait_for_generation(proc, folder, 10)  # past iteration 10: a preview-history image is due
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "(stopped by Ctrl+C)" in out
    ckpt = checkpoint.load_latest(folder)
    assert ckpt.iteration > 10 and f"now at {ckpt.iteration}" in out
    assert list((folder / "autobackups").iterdir()), "no autobackup was made"
    history = sorted((folder / "history").glob("*.jpg"))
    assert history and history[0].name == "0000010.jpg"  # every 10 * max(1, 64 // 64) iterations
    assert (folder / "preview.jpg").exists()
    import cv2

    assert cv2.imread(str(folder / "preview.jpg")).shape == (4 * 64, 5 * 64, 3)  # up to 4 faces x 5 columns


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_interactive_new_model_then_override_on_resume(train_workspace, tmp_path):
    from terminal import PROMPT, run_in_terminal

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    fixed = ["--resolution", "64", "--ae-dims", "32", "--e-dims", "16", "--d-dims", "16", "--d-mask-dims", "16"]
    code, out = run_in_terminal(["train", "--workspace", str(ws.root), *fixed, "--target-iter", "2"], ["mine"])
    assert code == 0, out
    assert "[new] Name of the new model" in out and "Creating the new model mine_SAEHD" in out
    assert "[liae-ud] AE architecture" in out and "[auto] Batch size ( auto or 1-512 ?:help ) :" in out
    assert (ws.model_dir / "mine_SAEHD").is_dir()
    # resume: the model is offered, Enter within 2 s opens the changeable options (never the fixed)
    answers = ["", "", "", "", "", "", "3"]  # model 0, Enter (override), backup, history, flips, batch size 3
    code, out = run_in_terminal(["train", "--workspace", str(ws.root), "--target-iter", "4"], answers,
                                markers=(PROMPT, b"Press Enter within 2 seconds"))  # fmt: skip
    assert code == 0, out
    assert "[0] : mine - latest" in out and "Resolution" not in out
    state = checkpoint.load_latest(ws.model_dir / "mine_SAEHD").state
    assert state["options"]["batch_size"] == 3 and state["options"]["resolution"] == 64
