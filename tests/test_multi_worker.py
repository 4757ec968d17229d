"""Scale-out for real: model_1 trained by two worker processes under MultiWorkerMirroredStrategy.

Two Python processes (tests/_multi_worker_job.py) form a TensorFlow cluster on 127.0.0.1,
each with its own ``TF_CONFIG``, and run a model chapter's steps on one small generated
folder: the notebook's own model cells under ``strategy="multi_worker"``,
:func:`helpers.train.fit` for two epochs, the evaluation, and the results folder, written
by the chief only. The checks: both exit 0 in bounded time, both hold the same weights,
those weights are the ones one process gets on the global batch (2 replicas x 16 images),
the chief's test scores are in file order, and only the chief wrote a results folder.

Keras 3.15's ``Model.fit`` cannot train on two workers as released (keras-team/keras#20585):
the job works around its two faults (``helpers.train._work_around_keras_multi_worker_fit``
says which and why), and ``test_keras_as_released_fails_under_two_workers`` pins the
failure, so that the day Keras is fixed the workaround is seen to be removable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from _multi_worker_job import BATCH_SIZE as PER_REPLICA_BATCH
from _multi_worker_job import EPOCHS, SCORING_BATCH_SIZE
from conftest import make_xray_folder

TESTS = Path(__file__).resolve().parent
JOB = TESTS / "_multi_worker_job.py"
WORKERS = 2
TIMEOUT_S = 240  # for the whole cluster, start to finish
FAILURE_GRACE_S = 20  # after one worker fails, before the others are stopped
# A folder whose person-aware split has 32 training images: one global batch of 2 x 16, so
# each step trains on all of them whichever images TensorFlow gives each worker (it shards
# the shuffled order its own way), and one process with batches of 32 trains on the same.
# 36 validation images: at least one global batch, which fit's per-epoch validation curve
# needs under several replicas (it uses whole batches only). 8 test images are scored in
# batches of 3, 3 and 2: uneven shares between the workers.
FOLDER = dict(train_persons=(5, 5), images_per_person=(4, 4), val_per_class=14, test_per_class=4)
TRAIN_IMAGES = 32
TEST_IMAGES = 8
# Two TensorFlow worker processes per cluster: the slow kind `make quick` leaves out.
pytestmark = pytest.mark.cluster


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (the OS picks them)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_env(cluster: list[str], index: int, cache_dir: Path, *, keras_as_released: bool) -> dict:
    """The environment of worker ``index``: its own ``TF_CONFIG``, the CPU only, no proxy."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "grpc_proxy", "all_proxy")
    }
    env.update(
        TF_CONFIG=json.dumps(
            {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        ),
        CUDA_VISIBLE_DEVICES="-1",  # the CPU path, the same on a machine with a GPU
        TF_CPP_MIN_LOG_LEVEL="2",
        CHEST_XRAY_CACHE_DIR=str(cache_dir),
        PYTHONHASHSEED="0",
        KERAS_AS_RELEASED="1" if keras_as_released else "0",
    )
    return env


def run_cluster(
    data_dir: Path,
    work: Path,
    *,
    keras_as_released: bool = False,
    job: Path = JOB,
    timeout_s: float = TIMEOUT_S,
    grace_s: float = FAILURE_GRACE_S,
) -> list[dict]:
    """Start the workers (``job DATA_DIR OUT_DIR``), wait for all, stopping any still running
    ``timeout_s`` after the start or ``grace_s`` after another failed; return per worker
    ``{"rc", "stdout", "stderr", "out_dir"}``."""
    cluster = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    processes, logs = [], []
    for index in range(WORKERS):
        out_dir = work / f"worker{index}"
        log = (
            open(work / f"worker{index}.stdout", "w+"),
            open(work / f"worker{index}.stderr", "w+"),
        )
        logs.append(log)
        processes.append(
            (
                out_dir,
                subprocess.Popen(
                    [sys.executable, str(job), str(data_dir), str(out_dir)],
                    env=worker_env(
                        cluster, index, work / f"cache{index}", keras_as_released=keras_as_released
                    ),
                    stdout=log[0],
                    stderr=log[1],
                    start_new_session=True,
                ),
            )
        )
    deadline = time.monotonic() + timeout_s
    first_failure = None
    while time.monotonic() < deadline:
        codes = [process.poll() for _, process in processes]
        if all(code is not None for code in codes):
            break
        if first_failure is None and any(code not in (None, 0) for code in codes):
            first_failure = time.monotonic()
        # A worker that failed leaves the others waiting on a collective step: give them
        # a moment to fail on their own, then stop them instead of waiting out the deadline.
        if first_failure is not None and time.monotonic() - first_failure > grace_s:
            break
        time.sleep(0.2)
    finished = []
    for (out_dir, process), (stdout, stderr) in zip(processes, logs):
        if process.poll() is None:
            try:
                os.killpg(
                    process.pid, signal.SIGKILL
                )  # the worker's own session: it and its children
            except ProcessLookupError:
                pass  # it ended meanwhile
            process.wait()
        stdout.seek(0)
        stderr.seek(0)
        finished.append(
            {
                "rc": process.returncode,
                "stdout": stdout.read(),
                "stderr": stderr.read(),
                "out_dir": out_dir,
            }
        )
        stdout.close()
        stderr.close()
    return finished


def describe(workers: list[dict]) -> str:
    """Every worker's exit status and the end of its stderr, for a failure message."""
    return "\n".join(
        f"--- worker {i}: exit {w['rc']} (-9: stopped by the test)\n{w['stderr'][-6000:]}"
        for i, w in enumerate(workers)
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The generated folder, written once and read by every worker."""
    return make_xray_folder(tmp_path_factory.mktemp("multi_worker") / "chest_xray", **FOLDER).root


@pytest.fixture(scope="module")
def cluster_run(folder, tmp_path_factory) -> list[dict]:
    """Both workers, run once for the checks below; each has exited 0 with its report."""
    workers = run_cluster(folder, tmp_path_factory.mktemp("cluster"))
    assert all(w["rc"] == 0 for w in workers), describe(workers)
    for w in workers:
        w["report"] = json.loads(w["stdout"].strip().splitlines()[-1])
    return workers


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[name] for name in sorted(saved.files)]


def test_split_is_whole_global_batches(folder):
    """The comparison with one process below needs one whole-set step per epoch."""
    from helpers.data import split_table

    counts = split_table(folder, seed=0)["split"].value_counts()
    assert counts["train"] == TRAIN_IMAGES == WORKERS * PER_REPLICA_BATCH
    assert counts["val"] >= WORKERS * PER_REPLICA_BATCH
    # No scoring batch is a single image (a worker's share of it would be empty).
    assert counts["test"] == TEST_IMAGES
    assert counts["test"] % SCORING_BATCH_SIZE != 1 and counts["val"] % SCORING_BATCH_SIZE != 1


def test_two_workers_form_one_cluster_of_two_replicas(cluster_run):
    reports = [w["report"] for w in cluster_run]
    assert [r["task"] for r in reports] == [{"type": "worker", "index": i} for i in range(WORKERS)]
    assert [r["replicas"] for r in reports] == [WORKERS, WORKERS]
    assert [r["chief"] for r in reports] == [True, False]
    # The logged loss is averaged over the replicas: the same on both workers.
    assert reports[0]["history"] == reports[1]["history"]
    assert reports[0]["history"]["epoch"] == list(range(1, EPOCHS + 1))


def test_both_workers_end_with_the_same_weights(cluster_run):
    chief, other = (load_weights(w["out_dir"] / "weights.npz") for w in cluster_run)
    assert len(chief) == len(other) == 10  # 5 layers with kernel and bias
    for a, b in zip(chief, other):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_both_workers_give_the_same_scores(cluster_run):
    chief, other = (w["report"] for w in cluster_run)
    assert len(chief["test_scores"]) == TEST_IMAGES
    np.testing.assert_allclose(chief["test_scores"], other["test_scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(chief["val_scores"], other["val_scores"], rtol=0, atol=1e-6)


def test_results_written_once_by_the_chief_only(cluster_run):
    chief, other = (w["out_dir"] for w in cluster_run)
    assert sorted(p.name for p in (chief / "results").iterdir()) == ["model_1"]
    written = sorted(p.name for p in (chief / "results" / "model_1").iterdir())
    assert {
        "metrics.json",
        "predictions_val.csv",
        "predictions_test.csv",
        "history.csv",
        "model.keras",
    } <= set(written)
    assert not any(name.endswith((".tmp", ".partial")) for name in written)
    assert sorted(p.name for p in other.iterdir()) == ["weights.npz"]  # no results folder
    metrics = json.loads((chief / "results" / "model_1" / "metrics.json").read_text())
    assert "multi_worker" in json.dumps(metrics)


def test_two_workers_train_like_one_process_on_the_global_batch(cluster_run, folder):
    """Two replicas of 16 images per step = one process with batches of 32: the same
    initial weights (seeded, broadcast from the chief), and each step's gradient averaged
    over the same 32 images (Keras scales each replica's loss by 1/2, TensorFlow sums the
    gradients across the workers); only the order of float sums differs."""
    from chapter_models import chapter_model

    from helpers import data, evaluate, train

    xrays = data.load_chest_xrays(folder, image_size=32, color_mode="rgb", seed=0)
    model = chapter_model("model_1", image_size=32, seed=0, strategy="default")
    initial = model.get_weights()
    train.fit(
        model, xrays, epochs=EPOCHS, batch_size=WORKERS * PER_REPLICA_BATCH, seed=0, verbose=0
    )
    chief_weights = load_weights(cluster_run[0]["out_dir"] / "weights.npz")
    # Training moved the weights (measured: up to 6e-4) far more than the tolerance
    # (measured difference: 1.5e-8), so the comparison says something.
    assert max(np.abs(w - w0).max() for w, w0 in zip(chief_weights, initial)) > 1e-4
    for one_process, two_workers in zip(model.get_weights(), chief_weights):
        np.testing.assert_allclose(two_workers, one_process, rtol=0, atol=1e-6)

    # The chief's saved test scores are in file order: each row matches one process's
    # score of the same image.
    saved = pd.read_csv(cluster_run[0]["out_dir"] / "results" / "model_1" / "predictions_test.csv")
    reference = evaluate.predict_split(model, xrays.test, batch_size=SCORING_BATCH_SIZE)
    assert saved["path"].tolist() == list(reference.paths)
    np.testing.assert_allclose(saved["score"].to_numpy(), reference.scores, rtol=0, atol=1e-6)


def test_keras_as_released_fails_under_two_workers(folder, tmp_path):
    """Without the workaround, Keras 3.15's fit stops at its first batch on both workers
    with the error of keras-team/keras#20585. When this test fails, Keras has been fixed:
    drop the workaround in _multi_worker_job.py and this test."""
    workers = run_cluster(folder, tmp_path, keras_as_released=True)
    for w in workers:
        assert w["rc"] not in (0, -signal.SIGKILL), describe(workers)
        assert (
            "with an unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>)"
            in w["stderr"]
        ), describe(workers)
        assert not (w["out_dir"] / "weights.npz").exists()


STUCK_OR_FAILING_JOB = """
import json, os, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
print("worker", index, "stuck" if index else "fails", file=sys.stderr, flush=True)
if index == 0 and "{worker0}" == "fail":
    sys.exit(3)
time.sleep(120)
"""


@pytest.mark.parametrize("worker0", ["fail", "hang"])
def test_stuck_workers_are_stopped_in_bounded_time(tmp_path, worker0):
    """The test's own guard: a worker waiting for a failed peer, or a hung cluster, is
    killed (``grace_s`` after a failure, ``timeout_s`` after the start) with its stderr kept."""
    job = tmp_path / "job.py"
    job.write_text(STUCK_OR_FAILING_JOB.format(worker0=worker0))
    # The hung cluster waits out the whole timeout: 3 s is enough for two plain Pythons to
    # start and print; the failing one must end well before its timeout of 6 s.
    timeout_s = 6 if worker0 == "fail" else 3
    start = time.monotonic()
    workers = run_cluster(tmp_path, tmp_path, job=job, timeout_s=timeout_s, grace_s=1)
    elapsed = time.monotonic() - start
    if worker0 == "fail":
        assert [w["rc"] for w in workers] == [3, -signal.SIGKILL]
        assert elapsed < timeout_s
    else:
        assert [w["rc"] for w in workers] == [-signal.SIGKILL, -signal.SIGKILL]
        assert timeout_s <= elapsed < timeout_s + 14
    assert "worker 1 stuck" in workers[1]["stderr"]
    assert "exit -9 (-9: stopped by the test)" in describe(workers)


def test_is_chief_on_one_machine():
    import tensorflow as tf

    from helpers import train

    assert train.is_chief(train.distribution_strategy("default")) is True
    assert train.is_chief(tf.distribute.MirroredStrategy(devices=["/cpu:0"])) is True
    with pytest.raises(TypeError, match="tf.distribute.Strategy, got str"):
        train.is_chief("multi_worker")


@pytest.mark.parametrize(
    "cluster, task_type, task_id, expected",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),  # no chief task: worker 0 is the chief
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "worker", 0, False),  # a chief exists
        ({"chief": ["c:1"], "worker": ["a:1"], "evaluator": ["e:1"]}, "evaluator", 0, False),
    ],
)
def test_is_chief_follows_tensorflows_rule(cluster, task_type, task_id, expected):
    """The rule, on the cluster resolver a MultiWorkerMirroredStrategy would carry (no
    server is started: the resolver is given to the default strategy for the call)."""
    import tensorflow as tf

    from helpers import train

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    strategy = tf.distribute.get_strategy()
    with mock.patch.object(
        type(strategy), "cluster_resolver", new_callable=mock.PropertyMock, return_value=resolver
    ):
        assert train.is_chief(strategy) is expected
