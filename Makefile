# tgtun — build, test and package. `make help` lists the targets.
SHELL       := /bin/bash
# Go: the one in PATH, else /usr/local/go (where go.dev's tarball unpacks). GO_NEED is the
# version go.mod asks for; go-check says so when Go is missing or older.
GO_NEED     := $(shell sed -n 's/^go //p' go.mod)
ifeq ($(origin GO),undefined)
GO          := $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go),go)
endif
# The e2e tests build tgtun with the go in PATH, and sing-box is `go install`ed: both
# must be found without the caller's PATH knowing /usr/local/go/bin.
export PATH := $(if $(filter /%,$(GO)),$(patsubst %/,%,$(dir $(GO))):)$(HOME)/go/bin:$(PATH)
# X.Y.Z-rN from the last vX.Y.Z tag (0.0.0-rN without one): valid for opkg and apk alike.
# Expanded once (:=), so every binary and package of one make run has the same version.
ifeq ($(origin VERSION),undefined)
VERSION     := $(shell sh openwrt/version.sh)
endif
LDFLAGS     := -s -w -X main.version=$(VERSION)
BIN         := bin/tgtun
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# sing-box release the e2e tests run as VLESS/Trojan/SS-2022 server (e2e/testnet/singbox.go).
SINGBOX_VERSION := 1.14.1
# Xray-core for the e2e tests' Xray servers (ChaCha20/REALITY interop, pinned certificates,
# the transports ws, httpupgrade, grpc, xhttp) and the bench's reference client
# (e2e/testnet/xray.go, which checks the same release): `xray version` says XRAY_VERSION.
XRAY_MODULE     := github.com/xtls/xray-core/main@v1.260327.0
XRAY_VERSION    := 26.3.27
# wireguard-go (userspace WireGuard; the kernel of CI may have no wireguard module): the
# link of the interface-proxy e2e test. Installed as $GOPATH/bin/wireguard.
WIREGUARD_GO    := golang.zx2c4.com/wireguard@v0.0.0-20260522210424-ecfc5a8d5446
# Debian packages the demo's steps use: the test network's kernel tools, real proxy servers
# and clients (e2e/testnet's requiredBinaries). dnsmasq-base: the binary alone (the dnsmasq
# package would enable and start a service).
DEMO_DEB_PKGS := nftables iproute2 socat iperf3 curl dante-server microsocks shadowsocks-libev \
               tinyproxy dnsmasq-base
# What only the tests add: qemu for the big-endian test run, shellcheck and gettext for the
# packaging checks, wireguard-tools for the interface proxy, busybox-static (the shell and
# tools of the OpenWrt root the package tests run in) and signify-openbsd (verifies usign
# signatures for that root's opkg, as usign does on a router); build-essential builds
# hev-socks5-tunnel, the C relay make bench measures tgtun against.
DEB_PKGS    := $(DEMO_DEB_PKGS) qemu-user-static shellcheck gettext wireguard-tools \
               busybox-static signify-openbsd build-essential
# OpenWrt's own programs (ubusd, ubus, uci, rpcd, uhttpd, ucode + fw4, opkg, apk), built by
# tools/openwrt-host.sh from ../shared/openwrt into this cache outside the checkout, once;
# the tests find it through TGTUN_OPENWRT_HOST and fail when it is unset or incomplete.
OPENWRT_HOST ?= /var/cache/tgtun-openwrt
export TGTUN_OPENWRT_HOST := $(OPENWRT_HOST)
# Packages whose tests need no root and no network namespaces: they also run under qemu
# on big-endian MIPS and on ARM, since most small routers are big-endian MIPS.
PURE_PKGS   := ./daemon/config/... ./daemon/ubus/... ./daemon/lists/... ./daemon/control/... ./daemon/dnsfwd/... ./daemon/dnsname/...

.PHONY: docs-img help go-check deps deps-demo openwrt-host build test lint unit test-bigendian test-luci cross demo bench bench-mips ipk apk packages pkg-bins feed feed-key clean fuzz

help:
	@echo "make demo   - set up, build and run the end-to-end demo (root; 2-5 min the first time, 1 min after)"
	@echo "make test   - set up and run every test: lint, unit+e2e (root), big-endian, LuCI, cross (20-40 min)"
	@echo "make build  - build bin/tgtun"
	@echo "make lint   - gofmt, go vet, staticcheck"
	@echo "make cross  - static binaries for the OpenWrt targets, with sizes"
	@echo "make ipk    - OpenWrt packages in dist/"
	@echo "make apk    - the same as apk v3 packages (OpenWrt 25.12); make packages: both"
	@echo "make feed   - signed package feed in dist/feed/ (keys: make feed-key)"
	@echo "make bench  - figures against same-run baselines (root): docs/performance.md"
	@echo "make bench-mips - tgtun vs hev-socks5-tunnel, sing-box, Xray on an emulated MIPS router (root; 15 min once, then ~1 h)"

go-check:
	@if ! command -v $(GO) >/dev/null 2>&1; then \
		echo "Go $(GO_NEED) or newer is needed and is neither in PATH nor in /usr/local/go/bin."; \
		echo "Install it from https://go.dev/dl/: tar -C /usr/local -xzf go$(GO_NEED).linux-amd64.tar.gz"; \
		exit 1; \
	fi
	@have=$$($(GO) env GOVERSION 2>/dev/null); have=$${have#go}; \
	if [ "$$(printf '%s\n%s\n' "$(GO_NEED)" "$$have" | sort -V | head -n1)" != "$(GO_NEED)" ]; then \
		echo "$(GO) is Go $$have; tgtun needs Go $(GO_NEED) or newer (https://go.dev/dl/)."; exit 1; \
	fi

# deps-demo installs what the demo's steps use on a fresh Debian machine (root): quietly,
# waiting for a held apt lock, leaving the test servers' services disabled (tools/deps.sh),
# and the Go modules. deps adds what only the tests and the bench use: more Debian
# packages, sing-box, wireguard-go and OpenWrt's programs. Each takes a few minutes the
# first time and a second when everything is there.
deps-demo: go-check
	@bash tools/deps.sh $(DEMO_DEB_PKGS)
	@echo "deps: go mod download"
	@$(GO) mod download

deps: deps-demo
	@bash tools/deps.sh $(DEB_PKGS)
	@# sing-box: the VLESS (TLS, REALITY, Vision), Trojan and Shadowsocks-2022 servers of the
	@# e2e tests and the bench's reference client. with_utls enables REALITY; no QUIC.
	@gobin=$$($(GO) env GOBIN); sb=$${gobin:-$$($(GO) env GOPATH | cut -d: -f1)/bin}/sing-box; \
	if ! "$$sb" version 2>/dev/null | grep -q 'sing-box version $(SINGBOX_VERSION)$$'; then \
		echo "installing sing-box $(SINGBOX_VERSION) into $$sb"; \
		$(GO) install -tags with_utls \
			-ldflags '-s -w -X github.com/sagernet/sing-box/constant.Version=$(SINGBOX_VERSION)' \
			github.com/sagernet/sing-box/cmd/sing-box@v$(SINGBOX_VERSION); \
	fi
	@# Xray-core (its module builds a binary named main: installed as xray).
	@gobin=$$($(GO) env GOBIN); xr=$${gobin:-$$($(GO) env GOPATH | cut -d: -f1)/bin}/xray; \
	if ! "$$xr" version 2>/dev/null | grep -q '^Xray $(XRAY_VERSION) '; then \
		echo "installing Xray-core $(XRAY_VERSION) into $$xr"; tmp=$$(mktemp -d) && \
		GOBIN=$$tmp $(GO) install $(XRAY_MODULE) && mkdir -p "$$(dirname "$$xr")" && mv "$$tmp/main" "$$xr" && rmdir "$$tmp"; \
	fi
	@gobin=$$($(GO) env GOBIN); wg=$${gobin:-$$($(GO) env GOPATH | cut -d: -f1)/bin}/wireguard; \
	if ! "$$wg" --version 2>/dev/null | grep -q 'wireguard-go'; then \
		echo "installing wireguard-go into $$wg"; $(GO) install $(WIREGUARD_GO); \
	fi
	@bash tools/openwrt-host.sh $(OPENWRT_HOST)

# OpenWrt's programs into $(OPENWRT_HOST): about 2 minutes the first time, then at once.
openwrt-host:
	@bash tools/openwrt-host.sh $(OPENWRT_HOST)

build: go-check
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./daemon

lint: go-check
	@echo "lint: gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@echo "lint: go vet (amd64)"
	$(GO) vet ./...
	@# Most routers are 32-bit: a constant that overflows a 32-bit int must fail here, early.
	@echo "lint: go vet for 32-bit big-endian mips (about a minute the first time)"
	GOARCH=mips GOMIPS=softfloat $(GO) vet ./...
	@echo "lint: staticcheck (builds it first: a minute or two the first time)"
	$(GO) run $(STATICCHECK) ./...
	@echo "lint: tools/*.sh (shellcheck; deps.sh against stand-ins for apt and systemctl)"
	shellcheck tools/*.sh bench/mips/*.sh
	bash tools/deps_test.sh

# Every package but e2e, then e2e (root, network namespaces) with a line per test as it
# starts and ends, so a slow or hanging test shows; a failing test's whole log is printed.
unit: go-check
	@echo "unit: go test, every package except e2e"
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/e2e')
	@echo "unit: go test ./e2e/... (root: real TUN, nftables, proxies in network namespaces; 5-15 min)"
	set -o pipefail; $(GO) test -count=1 -timeout 20m -json ./e2e/... | $(GO) run ./e2e/testlog

test-bigendian: go-check
	@echo "test-bigendian: the pure packages' tests under qemu-mips-static, then qemu-arm-static"
	GOARCH=mips GOMIPS=softfloat CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-mips-static $(PURE_PKGS)
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-arm-static $(PURE_PKGS)
	@# The engine's tests need root and a TUN, except its epoll poller's (the kernel hands
	@# the event's data back in the layout each architecture defines).
	GOARCH=mips GOMIPS=softfloat CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-mips-static -run 'TestReadPoller|TestConfigDefaults' ./daemon/engine
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-arm-static -run 'TestReadPoller|TestConfigDefaults' ./daemon/engine

# OpenWrt's own programs (ubusd, rpcd, uhttpd, uci, ...) for the tests, built from
# ../shared/openwrt once into this directory outside the checkout (build.sh returns at
# once while it matches ../shared/openwrt/src/COMMITS).
OPENWRT_HOST ?= /var/cache/tgtun-openwrt
export TGTUN_OPENWRT_HOST := $(OPENWRT_HOST)

# The LuCI app's checks: views parse, ACL matches the calls, translations complete, form
# validation agrees with `tgtun config check`, and the views under LuCI's real runtime
# (../shared/luci) in headless Chromium against OpenWrt's real uhttpd, rpcd and ubusd with
# tgtun's daemon on that bus, with screenshots. run.sh installs its Debian packages with
# tools/deps.sh (lock wait, quiet) and builds OpenWrt's programs into $(OPENWRT_HOST).
test-luci:
	bash luci-app/tests/run.sh

# The stages of `make test`, each under a banner with its elapsed time, then a summary.
TEST_STAGES := deps lint unit test-bigendian test-luci cross
test:
	@MAKE="$(MAKE)" bash tools/stages.sh $(TEST_STAGES)

# The OpenWrt architectures and their Go settings live in one place: openwrt/mkipk.
MKIPK := bin/mkipk
$(MKIPK): $(wildcard openwrt/mkipk/*.go)
	@mkdir -p bin
	$(GO) build -o $@ ./openwrt/mkipk

cross: go-check $(MKIPK)
	@echo "cross: static binaries for each OpenWrt architecture, with their sizes"
	@mkdir -p dist/bin
	@set -e; for arch in $$($(MKIPK) -print-archs | cut -d' ' -f1); do \
		env $$($(MKIPK) -print-env $$arch) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/bin/tgtun-$$arch ./daemon; \
		printf '%-28s %6d KiB\n' $$arch $$(( $$(stat -c %s dist/bin/tgtun-$$arch) / 1024 )); \
	done

IPK_VERSION ?= $(patsubst v%,%,$(VERSION))
# One file time for every package of a build: the last commit's.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
endif
export SOURCE_DATE_EPOCH
# mkipk compiles each luci-app/po/LANG/tgtun.po into LuCI's .lmo (po2lmo's format),
# installed where LuCI reads it: /usr/lib/lua/luci/i18n/tgtun.LANG.lmo.
LUCI_LMO := $(foreach po,$(wildcard luci-app/po/*/tgtun.po),\
	-lmo $(po):/usr/lib/lua/luci/i18n/tgtun.$(notdir $(patsubst %/,%,$(dir $(po)))).lmo)
pkg-bins: $(MKIPK)
	@set -e; for arch in $$($(MKIPK) -print-archs | cut -d' ' -f1); do \
		env $$($(MKIPK) -print-env $$arch) $(GO) build -trimpath \
			-ldflags '-s -w -X main.version=$(IPK_VERSION)' -o bin/$$arch/tgtun ./daemon; \
	done

define build-packages
	@mkdir -p dist
	@set -e; for arch in $$($(MKIPK) -print-archs | cut -d' ' -f1); do \
		$(MKIPK) -format $(1) -name tgtun -version $(IPK_VERSION) -arch $$arch -bin bin/$$arch/tgtun \
			-files openwrt/files -scripts openwrt/scripts -out dist/$(1)/$$arch; \
	done
	$(MKIPK) -format $(1) -name luci-app-tgtun -version $(IPK_VERSION) -arch all \
		-tree luci-app/htdocs:/www -files luci-app/root -scripts luci-app/scripts $(LUCI_LMO) \
		-out dist/$(1)/all
endef

apk: pkg-bins
	$(call build-packages,apk)

packages: ipk apk

ipk: pkg-bins
	$(call build-packages,ipk)
	@# Also at dist/ as before, for `make ipk` users.
	@cp dist/ipk/*/*.ipk dist/
	@ls -l dist/*.ipk

# Feed keys: private halves stay in feed-keys/ (git-ignored; keep a backup: a new key
# means every router must trust it anew); the public halves go into dist/feed/keys/.
FEED_KEYS ?= feed-keys
feed-key: $(MKIPK)
	$(MKIPK) -genkeys $(FEED_KEYS)
	@echo "private keys in $(FEED_KEYS)/ - never commit or upload them"

# dist/feed/<arch>/: both formats of tgtun for the arch and of luci-app-tgtun, with the
# opkg index (Packages, .gz, .sig) and the apk index (packages.adb), signed.
feed: packages
	@test -f $(FEED_KEYS)/usign.sec || { echo "no feed keys: make feed-key first"; exit 1; }
	@rm -rf dist/feed && mkdir -p dist/feed/keys
	@set -e; for arch in $$($(MKIPK) -print-archs | cut -d' ' -f1); do \
		mkdir -p dist/feed/$$arch; \
		cp dist/ipk/$$arch/* dist/ipk/all/* dist/apk/$$arch/* dist/apk/all/* dist/feed/$$arch/; \
		$(MKIPK) -index dist/feed/$$arch -keys $(FEED_KEYS); \
	done
	@fp=$$(sed -n 2p $(FEED_KEYS)/usign.pub | base64 -d | od -An -tx1 -j2 -N8 | tr -d ' \n' | sed 's/^0*//'); \
	cp $(FEED_KEYS)/usign.pub dist/feed/keys/tgtun-feed.usign.pub; \
	cp $(FEED_KEYS)/usign.pub dist/feed/keys/$$fp; \
	cp $(FEED_KEYS)/apk.pub.pem dist/feed/keys/tgtun-feed.pem
	@ls dist/feed dist/feed/keys

demo: deps-demo build
	$(GO) run ./e2e/demo -tgtun $(BIN)

# Figures against baselines of the same run, in the e2e network (root): see docs/performance.md.
bench: deps build
	$(GO) run ./bench -tgtun $(BIN) -o bench/results.json $(BENCH_FLAGS)

# tgtun on an emulated MIPS router (qemu-system-mipsel, Malta 24Kc, Debian bookworm
# mipsel) against hev-socks5-tunnel, sing-box and Xray, medians of per-round ratios:
# docs/performance.md, "Emulated MIPS router". Not part of `make test`. The root file
# system and the peers' builds are cached in /var/cache/tgtun-mips (about 15 minutes
# once). BENCH_MIPS_FLAGS, e.g. '-rounds 3 -enc-rounds 0 -variant tproxy=bin/tgtun-mipsel'.
MIPS_PKGS   := qemu-system-mips debootstrap qemu-user-static binfmt-support gcc-mipsel-linux-gnu libc6-dev-mipsel-cross e2fsprogs make
bench-mips: go-check
	@bash tools/deps.sh $(MIPS_PKGS)
	$(GO) run ./bench/mips $(BENCH_MIPS_FLAGS)

fuzz:
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
		done; \
	done

# The README's two LuCI screenshots (docs/img): the English ones of the LuCI screenshot test.
docs-img:
	LUCI_TESTS=runtime.test.js LUCI_TEST_PATTERN=screenshots bash luci-app/tests/run.sh
	cp e2e/artifacts/luci/settings-en.png docs/img/settings.png
	cp e2e/artifacts/luci/status-en.png docs/img/status.png

clean:
	rm -rf bin dist
