# Stellar's build. `make demo` and `make test` do all the set-up on a fresh
# Debian 12 machine as root; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VERSION := $(shell cat VERSION)
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -s -w -X stellar.dev/api.Version=$(VERSION) -X stellar.dev/api.Commit=$(COMMIT)
BINARIES := stellar-gossip stellar-netd stellar-dnsd stellar-proxyd stellar-appd stellar-cni-ipam sctl
GO ?= go
export CGO_ENABLED := 0
export GOFLAGS := -trimpath

# Debian packages the build, the tests, the lab and the benchmarks use.
DEPS := containerd runc containernetworking-plugins debootstrap systemd-container systemd \
	busybox-static dnsutils iproute2 iputils-ping nftables iptables curl lintian rpm
# The peers the benchmarks measure Stellar against.
BENCH_DEPS := dnsperf wrk nginx-light caddy serf iperf3 dnsmasq-base podman hey

.PHONY: build deps bench-deps apt-install test test-go test-fuzz test-units test-packages demo demo-down packages bench lint clean

# grpcnotrace: grpc (stellar-appd's containerd client) then does not link
# golang.org/x/net/trace, whose html/template keeps every exported method in
# the binary (3.3 MB of stellar-appd; see stellar-appd/README.md, Memory).
build:
	$(GO) build -tags grpcnotrace -ldflags '$(LDFLAGS)' -o bin/ $(addprefix stellar.dev/,$(BINARIES)) stellar.dev/lab/cmd/stellar-lab

# deps installs what is missing, and nothing when all is there. Services of
# the installed packages are never started (policy-rc.d): Stellar's tests and
# benchmarks start their own on loopback.
deps:
	@$(MAKE) --no-print-directory apt-install PKGS="$(DEPS)"

bench-deps:
	@$(MAKE) --no-print-directory apt-install PKGS="$(DEPS) $(BENCH_DEPS)"

apt-install:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing >/dev/null; \
		rc=$$?; rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	else echo "deps: all installed"; fi

packages: build
	./packaging/build.sh

test: deps build packages
	@if [ "$$(id -u)" != 0 ]; then echo "########## NOT ROOT: tests that need root, containerd or the lab will SKIP ##########"; fi
	$(MAKE) test-go
	$(MAKE) test-fuzz
	$(MAKE) test-units
	$(MAKE) test-packages

test-go:
	$(GO) test -count=1 -timeout 40m work

# Each fuzz target runs briefly, to prove it still runs and finds nothing quick.
# A run that fails with only "context deadline exceeded" and writes no failing
# input is Go's fuzzing engine stopping a slow worker at the deadline on a
# loaded machine, not a finding: it is run once more. A real finding (a file
# under testdata/fuzz) fails at once.
FUZZ_TIME ?= 10s
test-fuzz:
	@set -e; for t in $$($(GO) list -f '{{if .TestGoFiles}}{{.Dir}}{{end}}' work); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go 2>/dev/null | sed 's/func //'); do \
			echo "fuzz $$t $$f"; \
			for try in 1 2; do \
				if (cd $$t && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZ_TIME) .) >/tmp/stellar-fuzz.log 2>&1; then tail -n 2 /tmp/stellar-fuzz.log; break; fi; \
				cat /tmp/stellar-fuzz.log; \
				if [ $$try = 1 ] && grep -q 'context deadline exceeded' /tmp/stellar-fuzz.log && ! grep -q 'Failing input written' /tmp/stellar-fuzz.log; then \
					echo "fuzz $$f: stopped at the deadline with no failing input; running it once more"; continue; fi; \
				exit 1; \
			done; \
		done; done

test-units:
	./units/check.sh

test-packages:
	./packaging/check.sh
	./packaging/install-test.sh

demo: deps build packages
	./lab/demo.sh

demo-down: build
	./bin/stellar-lab down

bench: bench-deps build
	$(GO) run ./bench/cmd/stellar-bench

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet work
	$(GO) run $(STATICCHECK) $$($(GO) list -m | sed 's|$$|/...|')
	@$(GO) work sync; \
	if ! git diff --quiet -- go.work '*/go.mod' '*/go.sum'; then echo "go work sync changed files:"; git diff --stat; exit 1; fi

clean:
	rm -rf bin dist
