# billingd — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
TOOL  := $(GO) tool -modfile=tools/go.mod
PKGS  := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned developer tools (tools/go.mod) into the Go build cache.
	$(TOOL) -n buf >/dev/null
	$(TOOL) -n protoc-gen-go >/dev/null
	$(TOOL) -n protoc-gen-go-grpc >/dev/null
	$(TOOL) -n staticcheck >/dev/null
	$(TOOL) -n stripe-mock >/dev/null
	$(TOOL) -n grpcurl >/dev/null
	$(TOOL) -n ghz >/dev/null
	$(TOOL) -n benchstat >/dev/null

.PHONY: generate
generate: ## Regenerate gen/ from proto/ with buf and local plugins.
	$(TOOL) buf generate

.PHONY: checkgenerate
checkgenerate: generate ## Fail if gen/ differs from what proto/ generates.
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is out of date with proto/: run 'make generate' and commit"; \
		git status --porcelain -- gen; git diff --stat -- gen; exit 1; \
	fi

.PHONY: lint
lint: ## go vet, staticcheck, gofmt, buf lint, buf format.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOL) staticcheck $(PKGS)
	$(TOOL) buf lint
	$(TOOL) buf format -d --exit-code

.PHONY: build
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null)
build: ## Build bin/billingd: static (no cgo), as the Docker image builds it.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.commit=$(COMMIT)" -o bin/billingd ./cmd/billingd

.PHONY: test
test: ## Run every test with the race detector, in shuffled order.
	$(GO) test -race -shuffle=on -timeout 15m $(PKGS)
	@if [ -z "$$BILLINGD_TEST_POSTGRES" ]; then \
		echo "NOTE: the PostgreSQL and replica tests were SKIPPED (BILLINGD_TEST_POSTGRES is unset); make test-postgres runs them"; \
	fi

.PHONY: test-postgres
test-postgres: ## Start a throwaway PostgreSQL on loopback (.ci/postgres.sh) and run the tests that need it.
	@set -e; eval "$$(.ci/postgres.sh start)"; trap '.ci/postgres.sh stop' EXIT; \
		$(GO) test -race -count=1 -timeout 15m ./storage/... ./server ./cmd/billingd

.PHONY: run
run: build ## Serve on 127.0.0.1:50051 with ./data/billingd.db and the built-in Stripe simulator (its webhooks to 127.0.0.1:8081).
	./bin/billingd serve --stripe-sim --stripe-sim-listen 127.0.0.1:12111 --webhook-listen 127.0.0.1:8081 --log-format text --metrics-listen 127.0.0.1:9090

.PHONY: faults
faults: ## Run the seeded random-fault test verbosely and print its figures.
	set -o pipefail; $(GO) test -race -count=1 -run 'TestRandomFaultsExactlyOnce' -v ./server/ | grep -E 'random faults|answers|^(--- |ok|FAIL)'

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin clients examples/ts/gen examples/ts/dist

.PHONY: clients
clients: examples/ts/node_modules ## Generate the Go, Python and TypeScript client stubs into clients/ (buf.gen.clients.yaml; needs apt's protobuf-compiler and protobuf-compiler-grpc).
	@command -v protoc >/dev/null && command -v grpc_python_plugin >/dev/null || \
		{ echo "clients: protoc and grpc_python_plugin needed: apt-get install protobuf-compiler protobuf-compiler-grpc"; exit 1; }
	$(TOOL) buf generate --template buf.gen.clients.yaml

# protoc-gen-es, TypeScript and the Connect runtime, as examples/ts/package-lock.json pins them.
examples/ts/node_modules: examples/ts/package-lock.json
	cd examples/ts && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

.PHONY: examples-test
examples-test: build clients ## Run examples/go, examples/python and examples/ts against a real billingd (needs Node 20+, npm, apt's python3-grpcio and python3-protobuf).
	examples/run.sh

.PHONY: docker
docker: ## Build the container image billingd:<commit> (needs a Docker engine).
	docker build --build-arg COMMIT=$(COMMIT) -t billingd:$(or $(COMMIT),dev) .

.PHONY: fuzz
FUZZTIME ?= 10s
FUZZ_TARGETS := ./service:FuzzParamsDecode ./service:FuzzChargeValidateFingerprint ./storage:FuzzDecodeRecord ./storage:FuzzRecordRoundTrip
fuzz: ## Run each fuzz target for FUZZTIME (default 10s; a count such as 100000x avoids go1.26's deadline flake, golang/go#75804) on top of its committed corpus (testdata/fuzz).
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

.PHONY: bench
bench: build ## Load-test billingd (~14 min): the ghz matrix on the built-in simulator, own-cpu and slow-stripe; writes bench/results.json. Short: BENCHFLAGS="-runs 1 -duration 3s -slow-duration 6s".
	$(GO) run ./internal/benchrun -bin bin/billingd $(BENCHFLAGS)
