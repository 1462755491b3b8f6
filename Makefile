# workload-key-operator. The README names two commands: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
VENV ?= .venv
PYTHON ?= python3
FEATURES ?= sim,failpoints

.PHONY: all build test release-check lint fmt fmt-check unit-and-integration conformance venv k8s-binaries prometheus-binaries dev-cluster-up dev-cluster-down crds clean bench bench-quick eso-binary faults

all: build

build:
	$(CARGO) build --features $(FEATURES) --bins

## The test command: format, lints, unit + integration tests on a real control plane, SDK conformance.
test: fmt-check lint k8s-binaries prometheus-binaries venv unit-and-integration conformance release-check

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets --features $(FEATURES) -- -D warnings
	# The operator image is built without the simulator: make sure that build stays clean too.
	$(CARGO) clippy --bin workload-key-operator -- -D warnings

## The operator as released (no features): built, and proven to carry no fail-point.
release-check:
	$(CARGO) build --release --bin workload-key-operator
	$(CARGO) build --features $(FEATURES) --bin workload-key-operator
	scripts/check-release-binary "$${CARGO_TARGET_DIR:-target}/release/workload-key-operator" "$${CARGO_TARGET_DIR:-target}/debug/workload-key-operator"

unit-and-integration: k8s-binaries
	$(CARGO) test --features $(FEATURES) --no-fail-fast

## The official vendor SDKs (deep-security-api, pytmv1, tetpyclient) against vendor-sim.
conformance: venv
	$(CARGO) build --features $(FEATURES) --bin vendor-sim
	$(VENV)/bin/python -m pytest -q tests/conformance

venv: $(VENV)/.installed

$(VENV)/.installed: tests/conformance/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/conformance/requirements.txt
	touch $@

## Scale benchmarks (docs/architecture.md §6) on a real control plane, with External Secrets Operator measured
## beside ours (the peer phase); records the results in docs/benchmarks.md.
bench: k8s-binaries eso-binary
	$(CARGO) bench --features sim --bench scale

## The fault suite (docs/reliability.md): etcd, kube-apiserver, the vendors and the leader fail under a load of 200
## WorkloadApiKeys and 20 SecureWorkloadCredentials, the invariants are checked after each, and the table of
## docs/reliability.md is written from the measurements (about 40 minutes). `make test` runs its short form.
faults: k8s-binaries
	WKO_FAULTS=full $(CARGO) test --features $(FEATURES) --test faults -- --nocapture

## The same at small sizes (a few minutes); prints the table, records nothing.
bench-quick: k8s-binaries eso-binary
	$(CARGO) bench --features sim --bench scale -- --quick

## kube-apiserver, etcd, kube-controller-manager, kubectl, helm, and for the node tests kube-scheduler, kubelet,
## kwok and pause (cached outside the repo).
k8s-binaries:
	@scripts/k8s-binaries --all >/dev/null

## promtool and prometheus v0.316.0 for the alert rules and dashboard tests (tests/alerts.rs; cached outside the repo).
prometheus-binaries:
	@scripts/prometheus-binaries >/dev/null

## External Secrets Operator v0.16.2, built from its Go module (cached outside the repo): only the benchmarks
## need it, not `make test` or CI.
eso-binary:
	@scripts/eso-binary >/dev/null

dev-cluster-up:
	scripts/dev-cluster up

dev-cluster-down:
	scripts/dev-cluster down

## Regenerate crds/ and the chart's copy from the Rust types (tests fail when either is stale).
crds:
	$(CARGO) run -q -- crds > crds/workloadkeys.io.yaml
	cp crds/workloadkeys.io.yaml charts/workload-key-operator/files/crds/workloadkeys.io.yaml

clean:
	$(CARGO) clean
	rm -rf $(VENV)

.PHONY: chart-crds demo demo-down

## Copy crds/ into the chart (charts/workload-key-operator/files/crds/); a test fails when they differ.
chart-crds: crds

## The README's first command: a local control plane, vendor-sim, the operator, the providers and resources of
## examples/, an app using the Secrets, a request the policy refuses. State in .demo/; `make demo-down` stops everything.
demo: k8s-binaries venv
	scripts/demo up

demo-down:
	scripts/demo down
