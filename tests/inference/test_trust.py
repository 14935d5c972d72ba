"""The prediction schema end to end: calibration, conformal sets, abstention, ensembles, Bayesian heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.inference import Pipeline
from meddx.inference.schema import Prediction
from meddx.training import TrainConfig, train
from tests._factories import make_labelled_pngs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled_pngs(tmp_path_factory.mktemp("trust") / "imgs", n=48, size=16)


@pytest.fixture(scope="module")
def ensemble(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "run"
    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=3, ensemble=2, drop_rate=0.2, threads=1,
                             calibration="temperature", out=str(out)), progress=False)


def test_package_stores_a_fitted_trust_layer(ensemble: Path) -> None:
    member = json.loads((ensemble / "members" / "m0" / "package.json").read_text())
    trust = member["trust"]
    assert trust["calibration"]["name"] == "temperature" and trust["n"] > 0
    assert trust["conformal"]["alpha"] == pytest.approx(0.1) and trust["conformal"]["fitted"]
    assert trust["abstention"]["target_risk"] == pytest.approx(0.05)
    assert set(trust["validation"]) == {"before", "after"}


def test_ensemble_package_holds_members_on_one_split(ensemble: Path) -> None:
    package = json.loads((ensemble / "package.json").read_text())
    assert package["kind"] == "ensemble" and package["members"] == ["members/m0", "members/m1"]
    configs = [json.loads((ensemble / m / "config.json").read_text()) for m in package["members"]]
    assert [c["seed"] for c in configs] == [0, 1] and {c["split_seed"] for c in configs} == {0}
    assert "ensemble mean" in package["trust"]["fitted_on"]
    pipe = Pipeline.load(ensemble)
    assert len(pipe.members) == 2 and pipe.default_uncertainty() == "ensemble"


def test_prediction_schema_for_each_method(ensemble: Path, data: Path) -> None:
    files = sorted(data.glob("*.png"))[:2]
    single = Pipeline.load(ensemble / "members" / "m0")
    for pipe, method in ((single, "none"), (single, "mc-dropout"), (single, "tta"), (Pipeline.load(ensemble), "auto")):
        results = pipe.predict(files, uncertainty=method, samples=8)
        assert len(results) == 2
        for r in results:
            p = Prediction.model_validate({k: v for k, v in r.items() if k != "file"})
            assert abs(sum(p.calibrated_probabilities.values()) - 1) < 1e-6
            assert p.decision.decision in ("positive", "negative", "refer") and p.decision.reason
            assert p.prediction_set and set(p.prediction_set) <= set(p.class_names)
            assert p.coverage == pytest.approx(0.9)
            assert p.uncertainty.predictive_entropy == pytest.approx(
                p.uncertainty.expected_entropy + p.uncertainty.mutual_information, abs=1e-9)
            if method in ("mc-dropout", "tta"):
                assert p.uncertainty.samples == 8 and p.uncertainty.sample_probabilities_sd is not None
            if len(p.prediction_set) > 1 and pipe.trust.policy.refer_on_ambiguous_set:
                assert p.decision.decision == "refer"
            assert p.ood is not None and p.ood.method == "mahalanobis-layers"  # every package carries its gate
            if p.ood.flagged:
                assert p.decision.decision == "refer" and "outside the model's training data" in p.decision.reason
    ens = Pipeline.load(ensemble).predict(files[:1])[0]
    assert ens["uncertainty"]["method"] == "ensemble" and ens["uncertainty"]["samples"] == 2


def test_calibrated_probabilities_follow_the_stored_temperature(ensemble: Path, data: Path) -> None:
    pipe = Pipeline.load(ensemble / "members" / "m0")
    t = pipe.package["trust"]["calibration"]["state"]
    images = np.stack([np.asarray(Image.open(f)) for f in
                       sorted(data.glob("*.png"))[:4]])
    logits = pipe.predict_logits(images)
    expected = np.exp(logits / _temperature(t))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(pipe.predict_arrays(images), expected, atol=1e-6)
    raw = pipe.predict_arrays(images, calibrated=False)
    assert np.allclose(raw.sum(axis=1), 1)


def _temperature(state: dict) -> float:
    for key in ("temperature", "t", "T", "temperature_"):
        if key in state:
            return float(state[key])
    return float(next(v for v in state.values() if isinstance(v, (int, float))))


def test_bayes_head_trains_and_predicts_with_posterior_draws(data: Path, tmp_path: Path) -> None:
    run = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, head="bayes", threads=1,
                            out=str(tmp_path / "bayes")), progress=False)
    pipe = Pipeline.load(run)
    assert json.loads((run / "package.json").read_text())["head"] == "bayes"
    assert pipe.default_uncertainty() == "bayes"
    result = pipe.predict(sorted(data.glob("*.png"))[:1], samples=6)[0]
    assert result["uncertainty"]["method"] == "bayes" and result["uncertainty"]["samples"] == 6


def test_holdout_is_carved_by_group_and_never_trained_on(data: Path, tmp_path: Path) -> None:
    run = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=1, holdout_fraction=0.25, threads=1,
                            out=str(tmp_path / "holdout")), progress=False)
    holdout = json.loads((run / "holdout.json").read_text())
    package = json.loads((run / "package.json").read_text())
    n = holdout["n_train_split"]
    assert 0.15 * n <= len(holdout["indices"]) <= 0.35 * n
    val_from_train = package["data"]["val"] if "re-split" in package["data"]["split"] else 0
    assert package["data"]["train"] + val_from_train + len(holdout["indices"]) == n
    assert "held out" in package["data"]["split"]


def test_auto_calibration_keeps_temperature_only_when_it_helps_out_of_fold() -> None:
    from meddx.inference.trust import fit_trust

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 600)
    labels = (rng.random(600) < 1 / (1 + np.exp(-true_logit))).astype(int)
    calibrated = np.stack([np.zeros(600), true_logit], axis=1)  # the truth: nothing to fix
    overconfident = calibrated * 4
    kept = fit_trust(calibrated, labels)
    fixed = fit_trust(overconfident, labels)
    assert kept["calibration"]["name"] == "identity"
    assert fixed["calibration"]["name"] == "temperature"
    assert fixed["calibration_selection"]["cv_nll"]["temperature"] < fixed["calibration_selection"]["cv_nll"]["identity"]
    assert set(kept["calibration_selection"]["cv_nll"]) == {"identity", "temperature"}


def test_package_without_trust_layer_predicts_plain_softmax(ensemble: Path, data: Path, tmp_path: Path) -> None:
    import shutil

    member = tmp_path / "m0"
    shutil.copytree(ensemble / "members" / "m0", member)
    package = json.loads((member / "package.json").read_text())
    package.pop("trust")
    (member / "package.json").write_text(json.dumps(package))
    pipe = Pipeline.load(member)
    files = sorted(data.glob("*.png"))[:2]
    (result,) = pipe.predict(files[:1])
    assert abs(sum(result["calibrated_probabilities"].values()) - 1) < 1e-6
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    proba = pipe.predict_arrays(images)
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1)
