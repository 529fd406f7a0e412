"""The backup routes (docs/backup.md): a partition's export and a batch's import, through
kv/backups.py. The composition root sets `BACKUPS`; without it (an app built for a test of
other routes) they answer 501."""

from __future__ import annotations

from aiohttp import web

from kv.backups import Backups
from kv.errors import NotImplementedYet
from kv.http.parse import int_param, json_reply, options, read_json

BACKUPS: web.AppKey[Backups] = web.AppKey("backups", Backups)


def _backups(request: web.Request) -> Backups:
    found = request.app.get(BACKUPS)
    if found is None:
        raise NotImplementedYet("backup is not available on this node")
    return found


async def export(request: web.Request) -> web.Response:
    partition = int_param(request, "partition", 0, 1 << 16)
    name, timeout = request.match_info["ks"], options(request).timeout_s
    return json_reply(await _backups(request).export(name, partition, timeout))


async def import_(request: web.Request) -> web.Response:
    body = await read_json(request)
    name, timeout = request.match_info["ks"], options(request).timeout_s
    return json_reply(await _backups(request).import_(name, body, timeout))
