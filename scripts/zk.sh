#!/usr/bin/env bash
# Runs a standalone ZooKeeper on 127.0.0.1 for local use.
#
#   scripts/zk.sh up|down|status|members [--port N] [--dir D]
#
# up      starts it and waits until it serves clients; refuses if one is
#         already running from D; exits 3 if another process holds the
#         port (so a caller may try another); interrupted, it stops the
#         server it started
# down    stops it by its PID and waits until it has exited
# status  tells whether it runs and what it answers
# members prints the chain's member nodes it holds, one per line
#
# --port  client port (default 2181, or $ZK_PORT)
# --dir   holds zoo.cfg, data/, zookeeper.log and zookeeper.pid
#         (default ${TMPDIR:-/tmp}/chaintable-zk-PORT, or $ZK_DIR)
#
# The server ticks every 200ms and allows session timeouts from 500ms to
# 30s, as the tests' servers do (internal/zktest).
set -euo pipefail

usage() {
	echo "usage: $0 up|down|status|members [--port N] [--dir D]" >&2
	exit 2
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
port=${ZK_PORT:-2181}
dir=${ZK_DIR:-}
while [[ $# -gt 0 ]]; do
	case $1 in
	--port) [[ $# -ge 2 ]] || usage; port=$2; shift 2 ;;
	--port=*) port=${1#*=}; shift ;;
	--dir) [[ $# -ge 2 ]] || usage; dir=$2; shift 2 ;;
	--dir=*) dir=${1#*=}; shift ;;
	*) usage ;;
	esac
done
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
	echo "zk.sh: bad port '$port'" >&2
	exit 2
fi
dir=${dir:-${TMPDIR:-/tmp}/chaintable-zk-$port}
[[ $cmd != up ]] || mkdir -p "$dir"
# The absolute path, which the server's command line shows (see running).
[[ ! -d $dir ]] || dir=$(cd "$dir" && pwd)
pidfile=$dir/zookeeper.pid
addr=127.0.0.1:$port
jars=(/usr/share/java/zookeeper.jar /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar)

# four sends one of ZooKeeper's four-letter commands and prints the answer.
four() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' _ "$port" "$1" 2>/dev/null
}

# running prints the PID of our ZooKeeper if it runs. It checks the command
# line, so that neither a PID reused by another process nor a zombie (whose
# command line is empty) is taken for it.
running() {
	[[ -f $pidfile ]] || return 1
	local pid
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "QuorumPeerMain $dir/zoo.cfg" || return 1
	echo "$pid"
}

# listens PID: the process PID holds the socket listening on 127.0.0.1:PORT.
# Any ZooKeeper answering on the port is not enough: two of these scripts
# started at once on one port both see the one that won the port.
listens() {
	local hexport inode
	printf -v hexport '%04X' "$port"
	inode=$(awk -v local="0100007F:$hexport" '$2 == local && $4 == "0A" { print $10; exit }' /proc/net/tcp)
	[[ -n $inode ]] || return 1
	find "/proc/$1/fd" -lname "socket:\[$inode\]" 2>/dev/null | grep -q .
}

# stop_started stops the server this run of up started, if any, when up is
# interrupted or fails: nothing it started outlives it unless it succeeds.
started=""
stop_started() {
	trap - INT TERM EXIT
	if [[ -n $started ]]; then
		kill -TERM "$started" 2>/dev/null || true
		local i
		for ((i = 0; i < 40; i++)); do
			kill -0 "$started" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$started" 2>/dev/null || true
		wait "$started" 2>/dev/null || true
		rm -f "$pidfile"
	fi
}

log_tail() {
	for f in "$dir/zookeeper.out" "$dir/zookeeper.log"; do
		[[ -s $f ]] && { echo "--- $f"; tail -n 20 "$f"; }
	done >&2
}

up() {
	local pid
	# One up at a time from a directory. The lock goes with this script,
	# not with the server, whose descriptor 9 is closed.
	exec 9>>"$dir/up.lock"
	if ! flock -n 9; then
		echo "zk.sh: another zk.sh up is starting ZooKeeper from $dir" >&2
		exit 1
	fi
	if pid=$(running); then
		echo "zk.sh: ZooKeeper already running on $addr (pid $pid, dir $dir)" >&2
		exit 1
	fi
	rm -f "$pidfile"
	command -v java >/dev/null 2>&1 || {
		echo "zk.sh: java not found; run scripts/install-deps.sh" >&2
		exit 1
	}
	for jar in "${jars[@]}"; do
		[[ -f $jar ]] || {
			echo "zk.sh: $jar not found; run scripts/install-deps.sh" >&2
			exit 1
		}
	done
	if four ruok >/dev/null; then
		echo "zk.sh: something already listens on $addr; choose another --port" >&2
		exit 3
	fi

	mkdir -p "$dir/data"
	cat >"$dir/zoo.cfg" <<-EOF
		tickTime=200
		initLimit=10
		syncLimit=5
		minSessionTimeout=500
		maxSessionTimeout=30000
		dataDir=$dir/data
		clientPort=$port
		clientPortAddress=127.0.0.1
		admin.enableServer=false
		4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,dump
	EOF
	cat >"$dir/log4j.properties" <<-EOF
		log4j.rootLogger=INFO, FILE
		log4j.appender.FILE=org.apache.log4j.FileAppender
		log4j.appender.FILE.File=$dir/zookeeper.log
		log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
		log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n
	EOF

	# Where this start's messages begin in the logs, which runs append to.
	local out_from log_from
	out_from=$(($(stat -c %s "$dir/zookeeper.out" 2>/dev/null || echo 0) + 1))
	log_from=$(($(stat -c %s "$dir/zookeeper.log" 2>/dev/null || echo 0) + 1))

	local cp=$dir
	for jar in "${jars[@]}"; do cp+=:$jar; done
	# From before the server starts until it serves: an interrupt, or a
	# failure, stops it.
	trap 'echo; echo "zk.sh: interrupted; stopping the ZooKeeper it started (pid $started)" >&2; stop_started; exit 130' INT TERM
	trap stop_started EXIT
	nohup java -Xmx256m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true -cp "$cp" \
		org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
		>>"$dir/zookeeper.out" 2>&1 </dev/null 9>&- &
	pid=$!
	started=$pid
	echo "$pid" >"$pidfile"

	printf 'zk.sh: starting ZooKeeper on %s (pid %s), waiting until it serves' "$addr" "$pid"
	local deadline=$((SECONDS + 60))
	until [[ $(four srvr) == *"Mode: "* ]] && listens "$pid"; do
		if ! running >/dev/null; then
			echo
			# grep reads all of it: with -q it would stop at the match, and
			# tail, still writing, would die of SIGPIPE, failing the pipe.
			if { tail -c +"$out_from" "$dir/zookeeper.out"; tail -c +"$log_from" "$dir/zookeeper.log"; } 2>/dev/null | grep "Address already in use" >/dev/null; then
				echo "zk.sh: port $port is taken by another process (ZooKeeper said: Address already in use); choose another --port" >&2
				exit 3
			fi
			echo "zk.sh: ZooKeeper exited while starting; its log:" >&2
			log_tail
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			echo
			echo "zk.sh: ZooKeeper not serving after 60s; stopping it; its log:" >&2
			log_tail
			exit 1
		fi
		printf .
		sleep 0.5
	done
	trap - INT TERM EXIT
	echo
	echo "zk.sh: ZooKeeper serving on $addr (pid $pid); data and logs in $dir"
}

down() {
	local pid
	if ! pid=$(running); then
		rm -f "$pidfile"
		echo "zk.sh: no ZooKeeper running from $dir"
		return
	fi
	printf 'zk.sh: stopping ZooKeeper on %s (pid %s)' "$addr" "$pid"
	kill -TERM "$pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 40; i++)); do
		running >/dev/null || break
		printf .
		sleep 0.25
	done
	if running >/dev/null; then
		printf ' still running after 10s, killing it'
		kill -KILL "$pid" 2>/dev/null || true
		while running >/dev/null; do sleep 0.1; done
	fi
	rm -f "$pidfile"
	echo
	echo "zk.sh: ZooKeeper stopped"
}

status() {
	local pid
	if ! pid=$(running); then
		echo "zk.sh: ZooKeeper not running from $dir"
		exit 1
	fi
	local mode
	mode=$(four srvr | sed -n 's/^Mode: //p')
	echo "zk.sh: ZooKeeper running on $addr (pid $pid, dir $dir)"
	echo "zk.sh: ruok: $(four ruok || echo 'no answer'); mode: ${mode:-not serving}"
}

# members lists the ephemeral nodes under /chain, from the server's dump.
members() {
	four dump | sed -n 's|^[[:space:]]*\(/chain/.*node[0-9]*\)$|\1|p'
}

case $cmd in
up) up ;;
down) down ;;
status) status ;;
members) members ;;
*) usage ;;
esac
