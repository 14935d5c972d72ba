"""Image segmentation as a meddx task: retinal vessel segmentation (CHASE_DB1) and user folders of masks.

- :mod:`~meddx.tasks.segmentation.data`: reading images and masks, the CHASE_DB1 split, preprocessing;
- :mod:`~meddx.tasks.segmentation.fov`: the field of view derived from a fundus image;
- :mod:`~meddx.tasks.segmentation.network`: the MONAI networks compared;
- :mod:`~meddx.tasks.segmentation.training`: patch training (Dice + BCE);
- :mod:`~meddx.tasks.segmentation.inference`: sliding-window inference (torch or ONNX Runtime);
- :mod:`~meddx.tasks.segmentation.metrics`: metrics inside the FOV, bootstrap CIs, calibration;
- :mod:`~meddx.tasks.segmentation.model`: a trained model's files and probability maps;
- :mod:`~meddx.tasks.segmentation.package`: the ``train`` / ``evaluate`` / ``predict`` handler.

Nothing heavy is imported here.
"""
