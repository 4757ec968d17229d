"""The course book's package: data, models, training, evaluation, metrics, plots, results.

Importing ``helpers`` does no work: no TensorFlow import, no network, no file access.
Import the submodules you need (``from helpers import data, metrics``).

It does set one environment variable, before TensorFlow can be imported:
``TF_ENABLE_ONEDNN_OPTS=1`` (unless you set it yourself). TensorFlow turns its oneDNN
convolutions on by default only on CPUs with AVX-512 VNNI or AMX; on an AVX2 laptop it falls
back to Eigen convolutions, which train the case-study models about 3-4 times slower
(``python benchmarks/run.py`` measures both). Set ``TF_ENABLE_ONEDNN_OPTS=0`` before
importing ``helpers`` to get TensorFlow's own default. It has no effect if TensorFlow was
imported first.
"""

import os as _os

_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__all__ = [
    "config",  # defaults in one place
    "data",  # folders -> file tables, person-aware split, decoded images
    "models",  # the five case-study models, by id
    "train",  # seeded training, validation threshold, one test pass, results
    "evaluate",  # the single ordered pass that yields paths, labels, scores
    "metrics",  # rates and AUC with 95% intervals, thresholds
    "plots",  # one function per figure kind
    "results",  # the results contract, written atomically
    "chapter",  # the steps every chapter takes
    "case_study",  # the original evaluation, reproduced on purpose
    "book",  # the runner: python -m helpers.book
]
__version__ = "0.1.0"
