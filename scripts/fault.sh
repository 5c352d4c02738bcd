#!/usr/bin/env bash
# Runs the fault suite with the race detector and prints its report: the
# nemesis schedule and the ZooKeeper ensemble faults (chain/fault_test.go)
# and the one-fault scenarios (chain/e2e_test.go), and the data-dir faults
# (chain/durable_fault_test.go: every node SIGKILLed and restarted with its
# data), all on real table_server processes and real ZooKeeper on loopback.
#
#   scripts/fault.sh           the short profile (about 3.5 minutes on 2 cores)
#   scripts/fault.sh --soak    the soak: the schedule round after round, random order and targets
#
# Environment:
#   FAULT_REPORT    where the markdown report goes [$TMPDIR/chaintable-fault-<date-time>.md]
#   SOAK_DURATION   how long the soak injects faults [15m]
#   FAULT_SEED      seed of the soak's choices and of the load [from the clock]
#
# Exits with go test's status: non-zero on any lost write, non-linearizable
# history, client error where none is allowed, or chain that does not
# recover.
set -euo pipefail
cd "$(dirname "$0")/.."

soak=0
case "${1:-}" in
"") ;;
--soak) soak=1 ;;
*)
	echo "usage: scripts/fault.sh [--soak]" >&2
	exit 2
	;;
esac

if ! command -v java >/dev/null 2>&1 || [ ! -f /usr/share/java/zookeeper.jar ]; then
	scripts/install-deps.sh
fi

# to_seconds converts a duration of whole hours, minutes and seconds (20m,
# 1h30m, 90s) to seconds.
to_seconds() {
	local d=$1 total=0 n unit
	while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
		n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
		case $unit in
		h) total=$((total + n * 3600)) ;;
		m) total=$((total + n * 60)) ;;
		s) total=$((total + n)) ;;
		esac
	done
	if [ -n "$d" ] || [ "$total" -le 0 ]; then
		echo "SOAK_DURATION=$1: give whole hours, minutes and seconds, as in 20m or 1h30m" >&2
		exit 2
	fi
	echo "$total"
}

stamp=$(date +%Y%m%d-%H%M%S)
report=${FAULT_REPORT:-${TMPDIR:-/tmp}/chaintable-fault-$stamp.md}
log=${report%.md}.log
args=(-race -count=1 -v)
if [ -n "${FAULT_SEED:-}" ]; then
	extra=(-fault.seed "$FAULT_SEED")
else
	extra=()
fi
if [ "$soak" = 1 ]; then
	duration=${SOAK_DURATION:-15m}
	# The soak injects faults for $duration, then checks everything; the
	# ensemble test and the final checks get 30 minutes more.
	seconds=$(to_seconds "$duration")
	minutes=$((seconds / 60 + 30))
	args+=(-timeout "${minutes}m" -run '^TestFault')
	extra+=(-soak -soak.duration "$duration")
	echo "fault: soak for $duration; report in $report, log in $log"
else
	args+=(-timeout 20m -run '^(TestFault|TestE2E|TestCourse|TestMachineStaleRejoinerYields)')
	echo "fault: short profile; report in $report, log in $log"
fi

status=0
CHAINTABLE_FAULT_REPORT=$report go test "${args[@]}" ./chain/ "${extra[@]}" 2>&1 | tee "$log" || status=$?
echo
if [ -s "$report" ]; then
	cat "$report"
else
	echo "fault: no report was written (see $log)"
fi
echo "fault: report $report, log $log"
exit $status
