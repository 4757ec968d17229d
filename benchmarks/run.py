"""Benchmarks: the helpers' pipeline against the case study's, on this machine, in one run.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/run.py            # everything (about 45 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # fewer epochs, no whole-book build
    .venv/bin/python benchmarks/run.py --book-only   # only the whole book's time and memory
    .venv/bin/python benchmarks/run.py --scoring-only   # only scoring a folder (predict)
    .venv/bin/python benchmarks/run.py --inference-only   # only images/s by batch size
    .venv/bin/python benchmarks/run.py --adabn-only   # only AdaBN's passes, eager or traced
    .venv/bin/python benchmarks/run.py --reuse-only   # only model_8's passes, parts reused or not

Every measurement runs in a fresh Python process, so that no cache, thread pool or
compiled function of one measurement helps another, and every comparison is made in the
same run on the same machine. The table is printed and written, with the date and the
machine, to ``benchmarks/RESULTS.md`` (and the raw numbers to ``benchmarks/results.json``).

Measured:

- **Input pipelines, model_1 end to end** (load, train, evaluate): the case study's
  (``image_dataset_from_directory`` from the JPEG folders, ``cache``, ``shuffle``,
  ``prefetch``; it decodes again in every notebook; TensorFlow's default settings) against
  the helpers' (JPEG decoded at reduced scale, once, cached on disk; arrays in memory;
  oneDNN convolutions), on the embedded data and on full-resolution images (the embedded
  copy upscaled to the sizes and modes of the original download). A second row runs the
  case study's pipeline with oneDNN on, to separate the two effects.
- **The five models together** with both pipelines (fewer epochs: see ``--five-epochs``).
- **Decode once**: first and second loading of the full-resolution images (second run
  reads the disk cache), and decoding on one thread against all cores.
- **model_5**: head trained on cached frozen features against the base in the loop.
- **oneDNN**: model_1's epoch with TensorFlow's oneDNN convolutions on and off.
- **Achieved GFLOP/s** of model_1's training against a large float32 matrix product.
- **The whole book** with the defaults on the embedded data: wall time and peak memory.
- **Scoring a folder** (``--scoring-only``): ``helpers.predict.score_folder`` with a trained
  model on generated folders of 5,000 and 20,000 files (copies of the test images, nested,
  JPEG, PNG and DICOM mixed, a few corrupt): images per second and peak memory, which must
  not grow with the folder's size.
- **Inference batch size** (``--inference-only``): MobileNetV2 (model_8's frozen member; the
  base of models 4, 5 and 7) computing features at 224 and 128 px in batches of 16 and of
  64, the sizes interleaved and repeated: images per second, which sets
  ``helpers.features.FEATURE_BATCH_PIXELS`` and model_8's ``batch_size``.
- **AdaBN passes** (``--adabn-only``): ``helpers.adapt.adapt_batchnorm`` (each
  BatchNormalization layer's inputs measured by a traced function) against the same passes
  called eagerly, as it measured them before, on model_6's network (128 px, twelve layers)
  and on model_8's frozen member (224 px, its feature standardisation): wall and processor
  time, and how far the statistics differ.
- **model_8's passes over one image set** (``--reuse-only``): its members' logits, the
  ensemble's scores, AdaBN and the adapted scores, every member computed in full in each
  pass against the members' parts reused through the feature cache
  (``helpers.features.predict_reusing``): wall and processor time, and how far the scores
  differ.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# The chapters define their models in their notebooks; tests/chapter_models.py runs those
# cells, so that what is measured is the book's own models.
sys.path.insert(0, str(REPO / "tests"))

HERE = Path(__file__).resolve().parent
FULL_RES_DIR = HERE / "_data" / "chest_xray_fullres"
#: The case study's notebooks ran with TensorFlow's defaults: on an AVX2 CPU that means no
#: oneDNN convolutions (``import helpers`` turns them on; see helpers/__init__.py).
AS_THE_CASE_STUDY = {"TF_ENABLE_ONEDNN_OPTS": None}


# ---------------------------------------------------------------------------------------
# Child measurements (each runs in its own process)
# ---------------------------------------------------------------------------------------


def _case_study_pipeline(
    data_dir: str, model_id: str, epochs: int, image_size: int, seed: int
) -> dict:
    """The case study's way: datasets straight from the JPEG folders, decoded by TensorFlow."""
    import keras
    import numpy as np
    import tensorflow as tf
    from chapter_models import chapter_model
    from scipy.special import expit

    from helpers import metrics
    from helpers.evaluate import output_kind

    start = time.perf_counter()
    common = dict(
        image_size=(image_size, image_size), batch_size=128, seed=seed, label_mode="binary"
    )
    train_ds = keras.utils.image_dataset_from_directory(
        Path(data_dir) / "train", validation_split=0.2, subset="training", **common
    )
    val_ds = keras.utils.image_dataset_from_directory(
        Path(data_dir) / "train", validation_split=0.2, subset="validation", **common
    )
    # The case study's test set; shuffle=False here so the timing run's AUC is meaningful.
    test_ds = keras.utils.image_dataset_from_directory(
        Path(data_dir) / "test", shuffle=False, **{**common, "seed": None}
    )
    autotune = tf.data.AUTOTUNE
    train_ds = train_ds.cache().shuffle(1000, seed=seed).prefetch(autotune)
    val_ds = val_ds.cache().prefetch(autotune)
    # The chapter's model, built and compiled by its own cells (which seed Keras first).
    model = chapter_model(model_id, image_size=image_size, seed=seed, base_weights="random")
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0)
    raw = model.predict(test_ds, verbose=0)[:, 0]
    labels = np.concatenate([y.numpy()[:, 0] for _, y in test_ds])
    scores = expit(raw.astype(np.float64)) if output_kind(model) == "logit" else raw
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_auc": metrics.roc_auc_with_ci(labels, scores).value}


def _helpers_pipeline(
    data_dir: str, model_id: str, epochs: int, image_size: int, seed: int
) -> dict:
    """The helpers' way: person-aware split, decoded once (disk cache), arrays in memory."""
    from chapter_models import chapter_model

    from helpers import data, metrics, train
    from helpers.evaluate import predict_split

    start = time.perf_counter()
    xrays = data.load_chest_xrays(data_dir, image_size=image_size, seed=seed)
    loaded = time.perf_counter() - start
    model = chapter_model(model_id, image_size=image_size, seed=seed, base_weights="random")
    run = train.fit(model, xrays, epochs=epochs, batch_size=128, seed=seed, verbose=0)
    test = predict_split(run.model, xrays.test)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "load_seconds": loaded,
        "training_seconds": run.training_seconds,
        "test_auc": metrics.roc_auc_with_ci(test.labels, test.scores).value,
    }


def _load_only(
    data_dir: str, image_size: int, workers: int | None = None, cache: str = "default"
) -> dict:
    from helpers import data

    if cache == "off":
        os.environ["CHEST_XRAY_CACHE_DIR"] = "off"
    start = time.perf_counter()
    if workers is None:
        data.load_chest_xrays(data_dir, image_size=image_size, seed=0)
    else:
        root = data.check_data_dir(data_dir)
        table = data.split_table(root, seed=0)
        data.load_images([root / p for p in table["path"]], image_size=image_size, workers=workers)
    return {"seconds": time.perf_counter() - start}


def _model_5_both_ways(
    epochs: int, image_size: int, seed: int, base_weights: str = "imagenet"
) -> dict:
    import numpy as np
    from chapter_models import chapter_model

    from helpers import data, train
    from helpers.evaluate import predict_split

    xrays = data.load_chest_xrays(image_size=image_size, seed=seed)
    out = {}
    scores = {}
    for cached in (True, False):
        # The embedded ImageNet weights (helpers.imagenet): an error, never random, if missing.
        model = chapter_model(
            "model_5", image_size=image_size, seed=seed, base_weights=base_weights
        )
        start = time.perf_counter()
        run = train.fit(
            model,
            xrays,
            epochs=epochs,
            batch_size=128,
            seed=seed,
            verbose=0,
            cache_frozen_features=cached,
        )
        out["cached" if cached else "in_loop"] = time.perf_counter() - start
        scores[cached] = predict_split(run.model, xrays.test).scores
        out["base_weights"] = base_weights
    out["max_score_difference"] = float(np.max(np.abs(scores[True] - scores[False])))
    out["score_spread"] = float(np.ptp(scores[True]))
    return out


def _epoch_seconds(image_size: int, epochs: int = 3) -> dict:
    """model_1's seconds per epoch on 4,173 random images (the size of our training side)."""
    import numpy as np
    from chapter_models import chapter_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4173, image_size, image_size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 4173).astype("float32")
    model = chapter_model("model_1", image_size=image_size, seed=0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return {
        "epoch_seconds": statistics.median(times[1:]),
        "first_epoch": times[0],
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


def _model_1_training_flops(image_size: int) -> float:
    """FLOPs to train model_1 on one image: forward + input and weight gradients (3x forward,
    less the first layer's input gradient). Counts multiply-adds of conv and dense layers."""
    import keras
    from chapter_models import chapter_model

    model = chapter_model("model_1", image_size=image_size, seed=0)
    forward = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            c_in = layer.input.shape[-1]
            forward.append(2 * h * w * c_out * k_h * k_w * c_in)
        elif isinstance(layer, keras.layers.Dense):
            forward.append(2 * layer.input.shape[-1] * layer.units)
    return float(3 * sum(forward) - forward[0])


def _gflops(image_size: int) -> dict:
    import tensorflow as tf

    n = 4096
    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    matmul = 2 * n**3 / min(times) / 1e9
    epoch = _epoch_seconds(image_size)
    per_image = _model_1_training_flops(image_size)
    achieved = per_image * 4173 / epoch["epoch_seconds"] / 1e9
    return {
        "matmul_gflops": matmul,
        "model_1_gflops": achieved,
        "model_1_gflop_per_image": per_image / 1e9,
        "epoch_seconds": epoch["epoch_seconds"],
    }


def _score_folder(model: str, folder: str, batch_size: int, workers: int) -> dict:
    """``helpers.predict.score_folder`` on one folder: time, rows, memory before and at peak."""
    import resource

    from helpers import predict

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    loaded = predict.load_model_folder(model)
    first = next(p for p in Path(folder).rglob("*.jpeg"))
    predict.score_files(loaded, [first], batch_size=batch_size)  # the model traced once
    before = rss()
    start = time.perf_counter()
    frame = predict.score_folder(loaded, folder, batch_size=batch_size, workers=workers)
    seconds = time.perf_counter() - start
    return {
        "files": len(frame),
        "unreadable": int(frame["error"].notna().sum()),
        "seconds": seconds,
        "images_per_second": len(frame) / seconds,
        "rss_before_bytes": before,
        # ru_maxrss is in KiB on Linux: the process's peak, model and TensorFlow included.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _inference_batch(image_size: int, batch_sizes: list[int], images: int, repeats: int) -> dict:
    """model_8's frozen member (the embedded ImageNet MobileNetV2 read at seven blocks)
    computing the features of ``images`` random images at each batch size (interleaved,
    ``repeats`` times, after one warm-up pass): images per second of every pass."""
    import numpy as np

    from helpers import ensemble

    x = np.random.default_rng(0).uniform(0, 255, (images, image_size, image_size, 3))
    x = x.astype("float32")
    network = ensemble.frozen_extractor(ensemble.frozen_member(image_size))
    network.predict(x[: max(batch_sizes)], batch_size=max(batch_sizes), verbose=0)
    rates: dict[str, list[float]] = {str(b): [] for b in batch_sizes}
    features = {}
    for _ in range(repeats):
        for batch in batch_sizes:
            start = time.perf_counter()
            features[batch] = network.predict(x, batch_size=batch, verbose=0)
            rates[str(batch)].append(images / (time.perf_counter() - start))
    first = features[batch_sizes[0]]
    difference = max(float(np.abs(f - first).max()) for f in features.values())
    scale = float(np.abs(first).max())
    return {"images_per_second": rates, "largest_difference": difference, "largest_value": scale}


def processor_seconds() -> float:
    """This process's user and system time so far, in seconds."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def medians(a: dict, b: dict) -> dict:
    """``{kind: (median of a[kind], median of b[kind])}`` for two ways' timings."""
    return {k: (statistics.median(a[k]), statistics.median(b[k])) for k in a}


def _adabn_passes(images: int, repeats: int) -> dict:
    """``adapt_batchnorm`` against the same measurement with eager calls (the package's way
    before), on model_6's network at 128 px and model_8's frozen member at 224 px, each on
    ``images`` random images, alternated ``repeats`` times: wall and processor seconds of
    every pass, and the largest relative difference of the statistics."""
    import numpy as np
    from chapter_models import make_model_function

    from helpers import adapt, ensemble

    def eager_adapt(model, x, batch_size):
        import keras

        copy = adapt._copy_model(model)
        sites, _ = adapt._batchnorm_sites(copy, True)
        for site in sites:
            feeder = keras.Model(copy.inputs[0], adapt._single_input_tensor(site.layer, site.name))
            count, mean, m2 = 0, None, None
            for start in range(0, len(x), batch_size):
                f = np.asarray(feeder(x[start : start + batch_size], training=False), np.float64)
                f = np.moveaxis(f, site.layer.axis, -1).reshape(-1, f.shape[site.layer.axis])
                count, mean, m2 = adapt._merge_moments(
                    count, mean, m2, len(f), f.mean(axis=0), ((f - f.mean(axis=0)) ** 2).sum(0)
                )
            site.layer.moving_mean.assign(mean.astype("float32"))
            site.layer.moving_variance.assign((m2 / count).astype("float32"))
        return copy

    rng = np.random.default_rng(0)
    networks = {
        "model_6's network, 128 px": (
            make_model_function("model_6")((128, 128, 1)),
            rng.uniform(0, 255, (images, 128, 128, 1)).astype("float32"),
        ),
        "model_8's frozen member, 224 px": (
            ensemble.frozen_member(224).model,
            rng.uniform(0, 255, (images, 224, 224, 3)).astype("float32"),
        ),
    }
    result = {}
    for name, (model, x) in networks.items():
        ways = {
            "eager": eager_adapt,
            "traced": lambda m, x, b: adapt.adapt_batchnorm(m, x, batch_size=b),
        }
        seconds = {way: {"wall": [], "processor": []} for way in ways}
        adapted = {}
        for _ in range(repeats):
            for way, run in ways.items():
                wall, cpu = time.perf_counter(), processor_seconds()
                adapted[way] = run(model, x, 16)
                seconds[way]["wall"].append(time.perf_counter() - wall)
                seconds[way]["processor"].append(processor_seconds() - cpu)
        pairs = zip(adapted["eager"].get_weights(), adapted["traced"].get_weights())
        # Relative to each statistic's largest value: a mean near zero has no relative error.
        difference = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in pairs)
        sites = len(adapt.adapted_layer_names(adapted["traced"]))
        result[name] = {"seconds": seconds, "relative_difference": difference, "layers": sites}
    return result


def _reuse_passes(images: int, repeats: int) -> dict:
    """model_8's evaluation passes over one image set (its members' logits, the ensemble's
    scores, the ensemble adapted to the images and its scores), each pass computing every
    member in full (the package's way before) against :func:`helpers.features.predict_reusing`
    and ``adapt_batchnorm(..., reuse_cached_parts=True)`` starting from an empty feature cache
    (as in a fresh build), alternated ``repeats`` times; an ensemble of model_6's network at
    128 px and the frozen member at 224 px, random weights and images: wall and processor
    seconds, and the largest difference of the adapted scores."""
    import shutil

    import keras
    import numpy as np
    import pandas as pd
    from chapter_models import make_model_function

    from helpers import ensemble
    from helpers.adapt import adapt_batchnorm
    from helpers.evaluate import model_outputs

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
    x[..., 1] = x[..., 0]
    x[..., 2] = x[..., 0]
    members = [
        ensemble.Member("model_6", make_model_function("model_6")((128, 128, 1)), 128, "grayscale"),
        ensemble.frozen_member(224),
    ]

    def plain(model_for):
        inputs = keras.Input((224, 224, 3))
        probe = keras.Model(inputs, [ensemble._branch(m, inputs, 224) for m in members])
        values = probe.predict(x, batch_size=16, verbose=0)
        logits = pd.DataFrame({m.name: np.ravel(v) for m, v in zip(members, values)})
        model = model_for(logits)
        model_outputs(model, x, batch_size=16)
        adapted = adapt_batchnorm(model, x, batch_size=16)
        return model_outputs(adapted, x, batch_size=16)

    def reusing(model_for):
        logits = ensemble.member_logits(members, x, batch_size=16)
        model = model_for(logits)
        model_outputs(model, x, batch_size=16, reuse_cached_parts=True)
        adapted = adapt_batchnorm(model, x, batch_size=16, reuse_cached_parts=True)
        return model_outputs(adapted, x, batch_size=16, reuse_cached_parts=True)

    labels = np.arange(images) % 2

    def model_for(logits):
        return ensemble.build_ensemble(members, ensemble.standardise(logits), logits, labels)

    seconds = {way: {"wall": [], "processor": []} for way in ("plain", "reusing")}
    scores = {}
    for _ in range(repeats):
        for way, run in (("plain", plain), ("reusing", reusing)):
            cache = Path(tempfile.mkdtemp(prefix="reuse-bench-"))
            os.environ["CHEST_XRAY_CACHE_DIR"] = str(cache)  # empty: as in a fresh build
            wall, cpu = time.perf_counter(), processor_seconds()
            scores[way] = run(model_for)
            seconds[way]["wall"].append(time.perf_counter() - wall)
            seconds[way]["processor"].append(processor_seconds() - cpu)
            shutil.rmtree(cache, ignore_errors=True)
    difference = float(np.max(np.abs(scores["plain"] - scores["reusing"])))
    return {"seconds": seconds, "largest_difference": difference}


CHILDREN = {
    "adabn_passes": _adabn_passes,
    "reuse_passes": _reuse_passes,
    "inference_batch": _inference_batch,
    "case_study": _case_study_pipeline,
    "helpers": _helpers_pipeline,
    "load": _load_only,
    "model_5": _model_5_both_ways,
    "epoch": _epoch_seconds,
    "gflops": _gflops,
    "score_folder": _score_folder,
}


def child(name: str, kwargs: dict, env: dict | None = None) -> dict:
    """Run ``CHILDREN[name](**kwargs)`` in a fresh process and return its JSON result."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    # A value None removes the variable: the case study ran with TensorFlow's defaults.
    environment = {k: v for k, v in environment.items() if v is not None}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step {name} {kwargs} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Full-resolution images
# ---------------------------------------------------------------------------------------


def make_full_resolution_copy(target: Path = FULL_RES_DIR, seed: int = 0) -> Path:
    """Upscale the embedded copy to the sizes and modes of the original download.

    NORMAL images 1,500-2,900 px wide and nearly square, PNEUMONIA images 900-2,000 px and
    wider than tall, grayscale (mode L) except 283 RGB images in train/PNEUMONIA, as in
    ``data/README.md``. Made once; the README with the data's citation is copied with it.
    """
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from helpers import config, data

    done = target / ".complete"
    if done.exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    rng = np.random.default_rng(seed)
    jobs = []
    for split in config.OFFICIAL_SPLITS:
        table = data.list_split(config.DEFAULT_DATA_DIR, split)
        rgb_budget = 283 if split == "train" else 0
        for path, label in table[["path", "label"]].itertuples(index=False):
            if label == 0:
                width, aspect = rng.integers(1500, 2901), rng.uniform(0.85, 0.98)
            else:
                width, aspect = rng.integers(900, 2001), rng.uniform(0.65, 0.85)
            rgb = bool(label == 1 and rgb_budget > 0 and rng.random() < 0.08)
            rgb_budget -= rgb
            jobs.append((path, int(width), int(width * aspect), rgb))

    def write(job):
        path, width, height, rgb = job
        with Image.open(config.DEFAULT_DATA_DIR / path) as img:
            big = img.convert("RGB" if rgb else "L").resize(
                (width, height), Image.Resampling.BICUBIC
            )
        out = target / path
        out.parent.mkdir(parents=True, exist_ok=True)
        big.save(out, format="JPEG", quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, jobs))
    shutil.copy(config.DEFAULT_DATA_DIR.parent / "README.md", target / "README.md")
    (target / "README.md").write_text(
        "Benchmark copy: the embedded images UPSCALED to the original download's sizes. "
        "Not real full-resolution data.\n\n" + (target / "README.md").read_text()
    )
    done.write_text("ok\n")
    return target


# ---------------------------------------------------------------------------------------
# The whole book
# ---------------------------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
        rss[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def whole_book() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "helpers.book",
                "--force",
                "--results-dir",
                f"{tmp}/results",
                "--output-dir",
                tmp,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CHEST_XRAY_CACHE_DIR": f"{tmp}/cache"},
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(1.0)
        seconds = time.perf_counter() - start
        log = process.stdout.read()
        if process.returncode != 0:
            raise RuntimeError(f"the book build failed:\n{log[-4000:]}")
        models = _model_results(Path(tmp) / "results")
    chapters = {
        line.split()[0]: float(line.split()[2])
        for line in log.splitlines()
        if len(line.split()) > 3 and line.split()[1] in ("executed", "rendered")
    }
    return {
        "seconds": seconds,
        "peak_memory_gb": peak / 1e9,
        "chapters": chapters,
        "models": models,
    }


def _model_results(results: Path) -> dict:
    """Each model's test results at its validation threshold, from the build's own files."""
    from helpers.chapters import model_ids

    out = {}
    for model_id in model_ids():
        m = json.loads((results / model_id / "metrics.json").read_text())
        row = {
            "training_seconds": m["training_seconds"],
            "threshold": m["threshold"]["threshold"],
            "val_auc": m["val"]["auc"],
            "val_specificity": m["val"]["specificity"],
        }
        for name in ("auc", "sensitivity", "specificity"):
            row[name] = [m["test"][name], m["test"][f"{name}_ci_low"], m["test"][f"{name}_ci_high"]]
        out[model_id] = row
    ablation = results / "model_6_ablation" / "ablation.csv"
    if ablation.exists():
        out["model_6"]["ablation"] = ablation.read_text()
        out["model_6"]["ablation_choice"] = json.loads(
            (ablation.parent / "choice.json").read_text()
        )
    return out


def models_table(models: dict) -> str:
    """Markdown: each model's test AUC, sensitivity and specificity (95% CI) at its
    validation-chosen threshold, from the build's own metrics files."""
    lines = [
        "| model | test AUC | sensitivity | specificity | validation AUC | training s |",
        "|---|---|---|---|---|---:|",
    ]
    for model_id, r in models.items():
        cells = [
            f"{v:.3f} ({lo:.3f}-{hi:.3f})"
            for v, lo, hi in (r["auc"], r["sensitivity"], r["specificity"])
        ]
        lines.append(
            f"| {model_id} | {' | '.join(cells)} | {r['val_auc']:.4f} "
            f"| {r['training_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def book_row(bk: dict) -> tuple[str, str, str, str]:
    from helpers.chapters import case_study_model_ids

    five = sum(v for k, v in bk["chapters"].items() if k in case_study_model_ids())
    return (
        "Whole book, defaults, embedded data: wall time / peak memory",
        f"{bk['seconds'] / 60:.1f} min",
        f"{bk['peak_memory_gb']:.2f} GB",
        f"five case-study chapters {five / 60:.1f} min (target: the whole book within 30 min on "
        "2 cores); " + ", ".join(f"{k} {v:.1f} s" for k, v in bk["chapters"].items()),
    )


BOOK_HEADING = "## The whole book"


def book_only(output: Path) -> int:
    """Build the whole book once and put its row under its own heading in ``output``."""
    print("the whole book ...", flush=True)
    bk = whole_book()
    date = record_raw(output, "book", bk)
    text = output.read_text() if output.exists() else "# Benchmark results\n"
    a, b, c, d = book_row(bk)
    body = (
        f"Measured {date} on {machine()} by "
        f"`benchmarks/run.py --book-only` (`python -m helpers.book --force`, fresh results, "
        f"decoded-image and feature caches empty at the start).\n\n"
        f"| measurement | A | B | result |\n|---|---:|---:|---|\n"
        f"| {a} | {b} | {c} | {d} |\n"
    )
    if bk.get("models"):
        body += (
            "\nTest results of that build, each model at its threshold chosen on validation "
            "(sensitivity 0.95), 95% intervals:\n\n" + models_table(bk["models"])
        )
    output.write_text(replace_section(text, BOOK_HEADING, body))
    print(body)
    return 0


SCORING_HEADING = "## Scoring a folder"
INFERENCE_HEADING = "## Inference batch size"
ADABN_HEADING = "## AdaBN passes"
REUSE_HEADING = "## model_8's passes over one image set"
SCORING_DIR = HERE / "_data" / "site_folder"
#: The two folder sizes compared: memory must be the same at both.
SCORING_SIZES = (5_000, 20_000)
#: Changed whenever make_site_folder makes other files, so an old folder is made again.
_SITE_FOLDER_VERSION = "v2"


def make_site_folder(target: Path = SCORING_DIR, sizes=SCORING_SIZES) -> dict[int, Path]:
    """Folders of copies of the embedded test images as a site exports them, made once.

    ``target/part_1`` holds ``sizes[0]`` files and ``target`` all ``sizes[-1]``: nested three
    levels (by batch and day), 60% JPEG, 20% PNG (8-bit grayscale), 20% DICOM (12-bit,
    MONOCHROME2, made-up header), and about one file in a thousand truncated (corrupt).

    Returns
    -------
    dict of int to Path
        Folder size to the folder holding that many files.
    """
    import io

    import numpy as np
    from dicom_folder import person_header
    from PIL import Image

    from helpers.data.dicom import xray_to_dicom

    done = target / ".complete"
    parts = {sizes[0]: target / "part_1", sizes[-1]: target}
    if done.is_file() and done.read_text() == f"{sizes!r} {_SITE_FOLDER_VERSION}":
        return parts
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    sources = sorted((REPO / "data" / "chest_xray" / "test").rglob("*.jpeg"))
    encoded: dict[tuple[int, str], bytes] = {}

    def content(k: int, kind: str) -> bytes:
        if (k, kind) not in encoded:
            source = sources[k]
            if kind == "jpeg":
                encoded[k, kind] = source.read_bytes()
            else:
                pixels = np.asarray(Image.open(source).convert("L"))
                buffer = io.BytesIO()
                if kind == "png":
                    Image.fromarray(pixels, "L").save(buffer, format="PNG")
                else:
                    ds = xray_to_dicom(pixels, bits_stored=12, patient=person_header("p", k))
                    ds.save_as(buffer, enforce_file_format=True)
                encoded[k, kind] = buffer.getvalue()
        return encoded[k, kind]

    for i in range(sizes[-1]):
        k = i % len(sources)
        kind = ("jpeg", "jpeg", "png", "jpeg", "dcm")[i % 5]
        part = "part_1" if i < sizes[0] else "part_2"
        path = target / part / f"batch_{i // 1000:02d}" / f"day_{i // 100 % 10}"
        path = path / f"scan_{i:06d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content(k, kind)
        # About one file in a thousand truncated, of every kind in turn.
        path.write_bytes(data[: len(data) // 3] if i % 1001 == 1000 else data)
    done.write_text(f"{sizes!r} {_SITE_FOLDER_VERSION}")
    return parts


def scoring_only(output: Path, model: Path, batch_size: int) -> int:
    """Score the generated folders at both sizes and put the rows under their heading."""
    if not (model / "metrics.json").is_file():
        print(
            f"{model} holds no trained model: run its chapter first, e.g. "
            "python -m helpers.book --only model_7 --replicates 0",
            file=sys.stderr,
        )
        return 2
    print("site folders ...", flush=True)
    folders = make_site_folder()
    workers = os.cpu_count() or 1
    runs = {}
    for size, folder in sorted(folders.items()):
        print(f"scoring {size:,} files ...", flush=True)
        runs[size] = child(
            "score_folder",
            {
                "model": str(model),
                "folder": str(folder),
                "batch_size": batch_size,
                "workers": workers,
            },
        )
    gib = 1024**3
    small, large = (runs[size] for size in sorted(runs))
    rows = [
        (
            f"{size:,} files ({run['unreadable']} corrupt): images per second / peak memory",
            f"{run['images_per_second']:.0f} /s",
            f"{run['peak_rss_bytes'] / gib:.2f} GiB",
            f"{run['seconds']:.0f} s; {run['rss_before_bytes'] / gib:.2f} GiB before scoring "
            f"(model loaded), peak "
            f"{(run['peak_rss_bytes'] - run['rss_before_bytes']) / 2**20:.0f} MiB above it",
        )
        for size, run in sorted(runs.items())
    ]
    rows.append(
        (
            f"Peak memory, {large['files']:,} files / {small['files']:,} files",
            f"{large['peak_rss_bytes'] / gib:.2f} GiB",
            f"{small['peak_rss_bytes'] / gib:.2f} GiB",
            f"{large['peak_rss_bytes'] / small['peak_rss_bytes']:.2f}x for "
            f"{large['files'] / small['files']:.0f}x the files (target: 1.0x, memory bounded)",
        )
    )
    date = record_raw(output, "scoring", {"runs": runs, "model": str(model)})
    metrics = json.loads((model / "metrics.json").read_text())
    shown = model.relative_to(REPO) if model.is_relative_to(REPO) else model
    what = (
        f"{metrics.get('title', metrics.get('model_id'))}, {metrics['parameters']['image_size']} px"
    )
    body = (
        f"Measured {date} on {machine()} by `benchmarks/run.py --scoring-only` "
        f"(`helpers.predict.score_folder`, batch size {batch_size}, {workers} decoding threads, "
        f"each size in a fresh process) with `{shown}` ({what}). "
        "The folders are copies of the embedded test images, nested three levels, 60% JPEG, "
        "20% PNG, 20% DICOM, about one file in a thousand truncated. Images per second count every "
        "file, from walking the folder to the last row; peak memory is the process's maximum "
        "resident set, TensorFlow and the model included."
    )
    write_section(output, SCORING_HEADING, body, rows)
    return 0


def inference_only(output: Path, batch_sizes=(16, 64), repeats: int = 3) -> int:
    """Images per second of MobileNetV2 by batch size; the rows go under their heading."""
    rows, runs = [], {}
    small, large = (str(b) for b in batch_sizes)
    for size, images in ((224, 384), (128, 1024)):
        print(f"MobileNetV2 at {size} px ...", flush=True)
        run = child(
            "inference_batch",
            {
                "image_size": size,
                "batch_sizes": list(batch_sizes),
                "images": images,
                "repeats": repeats,
            },
        )
        runs[size] = run["images_per_second"]
        a, b = statistics.median(runs[size][small]), statistics.median(runs[size][large])
        every = "; ".join(
            f"batch {k}: {', '.join(f'{r:.0f}' for r in v)}" for k, v in runs[size].items()
        )
        rows.append(
            (
                f"Frozen MobileNetV2 at {size} px, images per second (median of {repeats}): "
                f"batch {small} / batch {large}",
                f"{a:.0f} /s",
                f"{b:.0f} /s",
                f"{a / b:.2f}x ({images} images a pass; every pass: {every}); features "
                f"differ by at most {run['largest_difference']:.1e} (largest "
                f"{run['largest_value']:.2g})",
            )
        )
    date = record_raw(output, "inference_batch", {"runs": runs})
    body = (
        f"Measured {date} on {machine()} by `benchmarks/run.py --inference-only` "
        "(`keras.Model.predict` of model_8's frozen member, the embedded ImageNet MobileNetV2 "
        "read at seven blocks, on random images; the batch sizes interleaved, one warm-up "
        "pass, in a fresh process). Only the speed depends on the batch size; the features "
        "differ by float rounding at most."
    )
    write_section(output, INFERENCE_HEADING, body, rows)
    return 0


def adabn_only(output: Path, images: int = 256, repeats: int = 3) -> int:
    """AdaBN's passes, eager against traced; the rows go under their heading."""
    run = child("adabn_passes", {"images": images, "repeats": repeats})
    rows = []
    for name, measured in run.items():
        eager, traced = measured["seconds"]["eager"], measured["seconds"]["traced"]
        med = medians(eager, traced)
        rows.append(
            (
                f"adapt_batchnorm on {name} ({measured['layers']} BatchNormalization "
                f"layer{'s' if measured['layers'] != 1 else ''}, {images} images, "
                f"batches of 16), processor seconds (median of {repeats}): eager / traced",
                f"{med['processor'][0]:.1f} s",
                f"{med['processor'][1]:.1f} s",
                f"{med['processor'][0] / med['processor'][1]:.2f}x; wall "
                f"{med['wall'][0]:.1f} s / {med['wall'][1]:.1f} s "
                f"({med['wall'][0] / med['wall'][1]:.2f}x); statistics differ by at most "
                f"{measured['relative_difference']:.1e} of their largest value",
            )
        )
    date = record_raw(output, "adabn_passes", {"runs": run})
    body = (
        f"Measured {date} on {machine()} by `benchmarks/run.py --adabn-only` (random weights "
        "and random images: only the speed is measured; the two ways alternated, in one fresh "
        "process). Eager is how `helpers.adapt` measured each layer's inputs before: one "
        "`keras.Model` call per batch and layer, the moments in NumPy; traced is "
        "`adapt_batchnorm` now: the same sub-models in a `tf.function`, the moments reduced in "
        "float64 in the graph."
    )
    write_section(output, ADABN_HEADING, body, rows)
    return 0


def reuse_only(output: Path, images: int = 256, repeats: int = 3) -> int:
    """model_8's passes with and without reusing its members' parts; the row goes under
    its heading."""
    run = child("reuse_passes", {"images": images, "repeats": repeats})
    plain, reusing = run["seconds"]["plain"], run["seconds"]["reusing"]
    med = medians(plain, reusing)
    rows = [
        (
            f"model_8's four passes over {images} images (member logits, scores, AdaBN, adapted "
            f"scores), processor seconds (median of {repeats}): every member in full / parts "
            "reused",
            f"{med['processor'][0]:.1f} s",
            f"{med['processor'][1]:.1f} s",
            f"{med['processor'][0] / med['processor'][1]:.2f}x; wall {med['wall'][0]:.1f} s / "
            f"{med['wall'][1]:.1f} s ({med['wall'][0] / med['wall'][1]:.2f}x); adapted scores "
            f"differ by at most {run['largest_difference']:.1e}",
        )
    ]
    date = record_raw(output, "reuse_passes", {"runs": run})
    body = (
        f"Measured {date} on {machine()} by `benchmarks/run.py --reuse-only` (an ensemble of "
        "model_6's network at 128 px and the frozen member at 224 px, random weights and "
        "random images: only the speed is measured; the two ways alternated, each from an empty "
        "feature cache, in one fresh process). In full is how model_8 scored before: each pass "
        "runs every member; reused is `helpers.features.predict_reusing` and "
        "`adapt_batchnorm(..., reuse_cached_parts=True)`: the frozen member's features, "
        "computed by the first pass, are read back by the others, and model_6's branch is "
        "computed again only where adaptation changed it."
    )
    write_section(output, REUSE_HEADING, body, rows)
    return 0


def record_raw(output: Path, key: str, measured: dict) -> str:
    """Put ``measured``, with the date and the machine, under ``key`` in the raw numbers
    beside ``output`` (``results.json``), keeping the other keys; return the date."""
    date = time.strftime("%Y-%m-%d %H:%M")
    raw_path = output.with_name("results.json")
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    raw[key] = {**measured, "date": date, "machine": machine()}
    raw_path.write_text(json.dumps(raw, indent=1))
    return date


def write_section(output: Path, heading: str, intro: str, rows) -> None:
    """Put ``intro`` and the table of ``rows`` (measurement, A, B, result) under ``heading``
    in ``output``, replacing that section's last measurement, and print them."""
    body = f"{intro}\n\n| measurement | A | B | result |\n|---|---:|---:|---|\n" + "".join(
        f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows
    )
    text = output.read_text() if output.exists() else "# Benchmark results\n"
    output.write_text(replace_section(text, heading, body))
    print(body)


def replace_section(text: str, heading: str, body: str) -> str:
    """``text`` with the section under ``heading`` (up to the next ``## `` heading) replaced
    by ``body``, or with the section added at the end."""
    before, found, after = text.partition(heading + "\n")
    rest = ""
    if found:
        _, next_heading, tail = after.partition("\n## ")
        rest = "\n## " + tail if next_heading else ""
    return before.rstrip() + f"\n\n{heading}\n\n{body.rstrip()}\n" + rest


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, tensorflow-cpu {md.version('tensorflow-cpu')}, "
        f"keras {md.version('keras')}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs instead of 10, no whole-book build (a smoke run)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs for model_1 and model_5 (default 10)"
    )
    parser.add_argument(
        "--five-epochs",
        type=int,
        default=2,
        help="epochs per model for the five-models row (default 2)",
    )
    parser.add_argument("--skip-book", action="store_true", help="do not build the whole book")
    parser.add_argument(
        "--book-only",
        action="store_true",
        help="only build the whole book, and add its row to the latest results",
    )
    parser.add_argument(
        "--scoring-only",
        action="store_true",
        help="only score generated folders of 5,000 and 20,000 files with --model",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "results" / "model_7",
        help="the trained model --scoring-only scores with (default results/model_7)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="for --scoring-only")
    parser.add_argument(
        "--inference-only",
        action="store_true",
        help="only MobileNetV2's images per second in batches of 16 and of 64",
    )
    parser.add_argument(
        "--adabn-only",
        action="store_true",
        help="only AdaBN's passes (helpers.adapt), eager against traced",
    )
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="only model_8's passes over one image set, members in full or parts reused",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, kwargs = args.child
        print(json.dumps(CHILDREN[name](**json.loads(kwargs))))
        return 0

    if args.book_only:
        return book_only(args.output)
    if args.scoring_only:
        return scoring_only(args.output, args.model.resolve(), args.batch_size)
    if args.inference_only:
        return inference_only(args.output)
    if args.adabn_only:
        return adabn_only(args.output)
    if args.reuse_only:
        return reuse_only(args.output)
    epochs = args.epochs or (2 if args.quick else 10)
    size, seed = 128, 42
    embedded = str(REPO / "data" / "chest_xray")
    rows: list[tuple[str, str, str, str]] = []
    raw: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "epochs": epochs}

    def say(text: str) -> None:
        print(text, flush=True)

    with tempfile.TemporaryDirectory() as caches:
        counter = iter(range(1000))

        def fresh() -> dict:
            """An empty decoded-image cache: the helpers' first run decodes everything."""
            return {"CHEST_XRAY_CACHE_DIR": f"{caches}/{next(counter)}"}

        decode_cache = fresh()

        say("full-resolution copy ...")
        full = str(make_full_resolution_copy())

        say("decoding ...")
        first = child("load", {"data_dir": full, "image_size": size}, decode_cache)
        second = child("load", {"data_dir": full, "image_size": size}, decode_cache)
        one = child(
            "load", {"data_dir": embedded, "image_size": size, "workers": 1, "cache": "off"}
        )
        every = child(
            "load",
            {"data_dir": embedded, "image_size": size, "workers": os.cpu_count(), "cache": "off"},
        )
        raw["decode"] = {"first": first, "second": second, "one_thread": one, "all_cores": every}
        rows.append(
            (
                "Loading full-res images: first run / second run (disk cache)",
                f"{first['seconds']:.1f} s",
                f"{second['seconds']:.1f} s",
                f"second = {second['seconds'] / first['seconds']:.1%} of first (target <= 10%)",
            )
        )
        rows.append(
            (
                f"Decoding the embedded data: 1 thread / {os.cpu_count()} threads",
                f"{one['seconds']:.1f} s",
                f"{every['seconds']:.1f} s",
                f"{one['seconds'] / every['seconds']:.2f}x",
            )
        )

        for label, folder in (("embedded 224 px", embedded), ("full-res", full)):
            say(f"model_1 end to end, {label} ...")
            cs = child(
                "case_study",
                {
                    "data_dir": folder,
                    "model_id": "model_1",
                    "epochs": epochs,
                    "image_size": size,
                    "seed": seed,
                },
                AS_THE_CASE_STUDY,
            )
            hp = child(
                "helpers",
                {
                    "data_dir": folder,
                    "model_id": "model_1",
                    "epochs": epochs,
                    "image_size": size,
                    "seed": seed,
                },
                fresh(),
            )
            raw[f"model_1_{label}"] = {"case_study": cs, "helpers": hp}
            rows.append(
                (
                    f"model_1 end to end ({epochs} epochs), {label}: case study / helpers",
                    f"{cs['seconds']:.1f} s",
                    f"{hp['seconds']:.1f} s",
                    f"{cs['seconds'] / hp['seconds']:.2f}x faster (target on full-res >= 2x); "
                    f"test AUC {cs['test_auc']:.3f} / {hp['test_auc']:.3f}",
                )
            )
            if label == "full-res":
                on = child(
                    "case_study",
                    {
                        "data_dir": folder,
                        "model_id": "model_1",
                        "epochs": epochs,
                        "image_size": size,
                        "seed": seed,
                    },
                )
                raw["model_1_full-res"]["case_study_onednn"] = on
                rows.append(
                    (
                        "model_1 end to end, full-res: case study with oneDNN on / helpers",
                        f"{on['seconds']:.1f} s",
                        f"{hp['seconds']:.1f} s",
                        f"{on['seconds'] / hp['seconds']:.2f}x: the input pipeline's share alone",
                    )
                )

        say("five models, both pipelines ...")
        totals = {"case_study": 0.0, "helpers": 0.0}
        shared = fresh()  # one cache for the five chapters, as in a book build
        for model_id in ("model_1", "model_2", "model_3", "model_4", "model_5"):
            kwargs = {
                "data_dir": full,
                "model_id": model_id,
                "epochs": args.five_epochs,
                "image_size": size,
                "seed": seed,
            }
            totals["case_study"] += child("case_study", kwargs, AS_THE_CASE_STUDY)["seconds"]
            totals["helpers"] += child("helpers", kwargs, shared)["seconds"]
        raw["five_models_full_res"] = totals
        rows.append(
            (
                f"Five models on full-res ({args.five_epochs} epochs each): case study / helpers",
                f"{totals['case_study']:.0f} s",
                f"{totals['helpers']:.0f} s",
                f"{totals['case_study'] / totals['helpers']:.2f}x faster (target >= 2.5x)",
            )
        )

    say("model_5 both ways ...")
    m5 = child("model_5", {"epochs": epochs, "image_size": size, "seed": seed})
    raw["model_5"] = m5
    rows.append(
        (
            f"model_5 training ({epochs} epochs): base in the loop / cached features",
            f"{m5['in_loop']:.1f} s",
            f"{m5['cached']:.1f} s",
            f"{m5['in_loop'] / m5['cached']:.2f}x faster (target >= 5x); largest test "
            f"score difference {m5['max_score_difference']:.1e} "
            f"(score spread {m5['score_spread']:.1e}; "
            f"base weights {m5['base_weights']}: with random weights the scores barely vary, "
            "see tests/test_train.py for the equality check on a base that passes signal)",
        )
    )

    say("oneDNN on / off ...")
    on = child("epoch", {"image_size": size}, {"TF_ENABLE_ONEDNN_OPTS": "1"})
    off = child("epoch", {"image_size": size}, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    raw["onednn"] = {"on": on, "off": off}
    rows.append(
        (
            "model_1 seconds per epoch: oneDNN off / on (helpers default: on)",
            f"{off['epoch_seconds']:.1f} s",
            f"{on['epoch_seconds']:.1f} s",
            f"{off['epoch_seconds'] / on['epoch_seconds']:.2f}x faster",
        )
    )

    say("GFLOP/s ...")
    gf = child("gflops", {"image_size": size})
    raw["gflops"] = gf
    rows.append(
        (
            "GFLOP/s: float32 4096^2 matrix product / model_1 training",
            f"{gf['matmul_gflops']:.0f}",
            f"{gf['model_1_gflops']:.1f}",
            f"model_1 runs at {gf['model_1_gflops'] / gf['matmul_gflops']:.0%} "
            f"of the matrix product's rate "
            f"({gf['model_1_gflop_per_image']:.3f} GFLOP per training image)",
        )
    )

    if not (args.quick or args.skip_book):
        say("the whole book ...")
        bk = whole_book()
        raw["book"] = bk
        rows.append(book_row(bk))

    table = ["| measurement | A | B | result |", "|---|---:|---:|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = (
        f"# Benchmark results\n\nMeasured {raw['date']} on {raw['machine']} by "
        f"`benchmarks/run.py{' --quick' if args.quick else ''}` (epochs {epochs}).\n\n"
        + "\n".join(table)
        + "\n"
    )
    raw_path = args.output.with_name("results.json")
    if "book" not in raw and args.output.exists() and BOOK_HEADING in args.output.read_text():
        # --skip-book keeps the latest whole-book section (from --book-only or a full run).
        text += "\n" + BOOK_HEADING + args.output.read_text().split(BOOK_HEADING, 1)[1]
        if raw_path.exists() and "book" in json.loads(raw_path.read_text()):
            raw["book"] = json.loads(raw_path.read_text())["book"]
    for heading, key in (
        (SCORING_HEADING, "scoring"),
        (INFERENCE_HEADING, "inference_batch"),
        (ADABN_HEADING, "adabn_passes"),
    ):
        if args.output.exists() and heading in args.output.read_text():
            # A full run keeps the latest sections of the --*-only measurements.
            kept = args.output.read_text().split(heading + "\n", 1)[1].split("\n## ")[0]
            text = replace_section(text, heading, kept)
            if raw_path.exists() and key in json.loads(raw_path.read_text()):
                raw[key] = json.loads(raw_path.read_text())[key]
    print("\n" + text)
    args.output.write_text(text)
    raw_path.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
