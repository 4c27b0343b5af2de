"""Everything that touches files: images, aligned faces, ffmpeg, checkpoints."""
