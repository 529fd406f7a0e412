"""kvctl's top-level --help text (kvctl/cli.py shows it)."""

HELP = """Operate a kv cluster over its HTTP API: keys (get, put, del, ls), keyspaces,
membership changes (plan, commit, status, abort), client tokens and a look at the cluster.

\b
Keys (VALUE is JSON; text that is not valid JSON is taken as a string):
  kvctl put carts alice '["milk"]'   # prints OK (and the version, linearizable)
  kvctl get carts alice              # the value as JSON; siblings one per line
  kvctl --json get carts alice       # the whole reply: value, context or version
  kvctl ls carts --prefix al         # every key with the prefix, one per line
  kvctl del carts alice
  kvctl cluster health               # GET /v1/health of every endpoint

\b
Membership changes are staged locally, shown as a plan, then committed:
  kvctl plan add n4 --http 10.0.0.4:7001 --raft 10.0.0.4:7101
  kvctl plan show                  # every replica that moves; remembers the plan id
  kvctl commit                     # refused if the cluster changed since `plan show`
  kvctl status --wait              # follow the moves until the plan is done
  kvctl abort                      # or stop it: moves not yet done go back
  kvctl --json status              # the same, as JSON for scripts
  KV_ENDPOINTS=10.0.0.1:7001,10.0.0.2:7001 kvctl cluster status
  kvctl --token-file admin.token token create ci --role write --keyspace carts

\b
Backup and restore (docs/backup.md):
  kvctl backup --keyspace carts --out carts.kvb      # a checksummed archive, while serving
  kvctl restore carts.kvb --keyspace carts2          # creates carts2 with carts' configuration

\b
Exit codes:
  0  done
  1  refused: the cluster said no (invalid request, plan conflict) or nothing to do
  2  usage: a bad command line
  3  unavailable: no node answered (or all said 503); nothing was applied
  4  unknown outcome (504): it may have been applied; look before retrying
  5  `status --wait` timed out with the plan still moving (the reason is printed)
  6  not found: the key does not exist
  7  no such keyspace
  8  condition failed: --if-version did not match (the current version is printed)
  9  `cluster health`: every endpoint answered, not all `ok`
  10 `restore`: the archive is damaged (or of another format version); nothing written
"""
