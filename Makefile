# weir — see README.md. Every target works on a fresh machine with Go installed
# (`make proto` also needs protoc: apt-get install protobuf-compiler).

GO      ?= go
BIN     ?= bin/weir
ARGS    ?=
PKGS    ?= ./...
BENCH   ?= .

.PHONY: build run test chaos proto bench bench-peers lint clean

build:
	$(GO) build -o $(BIN) ./cmd/weir

# A standalone node: embedded etcd, MQTT on 127.0.0.1:1883, gRPC on
# 127.0.0.1:6570, data in ./data.
run: build
	./$(BIN) server $(ARGS)

test:
	$(GO) test -race -timeout 25m $(PKGS)

# The fault-injection run (test/chaos_test.go, docs/chaos.md): three nodes
# and an etcd behind proxies, DURATION of randomized faults (default 20m)
# from SEED (default: from the clock), report.txt, report.json and
# acks.jsonl in REPORT (default ./chaos-report). make test runs a short one.
chaos:
	$(GO) test -race -timeout 0 -count=1 -run '^TestChaos$$' -v ./test -args \
		-chaos.duration $(or $(DURATION),20m) -chaos.seed $(or $(SEED),0) -chaos.report $(abspath $(or $(REPORT),chaos-report))

# Regenerates api/hstreampb and api/peerpb from api/proto/*.proto with the plugin
# versions pinned in go.mod's tool block.
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install tool
	PATH=$(CURDIR)/bin:$$PATH protoc -I api/proto \
		--go_out=api/hstreampb --go_opt=paths=source_relative \
		--go-grpc_out=api/hstreampb --go-grpc_opt=paths=source_relative \
		api/proto/hstream.proto
	PATH=$(CURDIR)/bin:$$PATH protoc -I api/proto \
		--go_out=api/peerpb --go_opt=paths=source_relative \
		--go-grpc_out=api/peerpb --go-grpc_opt=paths=source_relative \
		api/proto/peer.proto

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(PKGS)

# weir against a bare mochi broker, Mosquitto and NATS (MQTT + JetStream) on
# this machine, the same `weir bench mqtt` load (QoS 1, 256 B, 50 clients);
# installs missing peers with apt-get. Takes minutes: BENCH_SECONDS (default
# 30) per peer. See docs/performance.md.
bench-peers:
	BENCH_SECONDS=$(or $(BENCH_SECONDS),30) GO=$(GO) scripts/bench-peers

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
