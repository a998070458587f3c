"""Smooth weighted round robin and failover order."""

from __future__ import annotations

from collections import Counter

from offload.backends import BackendPicker
from offload.health import BackendHealth
from offload.spec import Backend

A, B, C = Backend("10.0.0.1", 1, 5), Backend("10.0.0.2", 1, 1), Backend("10.0.0.3", 1, 1)


def _firsts(picker: BackendPicker, n: int) -> list[Backend]:
    return [next(picker.candidates())[1] for _ in range(n)]


def test_weights_share_connections_smoothly() -> None:
    """Weights 5:1:1 give exactly 5:1:1 per cycle, interleaved as nginx does."""
    picks = _firsts(BackendPicker((A, B, C)), 7)
    assert picks == [A, A, B, A, C, A, A]
    assert Counter(_firsts(BackendPicker((A, B, C)), 700)) == {A: 500, B: 100, C: 100}


def test_every_backend_is_a_candidate_once() -> None:
    """Failover tries each backend at most once per client connection, pick first."""
    order = [b for _, b in BackendPicker((A, B, C)).candidates()]
    assert order == [A, B, C]


def test_zero_weight_is_never_chosen() -> None:
    """A backend with weight 0 is drained: not picked, not a fallback."""
    picker = BackendPicker((A, Backend("10.0.0.9", 1, 0)))
    assert [b for _, b in picker.candidates()] == [A]


def test_failed_backend_is_tried_last() -> None:
    """A backend that just failed to connect goes behind the others."""
    picker = BackendPicker((A, B))
    index = next(i for i, b in picker.candidates() if b == A)
    picker.mark_down(index)
    assert [b for _, b in picker.candidates()] == [B, A]
    picker.mark_up(index)
    assert Counter(_firsts(picker, 6)) == {A: 5, B: 1}


def test_no_backends_no_candidates() -> None:
    """An empty server group yields nothing to try."""
    assert list(BackendPicker(()).candidates()) == []


def _health(up: bool) -> BackendHealth:
    state = BackendHealth()
    state.up = up
    return state


def test_backends_down_by_health_checks_are_no_candidates() -> None:
    """A backend its checks mark down is neither picked nor a fallback; the weighted round
    robin runs over the backends up, and comes back to the full share when it is up."""
    b_health = _health(False)
    picker = BackendPicker((A, B, C), (None, b_health, _health(True)))
    assert [b for _, b in picker.candidates()] == [A, C]
    assert Counter(_firsts(picker, 600)) == {A: 500, C: 100}
    b_health.up = True
    assert Counter(_firsts(picker, 700)) == {A: 500, B: 100, C: 100}


def test_every_backend_down_leaves_no_candidate() -> None:
    """With every checked backend down there is nothing to try (the client is closed)."""
    picker = BackendPicker((A, B), (_health(False), _health(False)))
    assert list(picker.candidates()) == []


def test_health_states_follow_their_backends_past_drained_ones() -> None:
    """A weight-0 backend dropped from the picker does not shift the others' states."""
    drained = Backend("10.0.0.9", 1, 0)
    picker = BackendPicker((drained, A, B), (_health(True), _health(False), _health(True)))
    assert [b for _, b in picker.candidates()] == [B]
