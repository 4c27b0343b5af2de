"""DFL's interactive-merger key map (dfl-spec §11) as data: a key press -> a new MergeConfig.

Pure: the Qt window (`ui/merger.py`) only turns key events into `apply_key(cfg, key, shift)`.
Shift multiplies a step by 5, as in DFL. Navigation keys (`,` `.` `m` `/` Tab Esc `-` `=` `v` `b`) are
the window's own and are not here.
"""

from __future__ import annotations

from dataclasses import replace

from facelab.core.blend import COLOR_MODES, MASK_MODES, RANGES, SHARPEN_MODES, MergeConfig

MODE_KEYS = {"`": "original", "1": "overlay", "2": "hist-match", "3": "seamless", "4": "seamless-hist-match",
             "5": "raw-rgb", "6": "raw-predict"}  # fmt: skip
# key: (field, step); the field's range is core.blend.RANGES
STEP_KEYS = {
    "q": ("hist_match_threshold", 1), "a": ("hist_match_threshold", -1), "w": ("erode", 1), "s": ("erode", -1),
    "e": ("blur", 1), "d": ("blur", -1), "r": ("motion_blur_power", 1), "f": ("motion_blur_power", -1),
    "y": ("blursharpen_amount", 1), "h": ("blursharpen_amount", -1), "u": ("output_face_scale", 1),
    "j": ("output_face_scale", -1), "i": ("image_denoise_power", 1), "k": ("image_denoise_power", -1),
    "o": ("bicubic_degrade_power", 1), "l": ("bicubic_degrade_power", -1), "p": ("color_degrade_power", 1),
    ";": ("color_degrade_power", -1),
    # the manual colour balance: top/home row as above, then pairs of neighbours, left lowers
    "t": ("brightness", 1), "g": ("brightness", -1), "]": ("contrast", 1), "[": ("contrast", -1),
    "8": ("temperature", 1), "7": ("temperature", -1), "0": ("tint", 1), "9": ("tint", -1),
}  # fmt: skip
CYCLE_KEYS = {"x": ("mask_mode", MASK_MODES), "c": ("color_transfer", COLOR_MODES), "n": ("sharpen_mode", SHARPEN_MODES)}
SHIFTED = {":": ";", "~": "`", "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
           ")": "0", "{": "[", "}": "]"}  # US layout: the shifted character

HELP = [
    ("` 1-6", "mode: original, overlay, hist-match, seamless, seamless-hist-match, raw-rgb, raw-predict", "mode"),
    ("x", "mask mode", "mask_mode"), ("c", "colour transfer", "color_transfer"),
    ("w / s", "erode mask + / - (negative grows it)", "erode"), ("e / d", "blur mask + / -", "blur"),
    ("r / f", "motion blur + / -", "motion_blur_power"), ("u / j", "output face scale + / -", "output_face_scale"),
    ("n", "sharpen mode", "sharpen_mode"), ("y / h", "sharpen + / blur -", "blursharpen_amount"),
    ("q / a", "hist match threshold + / -", "hist_match_threshold"), ("z", "masked hist match", "masked_hist_match"),
    ("i / k", "image denoise + / -", "image_denoise_power"), ("o / l", "bicubic degrade + / -", "bicubic_degrade_power"),
    ("p / ; / :", "colour degrade +1 / -1 / -5", "color_degrade_power"),
    ("t / g", "brightness + / -", "brightness"), ("] / [", "contrast + / -", "contrast"),
    ("8 / 7", "warmer / cooler (yellow / blue)", "temperature"), ("0 / 9", "tint magenta / green", "tint"),
    (", / .", "previous / next frame (Shift+,: first; Shift+.: run through the rest, any key stops)", None),
    ("m", "previous frame, taking this config (Shift: back to the first)", None),
    ("/", "next frame, forcing this config on it (Shift: on every frame after)", None),
    ("- / =", "zoom out / in", None), ("v", "show the mask", None),
    ("b", "every colour transfer side by side (saved as a PNG)", None), ("Tab", "this help", None),
    ("Esc", "save the session and merge every frame with its config", None),
]  # fmt: skip


def apply_key(cfg: MergeConfig, key: str, shift: bool = False) -> MergeConfig:
    """The config after pressing `key` (one character; Shift held: `shift`). Unknown keys change nothing."""
    if key in SHIFTED:
        key, shift = SHIFTED[key], True
    key = key.lower()
    if key in MODE_KEYS:
        return replace(cfg, mode=MODE_KEYS[key])
    if key == ";" and shift:
        return replace(cfg, color_degrade_power=max(0, cfg.color_degrade_power - 5))
    if key in STEP_KEYS:
        field, step = STEP_KEYS[key]
        low, high = RANGES[field]
        value = getattr(cfg, field) + step * (5 if shift else 1)
        return replace(cfg, **{field: min(high, max(low, value))})
    if key in CYCLE_KEYS:
        field, values = CYCLE_KEYS[key]
        return replace(cfg, **{field: values[(values.index(getattr(cfg, field)) + 1) % len(values)]})
    if key == "z":
        return replace(cfg, masked_hist_match=not cfg.masked_hist_match)
    return cfg


def help_lines(cfg: MergeConfig) -> list[str]:
    """The help overlay: every key with what it does and the current value."""
    return [f"{keys:>9}  {what}" + (f": {getattr(cfg, field)}" if field else "") for keys, what, field in HELP]
