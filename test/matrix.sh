#!/usr/bin/env bash
# Runs the end-to-end suite once per Postgres major (PG_MAJOR), stopping at the first failure.
# Usage: bash test/matrix.sh [extra vitest args]   (MAJORS="16 18" bash test/matrix.sh to pick majors)
set -uo pipefail
cd "$(dirname "$0")/.."

majors=(${MAJORS:-15 16 17 18})
declare -a summary=()
status=0

for major in "${majors[@]}"; do
  echo "=== Postgres ${major}: npx vitest run test/e2e"
  started=$(date +%s)
  if PG_MAJOR="${major}" npx vitest run test/e2e "$@"; then
    summary+=("Postgres ${major}: passed ($(( $(date +%s) - started )) s)")
  else
    status=$?
    summary+=("Postgres ${major}: FAILED (exit ${status}, $(( $(date +%s) - started )) s)")
    break
  fi
done

echo
echo "=== Matrix summary"
for major in "${majors[@]}"; do
  line=""
  for entry in "${summary[@]}"; do
    [[ "${entry}" == "Postgres ${major}:"* ]] && line="${entry}"
  done
  echo "${line:-Postgres ${major}: not run}"
done
exit "${status}"
