"""Contexts are sealed to their keyspace incarnation and key (dynamo_mode/context_seal.py,
issue 11 item 5): one read from another key, another keyspace or altered is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo_mode import context_seal, vclock
from kv.keys import context_key

KEY = context_key("secret-a")
BODY = vclock.encode_context_full({"n1": 3, "n2": 1})


def test_a_sealed_context_opens_for_its_own_key() -> None:
    token = context_seal.seal(KEY, 7, "cart", BODY)
    assert context_seal.unseal(KEY, 7, "cart", token) == BODY


@pytest.mark.parametrize(
    ("uid", "name", "key"),
    [
        (7, "cart2", KEY),  # another key
        (8, "cart", KEY),  # another keyspace, or the same name re-created (new uid)
        (7, "cart", context_key("secret-b")),  # another cluster
    ],
)
def test_a_context_from_elsewhere_is_refused(uid: int, name: str, key: bytes) -> None:
    token = context_seal.seal(KEY, 7, "cart", BODY)
    with pytest.raises(ValueError, match="another key or keyspace"):
        context_seal.unseal(key, uid, name, token)


def test_an_unsealed_or_altered_context_is_refused() -> None:
    with pytest.raises(ValueError, match="not a context this store issued"):
        context_seal.unseal(KEY, 7, "cart", BODY)
    token = context_seal.seal(KEY, 7, "cart", BODY)
    forged = vclock.encode_context_full({"n1": 99}) + token[token.rindex(".") :]
    with pytest.raises(ValueError, match="altered"):
        context_seal.unseal(KEY, 7, "cart", forged)


def test_the_empty_context_needs_no_seal() -> None:
    assert context_seal.unseal(KEY, 7, "cart", "") == ""


@given(
    st.tuples(st.integers(1, 2**32 - 1), st.text(max_size=12)),
    st.tuples(st.integers(1, 2**32 - 1), st.text(max_size=12)),
)
def test_a_seal_opens_for_its_own_keyspace_and_key_only(
    mine: tuple[int, str], other: tuple[int, str]
) -> None:
    """The tag's message is length-prefixed, so no (uid, key) pair — "1"+"23" against
    "12"+"3", say — opens another pair's seal."""
    token = context_seal.seal(KEY, *mine, BODY)
    assert context_seal.unseal(KEY, *mine, token) == BODY
    if other != mine:
        with pytest.raises(ValueError):
            context_seal.unseal(KEY, *other, token)
