# Holdfast. `make demo` runs the control plane against a real local API server; `make test` runs
# every test. Both build what they need: kube-apiserver and etcd from the Go module proxy into
# $(HOLDFAST_CACHE_DIR), keyed by version, once.
SHELL := bash
export HOLDFAST_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/holdfast
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(HOLDFAST_CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
# Correctness deadline for the whole e2e run; a warm run takes well under a minute.
E2E_TIMEOUT ?= 15m
# Executions, not seconds: a duration-based -fuzztime can fail with a spurious "context deadline
# exceeded" in Go 1.26 (golang/go#75804, fixed in 1.27). A count has no deadline to race.
FUZZTIME ?= 4000x

.PHONY: all build kube test unit e2e fuzz bench lint demo bootstraps clean

all: build

build:
	go build -o bin/ ./cmd/...

# kube-apiserver, kubectl and etcd, built once per version (cold: ~10 min on 2 cores).
kube:
	@bash e2e/kube/build.sh >/dev/null

unit:
	go test -race -count=1 ./resolver/... ./cache/... ./xds/... ./cmd/...

e2e: kube
	go test -count=1 -timeout $(E2E_TIMEOUT) ./e2e/...

# A short fuzz run of the input-eating code rides along with every test run.
test: unit fuzz e2e

# `make fuzz FUZZTIME=1000000x` fuzzes for longer.
fuzz:
	go test ./xds/ -run '^$$' -fuzz FuzzTranslate -fuzztime $(FUZZTIME)
	go test ./resolver/ -run '^$$' -fuzz FuzzBuildService -fuzztime $(FUZZTIME)
	go test ./cache/ -run '^$$' -fuzz FuzzDecodeState -fuzztime $(FUZZTIME)

# Benchmarks: timing goals live here, never in tests.
bench: build kube
	go test -run '^$$' -bench . -benchmem -benchtime 5x ./cache/ ./xds/
	go run ./e2e/cmd/xdsbench
	cd e2e && go test -run '^$$' -bench EndToEndPropagation -benchtime 100x -count 1 .

$(GOLANGCI_LINT):
	GOBIN=$(dir $@) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

demo: kube
	go run ./e2e/cmd/demo

# The example bootstraps in deploy/ are generated; a unit test checks they are current.
bootstraps:
	go run ./cmd/holdfast bootstrap --grpc --node-id example-grpc-client --server holdfast.holdfast-system.svc:18000 --zone zone-a --region region-1 > deploy/grpc-bootstrap.json
	go run ./cmd/holdfast bootstrap --envoy --node-id example-sidecar --server holdfast.holdfast-system.svc:18000 --zone zone-a --region region-1 > deploy/envoy-bootstrap.yaml

clean:
	rm -rf bin/
