"""Sanity and faithfulness checks for saliency maps.

* :func:`randomisation_test` — the model-parameter randomisation test of
  Adebayo et al. 2018 ("Sanity checks for saliency maps"): if the maps of a
  model with re-initialised weights look like those of the trained model, the
  method explains the input (edges, bright spots), not what the model learned.
* :func:`deletion_insertion` — the causal metrics of Petsiuk et al. 2018
  (RISE): removing the most salient pixels first should make the class
  probability drop fast (low deletion AUC), adding them first should make it
  rise fast (high insertion AUC).
* :func:`random_map_baseline` / :func:`faithfulness` — the same metrics for
  random maps, the floor a useful explanation must beat.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError
from meddx.explain.cam import (
    as_input_tensor,
    compute_cam,
    default_target_layer,
    model_device,
    predict_logits,
    preserved_state,
    resolve_targets,
    small_work_threads,
)

Targets = int | Sequence[int] | np.ndarray | None


# --------------------------------------------------------------------------- randomisation test


def randomize_weights(model: Any, seed: int = 0) -> Any:
    """A deep copy of ``model`` with every parameter re-initialised (the original is untouched).

    Each module's own ``reset_parameters()`` is used where it exists (the
    architecture's default initialisation: Kaiming-uniform convolutions,
    BatchNorm weight 1 / bias 0, ...); parameters no module resets get
    ``normal(0, 0.02)``. BatchNorm running statistics are reset too, so no
    learned information survives. Deterministic for a given ``seed``; the
    global RNG state is left as it was.
    """
    import torch
    from torch.nn.modules.batchnorm import _NormBase

    clone = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        reset_ids: set[int] = set()
        for module in clone.modules():
            if isinstance(module, _NormBase) and module.track_running_stats:
                module.reset_running_stats()
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                reset_ids.update(id(p) for p in module.parameters(recurse=False))
        for p in clone.parameters():
            if id(p) not in reset_ids:
                p.normal_(0.0, 0.02)
    return clone


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    import warnings

    from scipy.stats import spearmanr

    with warnings.catch_warnings():  # a constant map: handled below
        warnings.simplefilter("ignore")
        rho = spearmanr(a.ravel(), b.ravel()).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


def randomisation_test(
    model: Any,
    x: Any,
    method: str = "gradcam",
    targets: Targets = None,
    seed: int = 0,
    *,
    target_layer: Any = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Spearman rank correlation per image between the maps of ``model`` and of its randomised copy.

    Both maps explain the same class (``targets``, default the *trained*
    model's prediction). The value is the signed Spearman rho on the
    flattened maps: near 0 (or negative) passes the sanity check, near 1
    means the method ignores the weights. When either map is constant (e.g.
    all zero after Grad-CAM's ReLU) rho is undefined; it is reported as 0 —
    the maps share no ranking — rather than NaN, so means stay defined.
    """
    x = as_input_tensor(x)
    classes = resolve_targets(targets, predict_logits(model, x, batch_size))
    layer = default_target_layer(model) if target_layer is None else target_layer
    layer_name = next((name for name, m in model.named_modules() if m is layer), None)
    if layer_name is None:
        raise InvalidValueError("target_layer is not a submodule of the model", field="target_layer")
    random_model = randomize_weights(model, seed)
    random_layer = random_model.get_submodule(layer_name)
    trained = compute_cam(model, x, method, classes, layer, batch_size)
    randomised = compute_cam(random_model, x, method, classes, random_layer, batch_size)
    return np.array([_spearman(a, b) for a, b in zip(trained, randomised)], dtype=np.float64)


# --------------------------------------------------------------------------- deletion / insertion

BaselineFn = Callable[[Any, float | None], Any]
BASELINES: dict[str, BaselineFn] = {}
"""What replaces removed pixels: name -> ``fn(image (C, H, W) tensor, blur_sigma) -> tensor``."""


def register_baseline(name: str) -> Callable[[BaselineFn], BaselineFn]:
    """Decorator: register a deletion/insertion baseline under ``name``."""

    def decorator(func: BaselineFn) -> BaselineFn:
        BASELINES[name] = func
        return func

    return decorator


@register_baseline("blur")
def _blur_baseline(image: Any, sigma: float | None) -> Any:
    """Gaussian blur, sigma = a tenth of the image side by default: local evidence gone, coarse intensity kept."""
    import torch
    from scipy.ndimage import gaussian_filter

    if sigma is None:
        sigma = max(image.shape[-2:]) / 10.0
    blurred = gaussian_filter(image.detach().cpu().double().numpy(), sigma=(0.0, sigma, sigma), mode="nearest")
    return torch.from_numpy(blurred).to(dtype=image.dtype, device=image.device)


@register_baseline("mean")
def _mean_baseline(image: Any, sigma: float | None) -> Any:
    """Each channel's mean value."""
    return image.mean(dim=(-2, -1), keepdim=True).expand_as(image)


@register_baseline("zero")
def _zero_baseline(image: Any, sigma: float | None) -> Any:
    """Zeros: the data set mean when inputs are normalised (black for raw images)."""
    return image.new_zeros(image.shape)


def _baseline(name: str) -> BaselineFn:
    if name not in BASELINES:
        raise InvalidValueError(
            f"unknown baseline {name!r}", field="baseline", hint=f"Known: {', '.join(sorted(BASELINES))}",
        )
    return BASELINES[name]


def _as_maps(cams: Any, n: int, height: int, width: int) -> np.ndarray:
    maps = np.asarray(cams, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or len(maps) != n:
        raise InvalidValueError(
            f"expected {n} maps (N, H, W), got shape {maps.shape}", field="cams",
        )
    if not np.all(np.isfinite(maps)):
        raise InvalidValueError("the maps hold NaN or infinite values", field="cams")
    if maps.shape[1:] != (height, width):
        import cv2

        maps = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps])
    return maps


def _class_probability(logits: Any, target: int) -> np.ndarray:
    """Probability of ``target`` per row: softmax, or sigmoid for a single-logit binary model."""
    import torch

    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return (p1 if target == 1 else 1.0 - p1).numpy()
    return torch.softmax(logits, dim=1)[:, target].numpy()


def _auc(fractions: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis."""
    widths = np.diff(fractions)
    return ((curve[..., 1:] + curve[..., :-1]) / 2.0 * widths).sum(axis=-1)


def deletion_insertion(
    model: Any,
    x: Any,
    cams: Any,
    targets: Targets = None,
    steps: int = 20,
    baseline: str = "blur",
    *,
    batch_size: int = 64,
    blur_sigma: float | None = None,
) -> dict[str, np.ndarray]:
    """Deletion and insertion AUC per image (Petsiuk et al. 2018).

    Pixels are ranked by decreasing saliency (``cams`` ``(N, H, W)``, resized to
    the input if needed; ties keep row-major order). At ``steps + 1`` evenly
    spaced fractions ``0..1`` of the pixels, *deletion* replaces the top
    pixels (all channels) by the ``baseline`` image and *insertion* pastes them
    into the baseline; the probability of the target class (default: the
    prediction on ``x``) is recorded, and the AUC over the fraction uses the
    trapezoid rule. Lower deletion / higher insertion AUC = more faithful map.
    All the step images of one image go through the model in batches.

    Returns ``deletion_auc``/``insertion_auc`` ``(N,)``, the curves
    ``deletion_curve``/``insertion_curve`` ``(N, steps + 1)``, ``fractions``
    and ``targets``.
    """
    import torch

    if steps < 1:
        raise InvalidValueError(f"steps must be >= 1, got {steps}", field="steps")
    make_baseline = _baseline(baseline)
    x = as_input_tensor(x)
    n, _, height, width = x.shape
    maps = _as_maps(cams, n, height, width)
    classes = resolve_targets(targets, predict_logits(model, x, batch_size))
    pixels = height * width
    counts = np.round(np.linspace(0, pixels, steps + 1)).astype(np.int64)
    fractions = counts / pixels
    device = model_device(model)
    deletion = np.empty((n, steps + 1))
    insertion = np.empty((n, steps + 1))
    work = min(2 * (steps + 1), batch_size) * x[0].numel()
    with preserved_state(model), torch.no_grad(), small_work_threads(work):
        model.eval()
        for i in range(n):
            image = x[i].to(device)
            base = make_baseline(image, blur_sigma)
            order = np.argsort(-maps[i].ravel(), kind="stable")
            rank = np.empty(pixels, dtype=np.int64)
            rank[order] = np.arange(pixels)
            # masks[k, p] = pixel p is among the counts[k] most salient
            masks = torch.from_numpy(rank[None, :] < counts[:, None]).reshape(steps + 1, 1, height, width)
            masks = masks.to(device)
            batch = torch.cat([torch.where(masks, base, image), torch.where(masks, image, base)])
            logits = torch.cat([
                model(batch[j:j + batch_size]).float().cpu() for j in range(0, len(batch), batch_size)
            ])
            probs = _class_probability(logits, int(classes[i]))
            deletion[i], insertion[i] = probs[:steps + 1], probs[steps + 1:]
    return {
        "deletion_auc": _auc(fractions, deletion),
        "insertion_auc": _auc(fractions, insertion),
        "deletion_curve": deletion,
        "insertion_curve": insertion,
        "fractions": fractions,
        "targets": classes,
    }


def random_map_baseline(
    model: Any,
    x: Any,
    targets: Targets = None,
    steps: int = 20,
    n_maps: int = 5,
    seed: int = 0,
    baseline: str = "blur",
    *,
    batch_size: int = 64,
    blur_sigma: float | None = None,
) -> dict[str, np.ndarray]:
    """:func:`deletion_insertion` for i.i.d. uniform random maps, averaged over ``n_maps`` draws.

    Same keys as :func:`deletion_insertion`; the AUCs and curves are the means
    over the draws (random orderings give the expected curve of an
    uninformative explanation).
    """
    if n_maps < 1:
        raise InvalidValueError(f"n_maps must be >= 1, got {n_maps}", field="n_maps")
    x = as_input_tensor(x)
    classes = resolve_targets(targets, predict_logits(model, x, batch_size))
    rng = np.random.default_rng(seed)
    n, _, height, width = x.shape
    runs = [
        deletion_insertion(
            model, x, rng.random((n, height, width), dtype=np.float32), classes, steps, baseline,
            batch_size=batch_size, blur_sigma=blur_sigma,
        )
        for _ in range(n_maps)
    ]
    out = {key: np.mean([run[key] for run in runs], axis=0)
           for key in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve")}
    out["fractions"] = runs[0]["fractions"]
    out["targets"] = classes
    return out


def faithfulness(
    model: Any,
    x: Any,
    cams: Any,
    targets: Targets = None,
    steps: int = 20,
    baseline: str = "blur",
    n_maps: int = 5,
    seed: int = 0,
    *,
    batch_size: int = 64,
    blur_sigma: float | None = None,
) -> dict[str, float]:
    """Summary of deletion/insertion for ``cams`` against random maps.

    Returns the mean ``deletion_auc``/``insertion_auc`` of the CAMs, the same
    for random maps (``random_deletion_auc``/``random_insertion_auc``), the
    share of images where the CAM's deletion AUC is below the random maps'
    (``deletion_below_random``) and where its insertion AUC is above
    (``insertion_above_random``), and ``n_images``.
    """
    x = as_input_tensor(x)
    classes = resolve_targets(targets, predict_logits(model, x, batch_size))
    options = {"batch_size": batch_size, "blur_sigma": blur_sigma}
    cam = deletion_insertion(model, x, cams, classes, steps, baseline, **options)
    rand = random_map_baseline(model, x, classes, steps, n_maps, seed, baseline, **options)
    return {
        "deletion_auc": float(cam["deletion_auc"].mean()),
        "insertion_auc": float(cam["insertion_auc"].mean()),
        "random_deletion_auc": float(rand["deletion_auc"].mean()),
        "random_insertion_auc": float(rand["insertion_auc"].mean()),
        "deletion_below_random": float(np.mean(cam["deletion_auc"] < rand["deletion_auc"])),
        "insertion_above_random": float(np.mean(cam["insertion_auc"] > rand["insertion_auc"])),
        "n_images": len(x),
    }
