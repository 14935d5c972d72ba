"""Image embeddings from a transfer-learned ``meddx pretrain`` backbone (frozen trunk).

The backbone is a ``kind: "backbone"`` package (``model.safetensors`` = the trunk).
:func:`resolve_backbone` finds it (argument, ``$MEDDX_FUSION_BACKBONE``) and refuses
one whose pretraining tasks read the data set the fusion model is trained on: its
weights would have seen the test patients. ``random:<arch>`` builds an untrained
trunk (for tests and as a no-transfer control).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

ENV = "MEDDX_FUSION_BACKBONE"
RECIPE = ("meddx pretrain --model cnn-small --size 64 --epochs 8 --max-per-task 1000 "
          "--tasks pneumoniamnist,bccd-cells,chase-vessels "
          "--exclude breastmnist,brain-tumor-mri-navoneel,covid-cxr-ieee8023-lungbbox --out BACKBONE")


def resolve_backbone(backbone: str | None, dataset: str) -> dict[str, Any]:
    """The backbone description: ``{"source", "architecture", "size", "mean", "std", "tasks", "pretrained_on"}``."""
    source = backbone or os.environ.get(ENV)
    if not source:
        raise ConfigError("no image backbone for the fusion model", field="backbone",
                          hint=f"Pretrain one without the covid set ({RECIPE}) and set {ENV}=BACKBONE")
    if source.startswith("random:"):
        arch = source.split(":", 1)[1] or "cnn-tiny"
        return {"source": source, "architecture": arch, "size": int(os.environ.get("MEDDX_FUSION_SIZE", 32)),
                "mean": 0.5, "std": 0.25, "tasks": [], "pretrained_on": []}
    folder = Path(source)
    if not (folder / "package.json").is_file():
        raise ConfigError("backbone folder has no package.json", path=folder, field="backbone", hint=RECIPE)
    package = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    tasks = package.get("tasks", [])
    used = sorted({t.get("dataset", "") for t in tasks if isinstance(t, dict)})
    if dataset in used:
        raise ConfigError(f"backbone {folder.name} was pretrained on {dataset}, which holds this model's test "
                          "patients", path=folder, field="backbone",
                          hint=f"Pretrain without it: {RECIPE}")
    pre = package.get("preprocess", {})
    return {"source": str(folder.resolve()), "architecture": package["architecture"], "size": int(pre.get("size", 64)),
            "mean": float(pre.get("mean", 0.5)), "std": float(pre.get("std", 0.25)),
            "tasks": [t.get("name") for t in tasks if isinstance(t, dict)], "pretrained_on": used,
            "name": package.get("name"), "version": package.get("version")}


def build_trunk(spec: dict[str, Any], state: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """The backbone as an eval-mode module with ``forward_features``; weights from ``state`` or the package."""
    import torch

    from meddx.models import create_model

    torch.manual_seed(seed)
    pretrained = None if state is not None or spec["source"].startswith("random:") else spec["source"]
    model = create_model(spec["architecture"], num_classes=2, in_chans=1, pretrained=pretrained)
    if state is not None:
        model.load_state_dict(state, strict=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def trunk_state(model: Any) -> dict[str, Any]:
    """The trunk tensors (classifier dropped) for saving inside a fusion package."""
    import torch

    own = model.state_dict()
    drop = {k for k in own if k.startswith(("head.", "fc.", "classifier."))}
    return {k: v.detach().clone().contiguous() for k, v in own.items() if k not in drop and torch.is_tensor(v)}


def embed(model: Any, images: np.ndarray, mean: float, std: float, batch: int = 128) -> np.ndarray:
    """``(N, F)`` float32 features of grey uint8 images ``(N, S, S)``."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start:start + batch].astype(np.float32) / 255.0)[:, None]
            x = (x - mean) / std
            feats = model.forward_features(x) if hasattr(model, "forward_features") else model(x)
            if feats.ndim > 2:
                feats = feats.mean(dim=tuple(range(2, feats.ndim)))
            out.append(feats.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
