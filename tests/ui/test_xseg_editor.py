"""The XSeg editor, offscreen, with real mouse and key events: draw, undo, redo, save, reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from facelab.core.masks import polygons_mask  # noqa: E402
from facelab.io.faceimage import read_meta, write_meta  # noqa: E402
from facelab.io.frames import list_images  # noqa: E402
from facelab.ui.xseg_editor import XSegEditor  # noqa: E402


@pytest.fixture
def faces(train_workspace, tmp_path):
    app = QApplication.instance() or QApplication([])
    folder = tmp_path / "aligned"
    folder.mkdir()
    for p in list_images(train_workspace.aligned_dir("dst"))[:3]:
        shutil.copy(p, folder / p.name)
    yield folder
    app.processEvents()  # the QApplication lives (is referenced) until the end of the test


def _open(folder):
    editor = XSegEditor(folder)
    editor.resize(512, 512)  # 256 px faces shown at 2x: image px = view px / 2
    editor.show()
    QTest.qWaitForWindowExposed(editor)
    return editor


def _click(editor, xy, ctrl: bool = False):
    v = editor.to_view(xy)
    mods = Qt.KeyboardModifier.ControlModifier if ctrl else Qt.KeyboardModifier.NoModifier
    QTest.mouseClick(editor, Qt.MouseButton.LeftButton, mods, QPoint(round(v.x()), round(v.y())))


SQUARE = [(60, 60), (190, 60), (190, 190), (60, 190)]
HOLE = [(100, 100), (150, 100), (150, 150), (100, 150)]


def test_draw_undo_redo_save_reload(faces):
    editor = _open(faces)
    for pt in SQUARE:
        _click(editor, pt)
    _click(editor, SQUARE[0])  # close on the first point
    assert len(editor.polys) == 1 and editor.current is None
    QTest.keyClick(editor, Qt.Key.Key_W)  # exclude
    for pt in HOLE:
        _click(editor, pt)
    _click(editor, HOLE[0])
    assert [p.include for p in editor.polys] == [True, False]
    QTest.keyClick(editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the closing
    assert len(editor.polys) == 1 and editor.current is not None and len(editor.current.points) == 4
    QTest.keyClick(editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(editor.polys) == 2 and editor.current is None  # redo
    expected = polygons_mask((256, 256), [(True, np.float32(SQUARE)), (False, np.float32(HOLE))])
    np.testing.assert_array_equal(editor.baked_mask(), expected)
    first = editor.paths[0]
    QTest.keyClick(editor, Qt.Key.Key_D)  # next face: saves
    assert editor.index == 1
    editor.close()
    meta = read_meta(first)
    raster = polygons_mask((256, 256), [(p.include, p.points) for p in meta.xseg_polygons])
    assert (raster != expected).sum() <= 8  # reloaded: the same mask up to clicks rounded to screen pixels
    again = _open(faces)
    assert [p.include for p in again.polys] == [True, False]  # reopening shows the saved polygons
    again.close()


def test_drag_insert_delete_points_zoom_and_pan(faces):
    editor = _open(faces)
    for pt in SQUARE:
        _click(editor, pt)
    _click(editor, SQUARE[0])
    v = editor.to_view(SQUARE[2])
    QTest.mousePress(editor, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(v.x()), round(v.y())))
    QTest.mouseMove(editor, QPoint(round(v.x()) + 40, round(v.y()) + 20))
    QTest.mouseRelease(editor, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(v.x()) + 40, round(v.y()) + 20))
    assert np.allclose(editor.polys[0].points[2], [210, 200], atol=1)
    _click(editor, (125, 60), ctrl=True)  # on the top edge: insert
    assert len(editor.polys[0].points) == 5
    _click(editor, (125, 60), ctrl=True)  # on that point: delete
    assert len(editor.polys[0].points) == 4
    before = editor.to_image(QPointF(256, 256))
    QApplication.sendEvent(editor, QWheelEvent(QPointF(256, 256), editor.mapToGlobal(QPointF(256, 256)), QPoint(0, 0),
                                                 QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                                 Qt.ScrollPhase.NoScrollPhase, False))  # fmt: skip
    assert editor.zoom > 1 and np.allclose(editor.to_image(QPointF(256, 256)), before, atol=0.5)  # zoom about the cursor
    QTest.mousePress(editor, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(100, 100))
    QTest.mouseMove(editor, QPoint(130, 100))
    QTest.mouseRelease(editor, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(130, 100))
    assert editor.pan.x() != 0
    editor.close()


def test_brush_copy_previous_mask_to_polygons_and_trash(faces):
    editor = _open(faces)
    for pt in SQUARE:
        _click(editor, pt)
    _click(editor, SQUARE[0])
    QTest.keyClick(editor, Qt.Key.Key_D)
    QTest.keyClick(editor, Qt.Key.Key_C)  # copy the previous face's polygons
    assert len(editor.polys) == 1 and np.allclose(editor.polys[0].points, SQUARE, atol=1)
    QTest.keyClick(editor, Qt.Key.Key_B)  # brush: paint a stroke
    start = editor.to_view((30, 220))
    QTest.mousePress(editor, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(start.x()), round(start.y())))
    for dx in range(0, 80, 10):
        QTest.mouseMove(editor, QPoint(round(start.x()) + dx, round(start.y())))
    QTest.mouseRelease(editor, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(start.x()) + 70, round(start.y())))
    assert len(editor.polys) > 3 and editor.baked_mask()[220, 40, 0] == 1
    QTest.keyClick(editor, Qt.Key.Key_B)
    # an applied mask becomes editable polygons
    path = editor.paths[editor.index]
    meta = read_meta(path)
    applied = np.zeros((256, 256), np.float32)
    applied[40:200, 70:180] = 1
    applied[90:120, 100:140] = 0  # a hole
    write_meta(path, meta.with_xseg_mask(applied))
    editor._load()
    QTest.keyClick(editor, Qt.Key.Key_M)
    baked = editor.baked_mask()[..., 0] > 0.5
    inter, union = (baked & (applied > 0.5)).sum(), (baked | (applied > 0.5)).sum()
    assert inter / union > 0.95 and any(not p.include for p in editor.polys)
    name = path.name
    (faces.parent / "aligned_trash").mkdir()
    (faces.parent / "aligned_trash" / name).write_bytes(b"a face trashed earlier")
    QTest.keyClick(editor, Qt.Key.Key_X)  # to the trash, next to (not over) the earlier one
    assert (faces.parent / "aligned_trash" / name).read_bytes() == b"a face trashed earlier"
    moved = faces.parent / "aligned_trash" / f"{Path(name).stem}_1{Path(name).suffix}"
    assert read_meta(moved) is not None and not (faces / name).exists()
    editor.close()
