"""FaceLab: a face-swap toolkit in the DeepFaceLab tradition, rebuilt on PyTorch.

Numbered entry scripts run one stage each over the fixed `workspace/` layout; see README.md.
"""

__version__ = "0.1.0"

import os as _os

# OpenCV decodes an image of up to 2^30 pixels by default: a small crafted file claiming 32k x 32k
# pixels would take gigabytes. 2^26 (67 Mpx, an 8K x 8K frame) is more than any frame or face.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 26))
