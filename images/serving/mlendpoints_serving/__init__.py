"""mlendpoints data plane: model fetch, model server, router and batch driver.

This package runs inside the serving image and never imports the control plane
(`mlendpoints`); the contract between them is CLI flags, env vars and files.
"""

__version__ = "0.1.0"
