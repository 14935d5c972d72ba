"""Object detection: VOC/COCO readers, an FCOS detector, COCO mAP, and the (image, detection) handler.

``meddx.tasks.detection.package`` exposes ``train`` / ``evaluate`` / ``predict`` for
:mod:`meddx.modalities`; see ``docs/detection.md``. Importing this package imports no torch:
``data``, ``decode``, ``metrics`` and ``runtime`` (ONNX Runtime) are numpy-only; ``model`` and
``train`` need torch.
"""
