#!/usr/bin/env bash
# The core install alone (`pip install -e .`, no extra) in a fresh venv, the way the README's
# "In front of vLLM" section and the proxy image install it: every command's --help, `db
# upgrade`, `keys create`, the one-line refusals of commands that need an extra, and one real
# request through `serve` in front of the fake upstream. The test suite runs with every extra
# installed, so this is the only place a core-only import slip shows.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 -m venv "$work/venv"
bin="$work/venv/bin"
install() { "$bin/pip" install --quiet --constraint requirements.lock "$@" > "$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }; }
install pip
install -e .
for heavy in torch numpy transformers; do
  if "$bin/python" -c "import $heavy" 2>/dev/null; then echo "core install has $heavy" >&2; exit 1; fi
done

"$bin/conscience" --version
"$bin/python" - <<'PY' > "$work/commands"
from conscience_cli import main as cli
def walk(group, prefix=()):
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from walk(command, (*prefix, name))
for path in walk(cli.command_tree()):
    print(" ".join(path))
PY
while read -r command; do
  # shellcheck disable=SC2086
  "$bin/conscience" $command --help > /dev/null
done < "$work/commands"
echo "--help: $(wc -l < "$work/commands") commands"

expect_extra() {  # a command that needs an extra: one line naming it, exit 2
  local extra=$1; shift
  set +e; "$bin/conscience" "$@" > "$work/out" 2>&1; local code=$?; set -e
  if [ "$code" != 2 ] || [ "$(wc -l < "$work/out")" != 1 ] || ! grep -q "\[$extra\] extra" "$work/out"; then
    echo "conscience $* should ask for [$extra] (exit $code):" >&2; cat "$work/out" >&2; exit 1
  fi
}
expect_extra local serve --backend local
expect_extra train train --base-model some/model
expect_extra train finetune --task-data x.jsonl --base-model some/model
expect_extra eval eval judge --data x.jsonl
expect_extra eval eval adversarial --data x.jsonl
expect_extra local models fetch-demo
OTEL_TRACES_EXPORTER=console expect_extra tracing serve

export CONSCIENCE_DB_URL="sqlite+aiosqlite:///$work/conscience.db"
export CONSCIENCE_SPOOL_PATH="$work/spool.jsonl"
"$bin/conscience" db upgrade
key=$("$bin/conscience" keys create --name smoke 2>/dev/null)

free_port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
upstream_port=$(free_port); proxy_port=$(free_port)
"$bin/python" -m tests.fakes --port "$upstream_port" --answer "Bread needs flour, water, salt and time." > "$work/upstream.log" 2>&1 &
"$bin/conscience" serve --upstream-url "http://127.0.0.1:$upstream_port/v1" --port "$proxy_port" \
  --judge-model base-model > "$work/proxy.log" 2>&1 &
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$proxy_port/readyz" > /dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$proxy_port/readyz" > /dev/null || { cat "$work/proxy.log" >&2; exit 1; }
reply=$(curl -sf "http://127.0.0.1:$proxy_port/v1/chat/completions" \
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
  -d '{"model": "base-model", "messages": [{"role": "user", "content": "How do I bake bread?"}]}')
echo "$reply" | "$bin/python" -c '
import json, sys
reply = json.load(sys.stdin)
assert reply["choices"][0]["message"]["content"], reply
assert reply["conscience"]["verdict"] in ("ethical", "neutral"), reply["conscience"]
print("serve: one request through the core install, verdict", reply["conscience"]["verdict"])
' || { cat "$work/proxy.log" >&2; exit 1; }
echo "core install: OK"
