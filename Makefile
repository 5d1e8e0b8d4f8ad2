# FPS: one Makefile. `make` builds build/fps-controller, build/fps-acl and build/fps-auth.
# `make test` builds ASan/UBSan variants under build/asan/ and runs unit and integration tests.
# Every fps-controller/*.c other than the three *main.c files goes into libfps.a, so a new
# module needs no edit here.

CC       ?= gcc
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
PYTHON   ?= /usr/bin/python3
DEB_PKGS := build-essential clang squid stunnel4 curl openssl libssl-dev libcjson-dev libyaml-dev \
            libmicrohttpd-dev libcmocka-dev python3-pytest python3-yaml clang-format cppcheck prometheus \
            chromium

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

.PHONY: all asan test unit integration lint format run deps bench-deps fuzz bench bench-quick clean compdb

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

test: all asan unit integration
	@echo "make test: all suites passed"

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# Integration tests drive the sanitizer binaries through real Squid, stunnel, curl and origins.
integration: all asan
	$(MAKE) -C bench all asan
	FPS_BIN_DIR=$(CURDIR)/build/asan LOADGEN=$(CURDIR)/build/bench/asan/loadgen \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration tests/deploy bench/tests $(PYTEST_ARGS)

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
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(HDRS)
	@mkdir -p build/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined $(WARN) $(DEFS) -I$(SRC_DIR) -o $@ $< $(LIB_SRCS) $(LIBS)
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do mkdir -p build/fuzz/corpus-$$(basename $$f); \
		echo "== $$f ($(FUZZ_SECONDS)s)"; $$f -max_total_time=$(FUZZ_SECONDS) -max_len=70000 build/fuzz/corpus-$$(basename $$f); done

# ---- running the stack ---------------------------------------------------------------------
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

run: deps all
	exec examples/run.sh

# The benchmark also needs an origin, the alternatives it compares against, and a plotter.
BENCH_PKGS := nginx-light tinyproxy gnuplot-nox
bench-deps: deps
	@missing=""; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

bench: bench-deps all
	$(MAKE) -C bench run
bench-quick: bench-deps all
	$(MAKE) -C bench quick

clean:
	rm -rf build
