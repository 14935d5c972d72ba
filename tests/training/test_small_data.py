"""The small-data recipe (issue 17): the rule, its parts, and the cross-validated ensemble it packages."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from meddx.training import TrainConfig
from meddx.training.trainer import SMALL_DATA_MAX, SMALL_DATA_MIN, resolve_recipe
from tests._factories import make_labelled_pngs


def _sample(n: int, size: int = 128, dark: bool = True) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size), dtype=np.uint8) if dark else rng.integers(60, 200, (n, size, size), np.uint8)
    images[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 180
    return SimpleNamespace(splits={"all": (images, np.arange(n) % 2)}, meta={})


def test_auto_picks_small_data_between_the_bounds_only() -> None:
    config = TrainConfig(data="x")
    assert resolve_recipe(config, _sample(SMALL_DATA_MIN - 1, 64)).recipe == "standard"
    small = resolve_recipe(config, _sample(SMALL_DATA_MIN, 128))
    assert (small.recipe, small.cv_folds, small.select, small.augment_profile) == ("small-data", 5, "last", "shift")
    assert small.model == "cnn-small-crop" and small.size == 64 and small.batch_size == 32
    assert resolve_recipe(small, _sample(SMALL_DATA_MIN, 128)) == small  # idempotent (validate replays it)
    big = SimpleNamespace(splits={"train": (np.zeros((SMALL_DATA_MAX, 8, 8), np.uint8), np.zeros(SMALL_DATA_MAX))},
                          meta={})
    assert resolve_recipe(config, big).recipe == "standard"
    assert resolve_recipe(TrainConfig(data="x", recipe="standard"), _sample(300)).recipe == "standard"


def test_thumbnails_get_a_deep_ensemble_of_the_standard_recipe() -> None:
    thumbs = resolve_recipe(TrainConfig(data="x"), _sample(624, 28, dark=False))  # BreastMNIST
    assert (thumbs.recipe, thumbs.ensemble, thumbs.cv_folds, thumbs.model) == ("small-ensemble", 5, 0, "cnn-small")
    assert resolve_recipe(thumbs, _sample(624, 28, dark=False)) == thumbs  # idempotent
    assert resolve_recipe(TrainConfig(data="x", ensemble=3), _sample(624, 28, dark=False)).ensemble == 3  # user's
    assert resolve_recipe(TrainConfig(data="x"), _sample(SMALL_DATA_MIN - 1, 28, dark=False)).recipe == "standard"
    forced = resolve_recipe(TrainConfig(data="x", recipe="small-data"), _sample(624, 28, dark=False))
    assert forced.recipe == "small-data" and forced.model == "cnn-small" and forced.size is None
    assert forced.batch_size == 64 and forced.epochs == 11  # 499 images a fold: batch 64, ~5,000 images


def test_config_rejects_unknown_recipe_and_one_fold() -> None:
    from meddx.exceptions import ConfigError

    with pytest.raises(ConfigError, match="recipe"):
        TrainConfig(data="x", recipe="tiny").validate()
    with pytest.raises(ConfigError, match="cv_folds"):
        TrainConfig(data="x", cv_folds=1).validate()


def test_select_last_keeps_the_last_epoch() -> None:
    from meddx.models import create_model
    from meddx.training import fit

    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 12, 12), dtype=np.float32)
    y = np.arange(32) % 2
    result = fit(create_model("cnn-tiny", 2, 1), x, y, x[:8], y[:8],
                 TrainConfig(data="-", model="cnn-tiny", epochs=3, patience=1, batch_size=8, select="last"))
    assert result.best_epoch == 3 == result.epochs_run


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meddx.training import train

    base = tmp_path_factory.mktemp("cv")
    data = make_labelled_pngs(base / "data", n=SMALL_DATA_MIN, size=16)  # 16 px: forced, auto would not pick it
    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=1, cv_folds=2, threads=1, export="none",
                             recipe="small-data", out=str(base / "run")), progress=False)


def test_cv_ensemble_fits_trust_on_out_of_fold_predictions(cv_run: Path) -> None:
    package = json.loads((cv_run / "package.json").read_text())
    assert package["kind"] == "ensemble" and package["members"] == ["members/f0", "members/f1"]
    assert package["training"]["recipe"] == "small-data" and package["training"]["select"] == "last"
    trust = package["trust"]
    assert "out-of-fold" in trust["fitted_on"] and trust["n"] == SMALL_DATA_MIN == package["cv"]["n"]
    assert len(package["drift"]["reference_scores"]) == SMALL_DATA_MIN
    assert trust["warnings"] and "n=100" in trust["warnings"][0]  # 100 < 200: loose guarantees, said so
    card = (cv_run / "MODEL_CARD.md").read_text()
    assert "Out-of-fold AUC" in card and "**Warning:**" in card
    folds = [json.loads((cv_run / m / "fold.json").read_text())["fold"] for m in package["members"]]
    assert folds == [0, 1]


def test_cv_members_hold_out_disjoint_folds(cv_run: Path) -> None:
    from meddx.training.trainer import rebuild_splits

    held = []
    for member in ("f0", "f1"):
        splits, _ = rebuild_splits(cv_run / "members" / member / "config.json")
        held.append({img.tobytes() for img in splits["val"][0]})
        assert len(splits["train"][1]) + len(splits["val"][1]) == SMALL_DATA_MIN
    assert not held[0] & held[1]


def test_cv_ensemble_keeps_its_ood_gate_and_predicts(cv_run: Path) -> None:
    from meddx.inference import Pipeline

    pipe = Pipeline.load(cv_run)
    images = np.random.default_rng(1).integers(0, 255, (4, 16, 16), dtype=np.uint8)
    verdicts = pipe.assess_ood(images)
    assert verdicts is not None and len(verdicts) == 4
    proba = pipe.predict_arrays(images)
    assert proba.shape == (4, 2) and np.allclose(proba.sum(axis=1), 1)
