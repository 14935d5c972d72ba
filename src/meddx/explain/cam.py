"""Class activation maps (Grad-CAM family) for meddx classifiers.

Wraps the ``pytorch_grad_cam`` package (``meddx[explain]``) so that a CAM can
be computed on any model of the meddx registry without touching it: the CAM
object is used as a context manager (its hooks are removed even on error),
and the model's train/eval mode, ``requires_grad`` flags and ``.grad``
tensors are restored afterwards. Gradients flow through the *input* rather
than the parameters, so CAMs also work on a frozen (fine-tuned head only, or
packaged) model.

Maps are returned as numpy ``float32`` arrays ``(N, H, W)`` in ``[0, 1]`` at the
input resolution (each map is min-max scaled by ``pytorch_grad_cam``, so
values compare *within* an image, not across images). An all-zero map means
the layer holds no positive evidence for the target class (the ReLU of
Grad-CAM removed everything), not that the computation failed.

Score-CAM needs one forward pass per channel of the target layer and image
(2048 for ResNet-50): fine for the small CNNs, slow for large backbones on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError, ModelError

try:
    import torch
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam import ScoreCAM as _LibraryScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ModelError(
        f"meddx.explain needs torch and grad-cam ({exc.name} is missing)", field="explain",
        hint="Install it with: pip install 'meddx[train,explain]'",
    ) from exc

CamClass = type
CAM_METHODS: dict[str, CamClass] = {}
"""Registered CAM methods: name -> ``pytorch_grad_cam`` class (``BaseCAM`` subclass)."""

SCORECAM_BATCH_SIZE = 8
"""Masked images per forward pass in Score-CAM (one pass per channel chunk)."""


def register_cam_method(name: str) -> Callable[[CamClass], CamClass]:
    """Decorator/function: register a ``pytorch_grad_cam`` CAM class under ``name``."""

    def decorator(cls: CamClass) -> CamClass:
        if name in CAM_METHODS:
            raise ValueError(f"CAM method {name!r} is already registered")
        CAM_METHODS[name] = cls
        return cls

    return decorator


class ScoreCAM(_LibraryScoreCAM):
    """``pytorch_grad_cam``'s Score-CAM, computing the same weights without its tqdm progress bar.

    The library prints one progress bar per image to stderr, which floods CLI
    output and logs; the channel scores and their softmax are unchanged.
    """

    def get_cam_weights(self, input_tensor: Any, target_layer: Any, targets: Any, activations: Any,
                        grads: Any) -> np.ndarray:
        with torch.no_grad():
            upsampled = nn.UpsamplingBilinear2d(size=input_tensor.shape[-2:])(
                torch.from_numpy(activations).to(self.device))
            flat = upsampled.view(upsampled.size(0), upsampled.size(1), -1)
            maxs, mins = flat.max(dim=-1)[0][:, :, None, None], flat.min(dim=-1)[0][:, :, None, None]
            upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
            masked = input_tensor[:, None, :, :] * upsampled[:, :, None, :, :]  # (N, K, C, H, W)
            step = getattr(self, "batch_size", 16)
            scores = [
                float(target(output).cpu())
                for target, images in zip(targets, masked)
                for start in range(0, images.size(0), step)
                for output in self.model(images[start:start + step])
            ]
            scores_t = torch.tensor(scores).view(activations.shape[0], activations.shape[1])
            return torch.softmax(scores_t, dim=-1).numpy()


register_cam_method("gradcam")(GradCAM)
register_cam_method("gradcam++")(GradCAMPlusPlus)
register_cam_method("scorecam")(ScoreCAM)


def list_cam_methods() -> list[str]:
    """Names accepted by ``compute_cam(method=...)``."""
    return sorted(CAM_METHODS)


def _cam_class(method: str) -> CamClass:
    if method not in CAM_METHODS:
        import difflib

        close = difflib.get_close_matches(str(method), list(CAM_METHODS), n=2)
        raise InvalidValueError(
            f"unknown CAM method {method!r}", field="method",
            hint=(f"Did you mean {', '.join(close)}? " if close else "") + f"Known: {', '.join(list_cam_methods())}",
        )
    return CAM_METHODS[method]


# --------------------------------------------------------------------------- target layers

TargetRule = Callable[[Any], Any]
_TARGET_RULES: dict[str, TargetRule] = {}


def _target_rule(class_name: str) -> Callable[[TargetRule], TargetRule]:
    """Register how to find the last convolutional block of models of class ``class_name``."""

    def decorator(func: TargetRule) -> TargetRule:
        _TARGET_RULES[class_name] = func
        return func

    return decorator


def _has_conv(module: Any) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


@_target_rule("SmallCNN")
def _small_cnn_layer(model: Any) -> Any:
    # features = [block, pool, block, pool, block, avgpool, flatten]: the last child holding a conv
    return [child for child in model.features if _has_conv(child)][-1]


@_target_rule("ResNet")
def _resnet_layer(model: Any) -> Any:
    return model.layer4


@_target_rule("MobileNetV3")
def _mobilenetv3_layer(model: Any) -> Any:
    # conv_head comes *after* global pooling in MobileNetV3 (1x1 map): use the last block
    return model.blocks[-1]


@_target_rule("EfficientNet")
def _efficientnet_layer(model: Any) -> Any:
    # conv_head -> bn2 (BatchNormAct2d: norm + activation) is the last spatial feature map
    bn2 = getattr(model, "bn2", None)
    return bn2 if isinstance(bn2, nn.Module) else model.conv_head


@_target_rule("DenseNet")
def _densenet_layer(model: Any) -> Any:
    # features = [..., denseblock4, norm5]; timm's norm5 includes the activation
    norm5 = getattr(model.features, "norm5", None)
    return norm5 if isinstance(norm5, nn.Module) else model.features[-1]


def default_target_layer(model: Any) -> Any:
    """The module whose activations a CAM explains: the last convolutional feature block.

    Known architectures (meddx small CNNs, timm ResNet, MobileNetV3,
    EfficientNet, DenseNet) are matched by class name along the MRO; anything
    else falls back to the last ``nn.Conv2d`` in ``model.modules()`` order.
    """
    for cls in type(model).__mro__:
        rule = _TARGET_RULES.get(cls.__name__)
        if rule is not None:
            try:
                return rule(model)
            except (AttributeError, IndexError, TypeError):
                break  # a look-alike class: use the generic fallback
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError(
            f"{type(model).__name__} has no nn.Conv2d layer to compute a class activation map on",
            field="target_layer", hint="Pass target_layer= explicitly (a module with a 4-D (N, C, H, W) output)",
        )
    return convs[-1]


# --------------------------------------------------------------------------- model state


@contextmanager
def preserved_state(model: Any, *, frozen: bool = False) -> Iterator[Any]:
    """Restore every module's train/eval mode and every parameter's ``requires_grad``/``.grad`` on exit.

    With ``frozen=True`` all parameters are set to ``requires_grad=False`` inside
    the block, so a backward pass computes no (and overwrites no) weight gradient.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        if frozen:
            for p, _, _ in params:
                p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad


ONE_THREAD_ELEMENTS = 16 * 64 * 64
"""Forward passes on fewer input elements than this run on one torch thread (as in meddx.inference)."""


def small_work_threads(elements: int) -> Any:
    """Use one torch thread for tiny batches: waking a thread pool costs more than the work."""
    from meddx._threads import one_thread_below

    return one_thread_below(elements, ONE_THREAD_ELEMENTS)


def model_device(model: Any) -> Any:
    """The device of the model's first parameter; ModelError for a model without parameters."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ModelError(f"{type(model).__name__} has no parameters", field="model") from None


def as_input_tensor(x: Any) -> Any:
    """Validate a batch ``(N, C, H, W)`` (tensor or array) and return it as a float tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InvalidValueError(f"expected a tensor or array, got {type(x).__name__}", field="x")
    if x.ndim != 4 or 0 in x.shape:
        raise InvalidValueError(
            f"expected a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}", field="x",
            hint="Add the batch axis with x[None] for a single image",
        )
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise InvalidValueError("input holds NaN or infinite values", field="x")
    return x


@torch.no_grad()
def predict_logits(model: Any, x: Any, batch_size: int = 64) -> Any:
    """Logits ``(N, C)`` of ``model`` in eval mode on CPU (mode restored afterwards)."""
    device = model_device(model)
    with preserved_state(model), small_work_threads(min(len(x), batch_size) * x[0].numel()):
        model.eval()
        outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    logits = torch.cat(outs)
    if logits.ndim != 2 or logits.shape[0] != len(x):
        raise ModelError(
            f"{type(model).__name__} returned shape {tuple(logits.shape)}, expected (N, num_classes) logits",
            field="model",
        )
    return logits


def resolve_targets(targets: int | Sequence[int] | np.ndarray | None, logits: Any) -> np.ndarray:
    """Class index per image: ``targets`` checked against ``logits`` (N, C), or the predicted class."""
    n, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1).numpy().astype(np.int64)
    arr = np.asarray(targets)
    if arr.ndim == 0:
        arr = np.full(n, arr.item())
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and bool(np.all(arr == np.round(arr))))
    if arr.shape != (n,) or not integral:
        raise InvalidValueError(
            f"targets must hold one integer class index per image ({n}), got {arr.dtype} of shape {arr.shape}",
            field="targets",
        )
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= num_classes:
        raise InvalidValueError(
            f"target class out of range [0, {num_classes - 1}]: {sorted(set(arr.tolist()))}", field="targets",
        )
    return arr


# --------------------------------------------------------------------------- CAMs


def compute_cam(
    model: Any,
    x: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | np.ndarray | None = None,
    target_layer: Any = None,
    batch_size: int = 32,
    *,
    scorecam_batch_size: int = SCORECAM_BATCH_SIZE,
) -> np.ndarray:
    """Class activation maps ``(N, H, W)`` in ``[0, 1]`` for a batch ``x`` ``(N, C, H, W)``.

    Args:
        model: a classifier returning logits ``(N, C)``.
        x: the normalised input batch (tensor or array).
        method: a name from :func:`list_cam_methods`.
        targets: class index per image (or one for all); default the predicted class.
        target_layer: the module to explain; default :func:`default_target_layer`.
        batch_size: images per CAM call (bounds memory).
        scorecam_batch_size: masked images per forward pass in Score-CAM.

    The model is evaluated in eval mode; its modes, ``requires_grad`` flags and
    gradients are restored and no hook stays registered.
    """
    cam_class = _cam_class(method)
    x = as_input_tensor(x)
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    layer = default_target_layer(model) if target_layer is None else target_layer
    device = model_device(model)
    classes = resolve_targets(targets, predict_logits(model, x, batch_size))
    height, width = x.shape[-2:]
    maps = []
    work = min(len(x), max(batch_size, scorecam_batch_size)) * x[0].numel()
    with preserved_state(model, frozen=True), torch.inference_mode(False), small_work_threads(work):
        with cam_class(model=model, target_layers=[layer]) as cam:
            cam.batch_size = scorecam_batch_size  # read by Score-CAM only
            grad_mode = torch.enable_grad() if cam.uses_gradients else torch.no_grad()
            # BaseCAM.__exit__ swallows IndexError (and grad-cam reports a non-spatial layer as ValueError,
            # one the output does not depend on as AttributeError): carry it out as a ModelError
            error: Exception | None = None
            try:
                with grad_mode:
                    for start in range(0, len(x), batch_size):
                        chunk = x[start:start + batch_size].detach().clone().to(device)
                        chunk.requires_grad_(cam.uses_gradients)
                        wanted = [ClassifierOutputTarget(int(c)) for c in classes[start:start + batch_size]]
                        maps.append(np.asarray(cam(input_tensor=chunk, targets=wanted), dtype=np.float32))
            except (IndexError, ValueError, AttributeError) as exc:
                error = exc
        if error is not None:
            raise ModelError(
                f"{method} failed on {type(model).__name__} at {type(layer).__name__}: {error}", field="target_layer",
                hint="The target layer must output a (N, C, H, W) feature map that the prediction depends on",
            ) from error
    out = np.concatenate(maps)
    if out.shape[1:] != (height, width):  # pytorch_grad_cam resizes already; keep the contract explicit
        import cv2

        out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in out])
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32)
