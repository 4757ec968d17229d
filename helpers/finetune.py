"""Fine-tuning a pretrained base: unfreeze its top layers safely, and choose how on validation.

The second stage of TensorFlow's transfer-learning guide, which the case study followed for
its models 4 and 5 but stopped before: with the head trained on a frozen base, unfreeze the
top of the base and train on at a low learning rate, the base still called with
``training=False``. :func:`unfreeze_top` keeps every ``BatchNormalization`` layer frozen: the
book's ImageNet weights have batch normalisation folded into the convolutions
(:mod:`helpers.imagenet`), so a BN layer that learns would no longer be the network it was
(in a probe, trainable BN layers collapsed fine-tuning within two epochs).

:func:`run_search` trains a few fine-tuning configurations (how many layers, the learning
rate; :class:`FineTuning` can also change augmentation and the input size), each from the
same trained head, and scores them on the
**validation** images only; the test split is removed before anything is built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.ablation import Decision, _without_test, validation_row
from helpers.data import ChestXrays


def unfreeze_top(base, n_layers: int) -> list[str]:
    """Make the top ``n_layers`` layers of ``base`` trainable, every other layer and every
    ``BatchNormalization`` layer frozen. Returns the names of the layers made trainable.

    Raises
    ------
    ValueError
        If ``n_layers`` is negative or larger than the base's number of layers.
    """
    import keras

    if (
        isinstance(n_layers, bool)
        or not isinstance(n_layers, (int, np.integer))
        or not 0 <= n_layers <= len(base.layers)
    ):
        raise ValueError(
            f"n_layers must be an integer in [0, {len(base.layers)}], got {n_layers!r}"
        )
    base.trainable = True  # Keras: a layer is trainable only if its parents are
    trainable = []
    for position, layer in enumerate(base.layers):
        train_it = position >= len(base.layers) - n_layers and not isinstance(
            layer, keras.layers.BatchNormalization
        )
        layer.trainable = train_it
        if train_it and layer.weights:
            trainable.append(layer.name)
    if n_layers == 0:
        base.trainable = False
    return trainable


@dataclass(frozen=True)
class FineTuning:
    """One configuration of the fine-tuning stage.

    Attributes
    ----------
    name : str
    layers : int
        How many of the base's top layers are unfrozen (0: the frozen base, head only).
    learning_rate : float
        RMSprop's learning rate for the fine-tuning epochs.
    augment : bool
        Small random rotations, shifts and zooms during fine-tuning.
    image_scale : float
        Input size relative to the chapter's ``image_size``.
    """

    name: str
    layers: int
    learning_rate: float = 1e-5
    augment: bool = False
    image_scale: float = 1.0


#: The frozen base with its head, then the recipe (the guide's: top layers, RMSprop at a
#: tenth of the head's rate, here 1e-5). Rows measured in earlier builds were cut for the
#: build's time budget, because validation never told them from the recipe, a difference the
#: rule cannot act on: "top 54 layers, 1e-5" (within +0.0007, intervals about +-0.003; the
#: slowest row) and "top 24 layers, 3e-5" (+0.0001, -0.0004 to +0.0007, Holm p 0.71 in the
#: builds of 56e7abf and 0041d5b; 44 s of fine-tuning). ``FineTuning(..., learning_rate=3e-5)``
#: added here runs it again.
CONFIGURATIONS: tuple[FineTuning, ...] = (
    FineTuning("frozen base (head only)", layers=0),
    FineTuning("top 24 layers, 1e-5", layers=24),
)

#: The guide's recipe: trained when no search runs (``search_epochs=0``), and kept unless a
#: configuration beats it beyond the noise of choosing (:func:`best_configuration`).
RECIPE = CONFIGURATIONS[1]

#: The column of :func:`run_search`'s table with each row's paired AUC difference to the
#: recipe (and its ``low``, ``high``, ``p`` and ``p (Holm)`` columns).
DIFFERENCE = "AUC - recipe"


def compile_logit_model(model, learning_rate: float) -> None:
    """RMSprop at ``learning_rate``, binary cross-entropy on logits, accuracy at logit 0."""
    import keras

    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )


def run_search(
    make_parts: Callable,
    assemble: Callable,
    load: Callable[[int], ChestXrays],
    configurations: tuple[FineTuning, ...] = CONFIGURATIONS,
    *,
    image_size: int,
    head_epochs: int,
    fine_tune_epochs: int,
    batch_size: int,
    seed: int,
    head_learning_rate: float = 1e-4,
    target_sensitivity: float,
    recipe: str = RECIPE.name,
) -> pd.DataFrame:
    """Train each configuration from a trained head; score it on validation only.

    Parameters
    ----------
    make_parts : callable
        ``make_parts(input_shape) -> (base_model, head)``: the chapter's frozen pretrained
        base and its untrained head.
    assemble : callable
        ``assemble(input_shape, base_model, head, augment=bool) -> keras.Model``.
    load : callable
        ``load(image_size) -> ChestXrays``; called once per size.
    image_size, head_epochs, fine_tune_epochs, batch_size, seed
        The same for every configuration (a configuration's ``image_scale`` multiplies the
        size). The head is trained once per size, on the frozen base, and every
        configuration at that size starts from a copy of it.
    recipe : str
        The configuration every row is paired with (default :data:`RECIPE`'s name); one of
        ``configurations``.

    Returns
    -------
    pandas.DataFrame
        One row per configuration, indexed by name: layers, learning rate, augmentation,
        image size, the validation metrics of :func:`helpers.ablation.validation_row`, the
        paired difference of its AUC minus the recipe's on the same validation images (at
        every input size the split holds the same files, checked) with its 95% interval,
        persons resampled together for both
        (:func:`helpers.bootstrap.paired_person_bootstrap`), its two-sided p-value and that
        p-value Holm-adjusted over the other rows (:data:`DIFFERENCE` columns; 0 and NaN for
        the recipe's row), and the seconds of fine-tuning.
    """
    from helpers.ablation import holm_over_candidates
    from helpers.bootstrap import paired_person_bootstrap
    from helpers.data import persons_of
    from helpers.evaluate import predict_split
    from helpers.train import fit, set_seed

    names = [c.name for c in configurations]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be unique, got {names}")
    if recipe not in names:
        raise ValueError(f"the recipe {recipe!r} is not one of the configurations: {names}")

    heads: dict[int, tuple] = {}
    datasets: dict[int, ChestXrays] = {}
    rows = []
    scored: dict[str, tuple[list, np.ndarray, np.ndarray, np.ndarray]] = {}
    for configuration in configurations:
        size = int(round(image_size * configuration.image_scale))
        if size not in datasets:
            datasets[size] = _without_test(load(size))
        xrays = datasets[size]
        shape = xrays.train.images.shape[1:]
        if size not in heads:
            set_seed(seed)
            base, head = make_parts(shape)
            model = assemble(shape, base, head, augment=False)
            compile_logit_model(model, head_learning_rate)
            fit(model, xrays, epochs=head_epochs, batch_size=batch_size, seed=seed, verbose=0)
            heads[size] = [w.copy() for w in head.get_weights()]
        set_seed(seed)
        base, head = make_parts(shape)
        head.build((None, *base.output.shape[1:]))
        head.set_weights(heads[size])
        model = assemble(shape, base, head, augment=configuration.augment)
        seconds = 0.0
        if configuration.layers > 0 and fine_tune_epochs > 0:
            unfreeze_top(base, configuration.layers)
            compile_logit_model(model, configuration.learning_rate)
            start = time.perf_counter()
            fit(model, xrays, epochs=fine_tune_epochs, batch_size=batch_size, seed=seed, verbose=0)
            seconds = time.perf_counter() - start
        scores = predict_split(model, xrays.val, batch_size=batch_size).scores
        scored[configuration.name] = (
            list(xrays.val.paths),
            xrays.val.labels,
            np.array(persons_of(xrays.val)),
            scores,
        )
        rows.append(
            {
                "configuration": configuration.name,
                "layers": configuration.layers,
                "learning rate": configuration.learning_rate,
                "augmentation": "yes" if configuration.augment else "no",
                "image size": size,
                **validation_row(
                    xrays.val.labels,
                    scores,
                    persons_of(xrays.val),
                    target_sensitivity=target_sensitivity,
                    seed=seed,
                ),
                "fine-tuning s": round(seconds, 1),
            }
        )
    table = pd.DataFrame(rows).set_index("configuration")
    # Each row against the recipe, image by image on the same validation images.
    recipe_paths, labels, persons, recipe_scores = scored[recipe]
    paired = []
    for name, (paths, _, _, scores) in scored.items():
        if paths != recipe_paths:
            raise ValueError(
                f"configuration {name!r} was scored on other validation images than the "
                f"recipe {recipe!r}"
            )
        if name == recipe:  # the reference itself: no test
            paired.append((0.0, 0.0, 0.0, np.nan))
            continue
        auc = paired_person_bootstrap(
            labels, scores, recipe_scores, persons, threshold_a=0.5, threshold_b=0.5, seed=seed
        )["differences"]["auc"]
        difference = auc["difference"]
        paired.append((difference.value, difference.ci_low, difference.ci_high, auc["p_value"]))
    at = table.columns.get_loc("fine-tuning s")
    for offset, suffix in enumerate(("", " low", " high", " p")):
        table.insert(at + offset, f"{DIFFERENCE}{suffix}", [row[offset] for row in paired])
    table.insert(
        at + 4,
        f"{DIFFERENCE} p (Holm)",
        holm_over_candidates(table, recipe=recipe, difference=DIFFERENCE),
    )
    return table


def best_configuration(table: pd.DataFrame, *, recipe: str = RECIPE.name) -> str:
    """The configuration the rule adopts (:func:`search_decision`): ``recipe`` unless a
    configuration beats it beyond the noise of choosing."""
    return search_decision(table, recipe=recipe).choice


def search_decision(table: pd.DataFrame, *, recipe: str = RECIPE.name) -> Decision:
    """The choice rule of the search, fixed before anything is trained
    (:func:`helpers.ablation.decide` on the :data:`DIFFERENCE` columns): a configuration
    replaces ``recipe`` only when its paired AUC difference to the recipe is positive and
    its p-value, Holm-adjusted over the other configurations, is below
    :data:`helpers.ablation.ALPHA`; of those, the largest difference wins; otherwise the
    recipe is kept. Each configuration is trained with one seed, so the recipe's seed
    spread is not part of this rule. Returns a :class:`helpers.ablation.Decision`."""
    from helpers.ablation import decide

    if table.empty:
        raise ValueError("the search table is empty")
    return decide(
        table,
        recipe=recipe,
        difference=DIFFERENCE,
        seed_aucs={},
        seeds_expected=False,
        rows="configurations",
    )


def configuration_named(
    name: str, configurations: tuple[FineTuning, ...] = CONFIGURATIONS
) -> FineTuning:
    """The configuration called ``name``, or a ValueError listing the names."""
    for configuration in configurations:
        if configuration.name == name:
            return configuration
    raise ValueError(
        f"no configuration {name!r}; configurations: {', '.join(c.name for c in configurations)}"
    )


@dataclass(frozen=True)
class Search:
    """What :func:`search_on_validation` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`run_search`'s table; empty when no search ran.
    choice : FineTuning
        The chosen configuration (:func:`search_decision`); :data:`RECIPE` when no
        search ran.
    image_size : int
        The chosen configuration's input size.
    head_epochs, search_epochs : int
        The search's budget; ``search_epochs`` 0: no search ran.
    seed : int
    decision : helpers.ablation.Decision or None
        The rule's evidence and statement; None when no search ran.
    """

    table: pd.DataFrame
    choice: FineTuning
    image_size: int
    head_epochs: int
    search_epochs: int
    seed: int
    decision: Decision | None = None

    @property
    def ran(self) -> bool:
        """Whether a search ran (``search_epochs`` above 0)."""
        return self.search_epochs > 0


def search_on_validation(
    make_parts: Callable, assemble: Callable, params, *, head_learning_rate: float = 1e-3
) -> Search:
    """Run model_7's validation search (:func:`run_search`) and choose its configuration.

    The chapter's first step of three: then :func:`write_search` writes it to the results,
    and :func:`helpers.report.show_search` and :func:`helpers.report.glue_search` show it.
    With ``search_epochs`` 0 nothing is searched and :data:`RECIPE` is the choice.

    Parameters
    ----------
    make_parts, assemble : callable
        As :func:`run_search` takes them: the chapter's own base, head and model builder.
    params : helpers.parameters.ChapterParameters or mapping
        The chapter's parameters (``data_dir``, ``image_size``, ``head_epochs``,
        ``search_epochs``, ``batch_size``, ``seed``, ...).
    head_learning_rate : float
        The learning rate of the head's training on the frozen base.

    Returns
    -------
    Search
    """
    from helpers.data import load_chest_xrays

    p = params.as_dict() if hasattr(params, "as_dict") else dict(params)
    budget = {
        "head_epochs": int(p["head_epochs"]),
        "search_epochs": int(p["search_epochs"]),
        "seed": p["seed"],
    }
    if budget["search_epochs"] == 0:
        return Search(pd.DataFrame(), RECIPE, image_size=p["image_size"], **budget)

    def load(size: int) -> ChestXrays:
        return load_chest_xrays(
            p["data_dir"],
            image_size=size,
            color_mode="rgb",
            seed=p["seed"],
            on_bad_image=p.get("on_bad_image", "stop"),
        )

    table = run_search(
        make_parts,
        assemble,
        load,
        image_size=p["image_size"],
        head_epochs=p["head_epochs"],
        fine_tune_epochs=p["search_epochs"],
        batch_size=p["batch_size"],
        seed=p["seed"],
        head_learning_rate=head_learning_rate,
        target_sensitivity=p["target_sensitivity"],
    )
    decision = search_decision(table)
    choice = configuration_named(decision.choice)
    size = int(table.loc[choice.name, "image size"])
    return Search(table, choice, image_size=size, decision=decision, **budget)


#: The results folder of model_7's search (``search.csv``, ``choice.json``).
SEARCH_RESULTS = "model_7_search"


def write_search(search: Search, results_dir: str | os.PathLike) -> Path | None:
    """Write ``<results_dir>/model_7_search/search.csv`` and ``choice.json`` (the choice,
    the budget and the rule's evidence and statement,
    :meth:`helpers.ablation.Decision.as_dict`), atomically
    (:class:`helpers.results.ResultsWriter`).

    Returns
    -------
    pathlib.Path or None
        The folder written; None, with nothing written, when no search ran.
    """
    from helpers.results import ResultsWriter

    if not search.ran:
        return None
    with ResultsWriter(results_dir, SEARCH_RESULTS) as writer:
        search.table.to_csv(writer.path("search.csv"))
        writer.write_json(
            "choice.json",
            {
                "choice": search.choice.name,
                "head_epochs": search.head_epochs,
                "search_epochs": search.search_epochs,
                "seed": search.seed,
                "decision": (search.decision or search_decision(search.table)).as_dict(),
            },
        )
    return Path(results_dir) / SEARCH_RESULTS


#: Inverse regularisation strengths the frozen-feature probe tries (chosen on validation).
PROBE_C = (0.001, 0.01, 0.1, 1.0)


def frozen_feature_probe(model, xrays: ChestXrays, model_id: str, *, target_sensitivity: float):
    """Are the frozen features or the trained head the limit? A logistic regression fitted
    to convergence on the same frozen base's pooled features.

    The base's outputs (:func:`helpers.features.frozen_features`, shared on disk with
    training and with the other chapters on the same base; pooled as the model pools them)
    for the training, validation and test images; scikit-learn's logistic regression
    fitted on the training features for each C in :data:`PROBE_C`, the C with the highest
    validation AUC kept; then the chapter's evaluation steps (threshold on validation, the
    test set scored once). Returns the :class:`~helpers.evaluate.Evaluation` of
    ``<model_id>_logistic_probe``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from helpers import evaluate
    from helpers.features import frozen_features
    from helpers.train import frozen_base, split_at_layer

    base, _ = frozen_base(model)
    if base is None:
        raise ValueError(f"model {model.name!r} has no frozen base to probe")
    extractor, _ = split_at_layer(model, base)

    def pooled(images: np.ndarray) -> np.ndarray:
        # The base's outputs (cached on disk, shared with training), averaged over the
        # spatial positions as the chapters' GlobalAveragePooling2D does.
        return frozen_features(extractor, images).mean(axis=(1, 2))

    features = {name: pooled(xrays[name].images) for name in ("train", "val")}
    fits = {}
    for c in PROBE_C:
        fit = LogisticRegression(C=c, max_iter=5000).fit(features["train"], xrays.train.labels)
        fits[c] = (roc_auc_score(xrays.val.labels, fit.decision_function(features["val"])), fit)
    best_c = max(PROBE_C, key=lambda c: (fits[c][0], -c))
    fit = fits[best_c][1]

    def predictions(name: str, images_features) -> evaluate.Predictions:
        split = xrays[name]
        return evaluate.Predictions(
            split=name,
            paths=list(split.paths),
            labels=split.labels.copy(),
            scores=fit.predict_proba(images_features)[:, 1],
        )

    val = predictions("val", features["val"])
    threshold = evaluate.threshold_on_validation(val, target_sensitivity=target_sensitivity)
    name = f"{model_id}_logistic_probe"
    evaluate.claim_test_set(xrays, name)
    test = predictions("test", pooled(xrays.test.images))
    result = evaluate.summarise(name, val, test, threshold)
    result.metrics["probe"] = {
        "C": best_c,
        "val_auc_by_C": {str(c): float(fits[c][0]) for c in PROBE_C},
    }
    return result
