"""The (image, translation) handler: ``train``, ``evaluate`` and ``predict`` for image-to-image translation.

``meddx train phantom-pairs:200 --task translation`` (paired, pix2pix), a folder with ``source/`` and
``target/`` subfolders (paired when the file names match, else CycleGAN), or
``unpaired:pneumoniamnist,covid-cxr-ieee8023-lungbbox`` (CycleGAN between two catalogue sets) writes a
run folder: ``package.json`` (modality ``image``, task ``translation``, mode, direction, source and
target, size, splits, test metrics with bootstrap CIs, training time), ``model.safetensors`` and the
model card. Sources: :mod:`meddx.synthesis.translation.data`; checks:
:mod:`meddx.synthesis.translation.checks`. See docs/synthesis_translation.md.

Every output is marked as derived: PNGs carry the burnt-in ``SYNTHETIC`` banner (plus a 16-bit
``.raw.png`` without it), a DICOM input gives a new DICOM instance with ImageType ``DERIVED``
(:mod:`meddx.synthesis.derived`).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.modalities import check_options
from meddx.synthesis.translation import data as D

KIND = "translation"
METHODS = ("pix2pix", "cyclegan")
DIRECTIONS = ("a2b", "b2a")
DEFAULT_STEPS = 3000
_CONFIG_OPTIONS = {"steps": int, "batch": int, "lr": float, "time_limit_s": float, "eval_every": int,
                   "lambda_l1": float, "lambda_cycle": float, "lambda_identity": float}
TRAIN_OPTIONS = {*_CONFIG_OPTIONS, "size", "mode", "direction", "batch_size", "max_train_images", "n_boot", "threads"}
EVALUATE_OPTIONS = {"max_images"}
PREDICT_OPTIONS = {"out_dir", "direction", "threads", "explain_dir"}
FLAG_ADDED = 1
"""A prediction with at least this many added structures is referred (see :func:`predict`)."""


def _swap(src: D.Source) -> D.Source:
    src.a, src.b = src.b, src.a
    src.a_name, src.b_name = src.b_name, src.a_name
    src.a_modality, src.b_modality = src.b_modality, src.a_modality
    src.names = {k: {"a": v["b"], "b": v["a"]} for k, v in src.names.items()}
    return src


# --------------------------------------------------------------------------- model files
def _save(run: Path, nets: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v.detach().contiguous() for name, net in nets.items()
               for k, v in net.state_dict().items()}
    save_file(tensors, str(run / "model.safetensors"))


def _load(folder: Path, package: dict[str, Any]) -> dict[str, Any]:
    """The package's generators: ``{"g_ab": net}`` (pix2pix) or ``{"g_ab", "g_ba"}`` (CycleGAN), eval mode."""
    from safetensors.torch import load_file

    from meddx.synthesis.translation.networks import generator

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise ConfigError("model.safetensors missing from the package", path=folder, field="weights",
                          hint="Re-run `meddx train ... --task translation`")
    spec = package.get("translation") or {}
    tensors = load_file(str(path))
    nets = {}
    for name in spec.get("generators", ["g_ab"]):
        net = generator(tuple(spec.get("channels") or ()) or None) if spec.get("channels") else generator()
        net.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
        net.eval()
        nets[name] = net
    return nets


# --------------------------------------------------------------------------- train
def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, **options: Any) -> Path:
    """Train a translator on ``data``; return the run folder (a model package).

    ``model``: ``pix2pix`` (paired data, the default there) or ``cyclegan`` (the default for unpaired
    data; also allowed on paired data, which it then treats as unpaired). ``epochs``: passes over the
    training images (``ceil(n / batch)`` steps each); else ``steps`` (default 3000), always within
    ``time_limit_s`` when given. Options: ``size`` (64), ``mode`` (paired | unpaired, for folders),
    ``direction`` (``a2b``: source → target, the default; ``b2a`` swaps them, e.g. MR-like → CT-like),
    ``batch`` (8), ``lr``, ``eval_every``, ``lambda_l1``, ``lambda_cycle``, ``lambda_identity``,
    ``max_train_images``, ``n_boot``, ``threads``.
    """
    import torch

    from meddx import __version__
    from meddx.config import home_dir
    from meddx.packaging.files import write_package
    from meddx.synthesis.translation.checks import DomainClassifier
    from meddx.synthesis.translation.networks import CHANNELS
    from meddx.synthesis.translation.training import (
        TranslateConfig,
        train_cyclegan,
        train_pix2pix,
    )

    check_options(options, TRAIN_OPTIONS, what="training", kind="translation models")
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    t_start = time.perf_counter()
    size = int(options.get("size") or 64)
    src = D.load(data, size=size, mode=options.get("mode"), max_train_images=options.get("max_train_images"),
                 seed=seed)
    direction = options.get("direction") or "a2b"
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}", field="direction", hint=f"Use one of {list(DIRECTIONS)}")
    if direction == "b2a":
        src = _swap(src)
    method = model or ("pix2pix" if src.mode == "paired" else "cyclegan")
    if method not in METHODS:
        raise ConfigError(f"unknown translation model {method!r}", field="model", hint=f"Use one of {list(METHODS)}")
    if method == "pix2pix" and src.mode != "paired":
        raise ConfigError("pix2pix needs aligned pairs; this source is unpaired", field="model",
                          hint="Use --model cyclegan, or give paired data (same file names in source/ and target/)")
    cfg = TranslateConfig(seed=seed)
    if options.get("batch_size") is not None:
        options.setdefault("batch", options["batch_size"])
    for key, kind in _CONFIG_OPTIONS.items():
        if options.get(key) is not None:
            setattr(cfg, key, kind(options[key]))
    n_train = max(len(src.a["train"]), len(src.b["train"]))
    if options.get("steps") is None:
        cfg.steps = int(epochs * math.ceil(n_train / cfg.batch)) if epochs else DEFAULT_STEPS
    cfg.eval_every = min(cfg.eval_every, max(cfg.steps, 1))
    val_a, val_b = src.a["val"], src.b["val"]
    say(f"{method}: {src.a_name} → {src.b_name} ({src.mode}); {len(src.a['train'])}/{len(src.b['train'])} training, "
        f"{len(val_a)}/{len(val_b)} validation, {len(src.a['test'])}/{len(src.b['test'])} test images of {size} px; "
        f"{cfg.steps} steps")
    if method == "pix2pix":
        if not val_a:
            raise ConfigError("no validation pairs", field="data", hint="Give at least 3 pairs")
        g, info = train_pix2pix(src.a["train"], src.b["train"], cfg, val_src=val_a, val_tgt=val_b, log=say)
        nets = {"g_ab": g}
    else:
        g_ab, g_ba, info = train_cyclegan(src.a["train"], src.b["train"], cfg, val_a=val_a or None,
                                          val_b=val_b or None, log=say)
        nets = {"g_ab": g_ab, "g_ba": g_ba}
    domain = DomainClassifier.fit(src.a["train"], src.b["train"], seed=seed)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", data if src.kind != "folder" else Path(data).name).strip("-") or "translation"
    run = Path(out) if out else home_dir() / "runs" / f"{stem}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    _save(run, nets)
    package: dict[str, Any] = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": f"{stem}-{method}",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "modality": "image",
        "task": KIND,
        "model": method,
        "architecture": "monai BasicUNet generator(s) (2-D, 1 → 1 channel, features 8-16-32-64-128-8, linear output "
                        "clipped to [0, 1]) trained against PatchGAN discriminator(s)",
        "num_classes": 2,
        "class_names": [src.a_name, src.b_name],
        "translation": {
            "method": method, "mode": src.mode, "direction": direction, "size": size,
            "source": src.a_name, "target": src.b_name,
            "source_modality": src.a_modality, "target_modality": src.b_modality,
            "generators": list(nets), "channels": list(CHANNELS),
            "reverse_available": "g_ba" in nets,
            "intensity": "each image scaled to [0, 1] by its own minimum and maximum, resized to size × size; "
                         "outputs resized back to the input's grid",
            "domain_classifier": domain.to_dict(),
            "checks": "structures added/removed: Canny edge regions (>= 5 px) of the output with no input edge "
                      "within 2 px and the reverse; structure SSIM: SSIM of gradient-magnitude maps; cycle PSNR "
                      "(CycleGAN): input vs back-translated output",
        },
        "data": {"source": data, "kind": src.kind, "description": src.description,
                 "train": [len(src.a["train"]), len(src.b["train"])], "val": [len(val_a), len(val_b)],
                 "test": [len(src.a["test"]), len(src.b["test"])]},
        "splits": src.names,
        "training": {**{k: v for k, v in info.items() if k != "history"}, "seed": seed, "batch": cfg.batch,
                     "lr": cfg.lr, "steps_planned": cfg.steps, "time_limit_s": cfg.time_limit_s,
                     "augmentation": "random horizontal flips", "history": info.get("history", [])},
        "extra_files": [],
        "intended_use": "Research only: synthetic images of another modality or domain, always marked SYNTHETIC "
                        "(banner, DICOM ImageType DERIVED); never for diagnosis, dosimetry or measurement.",
    }
    write_package(run, package)
    n_boot = int(options.get("n_boot", 1000))
    if src.a["test"] or src.b["test"]:
        result = _evaluate_source(run, package, src, split="test", n_boot=n_boot, seed=seed)
        package["metrics"] = {"data": data, "split": "test", "n": result["n"], "n_boot": n_boot,
                              "held_out": True, "resampling": "images", "values": result["metrics"]}
        (run / "metrics.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        say("test: " + ", ".join(f"{k} {v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
                                 for k, v in result["metrics"].items()))
    package["training"]["seconds"] = round(time.perf_counter() - t_start, 1)
    package["training"]["train_seconds"] = info["seconds"]
    write_package(run, package)
    from meddx.packaging.card import write_card_or_say

    write_card_or_say(run, package, say)
    return run


# --------------------------------------------------------------------------- evaluate
def _ci(values: list[float] | np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    from meddx.synthesis.metrics import mean_ci

    return mean_ci(np.asarray(values, np.float64), n_boot=n_boot, seed=seed)


def _evaluate_source(folder: Path, package: dict[str, Any], src: D.Source, *, split: str, n_boot: int, seed: int,
                     max_images: int | None = None) -> dict[str, Any]:
    from meddx.synthesis.metrics import per_image
    from meddx.synthesis.translation.checks import (
        DomainClassifier,
        structure_ssim,
        structures,
    )
    from meddx.synthesis.translation.networks import translate

    spec = package["translation"]
    nets = _load(folder, package)
    a, b = src.a[split][:max_images or None], src.b[split][:max_images or None]
    metrics: dict[str, dict[str, float]] = {}
    result: dict[str, Any] = {"model": package.get("name"), "split": split, "mode": spec["mode"],
                              "method": spec["method"], "source": spec["source"], "target": spec["target"],
                              "held_out": split == "test"}
    fake_b = translate(nets["g_ab"], a) if a else []
    if spec["method"] == "pix2pix" or src.mode == "paired" and "g_ba" not in nets:
        q = per_image(b, fake_b)
        copied = per_image(b, a)
        st = [structures(o, r) for o, r in zip(fake_b, b, strict=True)]
        metrics["psnr"], metrics["ssim"] = _ci(q["psnr"], n_boot, seed), _ci(q["ssim"], n_boot, seed)
        metrics["psnr_input_copied"] = _ci(copied["psnr"], n_boot, seed)
        metrics["ssim_input_copied"] = _ci(copied["ssim"], n_boot, seed)
        metrics["structures_added_vs_reference"] = _ci([s["added"] for s in st], n_boot, seed)
        metrics["structures_removed_vs_reference"] = _ci([s["removed"] for s in st], n_boot, seed)
        metrics["structure_ssim_vs_reference"] = _ci([structure_ssim(o, r) for o, r in zip(fake_b, b, strict=True)],
                                                     n_boot, seed)
        result.update(n=len(a), reference="the true target image of each pair")
    else:
        g_ba = nets["g_ba"]
        fake_a = translate(g_ba, b) if b else []
        rec_a, rec_b = translate(g_ba, fake_b) if a else [], translate(nets["g_ab"], fake_a) if b else []
        ca, cb = per_image(a, rec_a), per_image(b, rec_b)
        metrics["cycle_psnr_a"], metrics["cycle_ssim_a"] = _ci(ca["psnr"], n_boot, seed), _ci(ca["ssim"], n_boot, seed)
        metrics["cycle_psnr_b"], metrics["cycle_ssim_b"] = _ci(cb["psnr"], n_boot, seed), _ci(cb["ssim"], n_boot, seed)
        dom = DomainClassifier.from_dict(spec["domain_classifier"])
        p_fake_b, p_fake_a = dom.probability_b(fake_b), dom.probability_b(fake_a)
        p_real_a, p_real_b = dom.probability_b(a), dom.probability_b(b)
        metrics["domain_share_a2b"] = _ci((p_fake_b > 0.5).astype(float), n_boot, seed)
        metrics["domain_share_b2a"] = _ci((p_fake_a <= 0.5).astype(float), n_boot, seed)
        metrics["domain_share_real_a_called_b"] = _ci((p_real_a > 0.5).astype(float), n_boot, seed)
        metrics["domain_accuracy_real"] = _ci(np.r_[(p_real_a <= 0.5), (p_real_b > 0.5)].astype(float), n_boot, seed)
        metrics["structure_ssim_a2b"] = _ci([structure_ssim(o, x) for o, x in zip(fake_b, a, strict=True)], n_boot, seed)
        metrics["structure_ssim_b2a"] = _ci([structure_ssim(o, x) for o, x in zip(fake_a, b, strict=True)], n_boot, seed)
        st = [structures(o, x) for o, x in zip(fake_b, a, strict=True)]
        metrics["structures_added_a2b"] = _ci([s["added"] for s in st], n_boot, seed)
        metrics["structures_removed_a2b"] = _ci([s["removed"] for s in st], n_boot, seed)
        if src.mode == "paired":  # CycleGAN trained on paired data: also score against the true targets
            q = per_image(b, fake_b)
            metrics["psnr"], metrics["ssim"] = _ci(q["psnr"], n_boot, seed), _ci(q["ssim"], n_boot, seed)
        result.update(n=len(a) + len(b), n_a=len(a), n_b=len(b),
                      reference="the input itself (cycle: input vs back-translation; structures: input edges)",
                      domain_classifier={k: v for k, v in spec["domain_classifier"].items()
                                         if k not in ("mean", "scale", "coef", "intercept")})
    result["metrics"] = metrics
    result["n_boot"] = n_boot
    return result


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None, **options: Any) -> dict[str, Any]:
    """Score a translation package on ``data`` (its ``test`` split by default: never seen in training).

    Paired: PSNR / SSIM of the translation against the true target (with "input copied" as the floor),
    structures added / removed against the true target. Unpaired: cycle PSNR / SSIM per domain, the
    domain classifier's share of translated images called the other domain (and its accuracy on real
    images), structure SSIM and structures added / removed against the input. Every figure is a
    mean over images with a 95 % percentile-bootstrap CI. Option ``max_images`` caps each domain.
    """
    check_options(options, EVALUATE_OPTIONS, what="evaluate", kind="translation models")
    if positive is not None:
        raise ConfigError("translation models have no positive class", field="positive", hint="Drop --positive")
    spec = package.get("translation") or {}
    chosen = split or "test"
    if chosen not in ("train", "val", "test"):
        raise ConfigError(f"unknown split {chosen!r}", field="split", hint="Use train, val or test")
    src = D.load(data, size=int(spec.get("size", 64)), mode=spec.get("mode") if D.is_folder_source(data) else None,
                 seed=seed)
    if spec.get("direction") == "b2a":
        src = _swap(src)
    if spec.get("method") == "pix2pix" and src.mode != "paired":
        raise ConfigError("a pix2pix model is scored on paired data", field="data",
                          hint="Give the paired source it was trained on (or another paired folder)")
    if not src.a[chosen] and not src.b[chosen]:
        raise ConfigError(f"no image in split {chosen!r}", field="split", hint="Use another split")
    result = _evaluate_source(Path(folder), package, src, split=chosen, n_boot=n_boot, seed=seed,
                              max_images=options.get("max_images"))
    result["data"] = data
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return result


# --------------------------------------------------------------------------- predict
def _predict_one(nets: dict[str, Any], package: dict[str, Any], item: str, out_dir: Path, stem: str,
                 direction: str, base: dict[str, Any]) -> dict[str, Any]:
    from meddx.inference.schema import Decision, InputCheck, Prediction, Synthetic
    from meddx.synthesis import derived
    from meddx.synthesis.metrics import psnr
    from meddx.synthesis.translation.checks import (
        DomainClassifier,
        structure_ssim,
        structures,
    )
    from meddx.synthesis.translation.networks import translate

    spec = package["translation"]
    size = int(spec.get("size", 64))
    image, sample = D.read_2d(item)
    forward, backward = ("g_ab", "g_ba") if direction == "a2b" else ("g_ba", "g_ab")
    source, target = (spec["source"], spec["target"]) if direction == "a2b" else (spec["target"], spec["source"])
    src_mod, tgt_mod = ((spec.get("source_modality"), spec.get("target_modality")) if direction == "a2b"
                        else (spec.get("target_modality"), spec.get("source_modality")))
    warnings = []
    dicom_modality = getattr(sample, "modality", None) if sample.format == "dicom" else None
    if dicom_modality and src_mod and dicom_modality != src_mod:
        warnings.append(f"the input is a {dicom_modality} image but the model translates {src_mod}-like images; "
                        "the output is unlikely to be meaningful")
    small = D.resize(image, (size, size))
    out_small = translate(nets[forward], [small])[0]
    checks: dict[str, Any] = {**{f"structures_{k}": v for k, v in structures(out_small, small).items()},
                              "structure_ssim": round(structure_ssim(out_small, small), 4),
                              "compared_at": f"{size}x{size} px (the model's grid)", "reference": "the input image"}
    if backward in nets:
        back = translate(nets[backward], [out_small])[0]
        checks["cycle_psnr"] = round(psnr(small, back), 3)
        p_b = float(DomainClassifier.from_dict(spec["domain_classifier"]).probability_b([out_small])[0])
        checks["target_domain_probability"] = round(p_b if direction == "a2b" else 1 - p_b, 4)
    output = D.resize(out_small, image.shape)
    method = f"meddx {package.get('model')} {package.get('name')}"
    png, raw = derived.save_png(output, out_dir / f"{stem}_translated.png", kind=KIND, method=method)
    dicom = None
    if sample.format == "dicom":
        dicom = str(derived.derived_dicom(item, np.clip(output, 0, 1), out_dir / f"{stem}_translated.dcm", kind=KIND,
                                          method=method, description=f"{source} to {target} ({direction})"))
    if checks["structures_added"] >= FLAG_ADDED:
        decision = {"decision": "refer", "reason": f"{checks['structures_added']} structure(s) in the synthetic image "
                    "have no counterpart in the input (possible hallucination); compare with the input"}
        warnings.append(decision["reason"])
    else:
        decision = {"decision": target, "reason": f"synthetic {target} image; no added structure found "
                    f"({checks['structures_removed']} input structure(s) not reproduced)"}
    return Prediction(
        input=item, **base, task=KIND,
        probabilities={}, calibrated_probabilities={}, calibration="none", prediction=target, uncertainty=None,
        decision=Decision(**decision), input_check=InputCheck(passed=True), warnings=warnings,
        synthetic=Synthetic(kind=KIND, method=method, banner=derived.banner_text(KIND, method), image=str(png),
                            image_raw=str(raw), dicom=dicom, source_modality=src_mod or source,
                            target_modality=tgt_mod or target, checks=checks),
    ).to_json_dict()


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One :class:`~meddx.inference.schema.Prediction` dict per input file (PNG, JPEG, single-frame DICOM).

    Each is translated at the model's size and resized back to the input's grid, written to ``out_dir``
    (default the current folder) as ``NAME_translated.png`` (banner ``SYNTHETIC - translation by ...``)
    and ``NAME_translated.raw.png`` (16-bit, no banner), and for a DICOM input also as
    ``NAME_translated.dcm`` (ImageType DERIVED\\SECONDARY, new UIDs, the source referenced).
    ``direction``: ``a2b`` (source → target, default) or ``b2a`` (CycleGAN models only).

    ``synthetic.checks`` (all on the model's grid, against the *input*, since no true target exists):
    ``structures_added``: connected regions (>= 5 px) of Canny edges in the output with no input edge
    within 2 px — boundaries the model drew that the input does not have; ``structures_removed``: the
    reverse; ``structure_ssim``: SSIM of the gradient-magnitude maps; for CycleGAN also ``cycle_psnr``
    (input vs output translated back) and ``target_domain_probability`` (the domain classifier's).
    These cannot see a change of intensity inside a region whose boundary is kept (e.g. a lesion made
    iso-intense) — contrast changes are what translation does. A prediction with an added structure is
    decided ``refer``. A file that cannot be read or used gets a ``rejected`` prediction; the batch goes on.
    """

    check_options(options, PREDICT_OPTIONS, what="predict", kind="translation models")
    if not inputs:
        raise ConfigError("no input files", field="files", hint="Pass images (.png, .jpg, .dcm)")
    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))
    direction = options.get("direction") or "a2b"
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}", field="direction", hint=f"Use one of {list(DIRECTIONS)}")
    nets = _load(Path(folder), package)
    if direction == "b2a" and "g_ba" not in nets:
        raise ConfigError("this model translates one way only (pix2pix): no b2a generator", field="direction",
                          hint="Use direction a2b, or train with --model cyclegan")
    out_dir = Path(options.get("out_dir") or options.get("explain_dir") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {"modality": "image", "model": str(package.get("name")), "model_version": str(package.get("version")),
            "class_names": list(package.get("class_names") or []), "intended_use": package.get("intended_use")}
    from meddx.inference.batch import predict_each

    return predict_each(inputs, lambda item, stem: _predict_one(nets, package, item, out_dir, stem, direction, base),
                        base=base, task=KIND)


__all__ = ["evaluate", "predict", "train"]
