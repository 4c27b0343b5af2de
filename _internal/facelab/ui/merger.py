"""The interactive merger window (dfl-spec §11): one dst frame merged with its own config, DFL's keys.

Each frame owns a config; a frame seen for the first time inherits the one before it. The window
only holds configs and calls `render(index, cfg) -> (merged BGR uint8, mask uint8)`; the stage
caches the model's output per frame, so a key press re-composites without running the model.
Keys: `core/merge_keys.py` (config) plus navigation, zoom, mask view, b contact sheet, Tab help and Esc (done).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QPainter
from PySide6.QtWidgets import QApplication, QWidget

from facelab.core.blend import MergeConfig
from facelab.core.merge_keys import apply_key, help_lines
from facelab.errors import UserError

Render = Callable[[int, MergeConfig], tuple[np.ndarray, np.ndarray]]
Sheet = Callable[[int, MergeConfig], tuple[np.ndarray, str]]  # (contact sheet BGR uint8, where it was saved)
MODIFIER_KEYS = (Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt, Qt.Key.Key_Meta, Qt.Key.Key_AltGr)
NAV_SHIFTED = {"<": ",", ">": ".", "?": "/", "M": "m", "V": "v", "+": "="}


class MergerWindow(QWidget):
    def __init__(self, stems: list[str], configs: dict[str, MergeConfig], render: Render, default: MergeConfig, index: int = 0,
                 contact_sheet: Sheet | None = None, swapping: str = ""):  # fmt: skip
        super().__init__()
        self.stems, self.configs, self.render, self.default = stems, configs, render, default
        self.contact_sheet = contact_sheet
        self.note = ""  # a status line over the image (the contact sheet's file)
        self.index = min(max(index, 0), len(stems) - 1)
        self.zoom, self.show_help, self.mask_view, self.done = 1.0, False, False, False
        self.error = ""  # shown over the frame when the config cannot be rendered
        self.autorun = False  # Shift+.: step through the remaining frames on its own (DFL)
        self._qimage: QImage | None = None
        self.swapping = f" - swapping {swapping} only" if swapping else ""  # --person / --reference
        self.setWindowTitle("FaceLab merger")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.resize(960, 600)
        self.show_frame()

    def config(self, index: int | None = None) -> MergeConfig:
        """The frame's config; a frame not seen yet takes the nearest earlier frame's (or the default)."""
        index = self.index if index is None else index
        for k in range(index, -1, -1):
            if self.stems[k] in self.configs:
                return self.configs.setdefault(self.stems[index], self.configs[self.stems[k]])
        return self.configs.setdefault(self.stems[index], self.default)

    def show_frame(self) -> None:
        cfg = self.config()
        try:
            image, mask = self.render(self.index, cfg)
        except UserError as e:  # e.g. an XSeg mask mode with no XSeg model trained: say so, keep going
            self.error = str(e)
            self.update()
            return
        self.error = self.note = ""
        if self.mask_view:
            image = np.repeat(mask[:, :, None], 3, 2)
        self._show(image)
        self.setWindowTitle(f"FaceLab merger - frame {self.index + 1}/{len(self.stems)} ({self.stems[self.index]}){self.swapping} - "
                            f"{cfg.mode}, mask {cfg.mask_mode}, colour {cfg.color_transfer} - Tab: keys, Esc: merge all")  # fmt: skip

    def show_contact_sheet(self) -> None:
        """The frame under every colour transfer side by side (saved as a PNG too) until b again or a
        key that changes something (DFL#5274: users cannot tell the colour modes apart)."""
        try:
            sheet, where = self.contact_sheet(self.index, self.config())
        except UserError as e:
            self.error = str(e)
            self.update()
            return
        self._show(sheet)
        self.note = f"every colour transfer (b: back), saved to {where}"

    def _show(self, image: np.ndarray) -> None:
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        h, w = rgb.shape[:2]
        self._qimage = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: ANN001, N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        if self._qimage is not None:
            scale = self.zoom * min(self.width() / self._qimage.width(), self.height() / self._qimage.height())
            w, h = int(self._qimage.width() * scale), int(self._qimage.height() * scale)
            p.drawImage(self.rect().center().x() - w // 2, self.rect().center().y() - h // 2, self._qimage.scaled(w, h))
        if self.error or self.note:
            p.fillRect(0, 0, self.width(), 30, QColor(140, 20, 20) if self.error else QColor(20, 60, 120))
            p.setPen(QColor(255, 255, 255))
            p.drawText(10, 20, self.error or self.note)
        if self.show_help:
            p.fillRect(self.rect(), QColor(0, 0, 0, 190))
            p.setPen(QColor(235, 235, 235))
            p.setFont(QFont("monospace", 10))
            for n, line in enumerate(help_lines(self.config())):
                p.drawText(12, 22 + 17 * n, line)
        p.end()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key, text = event.key(), event.text()
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if key in MODIFIER_KEYS:  # Shift on its own is half of Shift+., not a key press that stops a run
            return
        if key == Qt.Key.Key_Escape:
            self.done = True
            self.autorun = False
            self.close()
            return
        if self.autorun:  # any key stops the run; Shift+. only stops it
            self.autorun = False
            if text in (">", ".") and (shift or text == ">"):
                return
        if key == Qt.Key.Key_Tab:
            self.show_help = not self.show_help
            self.update()
            return
        if text in NAV_SHIFTED:
            text, shift = NAV_SHIFTED[text], True
        last = len(self.stems) - 1
        cfg = self.config()
        if text == ",":
            self.index = 0 if shift else max(0, self.index - 1)
        elif text == "." and shift:
            self.autorun = self.index < last
            QTimer.singleShot(0, self._autorun_step)
            return
        elif text == ".":
            self.index = min(last, self.index + 1)
        elif text == "m":
            targets = range(0, self.index) if shift else range(max(0, self.index - 1), self.index)
            for k in targets:
                self.configs[self.stems[k]] = cfg
            self.index = 0 if shift else max(0, self.index - 1)
        elif text == "/":
            targets = range(self.index + 1, last + 1) if shift else range(self.index + 1, min(last, self.index + 1) + 1)
            for k in targets:
                self.configs[self.stems[k]] = cfg
            self.index = min(last, self.index + 1)
        elif text == "-":
            self.zoom = max(0.1, self.zoom / 1.25)
        elif text == "=":
            self.zoom = min(4.0, self.zoom * 1.25)
        elif text == "v":
            self.mask_view = not self.mask_view
        elif text == "b" and self.contact_sheet is not None:
            if self.note:  # b again: back to the frame
                self.show_frame()
            else:
                self.show_contact_sheet()
            return
        elif text:
            new = apply_key(cfg, text, shift)
            if new == cfg:
                return
            self.configs[self.stems[self.index]] = new
        else:
            return
        self.show_frame()


    def _autorun_step(self) -> None:
        """One frame of the auto-run: the next frame (inheriting the config), shown, then the next."""
        if not self.autorun or self.index >= len(self.stems) - 1:
            self.autorun = False
            return
        self.index += 1
        self.show_frame()
        QTimer.singleShot(0, self._autorun_step)


def run_merger_window(stems: list[str], configs: dict[str, MergeConfig], render: Render, default: MergeConfig, index: int = 0,
                      contact_sheet: Sheet | None = None, swapping: str = "") -> tuple[bool, int]:  # fmt: skip
    """Show the window until Esc (True: merge everything) or closing it (False); returns (done, frame index)."""
    from PySide6.QtCore import QEventLoop

    _app = QApplication.instance() or QApplication([])  # noqa: F841 - must exist (and live) before any widget
    window = MergerWindow(stems, configs, render, default, index, contact_sheet, swapping)
    loop = QEventLoop()
    window.destroyed.connect(loop.quit)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    loop.exec()
    return window.done, window.index
