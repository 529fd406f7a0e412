"""kv.json_codec (orjson) reads back exactly what it wrote, and what the stdlib reads, for
every JSON value the API accepts: integers within -2**63 .. 2**64-1, finite floats, strings
without lone surrogates (kv.routing.check_value refuses the rest)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kv import json_codec

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_loads_of_dumps_is_the_value_and_what_the_stdlib_reads(value: Any) -> None:
    raw = json_codec.dumps(value)
    assert json_codec.loads(raw) == value
    assert json.loads(raw) == value
    assert json_codec.loads(json.dumps(value)) == value
