# One command each: `make book` builds the book, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CI-sized parameters for the notebook runs inside `make test` (see helpers/chapter.py):
# one epoch at 64 px (model_6's ablation at 32 px) checks that every chapter runs end to end,
# in minutes.
CI_PARAMS := BOOK_EPOCHS=1 BOOK_IMAGE_SIZE=64 BOOK_ABLATION_IMAGE_SIZE=32
CI_BUILD := $(CURDIR)/_build/ci

.PHONY: setup test unit-test notebook-test book-test book clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The whole suite: unit tests, the notebooks under nbval, and one CI-sized book build whose
# HTML is then checked page by page (and in headless Chromium when it is installed).
test: setup unit-test notebook-test book-test

unit-test: setup
	$(PY) -m pytest

# model_6's ablation (seven short trainings) runs in book-test; here it is left out.
notebook-test: setup
	$(CI_PARAMS) BOOK_ABLATION_EPOCHS=0 BOOK_RESULTS_DIR=$(CI_BUILD)/nbval-results $(PY) -m pytest --nbval-lax book/

book-test: setup
	$(PY) -m helpers.book -p epochs 1 -p image_size 64 -p ablation_image_size 32 --results-dir $(CI_BUILD)/results --output-dir $(CI_BUILD)
	BOOK_HTML_DIR=$(CI_BUILD)/_build/html $(PY) -m pytest tests/test_built_book.py

book: setup
	$(PY) -m helpers.book

clean:
	rm -rf _build results
