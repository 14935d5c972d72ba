"""Cross-modality / cross-domain image translation (issue 21): paired (pix2pix) and unpaired (CycleGAN).

- :mod:`~meddx.synthesis.translation.phantoms`: generated paired "CT-like" / "MR-like" images of one
  label map (the honest stand-in for paired CT↔MR, which the offline mirror does not hold);
- :mod:`~meddx.synthesis.translation.networks`: the U-Net generator and the PatchGAN discriminator;
- :mod:`~meddx.synthesis.translation.training`: :func:`train_pix2pix` and :func:`train_cyclegan`;
- :mod:`~meddx.synthesis.translation.checks`: structures added/removed (edge regions), structure
  similarity, the domain classifier;
- :mod:`~meddx.synthesis.translation.package`: the (image, translation) handler: train, evaluate, predict.
"""
