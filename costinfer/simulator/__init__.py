"""costinfer's simulator: OpenAI's and Anthropic's protocols on loopback, with faults and rate limits on demand."""

from costinfer.simulator.answers import answer_for, body_digest
from costinfer.simulator.config import SimulatorConfig
from costinfer.simulator.faults import Faults, RateWindow
from costinfer.simulator.server import Simulator, running_in_thread, serve_forever

__all__ = [
    "Faults",
    "RateWindow",
    "Simulator",
    "SimulatorConfig",
    "answer_for",
    "body_digest",
    "running_in_thread",
    "serve_forever",
]
