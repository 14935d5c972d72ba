"""A package's network as ONNX, run by ONNX Runtime without importing torch.

``meddx train`` exports the trained network to ``model.onnx`` next to
``model.safetensors`` (dynamic batch, checked against the torch model on random
input before it is kept) and records it in ``package.json["runtime"]["onnx"]``
with the sha256 of both files. :class:`~meddx.inference.pipeline.Pipeline` then
predicts with ONNX Runtime: a cold ``meddx predict`` pays the runtime's start-up
(about 0.3 s) instead of importing torch and timm (3-5 s on a 2-core CPU), and a
deployment that only predicts can install ``meddx[runtime]`` without torch.

The safetensors weights stay the source of truth. An export is used only while
both hashes match, so a stale ``model.onnx`` (weights replaced after the export)
is ignored rather than trusted, and the torch model is still built on demand for
whatever needs its layers or gradients (Grad-CAM, MC-dropout, Bayesian draws, TTA).
Set ``MEDDX_RUNTIME=torch`` to skip the export altogether.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.packaging.registry import WEIGHTS_FILE
from meddx.packaging.registry import sha256_file as sha256

log = logging.getLogger("meddx.runtime")

ONNX_FILE = "model.onnx"
RUNTIMES = ("auto", "onnx", "torch")
"""``auto``: the ONNX export when the package has a valid one, else torch; ``onnx``: the export or an
error; ``torch``: always the torch model."""
ONNX_METHODS = ("none", "ensemble")
"""Uncertainty methods that need only forward passes of the whole network."""
EXPORT_OPSET = 18
EXPORT_TOLERANCE = 1e-3
"""Largest allowed gap between torch and ONNX Runtime logits, relative to the logits' scale."""


def default_runtime() -> str:
    """``$MEDDX_RUNTIME`` (``auto`` when unset), checked."""
    value = os.environ.get("MEDDX_RUNTIME", "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ConfigError(f"MEDDX_RUNTIME must be one of {RUNTIMES}, got {value!r}", field="MEDDX_RUNTIME",
                          hint="Unset it, or use auto | onnx | torch")
    return value


def export_onnx(model: Any, folder: str | Path, *, in_chans: int, size: int, seed: int = 0) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ``folder/model.onnx``; return what ``package.json`` records of it.

    The export has two outputs, the logits and the penultimate features (for the
    out-of-distribution gate, :mod:`meddx.trust.ood`); a network that cannot be split
    that way is exported with logits alone. The export is checked on a random batch of
    3 against the torch model and kept only when the outputs agree (see :data:`EXPORT_TOLERANCE`).
    """
    import torch

    from meddx.models.heads import WithFeatures

    folder = Path(folder)
    target, tmp = folder / ONNX_FILE, folder / f".{ONNX_FILE}.{os.getpid()}.tmp"
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device  # trained on a GPU: export from there
        generator = torch.Generator().manual_seed(seed)
        check = torch.randn(3, in_chans, size, size, generator=generator)
        with torch.inference_mode():
            expected = model(check.to(device)).float().cpu().numpy()
        gap, outputs = None, ["logits"]
        for wrapped, names in ((WithFeatures(model), ["logits", "features"]), (model, ["logits"])):
            try:
                _export(wrapped, tmp, in_chans, size, device, names)
            except Exception:  # noqa: BLE001 - fall back to the logits-only export
                if len(names) == 1:
                    raise
                log.info("exporting %s without its features output", folder, exc_info=True)
                continue
            got = OnnxNetwork(tmp)(check.numpy())
            gap = float(np.max(np.abs(got - expected)))
            scale = max(1.0, float(np.max(np.abs(expected))))
            if np.all(np.isfinite(got)) and gap <= EXPORT_TOLERANCE * scale:
                outputs = names
                break
            if len(names) == 1:
                raise ModelError(f"the ONNX export disagrees with the torch model (max |Δlogit| {gap:.3g})",
                                 path=target, hint="Predict with the torch model (MEDDX_RUNTIME=torch)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    import onnxruntime

    return {"file": ONNX_FILE, "opset": EXPORT_OPSET, "sha256": sha256(target), "outputs": outputs,
            "weights_sha256": sha256(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else None,
            "max_abs_logit_gap": gap, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _export(module: Any, path: Path, in_chans: int, size: int, device: Any, output_names: list[str]) -> None:
    import torch

    example = torch.zeros(2, in_chans, size, size, device=device)
    # torch.onnx prints its progress to stdout, which belongs to the CLI's JSON output
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=EXPORT_OPSET,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                                    verbose=False, output_names=output_names)
        program.save(str(path))


def export_package(model: Any, folder: str | Path, package: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Export ``model`` into its package folder and note it in ``package`` (returned, also changed in place).

    A failed export is logged and recorded, not fatal (the package still predicts
    with torch), unless ``strict``.
    """
    pre = package["preprocess"]
    runtime = dict(package.get("runtime") or {})
    try:
        runtime["onnx"] = export_onnx(model, folder, in_chans=int(pre["in_chans"]), size=int(pre["size"]))
    except Exception as exc:  # noqa: BLE001 - any exporter failure leaves a torch-only package
        if strict:
            raise
        log.warning("ONNX export of %s failed, the package predicts with torch: %s", folder, exc)
        runtime["onnx"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        (Path(folder) / ONNX_FILE).unlink(missing_ok=True)
    package["runtime"] = runtime
    extra = [f for f in package.get("extra_files", []) if f != ONNX_FILE]
    if "file" in runtime["onnx"]:
        extra.append(ONNX_FILE)
    if extra:
        package["extra_files"] = extra
    else:
        package.pop("extra_files", None)
    if "files" in package and "file" in runtime["onnx"]:  # a registered package lists every file's sha256
        package["files"] = {**package["files"], ONNX_FILE: runtime["onnx"]["sha256"]}
    return package


class OnnxNetwork:
    """One exported network: ``network(x)`` maps float32 ``(N, C, H, W)`` to logits ``(N, K)``.

    Exports written since OOD detection existed also output the penultimate features
    (:meth:`logits_and_features`).
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        self.path = Path(path)
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise ModelError(f"cannot load the ONNX export: {exc}", path=path,
                             hint="Re-export it with `meddx models export MODEL`") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.has_features = len(self.session.get_outputs()) > 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def logits_and_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(N, K)`` and penultimate features ``(N, D)`` (exports with a features output only)."""
        if not self.has_features:
            raise ModelError("this ONNX export has no features output", path=self.path,
                             hint="Re-export it with `meddx models export MODEL`")
        logits, features = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[:2]
        return logits, features


def onnx_status(folder: Path, package: dict[str, Any]) -> str | None:
    """Why the export in ``folder`` cannot be used (``None`` when it can)."""
    info = (package.get("runtime") or {}).get("onnx") or {}
    if "file" not in info:
        return info.get("error") or "the package has no ONNX export"
    path = folder / str(info["file"])
    if not path.is_file():
        return f"{path} is missing"
    if info.get("sha256") and sha256(path) != info["sha256"]:
        return f"{path} does not match the sha256 recorded at export"
    weights = folder / WEIGHTS_FILE
    if info.get("weights_sha256") and weights.is_file() and sha256(weights) != info["weights_sha256"]:
        return f"{weights} changed after the export (the export is stale)"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'meddx[runtime]')"
    return None


def load_networks(folders: Sequence[Path], packages: Sequence[dict[str, Any]], *,
                  required: bool = False) -> list[OnnxNetwork] | None:
    """ONNX Runtime sessions for every member folder, or ``None`` when any export is unusable.

    With ``required`` an unusable export raises a ModelError that says why.
    """
    for folder, package in zip(folders, packages, strict=True):
        reason = onnx_status(folder, package)
        if reason is not None:
            if required:
                raise ModelError(f"cannot predict with ONNX Runtime: {reason}", path=folder, field="runtime",
                                 hint="Export it with `meddx models export MODEL`, or use runtime torch")
            log.info("predicting with torch: %s", reason)
            return None
    return [OnnxNetwork(folder / str(package["runtime"]["onnx"]["file"]))
            for folder, package in zip(folders, packages, strict=True)]


def run_networks(networks: Sequence[OnnxNetwork], x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Primary logits ``(N, C)`` and sampled logits ``(S, N, C)``, as the torch methods of the same name give."""
    if method not in ONNX_METHODS:
        raise ModelError(f"uncertainty method {method!r} needs the torch model", field="uncertainty")
    if method == "none":
        logits = networks[0](x).astype(np.float64)
        return logits, logits[None]
    if len(networks) < 2:
        raise ModelError("this package holds one model, not an ensemble", field="uncertainty",
                         hint="Train one with `meddx train DATA --ensemble 5`")
    from meddx.calibration.scaling import softmax

    logits = np.stack([n(x) for n in networks]).astype(np.float64)
    primary = np.log(softmax(logits).mean(axis=0))  # log of the averaged probabilities
    return primary, logits
