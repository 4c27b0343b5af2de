"""The training preview window, offscreen, driven by real key events while a real trainer runs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from conftest import TINY, copy_workspace  # noqa: E402
from facelab.io import checkpoint  # noqa: E402


def _wait(predicate, seconds: float = 60) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.05)  # QTest.qWait would keep the GIL and starve the training thread
    return False


def test_preview_window_keys_and_screenshot(train_workspace, tmp_path):
    from facelab.options import resolve_options
    from facelab.training.control import TrainingControl
    from facelab.training.options import TrainOptions
    from facelab.training.trainer import Trainer
    from facelab.ui.preview import DST_COLOUR, SRC_COLOUR, PreviewWindow

    app = QApplication.instance() or QApplication([])
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    given = dict(zip([a.lstrip("-").replace("-", "_") for a in TINY[:-1:2]], TINY[1:-1:2]))
    opts = resolve_options(TrainOptions, saved={**{k: (int(v) if v.isdigit() else v) for k, v in given.items()},
                                                "autosave_minutes": 600})  # fmt: skip
    folder = ws.model_dir / "w_SAEHD"
    trainer = Trainer(folder, opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    control = TrainingControl()
    done = {}
    worker = threading.Thread(target=lambda: done.update(trainer.run(threading.Event(), lambda line: None, control)))
    worker.start()
    window = PreviewWindow(control, "test")
    window.resize(700, 560)
    window.show()
    try:
        assert _wait(lambda: window._qimage is not None and len(window.state["loss_history"]) >= 3), "no preview / losses"
        first = window.state["preview"]
        QTest.keyClick(window, Qt.Key.Key_Space)  # the next faces
        assert control.sample_offset == 4
        assert _wait(lambda: window.state["preview"] is not first)
        QTest.keyClick(window, Qt.Key.Key_L)
        assert window.graph_range() == 5_000
        gens_before = len(checkpoint.generations(folder))
        QTest.keyClick(window, Qt.Key.Key_S)
        assert _wait(lambda: len(checkpoint.generations(folder)) > gens_before or checkpoint.generations(folder)[0].name != "00000001")
        QTest.keyClick(window, Qt.Key.Key_B)
        assert _wait(lambda: (folder / "autobackups").is_dir() and any((folder / "autobackups").iterdir()))

        shot = window.grab().toImage().convertToFormat(window.grab().toImage().Format.Format_RGB888)
        arr = np.frombuffer(bytes(shot.constBits()), np.uint8)[: shot.height() * shot.bytesPerLine()]
        img = arr.reshape(shot.height(), shot.bytesPerLine())[:, : shot.width() * 3].reshape(shot.height(), shot.width(), 3)
        preview_rows = img[: shot.height() - 124]
        lit = np.nonzero((np.abs(preview_rows.astype(int) - 30).sum(2) > 30).any(0))[0]
        lit_y = np.nonzero((np.abs(preview_rows.astype(int) - 30).sum(2) > 30).any(1))[0]
        width, height = lit[-1] - lit[0] + 1, lit_y[-1] - lit_y[0] + 1
        rows = min(4, len(trainer.data["src"].cache), len(trainer.data["dst"].cache))
        assert abs(width / height - 5 / rows) < 0.05, (width, height)  # five columns of square faces
        graph = img[shot.height() - 124 : shot.height() - 24]
        for colour in (SRC_COLOUR, DST_COLOUR):
            rgb = np.array([colour.red(), colour.green(), colour.blue()])
            assert (np.abs(graph.astype(int) - rgb).sum(2) < 40).sum() > 20, "loss graph line missing"

        QTest.keyClick(window, Qt.Key.Key_Return)  # save and quit
        worker.join(timeout=120)
        assert not worker.is_alive() and done["iteration"] == checkpoint.load_latest(folder).iteration
    finally:
        control.request(quit_requested=True)
        worker.join(timeout=120)
        window.close()
    app.processEvents()  # the QApplication lives (is referenced) until the end of the test


def test_headless_training_never_imports_qt(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    code = ("import sys; from facelab import cli; "
            f"rc = cli.main(['train', '--workspace', {str(ws.root)!r}, '--non-interactive', *{TINY!r}, '--target-iter', '2']); "
            "sys.exit(10 + rc if 'PySide6' in sys.modules else rc)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0
