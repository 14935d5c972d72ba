"""Dose reduction that follows the physics of the acquisition, for training and testing restorers.

Images are float arrays in [0, 1] (grey, 2-D). Each :class:`DoseModel` turns a full-dose image
into what the same acquisition would look like at a fraction of the dose, and says how noisy each
pixel of an observed low-dose image is, from the observed image and the acquisition settings alone
(what a restorer may know at run time):

- ``xray-poisson``: a radiograph shows line integrals of attenuation, ``p = mu * x``; the detector
  counts ``N ~ Poisson(I0 * dose * exp(-p))`` photons and the image is ``-log(N / (I0 * dose)) / mu``.
  Dense regions (bright) receive few photons and are noisiest. ``I0`` is the full-dose photon count
  per pixel at the image's own resolution.
- ``ct-poisson``: the same photon statistics on the CT sinogram (scikit-image's Radon transform),
  reconstructed by filtered back-projection: streaky, spatially correlated noise.
- ``mri-rician``: MRI magnitude images with complex Gaussian noise whose standard deviation grows
  as ``1 / sqrt(dose)`` (dose = the fraction of the full acquisition time, averages or k-space).
- ``resolution`` (any model): a lower-resolution acquisition (anti-aliased down-sampling by that
  factor, then back to the grid) before the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError


@dataclass(frozen=True)
class DoseModel:
    """One physical noise model: ``degrade`` a clean image, and the ``noise_map`` of an observed one."""

    name: str
    modality: str
    description: str
    degrade_fn: Callable[..., np.ndarray]
    noise_fn: Callable[..., np.ndarray]
    defaults: dict[str, float] = field(default_factory=dict)
    pixelwise: bool = True
    """Each pixel's noise depends on that pixel only (a crop of a degraded image = a degraded crop)."""
    mean_fn: Callable[..., np.ndarray] | None = None
    """Expected observation of a clean image when the noise is biased (Rician); None = the image itself."""

    def settings(self, **overrides: Any) -> dict[str, float]:
        """The model's parameters (``photons``, ``mu``, ``sigma``) with ``overrides`` applied."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{self.name} has no parameter {unknown[0]!r}", field=unknown[0],
                              hint=f"Its parameters: {sorted(self.defaults)}")
        return {**self.defaults, **{k: float(v) for k, v in overrides.items() if v is not None}}

    def degrade(self, image: np.ndarray, dose: float, rng: np.random.Generator | int | None = None, *,
                resolution: float = 1.0, **params: Any) -> np.ndarray:
        """The image at ``dose`` (fraction of the full dose, 0-1] and ``resolution`` (0-1] of its grid."""
        x = check_image(image)
        check_dose(dose)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if resolution < 1.0:
            x = lower_resolution(x, resolution)
        return self.degrade_fn(x, float(dose), rng, **self.settings(**params)).astype(np.float32)

    def expected(self, clean: np.ndarray, dose: float, **params: Any) -> np.ndarray:
        """The mean observation of ``clean`` at ``dose`` (differs from ``clean`` where the noise is biased)."""
        if self.mean_fn is None:
            return np.asarray(clean, np.float32)
        return self.mean_fn(np.asarray(clean, np.float64), float(dose), **self.settings(**params)).astype(np.float32)

    def noise_map(self, observed: np.ndarray, dose: float, **params: Any) -> np.ndarray:
        """Expected noise standard deviation per pixel of an ``observed`` image acquired at ``dose``."""
        check_dose(dose)
        return self.noise_fn(check_image(observed), float(dose), **self.settings(**params)).astype(np.float32)


def check_image(image: np.ndarray) -> np.ndarray:
    """A 2-D float32 image in [0, 1], or an InvalidValueError saying what is wrong."""
    x = np.asarray(image)
    if x.ndim != 2:
        raise InvalidValueError(f"restoration works on 2-D grey images, got shape {x.shape}", field="image",
                                hint="Convert colour to grey and pass one slice of a volume")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise InvalidValueError("the image has NaN or infinite pixels", field="image", hint="Clean the input")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise InvalidValueError(f"pixel values {x.min():.3g}..{x.max():.3g} lie outside [0, 1]", field="image",
                                hint="Scale the image to [0, 1] first (meddx.synthesis.package.to_unit)")
    return np.clip(x, 0.0, 1.0)


def check_dose(dose: float) -> None:
    if not (isinstance(dose, (int, float)) and 0 < dose <= 1):
        raise InvalidValueError(f"dose fraction {dose!r} is not in (0, 1]", field="dose",
                                hint="Give the fraction of the full dose, e.g. 0.1 for 10 %")


def lower_resolution(x: np.ndarray, factor: float) -> np.ndarray:
    """Anti-aliased down-sampling by ``factor`` (0-1], then cubic interpolation back to the grid."""
    from skimage.transform import resize

    if not 0 < factor <= 1:
        raise InvalidValueError(f"resolution factor {factor} is not in (0, 1]", field="resolution",
                                hint="Give e.g. 0.5 for half the resolution")
    small = (max(2, round(x.shape[0] * factor)), max(2, round(x.shape[1] * factor)))
    down = resize(x, small, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(resize(down, x.shape, order=3, preserve_range=True), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------ X-ray
def _xray(x: np.ndarray, dose: float, rng: np.random.Generator, *, photons: float, mu: float) -> np.ndarray:
    incident = photons * dose
    counts = rng.poisson(incident * np.exp(-mu * x.astype(np.float64)))
    return np.clip(-np.log(np.maximum(counts, 0.5) / incident) / mu, 0, 1)


def _xray_noise(observed: np.ndarray, dose: float, *, photons: float, mu: float) -> np.ndarray:
    # var(-log N / mu) ~ 1 / (mu^2 * E[N]); E[N] estimated from the observed (noisy) image
    expected = photons * dose * np.exp(-mu * observed.astype(np.float64))
    return 1.0 / (mu * np.sqrt(np.maximum(expected, 1.0)))


# --------------------------------------------------------------------------------------------- CT
def _angles(x: np.ndarray) -> np.ndarray:
    return np.linspace(0.0, 180.0, max(x.shape), endpoint=False)


def _ct(x: np.ndarray, dose: float, rng: np.random.Generator, *, photons: float, mu: float) -> np.ndarray:
    from skimage.transform import iradon, radon

    scale = mu / max(x.shape)  # a line through the whole grid at value 1 integrates to mu
    sinogram = radon(x.astype(np.float64) * scale, theta=_angles(x), circle=False)
    incident = photons * dose
    counts = rng.poisson(incident * np.exp(-sinogram))
    noisy = -np.log(np.maximum(counts, 0.5) / incident)
    image = iradon(noisy, theta=_angles(x), circle=False, filter_name="ramp", output_size=max(x.shape))
    r0 = (image.shape[0] - x.shape[0]) // 2
    c0 = (image.shape[1] - x.shape[1]) // 2
    return np.clip(image[r0:r0 + x.shape[0], c0:c0 + x.shape[1]] / scale, 0, 1)


def _ct_noise(observed: np.ndarray, dose: float, *, photons: float, mu: float) -> np.ndarray:
    # FBP spreads the sinogram noise over the slice: one level, from a reconstruction of noise alone with
    # each ray's variance 1 / E[N] taken from the observed slice's own projections
    from skimage.transform import iradon, radon

    scale = mu / max(observed.shape)
    angles = _angles(observed)
    sinogram = radon(observed.astype(np.float64) * scale, theta=angles, circle=False)
    sd = 1.0 / np.sqrt(np.maximum(photons * dose * np.exp(-sinogram), 1.0))
    noise = np.random.default_rng(0).normal(0.0, 1.0, sinogram.shape) * sd
    level = float(iradon(noise, theta=angles, circle=False, filter_name="ramp", output_size=max(observed.shape))
                  .std()) / scale
    return np.full(observed.shape, level, np.float32)


# -------------------------------------------------------------------------------------------- MRI
def _mri(x: np.ndarray, dose: float, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    s = sigma / math.sqrt(dose)
    real = x + rng.normal(0.0, s, x.shape)
    imag = rng.normal(0.0, s, x.shape)
    return np.clip(np.hypot(real, imag), 0, 1)


def _mri_mean(x: np.ndarray, dose: float, *, sigma: float) -> np.ndarray:
    # mean of a Rice(nu=x, sigma) variable: sigma sqrt(pi/2) L_1/2(-nu^2 / 2 sigma^2), with scaled Bessel functions
    from scipy.special import i0e, i1e

    s = sigma / math.sqrt(dose)
    h = x**2 / (4 * s**2)
    return s * math.sqrt(math.pi / 2) * ((1 + 2 * h) * i0e(h) + 2 * h * i1e(h))


def _mri_noise(observed: np.ndarray, dose: float, *, sigma: float) -> np.ndarray:
    return np.full(observed.shape, sigma / math.sqrt(dose), np.float32)


DOSE_MODELS: dict[str, DoseModel] = {}


def register(model: DoseModel) -> DoseModel:
    DOSE_MODELS[model.name] = model
    return model


register(DoseModel("xray-poisson", "xray", "photon-count Poisson noise on the radiograph (Beer-Lambert, -log)",
                   _xray, _xray_noise, {"photons": 1e4, "mu": 2.5}))
register(DoseModel("ct-poisson", "ct", "photon-count Poisson noise on the sinogram, filtered back-projection",
                   _ct, _ct_noise, {"photons": 1e5, "mu": 4.0}, pixelwise=False))
register(DoseModel("mri-rician", "mri", "complex Gaussian noise on the magnitude image (Rician), "
                   "sd proportional to 1/sqrt(dose)", _mri, _mri_noise, {"sigma": 0.02}, mean_fn=_mri_mean))


def get(name: str) -> DoseModel:
    """The dose model called ``name`` (a ConfigError lists the known ones)."""
    try:
        return DOSE_MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown dose model {name!r}", field="noise", hint=f"Use one of {sorted(DOSE_MODELS)}") \
            from None


def for_modality(modality: str) -> DoseModel:
    """The dose model of an imaging modality (``xray``, ``ct``, ``mri``)."""
    for model in DOSE_MODELS.values():
        if model.modality == modality:
            return model
    raise ConfigError(f"no dose model for modality {modality!r}", field="modality",
                      hint=f"Known: {sorted(m.modality for m in DOSE_MODELS.values())}")
