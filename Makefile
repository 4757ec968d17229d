# One command each: `make book` builds the book, `make test` runs every test (lint first);
# `make quick` is the short loop while editing (lint and the tests that start no browser,
# cluster, notebook or book build, see QUICK_TESTS).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CI-sized parameters for the notebook runs inside `make test` (BOOK_* variables replace a
# notebook's parameters cell, see helpers/parameters.py): one epoch at 32 px (MobileNetV2's
# smallest), model_6's ablation and model_7's search at one epoch per row (the ablation at
# 16 px), model_8's frozen member at 32 px, so that every chapter runs end to end in minutes;
# batches of 256, because at these sizes a step's time is TensorFlow's overhead per step,
# not the images.
CI_PARAMS := BOOK_EPOCHS=1 BOOK_IMAGE_SIZE=32 BOOK_ABLATION_IMAGE_SIZE=16 BOOK_ABLATION_EPOCHS=1 \
	BOOK_HEAD_EPOCHS=1 BOOK_SEARCH_EPOCHS=1 BOOK_FROZEN_IMAGE_SIZE=32 BOOK_BATCH_SIZE=256
CI_BUILD := $(CURDIR)/_build/ci
# What ruff (pinned in requirements.txt, configured in pyproject.toml) lints and formats.
LINTED := helpers tests benchmarks book
# The pytest markers (pyproject.toml) of the slow kinds, which `make quick` leaves out.
QUICK_TESTS := not (browser or cluster or built_book or notebook or slow)

.PHONY: setup lint quick test unit-test notebook-test notebooks-then-book book-test book clean lab

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name chest-xray-book --display-name "Python (chest X-ray book)"
	touch $(STAMP)

# The whole suite: lint; unit tests; every notebook once, cell by cell, under nbval (CI-sized),
# each saved with its outputs; the book rendered from those executed notebooks (nothing runs
# a second time) and its HTML checked page by page and in headless Chromium; then the book
# built by `jupyter-book build book` from the same executed notebooks (only the two chapters
# that read other chapters' results run again, under jupyter-book).
# The unit tests run beside the notebooks and then the book: each side keeps about one core
# busy (most of their time is Python: building, tracing and compiling small models, starting
# kernels), and they share no files (the unit tests' caches are temporary folders). Each
# side's output is printed in one piece when it ends (--output-sync). The two-worker cluster
# tests end the notebooks' side, which was the shorter by about 35 s, their length. (Three
# sides, the unit tests split by the markers of those that wait for other processes, took
# longer: 708 s against 662 s, one run each on one clone: more CPU lost to contention than
# idle time won.)
test: setup lint
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-test notebooks-then-book

# nbval's run, then the book rendered from it, then the cluster tests (one side of `make test`).
notebooks-then-book: setup
	$(MAKE) --no-print-directory notebook-test
	$(MAKE) --no-print-directory book-test
	$(PY) -m pytest -m cluster

# Every unit test but the cluster's (which notebooks-then-book runs), whatever its markers;
# `make unit-test UNIT_TESTS=` runs them all.
UNIT_TESTS := -m "not cluster"
unit-test: setup
	$(PY) -m pytest $(UNIT_TESTS)

# ruff's findings and any file ruff format would change fail the build.
lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

# Lint, then the unit tests without the slow kinds on both cores (pytest-xdist): about two
# minutes on two cores (one process: three).
quick: setup lint
	$(PY) -m pytest -n 2 -m "$(QUICK_TESTS)"

notebook-test: setup
	rm -rf $(CI_BUILD)/executed-by-nbval $(CI_BUILD)/results
	$(CI_PARAMS) BOOK_RESULTS_DIR=$(CI_BUILD)/results BOOK_SAVE_EXECUTED=$(CI_BUILD)/executed-by-nbval \
		$(PY) -m pytest --nbval-lax --nbval-kernel-startup-timeout=300 book/

# The runner renders nbval's executed notebooks and test_built_book.py checks that book;
# test_jupyter_book_build.py builds the book the other way, `jupyter-book build book` in a
# copy of the repository without results/, its cache primed with nbval's executed model
# chapters, so that only the chapters reading their results execute again (see its docstring).
book-test: setup
	$(PY) -m helpers.book --executed-from $(CI_BUILD)/executed-by-nbval --results-dir $(CI_BUILD)/results --output-dir $(CI_BUILD)
	$(CI_PARAMS) BOOK_HTML_DIR=$(CI_BUILD)/_build/html BOOK_SAVE_EXECUTED=$(CI_BUILD)/executed-by-nbval \
		BOOK_RESULTS_DIR=$(CI_BUILD)/results $(PY) -m pytest tests/test_built_book.py tests/test_jupyter_book_build.py

book: setup
	$(PY) -m helpers.book

# JupyterLab on this machine only (127.0.0.1), in book/, with the venv and its kernel
# chest-xray-book; it prints the URL with its login token. LAB_ARGS adds options, e.g.
# LAB_ARGS="--no-browser --port 8890".
lab: setup
	$(PY) -m jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)/book" $(LAB_ARGS)

clean:
	rm -rf _build results
