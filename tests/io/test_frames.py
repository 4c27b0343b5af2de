"""Image listing, unicode-safe atomic writes, and numbered-sequence checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facelab.io.frames import list_images, numbered_sequence, read_image, write_image_atomic


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return list_images(folder)


def test_unicode_path_round_trip_and_no_temp_files_left(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    path = tmp_path / "Ölçü 顔" / "00001.png"
    write_image_atomic(path, img)
    assert np.array_equal(read_image(path), img)
    assert [p.name for p in path.parent.iterdir()] == ["00001.png"]


def test_unreadable_image_reads_as_none(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert read_image(tmp_path / "bad.jpg") is None


def test_listing_is_by_extension_non_recursive_sorted(tmp_path):
    files = _touch(tmp_path, "00002.png", "00001.png", "notes.txt", "00003.JPG")
    (tmp_path / "aligned").mkdir()
    (tmp_path / "aligned" / "00001_0.jpg").write_bytes(b"x")
    assert [p.name for p in files] == ["00001.png", "00002.png", "00003.JPG"]


def test_sequence_describes_pattern_and_start(tmp_path):
    seq = numbered_sequence(_touch(tmp_path, "00003.png", "00004.png", "00005.png"))
    assert (seq.first, seq.count, seq.digits, seq.ext) == (3, 3, 5, ".png")
    assert seq.pattern == str(tmp_path / "%05d.png")


def test_sequence_names_the_first_gap(tmp_path):
    frames = _touch(tmp_path, "00001.png", "00002.png", "00004.png", "00006.png")
    with pytest.raises(ValueError, match=r"frame 00003\.png is missing"):
        numbered_sequence(frames)


def test_sequence_names_missing_tail_against_expected(tmp_path):
    frames = _touch(tmp_path, "00001.png", "00002.png")
    with pytest.raises(ValueError, match=r"frame 00003\.png is missing .*\(2 of 4 frames not there\)"):
        numbered_sequence(frames, expected_stems=["00001", "00002", "00003", "00004"])


def test_sequence_refuses_mixed_or_unnumbered(tmp_path):
    with pytest.raises(ValueError, match="mixes image formats"):
        numbered_sequence(_touch(tmp_path / "a", "00001.png", "00002.jpg"))
    with pytest.raises(ValueError, match="not named by frame number"):
        numbered_sequence(_touch(tmp_path / "b", "00001.png", "frame2.png"))
