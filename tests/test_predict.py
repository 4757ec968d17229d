"""The inference command, ``python -m helpers.predict``, on good and bad files and folders."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
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
