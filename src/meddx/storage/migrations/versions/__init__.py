"""Migration scripts, one per schema revision (``NNNN_name.py``)."""
