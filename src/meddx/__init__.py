"""meddx: deep-learning medical diagnosis from the data clinics really have.

The package is laid out along the data flow::

    data/       ingest: catalogue of public data sets, fetching, readers, splits
    models/     model factory and registry (transfer learning)
    training/   training loops and run folders
    evaluation/ metrics with confidence intervals, plots
    cli/        the ``meddx`` command

Heavy libraries (torch, pydicom, nibabel, ...) are imported lazily inside the
functions that need them, so ``import meddx`` and ``meddx --help`` stay fast.
"""

from meddx._version import __version__
from meddx.exceptions import MeddxError

__all__ = ["__version__", "MeddxError", "read"]


def read(path, **kwargs):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Read one medical file or folder; see :func:`meddx.data.read`."""
    from meddx.data.readers import read as _read

    return _read(path, **kwargs)
