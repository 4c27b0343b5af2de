"""Memory before and during training (issue 19): the probe, `--batch-size auto` under a limit,
out-of-memory errors that keep the weights and say which batch fits, gradient checkpointing,
and batched stages (merge, extraction) that split a batch which does not fit."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from conftest import TINY, copy_workspace
from facelab import cli
from facelab.errors import UserError, is_out_of_memory
from facelab.io import checkpoint
from facelab.pieces import Pieces, join_lists
from facelab.training.memory import HEADROOM, MemoryFit

SMALL = ["--resolution", "128", "--archi", "liae-ud", "--ae-dims", "32", "--e-dims", "16", "--d-dims", "16",
         "--d-mask-dims", "16", "--seed", "7", "--no-preview", "--non-interactive"]  # fmt: skip


def _train_measured(ws, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`facelab train` in a fresh process; returns it and that process's own peak RSS in MiB."""
    code = ("import sys; from facelab.cli import main; from facelab.training.memory import process_peak_rss_mib; "
            "rc = main(sys.argv[1:]); print('PEAK_KIB', int(process_peak_rss_mib() * 1024)); sys.exit(rc)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, "train", "--workspace", str(ws.root), *args],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    peak = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KIB")]
    return proc, (peak[0] / 1024 if peak else 0.0)


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS of a process as Linux reports it")
def test_batch_size_auto_picks_a_batch_whose_peak_stays_under_the_limit(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    defaults = ws.model_dir / "SAEHD_default_options.json"
    defaults.unlink(missing_ok=True)  # another test's model may have left its options as the defaults of new ones
    # a first model measures what this configuration needs (the probe runs for every new model)
    proc, _ = _train_measured(ws, *SMALL, "--model-name", "first", "--batch-size", "2", "--target-iter", "1")
    assert proc.returncode == 0, proc.stderr
    assert "memory: expected peak" in proc.stderr and "RAM available" in proc.stderr
    fit = MemoryFit.load(ws.model_dir / "first_SAEHD")
    assert fit is not None and fit.per_face_mib > 0 and [b for b, _ in fit.probes] == [2, 4]
    # a limit under which batch 3 is the largest that fits with the headroom
    limit_mib = (fit.fixed_mib + 3.5 * fit.per_face_mib) / HEADROOM
    limit_gb = round(limit_mib / 1024, 4)
    defaults.unlink()  # the same configuration again; the new model writes the file anew
    proc, peak = _train_measured(ws, *SMALL, "--model-name", "auto", "--batch-size", "auto", "--memory-limit-gb",
                                 str(limit_gb), "--target-iter", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    state = checkpoint.load_latest(ws.model_dir / "auto_SAEHD").state
    chosen = state["options"]["batch_size"]
    assert chosen == 3, proc.stderr
    assert f"batch size auto -> {chosen}" in proc.stderr and f"--memory-limit-gb {limit_gb:g}" in proc.stderr
    assert 0 < peak <= limit_gb * 1024, f"peak {peak:.0f} MiB over the limit {limit_gb * 1024:.0f} MiB: {proc.stderr}"
    # the defaults a model with auto writes for the next new model say auto, not this model's number
    assert json.loads(defaults.read_text())["batch_size"] == 0
    # a limit too small for batch 1: one line, exit 2, before any training
    proc, _ = _train_measured(ws, *SMALL, "--model-name", "tiny", "--memory-limit-gb", "0.05", "--target-iter", "1")
    assert proc.returncode == 2 and "at batch 1" in proc.stderr and "Traceback" not in proc.stderr
    assert not checkpoint.generations(ws.model_dir / "tiny_SAEHD")


def _fail_at(monkeypatch, target, name: str, call: int) -> None:
    """Make `target.name` raise an out-of-memory error on its `call`-th call."""
    original, calls = getattr(target, name), []

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == call:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


def test_out_of_memory_in_training_saves_the_weights_and_names_a_batch_that_fits(train_workspace, tmp_path, monkeypatch, capsys):
    from facelab.training.trainer import Trainer

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    args = ["train", "--workspace", str(ws.root), *TINY, "--autosave-minutes", "60", "--target-iter", "50"]
    args[args.index("--batch-size") + 1] = "6"
    folder = ws.model_dir / "new_SAEHD"
    folder.mkdir(parents=True)
    # the probe's fit as it would be kept: batch 3 the largest that fits
    MemoryFit("cpu", 400.0, 10.0, (400 + 3.5 * 10) / HEADROOM, ((2, 420.0), (4, 440.0)), 64).save(folder)
    args += ["--no-memory-probe"]
    _fail_at(monkeypatch, Trainer, "step", 5)  # four steps done, the fifth runs out of memory in its forward pass
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "out of memory on cpu at batch 6, resolution 64, iteration 4" in err and "saved iteration 4" in err
    assert "the memory probe says batch 3 fits: run again with --batch-size 3" in err and "Traceback" not in err
    ckpt = checkpoint.load_latest(folder)
    assert ckpt.iteration == 4 and ckpt.weights  # loadable, the last good weights
    monkeypatch.undo()

    # out of memory inside an update: half-written weights are never saved; the newest stays
    from facelab.nn.optim import AdaBelief

    _fail_at(monkeypatch, AdaBelief, "step", 3)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "iteration 6" in err and "the newest checkpoint is iteration 4" in err and "saved iteration" not in err
    assert checkpoint.load_latest(folder).iteration == 4


def test_a_missing_low_precision_kernel_falls_back_to_fp32_with_one_warning(train_workspace, tmp_path, caplog):
    from facelab.options import resolve_options
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer

    opts = resolve_options(TrainOptions, saved={"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16,
                                                "batch_size": 2, "seed": 3, "precision": "bf16", "device": "cpu"})  # fmt: skip
    trainer = Trainer(tmp_path / "m", opts, train_workspace.aligned_dir("src"), train_workspace.aligned_dir("dst"))
    assert trainer.amp_dtype == torch.bfloat16
    real, calls = trainer._forward, []

    def forward(*a):  # noqa: ANN002, ANN202
        calls.append(torch.is_autocast_enabled("cpu"))
        if calls[-1]:
            raise RuntimeError("\"slow_conv2d_cpu\" not implemented for 'BFloat16'")
        return real(*a)

    trainer._forward = forward
    with caplog.at_level(logging.WARNING):
        trainer._guarded_step()
        trainer._guarded_step()
    assert trainer.iteration == 2 and trainer.amp_dtype is None and calls == [True, False, False]
    assert sum("training goes on in fp32" in r.getMessage() for r in caplog.records) == 1


def test_gradient_checkpointing_gives_the_same_gradients():
    from facelab.models.saehd import SAEHD, Architecture

    torch.manual_seed(0)
    for archi in ("liae-ud", "df-udt"):
        model = SAEHD(Architecture(resolution=64, archi=archi, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=16))
        x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
        grads = []
        for on in (False, True):
            model.set_gradient_checkpointing(on)
            model.zero_grad(set_to_none=True)
            out = model(x, y)
            (out["pred_src"].square().mean() + out["pred_dst_mask"].mean()).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
        for name, g in grads[0].items():
            torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=f"{archi} {name}")


def test_pieces_split_a_batch_that_does_not_fit_and_keep_the_smaller_size(caplog):
    seen = []

    def fn(part):  # noqa: ANN001, ANN202
        seen.append(len(part))
        if len(part) > 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes")
        return [x * 2 for x in part]

    pieces = Pieces("merge")
    with caplog.at_level(logging.WARNING):
        assert pieces.run(fn, list(range(10)), join_lists) == [x * 2 for x in range(10)]
        assert pieces.run(fn, list(range(5)), join_lists) == [x * 2 for x in range(5)]
    assert seen == [10, 5, 2, 2, 2, 2, 2, 2, 2, 1]  # 10 and 5 fail; then pieces of 2 for the rest of the stage
    said = [r.getMessage() for r in caplog.records]
    assert said == ["merge: out of memory with 10 at once; going on with 5 at a time",
                    "merge: out of memory with 5 at once; going on with 2 at a time"]  # fmt: skip
    with pytest.raises(RuntimeError, match="unrelated"):  # not memory: raised as it is
        Pieces("x").run(lambda part: (_ for _ in ()).throw(RuntimeError("unrelated")), [1], join_lists)
    with pytest.raises(UserError, match="even with one at a time"):
        Pieces("x").run(lambda part: (_ for _ in ()).throw(MemoryError()), [1, 2], join_lists)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory")) and not is_out_of_memory(ValueError("out of memory"))


def test_low_memory_training_follows_the_same_weights(train_workspace, tmp_path):
    """Gradient checkpointing with the update in the backward pass: the same model after a few
    steps as plain training (float noise only), and the gradients are gone after each step."""
    from facelab.options import resolve_options
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer

    base = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 2, "seed": 3,
            "device": "cpu", "precision": "fp32"}  # fmt: skip
    models = []
    for on in (False, True):
        opts = resolve_options(TrainOptions, saved={**base, "gradient_checkpointing": on})
        trainer = Trainer(tmp_path / f"m{int(on)}", opts, train_workspace.aligned_dir("src"), train_workspace.aligned_dir("dst"))
        assert trainer.update_in_backward is on
        for _ in range(3):
            trainer.step()
        assert all(p.grad is None for p in trainer.model.parameters())
        models.append(trainer.model.state_dict())
    moved = 0.0
    for name, w in models[0].items():
        torch.testing.assert_close(models[1][name], w, rtol=1e-4, atol=1e-6, msg=name)
    start = Trainer(tmp_path / "m2", resolve_options(TrainOptions, saved=base), train_workspace.aligned_dir("src"),
                    train_workspace.aligned_dir("dst")).model.state_dict()  # fmt: skip
    moved = max((models[0][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-5  # the weights did move, so the comparison above means something


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
@pytest.mark.parametrize("low_memory", [False, True])
def test_training_reuses_freed_memory_and_low_memory_mode_returns_it(low_memory):
    # a step's big block (64 MiB) allocated, written and freed, again and again: its page faults
    # counted (the speed is bench/train.py's); a fresh process, since the setting is process-wide
    code = ("import ctypes, resource; from facelab.training.memory import tune_allocator; "
            f"tune_allocator(low_memory=False); tune_allocator(low_memory={low_memory}); "  # low memory after a trainer
            "libc = ctypes.CDLL('libc.so.6'); "
            "libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]; "
            "libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]; "
            "faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt; "
            "p = libc.malloc(64 << 20); libc.memset(p, 1, 64 << 20); libc.free(p); before = faults()\n"
            "for _ in range(3):\n p = libc.malloc(64 << 20); libc.memset(p, 1, 64 << 20); libc.free(p)\n"
            "print('FAULTS', faults() - before)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    faults = int(proc.stdout.split("FAULTS")[1])
    pages = 3 * (64 << 20) // 4096
    if low_memory:
        assert faults > pages // 2  # mapped afresh each time and handed back when freed
    else:
        assert faults < pages // 20  # the same memory again
