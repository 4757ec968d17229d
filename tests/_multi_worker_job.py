"""One worker of the two-worker test (tests/test_multi_worker.py): a model chapter's steps.

Run as ``python tests/_multi_worker_job.py DATA_DIR OUT_DIR`` with ``TF_CONFIG`` naming the
cluster and this worker's index. In the chapter's order it loads the data, builds and
compiles model_1 with the notebook's own cells under ``strategy="multi_worker"``, trains two
epochs with :func:`helpers.train.fit`, and scores validation and test (every worker must take
part: training's gradient sums and prediction's gathering are collective steps). Then it
writes ``OUT_DIR/weights.npz`` (this worker's final weights, for the test to compare) and,
on the chief only, the chapter's results folder ``OUT_DIR/results/model_1/``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]  # helpers/ and chapter_models.py

IMAGE_SIZE = 32
# Per replica: each training step sees 2 x 16 images, all 32 training images of the test's
# folder. With whole-set steps the trained weights do not depend on how TensorFlow splits a
# batch between the workers, so the test can compare them with one process's.
BATCH_SIZE = 16
EPOCHS = 2  # two steps: the optimizer's state carries from one to the next
# Scoring batches of 3 images are split 2 + 1 between the workers (the last test batch
# 1 + 1): the gathered scores must still be every image's, in file order. A share of 0
# (a last batch of 1 image) is avoided: TensorFlow 2.21's oneDNN convolutions fail on an
# empty batch ("input depth must be evenly divisible by filter depth: 3 vs 8").
SCORING_BATCH_SIZE = 3
SEED = 0


def save_weights(model, path: Path) -> None:
    """``model``'s weights, in order, to ``path`` (.npz), written whole or not at all."""
    arrays = {f"w{i:03d}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(data_dir: Path, out_dir: Path) -> None:
    import tensorflow as tf

    # One thread per worker: two workers share this machine's cores with other tests.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from chapter_models import chapter_model

    from helpers import data, evaluate, results, train

    xrays = data.load_chest_xrays(data_dir, image_size=IMAGE_SIZE, color_mode="rgb", seed=SEED)
    model = chapter_model("model_1", image_size=IMAGE_SIZE, seed=SEED, strategy="multi_worker")
    strategy = model.distribute_strategy
    run = train.fit(
        model,
        xrays,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        seed=SEED,
        verbose=0,
        patch_keras_multi_worker=os.environ.get("KERAS_AS_RELEASED")
        != "1",  # "1": Keras' own failure
    )

    val = evaluate.score_validation(model, xrays, batch_size=SCORING_BATCH_SIZE)
    threshold = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    test = evaluate.score_test_once(
        model, xrays, threshold=threshold, batch_size=SCORING_BATCH_SIZE
    )
    evaluation = evaluate.summarise("model_1", val, test, threshold)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / "weights.npz")
    chief = train.is_chief(strategy)
    if chief:
        results.save_results(
            evaluation,
            model=model,
            run=run,
            xrays=xrays,
            parameters={
                "results_dir": str(out_dir / "results"),
                "strategy": "multi_worker",
                "image_size": IMAGE_SIZE,
                "batch_size": BATCH_SIZE,
                "seed": SEED,
            },
            title="model_1 (two workers)",
        )
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    print(
        json.dumps(
            {
                "task": task,
                "chief": chief,
                "replicas": strategy.num_replicas_in_sync,
                "history": run.history.to_dict(orient="list"),
                "val_scores": val.scores.tolist(),
                "test_scores": test.scores.tolist(),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} DATA_DIR OUT_DIR (with TF_CONFIG set)")
    if "TF_CONFIG" not in os.environ:
        sys.exit("TF_CONFIG must describe the cluster and this worker's task")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
