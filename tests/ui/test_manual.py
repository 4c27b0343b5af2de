"""The manual extraction window, driven offscreen by real Qt mouse, wheel and key events, and the
extraction stage's manual modes (manual only, --manual-fix, re-extract deleted debug)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from facelab import cli  # noqa: E402
from facelab.detect.base import create_detector, create_landmarker  # noqa: E402
from facelab.io.faceimage import read_meta  # noqa: E402
from facelab.io.frames import list_images, read_image  # noqa: E402
from facelab.ui.manual import ManualExtractWindow  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def landmarkers():
    cache = {}

    def landmarker_for(accurate: bool):
        if accurate not in cache:
            cache[accurate] = create_landmarker("facemesh68", passes=2 if accurate else 1)
        return cache[accurate]

    return landmarker_for


def _wheel(widget, pos: QPointF, up: bool) -> None:
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 if up else -120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(widget, event)


def _point(window, xy) -> QPoint:
    p = window.to_view(np.array(xy))[0]
    return QPoint(round(p.x()), round(p.y()))


def _place(window, box) -> None:
    """Move the mouse onto the face and wheel the box to about the detector's size."""
    l, t, r, b = box
    QTest.mouseMove(window, _point(window, ((l + r) / 2, (t + b) / 2)))
    target = max(r - l, b - t) / 2
    for _ in range(200):
        if abs(window.half - target) <= 10:
            break
        _wheel(window, QPointF(_point(window, ((l + r) / 2, (t + b) / 2))), up=window.half < target)


def test_window_keys_and_mouse_collect_faces(app, landmarkers, media, tmp_path):
    names = ["obama2.jpg", "biden.jpg", "obama.jpg"]
    frames = []
    for n in names:
        shutil.copy(media(n), tmp_path / n)
        frames.append(tmp_path / n)
    det = create_detector("blazeface")
    boxes = {n: det.detect(read_image(tmp_path / n))[0].rect for n in names}

    window = ManualExtractWindow(frames, landmarkers)
    window.resize(900, 700)
    window.show()
    QTest.qWaitForWindowExposed(window)

    _place(window, boxes["obama2.jpg"])
    assert window.current is not None and not window.locked
    QTest.mouseClick(window, Qt.MouseButton.LeftButton, pos=_point(window, window.centre))
    assert window.locked
    locked_centre = window.centre.copy()
    QTest.mouseMove(window, QPoint(5, 5))  # a locked box stays where it is
    assert np.array_equal(window.centre, locked_centre)
    QTest.keyClick(window, Qt.Key.Key_Return)
    assert window.index == 1 and not window.locked

    QTest.keyClick(window, Qt.Key.Key_Space)  # biden: "no face here"
    assert window.index == 2 and window.results["biden.jpg"] is None
    QTest.keyClick(window, Qt.Key.Key_Comma)
    QTest.keyClick(window, Qt.Key.Key_Comma)  # back to the first frame: its box returns, locked
    assert window.index == 0 and window.locked
    assert np.allclose(window.centre, locked_centre)
    QTest.keyClick(window, Qt.Key.Key_Period)
    QTest.keyClick(window, Qt.Key.Key_Period)
    QTest.keyClick(window, Qt.Key.Key_H)
    QTest.keyClick(window, Qt.Key.Key_A)
    assert window.index == 2 and window.show_help and not window.accurate

    _place(window, boxes["obama.jpg"])
    QTest.keyClick(window, Qt.Key.Key_Return)  # past the last frame: the window finishes
    assert window.finished

    for name in ("obama2.jpg", "obama.jpg"):
        rect, lm = window.results[name]
        l, t, r, b = boxes[name]
        w, h = r - l, b - t
        eyes = lm[36:48]
        assert lm.shape == (68, 2)
        assert (eyes[:, 0] > l - 0.1 * w).all() and (eyes[:, 0] < r + 0.1 * w).all(), name
        assert (eyes[:, 1] > t - 0.1 * h).all() and (eyes[:, 1] < t + 0.7 * h).all(), name
        assert lm[48:68, 1].mean() > eyes[:, 1].mean()


def test_wheel_steps_follow_dfl(app, landmarkers, media, tmp_path):
    shutil.copy(media("obama2.jpg"), tmp_path / "a.jpg")
    window = ManualExtractWindow([tmp_path / "a.jpg"], landmarkers)
    window.resize(600, 600)
    window.show()
    centre = QPointF(300, 300)
    window.half = 100
    _wheel(window, centre, up=True)
    assert window.half == 110  # size/10 above 40 px
    window.half = 30
    _wheel(window, centre, up=False)
    assert window.half == 29  # 1 px steps up to 40 px
    window.half = 5
    _wheel(window, centre, up=False)
    assert window.half == 5  # never below 5
    window.close()


@pytest.fixture
def fake_user(monkeypatch):
    """Stands in for the person at the window: places the detector's box on the frames it is shown."""
    from facelab.ui import manual

    shown: list[list[str]] = []

    def run(frames, landmarker_for, face_type, size, initial=None):
        shown.append([f.name for f in frames])
        det = create_detector("blazeface")
        results = {}
        for f in frames:
            dets = det.detect(read_image(f))
            results[f.name] = (dets[0].rect, landmarker_for(True).landmarks(read_image(f), dets[:1])[0]) if dets else None
        return results

    monkeypatch.setattr(manual, "run_manual_pass", run)
    return shown


def test_manual_only_mode_writes_the_faces_placed(ws, media, fake_user):
    for n in ("obama.jpg", "biden.jpg"):
        shutil.copy(media(n), ws.frames_dir("src") / n)
    code = cli.main(["extract", "--workspace", str(ws.root), "--side", "src", "--detector", "manual", "--non-interactive"])
    assert code == 0
    assert fake_user == [["biden.jpg", "obama.jpg"]]
    faces = list_images(ws.aligned_dir("src"))
    assert [p.name for p in faces] == ["biden_0.jpg", "obama_0.jpg"]
    assert read_meta(faces[0]).extra["detector"] == "manual"
    biden, obama = (np.array(read_meta(f).identity) for f in faces)  # faces placed by hand are told apart too
    assert read_meta(faces[0]).identity_model == "dlib-resnet/v1" and np.linalg.norm(biden - obama) > 0.6


def test_manual_fix_is_shown_only_frames_without_a_face(ws, media, fake_user):
    import cv2

    shutil.copy(media("obama.jpg"), ws.frames_dir("src") / "a.jpg")
    cv2.imwrite(str(ws.frames_dir("src") / "b.jpg"), np.full((300, 400, 3), 90, np.uint8))  # nothing to find
    code = cli.main(["extract", "--workspace", str(ws.root), "--side", "src", "--manual-fix", "--non-interactive"])
    assert code == 0
    assert fake_user == [["b.jpg"]]
    assert [p.name for p in list_images(ws.aligned_dir("src"))] == ["a_0.jpg"]


def test_reextract_deleted_debug_replaces_only_those_frames(ws, media, fake_user, script):
    for i, n in enumerate(("obama.jpg", "obama2.jpg", "biden.jpg")):
        shutil.copy(media(n), ws.frames_dir("dst") / f"{i + 1:05d}.jpg")
    assert script("5_dst_faceset_extract", "--workspace", str(ws.root), "--non-interactive").returncode == 0
    kept = (ws.aligned_dir("dst") / "00001_0.jpg").stat().st_mtime_ns
    (ws.aligned_debug_dir("dst") / "00002.jpg").unlink()
    code = cli.main(["extract", "--workspace", str(ws.root), "--side", "dst", "--manual-reextract-deleted-debug",
                     "--non-interactive"])  # fmt: skip
    assert code == 0
    assert fake_user == [["00002.jpg"]]
    assert (ws.aligned_debug_dir("dst") / "00002.jpg").exists()
    assert (ws.aligned_dir("dst") / "00001_0.jpg").stat().st_mtime_ns == kept
    assert len(list_images(ws.aligned_dir("dst"))) == 3


def test_manual_without_a_display_is_a_clear_error(ws, media):
    shutil.copy(media("obama.jpg"), ws.frames_dir("src") / "a.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "facelab", "extract", "--workspace", str(ws.root), "--side", "src",
                           "--detector", "manual", "--non-interactive"], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert proc.returncode == 2 and "no display" in proc.stderr and proc.stderr.count("\n") == 1


def _drag(window, frm, to, shift: bool = False) -> None:
    mods = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    QTest.mousePress(window, Qt.MouseButton.LeftButton, mods, _point(window, frm))
    QTest.mouseMove(window, _point(window, (np.asarray(frm) + to) / 2))
    QTest.mouseMove(window, _point(window, to))
    QTest.mouseRelease(window, Qt.MouseButton.LeftButton, mods, _point(window, to))


def test_dragging_the_chin_and_accepting_moves_the_saved_landmarks_and_the_crop(ws, media, script, monkeypatch):
    """`5_dst_faceset_extract --edit-landmarks`: the real window, real mouse drags, undo / redo."""
    import cv2

    from facelab.core.landmarks import get_transform_mat, transform_points, warp_face
    from facelab.io.faceimage import read_face
    from facelab.ui import manual

    shutil.copy(media("obama.jpg"), ws.frames_dir("dst") / "00001.jpg")
    assert script("5_dst_faceset_extract", "--workspace", str(ws.root), "--non-interactive").returncode == 0
    face_path = ws.aligned_dir("dst") / "00001_0.jpg"
    before_img, before = read_face(face_path)
    debug_before = read_image(ws.aligned_debug_dir("dst") / "00001.jpg")
    seen = {}

    def user(frames, landmarker_for, face_type, size, initial=None, keys=None):  # noqa: ANN001, ANN202
        QApplication.instance() or QApplication([])
        w = manual.ManualExtractWindow(frames, landmarker_for, face_type, size, initial, keys)
        w.resize(900, 700)
        w.show()
        QTest.qWaitForWindowExposed(w)
        lm = w.current[1].copy()
        seen["shown"] = lm.copy()
        assert w.locked
        chin = lm[8]
        _drag(w, chin, chin + (0, 25))  # the chin point, 25 frame px down
        assert np.abs(w.current[1][8] - (chin + (0, 25))).max() < 1.5
        assert np.array_equal(np.delete(w.current[1], 8, 0), np.delete(lm, 8, 0))  # only that point
        after_chin = w.current[1].copy()
        mouth = lm[48:68].mean(0)
        _drag(w, lm[57], lm[57] + (10, 0), shift=True)  # Shift: the whole mouth moves
        assert np.abs(w.current[1][48:68].mean(0) - (mouth + (10, 0))).max() < 1.5
        assert np.array_equal(w.current[1][:48], after_chin[:48])
        QTest.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the mouth
        assert np.array_equal(w.current[1], after_chin)
        QTest.keyClick(w, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo it
        assert np.abs(w.current[1][48:68].mean(0) - (mouth + (10, 0))).max() < 1.5
        seen["accepted"] = w.current[1].copy()
        QTest.keyClick(w, Qt.Key.Key_Return)  # accept: the last face, the window finishes
        assert w.finished
        return w.results

    monkeypatch.setattr(manual, "run_manual_pass", user)
    code = cli.main(["extract", "--workspace", str(ws.root), "--side", "dst", "--edit-landmarks", "--non-interactive"])
    assert code == 0
    np.testing.assert_array_equal(seen["shown"], before.source_landmarks)  # the stored points, not a re-fit
    after_img, after = read_face(face_path)
    np.testing.assert_allclose(after.source_landmarks, seen["accepted"], atol=1e-4)
    assert after.source_landmarks[8, 1] - before.source_landmarks[8, 1] > 23
    # the crop and its matrix follow the edited points (DFL's framing uses the brows, eyes, nose and
    # mouth corners, so the moved mouth moves it; the jaw shapes the mask): the longer chin
    # reaches lower in the landmark hull mask, which is made from the saved points
    from facelab.core.masks import hull_mask

    def chin_in_frame(meta, size):  # noqa: ANN001, ANN202
        hull = hull_mask((size, size), meta.landmarks)[..., 0] > 0.5
        ys, xs = np.nonzero(hull)
        return transform_points(np.array([[xs[ys.argmax()], ys.max()]], float), meta.image_to_face_mat, invert=True)[0, 1]

    assert chin_in_frame(after, after_img.shape[0]) - chin_in_frame(before, before_img.shape[0]) > 20
    frame = cv2.imread(str(ws.frames_dir("dst") / "00001.jpg"))
    mat = get_transform_mat(after.source_landmarks, after_img.shape[0], after.face_type)
    np.testing.assert_allclose(after.image_to_face_mat, mat, atol=1e-9)
    np.testing.assert_allclose(after.landmarks, transform_points(after.source_landmarks, mat), atol=1e-3)
    assert not np.allclose(after.image_to_face_mat, before.image_to_face_mat)
    assert np.abs(after_img.astype(int) - warp_face(frame, mat, after_img.shape[0]).astype(int)).mean() < 2
    assert np.abs(after_img.astype(int) - before_img.astype(int)).mean() > 2
    assert after.extra["landmarks_edited"] is True and after.identity == before.identity
    # the debug overlay is drawn again: it changed where the chin moved
    debug_after = read_image(ws.aligned_debug_dir("dst") / "00001.jpg")
    chin = after.source_landmarks[8].astype(int)
    near = (slice(chin[1] - 12, chin[1] + 12), slice(chin[0] - 12, chin[0] + 12))
    assert np.abs(debug_after[near].astype(int) - debug_before[near].astype(int)).mean() > 5


def test_refit_carries_polygons_and_the_applied_mask_into_the_new_crop(media):
    import cv2

    from facelab.core.landmarks import FaceType, get_transform_mat, transform_points
    from facelab.io.faceimage import FaceMeta, XSegPolygon
    from facelab.stages.extract import refit_face

    frame = read_image(media("obama.jpg"))
    det = create_detector("blazeface").detect(frame)[0]
    lm = create_landmarker("facemesh68").landmarks(frame, [det])[0]
    mat = get_transform_mat(lm, 512, FaceType.WHOLE_FACE)
    # a mask and a polygon marking one frame point (the nose tip), in the old crop
    nose = transform_points(lm[30:31], mat)[0]
    mask = np.zeros((256, 256), np.uint8)
    cv2.circle(mask, (int(round(nose[0] / 2)), int(round(nose[1] / 2))), 6, 255, -1)
    meta = FaceMeta(FaceType.WHOLE_FACE, transform_points(lm, mat), "a.jpg", None, lm, mat,
                    xseg_polygons=(XSegPolygon(True, (nose + [[-5, -5], [5, -5], [0, 5]]).astype(np.float32)),)).with_xseg_mask(mask)
    moved = lm.copy()
    moved[:17] += (0, 30)  # a longer jaw: a new crop
    _, new = refit_face(frame, 512, meta, moved)
    new_nose = transform_points(lm[30:31], new.image_to_face_mat)[0]
    assert np.abs(new.xseg_polygons[0].points.mean(0) - (new_nose + [0, -5 / 3])).max() < 0.5
    ys, xs = np.nonzero(new.xseg_mask()[..., 0] > 0.5)
    assert np.abs(np.array([xs.mean(), ys.mean()]) * 2 - new_nose).max() < 3
