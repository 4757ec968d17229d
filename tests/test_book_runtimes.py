"""helpers.book.runtimes: the run record of an executed notebook, its note and the appendix."""

import nbformat
import pytest

from helpers.book import runtimes


def _notebook(path, *sources):
    cells = [nbformat.v4.new_markdown_cell(sources[0])]
    cells += [nbformat.v4.new_code_cell(s) for s in sources[1:]]
    notebook = nbformat.v4.new_notebook(cells=cells)
    nbformat.write(notebook, str(path))
    return path


def test_record_travels_with_the_notebook_and_names_the_parameters_that_decide_time(tmp_path):
    path = _notebook(tmp_path / "model_1.ipynb", "(model-1)=\n# Model 1\n\ntext", "x = 1")
    assert runtimes.read_record(path) is None
    record = runtimes.record_run(
        path,
        57.14,
        executed_by="python -m helpers.book",
        parameters={"epochs": 10, "image_size": 128, "seed": 42, "data_dir": "/somewhere"},
        finished="2026-12-04 16:30",
    )
    assert runtimes.read_record(path) == record
    assert record["seconds"] == 57.1
    assert record["parameters"] == {"image_size": 128, "epochs": 10}  # not seed or paths
    assert record["machine"] == runtimes.machine_description()
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got -1"):
        runtimes.record_run(path, -1, executed_by="x")
    assert "cpu_seconds" not in record  # measured only where the runner started the kernel
    assert runtimes.record_run(path, 5, executed_by="x", cpu_seconds=4.04)["cpu_seconds"] == 4.0
    with pytest.raises(ValueError, match="cpu_seconds must be a finite number >= 0, got nan"):
        runtimes.record_run(path, 5, executed_by="x", cpu_seconds=float("nan"))


def test_note_goes_under_the_title_once_and_is_replaced_by_a_later_record(tmp_path):
    path = _notebook(tmp_path / "c.ipynb", "(c)=\n# Chapter C\n\nintro", "x = 1")
    assert not runtimes.annotate_run_time(path)  # no record: nothing added
    assert len(nbformat.read(str(path), 4).cells) == 2
    runtimes.record_run(path, 229.94, executed_by="pytest --nbval-lax", finished="t1")
    assert runtimes.annotate_run_time(path)
    runtimes.record_run(path, 12.0, executed_by="python -m helpers.book", finished="t2")
    assert runtimes.annotate_run_time(path)
    cells = nbformat.read(str(path), 4).cells
    notes = [c for c in cells if runtimes.NOTE_TAG in c.metadata.get("tags", [])]
    assert len(notes) == 1 and cells[1] is notes[0]  # right under the title cell
    assert "**12.0 s**" in notes[0].source and "t2" in notes[0].source
    assert "{ref}`run-times`" in notes[0].source


def test_minutes_are_shown_with_their_seconds():
    record = {"seconds": 229.9, "machine": "m", "executed_by": "e", "finished": "f"}
    assert "**3.8 min (229.9 s)**" in runtimes.run_time_note(record)


def test_page_lists_every_chapter_and_the_total_and_says_which_have_no_record(tmp_path):
    page = tmp_path / runtimes.PAGE_NAME
    page.write_text(f"# Run times\n\n{runtimes.PAGE_MARKER}\n\nafter\n")
    record = {"seconds": 60.0, "machine": "m", "executed_by": "e", "finished": "f"}
    table = runtimes.write_run_times_page(
        page, [("data", {**record, "seconds": 6.5}), ("model_1", record), ("model_2", None)]
    )
    text = page.read_text()
    assert table in text and runtimes.PAGE_MARKER not in text and text.endswith("after\n")
    assert "| {doc}`model_1` | 1.0 min (60.0 s) |" in table
    assert "| **all chapters** | **1.1 min (66.5 s)** |" in table
    assert "No run record for: model_2" in table


def test_a_replicate_follows_its_chapter_and_counts_in_the_total(tmp_path):
    page = tmp_path / runtimes.PAGE_NAME
    page.write_text(f"{runtimes.PAGE_MARKER}\n")
    record = {"seconds": 60.0, "machine": "m", "executed_by": "e", "finished": "f"}
    table = runtimes.write_run_times_page(
        page, [("model_1", record), ("model_1/seed_43", {**record, "seconds": 70.0})]
    )
    assert "| {doc}`model_1`, seed 43 (replicate) | 1.2 min (70.0 s) |" in table
    assert "| **all chapters** | **2.2 min (130.0 s)** |" in table


def test_the_whole_book_is_given_as_a_multiple_of_the_case_study_s_chapters(tmp_path):
    page = tmp_path / runtimes.PAGE_NAME
    page.write_text(f"{runtimes.PAGE_MARKER}\n")
    record = {"seconds": 60.0, "machine": "m", "executed_by": "e", "finished": "f"}
    rows = [("data", record), ("model_1", record), ("model_2", {**record, "seconds": 90.0})]
    table = runtimes.write_run_times_page(page, rows, case_study=["model_1", "model_2"])
    assert "({doc}`model_1`, {doc}`model_2`) ran in 2.5 min (150.0 s) together" in table
    assert "all chapters took **1.40 times** as long" in table
    # Without a record of every case-study chapter there is no multiple to give.
    page.write_text(f"{runtimes.PAGE_MARKER}\n")
    partial = runtimes.write_run_times_page(
        page, [*rows[:2], ("model_2", None)], case_study=["model_1", "model_2"]
    )
    assert "times** as long" not in partial
    assert "processor time" not in table  # the records hold no processor time


def test_the_multiple_is_given_in_processor_time_too_when_every_chapter_has_it(tmp_path):
    page = tmp_path / runtimes.PAGE_NAME
    page.write_text(f"{runtimes.PAGE_MARKER}\n")
    record = {"seconds": 60.0, "machine": "m", "executed_by": "e", "finished": "f"}
    rows = [
        ("model_1", {**record, "cpu_seconds": 100.0}),
        ("model_6", {**record, "seconds": 200.0, "cpu_seconds": 150.0}),
    ]
    table = runtimes.write_run_times_page(page, rows, case_study=["model_1"])
    assert "all chapters took **4.33 times** as long" in table
    assert "they used 1.7 min (100.0 s), and all chapters **2.50 times** that" in table


def test_page_without_its_marker_is_refused_by_name(tmp_path):
    page = tmp_path / "run_times.md"
    page.write_text("# Run times\n")
    with pytest.raises(ValueError, match="run_times.md lacks the line"):
        runtimes.write_run_times_page(page, [])


def test_one_machine_is_named_once_and_several_get_a_column(tmp_path):
    page = tmp_path / runtimes.PAGE_NAME
    record = {
        "seconds": 1.0,
        "machine": "2 CPU cores, Linux x86_64",
        "executed_by": "e",
        "finished": "f",
    }
    page.write_text(runtimes.PAGE_MARKER)
    same = runtimes.write_run_times_page(page, [("a", record), ("b", record)])
    assert same.startswith("Every chapter ran on 2 CPU cores, Linux x86_64.")
    assert "| machine |" not in same
    page.write_text(runtimes.PAGE_MARKER)
    other = {**record, "machine": "8 CPU cores, Linux aarch64"}
    mixed = runtimes.write_run_times_page(page, [("a", record), ("b", other)])
    assert "| machine |" in mixed and "| 8 CPU cores, Linux aarch64 |" in mixed
    assert not mixed.startswith("Every chapter")
