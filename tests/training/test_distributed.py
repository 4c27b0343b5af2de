"""Multi-process training (DistributedDataParallel, gloo on the CPU): the same trajectory as one
process with the same global batch."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from conftest import copy_workspace
from facelab.io import checkpoint
from facelab.options import options_to_dict, resolve_options
from facelab.training.distributed import launch, parse_devices
from facelab.training.options import TrainOptions
from facelab.training.trainer import Trainer

OPTS = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 4, "seed": 11,
        "target_iter": 6, "autosave_minutes": 600, "preview": False, "random_dst_flip": True,
        "precision": "fp32"}  # fmt: skip  (float precision is compared; auto would be bf16 on CPUs that have it)


def test_two_gloo_processes_follow_the_single_process_trajectory(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    opts = resolve_options(TrainOptions, saved=OPTS)
    single = Trainer(tmp_path / "single_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    import threading

    single.run(threading.Event(), lambda line: None)
    one = checkpoint.load_latest(tmp_path / "single_SAEHD")

    folder = tmp_path / "ddp_SAEHD"
    result = launch(parse_devices("cpu,cpu"), folder, options_to_dict(opts), ws.aligned_dir("src"), ws.aligned_dir("dst"))
    two = checkpoint.load_latest(folder)
    assert result["iteration"] == two.iteration == one.iteration == 6
    # losses at iteration 1 and the mean of 2..6, all ranks together
    np.testing.assert_allclose(two.state["loss_history"], one.state["loss_history"], rtol=1e-4)
    # after the first update the weights agree to float precision (a first AdaBelief step moves a
    # weight by about 3.5 x lr = 1.8e-4) but for a few whose gradient is near zero, where the step's
    # normalisation already turns float noise in the gradient into visible differences (measured:
    # 22 of 3.0 M weights over 1e-6, at most 2.5e-6, 99.9 % under 1.4e-7)
    first = [load_file(str(checkpoint.generations(f)[-1] / "weights.safetensors")) for f in (tmp_path / "single_SAEHD", folder)]
    diff = torch.cat([(first[0][k] - first[1][k]).abs().flatten() for k in first[0]])
    assert (diff > 1e-6).sum().item() < 1e-4 * diff.numel()
    assert diff.max().item() < 1e-5
    # ... later AdaBelief's normalised steps turn float noise in near-zero gradients into +-lr steps,
    # so compare the paths: the gap is small next to how far the weights moved
    moved = sum(((one.weights[k] - first[0][k]) ** 2).sum() for k in first[0]) ** 0.5
    gap = sum(((one.weights[k] - two.weights[k]) ** 2).sum() for k in first[0]) ** 0.5
    assert 0 < gap < 0.1 * moved, (gap, moved)
