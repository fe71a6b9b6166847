#!/usr/bin/env bash
# Runs the compiled tests with node's test runner. `unit` runs only the pure tests (no root needed);
# without it the namespace lab tests run too (they need root and skip themselves otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t unit < <(find packages/*/dist/test tools/*/dist/test -name '*.test.js' | sort)
files=("${unit[@]}")
if [[ "${1:-}" != unit ]]; then
  # test/system (npm run test:system) builds packages and boots containers: not part of npm test.
  mapfile -t lab < <(find test/dist -name '*.test.js' -not -path 'test/dist/system/*' | sort)
  files+=("${lab[@]}")
fi
# Files run one after another: lab tests measure throughput and must not compete for the two cores.
exec node --test --test-reporter=spec "${files[@]}"
