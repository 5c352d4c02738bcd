#!/usr/bin/env bash
# Runs every fuzz test of the repository for a while each.
#
#   scripts/fuzz.sh [duration]     (default 10s per fuzz test; FUZZTIME too)
#
# New failing inputs land in the package's testdata/fuzz/ directory, where
# `go test` replays them from then on: commit them with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-${FUZZTIME:-10s}}
status=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	echo "fuzz: $pkg $name for $fuzztime"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
		cat /tmp/fuzz.$$.log
		status=1
	fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's|^\./||; s|:func |:|' | sort)
rm -f /tmp/fuzz.$$.log
exit $status
