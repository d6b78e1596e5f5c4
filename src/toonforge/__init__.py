"""toonforge: a self-hosted server for generative image and video models."""

__version__ = "0.1.0"
