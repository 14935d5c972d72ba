"""One torch thread for small work: waking a thread pool costs more than a tiny forward pass.

On a loaded 2-core machine the pool's spinning threads can make small
convolutions ten times slower; larger work keeps the caller's setting. torch is
imported only when the context is entered, so importing this module is free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_thread_below(work: int, threshold: int) -> Iterator[None]:
    """Run the block on one torch thread when ``work < threshold`` (any unit the caller chooses)."""
    import torch

    if work >= threshold or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
