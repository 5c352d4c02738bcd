#!/usr/bin/env bash
# Benchmarks chaintable against Redis on this machine, over loopback, with
# table_perf, and prints comparison tables.
#
#   scripts/bench.sh [all]    the standard comparison, the chain part, and
#                             which performance targets held
#   scripts/bench.sh compare  the standard comparison only, and its targets
#   scripts/bench.sh chain    the chain part only
#   scripts/bench.sh durable  writes that are on disk before they are
#                             answered: a chain of three with --data-dir
#                             and --fsync batch vs Redis with appendonly
#                             yes and appendfsync always (SET at -P 16 and
#                             -P 1), and ZooKeeper (forceSync=yes) setData
#                             at DURABLE_ZK_CONNS sessions; how many writes
#                             each chain member's fdatasync carried;
#                             then the restart measurement below
#   scripts/bench.sh restart  issue 12's restart target: a chain of one
#                             with --data-dir and 1,000,000 keys written
#                             through it, SIGKILLed and started again
#                             RESTART_ROUNDS times: the time from the
#                             process's start to its first answer to a get
#                             (BenchmarkRestart in srv/cmd/table_server)
#   scripts/bench.sh memory   RSS of table_server and Redis holding
#                             MEMORY_KEYS 32-byte values
#   scripts/bench.sh keys     gets at -P 16 over key spaces of KEYS_SWEEP
#                             keys: how throughput changes with table size
#   scripts/bench.sh values   puts and gets of values of VALUES_SWEEP bytes,
#                             one table_server vs one Redis, then a chain of
#                             three vs Redis + 2 replicas with WAIT 2 0;
#                             BENCH_CONNS defaults to 2 and BENCH_KEYS to 4
#                             here
#
# Standard comparison: one standalone table_server and one Redis (no
# persistence); put and get at -P 1 and -P 16, each row a run of the same
# load against both (table_perf --vs-redis), key space preloaded.
# Chain part: a local ZooKeeper, a chain of three table_servers, writes at
# -P 16 through the chain; against a Redis primary with two replicas and
# WAIT 2 0 after every SET. Then gets at -P 16 from every member, from the
# tail alone, and from one standalone table_server.
# Durable part: every server's data on the disk of $TMPDIR (the header says
# which file system); fsyncs counted with perf stat (syscall tracepoints),
# when it may trace.
#
# Environment (defaults in brackets):
#   BENCH_TIME   length of each measured round [2s]
#   BENCH_ROUNDS rounds per row: table_server and Redis measured in turns, so
#                that the shared machine's changes of speed fall on both [3]
#   BENCH_CONNS  connections [50]
#   BENCH_KEYS   key space [100000]
#   BENCH_VALUE  value size in bytes [32]
#   BENCH_LISTS  lists of each table_server [1024]
#   BENCH_SERVER_FLAGS  more flags for every table_server (e.g. -loops 1)
#   BENCH_DIR    the --json reports go to BENCH_DIR/<date-time>/ [bench-results]
#   DURABLE_FSYNC the durable chain's --fsync [batch]
#   DURABLE_ZK_CONNS ZooKeeper sessions of the durable part [16]
#   RESTART_ROUNDS restarts the restart measurement times [5]
#   MEMORY_KEYS  values stored by the memory comparison [1000000]
#   KEYS_SWEEP   key spaces of the keys sweep ["10000 100000 1000000 10000000"]
#   BENCH_PIPELINE requests in flight per connection in the values sweep [1]
#   VALUES_SWEEP value sizes of the values sweep, in bytes
#                ["1024 65536 1048576 4194304 10485760 16777216"]
#
#   scripts/bench.sh overload  the attack of issue 11 on a standalone node
#                             (20 clients pipelining 2,000 gettables of a
#                             10,000-key table and never reading): gets at
#                             -P 1 on 4 connections without the attack, under
#                             it, and under it with backpressure off
#                             (BenchmarkOverload in srv/cmd/table_server);
#                             the others' environment does not apply
#
# Builds with make, installs redis-server when it is missing (and ZooKeeper
# via scripts/install-deps.sh for the chain part). Every server runs on
# 127.0.0.1 on a free port and is stopped by its PID when the script exits,
# fails or is interrupted. Exit status 0 when every run completed without errors.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-all}
case $mode in
all | compare | chain | durable | restart | memory | keys | values) ;;
overload)
	# Real processes, started and stopped by the benchmark itself.
	go test -run '^$' -bench '^BenchmarkOverload$' -benchtime 1x ./srv/cmd/table_server/ |
		awk 'BEGIN { printf "%-26s %10s %9s %10s %13s\n", "normal client", "gets/s", "p99 ms", "grown MiB", "conns failed" }
			/^BenchmarkOverload\// {
				name = $1; sub(/^BenchmarkOverload\//, "", name); sub(/-[0-9]+$/, "", name)
				for (i = 3; i < NF; i += 2) v[$(i + 1)] = $i
				printf "%-26s %10.0f %9.2f %10.0f %13d\n", name, v["gets/s"], v["p99-ms"], v["grown-MiB"], v["conns-failed"]
			}
			/^(FAIL|ok|PASS)/ { print > "/dev/stderr" }'
	exit "${PIPESTATUS[0]}"
	;;
-h | --help | help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "usage: $0 [all|compare|chain|durable|restart|memory|keys|values|overload]" >&2
	exit 2
	;;
esac

time_per_run=${BENCH_TIME:-2s}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNS:-50}
keys=${BENCH_KEYS:-100000}
values_pipeline=${BENCH_PIPELINE:-1}
if [[ $mode == values ]]; then
	# Large values: few of them, one at a time, as a client storing files would.
	conns=${BENCH_CONNS:-2} keys=${BENCH_KEYS:-4}
fi
value=${BENCH_VALUE:-32}
lists=${BENCH_LISTS:-1024}
memory_keys=${MEMORY_KEYS:-1000000}
keys_sweep=${KEYS_SWEEP:-10000 100000 1000000 10000000}
values_sweep=${VALUES_SWEEP:-1024 65536 1048576 4194304 10485760 16777216}
results=${BENCH_DIR:-bench-results}/$(date +%Y%m%d-%H%M%S)
durable_fsync=${DURABLE_FSYNC:-batch}
durable_zk_conns=${DURABLE_ZK_CONNS:-16}
restart_rounds=${RESTART_ROUNDS:-5}
server_durable="" # --fsync mode of the table_servers started, with a data dir each; empty: in memory

# --- processes -------------------------------------------------------------

pids=()     # every server started, stopped by cleanup
names=()    # what each of them is, for messages
ports=()    # ports handed out, so that no two servers get the same one
zk_port=""  # set while our ZooKeeper may be running
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chaintable-bench.XXXXXX")
failed=0
cleaned=0

# stop_pid stops one process we started: SIGTERM, then SIGKILL after 10s.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "bench: pid $pid still running after 10s, killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# stop_server stops a server started here and forgets it, so that cleanup
# never signals its PID once the kernel may have reused it.
stop_server() {
	local pid=$1 i
	stop_pid "$pid"
	for i in "${!pids[@]}"; do
		if [[ ${pids[i]} == "$pid" ]]; then
			unset 'pids[i]' 'names[i]'
		fi
	done
	pids=("${pids[@]}")
	names=("${names[@]}")
}

cleanup() {
	local status=${1:-$?}
	((cleaned)) && return
	cleaned=1
	trap - EXIT INT TERM
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		stop_pid "${pids[i]}"
	done
	if [[ -n $zk_port ]]; then
		scripts/zk.sh down --port "$zk_port" --dir "$tmp/zk" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
	exit "$status"
}
trap 'cleanup' EXIT
trap 'cleanup 130' INT
trap 'cleanup 143' TERM

die() {
	echo "bench: $*" >&2
	exit 1
}

# free_port sets REPLY to a loopback port nothing listens on.
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 40000))
		[[ " ${ports[*]} " != *" $p "* ]] || continue
		if command -v ss >/dev/null 2>&1; then
			[[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] || continue
		fi
		# Something answering there is taken too.
		! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || continue
		ports+=("$p")
		REPLY=$p
		return 0
	done
	die "no free port found"
}

# started records a background process just started as $!.
started() {
	pids+=("$1")
	names+=("$2")
}

# wait_port waits until pid listens on port, or fails with its log.
wait_port() {
	local port=$1 pid=$2 what=$3 log=$4 i
	for ((i = 0; i < 200; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "bench: $what exited while starting; its log:" >&2
			tail -n 20 "$log" >&2 || true
			exit 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	die "$what not listening on 127.0.0.1:$port after 20s (log: $log)"
}

# start_table_server [zk_addr] sets REPLY to the port of a new table_server,
# standalone without an argument, a chain member of ZooKeeper zk_addr with.
start_table_server() {
	local zk=${1:-} port pid log
	free_port
	port=$REPLY
	log=$tmp/table_server-$port.log
	local durable=()
	if [[ -n $server_durable ]]; then
		durable=(--data-dir "$tmp/data-$port" --fsync "$server_durable")
	fi
	if [[ -z $zk ]]; then
		# shellcheck disable=SC2086 # BENCH_SERVER_FLAGS is a list of flags
		./table_server --standalone "$port" "$lists" --bind 127.0.0.1 "${durable[@]}" ${BENCH_SERVER_FLAGS:-} >"$log" 2>&1 &
	else
		# shellcheck disable=SC2086
		./table_server "$zk" "$port" "$lists" --bind 127.0.0.1 --advertise 127.0.0.1 "${durable[@]}" ${BENCH_SERVER_FLAGS:-} >"$log" 2>&1 &
	fi
	pid=$!
	started "$pid" "table_server :$port"
	wait_port "$port" "$pid" "table_server on port $port" "$log"
	REPLY=$port
	REPLY_PID=$pid
}

# start_redis [args...] sets REPLY to the port of a new redis-server
# without persistence, with more arguments if given.
start_redis() {
	local port pid log i
	free_port
	port=$REPLY
	log=$tmp/redis-$port.log
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize no --dir "$tmp" --logfile "$log" \
		--repl-diskless-sync-delay 0 "$@" >/dev/null 2>&1 &
	pid=$!
	started "$pid" "redis-server :$port"
	wait_port "$port" "$pid" "redis-server on port $port" "$log"
	for ((i = 0; i < 100; i++)); do
		[[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && break
		sleep 0.1
	done
	REPLY=$port
	REPLY_PID=$pid
}

# pid_list prints its arguments joined by commas.
pid_list() {
	local IFS=,
	echo "$*"
}

# wait_members waits until our ZooKeeper lists n chain members.
wait_members() {
	local n=$1 i have
	for ((i = 0; i < 200; i++)); do
		have=$(scripts/zk.sh members --port "$zk_port" --dir "$tmp/zk" | grep -c . || true)
		((have >= n)) && return 0
		sleep 0.1
	done
	die "ZooKeeper lists ${have:-0} chain members after 20s, want $n (logs in $tmp)"
}

# rss_kb prints the resident set size of a process in kB.
rss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# --- setup -----------------------------------------------------------------

install_redis() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return
	echo "bench: installing redis-server"
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0)
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "need root or sudo to install redis-server"
		apt=(sudo "${apt[@]}")
	fi
	"${apt[@]}" update
	"${apt[@]}" install -y --no-install-recommends redis-server redis-tools
}

build() {
	echo "bench: building"
	make >/dev/null
	go build -o table_perf ./perf/cmd/table_perf
	go build -o "$tmp/zk_perf" ./perf/cmd/zk_perf
}

# perf_run NAME ARGS... runs table_perf with the common parameters and
# ARGS, writes its --json report to $results/NAME.json, and notes a run
# that failed or counted errors.
perf_run() {
	local name=$1 status=0
	shift
	echo "bench: $name: table_perf $*" >&2
	./table_perf --json -T "$time_per_run" -rounds "$rounds" -c "$conns" -d "$value" -r "$keys" --preload "$@" \
		>"$results/$name.json" || status=$?
	if ((status != 0)); then
		failed=1
		if [[ ! -s $results/$name.json ]]; then
			rm -f "$results/$name.json"
			echo "bench: $name could not run (exit $status)" >&2
		else
			echo "bench: $name counted errors (exit $status); see $results/$name.json" >&2
		fi
	fi
}

# table prints the comparison table of the reports given.
table() {
	local files=()
	local f
	for f in "$@"; do
		[[ -f $f ]] && files+=("$f")
	done
	((${#files[@]})) || {
		echo "(no results)"
		return
	}
	./table_perf --table "${files[@]}"
	# Every table adds its reports to the run's latency chart.
	plotted+=("${files[@]}")
	./table_perf --plot "${plotted[@]}" >"$results/latency.svg"
}
plotted=()

header() {
	echo
	echo "== $1"
	echo "   $(nproc) cores, loopback, $conns connections, $value-byte values, $keys keys preloaded, $rounds rounds of $time_per_run each, in turns"
	echo "   $(redis-server --version | awk '{print $1, $2, $3}'), reports in $results/"
	echo "   load average before the runs: $load_before (other processes share the cores)"
	echo
}

# --- the parts ---------------------------------------------------------------

compare() {
	local ts ts_pid rs rs_pid
	start_table_server
	ts=$REPLY ts_pid=$REPLY_PID
	start_redis
	rs=$REPLY rs_pid=$REPLY_PID
	local p w
	for p in 1 16; do
		for w in put get; do
			perf_run "std-$w-P$p" --direct "127.0.0.1:$ts" --vs-redis "127.0.0.1:$rs" -pids "$ts_pid" -redis-pids "$rs_pid" \
				-w "$w" -P "$p" -label "1 node $w -P $p"
		done
	done
	stop_server "$ts_pid"
	stop_server "$rs_pid"
	header "one table_server vs one Redis"
	table "$results"/std-put-P1.json "$results"/std-get-P1.json "$results"/std-put-P16.json "$results"/std-get-P16.json
}

# start_chain_zk starts our ZooKeeper (forceSync=yes, its default: it
# fsyncs its log before it answers a write) and sets chain_zk to its
# address.
start_chain_zk() {
	if ! command -v java >/dev/null 2>&1 || [[ ! -f /usr/share/java/zookeeper.jar ]]; then
		scripts/install-deps.sh
	fi
	free_port
	zk_port=$REPLY
	scripts/zk.sh up --port "$zk_port" --dir "$tmp/zk" >/dev/null
	chain_zk=127.0.0.1:$zk_port
}

# start_chain starts our ZooKeeper and a chain of three table_servers, and
# sets chain_zk to its address and chain_pids to their PIDs, head first.
start_chain() {
	start_chain_zk
	chain_pids=()
	local i
	for i in 1 2 3; do
		start_table_server "$chain_zk"
		chain_pids+=("$REPLY_PID")
		# The next one joins behind this one: chain_pids is in chain
		# order, head first, for table_perf's CPU per member.
		wait_members "$i"
	done
}

# start_redis_replicas starts a Redis primary and two replicas, and sets
# redis_primary to the primary's port and redis_pids to the three PIDs.
start_redis_replicas() {
	local i
	start_redis
	redis_primary=$REPLY
	redis_pids=("$REPLY_PID")
	for i in 1 2; do
		start_redis --replicaof 127.0.0.1 "$redis_primary"
		redis_pids+=("$REPLY_PID")
	done
	for ((i = 0; i < 200; i++)); do
		[[ $(redis-cli -h 127.0.0.1 -p "$redis_primary" info replication | tr -d '\r' | grep -c '^slave[0-9]*:.*state=online') -ge 2 ]] && break
		sleep 0.1
	done
	((i < 200)) || die "Redis replicas not online after 20s"
}

chain() {
	start_chain
	start_redis_replicas
	perf_run "chain-put-P16" "$chain_zk" --chain-members 3 --vs-redis "127.0.0.1:$redis_primary" --redis-wait 2 \
		-pids "$(pid_list "${chain_pids[@]}")" -redis-pids "$(pid_list "${redis_pids[@]}")" \
		-w put -P 16 -label "chain of 3 put -P 16 / redis + 2 replicas, WAIT 2"
	header "chain of three table_servers vs Redis with two replicas and WAIT 2 0 after every SET"
	table "$results"/chain-put-P16.json

	# Reads at every member against reads at the tail alone and against one
	# standalone node, one after the other.
	perf_run "chain-get-P16-any" "$chain_zk" --chain-members 3 --read-from any --vs-redis "127.0.0.1:$redis_primary" \
		-pids "$(pid_list "${chain_pids[@]}")" -redis-pids "${redis_pids[0]}" \
		-w get -P 16 -label "chain of 3 get -P 16, reads at every member / redis primary"
	perf_run "chain-get-P16-tail" "$chain_zk" --chain-members 3 --read-from tail \
		-pids "$(pid_list "${chain_pids[@]}")" -w get -P 16 -label "chain of 3 get -P 16, reads at the tail"
	start_table_server
	perf_run "single-get-P16" --direct "127.0.0.1:$REPLY" -pids "$REPLY_PID" -w get -P 16 -label "one table_server get -P 16"
	header "gets from a chain of three, at every member and at the tail, and from one table_server"
	table "$results"/chain-get-P16-any.json "$results"/chain-get-P16-tail.json "$results"/single-get-P16.json
}

# stop_chain stops the chain start_chain started, its ZooKeeper, and the
# Redis servers start_redis_replicas started, if any.
stop_chain() {
	local pid
	for pid in "${chain_pids[@]}" "${redis_pids[@]}"; do
		stop_server "$pid"
	done
	chain_pids=() redis_pids=()
	if [[ -n $zk_port ]]; then
		scripts/zk.sh down --port "$zk_port" --dir "$tmp/zk" >/dev/null 2>&1 || true
		zk_port=""
		rm -rf "$tmp/zk"
	fi
}
chain_pids=() redis_pids=()

# fsync_count_start starts perf stat counting the fsync and fdatasync
# calls of each PID given, one counter per process; fsync_count_stop
# stops them and sets fsyncs to the counts, in the same order (empty when
# perf may not trace).
fsync_count_start() {
	local pid
	fsync_perf=() fsync_files=()
	command -v perf >/dev/null 2>&1 || return 0
	for pid in "$@"; do
		local out=$tmp/fsyncs-$pid.txt
		perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$pid" -o "$out" >/dev/null 2>&1 &
		started "$!" "perf stat -p $pid"
		fsync_perf+=("$!") fsync_files+=("$out")
	done
	sleep 0.5 # perf attaches
}
fsync_count_stop() {
	local i pid
	fsyncs=()
	for i in "${!fsync_perf[@]}"; do
		pid=${fsync_perf[i]}
		# SIGINT makes perf stat write its counts and exit.
		kill -INT "$pid" 2>/dev/null || true
		for _ in {1..50}; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		stop_server "$pid"
		# perf stat -x, writes "count,,event,...": the two events summed.
		fsyncs+=("$(awk -F, '$3 ~ /sys_enter_f(data)?sync/ && $1 ~ /^[0-9]+$/ { n += $1 } END { print n + 0 }' "${fsync_files[i]}" 2>/dev/null)")
	done
	if ((${#fsyncs[@]})) && ! grep -q sys_enter_fdatasync "${fsync_files[0]}" 2>/dev/null; then
		fsyncs=() # perf could not trace: no counts
	fi
}

# writes_per_fsync NAME LABEL:SYSTEM... prints, for each process counted
# by fsync_count_start (in the same order), how many writes of report NAME
# its fsyncs carried: those of SYSTEM (chaintable or redis), the preload's
# puts included, as they were synced too.
writes_per_fsync() {
	local name=$1 i label system writes
	shift
	if ((${#fsyncs[@]} == 0)); then
		echo "   fsyncs: not counted (perf stat could not trace syscalls here)"
		return
	fi
	i=0
	for label in "$@"; do
		system=${label##*:} label=${label%:*}
		writes=$(jq --arg s "$system" '[.results[] | select(.system == $s)][0] | .ok + (.preload.keys // 0)' "$results/$name.json" 2>/dev/null || echo 0)
		if ((fsyncs[i] > 0)); then
			echo "   $label: ${fsyncs[i]} fsyncs for $writes writes: $(awk -v w="$writes" -v f="${fsyncs[i]}" 'BEGIN { printf "%.1f", w / f }') writes per fsync"
		else
			echo "   $label: no fsyncs counted for $writes writes"
		fi
		i=$((i + 1))
	done
}

# durable measures writes that are on disk when they are answered.
durable() {
	stop_chain
	local fstype have_wal=1 p redis_aof redis_aof_pid
	fstype=$(df --output=fstype "$tmp" | tail -n 1)
	# Read the whole help before matching: grep -q would stop at the first
	# match, and table_server, still writing, would die of SIGPIPE, which
	# pipefail takes for a failed check.
	if [[ $(./table_server -h 2>&1) != *-data-dir* ]]; then
		have_wal=""
		echo "bench: this table_server has no --data-dir: only Redis and ZooKeeper are measured" >&2
	fi
	start_redis --appendonly yes --appendfsync always
	redis_aof=$REPLY redis_aof_pid=$REPLY_PID
	# start_redis's own --appendonly no comes first; the later one wins.
	[[ $(redis-cli -h 127.0.0.1 -p "$redis_aof" config get appendonly | tr -d '\r' | tail -n 1) == yes &&
		$(redis-cli -h 127.0.0.1 -p "$redis_aof" config get appendfsync | tr -d '\r' | tail -n 1) == always ]] ||
		die "the Redis on port $redis_aof is not appendonly yes, appendfsync always"
	if [[ -n $have_wal ]]; then
		server_durable=$durable_fsync
		start_chain
		server_durable=""
	else
		# ZooKeeper alone, for its own row.
		start_chain_zk
	fi
	local files=()
	for p in 16 1; do
		if [[ -n $have_wal ]]; then
			fsync_count_start "${chain_pids[@]}" "$redis_aof_pid"
			perf_run "durable-put-P$p" "$chain_zk" --chain-members 3 --vs-redis "127.0.0.1:$redis_aof" \
				-pids "$(pid_list "${chain_pids[@]}")" -redis-pids "$redis_aof_pid" \
				-w put -P "$p" -label "chain of 3 --fsync $durable_fsync put -P $p / redis appendfsync always"
			fsync_count_stop
			writes_per_fsync "durable-put-P$p" "head:chaintable" "middle:chaintable" "tail:chaintable" "redis:redis" \
				>"$results/durable-put-P$p-fsyncs.txt"
		else
			fsync_count_start "$redis_aof_pid"
			perf_run "durable-put-P$p" -redis "127.0.0.1:$redis_aof" -pids "$redis_aof_pid" \
				-w put -P "$p" -label "redis appendfsync always SET -P $p"
			fsync_count_stop
			writes_per_fsync "durable-put-P$p" "redis:redis" >"$results/durable-put-P$p-fsyncs.txt"
		fi
		files+=("$results/durable-put-P$p.json")
		if ((p == 16)); then
			# ZooKeeper between the two, on the same disk: its rounds
			# fall in the same stretch of the machine's load.
			local r zk_pid zk_writes=0
			zk_pid=$(<"$tmp/zk/zookeeper.pid")
			: >"$results/durable-zk.txt"
			fsync_count_start "$zk_pid"
			for ((r = 1; r <= rounds; r++)); do
				echo "bench: durable-zk round $r: zk_perf -c $durable_zk_conns -T $time_per_run" >&2
				"$tmp/zk_perf" -c "$durable_zk_conns" -T "$time_per_run" -root "/zk_perf_$r" "$chain_zk" >>"$results/durable-zk.txt" || failed=1
			done
			fsync_count_stop
			# Its writes: every setData, and the creates and deletes of the
			# znodes (a root and one per session, each round).
			zk_writes=$(($(sed -n 's/.*: \([0-9]*\) writes in .*/\1/p' "$results/durable-zk.txt" | paste -sd+ - | sed 's/^$/0/') + rounds * 2 * (durable_zk_conns + 1)))
			if ((${#fsyncs[@]} && fsyncs[0] > 0)); then
				echo "   zookeeper: ${fsyncs[0]} fsyncs for $zk_writes writes: $(awk -v w="$zk_writes" -v f="${fsyncs[0]}" 'BEGIN { printf "%.1f", w / f }') writes per fsync" >"$results/durable-zk-fsyncs.txt"
			fi
		fi
	done
	header "durable writes: a chain of three (--data-dir, --fsync $durable_fsync) vs Redis (appendonly yes, appendfsync always) vs ZooKeeper (forceSync=yes)"
	echo "   every server's data on $fstype ($(df --output=source "$tmp" | tail -n 1)) under $tmp"
	echo
	table "${files[@]}"
	echo
	local f
	for p in 16 1; do
		f=$results/durable-put-P$p-fsyncs.txt
		if [[ -s $f ]]; then
			echo "   put -P $p, each server:"
			cat "$f"
		fi
	done
	echo
	echo "ZooKeeper ($(df --output=fstype "$tmp/zk" | tail -n 1) under $tmp/zk), $rounds rounds:"
	sed 's/^/   /' "$results/durable-zk.txt"
	[[ ! -s $results/durable-zk-fsyncs.txt ]] || cat "$results/durable-zk-fsyncs.txt"
	[[ -n $have_wal ]] || return 0
	# Issue 12's targets: the chain's puts at -P 16 at least Redis's SETs
	# with appendfsync always, and at least 10 times ZooKeeper's writes
	# (its median round).
	local ct rd zk
	ct=$(jq '[.results[] | select(.system == "chaintable")][0].ops_per_sec // 0' "$results/durable-put-P16.json" 2>/dev/null || echo 0)
	rd=$(jq '[.results[] | select(.system == "redis")][0].ops_per_sec // 0' "$results/durable-put-P16.json" 2>/dev/null || echo 0)
	zk=$(sed -n 's/.* = \([0-9]*\) writes\/s.*/\1/p' "$results/durable-zk.txt" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] + 0 }')
	echo
	awk -v ct="$ct" -v rd="$rd" -v zk="$zk" 'BEGIN {
		printf "   target: durable chain put -P 16 >= Redis appendfsync always: %.0f vs %.0f ops/s = %.2fx: %s\n", ct, rd, (rd ? ct / rd : 0), ((rd && ct >= rd) ? "holds" : "MISSED")
		printf "   target: durable chain put -P 16 >= 10x ZooKeeper: %.0f vs %.0f writes/s = %.1fx: %s\n", ct, zk, (zk ? ct / zk : 0), ((zk && ct >= 10 * zk) ? "holds" : "MISSED")
	}'
}

# restart_run measures how soon a node with 1,000,000 keys serves again
# after a crash (BenchmarkRestart, with the table_server just built), and
# judges issue 12's target: within 2 s.
restart_run() {
	local out=$results/restart.txt status=0
	echo "bench: restart: BenchmarkRestart, $restart_rounds restarts" >&2
	CHAINTABLE_SERVER=$PWD/table_server go test -run '^$' -bench '^BenchmarkRestart$' -benchtime "${restart_rounds}x" \
		-timeout 30m ./srv/cmd/table_server/ >"$out" 2>&1 || status=$?
	echo
	echo "== restart: a chain of one (--data-dir, --fsync batch, snapshots every 1,048,576 writes), 1,000,000 keys"
	echo "   (16-byte keys, 100-byte values) written through it, SIGKILLed, its session left to expire, started again"
	echo "   $restart_rounds times; time from the start of the process to its first answer to a get; log in $out"
	echo
	if ((status != 0)); then
		failed=1
		echo "   (failed, exit $status; see $out)"
		return
	fi
	sed -n 's/.*: serving \[\(.*\)\] after its start/   serving after: \1/p' "$out"
	awk '/^BenchmarkRestart/ {
		for (i = 3; i < NF; i += 2) v[$(i + 1)] = $i
		printf "\n   target: a node with 1,000,000 keys serving again within 2 s: median %.2f s, slowest %.2f s: %s\n",
			v["median-s-to-serve"], v["max-s-to-serve"], (v["median-s-to-serve"] <= 2 ? "holds" : "MISSED")
	}' "$out"
}

# values_sweep_run measures puts and gets of each value size of
# values_sweep: on one table_server against one Redis, then through a
# chain of three against Redis with two replicas (WAIT 2 0 after every
# SET; gets from the primary). Fresh servers for each size, so that no
# size runs on the memory another left.
values_sweep_run() {
	local n w pid ts ts_pid rs rs_pid files=() chain_files=()
	for n in $values_sweep; do
		start_table_server
		ts=$REPLY ts_pid=$REPLY_PID
		start_redis
		rs=$REPLY rs_pid=$REPLY_PID
		for w in put get; do
			# The later -d overrides perf_run's value size.
			perf_run "values-$w-$n" --direct "127.0.0.1:$ts" --vs-redis "127.0.0.1:$rs" -pids "$ts_pid" -redis-pids "$rs_pid" \
				-d "$n" -w "$w" -P "$values_pipeline" -label "1 node $w $(size_name "$n")"
			files+=("$results/values-$w-$n.json")
		done
		stop_server "$ts_pid"
		stop_server "$rs_pid"
	done
	for n in $values_sweep; do
		start_chain
		start_redis_replicas
		for w in put get; do
			perf_run "values-chain-$w-$n" "$chain_zk" --chain-members 3 --vs-redis "127.0.0.1:$redis_primary" --redis-wait 2 \
				-pids "$(pid_list "${chain_pids[@]}")" -redis-pids "$(pid_list "${redis_pids[@]}")" \
				-d "$n" -w "$w" -P "$values_pipeline" -label "chain of 3 $w $(size_name "$n")"
			chain_files+=("$results/values-chain-$w-$n.json")
		done
		for pid in "${chain_pids[@]}" "${redis_pids[@]}"; do
			stop_server "$pid"
		done
		scripts/zk.sh down --port "$zk_port" --dir "$tmp/zk" >/dev/null 2>&1 || true
		zk_port=""
		rm -rf "$tmp/zk"
	done
	echo
	echo "== puts and gets by value size, one table_server vs one Redis"
	echo "   $(nproc) cores, loopback, $conns connections, -P $values_pipeline, $keys keys preloaded, $rounds rounds of $time_per_run each, in turns"
	echo
	table "${files[@]}"
	echo
	echo "== the same through a chain of three vs Redis with two replicas and WAIT 2 0 after every SET"
	echo
	table "${chain_files[@]}"
}

# size_name prints a byte count the way the sweep's rows name it.
size_name() {
	local n=$1
	if ((n >= 1048576 && n % 1048576 == 0)); then
		echo "$((n / 1048576)) MiB"
	elif ((n >= 1024 && n % 1024 == 0)); then
		echo "$((n / 1024)) KiB"
	else
		echo "$n B"
	fi
}

# keys_sweep_run measures gets at -P 16 on fresh servers for each key space
# of keys_sweep, in rounds like every row.
keys_sweep_run() {
	local n ts ts_pid rs rs_pid files=()
	for n in $keys_sweep; do
		start_table_server
		ts=$REPLY ts_pid=$REPLY_PID
		start_redis
		rs=$REPLY rs_pid=$REPLY_PID
		# The later -r overrides perf_run's key space.
		perf_run "keys-$n" --direct "127.0.0.1:$ts" --vs-redis "127.0.0.1:$rs" -pids "$ts_pid" -redis-pids "$rs_pid" \
			-r "$n" -w get -P 16 -label "get -P 16, $n keys"
		files+=("$results/keys-$n.json") # table skips a run that left no report
		stop_server "$ts_pid"
		stop_server "$rs_pid"
	done
	echo
	echo "== gets at -P 16 by key space, one table_server vs one Redis"
	echo "   $(nproc) cores, loopback, $conns connections, $value-byte values, each key space preloaded, $rounds rounds of $time_per_run each, in turns"
	echo
	table "${files[@]}"
}

# targets judges the project's performance targets on the run's reports.
targets() {
	echo
	# The durable rows have targets of their own (see durable).
	local f files=()
	for f in "$results"/*.json; do
		[[ $f == */durable-* ]] || files+=("$f")
	done
	echo "== targets (table_perf --targets on the reports but the durable ones)"
	echo
	./table_perf --targets "${files[@]}"
}

memory() {
	local ts ts_pid rs rs_pid
	start_table_server
	ts=$REPLY ts_pid=$REPLY_PID
	start_redis
	rs=$REPLY rs_pid=$REPLY_PID
	local ts_before rs_before
	ts_before=$(rss_kb "$ts_pid")
	rs_before=$(rss_kb "$rs_pid")
	echo "bench: memory: preloading $memory_keys keys into each" >&2
	local status=0
	./table_perf --json --direct "127.0.0.1:$ts" --vs-redis "127.0.0.1:$rs" --preload \
		-r "$memory_keys" -d 32 -w get -n 10000 -c 8 -P 64 -label "memory $memory_keys keys" \
		>"$results/memory.json" || status=$?
	if ((status != 0)); then
		failed=1
		echo "bench: memory: table_perf exit $status" >&2
	fi
	local ts_after rs_after used
	ts_after=$(rss_kb "$ts_pid")
	rs_after=$(rss_kb "$rs_pid")
	used=$(redis-cli -h 127.0.0.1 -p "$rs" info memory | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }')
	echo
	echo "== memory: $memory_keys keys of 32-byte values (VmRSS from /proc/PID/status)"
	echo
	local fmt='%-14s %12s %12s %12s %10s\n' name before after
	# shellcheck disable=SC2059 # the format is ours
	printf "$fmt" server "RSS before" "RSS after" growth bytes/key
	for name in table_server redis-server; do
		if [[ $name == table_server ]]; then before=$ts_before after=$ts_after; else before=$rs_before after=$rs_after; fi
		# shellcheck disable=SC2059
		printf "$fmt" "$name" "$((before / 1024)) MiB" "$((after / 1024)) MiB" "$(((after - before) / 1024)) MiB" \
			"$(((after - before) * 1024 / memory_keys))"
	done
	echo
	echo "redis used_memory (its own accounting): $((used / 1024 / 1024))MiB"
	{
		echo "table_server_rss_kb_before=$ts_before"
		echo "table_server_rss_kb_after=$ts_after"
		echo "redis_rss_kb_before=$rs_before"
		echo "redis_rss_kb_after=$rs_after"
		echo "redis_used_memory=$used"
		echo "keys=$memory_keys"
	} >"$results/memory-rss.txt"
}

# --- main --------------------------------------------------------------------

install_redis
build
mkdir -p "$results"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "cores=$(nproc)"
	echo "kernel=$(uname -r)"
	echo "loadavg=$load_before"
	echo "go=$(go env GOVERSION)"
	echo "redis=$(redis-server --version)"
	echo "bench_time=$time_per_run rounds=$rounds conns=$conns keys=$keys value=$value lists=$lists"
} >"$results/meta.txt"

case $mode in
all)
	compare
	chain
	durable
	restart_run
	targets
	;;
compare)
	compare
	targets
	;;
chain) chain ;;
durable)
	durable
	restart_run
	;;
restart) restart_run ;;
memory) memory ;;
keys) keys_sweep_run ;;
values) values_sweep_run ;;
esac
echo
if ((failed)); then
	echo "bench: some runs failed or counted errors; reports in $results/" >&2
	exit 1
fi
