"""The inference command, ``python -m helpers.predict``, on good and bad files and folders."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import data, predict, train  # noqa: E402
from helpers.evaluate import predict_split  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def trained(xray_folder, tmp_path_factory):
    results = tmp_path_factory.mktemp("predict-results")
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)
    built = train.build("model_1", xrays, seed=0)
    run = train.fit(built, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    train.evaluate_and_save(run, xrays, results_dir=results)
    return results / "model_1", xrays


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
        assert p["decision"] == ("PNEUMONIA" if p["probability"] >= report["threshold"] else "NORMAL")


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


def test_command_line_runs_as_a_module(trained):
    folder, xrays = trained
    image = xrays.test.data_dir / xrays.test.paths[0]
    result = subprocess.run([sys.executable, "-m", "helpers.predict", "--model", str(folder), str(image)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(image) in result.stdout
