"""Tests of helpers.case_study: the original evaluation's mistakes, reproduced on purpose, and
the tables that put its numbers beside the correct ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from helpers import case_study, config, evaluate, metrics, results

pytest.importorskip("keras")

import keras

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def brightness_model(size: int):
    """score = sigmoid(4 * (mean pixel / 255) - 2): brighter images (PNEUMONIA in the
    generated folders) score higher."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.full((3, 1), 4 / 3, "float32"), np.array([-2.0], "float32")])
    return model


# ---------------------------------------------------------------------------------------
# The mistakes
# ---------------------------------------------------------------------------------------


def test_two_shuffled_passes_pair_labels_with_other_images_and_unshuffled_ones_do_not(xray_folder):
    model = brightness_model(32)
    labels, outputs = case_study.case_study_test_pass(
        model, xray_folder.root, image_size=32, batch_size=4, shuffle=False
    )
    assert labels.tolist() == [0] * 8 + [1] * 8  # class folders in order, NORMAL first
    assert metrics.roc_auc_with_ci(labels, outputs).value == 1.0  # aligned: brightness separates
    shuffled_labels, shuffled_outputs = case_study.case_study_test_pass(
        model, xray_folder.root, image_size=32, batch_size=4, shuffle=True, seed=3
    )
    # The same outputs, in another order; each output's true label is known from the aligned pass.
    true_label = {round(float(o), 6): int(y) for o, y in zip(outputs, labels)}
    truth = np.array([true_label[round(float(o), 6)] for o in shuffled_outputs])
    assert sorted(shuffled_labels.tolist()) == sorted(labels.tolist())
    assert (shuffled_labels != truth).sum() > 0  # the second pass's labels belong to other images


def test_the_case_study_pass_reads_class_folders_named_in_any_case(xray_folder, tmp_path):
    import shutil

    copy = tmp_path / "chest_xray"
    shutil.copytree(xray_folder.root, copy)
    for split in ("train", "val", "test"):
        (copy / split / "NORMAL").rename(copy / split / "normal")
        (copy / split / "PNEUMONIA").rename(copy / split / "Pneumonia")
    labels, outputs = case_study.case_study_test_pass(
        brightness_model(32), copy, image_size=32, batch_size=4, shuffle=False
    )
    assert labels.tolist() == [0] * 8 + [1] * 8  # normal/ is label 0, Pneumonia/ label 1
    assert metrics.roc_auc_with_ci(labels, outputs).value == 1.0


@pytest.fixture
def dicom_copy(xray_folder, tmp_path, monkeypatch):
    """A DICOM copy of the small folder (random names, person in PatientID), own salt."""
    from dicom_folder import convert_folder

    from helpers.data import dicom

    monkeypatch.setenv(dicom.PERSON_SALT_FILE_VARIABLE, str(tmp_path / "salt"))

    def copy(keep_original=frozenset()):
        root = tmp_path / f"dicom-{len(keep_original)}"
        convert_folder(xray_folder.root, root, keep_original=frozenset(keep_original))
        return root

    return copy


def _truth_of(outputs, labels, shuffled_outputs):
    """The true label of each shuffled output, from an aligned pass (outputs are distinct)."""
    true_label = {round(float(o), 6): int(y) for o, y in zip(outputs, labels)}
    assert len(true_label) == len(labels)
    return np.array([true_label[round(float(o), 6)] for o in shuffled_outputs])


def test_on_a_dicom_folder_the_case_study_pass_reads_every_file_and_repeats_its_mistake(
    dicom_copy,
):
    from helpers import data

    root = dicom_copy()
    assert not case_study.keras_loader_reads_test_folder(root)
    model = brightness_model(32)
    labels, outputs = case_study.case_study_test_pass(
        model, root, image_size=32, batch_size=4, shuffle=False
    )
    assert labels.tolist() == [0] * 8 + [1] * 8  # every .dcm file, class folders in order
    # Aligned: each output is the model's on the book's decoding of the image of that label.
    table = data.list_split(root, "test").sort_values(["label", "path"], kind="stable")
    images = data.load_images([root / p for p in table.path], image_size=32)
    expected = model.predict(images.astype("float32"), verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5)
    assert metrics.roc_auc_with_ci(labels, outputs).value == 1.0
    shuffled_labels, shuffled_outputs = case_study.case_study_test_pass(
        model, root, image_size=32, batch_size=4, shuffle=True, seed=3
    )
    truth = _truth_of(outputs, labels, shuffled_outputs)
    assert sorted(shuffled_labels.tolist()) == sorted(labels.tolist())
    assert sorted(shuffled_outputs.tolist()) == pytest.approx(sorted(outputs.tolist()))
    assert (shuffled_labels != truth).sum() > 0  # the second pass's labels belong to other images


def test_a_test_folder_of_jpegs_and_dicom_files_loses_no_dicom_file(dicom_copy, xray_folder):
    kept = xray_folder.images_of("test")[::2]  # half the test images stay JPEGs
    root = dicom_copy(keep_original=kept)
    names = [p.suffix for p in (root / "test").rglob("*") if p.is_file()]
    assert names.count(".dcm") == 8 and names.count(".jpeg") == 8
    assert not case_study.keras_loader_reads_test_folder(root)
    labels, outputs = case_study.case_study_test_pass(
        brightness_model(32), root, image_size=32, batch_size=4, shuffle=False
    )
    assert labels.tolist() == [0] * 8 + [1] * 8
    assert metrics.roc_auc_with_ci(labels, outputs).value == 1.0


def test_the_book_decoded_dataset_shuffles_exactly_as_keras_loader_does(xray_folder):
    """On JPEGs, both readers: the same images in the same order on each of two passes."""
    assert case_study.keras_loader_reads_test_folder(xray_folder.root)
    folders = [xray_folder.root / "test" / name for name in ("NORMAL", "PNEUMONIA")]
    options = dict(image_size=32, batch_size=4, shuffle=True, seed=11)
    keras_ds = keras.utils.image_dataset_from_directory(
        folders[0].parent, class_names=["NORMAL", "PNEUMONIA"], verbose=False, **options
    )
    book_ds = case_study.book_decoded_test_dataset(xray_folder.root, **options)
    passes = []
    for ds in (keras_ds, book_ds):
        passes.append(
            [np.concatenate([x.numpy().reshape(len(x), -1) for x, _ in ds]) for _ in range(2)]
        )
    (keras_1, keras_2), (book_1, book_2) = passes
    assert not np.allclose(keras_1, keras_2, atol=20)  # reshuffled on the second pass
    for book, keras_pass in ((book_1, keras_1), (book_2, keras_2)):
        # Each image's nearest in the other reader's pass, pixel by pixel (the two resize
        # rules differ by a few grey levels, two images by their noise): at the same place.
        distances = ((book[:, None, :] - keras_pass[None, :, :]) ** 2).sum(axis=2)
        assert distances.argmin(axis=1).tolist() == list(range(16))
    ordered = case_study.book_decoded_test_dataset(
        xray_folder.root, image_size=32, batch_size=4, shuffle=False
    )
    assert [int(y) for _, ys in ordered for y in ys] == [0] * 8 + [1] * 8
    images, _ = next(iter(ordered))
    assert images.dtype == "float32" and images.shape == (4, 32, 32, 3)
    assert float(images.numpy().max()) > 1.0  # 0-255, as Keras' loader gives


def test_keras_loader_extensions_are_keras_own():
    from keras.src.utils.image_dataset_utils import ALLOWLIST_FORMATS

    assert case_study.KERAS_LOADER_EXTENSIONS == frozenset(ALLOWLIST_FORMATS)


def test_the_book_decoded_dataset_refuses_a_batch_size_that_is_not_positive(xray_folder):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        case_study.book_decoded_test_dataset(xray_folder.root, image_size=32, batch_size=0)


def test_batch_averaged_specificity_by_hand():
    y = [0, 0, 1, 0]
    p = [0.2, 0.8, 0.9, 0.1]
    # Batch 1: 1 of 2 negatives called NORMAL; batch 2: 1 of 1. Mean of ratios 0.75, while
    # over the test set 2 of 3 negatives are called NORMAL.
    assert case_study.batch_averaged_specificity(y, p, batch_size=2) == pytest.approx(
        0.75, abs=1e-6
    )
    assert metrics.rates_at_threshold(y, p, threshold=0.5)["specificity"].value == pytest.approx(
        2 / 3
    )
    # On logits the rounding cuts at the wrong place: logits -0.3 and 0.4 (probabilities
    # 0.43 and 0.60) give 1 - p = 1.3 and 0.6, both rounded to a true negative; cut
    # correctly, only the first is called NORMAL (specificity 0.5, not 1).
    assert case_study.batch_averaged_specificity(
        [0, 0], [-0.3, 0.4], batch_size=2
    ) == pytest.approx(1.0, abs=1e-6)


def test_sensitivity_at_specificity_tunes_its_threshold_on_the_data_it_is_given():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.35, 0.4, 0.5, 0.6])
    # At half the negatives called NORMAL, the threshold can sit just above 0.2: every
    # positive is then above it. A threshold fixed beforehand (0.5) finds only 2 of 4.
    assert case_study.keras_sensitivity_at_specificity(y, s, specificity=0.5) == 1.0
    assert metrics.rates_at_threshold(y, s, threshold=0.5)["sensitivity"].value == 0.5


# ---------------------------------------------------------------------------------------
# Reading the model chapters' results
# ---------------------------------------------------------------------------------------


def _write_results(results_dir, model_id, test_frame, metrics_json):
    with results.ResultsWriter(results_dir, model_id) as writer:
        writer.write_predictions("predictions_test.csv", test_frame)
        writer.write_json("metrics.json", metrics_json)


def test_results_path_names_the_chapter_to_run(tmp_path):
    _write_results(
        tmp_path, "model_2", pd.DataFrame({"path": ["a"], "label": [0], "score": [0.5]}), {}
    )
    assert (
        case_study.results_path(tmp_path, "model_2", "metrics.json")
        == tmp_path / "model_2" / "metrics.json"
    )
    with pytest.raises(FileNotFoundError, match="run the model_3 chapter first"):
        case_study.results_path(tmp_path, "model_3", "metrics.json")


def test_load_trained_loads_model_6_in_safe_mode(tmp_path):
    from chapter_models import make_model_function

    model = make_model_function("model_6")((16, 16, 1), width=4, augment="none")
    (tmp_path / "model_6").mkdir()
    model.save(tmp_path / "model_6" / "model.keras")
    results.write_json(tmp_path / "model_6" / "metrics.json", {"model_id": "model_6"})
    loaded, m = case_study.load_trained(tmp_path, "model_6")
    assert m == {"model_id": "model_6"}
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="run the model_5 chapter first"):
        case_study.load_trained(tmp_path, "model_5")


def test_logit_cut_table_cuts_a_logit_model_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(case_study, "show_warning", lambda message: pytest.fail(message))
    frame = pd.DataFrame(
        {
            "path": [f"test/x/{i}.jpeg" for i in range(6)],
            "label": [0, 0, 0, 1, 1, 1],
            "score": [0.55, 0.3, 0.7, 0.6, 0.65, 0.9],
        }
    )
    _write_results(
        tmp_path, "model_4", frame, {"threshold": {"threshold": 0.58}, "base_weights": "imagenet"}
    )
    table = case_study.logit_cut_table(tmp_path, "model_4")
    assert list(table.index) == [
        "original: logit >= 0.5",
        "probability >= 0.5",
        "probability >= validation threshold",
    ]
    assert (
        table.loc["original: logit >= 0.5", "probability threshold"]
        == f"{expit(0.5):.3f}"
        == "0.622"
    )
    # sigmoid(0.5) = 0.622: only 0.65, 0.7 and 0.9 are called PNEUMONIA.
    assert table.loc["original: logit >= 0.5", "sensitivity"].startswith(f"{2 / 3:.3f} (")
    assert table.loc["probability >= 0.5", "specificity"].startswith(f"{1 / 3:.3f} (")
    assert table.loc["probability >= validation threshold", "probability threshold"] == "0.580"
    assert table.loc["probability >= validation threshold", "sensitivity"].startswith("1.000 (")


def test_logit_cut_table_warns_when_the_scores_are_constant(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(case_study, "show_warning", shown.append)
    frame = pd.DataFrame({"path": ["a", "b"], "label": [0, 1], "score": [0.4, 0.4]})
    _write_results(
        tmp_path, "model_4", frame, {"threshold": {"threshold": 0.5}, "base_weights": "random"}
    )
    case_study.logit_cut_table(tmp_path, "model_4")
    assert len(shown) == 1 and "same score" in shown[0] and "random" in shown[0]


def test_reported_vs_corrected_covers_the_case_study_models_only():
    block = {
        "accuracy": 0.9,
        "accuracy_ci_low": 0.85,
        "accuracy_ci_high": 0.94,
        "auc": 0.97,
        "auc_ci_low": 0.95,
        "auc_ci_high": 0.99,
    }
    m = {"test": block, "test_at_0.5": {**block, "accuracy": 0.8}}
    table = case_study.reported_vs_corrected({"model_1": m, "model_6": m})
    assert list(table.index) == ["model_1"]
    low, high = config.CASE_STUDY_REPORTED_ACCURACY
    assert table.loc["model_1", "reported accuracy (case study)"].startswith(
        f"{low:.2f}-{high:.2f}"
    )
    assert table.loc["model_1", "accuracy at 0.5 (this book)"] == "0.800 (0.850-0.940)"
    assert table.loc["model_1", "AUC (this book)"] == "0.970 (0.950-0.990)"


def test_evaluation_ways_by_hand():
    y = np.array([0, 0, 1, 1])
    ways = {
        "aligned": (y, np.array([0.1, 0.4, 0.6, 0.9])),
        "misaligned": (y[::-1], np.array([0.1, 0.4, 0.6, 0.9])),
    }
    table = case_study.evaluation_ways(ways)
    assert table.loc["aligned", "AUC"] == 1.0 and table.loc["misaligned", "AUC"] == 0.0
    assert (
        table.loc["aligned", "accuracy at 0.5"] == 1.0
        and table.loc["misaligned", "accuracy at 0.5"] == 0.0
    )


def test_metric_helpers_table_sets_the_helpers_beside_the_correct_numbers():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 50)
    scores = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 80), 0, 1)
    correct = evaluate.Predictions("test", [f"p{i}" for i in range(80)], labels, scores)
    metrics_json = {"test": {"sensitivity": 0.96}}
    table = case_study.metric_helpers_table(correct, metrics_json, batch_size=16, seed=1)
    order = np.random.default_rng(1).permutation(80)
    assert table.loc["specificity, helper averaged over batches (0.5)", "value"] == round(
        case_study.batch_averaged_specificity(labels[order], scores[order], batch_size=16), 4
    )
    assert table.loc["specificity over the test set (0.5)", "value"] == round(
        metrics.rates_at_threshold(labels, scores, threshold=0.5)["specificity"].value, 4
    )
    assert table.loc["sensitivity at the validation threshold", "value"] == 0.96
    assert (
        table.loc["SensitivityAtSpecificity(0.5) on the test set", "what it is"]
        == "threshold tuned on the test set itself"
    )
    assert json.dumps(table.to_dict())  # plain values, ready for the chapter
