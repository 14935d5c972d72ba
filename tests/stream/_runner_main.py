"""A runner process for the crash tests: ``python -m tests.stream._runner_main PORT STORE`` (killed with -9)."""

from __future__ import annotations

import sys
from pathlib import Path

from meddx.stream.broker import BrokerAddress
from meddx.stream.runner import RunnerConfig, StreamRunner
from tests.stream._fakes import AmplitudeModel

if __name__ == "__main__":
    port, store = int(sys.argv[1]), Path(sys.argv[2])
    config = RunnerConfig(broker=BrokerAddress("127.0.0.1", port), store=store, window_s=4.0, hop_s=1.0,
                          client_id="crash-test-runner")
    StreamRunner(config, AmplitudeModel()).start().run_forever()
