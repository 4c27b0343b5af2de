"""The machine-readable "synthetic media" label every swap FaceLab writes carries (ARCHITECTURE §6).

Videos get container tags (mp4/mov, written with `-movflags use_metadata_tags` so custom keys
survive; `ffprobe -show_format` and `ffmpeg -i` list them). Images made by the merger will carry
the same keys as PNG text chunks / a JPEG comment. The label is always on.
"""

from __future__ import annotations

from facelab import __version__

SYNTHETIC_TAGS: dict[str, str] = {
    "synthetic": "true",
    "ai_generated": "true",
    # IPTC's term for media made by a trained model; the vocabulary C2PA and press tools read.
    "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    "comment": (
        "Synthetic media: the face in this video was swapped by FaceLab. "
        "Swaps need the consent of the people shown."
    ),
    "encoder_tool": f"FaceLab {__version__}",
}


def is_labelled(tags: dict[str, str]) -> bool:
    """True if container tags read back from a file carry the synthetic label."""
    return tags.get("synthetic") == "true" and "trainedAlgorithmicMedia" in tags.get("digital_source_type", "")


def label_png(data: bytes) -> bytes:
    """PNG bytes with the synthetic label as iTXt chunks (one per tag)."""
    from facelab.io.faceimage import embed_png_texts

    return embed_png_texts(data, {key.encode("latin-1"): value.encode("utf-8") for key, value in SYNTHETIC_TAGS.items()})


def png_labels(data: bytes) -> dict[str, str]:
    """The label tags found in PNG bytes."""
    from facelab.io.faceimage import read_png_text

    found = {}
    for key in SYNTHETIC_TAGS:
        raw = read_png_text(data, key.encode("latin-1"))
        if raw is not None:
            found[key] = raw.decode("utf-8")
    return found
