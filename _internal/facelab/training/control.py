"""What the preview window and the training loop share (no Qt here: headless runs import none).

The window sets requests (save, backup, refresh, next sample, quit); the loop honours them between
steps and publishes its preview image, iteration and loss history. Everything goes through one lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class TrainingControl:
    lock: threading.Lock = field(default_factory=threading.Lock)
    save_requested: bool = False
    backup_requested: bool = False
    refresh_requested: bool = True
    quit_requested: bool = False
    sample_offset: int = 0
    finished: bool = False
    preview: np.ndarray | None = None
    iteration: int = 0
    loss_history: list[list[float]] = field(default_factory=list)
    message: str = ""

    def request(self, **flags: bool | int) -> None:
        with self.lock:
            for key, value in flags.items():
                setattr(self, key, value)

    def take(self, flag: str) -> bool:
        """Read and clear a request."""
        with self.lock:
            value = getattr(self, flag)
            setattr(self, flag, False)
            return bool(value)

    def publish(self, **values: object) -> None:
        with self.lock:
            for key, value in values.items():
                setattr(self, key, value)

    def snapshot(self) -> dict:
        with self.lock:
            return {"preview": self.preview, "iteration": self.iteration, "loss_history": list(self.loss_history),
                    "message": self.message, "finished": self.finished}  # fmt: skip


def run_with_window(work: Callable[[TrainingControl], Any], title: str) -> Any:
    """`work(control)` (a training loop) in a worker thread, the preview window in this (the
    main) thread; closing the window asks the loop to save and stop. A worker's exception is
    raised here, in the main thread, as itself."""
    from facelab.ui.preview import run_preview_window  # Qt only when a window really opens

    control = TrainingControl()
    outcome: dict = {}

    def worker() -> None:
        try:
            outcome["result"] = work(control)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = exc
        finally:
            control.publish(finished=True)

    thread = threading.Thread(target=worker, name="training")
    thread.start()
    run_preview_window(control, title)
    control.request(quit_requested=True)  # window closed: save and stop
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
