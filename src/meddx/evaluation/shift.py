"""What ``meddx evaluate`` and ``meddx report`` say about the data, beyond the metrics.

Two questions every evaluation answers before its figures are trusted:

* **Did the model see these images?** :func:`choose_partition` picks the partition to score:
  by default one the model never saw (the test split, or the hold-out carved at training).
  Data the model was trained or tuned on can still be scored when asked for, but the result
  says so (``seen_by_model``, ``validation: false``) and the title starts "NOT A VALIDATION".
* **Are these images like the training data?** :func:`shift_block` reports the share the
  OOD gate flags (binomial test against its in-distribution rate), a KS test of the OOD
  scores against the validation reference, the prevalence estimated without labels
  (prior-shift EM), calibration-in-the-large and ECE with its noise floor at this n, and a
  plain recommendation (:func:`meddx.trust.drift.recommend`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

SEEN_TITLE = "NOT A VALIDATION (data the model was {how})"


def _own_data(package: dict[str, Any], data: str, sample: Any) -> bool:
    trained = package.get("data") or {}
    if trained.get("dataset") and sample.meta.get("dataset") == trained.get("dataset"):
        return True
    source = trained.get("source")
    return bool(source) and Path(str(source)).expanduser().resolve() == Path(data).expanduser().resolve()


def _config_path(folder: Path, package: dict[str, Any]) -> Path:
    members = package.get("members") or []
    return (folder / members[0] / "config.json") if members else folder / "config.json"


def choose_partition(folder: Path, package: dict[str, Any], data: str, sample: Any,
                     split: str | None) -> dict[str, Any]:
    """The images, labels and groups to score, the partition's name and whether the model saw it.

    Returns ``{"split", "images", "labels", "groups", "seen_by_model"}`` (``seen_by_model``:
    None, ``"trained on"`` or ``"tuned on"``).
    """
    own = _own_data(package, data, sample)
    available = list(sample.splits)
    groups_all = sample.meta.get("groups")

    def from_sample(name: str, seen: str | None) -> dict[str, Any]:
        images, labels = sample.splits[name]
        groups = groups_all.get(name) if isinstance(groups_all, dict) else groups_all
        if groups is not None and len(groups) != len(labels):
            groups = None
        return {"split": name, "images": images, "labels": labels, "groups": groups, "seen_by_model": seen}

    if not own:
        if split is None:
            split = "test" if "test" in sample.splits else "all" if available == ["all"] else None
            if split is None:
                raise ConfigError(f"{data} has no test split", field="split", hint=f"Pass --split, one of {available}")
        if split not in sample.splits:
            raise ConfigError(f"no split {split!r} in {data}", field="split", hint=f"Choose one of {available}")
        return from_sample(split, None)

    seen_by_split = {"train": "trained on", "all": "trained on", "val": "tuned on (early stopping, calibration, "
                     "thresholds)"}
    if split is None and "test" in sample.splits:
        return from_sample("test", None)
    if split in (None, "holdout"):
        config = _config_path(folder, package)
        if config.is_file() and (config.parent / "holdout.json").is_file():
            from meddx.training.trainer import rebuild_splits

            rebuilt, _ = rebuild_splits(config)
            images, labels = rebuilt["holdout"]
            return {"split": "holdout", "images": images, "labels": labels, "groups": None, "seen_by_model": None}
        raise ConfigError(
            f"the model was trained and tuned on every image of {data}: no partition of it is unseen",
            field="split", hint=f"Evaluate on data from elsewhere, retrain with `meddx train {data} "
            "--holdout-fraction 0.2` to keep a hold-out, or pass --split all to score seen images "
            "(reported as not a validation)")
    if split not in sample.splits:
        raise ConfigError(f"no split {split!r} in {data}", field="split", hint=f"Choose one of {available}")
    return from_sample(split, seen_by_split.get(split))


def seen_title(seen: str | None) -> str:
    """The title prefix for scores on data the model saw ("" when it did not)."""
    return f"{SEEN_TITLE.format(how=seen)}: " if seen else ""


def shift_block(pipeline: Any, images: np.ndarray, labels: np.ndarray | None = None,
                positive_index: int | None = None) -> dict[str, Any] | None:
    """Site-shift figures for ``images`` (and ``labels`` when known); None without an OOD gate."""
    from meddx.calibration.metrics import ece, ece_noise_floor
    from meddx.calibration.prior_shift import em_priors
    from meddx.trust.drift import binomial_p_greater, ks_two_sample, recommend

    gate = pipeline.ood
    if gate is None:
        return None
    logits, features = pipeline.logits_and_features(images)
    scores = gate.scores(features, logits)
    flagged = scores > gate.thresholds[gate.method]
    n, k = len(scores), int(flagged.sum())
    calibrated = pipeline.trust.calibrator.transform(pipeline.predict_logits(images))
    block: dict[str, Any] = {
        "ood_method": gate.method, "n": n, "flagged": k, "flag_share": k / n if n else None,
        "expected_flag_rate": gate.flag_rate,
        "flag_share_test": {"test": "one-sided binomial, H0: flag rate = the gate's in-distribution rate",
                            "p_value": binomial_p_greater(k, n, gate.flag_rate)},
    }
    reference = gate.reference.get(f"val_scores/{gate.method}")
    if reference is not None and len(reference) and n >= 2:
        block["ood_score_ks"] = {**ks_two_sample(scores, reference), "reference": "validation OOD scores",
                                 "n_reference": int(len(reference))}
    train_prior = (pipeline.package.get("trust") or {}).get("train_priors")
    counts = pipeline.package.get("data") or {}
    if calibrated.shape[1] == 2:
        pos = 1 if positive_index is None else int(positive_index)
        # EM from the validation prevalence the calibrator saw, as the package's trust layer knows it
        prior = np.asarray(train_prior, dtype=np.float64) if train_prior is not None else calibrated.mean(axis=0)
        _, priors = em_priors(calibrated, prior)
        block["estimated_prevalence"] = {"value": float(priors[pos]), "method": "prior-shift EM (Saerens 2002), "
                                         "no labels", "n_train": counts.get("train")}
    ece_value = floor = citl = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        ece_value = float(ece(calibrated, y))
        floor_info = ece_noise_floor(calibrated, draws=500)
        floor = floor_info["p95"]
        block["ece"] = {"value": ece_value, "noise_floor_p95": floor, "noise_floor_mean": floor_info["mean"],
                        "n": n, "note": "ECE a perfectly calibrated model with these probabilities shows at this n "
                        "(95th percentile of 500 simulations): a measured ECE below it is within sampling noise"}
        if calibrated.shape[1] == 2:
            pos = 1 if positive_index is None else int(positive_index)
            citl = float(calibrated[:, pos].mean() - np.mean(y == pos))
            block["calibration_in_the_large"] = {"value": citl, "observed_prevalence": float(np.mean(y == pos)),
                                                 "mean_predicted": float(calibrated[:, pos].mean())}
    block["recommendation"] = recommend(block["flag_share"] or 0.0, gate.flag_rate, n, ece=ece_value,
                                        ece_floor=floor, calibration_in_the_large=citl)
    return block
