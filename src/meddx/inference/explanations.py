"""Explanations attached to a prediction: a saliency map, its overlay PNG and its checks.

Every map meddx hands out carries two numbers computed on the spot for that
image: the rank correlation with the map of a weight-randomised copy of the model
(the model-parameter randomisation test of Adebayo et al. 2018: a map that does
not change when the weights are destroyed explains nothing), and the deletion /
insertion AUC against random maps (Petsiuk et al. 2018: removing the pixels the
map calls important first should destroy the prediction faster than random).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from meddx.inference.schema import Explanation


class Explainable(Protocol):
    """What an explanation needs of a loaded image model (a :class:`meddx.inference.Pipeline` is one)."""

    package: dict[str, Any]

    @property
    def model(self) -> Any: ...

    @property
    def class_names(self) -> list[str]: ...

    def _inputs(self, images: np.ndarray) -> np.ndarray: ...


def explain_image(pipeline: Explainable, image: np.ndarray, target: str, *, method: str = "gradcam",
                  out_dir: Path | None = None, stem: str = "image", checks: bool = True) -> Explanation:
    """Explain ``target`` for one windowed uint8 image; save ``<stem>_<method>.png`` in ``out_dir``."""
    import torch

    from meddx.explain import compute_cam, deletion_insertion, random_map_baseline, randomisation_test, save_overlay
    from meddx.inference.schema import Explanation

    pre = pipeline.package["preprocess"]
    x = torch.from_numpy(np.ascontiguousarray(pipeline._inputs(image[None])))
    x = (x - pre["mean"]) / pre["std"]
    index = pipeline.class_names.index(target)
    model = pipeline.model
    cam = compute_cam(model, x, method=method, targets=[index])
    overlay_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        safe = method.replace("+", "p")
        overlay_path = str(save_overlay(out_dir / f"{stem}_{safe}.png", image, cam[0]))
    result: dict[str, Any] = {"method": method, "target": target, "overlay": overlay_path}
    if checks:
        rho = randomisation_test(model, x, method=method, targets=[index])
        faithful = deletion_insertion(model, x, cam, targets=[index])
        baseline = random_map_baseline(model, x, targets=[index])
        result.update(
            sanity_spearman=float(np.asarray(rho)[0]),
            deletion_auc=float(np.asarray(faithful["deletion_auc"])[0]),
            insertion_auc=float(np.asarray(faithful["insertion_auc"])[0]),
            random_deletion_auc=float(np.asarray(baseline["deletion_auc"])[0]),
            random_insertion_auc=float(np.asarray(baseline["insertion_auc"])[0]),
        )
    return Explanation(**result)
