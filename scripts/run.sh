#!/usr/bin/env bash
# Runs a local chain of three table_servers and an interactive table_client,
# all on loopback, and stops everything it started when the client exits.
# Each server serves Prometheus metrics and /healthz on a port of its own,
# which the script prints.
#
#   scripts/run.sh [--fresh] [zk_ip:zk_port]
#
# Without an address it installs ZooKeeper when missing and starts its own
# on a free port. The chain's data stays in a directory, RUN_DATA (default
# ./run-data): server N's write-ahead log and snapshots in nodeN/ (its
# --data-dir), and the ZooKeeper this script starts in zk/, which holds the
# chain's record of which nodes have the latest writes. A later run brings
# the data back; --fresh (make run FRESH=1) deletes them first. One run at
# a time uses a RUN_DATA. Environment: SERVERS (default 3), LISTS (default
# 16), RUN_DATA, FSYNC (each server's --fsync, default batch).
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=""
if [[ ${1:-} == --fresh ]]; then
	fresh=1
	shift
fi
servers=${SERVERS:-3}
lists=${LISTS:-16}
fsync=${FSYNC:-batch}
data=${RUN_DATA:-run-data}
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/chaintable-run.XXXXXX")
pids=()
zk_started=""

say() { echo "run: $*" >&2; }

cleanup() {
	# A second interrupt must not cut the cleanup short; it is bounded.
	trap - EXIT
	trap '' INT TERM
	if ((${#pids[@]})); then
		say "stopping ${#pids[@]} servers"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for pid in "${pids[@]}"; do
			for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		done
	fi
	if [[ -n $zk_started ]]; then
		scripts/zk.sh down --port "$zk_started" --dir "$data/zk" >&2 || true
	fi
	say "logs kept in $run_dir"
	say "data kept in $data: a new run serves it again; make run FRESH=1 (or rm -rf $data) starts fresh"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# launch CMD...: starts CMD in the background and notes its PID for cleanup.
# An interrupt between the start and the note would leave CMD running, so
# it is held until the PID is noted.
interrupted=""
launch() {
	trap 'interrupted=130' INT TERM
	"$@" &
	pids+=($!)
	trap 'exit 130' INT TERM
	[[ -z $interrupted ]] || exit "$interrupted"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port FROM: the first free port at or above FROM.
free_port() {
	local p=$1
	while ! port_free "$p"; do p=$((p + 1)); done
	echo "$p"
}

# Two runs on one data dir would write one log from two nodes: the second
# is refused. The lock is this script's (descriptor 8, closed for what it
# starts), so it ends with it.
mkdir -p "$data"
data=$(cd "$data" && pwd)
exec 8>>"$data/run.lock"
if ! flock -n 8; then
	say "another run uses $data; stop it, or give this one RUN_DATA=another-dir"
	trap - EXIT
	rmdir "$run_dir"
	exit 1
fi
if [[ -n $fresh ]]; then
	say "starting fresh: deleting the data in $data"
	rm -rf "$data/zk" "$data"/node*
fi
if compgen -G "$data/node*" >/dev/null; then
	say "the data of an earlier run is in $data: serving it again (make run FRESH=1 starts fresh)"
else
	say "keeping the chain's data in $data: a later run serves it again (make run FRESH=1 starts fresh)"
fi

if ! command -v go >/dev/null 2>&1; then
	say "Go is not installed: see the README"; exit 1
fi
say "building"
make --no-print-directory all >&2

if [[ $# -ge 1 ]]; then
	zk=$1
else
	if ! command -v java >/dev/null 2>&1 || [[ ! -f /usr/share/java/zookeeper.jar ]]; then
		say "installing ZooKeeper (Debian's zookeeper package)"
		scripts/install-deps.sh >&2
	fi
	# A free port may be taken before ZooKeeper binds it, by another run
	# starting at the same time: zk.sh then exits 3 and the next is tried.
	# zk_started is set first, so that an interrupt at any moment stops
	# what zk.sh started (it stops it itself too).
	zk_port=2181
	for try in 1 2 3 4 5; do
		zk_port=$(free_port "$zk_port")
		zk_started=$zk_port
		rc=0
		scripts/zk.sh up --port "$zk_port" --dir "$data/zk" 8>&- >&2 || rc=$?
		((rc == 3 && try < 5)) || break
		say "port $zk_port was taken meanwhile; trying the next"
		zk_port=$((zk_port + 1))
	done
	((rc == 0)) || exit "$rc"
	zk=127.0.0.1:$zk_port
fi

port=7001
metrics_port=9101
metrics=()
for i in $(seq "$servers"); do
	port=$(free_port "$port")
	metrics_port=$(free_port "$metrics_port")
	say "starting server $i/$servers on 127.0.0.1:$port, metrics on http://127.0.0.1:$metrics_port/metrics (data: $data/node$i, log: $run_dir/server$i.log)"
	launch ./table_server "$zk" "$port" "$lists" --advertise 127.0.0.1 --metrics-addr "127.0.0.1:$metrics_port" \
		--data-dir "$data/node$i" --fsync "$fsync" >"$run_dir/server$i.log" 2>&1 8>&-
	for _ in $(seq 100); do
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			say "server $i exited:"; tail -5 "$run_dir/server$i.log" >&2; exit 1
		fi
		port_free "$port" || break
		sleep 0.1
	done
	metrics+=("http://127.0.0.1:$metrics_port/metrics")
	port=$((port + 1))
	metrics_port=$((metrics_port + 1))
done
say "chain of $servers servers up through ZooKeeper at $zk; type 'help' for commands, 'chain' for the members"
say "metrics: ${metrics[*]} (and /healthz on each)"
./table_client "$zk"
