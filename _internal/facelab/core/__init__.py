"""Pure numpy/OpenCV functions: no disk, no prompts, no globals."""
