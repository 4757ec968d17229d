"""The inference command, ``python -m helpers.predict``, on good and bad files and folders."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

import keras
from chapter_models import chapter_model, evaluate_like_a_chapter
from PIL import Image

from helpers import data, predict, train
from helpers.adapt import MIN_ADAPT_IMAGES, adapt_batchnorm
from helpers.evaluate import predict_split

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def trained(xray_folder, tmp_path_factory):
    results = tmp_path_factory.mktemp("predict-results")
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)
    model = chapter_model("model_1", image_size=32, seed=0)  # the chapter's own cells
    run = train.fit(model, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    _, folder = evaluate_like_a_chapter("model_1", model, run, xrays, results)
    return folder, xrays


def run_main(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = predict.main(list(map(str, argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_scores_match_the_book_evaluation_and_the_stored_threshold(trained):
    folder, xrays = trained
    paths = [xrays.test.data_dir / p for p in xrays.test.paths[:4]]
    code, out, err = run_main("--model", folder, "--json", *paths)
    assert code == 0, err
    report = json.loads(out)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert report["threshold"] == metrics["threshold"]["threshold"]
    expected = predict_split(keras.saving.load_model(folder / "model.keras"), xrays.test).scores[:4]
    got = np.array([p["probability"] for p in report["predictions"]])
    assert got == pytest.approx(expected, abs=1e-6)
    for p in report["predictions"]:
        assert p["decision"] == (
            "PNEUMONIA" if p["probability"] >= report["threshold"] else "NORMAL"
        )


def test_table_output_has_one_row_per_image(trained):
    folder, xrays = trained
    paths = [xrays.test.data_dir / p for p in xrays.test.paths[:2]]
    code, out, _ = run_main("--model", folder, *paths)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and "p(PNEUMONIA)" in lines[0]
    assert str(paths[0]) in lines[1] and lines[1].split()[-1] in ("NORMAL", "PNEUMONIA")


def test_bad_files_are_named_the_others_scored_and_the_exit_status_is_1(trained, tmp_path):
    folder, xrays = trained
    good = xrays.test.data_dir / xrays.test.paths[0]
    text = tmp_path / "notes.jpeg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpeg"
    truncated.write_bytes(good.read_bytes()[:300])
    missing = tmp_path / "ghost.png"
    code, out, err = run_main("--model", folder, "--json", missing, text, good, truncated)
    assert code == 1
    report = json.loads(out)
    assert [p["path"] for p in report["predictions"]] == [str(good)]
    assert {e["path"] for e in report["errors"]} == {str(missing), str(text), str(truncated)}
    assert f"{missing}: image file {missing} does not exist" in err
    assert f"{text} is not an image file" in err
    assert "corrupt or truncated" in err
    assert "3 of 4 image(s) could not be scored" in err


def test_gradcam_writes_one_overlay_per_scored_image(trained, tmp_path):
    folder, xrays = trained
    paths = [xrays.test.data_dir / p for p in xrays.test.paths[:3]]
    code, _, err = run_main("--model", folder, "--gradcam", tmp_path / "heat", *paths)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "heat").iterdir()) == sorted(
        f"{p.stem}.gradcam.png" for p in paths
    )


def test_unusable_model_folders_exit_2_with_a_clear_message(trained, tmp_path):
    folder, xrays = trained
    image = xrays.test.data_dir / xrays.test.paths[0]
    code, _, err = run_main("--model", tmp_path / "nowhere", image)
    assert code == 2 and "model.keras does not exist" in err

    inconsistent = tmp_path / "inconsistent"
    shutil.copytree(folder, inconsistent)
    metrics = json.loads((inconsistent / "metrics.json").read_text())
    metrics["parameters"]["image_size"] = 64
    (inconsistent / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = run_main("--model", inconsistent, image)
    assert code == 2 and "takes images of shape (32, 32, 3)" in err and "inconsistent" in err

    unsafe = tmp_path / "unsafe"
    shutil.copytree(folder, unsafe)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(unsafe / "model.keras")
    code, _, err = run_main("--model", unsafe, image)
    assert code == 2 and "safe mode will not run" in err


@pytest.mark.slow
def test_command_line_runs_as_a_module(trained):
    folder, xrays = trained
    image = xrays.test.data_dir / xrays.test.paths[0]
    result = subprocess.run(
        [sys.executable, "-m", "helpers.predict", "--model", str(folder), str(image)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert str(image) in result.stdout


# ---------------------------------------------------------------------------------------
# --adapt-to FOLDER: batch-norm statistics re-estimated on a folder's images (no labels)
# ---------------------------------------------------------------------------------------

ADAPT_SIZE = 16


def write_model_folder(folder, model, model_id):
    """A results folder as predict reads it: model.keras and the metrics.json fields it uses."""
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "model_id": model_id,
                "parameters": {"image_size": ADAPT_SIZE, "color_mode": "rgb"},
                "threshold": {"threshold": 0.5, "method": "fixed for the test"},
            }
        )
    )
    return folder


def tiny_model(with_batchnorm):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((ADAPT_SIZE, ADAPT_SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1.0 / 255)(inputs))
    if with_batchnorm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def write_images(folder, count, *, seed, level):
    """``count`` small PNGs spread over nested subfolders (the folder is read recursively)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("a" if i % 2 else "b/c") / f"scan_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(level, 30, size=(20, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def adapt_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt-to")
    model = tiny_model(with_batchnorm=True)
    # Training statistics far from those of the folder's images, as for another collection.
    model.get_layer("bn").moving_mean.assign(np.full(4, 2.0, np.float32))
    model.get_layer("bn").moving_variance.assign(np.full(4, 0.01, np.float32))
    bn_folder = write_model_folder(root / "tiny_bn", model, "tiny_bn")
    plain_folder = write_model_folder(
        root / "tiny_plain", tiny_model(with_batchnorm=False), "tiny_plain"
    )
    images = root / "hospital_b"
    paths = write_images(images, MIN_ADAPT_IMAGES + 4, seed=0, level=90)
    (images / "a" / "notes.txt").write_text("not an image, and not named like one")
    (images / "a" / ".hidden.png").write_bytes(b"hidden files are skipped")
    (images / "b" / "broken.jpeg").write_text("named like an image, but not one")
    return bn_folder, plain_folder, images, paths


def test_adapt_to_scores_with_statistics_re_estimated_on_the_folder(adapt_setup):
    bn_folder, _, images, paths = adapt_setup
    scored = paths[:3]
    code, out, err = run_main("--model", bn_folder, "--json", "--adapt-to", images, *scored)
    assert code == 0, err
    report = json.loads(out)
    n = MIN_ADAPT_IMAGES + 4  # broken.jpeg is left out, notes.txt and .hidden.png are not images
    assert report["statistics"] == f"batch-norm statistics re-estimated on {n} images of {images}"
    assert report["adapted_layers"] == ["bn"]
    assert "note: 1 file(s) below" in err and "broken.jpeg" in err

    # The same as adapting by hand on the folder's images, decoded as predict decodes them.
    folder_images = np.stack(
        [data.decode_image(p, image_size=ADAPT_SIZE, color_mode="rgb") for p in sorted(paths)]
    )
    adapted = adapt_batchnorm(keras.saving.load_model(bn_folder / "model.keras"), folder_images)
    batch = np.stack(
        [data.decode_image(p, image_size=ADAPT_SIZE, color_mode="rgb") for p in scored]
    )
    expected = adapted.predict(batch, verbose=0).ravel()
    got = np.array([p["probability"] for p in report["predictions"]])
    assert got == pytest.approx(expected, abs=1e-6)

    code, out, _ = run_main("--model", bn_folder, "--json", *scored)
    plain = json.loads(out)
    assert (
        code == 0 and plain["statistics"] == "training statistics" and plain["adapted_layers"] == []
    )
    assert np.abs(np.array([p["probability"] for p in plain["predictions"]]) - got).max() > 0.01


def test_adapt_to_table_output_says_which_statistics_were_used(adapt_setup):
    bn_folder, _, images, paths = adapt_setup
    code, out, err = run_main("--model", bn_folder, "--adapt-to", images, *paths[:2])
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3, err
    assert (
        f"batch-norm statistics re-estimated on {MIN_ADAPT_IMAGES + 4} images of {images}"
        in lines[0]
    )
    code, out, _ = run_main("--model", bn_folder, *paths[:2])
    assert code == 0 and "training statistics" in out.splitlines()[0]


def test_adapt_to_refuses_a_folder_of_too_few_readable_images(adapt_setup, tmp_path):
    bn_folder, _, _, paths = adapt_setup
    small = tmp_path / "small"
    write_images(small, 5, seed=1, level=90)
    (small / "b" / "cut.png").write_bytes(b"\x89PNG\r\n")
    code, out, err = run_main("--model", bn_folder, "--adapt-to", small, paths[0])
    assert code == 2 and out == ""
    assert (
        f"--adapt-to: {small} holds 5 readable image(s) (of 6 image file(s) found); at least "
        f"{MIN_ADAPT_IMAGES} are needed, because batch-norm statistics measured on a few images "
        "are noise"
    ) in err
    for not_a_folder in (tmp_path / "nowhere", paths[0]):
        code, _, err = run_main("--model", bn_folder, "--adapt-to", not_a_folder, paths[0])
        assert code == 2 and f"--adapt-to: folder {not_a_folder} does not exist or is not" in err
        # The Python function's own error names the folder, not the command line's flag.
        with pytest.raises(predict.AdaptFolderError, match="^folder .* is not a folder"):
            predict.adapt_to_folder(predict.load_model_folder(bn_folder), not_a_folder)


def test_adapt_to_with_a_model_without_batchnorm_exits_2(adapt_setup):
    _, plain_folder, images, paths = adapt_setup
    code, out, err = run_main("--model", plain_folder, "--adapt-to", images, paths[0])
    assert code == 2 and out == ""
    assert "has no BatchNormalization layer" in err and "nothing to adapt" in err


def test_adapt_to_decides_at_the_chapters_adapted_threshold(adapt_setup, tmp_path):
    """With --adapt-to, the decision uses the threshold the chapter chose on validation
    scored by the adapted model (metrics.json["adapted"]); without it, the standard one."""
    import shutil

    bn_folder, _, images, paths = adapt_setup
    folder = tmp_path / "tiny_bn_adapted"
    shutil.copytree(bn_folder, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["adapted"] = {"threshold": {"threshold": 0.25, "method": "sensitivity"}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    code, out, err = run_main("--model", folder, "--json", "--adapt-to", images, *paths[:2])
    assert code == 0, err
    assert json.loads(out)["threshold"] == 0.25
    code, out, err = run_main("--model", folder, "--json", *paths[:2])
    assert code == 0 and json.loads(out)["threshold"] == 0.5


# ---------------------------------------------------------------------------------------
# Folders in, a CSV out: scored in batches, one row per file, bad files named
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_folder(xray_folder, tmp_path_factory):
    """A folder as a site exports it: nested, JPEG, PNG and DICOM mixed, extensions in
    any case, a corrupt file, files and folders that are no images; and what it holds."""
    from dicom_folder import convert_folder

    root = tmp_path_factory.mktemp("site") / "exports"
    test = [p for p in xray_folder.images if p.startswith("test/")]
    headers = convert_folder(
        xray_folder.root / "test", root / "2024" / "dicom", keep_original=frozenset()
    )
    for i, relative in enumerate(test[:6]):
        source = xray_folder.root / relative
        target = root / "2023" / f"day{i % 2}" / Path(relative).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            Image.open(source).save(target.with_suffix(".PNG"))
        else:
            shutil.copy(source, target.with_suffix(".JPG"))
    (root / "2023" / "day0" / "cut.jpeg").write_bytes(
        (xray_folder.root / test[0]).read_bytes()[:200]
    )
    (root / "2023" / "notes.txt").write_text("not an image")
    (root / "2023" / ".hidden.png").write_bytes(b"hidden")
    for skipped in ("__MACOSX", ".thumbnails"):
        shutil.copytree(root / "2023" / "day1", root / skipped / "day1")
    return root, headers


def expected_names(root):
    """The image files a site folder holds, relative, by the loader's rules (written out)."""
    names = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        skipped = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
        if (
            path.is_file()
            and not skipped
            and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm")
        ):
            names.append(relative.as_posix())
    return sorted(names)


def test_score_folder_gives_one_row_per_image_file_found_at_any_depth(trained, site_folder):
    folder, _ = trained
    root, headers = site_folder
    frame = predict.score_folder(folder, root, batch_size=4, workers=2)
    assert list(frame.columns) == list(predict.SCORE_COLUMNS)
    assert frame["path"].tolist() == expected_names(root)
    assert len(headers) > 8 and all(f"2024/dicom/{name}" in set(frame.path) for name in headers)
    bad = frame[frame["error"].notna()]
    assert bad["path"].tolist() == ["2023/day0/cut.jpeg"]
    assert "corrupt or truncated" in bad["error"].iloc[0]
    assert bad[["probability", "decision"]].isna().all(axis=None)
    good = frame[frame["error"].isna()]
    threshold = json.loads((folder / "metrics.json").read_text())["threshold"]["threshold"]
    assert (
        good["decision"] == np.where(good["probability"] >= threshold, "PNEUMONIA", "NORMAL")
    ).all()
    # The same scores as the whole folder scored in one batch, image by image.
    loaded = predict.load_model_folder(folder)
    predictions, errors = predict.predict_images(
        loaded, [root / p for p in good["path"]], batch_size=1000
    )
    assert not errors
    assert [p.probability for p in predictions] == pytest.approx(
        good["probability"].tolist(), abs=1e-6
    )


def test_the_model_never_sees_more_than_one_batch(trained, site_folder, monkeypatch):
    from helpers import evaluate

    folder, _ = trained
    root, _ = site_folder
    seen, real = [], evaluate.model_outputs
    monkeypatch.setattr(
        evaluate,
        "model_outputs",
        lambda model, images, **kw: seen.append(len(images)) or real(model, images, **kw),
    )
    frame = predict.score_folder(folder, root, batch_size=3)
    assert max(seen) <= 3 and sum(seen) == frame["error"].isna().sum()


def test_the_command_writes_the_csv_names_bad_files_and_the_model_card(
    trained, site_folder, tmp_path
):
    folder, _ = trained
    root, _ = site_folder
    scores = tmp_path / "out" / "scores.csv"
    code, out, err = run_main("--model", folder, root, "--csv", scores, "--batch-size", "5")
    assert code == 1 and out == ""
    written = pd.read_csv(scores)
    expected = predict.score_folder(folder, root)
    assert written["path"].tolist() == expected["path"].tolist() == expected_names(root)
    assert written["probability"].to_numpy() == pytest.approx(
        expected["probability"], abs=1e-6, nan_ok=True
    )
    assert written["error"].notna().sum() == 1
    assert f"error: 2023/day0/cut.jpeg: {root}/2023/day0/cut.jpeg is a corrupt" in err
    assert f"1 of {len(written)} image(s) could not be scored" in err
    assert f"model card: {folder / 'MODEL_CARD.md'}" in err
    assert "limits: not a medical device" in err
    assert f"wrote {scores}: {len(written)} row(s), {len(written) - 1} scored" in err
    # With a file beside the folder, each row names its file with the folder as given.
    image = next(root.rglob("*.JPG"))
    code, out, _ = run_main("--model", folder, "--json", root / "2023", image)
    report = json.loads(out)
    assert report["predictions"][0]["path"].startswith(f"{root / '2023'}/day0/")
    assert report["predictions"][-1]["path"] == str(image)


def test_a_folder_that_is_missing_or_holds_no_image_exits_2_and_writes_nothing(trained, tmp_path):
    folder, _ = trained
    empty = tmp_path / "empty"
    (empty / "sub" / "__MACOSX").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no image here")
    (empty / "sub" / "__MACOSX" / "scan.jpeg").write_bytes(b"resource fork")
    scores = tmp_path / "scores.csv"
    for given, said in ((tmp_path / "nowhere", "does not exist"), (empty, "holds no image files")):
        code, out, err = run_main("--model", folder, given, "--csv", scores)
        assert code == 2 and out == "" and f"{given}" in err and said in err, err
        assert "nothing was scored" in err and not scores.exists()
        with pytest.raises(data.DataError, match=said):
            predict.score_folder(folder, given)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temporary files


def test_a_folder_of_corrupt_files_gives_a_row_each_with_its_reason(trained, tmp_path):
    folder, xrays = trained
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "cut.jpeg").write_bytes(
        (xrays.test.data_dir / xrays.test.paths[0]).read_bytes()[:100]
    )
    (bad / "text.png").write_text("not an image")
    (bad / "a" / "report.dcm").write_text("Findings: none.")
    scores = tmp_path / "scores.csv"
    code, _, err = run_main("--model", folder, bad, "--csv", scores)
    written = pd.read_csv(scores)
    assert code == 1 and "3 of 3 image(s) could not be scored" in err
    assert written["path"].tolist() == ["a/cut.jpeg", "a/report.dcm", "text.png"]
    assert written["probability"].isna().all() and written["decision"].isna().all()
    reasons = written["error"].tolist()
    assert "corrupt or truncated" in reasons[0] and "not a DICOM file" in reasons[1]
    assert "not an image file Pillow can read" in reasons[2]


def test_an_unwritable_csv_stops_before_scoring_and_leaves_nothing(trained, site_folder, tmp_path):
    folder, _ = trained
    root, _ = site_folder
    (tmp_path / "a_file").write_text("a file where a folder should be")
    for target in (tmp_path / "a_file" / "scores.csv", tmp_path):
        code, out, err = run_main("--model", folder, root, "--csv", target)
        assert code == 2 and out == "" and f"cannot write the CSV {target}" in err
        assert "nothing was scored" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_interrupted_run_leaves_no_csv_or_the_previous_one(
    trained, site_folder, tmp_path, monkeypatch
):
    folder, _ = trained
    root, _ = site_folder
    real = predict.decoded_batches

    def interrupted(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt  # Ctrl-C while the second batch decodes

    monkeypatch.setattr(predict, "decoded_batches", interrupted)
    scores = tmp_path / "scores.csv"
    code, _, err = run_main("--model", folder, root, "--csv", scores, "--batch-size", "2")
    assert code == 130 and "interrupted: no CSV was written" in err
    assert list(tmp_path.iterdir()) == []
    scores.write_text("path,probability,decision,error\nfrom,an,earlier,run\n")
    code, _, _ = run_main("--model", folder, root, "--csv", scores, "--batch-size", "2")
    assert code == 130 and scores.read_text().endswith("from,an,earlier,run\n")
    assert list(tmp_path.iterdir()) == [scores]


def test_dicom_header_values_reach_neither_the_csv_nor_the_output(trained, site_folder, tmp_path):
    from dicom_folder import HEADER_FIELDS, person_header

    from helpers.data.dicom import xray_to_dicom

    folder, _ = trained
    root, headers = site_folder
    site = tmp_path / "site"
    shutil.copytree(root, site)
    # A DICOM file whose pixels are cut off: its header is read, and must not be echoed.
    pixels = np.asarray(Image.open(next(root.rglob("*.JPG"))).convert("L"))
    patient = person_header("person999", 999)
    whole = tmp_path / "whole.dcm"
    xray_to_dicom(pixels, patient=patient).save_as(whole, enforce_file_format=True)
    (site / "2024" / "cut.dcm").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    values = {h[f] for h in [*headers.values(), patient] for f in HEADER_FIELDS if f in h}
    values |= {v.split("^")[-1] for v in values if "^" in v}
    scores, heat = tmp_path / "scores.csv", tmp_path / "heat"
    code, out, err = run_main("--model", folder, site, "--csv", scores, "--json", "--gradcam", heat)
    assert code == 1 and "2024/cut.dcm" in err
    assert len(list(heat.rglob("*.gradcam.png"))) == len(
        pd.read_csv(scores).dropna(subset=["probability"])
    )
    written = out + err + scores.read_text() + " ".join(p.as_posix() for p in heat.rglob("*"))
    written += "".join(p.read_bytes().decode("latin-1") for p in heat.rglob("*.png"))
    assert [v for v in values if v in written] == []
