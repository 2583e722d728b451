# tgtun — build, test and package. `make help` lists the targets.
SHELL       := /bin/bash
GO          ?= go
# X.Y.Z-rN from the last vX.Y.Z tag (0.0.0-rN without one): valid for opkg and apk alike.
# Expanded once (:=), so every binary and package of one make run has the same version.
ifeq ($(origin VERSION),undefined)
VERSION     := $(shell sh openwrt/version.sh)
endif
LDFLAGS     := -s -w -X main.version=$(VERSION)
BIN         := bin/tgtun
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Debian packages the tests and the demo use: the kernel tools, real proxy servers and
# clients, qemu for the big-endian test run, shellcheck and gettext for the packaging checks.
DEB_PKGS    := nftables iproute2 socat iperf3 curl dante-server microsocks shadowsocks-libev \
               tinyproxy qemu-user-static shellcheck gettext
# Packages whose tests need no root and no network namespaces: they also run under qemu
# on big-endian MIPS and on ARM, since most small routers are big-endian MIPS.
PURE_PKGS   := ./daemon/config/... ./daemon/ubus/... ./daemon/lists/... ./daemon/control/...

.PHONY: help deps build test lint unit test-bigendian test-luci cross demo bench ipk apk packages pkg-bins feed feed-key clean fuzz

help:
	@echo "make demo   - set up, build and run the end-to-end demo (root)"
	@echo "make test   - set up and run every test: lint, unit+e2e (root), big-endian, cross"
	@echo "make build  - build bin/tgtun"
	@echo "make lint   - gofmt, go vet, staticcheck"
	@echo "make cross  - static binaries for the OpenWrt targets, with sizes"
	@echo "make ipk    - OpenWrt packages in dist/"
	@echo "make apk    - the same as apk v3 packages (OpenWrt 25.12); make packages: both"
	@echo "make feed   - signed package feed in dist/feed/ (keys: make feed-key)"
	@echo "make bench  - figures against same-run baselines (root): docs/performance.md"

# deps installs what the tests need on a fresh Debian machine (root). It is quick when
# everything is already there.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./daemon

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# Most routers are 32-bit: a constant that overflows a 32-bit int must fail here, early.
	GOARCH=mips GOMIPS=softfloat $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -count=1 -timeout 20m ./...

test-bigendian:
	GOARCH=mips GOMIPS=softfloat CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-mips-static $(PURE_PKGS)
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-arm-static $(PURE_PKGS)
	@# The engine's tests need root and a TUN, except its epoll poller's (the kernel hands
	@# the event's data back in the layout each architecture defines).
	GOARCH=mips GOMIPS=softfloat CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-mips-static -run 'TestReadPoller|TestConfigDefaults' ./daemon/engine
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-arm-static -run 'TestReadPoller|TestConfigDefaults' ./daemon/engine

# The LuCI app's checks: views parse, ACL matches the calls, translations complete, form
# validation agrees with `tgtun config check`, screenshots in headless Chromium.
test-luci:
	bash luci-app/tests/run.sh

test: deps lint unit test-bigendian test-luci cross

# The OpenWrt architectures and their Go settings live in one place: openwrt/mkipk.
MKIPK := bin/mkipk
$(MKIPK): $(wildcard openwrt/mkipk/*.go)
	@mkdir -p bin
	$(GO) build -o $@ ./openwrt/mkipk

cross: $(MKIPK)
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

demo: deps build
	$(GO) run ./e2e/demo -tgtun $(BIN)

# Figures against baselines of the same run, in the e2e network (root): see docs/performance.md.
# BENCH_FLAGS=-offload=false measures with the TUN offloads off (TGTUN_TUN_OFFLOAD=0).
bench: deps build
	$(GO) run ./bench -tgtun $(BIN) -o bench/results.json $(BENCH_FLAGS)

fuzz:
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
		done; \
	done

clean:
	rm -rf bin dist
