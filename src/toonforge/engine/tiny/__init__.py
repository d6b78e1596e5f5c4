"""Tiny stand-in weights: real architectures at tiny widths, random weights, built offline and
saved in the layouts real weights are published in (see TINY_MODELS.md). Torch-free at import;
the builders import torch themselves."""
