# Keepstate: `make drill` and `make test` work on a fresh Debian 12 machine with the Swift
# toolchain; they install the Debian packages they need first (as root).

SWIFT ?= swift
SHELL := /bin/bash
# Build-time C libraries of the design (libnl, libnetfilter_conntrack, OpenSSL) and the tools
# the tests drive (openssl s_client as an independent TLS client; keepalived as the other VRRP
# router; tshark's VRRP dissector as the judge of our adverts and the takeover benchmark's clock;
# ping for the ICMP flow of the kernel daemon tests).
DEBS := pkg-config libssl-dev openssl libnl-3-dev libnl-route-3-dev libnetfilter-conntrack-dev \
        iproute2 nftables conntrack conntrackd keepalived tshark iputils-ping

.PHONY: all deps build test drill bench fuzz clean

all: build

deps:
	@missing=""; \
	for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "missing Debian packages:$$missing"; echo "run as root, or: sudo apt-get install$$missing"; exit 1; \
		fi; \
		echo "installing:$$missing"; \
		echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

# swift test prints XCTest's summary (no XCTest tests here) and then Swift Testing's; the last
# line repeats Swift Testing's count as a plain "N passed, N failed".
test: deps
	$(SWIFT) build --build-tests
	@set -o pipefail; $(SWIFT) test --skip-build 2>&1 | tee .build/test.log
	@n=$$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed after.*/\1/p' .build/test.log | tail -1); \
	 [ -n "$$n" ] && echo "$$n passed, 0 failed"

# The failover drill (docs/drill.md): two routers elected by VRRP in network namespaces, NAT
# and a stateful firewall, TCP and UDP flows through them; the master fails, the flows must go
# on through the backup; then the same without the sync, as the control, and with keepalived +
# conntrackd, as the baseline. Release build: the drill times what the daemon does.
drill: deps
	$(SWIFT) build -c release --product keepstate
	./.build/release/keepstate drill --baseline

bench: deps
	$(SWIFT) build -c release --product keepstate
	./.build/release/keepstate bench --conntrackd

fuzz: deps
	./Fuzz/run.sh 60

clean:
	rm -rf .build
