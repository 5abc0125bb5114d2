"""The load-following controller's rules, reading by reading."""

from __future__ import annotations

from costinfer.execution.load import MARGIN, START, LoadControl


def test_it_doubles_while_nothing_waits_and_every_call_is_in_use() -> None:
    control = LoadControl(ceiling=256)
    assert control.limit == START
    control.in_flight = START
    control.observe(running=START, waiting=0, kv_cache=0.1)
    assert control.limit == 2 * START
    control.in_flight = 3  # calls not all in use: no evidence the server could take more
    control.observe(running=3, waiting=0, kv_cache=0.1)
    assert control.limit == 2 * START


def test_calls_in_use_but_not_yet_running_on_the_server_are_no_sign_of_room() -> None:
    """A server that runs 8 at once, 12 calls in flight: a reading between one answer and the next call (a busy
    client) shows nothing waiting. Doubling then sent 24 and queued 16 (seen in CI under load)."""
    control = LoadControl(ceiling=256, start=LoadControl.start_for(8))
    assert control.limit == 12
    control.in_flight = 12
    control.observe(running=8, waiting=0, kv_cache=0.1)
    assert control.limit == 12
    control.observe(running=12, waiting=0, kv_cache=0.1)  # every call running and none waiting: room
    assert control.limit == 24


def test_it_keeps_the_largest_batch_seen_plus_half_once_requests_queue() -> None:
    control = LoadControl(ceiling=256, start=256)
    control.observe(running=128, waiting=128, kv_cache=0.02)
    assert control.limit == 192 and control.settled
    control.observe(running=40, waiting=100, kv_cache=0.02)  # caught half refilled: the batch is still 128
    assert control.limit == 192
    control.in_flight = 192
    control.observe(running=128, waiting=0, kv_cache=0.95)  # the KV cache is full: no more
    assert control.limit == 192


def test_the_ceiling_holds_and_a_known_batch_is_where_it_starts() -> None:
    control = LoadControl(ceiling=20)
    control.in_flight = START
    control.observe(running=START, waiting=0, kv_cache=None)
    assert control.limit == 20
    assert LoadControl.start_for(None) == START
    assert LoadControl.start_for(128) == 192
    assert LoadControl.start_for(4) == 4 + MARGIN
