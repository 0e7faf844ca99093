# libgreen - one non-recursive Makefile. `make help` lists the targets.
#
# MODE=release (default, -O2 -g, objects in build/), MODE=debug (-O0,
# build/debug/) or MODE=asan (ASan + UBSan, build/asan/). The shipped
# object is always build/libgreen.so from the release mode.

MODE ?= release
CC ?= gcc
PYTHON ?= /usr/bin/python3

ifeq ($(MODE),release)
  B := build
  MODE_CFLAGS := -O2 -g
else ifeq ($(MODE),debug)
  B := build/debug
  MODE_CFLAGS := -O0 -g3
else ifeq ($(MODE),asan)
  B := build/asan
  MODE_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
                 -fno-sanitize-recover=undefined
  MODE_LDFLAGS := -fsanitize=address,undefined
else
  $(error MODE must be release, debug or asan (got '$(MODE)'))
endif

WARN := -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-align=strict \
        -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
        -Wformat=2 -Werror=implicit-function-declaration
CFLAGS := -std=gnu11 -fPIC -fvisibility=hidden -I. -I$(B)/gen -D_GNU_SOURCE \
          -pthread $(WARN) $(MODE_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS := -lev -lm -ldl -pthread

# The version, kept in one place: the first line of debian/changelog. The
# man page, the .deb and the wheel carry it.
VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
# The compiler's multiarch triplet (x86_64-linux-gnu): the launcher also
# looks for libgreen.so in ../lib/TRIPLET/libgreen (the Debian package).
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)

# The build id, baked into libgreen.so and every libgreen_pyXY.so: a hash
# of the names and contents of every file of hub/ (hub/api.def, the table
# the two objects share, included), preload/ and server/. The server
# refuses to import against a libgreen.so of another id (server/api.c).
# The command line may set it (`make BUILD_ID=x`), the environment may
# not (CI systems export a BUILD_ID of their own).
BUILD_ID := $(shell sha256sum $(sort $(wildcard hub/* preload/* server/*)) | \
                    sha256sum | cut -c1-16)

HUB_SRCS := hub/hub.c hub/stack.c hub/wait.c hub/timer.c hub/ident.c hub/mainrole.c hub/ctx_x86_64.S \
            hub/report.c hub/debug.c hub/dump.c hub/unwind.c hub/watchdog.c
PRELOAD_SRCS := preload/real.c preload/fdtab.c preload/io.c preload/sock.c \
                preload/poll.c preload/sleep.c preload/fd.c preload/sem.c \
                preload/thread.c preload/resolve.c \
                preload/child.c preload/signal.c
PARSER_SRCS := server/http_parse.c server/frame.c
BOOT_SRCS := preload/boot.c
PYSERVER_SRCS := server/api.c server/module.c server/greenthread.c server/mainrun.c server/maintstate.c \
                 server/options.c server/wsgi_server.c \
                 server/serve.c server/request.c server/environ.c server/response.c \
                 server/input.c server/filewrapper.c server/log.c \
                 server/park_hooks.c server/tstate.c server/http_parse.c server/frame.c \
                 server/accept.c server/conn.c server/send.c \
                 server/log_format.c server/forwarded.c server/lazy.c \
                 server/debug.c server/pytrace.c

# The Python side is built once per interpreter found: Debian's python3
# and every pyenv 3.10-3.13 build with headers. XY = major, minor.
PY_SYS_VER := $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)
PY_INC_$(PY_SYS_VER) := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
define pyenv_inc
$(if $(PY_INC_$(1)),,$(eval PY_INC_$(1) := $(firstword $(wildcard $(PYENV_ROOT)/versions/$(2).*/include/python$(2)))))
endef
$(foreach v,3.10 3.11 3.12 3.13,$(call pyenv_inc,$(subst .,,$(v)),$(v)))
PY_VERS := $(strip $(foreach v,310 311 312 313,$(if $(wildcard $(PY_INC_$(v))/Python.h),$(v))))
PY_SOS := $(foreach v,$(PY_VERS),$(B)/libgreen_py$(v).so)
TEST_EXTS := $(foreach v,$(PY_VERS),$(B)/tests/ext/py$(v)/gilhold.so)

obj = $(patsubst %.S,$(B)/obj/%.o,$(patsubst %.c,$(B)/obj/%.o,$(1)))
HUB_OBJS := $(call obj,$(HUB_SRCS))
PRELOAD_OBJS := $(call obj,$(PRELOAD_SRCS))
PARSER_OBJS := $(call obj,$(PARSER_SRCS))
BOOT_OBJS := $(call obj,$(BOOT_SRCS))

HUB_TESTS := $(patsubst tests/hub/%.c,$(B)/tests/hub/%,$(wildcard tests/hub/test_*.c))
PRELOAD_TESTS := $(patsubst tests/preload/%.c,$(B)/tests/preload/%,$(wildcard tests/preload/test_*.c))
SERVER_TESTS := $(patsubst tests/server/%.c,$(B)/tests/server/%,$(wildcard tests/server/test_*.c))
UNIT_TESTS := $(HUB_TESTS) $(PRELOAD_TESTS) $(SERVER_TESTS)

.PHONY: all help deps test unit asan asan-full integration matrix regrtest test-deploy bench bench-switch bench-calls \
        bench-parse bench-timer bench-wsgi bench-check bench-publish bench-memory bench-conns run fuzz clean options-doc \
        transparency install faults FORCE man deb wheel test-deb test-wheel
.DEFAULT_GOAL := all

all: $(B)/libgreen.so $(PY_SOS) $(B)/libgreen

help:
	@echo "make              build build/libgreen.so (-O2 -g)"
	@echo "make run          install what is missing, build, serve examples/ on 127.0.0.1:8000"
	@echo "make test         install what is missing, build, run every test (C, ASan, pytest)"
	@echo "make unit         the C unit tests of MODE (default release)"
	@echo "make asan         the C unit tests and the server's pytest suite under"
	@echo "                  AddressSanitizer + UBSan (a report anywhere fails it)"
	@echo "make asan-full    the same with every pytest test"
	@echo "make integration  the pytest suite against build/libgreen.so"
	@echo "make faults       tests/integration/test_faults.py at full size (1,000 clients on 256 fds...)"
	@echo "make matrix       pytest + transparency under python3 and every pyenv 3.10-3.13"
	@echo "make regrtest     CPython's regression tests for the interposed calls, under the preload"
	@echo "make test-deploy  as root: 3 hosts in network namespaces behind nginx, under load (docs/deploy.md)"
	@echo "make transparency CPython's tests inside a green thread vs plainly, verdicts diffed"
	@echo "make bench-switch ns per green thread switch"
	@echo "make bench-calls  ns per interposed call: passed through, ready, parked"
	@echo "make bench-parse  ns per request head parsed"
	@echo "make bench-timer  how late green sleeps end (us)"
	@echo "make bench-wsgi   libgreen next to the Debian WSGI servers: build/bench/results.md, chart.png"
	@echo "                  (BENCH_RUNS, BENCH_QUICK=1, BENCH_ONLY, BENCH_SERVERS: see README)"
	@echo "make bench-check  the benchmark harness works (quick mode, libgreen and the C ceiling)"
	@echo "make bench-publish  copy build/bench's results to docs/bench/ and README's tables"
	@echo "make bench-memory RSS over a million requests"
	@echo "make bench-conns  RSS per idle connection and per request in flight (10,000 each)"
	@echo "make bench        switch + calls + parse microbenchmarks, then bench-wsgi"
	@echo "make fuzz         fuzz the request parser, the chunked decoder and the"
	@echo "                  response framing (FUZZ_SECONDS each, default 60)"
	@echo "make options-doc  rewrite README's server options table from server/options.def"
	@echo "make install      PREFIX/bin/libgreen, LIBDIR/*.so, the man page (PREFIX=/usr/local, DESTDIR)"
	@echo "make deb          build/libgreen_VERSION_ARCH.deb (dpkg-buildpackage), checked by lintian"
	@echo "make wheel        build/wheel/libgreen-VERSION-py3-none-linux_x86_64.whl (no network)"
	@echo "make test-deb     install the .deb, serve an app through its units, purge it (root)"
	@echo "make test-wheel   venvs with the wheel installed serve an app installed in them"
	@echo "make clean        remove build/"
	@echo "Python server modules built for: $(PY_VERS)"
	@echo "MODE=release|debug|asan picks the build flavour (objects under build/)"

deps:
	@scripts/install-deps

# ---- objects and the shared object --------------------------------------

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Rewritten only when the id or the version changes, so only the files
# that include it (preload/boot.c, server/api.c, server/module.c)
# recompile after an edit elsewhere.
$(B)/gen/build_id.h: FORCE
	@mkdir -p $(dir $@)
	@{ echo '#define LIBGREEN_BUILD_ID "$(BUILD_ID)"'; \
	   echo '#define LIBGREEN_VERSION "$(VERSION)"'; } >$@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi
FORCE:

$(BOOT_OBJS): $(B)/gen/build_id.h

# The version script: the names of preload/symbols.def and the libgreen_*
# entry points the Python side finds with dlsym; every other symbol
# libgreen.so defines is local. (libev is not among them: it is the
# shared libev.so.4, which both objects link, so they drive the hub's loop
# with the same code; libgreen.so defines no ev_* symbol to hide.)
$(B)/gen/libgreen.map: preload/symbols.def
	@mkdir -p $(dir $@)
	@set -e; { echo '/* generated from preload/symbols.def by the Makefile */'; \
	   echo '{ global:'; \
	   printf '#define PL_SYM(ret, name, params, args) name;\n#include "%s"\n' $< | \
	       $(CC) -E -P -undef -x c - ; \
	   echo 'libgreen_*;'; \
	   echo 'local: *; };'; } >$@.tmp; \
	 mv -f $@.tmp $@

$(B)/libgreen.so: $(HUB_OBJS) $(PRELOAD_OBJS) $(BOOT_OBJS) $(B)/gen/libgreen.map
	$(CC) -shared $(MODE_LDFLAGS) -Wl,--version-script=$(B)/gen/libgreen.map \
	    -Wl,-z,defs -Wl,-z,now -o $@ $(HUB_OBJS) $(PRELOAD_OBJS) $(BOOT_OBJS) $(LDLIBS)

# server/*.py become bytes that module.c includes. od and sed are
# POSIX and always here (xxd comes with vim).
EMBEDDED_PY := $(wildcard server/*.py)
$(B)/gen/server/%.py.inc: server/%.py
	@mkdir -p $(dir $@)
	od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g' > $@.tmp && mv $@.tmp $@

# The `libgreen` command (server/launcher.c): plain C, no Python headers.
$(B)/libgreen: server/launcher.c
	$(CC) $(filter-out -fPIC,$(CFLAGS)) $(if $(MULTIARCH),-DLG_MULTIARCH='"$(MULTIARCH)"') \
	    $(MODE_LDFLAGS) $< -o $@

# libgreen_pyXY.so: Python symbols stay undefined and resolve against the
# running interpreter; only PyInit_libgreen is exported.
define pyserver
$(B)/obj/py$(1)/%.o: %.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -I$(PY_INC_$(1)) -MMD -MP -c $$< -o $$@

$(B)/obj/py$(1)/server/module.o: $(patsubst %,$(B)/gen/%.inc,$(EMBEDDED_PY))

$(B)/obj/py$(1)/server/lazy.o: $(B)/gen/server/gunicorn.py.inc

$(B)/obj/py$(1)/server/api.o $(B)/obj/py$(1)/server/module.o: $(B)/gen/build_id.h

$(B)/libgreen_py$(1).so: $(patsubst %.c,$(B)/obj/py$(1)/%.o,$(PYSERVER_SRCS))
	$$(CC) -shared $$(MODE_LDFLAGS) -o $$@ $$^ -lev

# a test extension that blocks while holding the GIL (tests/ext/gilhold.c)
$(B)/tests/ext/py$(1)/gilhold.so: tests/ext/gilhold.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -Wno-missing-prototypes -I$(PY_INC_$(1)) -shared -o $$@ $$<
endef
$(foreach v,$(PY_VERS),$(eval $(call pyserver,$(v))))

# ---- C unit tests --------------------------------------------------------
# hub tests link the hub alone; preload tests link hub + preload into the
# test program itself, so its read() is ours exactly as under LD_PRELOAD.

$(B)/tests/hub/%: tests/hub/%.c $(HUB_OBJS) tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP $(MODE_LDFLAGS) $< $(HUB_OBJS) -o $@ $(LDLIBS)

$(B)/tests/preload/%: tests/preload/%.c $(HUB_OBJS) $(PRELOAD_OBJS) tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP $(MODE_LDFLAGS) $< $(HUB_OBJS) $(PRELOAD_OBJS) -o $@ $(LDLIBS)

$(B)/tests/server/%: tests/server/%.c $(PARSER_OBJS) tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP $(MODE_LDFLAGS) $< $(PARSER_OBJS) -o $@ $(LDLIBS)

# The ucontext fallback of hub/ctx.h, built and tested once so it stays
# alive: switching, and unwinding a parked thread's saved context.
$(B)/tests/hub/ucontext_%: tests/hub/test_%.c $(HUB_SRCS) tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MODE_LDFLAGS) -DHUB_CTX_UCONTEXT $< \
	    $(filter %.c,$(HUB_SRCS)) -o $@ $(LDLIBS)

UCONTEXT_TESTS := $(B)/tests/hub/ucontext_switch $(B)/tests/hub/ucontext_dump

unit: $(UNIT_TESTS) $(UCONTEXT_TESTS) $(B)/libgreen.so
	@scripts/run-unit-tests $(B) $(UNIT_TESTS) $(UCONTEXT_TESTS)

# The C unit tests and then pytest against the ASan + UBSan build
# (scripts/asan-pytest says how; a sanitizer report anywhere fails it).
# `make asan` runs the server's tests (ASAN_TESTS: they drive the request
# parser, connections, environ, responses and bodies, the C most exposed
# to what clients send; test_asan.py checks that a report fails the run)
# and stops at the first failure; `make asan-full` runs every test. Only
# $(PYTHON)'s server module is built for it.
ASAN_TESTS ?= tests/integration/test_asan.py \
              $(sort $(wildcard tests/integration/test_server_*.py))
ASAN_PYTEST_ARGS ?= -x
ASAN_PY_OBJS = build/asan/libgreen.so build/asan/libgreen_py$(PY_SYS_VER).so \
               build/asan/libgreen build/asan/tests/ext/py$(PY_SYS_VER)/gilhold.so

asan:
	@$(MAKE) --no-print-directory MODE=asan unit
	@$(MAKE) --no-print-directory MODE=asan $(ASAN_PY_OBJS)
	@PYTHON=$(PYTHON) scripts/asan-pytest $(ASAN_PYTEST_ARGS) $(ASAN_TESTS)

asan-full:
	@$(MAKE) --no-print-directory MODE=asan unit
	@$(MAKE) --no-print-directory MODE=asan $(ASAN_PY_OBJS)
	@PYTHON=$(PYTHON) scripts/asan-pytest tests/integration

# ---- everything --------------------------------------------------------

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory asan
	@tests/preload/test_exports.sh build/libgreen.so
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory bench-check

integration: $(B)/libgreen.so $(PY_SOS) $(TEST_EXTS)
	LIBGREEN_SO=$(abspath build/libgreen.so) $(PYTHON) -m pytest -q tests/integration

# The fault tests at the sizes of the issue (a smaller run is in the suite).
faults: $(B)/libgreen.so $(PY_SOS)
	LIBGREEN_FAULTS_HEAVY=1 LIBGREEN_SO=$(abspath build/libgreen.so) \
	    $(PYTHON) -m pytest -q -s tests/integration/test_faults.py

# The pytest suite and the transparency comparison under Debian's python3
# and every pyenv 3.10-3.13 interpreter found, one version after the other
# (scripts/matrix; a failing version does not stop the others). Ends with
# one line per version; reports in build/matrix/report.md and
# build/transparency/<X.Y.Z>/report.md. MATRIX_PYTHONS picks interpreters.
MATRIX_PYTHONS ?= $(PYTHON) $(wildcard $(PYENV_ROOT)/versions/3.1[0-3].*/bin/python3)
matrix: all $(TEST_EXTS)
	@$(PYTHON) scripts/matrix --pytest-python $(PYTHON) --modules "$(TRANSPARENCY)" $(MATRIX_PYTHONS)

# Several hosts behind nginx (docs/deploy.md): three instances of
# build/libgreen in private network namespaces, nginx running
# docs/deploy/nginx-upstream.conf, load through it while one host is
# reloaded, all are restarted in turn and one is killed. Needs root
# (network namespaces; nginx comes from scripts/install-deps); about
# 30 s. Not part of `make test` (README, "Several hosts behind a load
# balancer"). Exit status 77 (make: Error 77) means skipped, and the
# line before says why.
test-deploy: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/deploy/multihost.py

# CPython's own regression tests for the calls we interpose, run under the
# preload (no hub: everything must behave exactly as without libgreen).
# Needs Debian's libpython3.11-testsuite. test_socket is left out of the
# default list: its VSOCK test fails on machines without vsock support,
# with or without the preload (the other 716 of its tests match).
REGRTESTS ?= test_threading test_subprocess test_select test_selectors \
             test_time test_signal test_fcntl test_poll test_epoll test_os \
             test_asyncio test_ssl
regrtest: all
	LD_PRELOAD=$(abspath build/libgreen.so) $(PYTHON) -m test -j2 --timeout 300 $(REGRTESTS)

# CPython's tests run inside one green thread and plainly, verdicts diffed
# per test (scripts/transparency/compare; expected differences, each with
# its reason, in scripts/transparency/expected.txt). Report:
# build/transparency/<X.Y.Z>/report.md. TRANSPARENCY="test_x ..." picks modules.
transparency: all
	$(PYTHON) scripts/transparency/compare --python $(PYTHON) $(TRANSPARENCY)

# ---- benchmarks, fuzzing, running -----------------------------------------

$(B)/bench/%: scripts/bench/%.c $(HUB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(HUB_OBJS) -o $@ $(LDLIBS)

bench-switch: $(B)/bench/bench_switch
	@$(B)/bench/bench_switch

bench-timer: $(B)/bench/bench_timer
	@$(B)/bench/bench_timer

# links the preload objects too, so its calls are interposed (as the
# preload unit tests are built)
$(B)/bench/bench_calls: scripts/bench/bench_calls.c $(HUB_OBJS) $(PRELOAD_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(HUB_OBJS) $(PRELOAD_OBJS) -o $@ $(LDLIBS)

bench-calls: $(B)/bench/bench_calls
	@$(B)/bench/bench_calls

$(B)/bench/bench_http_parse: scripts/bench/bench_http_parse.c $(PARSER_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(PARSER_OBJS) -o $@

bench-parse: $(B)/bench/bench_http_parse
	@$(B)/bench/bench_http_parse

# The bare C server `make bench` measures as the ceiling of the load
# generator (scripts/bench/ceiling.c; no hub, no libgreen).
build/bench/ceiling: scripts/bench/ceiling.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Wextra -o $@ $<

# libgreen side by side with the Debian-packaged WSGI servers
# (scripts/bench/side-by-side; `scripts/bench/side-by-side --help`).
bench-wsgi: deps
	@$(MAKE) --no-print-directory all build/bench/ceiling
	@$(PYTHON) scripts/bench/side-by-side

bench-check: all build/bench/ceiling
	LIBGREEN_SO=$(abspath build/libgreen.so) $(PYTHON) -m pytest -q tests/bench

# A finished run (build/bench) into docs/bench/ and README's tables.
bench-publish:
	@$(PYTHON) scripts/bench/side-by-side --publish

bench-memory: all
	@scripts/bench/memory-soak

bench-conns: all
	@scripts/bench/memory-conns

bench: bench-switch bench-calls bench-parse bench-wsgi

# Every fuzz target (fuzz/fuzz_*.c) for FUZZ_SECONDS each (scripts/fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# README's "Server options" table, from server/options.def through the
# built module (tests/integration/test_server_options.py checks it).
options-doc: $(B)/libgreen.so $(PY_SOS)
	LIBGREEN_SO=$(abspath $(B)/libgreen.so) $(PYTHON) scripts/gen-options-doc

# libgreen(1), from the command's own flag table (scripts/gen-manpage).
man: $(B)/libgreen.1
$(B)/libgreen.1: $(B)/libgreen.so $(PY_SOS) scripts/gen-manpage debian/changelog
	LIBGREEN_SO=$(abspath $(B)/libgreen.so) $(PYTHON) scripts/gen-manpage \
	    --version $(VERSION) --out $@

# The command, the objects it loads and its man page. The launcher finds
# libgreen.so in ../lib/libgreen or ../lib/TRIPLET/libgreen relative to
# itself, so LIBDIR is one of those two; libgreen.so finds its
# libgreen_pyXY.so in its own directory.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib/libgreen
install: all man
	@case '$(LIBDIR)' in '$(PREFIX)/lib/libgreen'|'$(PREFIX)/lib/$(MULTIARCH)/libgreen') ;; \
	 *) echo 'make install: LIBDIR must be $(PREFIX)/lib/libgreen or' \
	         '$(PREFIX)/lib/$(MULTIARCH)/libgreen, where $(PREFIX)/bin/libgreen looks' >&2; \
	    exit 2;; esac
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(B)/libgreen $(DESTDIR)$(PREFIX)/bin/libgreen
	install -m 644 $(B)/libgreen.so $(PY_SOS) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(B)/libgreen.1 $(DESTDIR)$(PREFIX)/share/man/man1/libgreen.1

# ---- packages (issue 11; README "Installing from a package") -------------

# The Debian package, built by dpkg-buildpackage from a copy of this tree
# (its outputs land next to the tree it builds), then checked by lintian.
deb:
	@scripts/build-deb $(VERSION)

# One wheel for every CPython whose server module was built (see
# packaging/wheel/setup.py for why one, not one per version).
wheel: all
	@scripts/build-wheel $(VERSION) $(B) $(PY_SOS)

# As root: installs the .deb with apt-get, serves an app through its
# units, purges it, checks nothing is left. Changes the system for a
# minute, so not part of `make test`.
test-deb: deb
	@if [ -d /run/systemd/system ]; then echo "test-deb: systemd runs: the app is served by systemctl"; \
	 else echo "test-deb: systemd is not PID 1: the test runs the installed units' ExecStart= as systemd would"; fi
	$(PYTHON) -m pytest -q tests/package/test_deb.py

test-wheel: wheel
	$(PYTHON) -m pytest -q tests/package/test_wheel.py

run: deps
	@$(MAKE) --no-print-directory all
	cd examples && LD_PRELOAD=$(abspath build/libgreen.so) $(PYTHON) wsgi.py

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
