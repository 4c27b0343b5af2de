"""Torch building blocks: losses, optimisers, GPU augmentation."""
