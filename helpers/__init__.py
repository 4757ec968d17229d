"""The course book's package: data, models, training, evaluation, metrics, plots, results.

Importing ``helpers`` does no work: no TensorFlow import, no network, no file access.
Import the submodules you need (``from helpers import data, metrics``).
"""

__all__ = ["config", "data", "models", "train", "evaluate", "metrics", "plots", "results"]
__version__ = "0.1.0"
