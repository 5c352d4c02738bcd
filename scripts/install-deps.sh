#!/usr/bin/env bash
# Installs what building and testing chaintable needs beyond Go itself:
# ZooKeeper and a Java runtime to run it (tests start real servers), Redis
# (perf compares against it, and its tests run a real one), protoc
# for `make proto`, make, a C compiler for `go test -race`, the C
# course client's libraries (ZooKeeper's C binding, protobuf-c and its
# protoc-c; chain/course_test.go builds it) and the Go modules.
# Installs only what is missing, so running it again is cheap. Debian or Ubuntu; needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[[ -f /usr/share/java/zookeeper.jar ]] || missing+=(zookeeper)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v protoc-c >/dev/null 2>&1 || missing+=(protobuf-c-compiler)
[[ -f /usr/include/protobuf-c/protobuf-c.h ]] || missing+=(libprotobuf-c-dev)
[[ -f /usr/include/zookeeper/zookeeper.h ]] || missing+=(libzookeeper-mt-dev)

if ((${#missing[@]})); then
	# env passes DEBIAN_FRONTEND through sudo, which would drop it.
	apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0)
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || {
			echo "install-deps: need root or sudo to install ${missing[*]}" >&2
			exit 1
		}
		apt=(sudo "${apt[@]}")
	fi
	echo "install-deps: installing ${missing[*]}"
	"${apt[@]}" update
	"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
fi

echo "install-deps: downloading Go modules"
go mod download
echo "install-deps: done"
