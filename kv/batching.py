"""Greedy bounded batching: items in order, cut into batches of at most `max_items` items
and about `max_bytes` of `weight` (a batch exceeds it only by one item: a single item
heavier than the bound is a batch of its own). Used for migrate commands (a switch, a
restore) and import requests. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def chunks(
    items: Iterable[T], max_items: int, max_bytes: int, weight: Callable[[T], int]
) -> list[list[T]]:
    out: list[list[T]] = []
    batch: list[T] = []
    size = 0
    for item in items:
        cost = weight(item)
        if batch and (len(batch) >= max_items or size + cost > max_bytes):
            out.append(batch)
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        out.append(batch)
    return out
