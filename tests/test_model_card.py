"""The model card, ``MODEL_CARD.md``: written with every saved model, from its metrics.json."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("keras")

from chapter_models import chapter_model, evaluate_like_a_chapter

from helpers import config, data, model_card, train

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def saved(xray_folder, tmp_path_factory):
    """model_1 trained one epoch and saved as its chapter saves it: (folder, metrics)."""
    results = tmp_path_factory.mktemp("card-results")
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)
    model = chapter_model("model_1", image_size=32, seed=0)
    run = train.fit(model, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    _, folder = evaluate_like_a_chapter("model_1", model, run, xrays, results)
    return folder, json.loads((folder / "metrics.json").read_text())


def section(card: str, title: str) -> str:
    """The text of one ``## title`` section of a card."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.M | re.S)
    assert match, f"no section {title!r} in the card"
    return match.group(1)


def table_row(text: str, label: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in {text!r}")


def shown(block: dict, name: str) -> str:
    return f"{block[name]:.3f} ({block[name + '_ci_low']:.3f}-{block[name + '_ci_high']:.3f})"


def test_every_saved_model_has_a_card_whose_numbers_agree_with_its_metrics(saved):
    folder, metrics = saved
    card = (folder / model_card.CARD_NAME).read_text()
    assert card == model_card.card_text(metrics)  # generated from metrics.json, nothing else
    check_numbers(card, metrics)


def built_results() -> list:
    """The model folders the book's chapters and replicates wrote into ``results/``."""
    return sorted(
        path.parent
        for path in config.DEFAULT_RESULTS_DIR.rglob("metrics.json")
        if "model_id" in json.loads(path.read_text())
    )


@pytest.mark.skipif(not built_results(), reason="no model trained in results/ (make book)")
@pytest.mark.parametrize("folder", built_results(), ids=lambda f: f.name)
def test_the_cards_of_the_built_models_agree_with_their_metrics(folder):
    """After a build: each results/<model>/MODEL_CARD.md holds its metrics.json's numbers."""
    metrics = json.loads((folder / "metrics.json").read_text())
    if "commit" not in metrics:  # save_results records it since it writes cards
        pytest.skip(f"{folder} was written before model cards existed; make book writes it again")
    card = folder / model_card.CARD_NAME
    assert card.is_file(), f"{folder} has no {model_card.CARD_NAME}"
    check_numbers(card.read_text(), metrics)


def check_numbers(card: str, metrics: dict) -> None:
    """The card's test metrics, threshold, kinds, calibration and seed are metrics.json's."""
    test, val = metrics["test"], metrics["val"]
    numbers = section(card, "Test metrics")
    for key, label in (
        ("auc", "AUC"),
        ("sensitivity", "sensitivity"),
        ("npv", "negative predictive value"),
    ):
        assert table_row(numbers, label) == [shown(test, key), shown(val, key)]
    threshold = metrics["threshold"]
    assert f"Threshold {threshold['threshold']:.3f}" in numbers
    if threshold["method"] == "sensitivity":
        assert f"reaches {threshold['target_sensitivity']:.2f}" in numbers
    assert "chosen on the validation images" in numbers
    assert f"{test['tp']} true positives, {test['fn']} false negatives" in numbers
    for row in metrics["sensitivity_by_kind"]:
        assert table_row(section(card, "Sensitivity by kind of pneumonia"), row["kind"]) == [
            str(row["images"]),
            str(row["detected"]),
            f"{row['sensitivity']:.3f} ({row['ci_low']:.3f}-{row['ci_high']:.3f})",
        ]
    calibration = metrics["calibration"]
    assert f"Brier score {calibration['test_before']['brier']:.3f}" in section(card, "Calibration")
    reproducing = section(card, "Reproducing it")
    assert f"Seed {metrics['parameters']['seed']}" in reproducing
    assert metrics["commit"] in reproducing and metrics["versions"]["tensorflow"] in reproducing
    parameters = json.loads(reproducing.split("```json\n")[1].split("```")[0])
    for name in ("data_dir", "results_dir"):  # shown relative to the repository when inside
        if name in parameters:
            shown_path = config.REPO_ROOT / parameters.pop(name)  # an absolute one stays
            assert shown_path.resolve() == Path(metrics["parameters"][name]).resolve()
    assert parameters == {
        k: v for k, v in metrics["parameters"].items() if k not in ("data_dir", "results_dir")
    }


def test_the_card_says_what_the_model_is_for_and_where_it_must_not_be_trusted(saved):
    folder, metrics = saved
    card = (folder / model_card.CARD_NAME).read_text()
    assert "not a medical device" in section(card, "Intended use")
    assert model_card.limits_sentence(metrics) in card
    assert "Guangzhou" in card and "one to five" in card and "every person on one side" in card
    assert "`--adapt-to` (AdaBN) does not apply" in section(card, "At another site")
    assert "Not measured when this card was written" in section(card, "Spread over seeds")
    assert "results/replicates/seed_*/model_1/" in section(card, "Spread over seeds")


def test_the_card_gives_the_spread_over_seeds_and_the_adapted_evaluation(saved):
    _, metrics = saved
    spread = pd.DataFrame(
        {
            "seeds": [3, 3],
            "min": [0.81, 0.7],
            "max": [0.9, 0.95],
            "mean": [0.85, 0.8],
            "sd": [0.04, 0.12],
        },
        index=["auc", "sensitivity"],
    )
    adapted = {**metrics, "adapted": {"threshold": {"threshold": 0.25}, "test": metrics["test"]}}
    card = model_card.card_text(adapted, spread=spread)
    seeds = section(card, "Spread over seeds")
    assert "3 seeds" in seeds and table_row(seeds, "sensitivity") == [
        "0.700",
        "0.950",
        "0.800",
        "0.120",
    ]
    site = section(card, "At another site")
    assert "--adapt-to FOLDER" in site and "(0.250)" in site
    assert f"AUC {shown(metrics['test'], 'auc')}" in site


def test_code_version_is_the_commit_or_says_it_is_unknown(tmp_path):
    assert model_card.code_version(tmp_path) == "unknown (not a git checkout)"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert model_card.code_version().startswith(head.stdout.strip())


def test_write_model_card_needs_a_metrics_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json does not exist"):
        model_card.write_model_card(tmp_path)
    assert not (tmp_path / model_card.CARD_NAME).exists()


def test_the_comparison_writes_the_cards_again_with_the_spread_over_seeds(saved, tmp_path):
    import shutil

    from helpers import comparison, replicates

    folder, metrics = saved
    results = tmp_path / "results"
    shutil.copytree(folder, results / "model_1")
    replicate = results / "replicates" / "seed_1" / "model_1"
    shutil.copytree(folder, replicate)
    other = json.loads((replicate / "metrics.json").read_text())
    other["parameters"]["seed"] = 1
    other["test"]["auc"] = metrics["test"]["auc"] - 0.1
    (replicate / "metrics.json").write_text(json.dumps(other))
    (results / "model_2").mkdir()
    (results / "model_2" / "metrics.json").write_text(
        json.dumps({**metrics, "model_id": "model_2"})
    )
    all_metrics = comparison.read_all_metrics(results, ["model_1", "model_2"])
    seed_runs = comparison.read_all_seed_runs(results, ["model_1"])
    cards = comparison.write_model_cards(results, all_metrics, seed_runs)
    assert cards == {m: results / m / model_card.CARD_NAME for m in ("model_1", "model_2")}
    spread = replicates.seed_spread(seed_runs["model_1"])
    seeds = section(cards["model_1"].read_text(), "Spread over seeds")
    assert "2 seeds" in seeds
    assert table_row(seeds, "auc") == [
        f"{spread.loc['auc', name]:.3f}" for name in ("min", "max", "mean", "sd")
    ]
    assert f"{metrics['test']['auc'] - 0.1:.3f}" == table_row(seeds, "auc")[0]
    alone = section(cards["model_2"].read_text(), "Spread over seeds")
    assert (
        "no replicate of this recipe was found" in alone and "--replicate-chapters model_2" in alone
    )
