"""Tests of the helpers.data package itself: its names, its modules, their docstring examples."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import helpers.data

MODULES = sorted(m.name for m in pkgutil.iter_modules(helpers.data.__path__, "helpers.data."))


def test_the_package_has_one_module_per_job():
    assert MODULES == [
        "helpers.data.cache",
        "helpers.data.decode",
        "helpers.data.dicom",
        "helpers.data.errors",
        "helpers.data.folders",
        "helpers.data.load",
        "helpers.data.split",
        "helpers.data.summaries",
    ]


@pytest.mark.parametrize("name", MODULES)
def test_each_module_states_its_job_and_stays_short(name):
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip().splitlines()[0].endswith(".")
    assert len(inspect.getsource(module).splitlines()) <= 600


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # tests/test_docstrings.py only walks helpers' top-level modules, not this package's.
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_every_public_name_is_importable_from_the_package_and_documented():
    for name in helpers.data.__all__:
        value = getattr(helpers.data, name)
        if callable(value) and not name[0].isupper():
            assert inspect.getdoc(value), name
            assert value.__module__.startswith("helpers.data."), name
    # What the book, the helpers, the tests and the benchmarks use, by these names.
    used = {
        "BadImagePolicy",
        "ChestXrays",
        "ColorMode",
        "DataError",
        "DataWarning",
        "Split",
        "check_data_dir",
        "class_weights",
        "clear_decoded_cache",
        "data_fingerprint",
        "decode_image",
        "decoded_cache_dir",
        "describe_files",
        "download_kaggle",
        "duplicate_groups",
        "files_fingerprint",
        "find_layout_root",
        "group_id",
        "image_level_split",
        "leakage_summary",
        "list_split",
        "load_chest_xrays",
        "load_images",
        "official_counts",
        "person_aware_split",
        "persons_on_both_sides",
        "pneumonia_kind",
        "sample_indices",
        "size_summary",
        "split_summary",
        "split_table",
        "training_dataset",
        "write_split_csv",
    }
    assert used <= set(helpers.data.__all__)
