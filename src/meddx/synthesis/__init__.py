"""Image synthesis: low-dose to full-dose restoration and cross-modality translation.

The flow, one module per concept:

- :mod:`~meddx.synthesis.dose`: physically motivated dose reduction (photon-count Poisson noise for
  X-ray and CT sinograms, Rician noise for MRI, resolution loss), and the per-pixel noise level a
  restorer is told;
- :mod:`~meddx.synthesis.baselines`: the classical restorers every model is compared with (BM3D,
  non-local means), given the same noise information;
- :mod:`~meddx.synthesis.networks` / :mod:`~meddx.synthesis.training`: the learned restorers
  (residual U-Net, DnCNN, RED-CNN) and their paired patch training;
- :mod:`~meddx.synthesis.metrics`: PSNR and SSIM with bootstrap CIs;
- :mod:`~meddx.synthesis.hallucination`: structures an output has and its reference (or its input)
  lacks, and downstream-model agreement;
- :mod:`~meddx.synthesis.derived`: every synthetic image is marked as derived (DICOM ImageType
  DERIVED, a "SYNTHETIC" banner on pictures);
- :mod:`~meddx.synthesis.package`: the (image, restoration) handler: train, evaluate, predict.
"""
