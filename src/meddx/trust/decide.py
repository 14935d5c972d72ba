"""The one place a prediction's decision is made, for every modality and interface.

Order matters and is the same everywhere (CLI, Python API, REST, FHIR, the web page):

1. the input check failed → ``rejected`` with the reasons (the model's output is not used);
2. the OOD detector flagged the input → ``refer``, "outside the model's training data";
   a *negative* answer must also stay under the gate's stricter rule-out threshold (a false
   reassurance on an atypical input is the costliest error, see ``meddx.trust.ood.RULE_OUT_RATE``);
3. otherwise the trust layer's decision (calibrated class, or ``refer`` when the conformal
   set or the uncertainty says the model is not sure).
"""

from __future__ import annotations

from typing import Any

REJECTED = "rejected"
REFER = "refer"
NEGATIVE = "negative"
OOD_REASON = "outside the model's training data"


def decide(trust_decision: dict[str, Any] | None, *, ood: dict[str, Any] | None = None,
           rejections: list[str] | None = None) -> dict[str, str]:
    """``{"decision", "reason"}`` from the trust layer's decision, the OOD verdict and the input check."""
    if rejections:
        return {"decision": REJECTED, "reason": "; ".join(rejections)}
    if ood is not None and ood.get("flagged"):
        reason = (f"{OOD_REASON}: {ood['method']} score {ood['score']:.3g} is above the threshold "
                  f"{ood['threshold']:.3g} that {1 - float(ood.get('flag_rate', 0.05)):.0%} of validation cases "
                  "stay under; refer to a specialist")
        return {"decision": REFER, "reason": reason}
    if trust_decision is None:
        return {"decision": REFER, "reason": "no decision could be made"}
    rule_out = (ood or {}).get("rule_out_threshold")
    if trust_decision.get("decision") == NEGATIVE and rule_out is not None and ood["score"] > rule_out:
        from meddx.trust.ood import RULE_OUT_RATE

        reason = (f"{OOD_REASON}: too unlike it to rule disease out ({ood['method']} score {ood['score']:.3g} is "
                  f"above {rule_out:.3g}, which {1 - RULE_OUT_RATE:.0%} of the validation cases called negative "
                  "stay under); refer to a specialist")
        return {"decision": REFER, "reason": reason}
    return {"decision": str(trust_decision["decision"]), "reason": str(trust_decision.get("reason", ""))}


INPUT_WORDS = {"image": "image", "signal": "recording", "tabular": "record", "record": "record", "fusion": "case"}
"""What a clinician calls one input of each modality."""


def plain_words(decision: str, reason: str, prediction: str | None = None, modality: str = "image") -> str:
    """The decision in words a clinician reads in a second (the web page and reports use it)."""
    if decision == REJECTED:
        return f"Not analysed: this input is not what the model was made for ({reason})."
    if decision == REFER and reason.startswith(OOD_REASON):
        thing = INPUT_WORDS.get(modality, "input")
        return f"Refer: this {thing} is unlike anything the model was trained on, so its answer cannot be trusted."
    if decision == REFER:
        return "Refer to a specialist: the model is not sure."
    return f"{decision.capitalize()}" + (f" ({prediction})" if prediction and prediction != decision else "")
