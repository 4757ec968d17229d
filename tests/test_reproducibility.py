"""Same inputs, same numbers; interrupted runs leave complete results; more devices, same code.

These tests start fresh Python processes: determinism must hold across processes (thread
pools, memory layout and import order all differ), a kill must be a real SIGKILL with no
clean-up, and logical CPU devices can only be configured before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import results

REPO = Path(__file__).resolve().parent.parent

TRAIN_SCRIPT = """
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
from chapter_models import chapter_model, evaluate_like_a_chapter
from helpers import data, train, results

folder, results_dir = sys.argv[1], Path(sys.argv[2])
epochs, pause_at = int(sys.argv[3]), sys.argv[4]
xrays = data.load_chest_xrays(folder, image_size=24, seed=3, results_dir=results_dir)
model = chapter_model("model_1", image_size=24, seed=3)
initial = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
if pause_at == "writing":
    real = results.atomic_write_text
    def slow(path, text):
        real(path, text)
        print("WRITING", flush=True)
        time.sleep(600)
    results.atomic_write_text = slow
print("TRAINING", flush=True)
run = train.fit(model, xrays, epochs=epochs, batch_size=8, seed=3, verbose=0)
evaluate_like_a_chapter("model_1", model, run, xrays, results_dir)
print(json.dumps({"initial_weights": initial}), flush=True)
"""


def _env(threads: int | None = None):
    env = dict(os.environ)
    if threads is not None:  # TensorFlow's pools and oneDNN's OpenMP team
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            env[name] = str(threads)
    # The repository (helpers) and tests/ (chapter_models: the notebooks' own model cells).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def run_trainings(folder, results_dirs, epochs=2, threads=None):
    """TRAIN_SCRIPT in one fresh process per results folder, all started together (they
    overlap on the cores while TensorFlow imports); the JSON report of each, in order."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                TRAIN_SCRIPT,
                str(folder),
                str(results_dir),
                str(epochs),
                "none",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(threads),
        )
        for results_dir in results_dirs
    ]
    reports = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return reports


@pytest.fixture(scope="module")
def two_runs(xray_folder, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two processes, same folder and seed, two epochs each: results in ``a/`` and ``b/``."""
    root = tmp_path_factory.mktemp("two-runs")
    return root, run_trainings(xray_folder.root, [root / "a", root / "b"])


@pytest.mark.slow
def test_two_processes_with_the_same_seed_give_the_same_split_weights_and_scores(two_runs):
    root, (first, second) = two_runs
    assert first["initial_weights"] == second["initial_weights"]
    assert (root / "a" / "split.csv").read_bytes() == (root / "b" / "split.csv").read_bytes()
    for name in ("predictions_val.csv", "predictions_test.csv"):
        a = pd.read_csv(root / "a" / "model_1" / name)
        b = pd.read_csv(root / "b" / "model_1" / name)
        assert a["path"].tolist() == b["path"].tolist()
        assert np.max(np.abs(a["score"] - b["score"])) <= 1e-6
        assert a["score"].nunique() > 1  # the scores differ between images: a real comparison
    ma = json.loads((root / "a" / "model_1" / "metrics.json").read_text())
    mb = json.loads((root / "b" / "model_1" / "metrics.json").read_text())
    assert ma["threshold"] == mb["threshold"]
    assert ma["test"]["auc"] == pytest.approx(mb["test"]["auc"], abs=1e-9)


@pytest.mark.slow
def test_scores_do_not_depend_on_the_number_of_threads(two_runs, xray_folder, tmp_path):
    # Machines differ in cores, so in TensorFlow's and oneDNN's thread counts, which change
    # the order in which sums are added. The same training on one thread against the
    # default (one per core): measured 6e-8 apart (float32 rounding), 1 and 4 threads alike.
    root, (default_report,) = two_runs[0], two_runs[1][:1]
    (one_report,) = run_trainings(xray_folder.root, [tmp_path / "one"], threads=1)
    assert one_report["initial_weights"] == default_report["initial_weights"]
    default = pd.read_csv(root / "a" / "model_1" / "predictions_test.csv")
    one = pd.read_csv(tmp_path / "one" / "model_1" / "predictions_test.csv")
    assert one["path"].tolist() == default["path"].tolist()
    assert np.max(np.abs(one["score"] - default["score"])) <= 1e-6
    assert default["score"].nunique() > 1
    assert (tmp_path / "one" / "split.csv").read_bytes() == (root / "a" / "split.csv").read_bytes()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["training", "writing"])
def test_a_killed_run_leaves_the_previous_complete_results(
    xray_folder, two_runs, tmp_path, pause_at
):
    # The previous complete results: a copy of one finished run's folder (split.csv and
    # model_1/), the same files another run into this folder would have left.
    results_dir = tmp_path / "results"
    shutil.copytree(two_runs[0] / "a", results_dir)
    before = _snapshot(results_dir / "model_1")
    assert set(before) == {
        "predictions_val.csv",
        "predictions_test.csv",
        "metrics.json",
        "history.csv",
        "model.keras",
        "MODEL_CARD.md",
    }

    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            TRAIN_SCRIPT,
            str(xray_folder.root),
            str(results_dir),
            "1000" if pause_at == "training" else "1",
            pause_at,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        marker = "TRAINING" if pause_at == "training" else "WRITING"
        for line in process.stdout:
            if line.strip() == marker:
                break
        if pause_at == "training":
            time.sleep(3)  # well into the 1000 epochs
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    # What the killed process left: the previous results, complete and unchanged.
    assert _snapshot(results_dir / "model_1") == before
    leftovers = [p.name for p in results_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == ([] if pause_at == "training" else [leftovers[0]])
    # Readers tidy what the killed writer left and still see the previous results.
    assert results.read_metrics(results_dir, "model_1") == json.loads(before["metrics.json"])
    assert [p.name for p in results_dir.iterdir() if p.name.startswith(".")] == []


def test_results_hidden_by_a_kill_between_the_two_renames_are_put_back(tmp_path):
    folder = tmp_path / "model_1"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"model_id": "model_1"}')
    dead_pid = _dead_pid()
    os.replace(folder, tmp_path / f".model_1.old.{dead_pid}")  # the first rename happened
    (tmp_path / f".model_1.staging.{dead_pid}.abc").mkdir()  # the second did not
    done = results.recover_interrupted(tmp_path, "model_1")
    assert any("restored" in line for line in done)
    assert results.read_metrics(tmp_path, "model_1") == {"model_id": "model_1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_1"]


def test_a_running_writers_staging_folder_is_left_alone(tmp_path):
    busy = tmp_path / f".model_1.staging.{os.getppid()}.xyz"  # a live process's folder
    busy.mkdir()
    assert results.recover_interrupted(tmp_path, "model_1") == []
    assert busy.is_dir()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from chapter_models import chapter_model
from helpers import data, metrics, train
from helpers.data import training_dataset
from helpers.evaluate import predict_split

# The chapter's own cell asks for strategy "mirrored", which mirrors over every GPU; this
# machine has none, so it is pointed at the two logical CPUs instead.
mirrored = train.distribution_strategy
train.distribution_strategy = lambda name: mirrored(name, devices=["/cpu:0", "/cpu:1"])
xrays = data.load_chest_xrays(sys.argv[1], image_size=24, seed=0)
model = chapter_model("model_3", image_size=24, seed=0, strategy="mirrored")
strategy = model.distribute_strategy
run = train.fit(model, xrays, epochs=int(sys.argv[2]), batch_size=4, seed=0, verbose=0)
test = predict_split(run.model, xrays.test, batch_size=8)
val = predict_split(run.model, xrays.val, batch_size=8)  # an uneven last batch
assert len(val.scores) == len(xrays.val)
first_variable = run.model.trainable_variables[0]
global_batch = 4 * strategy.num_replicas_in_sync
batches = training_dataset(xrays.train, batch_size=global_batch, seed=0, drop_remainder=True)
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "variable_devices": sorted({v.device for v in getattr(first_variable, "values", [])}),
    "loss": run.history["loss"].tolist(),
    "steps_per_epoch": len(list(batches)),
    "train_images": len(xrays.train),
    "test_auc": metrics.roc_auc_with_ci(test.labels, test.scores).value,
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus_trains_and_learns(xray_folder):
    # 4 epochs of 3 steps: the last epoch's mean loss is below the first's (measured 0.49
    # against 0.56; 0.45 after 12 epochs, which take twice as long).
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(xray_folder.root), "4"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # The batch size is per replica: 2 x 4 images per step.
    assert report["steps_per_epoch"] == report["train_images"] // 8
    assert report["loss"][-1] < report["loss"][0]
    assert report["test_auc"] >= 0.9  # PNEUMONIA images are brighter: learnable


def test_unknown_strategy_is_refused():
    from helpers import train

    with pytest.raises(ValueError, match="strategy must be one of default, mirrored, multi_worker"):
        train.distribution_strategy("tpu")
