"""The manual extraction window (dfl-spec §5 "Manual window"), in Qt.

Keys and mouse, as DeepFaceLab's manual pass:
- the square box follows the mouse and the landmarks are re-fitted as it moves;
- mouse wheel: resize the box (step 1 px up to 40 px, else size/10 clipped to 1-10);
- left click: lock / unlock the box where it is;
- Enter: accept this face and go to the next frame; Space: no face here, next frame;
- `,`: previous frame (its accepted box comes back locked for re-editing); `.`: next frame;
- `a`: accuracy (two landmark passes) on/off; `h`: help; `q` or Esc: finish (the rest is skipped).

Landmark editing (faceswap's manual tool; a walkthrough of ours fixes long chins this way): once
the box is locked, drag a landmark to move it, Shift+drag to move its whole part (the jaw, one
brow, the nose, one eye, the mouth); Ctrl+Z undoes, Ctrl+Y (or Ctrl+Shift+Z) redoes. Accepting
keeps the edited points: the crop, its matrix and the landmark masks are made from them. Moving
the box again re-fits the points (the edits of that box are gone; Ctrl+Z brings them back).
The same window edits faces already extracted (`extract --edit-landmarks`): then each item is
one aligned face, shown on its frame with its stored points, and Space leaves it as it is.

The window only shows state and collects answers (`results`); the extraction stage writes faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PySide6.QtCore import QEventLoop, QPointF, Qt, QRectF, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget

from facelab.core.landmarks import FaceType, get_transform_mat, transform_points
from facelab.detect.base import Detection, Landmarker
from facelab.io.frames import read_image
from facelab.types import ImageBGR

HELP = [
    "mouse: move the box    wheel: box size    left click: lock / unlock",
    "locked: drag a point to move it, Shift+drag its part    Ctrl+Z / Ctrl+Y: undo / redo",
    "Enter: accept face, next frame    Space: no face, next frame",
    ", : previous frame    . : next frame    a: accuracy    h: this help    q / Esc: finish",
]
# the parts Shift+drag moves together
PARTS = [range(0, 17), range(17, 22), range(22, 27), range(27, 36), range(36, 42), range(42, 48), range(48, 68)]
GRAB_PX = 8.0  # how near (window px) a press must be to take a point

Result = tuple[tuple[float, float, float, float], np.ndarray] | None


class ManualExtractWindow(QWidget):
    """Collects one face (box + 68 landmarks, frame pixels) or "none" per frame.

    Args:
        frames: the frame files to visit, in order.
        landmarker_for: returns the landmarker to use; its argument is the accuracy flag.
        face_type, size: only to draw the crop outline the face will get.
        initial: results already known (re-editing), by key; shown with their own landmarks.
        keys: what each item is called in `results` (default: the frame's file name); editing
            aligned faces names them by face, several of which may share a frame.
    """

    closed = Signal()

    def __init__(
        self,
        frames: Sequence[Path],
        landmarker_for: Callable[[bool], Landmarker],
        face_type: FaceType = FaceType.WHOLE_FACE,
        size: int = 512,
        initial: dict[str, Result] | None = None,
        keys: Sequence[str] | None = None,
    ):
        super().__init__()
        self.frames = list(frames)
        self.keys = list(keys) if keys is not None else [p.name for p in self.frames]
        self.landmarker_for = landmarker_for
        self.face_type, self.size = face_type, size
        self.results: dict[str, Result] = dict(initial or {})
        self.index = 0
        self.half = 100.0
        self.centre: np.ndarray | None = None
        self.locked = False
        self.accurate = True
        self.show_help = False
        self.finished = False
        self.current: Result = None
        self.image: ImageBGR | None = None
        self._qimage: QImage | None = None
        self.undo_stack: list[np.ndarray] = []
        self.redo_stack: list[np.ndarray] = []
        self._drag: tuple[list[int], np.ndarray] | None = None  # the points being dragged, the press in frame px
        self.edited = False  # the points differ from the landmarker's fit of the box
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setWindowTitle("FaceLab - manual face extraction")
        self.resize(1280, 760)
        self._load()

    # ---------------------------------------------------------------- state

    def _load(self) -> None:
        if self.index >= len(self.frames):
            self.finish()
            return
        path = self.frames[self.index]
        self.image = read_image(path)
        self._qimage = None
        if self.image is not None:
            rgb = np.ascontiguousarray(self.image[:, :, ::-1])
            h, w = rgb.shape[:2]
            self._qimage = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        previous = self.results.get(self.keys[self.index])
        self.current = None
        self.undo_stack, self.redo_stack, self.edited = [], [], False
        if previous is not None:  # re-edit: bring the accepted box back, locked, with its points as they were
            (l, t, r, b), lm = previous
            self.centre = np.array([(l + r) / 2, (t + b) / 2])
            self.half = (r - l) / 2
            self.locked = True
            self.current = ((l, t, r, b), np.array(lm, np.float32))
        else:
            self.locked = False
            if self.centre is not None:
                self._fit()
        self.setWindowTitle(f"FaceLab - manual face extraction - {path.name} ({self.index + 1}/{len(self.frames)})")
        self.update()

    def _fit(self) -> None:
        """Re-fit the landmarks to the box."""
        if self.image is None or self.centre is None:
            self.current = None
            return
        cx, cy = self.centre
        rect = (cx - self.half, cy - self.half, cx + self.half, cy + self.half)
        lm = self.landmarker_for(self.accurate).landmarks(self.image, [Detection(rect, 1.0)])[0]
        if self.current is not None and self.edited:  # a re-fit replaces edited points: undo brings them back
            self.undo_stack.append(self.current[1].copy())
            self.redo_stack.clear()
        self.edited = False
        self.current = None if lm is None else (rect, np.asarray(lm, np.float32))
        self.update()

    def _go(self, index: int) -> None:
        self.index = max(0, index)
        self._load()

    def accept(self) -> None:
        self.results[self.keys[self.index]] = self.current
        self._go(self.index + 1)

    def skip(self) -> None:
        self.results[self.keys[self.index]] = None
        self._go(self.index + 1)

    # ---------------------------------------------------------------- landmark editing

    def point_at(self, pos: QPointF) -> int | None:
        """The landmark under a window position (within GRAB_PX), or None."""
        if self.current is None:
            return None
        view = np.array([[p.x(), p.y()] for p in self.to_view(self.current[1])])
        dist = np.hypot(*(view - [pos.x(), pos.y()]).T)
        k = int(dist.argmin())
        return k if dist[k] <= GRAB_PX else None

    def _set_points(self, lm: np.ndarray) -> None:
        assert self.current is not None
        self.current = (self.current[0], lm.astype(np.float32))
        self.edited = True
        self.update()

    def undo(self) -> None:
        if self.undo_stack and self.current is not None:
            self.redo_stack.append(self.current[1].copy())
            self._set_points(self.undo_stack.pop())

    def redo(self) -> None:
        if self.redo_stack and self.current is not None:
            self.undo_stack.append(self.current[1].copy())
            self._set_points(self.redo_stack.pop())

    def finish(self) -> None:
        self.finished = True
        self.close()

    def closeEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt's name
        self.finished = True
        self.closed.emit()
        super().closeEvent(event)

    # ---------------------------------------------------------------- view <-> frame

    def _view(self) -> tuple[float, float, float]:
        """Scale and offsets that fit the frame into the widget."""
        if self.image is None:
            return 1.0, 0.0, 0.0
        h, w = self.image.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        return scale, (self.width() - w * scale) / 2, (self.height() - h * scale) / 2

    def to_frame(self, pos: QPointF) -> np.ndarray:
        scale, ox, oy = self._view()
        return np.array([(pos.x() - ox) / scale, (pos.y() - oy) / scale])

    def to_view(self, pts: np.ndarray) -> list[QPointF]:
        scale, ox, oy = self._view()
        return [QPointF(x * scale + ox, y * scale + oy) for x, y in np.asarray(pts, float).reshape(-1, 2)]

    # ---------------------------------------------------------------- events

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if self._drag is not None and self.current is not None:
            points, start = self._drag
            lm = self.undo_stack[-1].copy()  # the points as the drag found them
            lm[points] += self.to_frame(event.position()) - start
            self._set_points(lm)
        elif not self.locked:
            self.centre = self.to_frame(event.position())
            self._fit()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag is not None:
            self.mouseMoveEvent(event)
            self._drag = None

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            grabbed = self.point_at(event.position()) if self.locked else None
            if grabbed is not None:
                assert self.current is not None
                whole_part = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
                points = list(next(p for p in PARTS if grabbed in p)) if whole_part else [grabbed]
                self.undo_stack.append(self.current[1].copy())
                self.redo_stack.clear()
                self._drag = (points, self.to_frame(event.position()))
                return
            if not self.locked:
                self.centre = self.to_frame(event.position())
                self._fit()
            self.locked = not self.locked
            self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if self.locked:
            return
        step = 1.0 if self.half <= 40 else float(np.clip(self.half / 10, 1, 10))
        direction = 1 if event.angleDelta().y() > 0 else -1
        self.half = max(5.0, self.half + direction * step)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if ctrl and (key == Qt.Key.Key_Y or (key == Qt.Key.Key_Z and shift)):
            self.redo()
        elif ctrl and key == Qt.Key.Key_Z:
            self.undo()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.accept()
        elif key == Qt.Key.Key_Space:
            self.skip()
        elif key == Qt.Key.Key_Comma:
            self._go(self.index - 1)
        elif key == Qt.Key.Key_Period:
            self._go(self.index + 1)
        elif key == Qt.Key.Key_A:
            self.accurate = not self.accurate
            self._fit()
        elif key == Qt.Key.Key_H:
            self.show_help = not self.show_help
            self.update()
        elif key in (Qt.Key.Key_Q, Qt.Key.Key_Escape):
            self.finish()
        else:
            super().keyPressEvent(event)

    # ---------------------------------------------------------------- drawing

    def paintEvent(self, _event) -> None:  # noqa: N802, ANN001
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 20))
        if self._qimage is not None:
            scale, ox, oy = self._view()
            p.drawImage(QRectF(ox, oy, self._qimage.width() * scale, self._qimage.height() * scale), self._qimage)
        if self.current is not None:
            rect, lm = self.current
            l, t, r, b = rect
            p.setPen(QPen(QColor(0, 0, 255), 2))
            p.drawPolygon(QPolygonF(self.to_view(np.array([[l, t], [r, t], [r, b], [l, b]]))))
            if self.face_type != FaceType.MARK_ONLY:
                mat = get_transform_mat(lm, self.size, self.face_type)
                square = transform_points(np.array([[0, 0], [self.size, 0], [self.size, self.size], [0, self.size]], float),
                                          mat, invert=True)  # fmt: skip
                p.setPen(QPen(QColor(255, 0, 0), 2))
                p.drawPolygon(QPolygonF(self.to_view(square)))
            p.setPen(QPen(QColor(0, 255, 255) if self.locked else QColor(0, 255, 0), 2))
            for part in PARTS:  # the parts as lines, so a dragged point's neighbours show the shape
                p.drawPolyline(QPolygonF(self.to_view(lm[list(part)])))
            for pt in self.to_view(lm):
                p.drawEllipse(pt, 2.5 if self.locked else 1.5, 2.5 if self.locked else 1.5)
        p.setPen(QColor(255, 255, 255))
        p.setFont(QFont("Sans", 10))
        status = (f"frame {self.index + 1}/{len(self.frames)}   box {2 * self.half:.0f} px   "
                  f"{'locked' if self.locked else 'follows the mouse'}   accuracy {'on' if self.accurate else 'off'}   h: help")  # fmt: skip
        p.drawText(10, self.height() - 10, status)
        if self.show_help:
            for i, line in enumerate(HELP):
                p.drawText(10, 20 + 18 * i, line)
        p.end()


def run_manual_pass(
    frames: Sequence[Path],
    landmarker_for: Callable[[bool], Landmarker],
    face_type: FaceType,
    size: int,
    initial: dict[str, Result] | None = None,
    keys: Sequence[str] | None = None,
) -> dict[str, Result]:
    """Show the window until the user finishes; return {key (frame name): (box, landmarks) or None}."""
    _app = QApplication.instance() or QApplication([])  # noqa: F841 - must exist (and live) before any widget
    window = ManualExtractWindow(frames, landmarker_for, face_type, size, initial, keys)
    loop = QEventLoop()
    window.closed.connect(loop.quit)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # deleted here, never by a later GC in another thread
    window.show()
    window.activateWindow()
    if not window.finished:
        loop.exec()
    return window.results
