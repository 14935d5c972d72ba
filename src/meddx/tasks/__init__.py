"""Tasks beyond classification (segmentation, detection): head, loss, metrics and output decoding per task."""
