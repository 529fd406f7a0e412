# Sourced by ops/* scripts: makes sure ./.venv exists with the project installed, then sets
# PY to its interpreter. Re-installs when pyproject.toml changes (stamp = its checksum).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
stamp="$VENV/.kv-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$PY" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up $VENV (first run only)..." >&2
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e "$ROOT[test]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
