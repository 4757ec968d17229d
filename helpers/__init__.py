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

#: The package's layers, bottom first. A module imports modules of its own layer or lower
#: ones, never one above it, and no modules import each other in a circle
#: (``tests/test_package_imports.py`` checks both over every module, imports inside
#: functions included). A new module gets a place here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("files", "config", "chapters"),  # atomic writes, disk caches; constants; the chapters
    ("data", "leaks"),  # folders -> images, the person-aware split; shared images
    ("metrics", "bootstrap", "calibration"),  # numbers with person-level intervals
    ("layers", "imagenet", "features", "adapt", "explain", "train", "evaluate"),  # models
    ("plots", "report", "model_card"),  # what a chapter shows and glues; the model card
    # steps: what the chapters run
    ("results", "parameters", "comparison", "case_study", "ablation", "finetune", "replicates"),
    ("ensemble",),  # model_8: chapters' models combined (reads ablation's choice rule)
    ("predict", "book"),  # the entry points: python -m helpers.predict, helpers.book
)

_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__all__ = [
    "files",  # atomic writes and size-capped disk caches: the bottom layer
    "config",  # project constants: paths, class names, splits, image formats
    "chapters",  # the book's chapters from _toc.yml and their metadata: which are models
    "parameters",  # the chapters' parameters: names, types, rules, help (defaults: each notebook)
    "data",  # folders, person-aware split, decoding and its cache, datasets, data tables
    "leaks",  # images shared between the train, val and test folders
    "train",  # seeds, device strategy, fit on the person-aware split
    "evaluate",  # validation scores, threshold on validation, one test pass, metrics
    "metrics",  # rates and AUC with 95% intervals, thresholds, paired tests
    "bootstrap",  # person-level (cluster) bootstrap intervals and paired differences
    "calibration",  # Brier, ECE, reliability, temperature scaling
    "explain",  # Grad-CAM
    "adapt",  # batch-norm statistics re-estimated on unlabeled images (AdaBN)
    "imagenet",  # ImageNet MobileNetV2 weights, offline, from the embedded TFLite file
    "layers",  # the book's own Keras layers
    "plots",  # one function per figure kind
    "report",  # what a chapter shows: tables, figure panels, glued numbers
    "model_card",  # MODEL_CARD.md beside every saved model, written from its metrics.json
    "results",  # the results contract, written atomically
    "comparison",  # the models side by side, paired tests, conclusions
    "replicates",  # a recipe trained again with other seeds: layout, spread, verdicts
    "ablation",  # model_6's validation-only ablation
    "ensemble",  # model_8: chapters' models and a frozen member combined into one model
    "case_study",  # the original evaluation, reproduced on purpose
    "predict",  # python -m helpers.predict: score your own images
    "book",  # the runner: python -m helpers.book
]
__version__ = "0.1.0"
