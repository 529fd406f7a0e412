"""The canonical bytes of a version (pure): the form Merkle leaves hash
(dynamo_mode/merkle.py ``version_hash``) and sibling reconciliation breaks ties by
(dynamo_mode/siblings.py). Frozen: every build must produce the same bytes, or replicas
running different builds would see equal version sets as different.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from kv import json_codec

if TYPE_CHECKING:
    from dynamo_mode.siblings import Version

_STDLIB_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_form(v: Version) -> bytes:
    """The version's wire form as JSON with sorted keys, exactly the UTF-8 of the stdlib's
    ``json.dumps(v.to_wire(), sort_keys=True, separators=(",", ":"))``: Merkle leaves hash
    it (dynamo_mode/merkle.py), so every build must produce the same bytes.

    orjson (``json_codec.canonical``) writes the same bytes ten times faster, except for
    text outside printable ASCII (the stdlib escapes it) and floats (formatted otherwise).
    A float can only be the value or inside it (dots, contexts, ts and expires_at are
    integers), so orjson's form is taken when the value is a string, an integer, a bool or
    null and the form is ASCII without DEL; anything else takes the stdlib encoder."""
    value = v.value
    if value is None or type(value) in (str, int, bool):
        out = json_codec.canonical(v.to_wire())
        if out.isascii() and b"\x7f" not in out:
            return out
    return _STDLIB_CANONICAL.encode(v.to_wire()).encode()
