"""The shared trust layer: OOD gate, intended-input check, decide stage and drift tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.data.sample import ImageSample
from meddx.exceptions import ConfigError, ModelError
from meddx.trust.decide import OOD_REASON, decide, plain_words
from meddx.trust.drift import DriftMonitor, cusum_threshold, recommend
from meddx.trust.intended import IntendedInput, check_sample
from meddx.trust.ood import DETECTORS, METHODS, OODGate, fit_ood, load_gate, threshold_for


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 600)
    features = rng.normal(size=(600, 8)) + labels[:, None] * 3.0
    logits = np.stack([-features[:, 0], features[:, 0]], axis=1)
    return features[:400], logits[:400], labels[:400], np.c_[features[400:], logits[400:]]


def test_every_detector_separates_far_inputs_and_keeps_the_flag_rate(tmp_path: Path) -> None:
    train_f, train_z, train_y, val = _clusters()
    groups = [("penultimate", 0, 4), ("stage1", 4, 8)]
    gate = fit_ood(train_f, train_z, train_y, val[:, :8], val[:, 8:], groups=groups, flag_rate=0.05)
    assert set(gate.detectors) == set(METHODS)
    for info in gate.info["methods"].values():
        assert info["val_flag_rate"] <= 0.05
    far = np.random.default_rng(1).normal(size=(50, 8)) * 0.5 + np.array([12.0, -12.0] * 4)  # far in every sense
    far_logits = np.stack([-far[:, 0], far[:, 0]], axis=1)
    for method in ("mahalanobis-layers", "mahalanobis", "knn"):
        assert np.mean([r.flagged for r in gate.assess(far, far_logits, method)]) == 1.0, method
    # saved and loaded: the same scores, and a tampered file is refused
    block = gate.to_package(tmp_path)
    again = load_gate(tmp_path, {"ood": block})
    for method in gate.detectors:
        np.testing.assert_allclose(again.scores(far, far_logits, method), gate.scores(far, far_logits, method))
    with pytest.raises(ModelError, match="12 features"):
        again.scores(np.zeros((1, 12)), np.zeros((1, 2)))
    (tmp_path / block["file"]).write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        load_gate(tmp_path, {"ood": block})
    assert load_gate(tmp_path, {}) is None


def test_layer_mahalanobis_weighs_the_network_and_the_image_equally(tmp_path: Path) -> None:
    from meddx.trust.ood import LayerMahalanobis

    assert LayerMahalanobis.weights_for([("a", 0, 1), ("b", 1, 2)]).tolist() == [1.0, 1.0]
    weights = LayerMahalanobis.weights_for([("penultimate", 0, 4), ("stage1", 4, 6), ("stage2", 6, 8), ("input", 8, 9)])
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(300, 9)), rng.integers(0, 2, 300)
    groups = [("penultimate", 0, 4), ("stage1", 4, 8), ("input", 8, 9)]
    det = LayerMahalanobis().fit(x, np.zeros((300, 2)), labels, groups)
    odd_image = x[:5].copy()
    odd_image[:, 8] = 40.0  # only the image statistics are off: half the evidence by itself
    odd_network = x[:5].copy()
    odd_network[:, 4:8] = 40.0  # one network group off: a third of the network's half
    assert (det.score(odd_image, None) > det.score(odd_network, None)).all()
    again = LayerMahalanobis.from_state(det.state())
    np.testing.assert_allclose(again.score(odd_image, None), det.score(odd_image, None))
    old = {k: v for k, v in det.state().items() if k != "weights"}  # a package fitted before weights: plain sum
    assert LayerMahalanobis.from_state(old).weights.tolist() == [1.0, 1.0, 1.0]


def test_negative_answers_meet_a_stricter_rule_out_threshold(tmp_path: Path) -> None:
    from meddx.trust.ood import RULE_OUT_RATE

    train_f, train_z, train_y, val = _clusters()
    gate = fit_ood(train_f, train_z, train_y, val[:, :8], val[:, 8:], flag_rate=0.05)
    negative = 0
    rule_out = gate.rule_out_threshold(negative)
    assert rule_out is not None and rule_out <= gate.thresholds[gate.method]
    val_scores = gate.scores(val[:, :8], val[:, 8:])
    called_negative = val[:, 8:].argmax(axis=1) == negative
    assert abs(np.mean(val_scores[called_negative] > rule_out) - RULE_OUT_RATE) < 0.05
    again = load_gate(tmp_path, {"ood": gate.to_package(tmp_path)})  # the reference travels with the package
    assert again.rule_out_threshold(negative) == pytest.approx(rule_out)
    assert gate.rule_out_threshold(None) is None
    verdict = gate.assess(val[:1, :8], val[:1, 8:], negative_class=negative)[0].to_dict()
    assert verdict["rule_out_threshold"] == pytest.approx(rule_out)
    between = {"method": gate.method, "score": (rule_out + gate.thresholds[gate.method]) / 2,
               "threshold": gate.thresholds[gate.method], "flagged": False, "rule_out_threshold": rule_out}
    referred = decide({"decision": "negative", "reason": "confident"}, ood=between)
    assert referred["decision"] == "refer" and referred["reason"].startswith(OOD_REASON)
    assert "rule disease out" in referred["reason"]
    assert decide({"decision": "positive", "reason": "confident"}, ood=between)["decision"] == "positive"


def test_threshold_and_configuration_errors() -> None:
    scores = np.arange(100, dtype=float)
    assert np.mean(scores > threshold_for(scores, 0.05)) == pytest.approx(0.05)
    train_f, train_z, train_y, val = _clusters()
    with pytest.raises(ConfigError, match="flag rate"):
        fit_ood(train_f, train_z, train_y, val[:, :8], val[:, 8:], flag_rate=0.7)
    with pytest.raises(ConfigError, match="unknown"):
        fit_ood(train_f, train_z, train_y, val[:, :8], val[:, 8:], methods=("nope",), method="nope")
    small = fit_ood(train_f, train_z, train_y, val[:20, :8], val[:20, 8:])
    assert "20 validation cases" in small.info["warning"]
    assert isinstance(small, OODGate) and "energy" in DETECTORS


def _dicom(modality: str, **meta: str) -> ImageSample:
    return ImageSample(path=None, format="dicom", array=np.zeros((64, 64), np.uint16), modality=modality,
                       photometric="MONOCHROME2", meta=meta)


CHEST = IntendedInput.from_dict({"description": "chest radiographs", "dicom_modalities": ["CR", "DX"],
                                 "body_parts": ["CHEST"], "views": ["PA", "AP"], "channels": 1, "min_size": 16})


def test_intended_input_rejects_what_the_header_contradicts() -> None:
    assert check_sample(_dicom("DX", BodyPartExamined="CHEST", ViewPosition="PA"), CHEST) == []
    ct = check_sample(_dicom("CT"), CHEST)
    assert ct == ["this model reads chest radiographs (CR/DX); this file is CT"]
    knee = check_sample(_dicom("CR", BodyPartExamined="KNEE"), CHEST)
    assert "knee" in knee[0] and "BodyPartExamined" in knee[0]
    lateral = check_sample(_dicom("CR", ViewPosition="LL"), CHEST)
    assert "ViewPosition is LL" in lateral[0]
    colour = np.zeros((40, 40, 3), np.uint8)
    colour[..., 0] = 200
    photo = ImageSample(path=None, format="image", array=colour)
    assert "colour image" in check_sample(photo, CHEST)[0]
    grey_as_rgb = ImageSample(path=None, format="image", array=np.full((40, 40, 3), 90, np.uint8))
    assert check_sample(grey_as_rgb, CHEST) == []  # a grey image saved as RGB is fine
    tiny = ImageSample(path=None, format="image", array=np.zeros((8, 8), np.uint8))
    assert "at least 16 px" in check_sample(tiny, CHEST)[0]
    assert check_sample(_dicom("CT"), None) == []
    assert CHEST.to_dict()["dicom_modalities"] == ["CR", "DX"]


def test_decide_orders_rejection_then_ood_then_trust() -> None:
    trust = {"decision": "negative", "reason": "confident"}
    flagged = {"method": "mahalanobis-layers", "score": 30.0, "threshold": 8.0, "flagged": True}
    assert decide(trust, ood=flagged, rejections=["this file is CT"]) == {"decision": "rejected",
                                                                            "reason": "this file is CT"}
    referred = decide(trust, ood=flagged)
    assert referred["decision"] == "refer" and referred["reason"].startswith(OOD_REASON)
    assert decide(trust, ood={**flagged, "flagged": False}) == trust
    assert "unlike anything the model was trained on" in plain_words(referred["decision"], referred["reason"])
    assert plain_words("rejected", "this file is CT").startswith("Not analysed")
    assert "this recording is unlike" in plain_words(referred["decision"], referred["reason"], modality="signal")
    assert "this image is unlike" in plain_words(referred["decision"], referred["reason"])


def test_cusum_false_alarm_rate_and_detection_delay() -> None:
    h = cusum_threshold(0.05, 0.3, horizon=1000, false_alarm=0.05, draws=1000)
    rng = np.random.default_rng(7)
    alarms, delays = 0, []
    for _ in range(100):
        in_distribution = DriftMonitor(p0=0.05, h=h)
        alarms += any(in_distribution.update(bool(f))["alarm"] for f in rng.random(1000) < 0.05)
        shifted = DriftMonitor(p0=0.05, h=h)
        delays.append(next(i for i, f in enumerate(rng.random(1000) < 0.6, 1) if shifted.update(bool(f))["alarm"]))
    assert alarms <= 12  # 5% expected; 12/100 is far in the binomial tail
    assert max(delays) <= 50
    monitor = DriftMonitor.from_dict(shifted.to_dict())
    assert monitor.alarm and "rose" in monitor.alarm_reason
    monitor.reset()
    assert not monitor.alarm and monitor.n == 0


def test_recommendation_words() -> None:
    assert recommend(0.6, 0.05, 300)["action"] == "do not use here"
    assert recommend(0.06, 0.05, 300, ece=0.12, ece_floor=0.04)["action"] == "recalibrate on local labelled cases"
    assert recommend(0.05, 0.05, 300, ece=0.03, ece_floor=0.04)["action"] == "use as is"
