"""The training preview window (dfl-spec §10 keys), in Qt: DFL's preview grid with the loss graph
under it, while training runs in a worker thread.

Keys: Enter save and quit; `s` save now; `b` backup now; `p` refresh the preview; Space the next
preview faces; `l` loss-graph range (all, last 5k, 10k, 50k, 100k iterations). Closing the window
also saves and quits. The window only shows the shared `TrainingControl` state and sets requests.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QApplication, QWidget

from facelab.training.control import TrainingControl

GRAPH_H = 100
RANGES = (0, 5_000, 10_000, 50_000, 100_000)
SRC_COLOUR, DST_COLOUR = QColor(255, 170, 0), QColor(0, 170, 255)
HELP = "Enter: save and quit   s: save   b: backup   p: refresh   Space: next faces   l: graph range"


class PreviewWindow(QWidget):
    def __init__(self, control: TrainingControl, title: str, faces_per_step: int = 4):
        super().__init__()
        self.control = control
        self.faces_per_step = faces_per_step
        self.range_index = 0
        self.state = control.snapshot()
        self._qimage: QImage | None = None
        self.setWindowTitle(f"FaceLab training - {title}")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.resize(820, 640)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(200)

    def refresh(self) -> None:
        state = self.control.snapshot()
        if state["preview"] is not self.state.get("preview") and state["preview"] is not None:
            rgb = np.ascontiguousarray(state["preview"][:, :, ::-1])
            h, w = rgb.shape[:2]
            self._qimage = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.state = state
        self.setWindowTitle(f"FaceLab training - iteration {state['iteration']}" + (" - finished" if state["finished"] else ""))
        self.update()
        if state["finished"]:
            self.timer.stop()
            self.close()

    # ---------------------------------------------------------------- keys

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.control.request(quit_requested=True)
        elif key == Qt.Key.Key_S:
            self.control.request(save_requested=True)
        elif key == Qt.Key.Key_B:
            self.control.request(backup_requested=True)
        elif key == Qt.Key.Key_P:
            self.control.request(refresh_requested=True)
        elif key == Qt.Key.Key_Space:
            with self.control.lock:
                self.control.sample_offset += self.faces_per_step
                self.control.refresh_requested = True
        elif key == Qt.Key.Key_L:
            self.range_index = (self.range_index + 1) % len(RANGES)
            self.update()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802, ANN001
        self.control.request(quit_requested=True)
        super().closeEvent(event)

    # ---------------------------------------------------------------- drawing

    def graph_range(self) -> int:
        return RANGES[self.range_index]

    def paintEvent(self, _event) -> None:  # noqa: N802, ANN001
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        w, h = self.width(), self.height()
        image_area_h = h - GRAPH_H - 24
        if self._qimage is not None:
            scale = min(w / self._qimage.width(), image_area_h / self._qimage.height())
            iw, ih = self._qimage.width() * scale, self._qimage.height() * scale
            from PySide6.QtCore import QRectF

            p.drawImage(QRectF((w - iw) / 2, 0, iw, ih), self._qimage)
        self._draw_graph(p, 0, h - GRAPH_H - 24, w, GRAPH_H)
        p.setPen(QColor(220, 220, 220))
        p.setFont(QFont("Sans", 9))
        history = self.state["loss_history"]
        last = f"   src {history[-1][0]:.4f}  dst {history[-1][1]:.4f}" if history else ""
        span = "all" if not self.graph_range() else f"last {self.graph_range() // 1000}k"
        p.drawText(8, h - 8, f"#{self.state['iteration']}{last}   graph: {span}   {HELP}")
        p.end()

    def _draw_graph(self, p: QPainter, x0: int, y0: int, w: int, h: int) -> None:
        p.fillRect(x0, y0, w, h, QColor(15, 15, 15))
        history = self.state["loss_history"]
        if self.graph_range():
            # the history holds one entry per check (25 iterations); the range is in iterations
            history = history[-max(1, self.graph_range() // 25) :]
        if len(history) < 2:
            return
        data = np.asarray(history, np.float64)
        top = float(np.nanmax(data)) or 1.0
        xs = np.linspace(x0, x0 + w - 1, len(data))
        for column, colour in ((0, SRC_COLOUR), (1, DST_COLOUR)):
            ys = y0 + h - 1 - (data[:, column] / top) * (h - 4)
            p.setPen(QPen(colour, 1))
            p.drawPolyline(QPolygonF([QPointF(float(a), float(b)) for a, b in zip(xs, ys)]))


def run_preview_window(control: TrainingControl, title: str) -> None:
    """Show the window until training finishes or the user quits (main thread)."""
    from PySide6.QtCore import QEventLoop

    _app = QApplication.instance() or QApplication([])  # noqa: F841 - must exist (and live) before any widget
    window = PreviewWindow(control, title)
    loop = QEventLoop()
    window.destroyed.connect(loop.quit)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    loop.exec()
