"""The interactive merger: DFL's key map (pure) and the Qt window driven offscreen by real key events."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from facelab.core.blend import MASK_MODES, MergeConfig  # noqa: E402
from facelab.core.merge_keys import apply_key, help_lines  # noqa: E402


def test_key_map_steps_cycles_and_clamps_as_dfl():
    c = MergeConfig()
    assert apply_key(c, "2").mode == "hist-match" and apply_key(c, "`").mode == "original" and apply_key(c, "6").mode == "raw-predict"
    assert apply_key(c, "w").erode == 1 and apply_key(c, "w", shift=True).erode == 5 and apply_key(c, "s").erode == -1
    assert apply_key(replace(c, blur=2), "d", shift=True).blur == 0  # clamped at 0
    assert apply_key(replace(c, hist_match_threshold=254), "q", shift=True).hist_match_threshold == 255
    assert apply_key(c, "x").mask_mode == MASK_MODES[MASK_MODES.index(c.mask_mode) + 1]
    assert apply_key(replace(c, mask_mode=MASK_MODES[-1]), "x").mask_mode == "full"  # wraps
    assert apply_key(c, "c").color_transfer == "lct" and apply_key(c, "n").sharpen_mode == "box"
    assert apply_key(c, "z").masked_hist_match is not c.masked_hist_match
    assert apply_key(replace(c, color_degrade_power=7), ":").color_degrade_power == 2  # Shift+; = -5
    assert apply_key(c, "p").color_degrade_power == 1 and apply_key(c, "u").output_face_scale == 1
    assert apply_key(c, "?") == c and apply_key(c, "b") == c
    assert any("erode" in line and ": 0" in line for line in help_lines(c))
    # the manual colour balance: t/g, ]/[, 8/7, 0/9; Shift (or its shifted character) steps by 5
    assert apply_key(c, "t").brightness == 1 and apply_key(c, "g", shift=True).brightness == -5
    assert apply_key(c, "]").contrast == 1 and apply_key(c, "{").contrast == -5
    assert apply_key(c, "8").temperature == 1 and apply_key(c, "&").temperature == -5
    assert apply_key(c, "0").tint == 1 and apply_key(c, "9").tint == -1
    assert apply_key(replace(c, tint=99), ")").tint == 100  # clamped
    assert any("warmer" in line and ": 0" in line for line in help_lines(c))


def _window(n=5):
    from facelab.ui.merger import MergerWindow

    QApplication.instance() or QApplication([])
    calls = []

    def render(i, cfg):
        calls.append((i, cfg))
        img = np.full((40, 60, 3), 40 * i, np.uint8)
        img[10:30, 20:40] = 200 if cfg.mode == "hist-match" else 100
        return img, (img[:, :, 0] > 150).astype(np.uint8) * 255

    stems = [f"{k:05d}" for k in range(n)]
    return MergerWindow(stems, {}, render, MergeConfig(), 0), stems, calls


def test_window_keys_change_the_frames_config_and_navigate():
    w, stems, calls = _window()
    w.show()
    QTest.keyClick(w, Qt.Key.Key_2)
    assert w.configs[stems[0]].mode == "hist-match" and calls[-1] == (0, w.configs[stems[0]])
    QTest.keyClick(w, Qt.Key.Key_X)
    assert w.configs[stems[0]].mask_mode == MASK_MODES[MASK_MODES.index("learned-prd*dst") + 1]
    QTest.keyClick(w, Qt.Key.Key_W, Qt.KeyboardModifier.ShiftModifier)
    assert w.configs[stems[0]].erode == 5
    for key in (Qt.Key.Key_T, Qt.Key.Key_BracketRight, Qt.Key.Key_8, Qt.Key.Key_9):
        QTest.keyClick(w, key)
    QTest.keyClick(w, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)
    balance = w.configs[stems[0]]
    assert (balance.brightness, balance.contrast, balance.temperature, balance.tint) == (6, 1, 1, -1)
    assert MergeConfig.from_dict(dataclasses.asdict(balance)) == balance  # what the session file keeps
    QTest.keyClick(w, Qt.Key.Key_Period)  # a new frame inherits the previous one's config
    assert w.index == 1 and w.configs[stems[1]] == w.configs[stems[0]]
    QTest.keyClick(w, Qt.Key.Key_1)
    assert w.configs[stems[1]].mode == "overlay" and w.configs[stems[0]].mode == "hist-match"  # each frame owns its config
    QTest.keyClick(w, Qt.Key.Key_Slash)  # next frame, forced to this config
    assert w.index == 2 and w.configs[stems[2]].mode == "overlay"
    QTest.keyClick(w, Qt.Key.Key_Slash, Qt.KeyboardModifier.ShiftModifier)  # every frame after
    assert w.index == 3 and all(w.configs[s].mode == "overlay" for s in stems[2:])
    QTest.keyClick(w, Qt.Key.Key_Comma, Qt.KeyboardModifier.ShiftModifier)
    assert w.index == 0 and w.configs[stems[0]].mode == "hist-match"
    calls.clear()
    QTest.keyClick(w, Qt.Key.Key_Period, Qt.KeyboardModifier.ShiftModifier)  # DFL: auto-run through the rest
    _wait_for(lambda: not w.autorun)
    assert w.index == 4 and [i for i, _ in calls] == [1, 2, 3, 4]  # every frame shown in turn, with its own config
    assert [c for _, c in calls] == [w.configs[stems[k]] for k in range(1, 5)]
    QTest.keyClick(w, Qt.Key.Key_M)  # previous frame, taking this config
    assert w.index == 3
    QTest.keyClick(w, Qt.Key.Key_V)
    assert w.mask_view and w._qimage.pixelColor(30, 20).red() == 0  # the mask of an overlay frame: the box is 100, not > 150
    before = w.grab().toImage()
    QTest.keyClick(w, Qt.Key.Key_Tab)
    assert w.show_help and w.grab().toImage() != before  # the help overlay is drawn
    QTest.keyClick(w, Qt.Key.Key_Equal)
    assert w.zoom > 1
    QTest.keyClick(w, Qt.Key.Key_Escape)
    assert w.done


def _wait_for(done, seconds: float = 5.0) -> None:  # noqa: ANN001
    import time

    end = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < end, "timed out"
        QTest.qWait(10)


@pytest.mark.parametrize("key", ["shift+.", "x"])
def test_auto_run_stops_at_a_key_press(key):
    w, stems, _ = _window(8)
    w.show()
    pressed = []

    def render(i, cfg):  # the person presses a key while frame 2 is shown
        if i == 2 and not pressed:
            pressed.append(i)
            QTest.keyClick(w, Qt.Key.Key_Period, Qt.KeyboardModifier.ShiftModifier) if key == "shift+." else QTest.keyClick(w, key)
        return np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8)

    w.render = render
    QTest.keyClick(w, Qt.Key.Key_Period, Qt.KeyboardModifier.ShiftModifier)
    _wait_for(lambda: not w.autorun)
    QTest.qWait(50)
    assert w.index == 2 and not w.autorun  # stopped where the key was pressed
    assert (w.configs[stems[2]].mask_mode != w.configs[stems[1]].mask_mode) == (key == "x")  # and the key did its job


def test_the_window_says_whose_face_it_swaps():
    from facelab.ui.merger import MergerWindow

    QApplication.instance() or QApplication([])
    render = lambda i, cfg: (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))  # noqa: E731
    assert "swapping" not in MergerWindow(["00001"], {}, render, MergeConfig(), 0).windowTitle()
    window = MergerWindow(["00001"], {}, render, MergeConfig(), 0, swapping="person 2")
    assert window.windowTitle().startswith("FaceLab merger - frame 1/1 (00001) - swapping person 2 only - ")
