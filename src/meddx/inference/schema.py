"""One prediction schema for every model, modality and interface (CLI, Python API, REST).

A :class:`Prediction` carries what a clinician needs to act on a model's output
(``task`` says which optional parts are filled: ``mask`` for segmentation, ``boxes``
for detection, class probabilities for every task, e.g. "vessel present" or the
most frequent object class):
the raw and calibrated class probabilities, how uncertain the model is and why
(sampled uncertainty split into aleatoric and epistemic parts), the conformal
prediction set, the decision (``positive``/``negative``/``refer`` for binary
tasks, a class name or ``refer`` otherwise) with its reason, the model version,
and a handle to the explanation when one was asked for.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "meddx-prediction/1"


class Uncertainty(BaseModel):
    """Uncertainty of one prediction (entropies in nats)."""

    method: str = Field(description="none | mc-dropout | bayes | tta | ensemble")
    samples: int = Field(description="draws the measures come from (1 for none)")
    predictive_entropy: float = Field(description="total uncertainty: entropy of the mean prediction")
    expected_entropy: float = Field(description="aleatoric part: mean entropy of the draws")
    mutual_information: float = Field(description="epistemic part: predictive minus expected entropy")
    max_probability: float = Field(description="largest class probability of the mean of the draws")
    sample_probabilities_sd: dict[str, float] | None = Field(
        None, description="standard deviation of each class probability across draws")


class Decision(BaseModel):
    decision: str = Field(
        description="positive | negative | refer (binary), or a class name | refer; rejected when the input "
        "is not what the model was made for")
    reason: str


class OOD(BaseModel):
    """Out-of-distribution verdict: is this input like the model's training data?"""

    method: str = Field(description="mahalanobis | knn | energy | msp (see meddx.trust.ood)")
    score: float = Field(description="higher = farther from the training data")
    threshold: float = Field(description="scores above it are flagged (chosen on validation data)")
    flagged: bool
    flag_rate: float | None = Field(None, description="share of in-distribution validation cases flagged")
    rule_out_threshold: float | None = Field(
        None, description="a negative answer with a score above it is referred (stricter than threshold)")


class InputCheck(BaseModel):
    """The intended-input check run before the model (see meddx.trust.intended)."""

    passed: bool
    reasons: list[str] = Field(default_factory=list, description="why the input was rejected")


class Explanation(BaseModel):
    """A saliency map and the two checks meddx computes for every explanation."""

    method: str
    target: str = Field(description="class the map explains")
    overlay: str | None = Field(None, description="PNG of the map over the (windowed) input image")
    sanity_spearman: float | None = Field(
        None, description="rank correlation with the map of a weight-randomised model (low = depends on weights)")
    deletion_auc: float | None = Field(None, description="target probability as salient pixels are removed")
    random_deletion_auc: float | None = Field(None, description="the same for random maps (higher is expected)")
    insertion_auc: float | None = None
    random_insertion_auc: float | None = None


class Mask(BaseModel):
    """A segmentation result (``task == "segmentation"``): a label mask on the input's own pixel grid."""

    classes: list[str] = Field(description="label values: index 0 is background, index k is classes[k]")
    shape: list[int] = Field(description="rows, columns (, slices) of the mask: the input's grid")
    mask: str | None = Field(None, description="file of the label mask (PNG for 2-D, NIfTI for 3-D)")
    probability_map: str | None = Field(
        None, description="file of the calibrated foreground probability per pixel (PNG, 0-255 = 0-1)")
    uncertainty_map: str | None = Field(
        None, description="file of the per-pixel uncertainty (MC-dropout or ensemble standard deviation, PNG)")
    overlay: str | None = Field(None, description="PNG of the mask over the input image")
    fraction: dict[str, float] = Field(
        default_factory=dict, description="share of the pixels (inside the field of view, when known) per class")
    mean_uncertainty: float | None = Field(None, description="mean per-pixel uncertainty inside the mask")
    dicom_seg: str | None = Field(None, description="DICOM Segmentation object written for a DICOM input")


class Box(BaseModel):
    """One detected object (``task == "detection"``), in the input's pixel coordinates."""

    label: str
    score: float = Field(description="detector confidence, 0-1")
    box: list[float] = Field(description="x0, y0, x1, y1 in pixels of the input image (x right, y down)")


class Synthetic(BaseModel):
    """A synthetic image (``task`` ``restoration`` or ``translation``): always marked as derived."""

    derived: bool = Field(True, description="always true: the image was computed, not acquired")
    kind: str = Field(description="restoration | translation")
    method: str = Field(description="the model (or baseline) that made it")
    banner: str = Field(description="the text shown over the image wherever it is displayed")
    image: str | None = Field(None, description="PNG of the synthetic image, with the banner")
    image_raw: str | None = Field(None, description="16-bit PNG of the synthetic pixels, no banner (for analysis)")
    dicom: str | None = Field(None, description="DICOM written for a DICOM input (ImageType DERIVED, new UIDs)")
    dose: float | None = Field(None, description="dose fraction of the input (restoration)")
    source_modality: str | None = None
    target_modality: str | None = None
    checks: dict[str, Any] = Field(
        default_factory=dict, description="hallucination checks: structures added or removed, downstream agreement")


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    schema_version: str = SCHEMA_VERSION
    input: str = Field(description="file, record or row the prediction is for")
    modality: str
    task: str = Field("classification",
                      description="classification | segmentation | detection | restoration | translation")
    model: str
    model_version: str
    class_names: list[str]
    probabilities: dict[str, float] = Field(description="the model's softmax output (empty when rejected)")
    calibrated_probabilities: dict[str, float]
    calibration: str = Field(description="calibrator applied (identity when none)")
    prediction: str | None = Field(description="most probable class after calibration (None when rejected)")
    uncertainty: Uncertainty | None = Field(description="None when the input was rejected")
    prediction_set: list[str] | None = Field(None, description="conformal set; None when not fitted")
    coverage: float | None = Field(None, description="target coverage of the prediction set")
    decision: Decision
    ood: OOD | None = Field(None, description="out-of-distribution verdict; None when the package has no detector")
    input_check: InputCheck | None = None
    explanation: Explanation | None = None
    intended_use: str | None = None
    warnings: list[str] = Field(default_factory=list)
    attributions: dict[str, float] | None = Field(
        None, description="per-feature contribution to the calibrated log-odds of the positive class (records)")
    attribution_method: str | None = Field(
        None, description="linear-shap | tree-shap | sampled-shapley (records)")
    attribution_base: float | None = Field(
        None, description="log-odds the attributions start from (mean over background rows)")
    missing_features: list[str] | None = Field(
        None, description="model inputs absent or implausible in this record and imputed (records)")
    features: dict[str, Any] | None = Field(
        None, description="the input values used, in the model's units, before imputation (records)")
    mask: Mask | None = Field(None, description="segmentation result (segmentation models)")
    boxes: list[Box] | None = Field(None, description="detected objects, highest score first (detection models)")
    counts: dict[str, int] | None = Field(None, description="detected objects per class (detection models)")
    dicom_sr: str | None = Field(
        None, description="DICOM Structured Report (TID 1500) written for the findings of a DICOM input")
    synthetic: Synthetic | None = Field(
        None, description="the synthetic image and its checks (restoration and translation models)")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def rejected(cls, *, input: str, modality: str, model: str, model_version: str, class_names: list[str],
                 reasons: list[str], intended_use: str | None = None) -> Prediction:
        """The prediction for an input the model was not made for: no probabilities, decision ``rejected``."""
        from meddx.trust.decide import decide

        return cls(input=input, modality=modality, model=model, model_version=model_version,
                   class_names=class_names, probabilities={}, calibrated_probabilities={}, calibration="none",
                   prediction=None, uncertainty=None, decision=Decision(**decide(None, rejections=reasons)),
                   input_check=InputCheck(passed=False, reasons=reasons), intended_use=intended_use)
