# FPS: one Makefile. `make` builds build/fps-controller, build/fps-acl and build/fps-auth.
# `make test` builds ASan/UBSan variants under build/asan/ and runs unit and integration tests.
# Every fps-controller/*.c other than the three *main.c files goes into libfps.a, so a new
# module needs no edit here.

CC       ?= gcc
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
PYTHON   ?= /usr/bin/python3
DEB_PKGS := build-essential clang squid stunnel4 curl openssl libssl-dev libcjson-dev libyaml-dev \
            libmicrohttpd-dev libcmocka-dev python3-pytest python3-yaml clang-format cppcheck
# What only the tests need on top: the clients docs/agents.md documents (each snippet is run),
# the browser the status page is tested in, ss (iproute2), which a minimal Debian lacks, and
# valgrind, whose callgrind counts Squid's instructions for the bench's (15) and its test.
TEST_PKGS := wget python3-requests openjdk-17-jdk-headless nodejs node-undici \
             chromium iproute2 valgrind
# deploy/k8s is rendered by Debian 12's kubectl 1.20 (kustomize v2.0.3): unpacked from the
# kubernetes-client package into build/ (any kubectl on PATH, e.g. a current one, is compared too).
KUBECTL_DEB := build/kubernetes-client/usr/bin/kubectl
# promtool (`promtool check metrics` in the tests) the same way, from Debian's prometheus package:
# installing that package would enable and start a Prometheus server on 0.0.0.0:9090.
PROMTOOL_DEB := build/prometheus/usr/bin/promtool

WARN     := -std=c11 -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-format-nonliteral -Wno-format-truncation
HARDEN   := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection -fPIE
DEFS     := -D_GNU_SOURCE -DFPS_VERSION=\"$(VERSION)\"
LDHARDEN := -pie -Wl,-z,relro,-z,now -Wl,--as-needed
LIBS     := -lmicrohttpd -lcjson -lyaml -lssl -lcrypto

CFLAGS_REL  := -O2 -g $(WARN) $(HARDEN) $(DEFS)
CFLAGS_ASAN := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
               $(WARN) $(DEFS)

SRC_DIR  := fps-controller
MAINS    := $(SRC_DIR)/main.c $(SRC_DIR)/acl_main.c $(SRC_DIR)/auth_main.c
LIB_SRCS := $(filter-out $(MAINS),$(wildcard $(SRC_DIR)/*.c))
HDRS     := $(wildcard $(SRC_DIR)/*.h)
BINS     := fps-controller fps-acl fps-auth
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRCS))

.PHONY: all asan test unit integration lint format run deps test-deps bench-deps image image-deps test-image fuzz bench bench-quick clean compdb

all: $(addprefix build/,$(BINS))

# ---- release build -----------------------------------------------------------------------
build/obj/%.o: $(SRC_DIR)/%.c $(HDRS) | build/obj
	@echo '  CC      $<'
	@$(CC) $(CFLAGS_REL) -c -o $@ $<

build/libfps.a: $(patsubst $(SRC_DIR)/%.c,build/obj/%.o,$(LIB_SRCS))
	@ar rcs $@ $^

build/fps-controller: build/obj/main.o build/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_REL) $(LDHARDEN) -o $@ $^ $(LIBS)
build/fps-acl: build/obj/acl_main.o build/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_REL) $(LDHARDEN) -o $@ $^ $(LIBS)
build/fps-auth: build/obj/auth_main.o build/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_REL) $(LDHARDEN) -o $@ $^ $(LIBS)

# ---- sanitizer build (used by every test) --------------------------------------------------
build/asan/obj/%.o: $(SRC_DIR)/%.c $(HDRS) | build/asan/obj
	@echo '  CC/SAN  $<'
	@$(CC) $(CFLAGS_ASAN) -c -o $@ $<

build/asan/libfps.a: $(patsubst $(SRC_DIR)/%.c,build/asan/obj/%.o,$(LIB_SRCS))
	@ar rcs $@ $^

build/asan/fps-controller: build/asan/obj/main.o build/asan/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_ASAN) -o $@ $^ $(LIBS)
build/asan/fps-acl: build/asan/obj/acl_main.o build/asan/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_ASAN) -o $@ $^ $(LIBS)
build/asan/fps-auth: build/asan/obj/auth_main.o build/asan/libfps.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS_ASAN) -o $@ $^ $(LIBS)

build/asan/tests/%: tests/unit/%.c build/asan/libfps.a $(HDRS) | build/asan/tests
	@echo '  CC/SAN  $<'
	@$(CC) $(CFLAGS_ASAN) -I$(SRC_DIR) -o $@ $< build/asan/libfps.a -lcmocka $(LIBS)

asan: $(addprefix build/asan/,$(BINS))

build/obj build/asan/obj build/asan/tests:
	mkdir -p $@

# ---- tests ---------------------------------------------------------------------------------
# Sanitizer reports abort the process (and so fail the test) instead of scrolling by.
export ASAN_OPTIONS  ?= abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

# `make test` alone on a fresh Debian 12 machine (as root) first installs what is missing.
test: test-deps
	@$(MAKE) --no-print-directory all asan unit integration test-image
	@echo "make test: all suites passed"

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# Integration tests drive the sanitizer binaries through real Squid, stunnel, curl and origins.
integration: all asan $(KUBECTL_DEB) $(PROMTOOL_DEB)
	$(MAKE) -C bench all asan
	PROMTOOL=$(CURDIR)/$(PROMTOOL_DEB) KUBECTL=$(CURDIR)/$(KUBECTL_DEB) FPS_BIN_DIR=$(CURDIR)/build/asan LOADGEN=$(CURDIR)/build/bench/asan/loadgen \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration tests/deploy bench/tests $(PYTEST_ARGS)

$(KUBECTL_DEB):
	@rm -rf build/kubernetes-client && mkdir -p build/kubernetes-client
	@cd build/kubernetes-client && { apt-get download -q kubernetes-client 2>/dev/null || \
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get download -q kubernetes-client; }; } && \
		dpkg-deb -x kubernetes-client_*.deb . && rm -f kubernetes-client_*.deb
	@$@ version --client --short

$(PROMTOOL_DEB):
	@rm -rf build/prometheus && mkdir -p build/prometheus
	@cd build/prometheus && { apt-get download -q prometheus 2>/dev/null || \
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get download -q prometheus; }; } && \
		dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool && rm -f prometheus_*.deb
	@$@ --version 2>&1 | head -1

# ---- lint ----------------------------------------------------------------------------------
LINT_FILES := $(wildcard $(SRC_DIR)/*.[ch] tests/unit/*.c tests/fuzz/*.c bench/*.c)
lint:
	clang-format --dry-run --Werror $(LINT_FILES)
	cppcheck -q --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
		--inline-suppr -D_GNU_SOURCE -I$(SRC_DIR) $(SRC_DIR) bench

format:
	clang-format -i $(LINT_FILES)

compdb:
	bear -- $(MAKE) -B all

# ---- fuzzing (clang libFuzzer); FUZZ_SECONDS bounds each target ------------------------------
# One target per parser of untrusted input: fps.yaml, whitelist.json, apikeys.json, the fps-auth
# and fps-acl line protocols, the fps-acl snapshot. Each run keeps its corpus in build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
FUZZ_WARN := $(filter-out -Wno-format-truncation,$(WARN)) # a GCC-only option
build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(HDRS)
	@mkdir -p build/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined $(FUZZ_WARN) $(DEFS) -I$(SRC_DIR) -o $@ $< $(LIB_SRCS) $(LIBS)
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do mkdir -p build/fuzz/corpus-$$(basename $$f); \
		echo "== $$f ($(FUZZ_SECONDS)s)"; $$f -max_total_time=$(FUZZ_SECONDS) -max_len=70000 build/fuzz/corpus-$$(basename $$f) \
		$$(ls -d tests/fuzz/seeds/$$(basename $$f) 2>/dev/null); done

# ---- running the stack ---------------------------------------------------------------------
# Installs the Debian packages in $(1) that are missing (nothing when all are there, so no root
# is needed then). The dpkg lock timeout waits for another apt instead of failing at once.
# Installing must neither start nor enable a server: Debian's maintainer scripts start and
# enable a package's services (squid.service on 0.0.0.0:3128, avahi-daemon, podman.socket ...).
# A policy-rc.d that answers 101 (unless one is there already) stops the starts; the services
# and sockets the install enabled (new symlinks under $(SYSTEMD_DIR)) are disabled right after
# (timers such as logrotate's are left alone: they serve nothing).
SYSTEMD_DIR ?= /etc/systemd/system
POLICY_RC_D ?= /usr/sbin/policy-rc.d
define apt_install
	@missing=""; for p in $(1); do [ "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" = "install ok installed" ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
		units() { find $(SYSTEMD_DIR) -mindepth 2 -maxdepth 2 -path '*.wants/*' \( -name '*.service' -o -name '*.socket' \) \
			-printf '%f\n' 2>/dev/null | sort -u; }; \
		before=$$(units); policy=""; \
		if [ ! -e $(POLICY_RC_D) ]; then policy=$(POLICY_RC_D); printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy; fi; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing; rc=$$?; \
		[ -z "$$policy" ] || rm -f $$policy; \
		for u in $$(units); do case " $$(echo $$before) " in *" $$u "*) continue;; esac; \
			echo "installing enabled $$u: disabling it (FPS runs its own Squid and needs no other server)"; \
			systemctl disable "$$u" >/dev/null 2>&1; find $(SYSTEMD_DIR) -path "*.wants/$$u" -delete; \
		done; exit $$rc; fi
endef

deps:
	$(call apt_install,$(DEB_PKGS))
test-deps:
	$(call apt_install,$(DEB_PKGS) $(TEST_PKGS))

run: deps all
	exec examples/run.sh

# The benchmark also needs an origin, the alternatives it compares against, and a plotter.
BENCH_PKGS := nginx-light tinyproxy gnuplot-nox valgrind
bench-deps: deps
	$(call apt_install,$(BENCH_PKGS))

bench: bench-deps all
	$(MAKE) -C bench run
bench-quick: bench-deps all
	$(MAKE) -C bench quick

# ---- the container image (Debian's podman, no registry: the base comes from debootstrap) -----
# `make image` builds deploy/Dockerfile as $(IMAGE) (see deploy/image/build.sh).
IMAGE      ?= localhost/fps:$(VERSION)
IMAGE_PKGS := podman buildah debootstrap runc
image-deps:
	$(call apt_install,$(IMAGE_PKGS))
image: image-deps
	IMAGE=$(IMAGE) deploy/image/build.sh

# Runs the image as deploy/k8s's DaemonSet runs it, supervise and sidecar layouts, and the
# rolling update of two pods on one node under the load generator's agents (root only).
# Its own tag per checkout, so that two checkouts testing at once never test each other's image.
TEST_IMAGE := localhost/fps-test:$(shell echo '$(CURDIR)' | cksum | cut -d' ' -f1)
test-image: test-deps image-deps $(KUBECTL_DEB)
	$(MAKE) -C bench asan
	IMAGE=$(TEST_IMAGE) deploy/image/build.sh
	FPS_IMAGE=$(TEST_IMAGE) KUBECTL=$(CURDIR)/$(KUBECTL_DEB) LOADGEN=$(CURDIR)/build/bench/asan/loadgen \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/image $(PYTEST_ARGS)

clean:
	rm -rf build
