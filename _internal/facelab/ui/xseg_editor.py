"""The XSeg mask editor (dfl-spec §7 "Editor"), in Qt.

DFL's controls:
- left click on empty space starts a polygon of the current type and adds points; clicking its
  first point (3 points or more) closes it; drag a point to move it;
- hold Ctrl: click an edge to insert a point, click a point to delete it (under 3 points the
  polygon goes);
- Q include, W exclude; Ctrl+Z undo, Ctrl+Shift+Z redo; Delete removes the open polygon, else the
  last one;
- A / D previous / next face (Shift: 5 at a time, Ctrl: only faces with polygons);
- mouse wheel zoom (1-20x), middle button pan;
- views: ` overlay of the baked mask on the face, 4 the baked mask, 5 the applied XSeg mask,
  1 the plain face;
- X moves the face to `<folder>_trash` (a same-named face already there is kept). Changes are saved into the face's metadata when you move to
  another face and when the window closes.
Beyond DFL (users.md §1 item 9):
- B brush: drag to paint the current type (each dab becomes a small polygon), [ ] brush size;
- C copies the polygons of the previous face (neighbouring frames look alike);
- M turns the applied XSeg mask into editable polygons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QEventLoop, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget

from facelab.core.masks import polygons_mask
from facelab.io.faceimage import XSegPolygon
from facelab.io.faceset import FacesetFiles

HIT_PX = 8
INCLUDE, EXCLUDE = QColor(0, 255, 0), QColor(255, 60, 60)


@dataclass
class Poly:
    include: bool
    points: list[list[float]] = field(default_factory=list)


def polys_from_mask(mask: np.ndarray, min_area: float = 20.0) -> list[Poly]:
    """Editable polygons tracing a mask (outer contours include, holes exclude)."""
    binary = (mask > 0.5).astype(np.uint8)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for i, c in enumerate(contours):
        if cv2.contourArea(c) < min_area:
            continue
        approx = cv2.approxPolyDP(c, 1.0, True)[:, 0].astype(np.float32)
        if len(approx) >= 3:
            hole = hierarchy is not None and hierarchy[0][i][3] != -1
            out.append(Poly(not hole, approx.tolist()))
    return sorted(out, key=lambda p: not p.include)


class XSegEditor(QWidget):
    closed = Signal()

    def __init__(self, folder: Path):
        super().__init__()
        self.files = FacesetFiles(folder)
        self.paths = self.files.paths  # the files' own list: trashing a face updates both
        self.index = 0
        self.polys: list[Poly] = []
        self.current: Poly | None = None
        self.include = True
        self.undo_stack: list[tuple] = []
        self.redo_stack: list[tuple] = []
        self.dirty = False
        self.saved = 0
        self.view = "overlay"
        self.brush = False
        self.brush_radius = 8.0
        self.zoom, self.pan = 1.0, QPointF(0, 0)
        self.drag: tuple[int, int] | None = None
        self.panning: QPointF | None = None
        self.painting = False
        self.image = None
        self.meta = None
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.resize(900, 900)
        self._load()

    # ---------------------------------------------------------------- faces

    def _load(self) -> None:
        self.image, self.meta = self.files.read(self.index)
        self.polys = [Poly(p.include, np.asarray(p.points, float).tolist()) for p in (self.meta.xseg_polygons if self.meta else ())]
        self.current = None
        self.undo_stack, self.redo_stack = [], []
        self.dirty = False
        rgb = np.ascontiguousarray(self.image[:, :, ::-1])
        h, w = rgb.shape[:2]
        self._qimage = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.setWindowTitle(f"FaceLab XSeg editor - {self.paths[self.index].name} ({self.index + 1}/{len(self.paths)})")
        self.update()

    def save(self) -> None:
        """Write the polygons into the face's metadata (only if they changed)."""
        if not self.dirty or self.meta is None:
            return
        polys = tuple(XSegPolygon(p.include, np.asarray(p.points, np.float32)) for p in self.polys if len(p.points) >= 3)
        self.files.save_meta(self.index, replace(self.meta, xseg_polygons=polys))
        self.saved += 1
        self.dirty = False

    def go(self, step: int, labelled_only: bool = False) -> None:
        self.save()
        index = self.index
        while True:
            index += step
            if not 0 <= index < len(self.paths):
                return
            if not labelled_only or self._has_polys(index):
                break
        self.index = index
        self._load()

    def _has_polys(self, index: int) -> bool:
        meta = self.files.meta(index)
        return bool(meta and meta.xseg_polygons)

    def trash(self) -> None:
        self.save()
        self.files.trash(self.index)
        if not self.paths:
            self.close()
            return
        self.index = min(self.index, len(self.paths) - 1)
        self._load()

    def baked_mask(self) -> np.ndarray:
        h, w = self.image.shape[:2]
        return polygons_mask((h, w), [(p.include, np.asarray(p.points, np.float32)) for p in self.polys if len(p.points) >= 3])

    # ---------------------------------------------------------------- undo

    def _snapshot(self) -> tuple:
        return ([Poly(p.include, [list(q) for q in p.points]) for p in self.polys],
                None if self.current is None else Poly(self.current.include, [list(q) for q in self.current.points]))  # fmt: skip

    def _edit(self) -> None:
        """Call before every change."""
        self.undo_stack.append(self._snapshot())
        self.redo_stack.clear()
        self.dirty = True

    def undo(self) -> None:
        if self.undo_stack:
            self.redo_stack.append(self._snapshot())
            self.polys, self.current = self.undo_stack.pop()
            self.dirty = True
            self.update()

    def redo(self) -> None:
        if self.redo_stack:
            self.undo_stack.append(self._snapshot())
            self.polys, self.current = self.redo_stack.pop()
            self.dirty = True
            self.update()

    # ---------------------------------------------------------------- geometry

    def _scale(self) -> float:
        h, w = self.image.shape[:2]
        return min(self.width() / w, self.height() / h) * self.zoom

    def to_image(self, pos: QPointF) -> np.ndarray:
        s = self._scale()
        return np.array([(pos.x() - self.pan.x()) / s, (pos.y() - self.pan.y()) / s])

    def to_view(self, pt) -> QPointF:  # noqa: ANN001
        s = self._scale()
        return QPointF(pt[0] * s + self.pan.x(), pt[1] * s + self.pan.y())

    def _near_point(self, pos: QPointF) -> tuple[int, int] | None:
        for i, poly in enumerate(self.polys):
            for j, pt in enumerate(poly.points):
                v = self.to_view(pt)
                if math.hypot(v.x() - pos.x(), v.y() - pos.y()) <= HIT_PX:
                    return i, j
        return None

    def _near_edge(self, pos: QPointF) -> tuple[int, int] | None:
        p = np.array([pos.x(), pos.y()])
        for i, poly in enumerate(self.polys):
            pts = [np.array([self.to_view(q).x(), self.to_view(q).y()]) for q in poly.points]
            for j in range(len(pts)):
                a, b = pts[j], pts[(j + 1) % len(pts)]
                ab = b - a
                t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0, 1)
                if np.linalg.norm(a + t * ab - p) <= HIT_PX:
                    return i, j + 1
        return None

    # ---------------------------------------------------------------- mouse

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        pos = event.position()
        if event.button() == Qt.MouseButton.MiddleButton:
            self.panning = pos
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self.brush:
            self._edit()
            self.painting = True
            self._dab(pos)
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            hit = self._near_point(pos)
            if hit is not None:
                self._edit()
                i, j = hit
                del self.polys[i].points[j]
                if len(self.polys[i].points) < 3:
                    del self.polys[i]
            else:
                edge = self._near_edge(pos)
                if edge is not None:
                    self._edit()
                    self.polys[edge[0]].points.insert(edge[1], self.to_image(pos).tolist())
            self.update()
            return
        if self.current is not None:
            first = self.to_view(self.current.points[0])
            self._edit()
            if len(self.current.points) >= 3 and math.hypot(first.x() - pos.x(), first.y() - pos.y()) <= HIT_PX:
                self.polys.append(self.current)
                self.current = None
            else:
                self.current.points.append(self.to_image(pos).tolist())
            self.update()
            return
        hit = self._near_point(pos)
        if hit is not None:
            self._edit()
            self.drag = hit
            return
        self._edit()
        self.current = Poly(self.include, [self.to_image(pos).tolist()])
        self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        if self.panning is not None:
            self.pan += pos - self.panning
            self.panning = pos
        elif self.drag is not None:
            i, j = self.drag
            self.polys[i].points[j] = self.to_image(pos).tolist()
        elif self.painting:
            self._dab(pos)
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.drag = None
        self.panning = None
        self.painting = False

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        pos = event.position()
        before = self.to_image(pos)
        self.zoom = float(np.clip(self.zoom * (1.25 if event.angleDelta().y() > 0 else 0.8), 1.0, 20.0))
        after = self.to_view(before)
        self.pan += pos - after  # keep the point under the cursor still
        self.update()

    def _dab(self, pos: QPointF) -> None:
        c = self.to_image(pos)
        pts = [[c[0] + self.brush_radius * math.cos(a), c[1] + self.brush_radius * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
        self.polys.append(Poly(self.include, pts))
        self.dirty = True

    # ---------------------------------------------------------------- keys

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key, mods = event.key(), event.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        if key == Qt.Key.Key_Z and ctrl:
            self.redo() if shift else self.undo()
        elif key == Qt.Key.Key_Q:
            self.include = True
        elif key == Qt.Key.Key_W:
            self.include = False
        elif key == Qt.Key.Key_Delete:
            if self.current is not None or self.polys:
                self._edit()
                if self.current is not None:
                    self.current = None
                else:
                    self.polys.pop()
        elif key in (Qt.Key.Key_A, Qt.Key.Key_D):
            self.go((-1 if key == Qt.Key.Key_A else 1) * (5 if shift else 1), labelled_only=ctrl)
        elif key == Qt.Key.Key_X:
            self.trash()
        elif key == Qt.Key.Key_QuoteLeft:
            self.view = "overlay"
        elif key == Qt.Key.Key_1:
            self.view = "image"
        elif key == Qt.Key.Key_4:
            self.view = "mask"
        elif key == Qt.Key.Key_5:
            self.view = "applied"
        elif key == Qt.Key.Key_B:
            self.brush = not self.brush
        elif key == Qt.Key.Key_BracketLeft:
            self.brush_radius = max(1.0, self.brush_radius / 1.25)
        elif key == Qt.Key.Key_BracketRight:
            self.brush_radius = min(200.0, self.brush_radius * 1.25)
        elif key == Qt.Key.Key_C and self.index > 0:
            previous = self.files.meta(self.index - 1)
            if previous and previous.xseg_polygons:
                self._edit()
                self.polys = [Poly(p.include, np.asarray(p.points, float).tolist()) for p in previous.xseg_polygons]
        elif key == Qt.Key.Key_M and self.meta is not None and self.meta.xseg_mask() is not None:
            mask = self.meta.xseg_mask()[..., 0]
            h, w = self.image.shape[:2]
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
            self._edit()
            self.polys = polys_from_mask(mask)
        elif key == Qt.Key.Key_Escape:
            self.close()
        else:
            super().keyPressEvent(event)
            return
        self.update()

    def closeEvent(self, event) -> None:  # noqa: N802, ANN001
        self.save()
        self.closed.emit()
        super().closeEvent(event)

    # ---------------------------------------------------------------- drawing

    def paintEvent(self, _event) -> None:  # noqa: N802, ANN001
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(25, 25, 25))
        h, w = self.image.shape[:2]
        s = self._scale()
        target = QRectF(self.pan.x(), self.pan.y(), w * s, h * s)
        if self.view in ("image", "overlay"):
            p.drawImage(target, self._qimage)
        if self.view in ("mask", "applied", "overlay"):
            if self.view == "applied":
                m = self.meta.xseg_mask() if self.meta else None
                m = np.zeros((h, w), np.float32) if m is None else cv2.resize(m[..., 0], (w, h))
            else:
                m = self.baked_mask()[..., 0]
            grey = (m * 255).astype(np.uint8)
            if self.view == "overlay":
                rgba = np.zeros((h, w, 4), np.uint8)
                rgba[..., 1] = 255
                rgba[..., 3] = grey // 3
                qi = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
            else:
                qi = QImage(np.ascontiguousarray(grey).data, w, h, w, QImage.Format.Format_Grayscale8).copy()
            p.drawImage(target, qi)
        for poly in self.polys + ([self.current] if self.current else []):
            colour = INCLUDE if poly.include else EXCLUDE
            p.setPen(QPen(colour, 2))
            pts = [self.to_view(q) for q in poly.points]
            if poly is self.current:
                p.drawPolyline(QPolygonF(pts))
            else:
                p.drawPolygon(QPolygonF(pts))
            for q in pts:
                p.drawEllipse(q, 3, 3)
        p.setPen(QColor(230, 230, 230))
        p.setFont(QFont("Sans", 9))
        mode = "brush" if self.brush else "polygon"
        p.drawText(8, self.height() - 8, f"{'include' if self.include else 'exclude'} {mode}   view {self.view}   "
                   "Q/W include/exclude  Ctrl+Z undo  A/D faces  B brush  C copy previous  M mask->polygons  X trash")  # fmt: skip
        p.end()


def run_editor(folder: Path) -> int:
    """Show the editor until it is closed; returns how many faces were saved."""
    _app = QApplication.instance() or QApplication([])  # noqa: F841 - must exist (and live) before any widget
    editor = XSegEditor(folder)
    loop = QEventLoop()
    editor.closed.connect(loop.quit)
    editor.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # deleted here, never by a later GC in another thread
    editor.show()
    loop.exec()
    return editor.saved
