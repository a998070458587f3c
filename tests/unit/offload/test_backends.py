"""Smooth weighted round robin and failover order."""

from __future__ import annotations

from collections import Counter

from offload.backends import BackendPicker
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
