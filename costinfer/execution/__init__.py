"""Sending requests: online (concurrent, paced, retried, with a breaker) or through a provider's batch API."""
