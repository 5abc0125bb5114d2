"""The orchestration: the stages in order, from a run's options to its summary."""
