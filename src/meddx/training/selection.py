"""Keep the network state with the best validation score seen during training (model selection)."""

from __future__ import annotations

import math
from typing import Any


class BestState:
    """The best validation score so far, the step it came at, and a copy of the weights then.

    ``offer(net, score, step)`` keeps a copy when ``score`` beats the best (higher is better);
    ``restore(net)`` loads the kept weights back (a no-op when nothing was offered).
    """

    def __init__(self) -> None:
        self.score = -math.inf
        self.step = 0
        self.state: dict[str, Any] | None = None

    def offer(self, net: Any, score: float, step: int) -> bool:
        if score <= self.score:
            return False
        self.score, self.step = score, step
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return True

    def restore(self, net: Any) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)
