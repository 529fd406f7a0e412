"""kvctl — the operator's command line for a kv cluster (DESIGN.md §6, docs/membership.md
"kvctl").

    kvctl/cli.py      the commands: parse, call kv/client.py, print; with kvctl/cli_*.py
                      (keys, keyspace, cluster, token), the only click importers
    kvctl/keys.py     values as JSON, replies as lines, the listing's page walk, health — pure
    kvctl/errors.py   exit codes and one-line messages: every failure is mapped there, once
    kvctl/staged.py   the staged membership changes, kept in a local JSON file
    kvctl/follow.py   one look at a plan in flight through the API, or looks until it is done
    kvctl/status.py   a plan in flight joined with every member's progress — pure
    kvctl/render.py   text for plans, status and the cluster — pure

It reaches nodes only through the HTTP API and `kv.client` (tests/unit/test_layering.py).
"""
