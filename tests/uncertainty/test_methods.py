"""Uncertainty methods and measures: shapes, semantics and cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddx.exceptions import ModelError
from meddx.models import create_model
from meddx.models.heads import classifier, embed, is_bayes, kl_divergence, set_head
from meddx.uncertainty import decompose, list_methods, run_method


def test_decomposition_splits_total_into_aleatoric_and_epistemic() -> None:
    agree = np.tile(np.array([[[0.5, 0.5]]]), (4, 1, 1))  # every draw unsure in the same way: aleatoric
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # confident draws that differ
    a, d = decompose(agree), decompose(disagree)
    assert a["mutual_information"][0] == pytest.approx(0.0, abs=1e-9)
    assert a["expected_entropy"][0] == pytest.approx(np.log(2))
    assert d["mutual_information"][0] == pytest.approx(np.log(2), abs=1e-6)
    assert d["expected_entropy"][0] == pytest.approx(0.0, abs=1e-6)
    for m in (a, d):
        assert m["predictive_entropy"][0] == pytest.approx(m["expected_entropy"][0] + m["mutual_information"][0])


@pytest.mark.parametrize("name", ["cnn-tiny", "resnet18-28"])
def test_embed_then_classifier_is_the_forward_pass(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 3, 1).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(classifier(model)(embed(model, x)), model(x), atol=1e-5)


def test_bayes_head_samples_in_train_and_on_request_only() -> None:
    torch.manual_seed(0)
    model = create_model("cnn-tiny", 2, 1, head="bayes").eval()
    head = classifier(model)
    assert is_bayes(head)
    with torch.no_grad():
        head.weight_rho.fill_(0.0)  # posterior sd softplus(0) ≈ 0.69: draws must differ
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: posterior mean
        head.sampling = True
        assert not torch.equal(model(x), model(x))
        head.sampling = False
    assert float(kl_divergence(model).detach()) > 0


def test_set_head_on_timm_backbone_and_unknown_head() -> None:
    model = create_model("resnet18-28", 2, 1, head="bayes")
    assert is_bayes(model.fc) and is_bayes(model.get_classifier())
    with pytest.raises(ModelError, match="Known"):
        set_head(create_model("cnn-tiny", 2, 1), "gaussian-process")


def test_every_method_returns_primary_and_draws() -> None:
    torch.manual_seed(0)
    dropout = create_model("cnn-tiny", 2, 1, drop_rate=0.3).eval()
    bayes = create_model("cnn-tiny", 2, 1, head="bayes").eval()
    members = [create_model("cnn-tiny", 2, 1).eval() for _ in range(3)]
    x = torch.randn(4, 1, 16, 16)
    cases = {"none": ([dropout], 1), "mc-dropout": ([dropout], 7), "tta": ([dropout], 7), "bayes": ([bayes], 7),
             "ensemble": (members, 3)}
    assert sorted(cases) == list_methods()
    for name, (models, draws) in cases.items():
        out = run_method(name, models, x, samples=7)
        assert out.primary.shape == (4, 2) and out.samples.shape == (draws, 4, 2), name
        again = run_method(name, models, x, samples=7)
        assert torch.allclose(out.samples, again.samples), f"{name} is not reproducible"
    mc = run_method("mc-dropout", [dropout], x, samples=7)
    assert mc.samples.std(dim=0).max() > 0  # the draws differ
    with torch.no_grad():
        assert torch.allclose(mc.primary, dropout(x), atol=1e-5)  # the primary is the plain prediction


def test_methods_refuse_models_they_cannot_sample() -> None:
    plain = create_model("cnn-tiny", 2, 1).eval()  # no dropout, no Bayesian layer
    x = torch.randn(1, 1, 16, 16)
    for name, hint in (("mc-dropout", "drop-rate"), ("bayes", "head bayes"), ("ensemble", "--ensemble")):
        with pytest.raises(ModelError, match="uncertainty") as info:
            run_method(name, [plain], x)
        assert hint in str(info.value)
    with pytest.raises(ModelError, match="Known"):
        run_method("laplace", [plain], x)
