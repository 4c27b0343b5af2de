"""Face detectors and landmarkers: contracts and registries in `base`, one module per plugin."""
