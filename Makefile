# Builds, tests and runs chaintable. `make test` is what CI runs.

GO ?= go
# protoc-gen-go must match the google.golang.org/protobuf in go.mod.
PROTOC_GEN_GO_VERSION := v1.36.12
ZK_PORT ?= 2181

.PHONY: all run test fuzz fault bench proto course-client zk-up zk-down deps clean

all:
	$(GO) build -o table_server ./srv/cmd/table_server
	$(GO) build -o table_client ./cli/cmd/table_client
	$(GO) build -o table_perf ./perf/cmd/table_perf

# A local ZooKeeper, a chain of three servers and the client; ZK=ip:port
# uses a ZooKeeper that is already running. The chain's data stays in
# RUN_DATA (default ./run-data) for the next run; FRESH=1 deletes it first.
run:
	scripts/run.sh $(if $(filter 1,$(FRESH)),--fresh) $(ZK)

# Tests start real ZooKeeper servers, so java and ZooKeeper must be there.
test:
	@command -v java >/dev/null 2>&1 && test -f /usr/share/java/zookeeper.jar && command -v redis-server >/dev/null 2>&1 && \
		command -v protoc-c >/dev/null 2>&1 && test -f /usr/include/zookeeper/zookeeper.h || scripts/install-deps.sh
	$(GO) vet ./...
	$(GO) test -race -timeout 15m ./...
	scripts/fuzz.sh 10s

# Every fuzz test for FUZZTIME each (default 10s); make fuzz FUZZTIME=5m
# for a longer hunt.
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# The fault suite (nemesis schedule, ZooKeeper ensemble faults, one-fault
# scenarios) with the race detector, then its report; SOAK=1 runs the long
# soak instead, for SOAK_DURATION (default 15m). See scripts/fault.sh.
fault:
	scripts/fault.sh $(if $(filter 1,$(SOAK)),--soak)

# One table_server against Redis, then a chain of three against Redis with
# two replicas, then durable writes (a chain with --data-dir against Redis
# with appendfsync always and ZooKeeper), on loopback; BENCH_TIME per run
# (default 2s).
bench:
	scripts/bench.sh

# Regenerates codec/sdmessage.pb.go. The plugin is built into a temporary
# directory so that no other protoc-gen-go is picked up or left behind.
proto:
	@command -v protoc >/dev/null 2>&1 || scripts/install-deps.sh
	@bin=$$(mktemp -d) && trap 'rm -rf "$$bin"' EXIT && \
	GOBIN=$$bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION) && \
	echo protoc --go_out=codec codec/sdmessage.proto && \
	protoc --plugin=protoc-gen-go=$$bin/protoc-gen-go -I codec \
		--go_out=codec --go_opt=paths=source_relative codec/sdmessage.proto

# The C course client (internal/course/c) as COURSE_OUT/course_client
# (default ./course_client), against Debian's libzookeeper-mt and
# protobuf-c (scripts/install-deps.sh installs them); chain/course_test.go
# builds it so to drive it. The generated protobuf-c sources are
# temporary.
COURSE_OUT ?= .
course-client:
	@gen=$$(mktemp -d) && trap 'rm -rf "$$gen"' EXIT && \
	protoc-c --c_out=$$gen -I internal/course/c internal/course/c/sdmessage.proto && \
	$(CC) -std=c99 -DTHREADED -Wall -Wextra -Werror -pedantic -O2 -I $$gen \
		-o $(COURSE_OUT)/course_client internal/course/c/course_client.c $$gen/sdmessage.pb-c.c \
		-lzookeeper_mt -lprotobuf-c -lpthread

# A local ZooKeeper on 127.0.0.1:$(ZK_PORT) for running servers by hand.
zk-up:
	scripts/zk.sh up --port $(ZK_PORT)

zk-down:
	scripts/zk.sh down --port $(ZK_PORT)

deps:
	scripts/install-deps.sh

clean:
	rm -f table_server table_client table_perf course_client
