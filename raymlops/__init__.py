"""raymlops: the ML lifecycle on Ray from one Hydra config.

Heavy libraries (ray, torch, mlflow, onnx) are imported inside the functions that need them,
so ``import raymlops`` and ``--help`` stay fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
