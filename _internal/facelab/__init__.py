"""FaceLab: a face-swap toolkit in the DeepFaceLab tradition, rebuilt on PyTorch.

Numbered entry scripts run one stage each over the fixed `workspace/` layout; see README.md.
"""

__version__ = "0.1.0"
