#!/usr/bin/env bash
# Run the Durable Streams server conformance suite against `unbroken serve`.
# Usage: conformance/run.sh            (needs `npm ci` in conformance/ first)
# Prints the suite's summary and a last line: "conformance: passed=N failed=N skipped=N";
# exits 1 when a test failed (or none passed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
py="$root/.venv/bin/unbroken"
port="${CONFORMANCE_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log="${CONFORMANCE_LOG:-/tmp/unbroken-conformance-server.log}"
"$py" serve conformance.app:app --app-dir "$root" --host 127.0.0.1 --port "$port" --loop "${CONFORMANCE_LOOP:-auto}" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://127.0.0.1:$port/healthz" 2>/dev/null; then break; fi
  sleep 0.1
done
cd "$here"
out="$(mktemp)"
set +e
CONFORMANCE_TEST_URL="http://127.0.0.1:$port" npx --no-install vitest run --config "$here/vitest.config.mjs" --reporter=default --reporter=json \
  --outputFile.json="$out.json" 2>&1 | tee "$out" | tail -n 25
set -e
node -e '
const r = require(process.argv[1]);
const p = r.numPassedTests, f = r.numFailedTests, s = r.numPendingTests + r.numTodoTests;
console.log(`conformance: passed=${p} failed=${f} skipped=${s} total=${r.numTotalTests}`);
process.exitCode = f > 0 || p === 0 ? 1 : 0;
' "$out.json"
