"""Memory before training: what a configuration needs, what the device has, which batch fits.

A probe trains a few steps of the real configuration (the real model, facesets and optimiser)
in a child process at two batch sizes and records the peak: GPU memory reserved by PyTorch on a
GPU, the whole process's peak resident memory on the CPU. A child process, because only a fresh
process measures one configuration alone, and because the probe must change nothing in the
trainer that goes on to train. The peak grows linearly with the batch (weights, optimiser slots
and the runtime are fixed; activations are per face), so two probes give `fixed + per_face * batch`
and the largest batch under the limit with `HEADROOM` to spare.

The fit is kept in the model folder (`memory.json`) so that a resumed run, which never probes,
still says what it expects and, after an out-of-memory error, which batch fits.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from facelab.errors import UserError, is_out_of_memory
from facelab.io.frames import write_text_atomic

log = logging.getLogger(__name__)

HEADROOM = 0.85  # the chosen batch's expected peak stays under this share of the limit
PROBE_BATCHES = (2, 4)
PROBE_STEPS = 2  # the second step is the first with every optimiser slot allocated: the steady peak
MAX_AUTO_BATCH = {"cpu": 8, "gpu": 32}  # beyond these a step only gets longer (CPU) or rarely helps
FILE = "memory.json"
MIB = 2**20


@dataclass(frozen=True)
class MemoryFit:
    """Peak memory as `fixed + per_face * batch` on one device, and the limit it was fitted under."""

    device: str
    fixed_mib: float
    per_face_mib: float
    limit_mib: float
    probes: tuple[tuple[int, float], ...]  # (batch, measured peak MiB)
    resolution: int = 0
    gradient_checkpointing: bool = False
    step_seconds: tuple[float, ...] = ()  # the last probe step's time at each batch of `probes`

    def peak_mib(self, batch: int) -> float:
        return self.fixed_mib + self.per_face_mib * batch

    def largest_batch(self, cap: int, limit_mib: float | None = None) -> int:
        """The largest batch (1..cap) expected to stay under HEADROOM x the limit (the probe's, or
        `limit_mib`); 0 if none does."""
        room = HEADROOM * (limit_mib or self.limit_mib) - self.fixed_mib
        if self.per_face_mib <= 0:
            return cap if room > 0 else 0
        return max(0, min(cap, int(room // self.per_face_mib)))

    def save(self, folder: Path) -> None:
        write_text_atomic(folder / FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> MemoryFit | None:
        try:
            data = json.loads((folder / FILE).read_text(encoding="utf-8"))
            return cls(str(data["device"]), float(data["fixed_mib"]), float(data["per_face_mib"]), float(data["limit_mib"]),
                       tuple((int(b), float(p)) for b, p in data["probes"]), int(data.get("resolution", 0)),
                       bool(data.get("gradient_checkpointing", False)))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None


def gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


# ---------------------------------------------------------------- what the device has


def tune_allocator(low_memory: bool) -> None:
    """glibc's malloc for training (elsewhere: nothing to tune).

    By default glibc serves each block over its mmap threshold (at most 32 MiB) by its own mmap and
    gives it back when freed, so a step's big tensors (a weight's gradient, the activations of a
    128 px batch) are mapped and zeroed page by page again at every step: 2.8 M page faults in
    8 liae-ud steps, liae-ud bf16 1213 ms a step against 1037 with none of it (the peak about 8 %
    higher). So training keeps freed memory in the heap for the next step (no mmap'd blocks, no
    trimming).

    Low-memory mode (gradient checkpointing) does the opposite: every allocation of 1 MiB or more
    gets its own mmap, returned when freed. By default the freed activations of a step stay
    resident in the heaps, and liae-ud 256 batch 4 peaks about 15 % higher that way; the price is
    the page faults (128 px training about 20 % slower), so only on request."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
        if low_memory:  # (glibc's defaults back first, should another trainer have run in this process)
            mallopt(-4, 65536)  # M_MMAP_MAX
            mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
            mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        else:
            mallopt(-4, 0)  # M_MMAP_MAX: no block by its own mmap
            mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap top
    except (OSError, AttributeError):
        pass  # musl or another libc: nothing to tune


def process_rss_mib() -> float:
    """This process's resident memory now (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, AttributeError):
        return _windows_memory()[0]


def process_peak_rss_mib() -> float:
    """This process's peak resident memory so far. On Linux VmHWM, not ru_maxrss: a process forked
    from a big one (the probe from the trainer, a test from pytest) inherits its parent's
    ru_maxrss across exec, VmHWM starts afresh."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
    except ImportError:
        return _windows_memory()[1]


def _windows_memory() -> tuple[float, float]:
    """(working set, peak working set) in MiB on Windows; zeros elsewhere."""
    if sys.platform != "win32":
        return 0.0, 0.0
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD), ("PeakWorkingSetSize", ctypes.c_size_t),
                    ("WorkingSetSize", ctypes.c_size_t), *[(n, ctypes.c_size_t) for n in ("a", "b", "c", "d", "e", "f")]]  # fmt: skip

    c = Counters()
    c.cb = ctypes.sizeof(c)
    handle = ctypes.windll.kernel32.GetCurrentProcess()
    if not ctypes.windll.psapi.GetProcessMemoryInfo(handle, ctypes.byref(c), c.cb):
        return 0.0, 0.0
    return c.WorkingSetSize / MIB, c.PeakWorkingSetSize / MIB


def available_ram_mib() -> float:
    """RAM a process could still take: MemAvailable on Linux, ullAvailPhys on Windows."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if sys.platform == "win32":
        import ctypes

        class Status(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong), ("ullTotalPhys", ctypes.c_ulonglong),
                        ("ullAvailPhys", ctypes.c_ulonglong), *[(n, ctypes.c_ulonglong) for n in ("a", "b", "c", "d", "e")]]  # fmt: skip

        st = Status()
        st.dwLength = ctypes.sizeof(st)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):
            return st.ullAvailPhys / MIB
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / MIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def device_limit_mib(device, limit_gb: float = 0.0) -> tuple[float, str]:  # noqa: ANN001
    """(MiB training may use, how that was decided) on a torch device."""
    if limit_gb > 0:
        return limit_gb * 1024, f"--memory-limit-gb {limit_gb:g}"
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        return free / MIB + torch.cuda.memory_reserved(device) / MIB, f"free on {torch.cuda.get_device_name(device)} ({gib(total / MIB)} in all)"
    return available_ram_mib() + process_rss_mib(), "RAM available"


def device_kind(device) -> str:  # noqa: ANN001
    return "cpu" if device.type == "cpu" else "gpu"


# ---------------------------------------------------------------- the probe (a child process)


def probe(model_dir: Path, flat_options: dict, src_dir: Path, dst_dir: Path, limit_gb: float = 0.0,
          batches: tuple[int, ...] = PROBE_BATCHES, timeout: float = 900) -> MemoryFit:  # fmt: skip
    """Run the probe child on this configuration; UserError if it cannot even train batch 1."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facelab-probe-") as tmp:
        answer = Path(tmp) / "probe.json"
        job = {"model_dir": str(model_dir), "options": flat_options, "src": str(src_dir), "dst": str(dst_dir),
               "batches": list(batches), "limit_gb": limit_gb, "answer": str(answer)}  # fmt: skip
        cmd = [sys.executable, *(["-I"] if sys.flags.isolated else []), "-m", "facelab.training.memory", json.dumps(job)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"the memory probe took over {timeout:.0f} s: give --batch-size N (and --no-memory-probe)") from None
        if done.returncode != 0 or not answer.exists():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"the memory probe failed ({tail}): give --batch-size N and --no-memory-probe to train without it")
        result = json.loads(answer.read_text(encoding="utf-8"))
    ok = [(int(b), float(p)) for b, p, oom, _ in result["probes"] if not oom]
    seconds = tuple(float(s) for _, _, oom, s in result["probes"] if not oom)
    if not ok:
        raise UserError(f"out of memory on {result['device']} even at batch {result['probes'][0][0]}, resolution "
                        f"{flat_options.get('resolution')}: lower the resolution or the dims, or turn on --gradient-checkpointing")  # fmt: skip
    if len(batches) == 1:  # a fixed batch (Quick96): its peak is all there is to know
        fixed, per = ok[0][1], 0.0
    elif len(ok) == 1:  # the bigger probe ran out: all we know is that the smaller one fits
        (b, p), = ok
        fixed, per = p * 0.5, p * 0.5 / b
    else:
        (b1, p1), (b2, p2) = ok[0], ok[-1]
        per = max(0.0, (p2 - p1) / (b2 - b1))
        fixed = p1 - per * b1
    return MemoryFit(result["device"], round(fixed, 1), round(per, 2), round(result["limit_mib"], 1), tuple(ok),
                     int(flat_options.get("resolution", 0)), bool(flat_options.get("gradient_checkpointing", False)), seconds)  # fmt: skip


def _peak_now(device) -> float:  # noqa: ANN001
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_reserved(device) / MIB
    return process_peak_rss_mib()


def _child(job: dict) -> dict:
    """In the child: train PROBE_STEPS steps at each batch, smallest first, and record each peak."""
    import torch

    from facelab.options import options_from_dict
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer

    batches = sorted(int(b) for b in job["batches"])
    opts = options_from_dict(TrainOptions, {**job["options"], "batch_size": batches[0], "preview": False, "compile": False})
    trainer = Trainer(Path(job["model_dir"]), opts, Path(job["src"]), Path(job["dst"]))
    device = trainer.device
    limit, _ = device_limit_mib(device, float(job.get("limit_gb") or 0))
    probes = []
    for batch in batches:
        trainer.opts = replace(trainer.opts, batch_size=batch)
        try:
            for _ in range(PROBE_STEPS):
                started = time.perf_counter()
                trainer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is an answer; the rest is re-raised
            if not is_out_of_memory(exc):
                raise
            probes.append((batch, 0.0, True, 0.0))
            break
        probes.append((batch, round(_peak_now(device), 1), False, round(time.perf_counter() - started, 3)))
    return {"device": str(device), "limit_mib": limit, "probes": probes}


# ---------------------------------------------------------------- the stage's side


def plan_batch(model_dir: Path, opts, src_dir: Path, dst_dir: Path, device, resuming: bool):  # noqa: ANN001, ANN201
    """Before the first step: probe a new model (or use the kept fit), pick the batch when asked
    for `auto`, and say the expected peak next to what the device has. Returns the options with
    a concrete batch size."""
    from facelab.models import store
    from facelab.options import options_to_dict

    spec = store.spec(opts.model)
    flat = options_to_dict(opts)
    limit, how = device_limit_mib(device, opts.memory_limit_gb)
    kind = device_kind(device)
    res = spec.resolution(flat)
    fit = MemoryFit.load(model_dir)
    usable = fit is not None and fit.device.split(":")[0] == device.type and fit.resolution == res and (
        fit.gradient_checkpointing == opts.gradient_checkpointing)  # fmt: skip
    auto = opts.batch_size == 0 and not spec.fixed_recipe
    if (not resuming or (auto and not usable)) and opts.memory_probe:
        _build_caches(model_dir, opts, src_dir, dst_dir, res, spec.face_type(flat))  # built here, not in the probe's peak
        log.info("memory: probing %s on %s (a few steps in a separate process, nothing is saved)", model_dir.name, device)
        fit = probe(model_dir, {**flat, "batch_size": 1}, src_dir, dst_dir, opts.memory_limit_gb,
                    (4,) if spec.fixed_recipe else PROBE_BATCHES)  # fmt: skip
        fit.save(model_dir)
        usable = True
    if auto:
        if not usable:
            batch = 8 if kind == "cpu" else 4
            log.info("memory: not measured (--no-memory-probe): batch size %d", batch)
        else:
            batch = fit.largest_batch(MAX_AUTO_BATCH[kind], limit)
            if batch == 0:
                raise UserError(f"{model_dir.name} needs about {gib(fit.peak_mib(1))} at batch 1 and {how} is {gib(limit)}: "
                                "lower the resolution or dims, turn on --gradient-checkpointing, or free memory")  # fmt: skip
            log.info("memory: batch size auto -> %d (the largest up to %d expected under %d %% of the limit)",
                     batch, MAX_AUTO_BATCH[kind], round(HEADROOM * 100))  # fmt: skip
        opts = replace(opts, batch_size=batch)
    batch = 4 if spec.fixed_recipe else opts.batch_size
    if usable:
        log.info("memory: expected peak %s at batch %d on %s; %s: %s", gib(fit.peak_mib(batch)), batch, device, how, gib(limit))
        if fit.peak_mib(batch) > limit:
            log.warning("memory: batch %d is expected to need more than the %s available; batch %d fits",
                        batch, gib(limit), fit.largest_batch(512, limit))  # fmt: skip
    else:
        log.info("memory: %s: %s on %s (not measured for this model)", how, gib(limit), device)
    return opts


def _build_caches(model_dir: Path, opts, src_dir: Path, dst_dir: Path, res: int, face_type) -> None:  # noqa: ANN001
    from facelab.training.data import FacesetCache

    pre = Path(opts.pretraining_data_dir) if opts.pretrain and opts.pretraining_data_dir else None
    for side, folder in (("src", src_dir), ("dst", dst_dir)):
        FacesetCache.load_or_build(pre or folder, model_dir / "cache", "pretrain" if pre else side, res, face_type)


def after_out_of_memory(device, batch: int, res: int, iteration: int, model_dir: Path, save,  # noqa: ANN001
                        optimizers: list) -> UserError:  # fmt: skip
    """After an allocation failure in training: free what the step held, save the weights through
    `save` (None when an update was half-done: the newest checkpoint is then the last good one),
    and return the one-line error that says what ran out and which batch fits."""
    from facelab.pieces import free_device_memory

    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    free_device_memory()
    kept = None
    if save is not None:
        try:
            kept = f"saved iteration {iteration} ({save().name})"
        except Exception as exc:  # noqa: BLE001 - saving may run out of memory too; then say what is kept
            if not is_out_of_memory(exc):
                raise
    if kept is None:
        from facelab.io import checkpoint

        newest = checkpoint.load_latest(model_dir, map_location="cpu")
        kept = f"the newest checkpoint is iteration {newest.iteration}" if newest else "nothing had been saved yet"
    return UserError(f"out of memory on {device} at batch {batch}, resolution {res}, iteration {iteration}; {kept}; "
                     f"{suggest_batch(model_dir, batch)} (or turn on --gradient-checkpointing)")  # fmt: skip


def suggest_batch(model_dir: Path, batch: int) -> str:
    """The advice after an out-of-memory error at `batch`: the probe's answer, else half."""
    fit = MemoryFit.load(model_dir)
    if fit is not None and 0 < (fits := min(fit.largest_batch(512), batch - 1)):
        return f"the memory probe says batch {fits} fits: run again with --batch-size {fits}"
    if batch > 1:
        return f"run again with a smaller batch, e.g. --batch-size {max(1, batch // 2)}"
    return "lower the resolution or dims"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _job = json.loads(sys.argv[1])
    write_text_atomic(Path(_job["answer"]), json.dumps(_child(_job)))
