"""mlendpoints control plane: API models, operator, CLI."""

__version__ = "0.1.0"
