"""Parameters are checked up front in every notebook (:func:`helpers.chapter.setup`).

The runner checks names and values before any notebook runs (tests/test_book.py); these
tests cover a notebook run on its own: in Jupyter, under nbval with ``BOOK_*`` overrides,
or by papermill directly.
"""

from __future__ import annotations

import sys
import types

import nbformat
import pytest

from helpers import chapter, config


@pytest.fixture(autouse=True)
def no_book_overrides(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("BOOK_"):
            monkeypatch.delenv(name)


def _setup(**overrides):
    values = dict(
        data_dir=None, results_dir=None, image_size=32, epochs=1, batch_size=8, seed=0,
        on_bad_image="stop",
    )
    values.update(overrides)
    return chapter.setup("model_1", **values)


def test_setup_accepts_the_defaults_and_resolves_paths():
    params = _setup()
    assert params["data_dir"] == str(config.DEFAULT_DATA_DIR.resolve())
    assert params["results_dir"] == str(config.DEFAULT_RESULTS_DIR)
    assert params["model_id"] == "model_1"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochz": 3}, r"unknown parameter\(s\) \['epochz'\]; allowed: data_dir"),
        ({"image_size": 0}, "image_size must be a whole number of at least 1, got 0"),
        ({"epochs": 0}, "epochs must be a whole number of at least 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a whole number of at least 1, got 2.5"),
        ({"seed": True}, "seed must be a whole number of at least 0, got True"),
        ({"on_bad_image": "ignore"}, "on_bad_image must be one of 'stop', 'skip', got 'ignore'"),
        ({"base_weights": "/no/such/weights.h5"}, "base_weights must be 'imagenet', None, or an existing MobileNetV2 weights file"),
        ({"target_sensitivity": 1.5}, "target_sensitivity must be a number above 0 and at most 1, got 1.5"),
        ({"data_dir": "/no/such/folder"}, "data folder /no/such/folder does not exist"),
        ({"strategy": "tpu"}, "strategy must be one of 'default', 'mirrored', 'multi_worker', got 'tpu'"),
        ({"results_dir": __file__}, "results_dir must be a folder path .it need not exist yet., not a file"),
    ],
)
def test_setup_rejects_unknown_names_and_impossible_values(overrides, message):
    with pytest.raises(Exception, match=message):
        _setup(**overrides)


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model id .model_9.; known ids: model_1"):
        chapter.setup("model_9", epochs=1)


def test_environment_overrides_are_typed_and_checked(monkeypatch):
    monkeypatch.setenv("BOOK_EPOCHS", "3")
    monkeypatch.setenv("BOOK_ON_BAD_IMAGE", "skip")
    params = _setup()
    assert params["epochs"] == 3 and params["on_bad_image"] == "skip"
    monkeypatch.setenv("BOOK_EPOCHS", "three")
    with pytest.raises(ValueError, match="BOOK_EPOCHS='three' is not a valid int"):
        _setup()


def test_a_misspelt_environment_override_is_an_error(monkeypatch):
    monkeypatch.setenv("BOOK_EPOCH", "1")
    with pytest.raises(ValueError, match="unknown environment variable.*BOOK_EPOCH;.*BOOK_EPOCHS"):
        _setup()


def test_parameters_papermill_injects_must_be_declared(monkeypatch):
    # What IPython's history holds after papermill injected "-p epochz 3".
    shell = types.SimpleNamespace(user_ns={"In": ["", "# Parameters\nepochz = 3\nepochs = 1\n"]})
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    with pytest.raises(ValueError, match=r"papermill passed parameter\(s\) \['epochz'\]"):
        _setup()
    shell.user_ns["In"] = ["", "# Parameters\nepochs = 1\n"]
    assert _setup()["epochs"] == 1


def test_papermill_run_with_an_undeclared_parameter_fails_in_the_notebook(tmp_path):
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params_cell = nbformat.v4.new_code_cell("epochs = 1")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell(
        "from helpers import chapter\nchapter.setup(None, epochs=epochs)\nprint('set up')"
    )]
    source = tmp_path / "tiny.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(tmp_path / "ok.ipynb"), parameters={"epochs": 2},
                               progress_bar=False, cwd=str(tmp_path))
    with pytest.raises(papermill.PapermillExecutionError, match="papermill passed parameter.*epochz"):
        papermill.execute_notebook(str(source), str(tmp_path / "bad.ipynb"), parameters={"epochz": 2},
                                   progress_bar=False, cwd=str(tmp_path))


def test_skipped_images_are_shown_in_the_chapter_not_only_on_stderr(make_xrays, monkeypatch, tmp_path):
    from helpers import data

    folder = make_xrays()
    bad = folder.root / "train" / "PNEUMONIA" / "person1_bacteria_0.jpeg"
    bad.write_bytes(bad.read_bytes()[:200])
    data.clear_decoded_cache()
    shown = []
    monkeypatch.setattr(chapter, "_display_warning", shown.append)
    params = chapter.setup(
        None, data_dir=str(folder.root), results_dir=str(tmp_path / "results"), image_size=16,
        epochs=1, batch_size=8, seed=0, on_bad_image="skip",
    )
    xrays = chapter.load_data(params)
    assert len(shown) == 1 and "train/PNEUMONIA/person1_bacteria_0.jpeg" in shown[0]
    assert [path for path, _ in xrays.skipped] == ["train/PNEUMONIA/person1_bacteria_0.jpeg"]


def _fake_results(seed=0):
    """Metrics and test predictions of three models on the same 40 images."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.array([0] * 20 + [1] * 20)
    paths = [f"test/{'PNEUMONIA' if l else 'NORMAL'}/person{i}_{'virus' if i % 2 else 'bacteria'}_{i}.jpeg"
             for i, l in enumerate(y)]
    scores = {
        "model_1": np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.2, 40), 0, 1),
        "model_2": np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, 40), 0, 1),
        "model_3": np.full(40, 0.7),
    }
    val_auc = {"model_1": 0.80, "model_2": 0.95, "model_3": 0.5}  # model_2 best on validation
    all_metrics = {m: {"val": {"auc": val_auc[m]}, "threshold": {"threshold": 0.5}} for m in scores}
    preds = {m: pd.DataFrame({"path": paths, "label": y, "score": s}) for m, s in scores.items()}
    return all_metrics, preds


def test_reference_model_is_chosen_on_validation_not_test():
    all_metrics, preds = _fake_results()
    assert chapter.reference_model(all_metrics) == "model_2"  # although model_1 is better on test
    table = chapter.paired_tests(all_metrics, preds)
    assert table.index.name.startswith("against model_2")
    assert list(table.index) == ["model_1", "model_3"]
    from helpers import metrics

    y, s1, s2 = preds["model_1"]["label"], preds["model_1"]["score"], preds["model_2"]["score"]
    expected = metrics.delong_test(y, s1, s2)
    assert table.loc["model_1", "DeLong p"] == chapter.p_value_text(expected.p_value)
    mc = metrics.mcnemar_test(y, metrics.predict_labels(s1, 0.5), metrics.predict_labels(s2, 0.5))
    assert table.loc["model_1", "only this model right"] == mc.detail["only_a_right"]
    assert table.loc["model_1", "McNemar p"] == chapter.p_value_text(mc.p_value)


def test_paired_tests_refuse_predictions_on_other_images():
    all_metrics, preds = _fake_results()
    preds["model_3"] = preds["model_3"].iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="model_3's test predictions are not on model_2's images"):
        chapter.paired_tests(all_metrics, preds)


def _block(**values):
    block = {}
    for name, value in values.items():
        block.update({name: value, f"{name}_ci_low": value - 0.01, f"{name}_ci_high": value + 0.01})
    return block


def test_validation_test_gap_and_targets_are_read_from_the_metrics():
    rates = dict(sensitivity=0.95, ppv=0.9, npv=0.8)
    m = {"val": _block(auc=0.998, specificity=0.97, **rates),
         "test": _block(auc=0.96, specificity=0.80, **rates)}
    gap = chapter.validation_test_gap(m)
    assert gap.loc["auc", "validation"] == "0.998 (0.988-1.008)"
    assert gap.loc["auc", "test minus validation"] == "-0.038"
    assert gap.loc["specificity", "test minus validation"] == "-0.170"
    targets = chapter.target_table(m)
    assert list(targets["met"]) == ["no", "yes", "no"]  # auc 0.96 < 0.975, sens 0.95, spec 0.80 < 0.85
    assert targets.loc["specificity", "estimate minus target"] == "-0.050"


def test_ablation_budget_never_exceeds_the_final_model():
    params = {"image_size": 128, "epochs": 12, "ablation_image_size": 64, "ablation_epochs": 3}
    assert chapter.ablation_budget(params) == {"image_size": 64, "epochs": 3}
    params.update(image_size=32, epochs=1)
    assert chapter.ablation_budget(params) == {"image_size": 32, "epochs": 1}


def test_model_chapters_load_their_models_colour_mode(xray_folder, tmp_path):
    params = chapter.setup(
        "model_6", data_dir=str(xray_folder.root), results_dir=str(tmp_path), image_size=32,
        epochs=1, batch_size=8, seed=0, ablation_epochs=0, ablation_image_size=32,
    )
    assert chapter.load_data(params).train.images.shape[-1] == 1
    params["model_id"] = "model_1"
    assert chapter.load_data(params).train.images.shape[-1] == 3
    with pytest.raises(ValueError, match="ablation_epochs must be a whole number of at least 0"):
        chapter.setup("model_6", ablation_epochs=-1)


def test_ablation_verdict_says_whether_the_choice_beats_the_recipe_beyond_noise():
    import pandas as pd

    table = pd.DataFrame(
        {"val AUC": [0.95, 0.99, 0.96], "val AUC low": [0.94, 0.985, 0.94], "val AUC high": [0.96, 0.995, 0.98]},
        index=["model_6", "RGB input", "no augmentation"],
    )
    assert "recipe is kept" in chapter.ablation_verdict(table, "model_6")
    clear = chapter.ablation_verdict(table, "RGB input")
    assert "0.9900 against 0.9500" in clear and "do not overlap" in clear
    assert "may be chance" in chapter.ablation_verdict(table, "no augmentation")


def test_not_adopted_text_gives_each_measured_only_row_against_the_recipe():
    import pandas as pd

    table = pd.DataFrame(
        {"val AUC": [0.95, 0.96, 0.9725], "adoptable": ["yes", "yes", "five forward passes"]},
        index=["model_6", "RGB input", "test-time augmentation"],
    )
    assert chapter.not_adopted_text(table) == "test-time augmentation: 0.9725 (+0.0225 against the recipe)"
    assert chapter.not_adopted_text(table.iloc[:2]) == "every row could be adopted"
