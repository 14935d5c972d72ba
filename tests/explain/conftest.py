"""A tiny trained model whose evidence is known: class 1 = a bright square at rows/cols 4-9.

Every image gets a random brightness offset, larger than the mean-intensity
shift the square causes, so the global brightness does not separate the
classes: the model has to find the square, and a faithful CAM has to point at
it. Trained once per session (about a second on 2 CPU cores) and shared by the
CAM and sanity tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

SIZE = 24
SQUARE = (4, 4, 10, 10)  # (x0, y0, x1, y1), x1/y1 exclusive: rows and columns 4..9
SQUARE_SHARE = (SQUARE[2] - SQUARE[0]) * (SQUARE[3] - SQUARE[1]) / SIZE**2
BRIGHTNESS = 1.5


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 1x24x24 images, alternately class 0 and class 1, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0.0, 0.5, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    x0, y0, x1, y1 = SQUARE
    images[labels == 1, 0, y0:y1, x0:x1] += BRIGHTNESS
    images += rng.uniform(-1.0, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    return images, labels.astype(np.int64)


@dataclass
class Trained:
    model: Any
    x: Any  # held-out images, (N, 1, 24, 24) float tensor
    y: np.ndarray
    accuracy: float


@pytest.fixture(scope="session")
def trained() -> Trained:
    """cnn-tiny trained with Adam (cosine-decayed, 100 steps of 32 images); eval mode, held-out batch of 32.

    The decaying learning rate makes the end point stable (a constant 1e-2 can
    leave the model mid-oscillation, depending on the step count).
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_grad_cam")
    from meddx.models import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster on a shared 2-core machine
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = create_model("cnn-tiny", 2, 1)
            images, labels = make_images(256, seed=0)
            xs, ys = torch.from_numpy(images), torch.from_numpy(labels)
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
            steps = 100
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
            generator = torch.Generator().manual_seed(0)
            model.train()
            for _ in range(steps):
                idx = torch.randint(0, len(xs), (32,), generator=generator)
                loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    test_images, test_labels = make_images(32, seed=1)
    x = torch.from_numpy(test_images)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1).numpy() == test_labels).mean())
    print(f"\ncnn-tiny square detector: held-out accuracy {accuracy:.3f}")
    return Trained(model=model, x=x, y=test_labels, accuracy=accuracy)
