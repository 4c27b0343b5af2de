"""Script 6: train SAEHD or Quick96 (dfl-spec §8, §10) into `workspace/model/<name>_<Model>/`.

`resolve_train` (called by the CLI before the stage, the only place that asks questions) picks the
model as DFL does and resolves its options:
- models are listed newest first; Enter takes the newest, a number picks one, a new name creates
  a model, `r` renames and `d` deletes one (after a confirmation);
- a new model asks every option (defaults from `model/<Model>_default_options.json`, written by the
  first model, as DFL's `SAEHD_default_options.dat`); Quick96 asks nothing;
- an existing model offers "Press Enter within 2 seconds to override model settings"; options fixed
  at creation are never asked again.
Headless (`--non-interactive` or no terminal): the newest model, or a new one named "new", and the
saved options plus flags.

`train` runs the loop in `training.trainer` until the target iteration or Ctrl+C, which saves and
exits.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from facelab.errors import UserError
from facelab.io.frames import write_text_atomic
from facelab.models import store
from facelab.options import OptionSpec, ask_option, ask_yes_no, resolve_options, say, wait_for_enter
from facelab.report import Report
from facelab.ui import can_show_windows
from facelab.training.options import TrainOptions, model_options
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

def _choose_model(ws: Workspace, model: str, interactive: bool) -> str:
    while True:
        models = store.list_trained(ws, model)
        if not interactive:
            return models[0][0] if models else "new"
        if not models:
            spec = OptionSpec(key="name", title="Name of the new model", kind=str, default="new")
            return _valid_name(ask_option(spec, "new"))
        say(f"Choose one of the saved {store.spec(model).suffix} models, or enter a name to create a new one:")
        for i, (name, _) in enumerate(models):
            say(f"[{i}] : {name}" + (" - latest" if i == 0 else ""))
        say("[r] : rename\n[d] : delete")
        spec = OptionSpec(key="choice", title="Model", kind=str, default="0")
        answer = ask_option(spec, "0").strip()
        if answer.isdigit() and int(answer) < len(models):
            return models[int(answer)][0]
        if answer in ("r", "d"):
            pick = ask_option(OptionSpec(key="which", title="Which model (number)", kind=str, default="0"), "0")
            if not pick.isdigit() or int(pick) >= len(models):
                say("no such model")
                continue
            name, folder = models[int(pick)]
            if answer == "r":
                new = _valid_name(ask_option(OptionSpec(key="new", title="New name", kind=str, default=name), name))
                target = store.spec(model).folder(ws, new)
                if target.exists():
                    say(f"{target.name} exists already")
                else:
                    folder.rename(target)
            elif ask_yes_no(f"Delete model {name} and all its checkpoints and backups", False):
                shutil.rmtree(folder)
            continue
        return _valid_name(answer)


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        raise UserError(f"'{name}' cannot be a model name: use letters, digits, - and _")
    return name


def resolve_train(ws: Workspace, given: dict[str, Any], interactive: bool) -> TrainOptions:
    """Pick the model and resolve its options (see the module docstring)."""
    ws.require()
    model = given.get("model", "saehd")
    name = given.get("model_name") or _choose_model(ws, model, interactive)
    given = {**given, "model_name": _valid_name(name)}
    spec = store.spec(model)
    folder = spec.folder(ws, name)
    saved = store.saved_options(folder)
    asks = interactive and not spec.fixed_recipe
    if saved is None:  # a new model
        try:
            defaults = json.loads(spec.default_options_path(ws).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            defaults = None
        if asks:
            say(f"Creating the new model {folder.name}. Press Enter to take a value in brackets, ? for help.")
        return resolve_options(TrainOptions, given, saved=defaults, interactive=asks)
    override = asks and wait_for_enter(2, "Press Enter within 2 seconds to override model settings.")
    return resolve_options(TrainOptions, given, saved=saved, interactive=override, resuming=True)


def _torchrun_rank():  # noqa: ANN202
    """Under torchrun: join its process group and return this process's rank."""
    import os

    from facelab.training.distributed import Rank

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if _torchrun_device().startswith("cuda") else "gloo")
    return Rank(int(os.environ["RANK"]), world)


def _torchrun_device() -> str:
    import os

    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def _train_distributed(ws: Workspace, opts: TrainOptions, folder: Path, devices: list[str], started: float) -> Report:
    """One process per device (DistributedDataParallel); see training.distributed."""
    from facelab.options import options_to_dict
    from facelab.training.data import FacesetCache
    from facelab.training.distributed import launch

    spec, flat = store.spec(opts.model), options_to_dict(opts)
    res, face_type = spec.resolution(flat), spec.face_type(flat)
    for side in ("src", "dst"):  # built once here, before the workers start reading
        FacesetCache.load_or_build(ws.aligned_dir(side), folder / "cache", side, res, face_type)
    log.info("%s: training on %s (one process each)", folder.name, ", ".join(devices))
    result = launch(devices, folder, flat, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    return Report("train", f"{folder.name}: {result['iterations']} iterations on {len(devices)} devices, now at "
                  f"{result['iteration']}; saved to {result['saved']}", time.perf_counter() - started, result)  # fmt: skip


def _plan_memory(ws: Workspace, opts: TrainOptions, folder: Path) -> TrainOptions:
    """The memory line before the first step, and `--batch-size auto` made a number."""
    from facelab.io import checkpoint
    from facelab.nn.device import autocast_dtype, describe, resolve_device
    from facelab.training.memory import plan_batch

    device = resolve_device(opts.device)
    log.info(describe(device, autocast_dtype(device, opts.precision)))
    resuming = bool(checkpoint.generations(folder))
    return plan_batch(folder, opts, ws.aligned_dir("src"), ws.aligned_dir("dst"), device, resuming)


def train(ws: Workspace, opts: TrainOptions) -> Report:
    from facelab.training.distributed import parse_devices  # torch is imported only when training
    from facelab.training.trainer import Trainer

    started = time.perf_counter()
    ws.require()
    name = opts.model_name or "new"
    spec = store.spec(opts.model)
    folder = spec.folder(ws, name)
    folder.mkdir(parents=True, exist_ok=True)
    devices = parse_devices(opts.gpus)
    rank = _torchrun_rank()
    if opts.batch_size == 0 and (len(devices) > 1 or rank.world > 1):
        log.info("batch size auto is measured on one device: %d GPUs train batch 8 (give --batch-size N to choose)",
                 max(len(devices), rank.world))  # fmt: skip
        opts = replace(opts, batch_size=8)
    if len(devices) > 1:
        return _train_distributed(ws, opts, folder, devices, started)
    if rank.world > 1:
        opts = replace(opts, device=_torchrun_device(), preview=False)
    defaults = model_options(opts)  # before auto becomes a number: the next new model probes again
    if rank.world == 1:
        opts = _plan_memory(ws, opts, folder)
    trainer = Trainer(folder, opts, ws.aligned_dir("src"), ws.aligned_dir("dst"), rank)
    defaults_path = spec.default_options_path(ws)
    if not spec.fixed_recipe and not defaults_path.exists():
        write_text_atomic(defaults_path, json.dumps(defaults, indent=1))
    if opts.target_iter and trainer.iteration >= opts.target_iter:
        return Report("train", f"{folder.name} is already at iteration {trainer.iteration} (target {opts.target_iter})",
                      time.perf_counter() - started, {"iteration": trainer.iteration})  # fmt: skip
    log.info("%s: %s on %s, %d src and %d dst faces, starting at iteration %d; Ctrl+C saves and stops",
             folder.name, f"{opts.model} {trainer.arch.archi}", trainer.device,
             len(trainer.data["src"].cache), len(trainer.data["dst"].cache), trainer.iteration)  # fmt: skip
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        if opts.preview and can_show_windows():
            from facelab.training.control import run_with_window

            result = run_with_window(lambda control: trainer.run(stop, log.info, control), folder.name)
        else:
            result = trainer.run(stop, log.info)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    why = "stopped by Ctrl+C" if stop.is_set() else "target reached" if opts.target_iter and trainer.iteration >= opts.target_iter else "stopped"
    return Report("train", f"{folder.name}: {result['iterations']} iterations this run, now at {result['iteration']} "
                  f"({why}); saved to {result['saved']}", time.perf_counter() - started, result)  # fmt: skip
