# pyws — the two commands a newcomer needs:
#   make demo   builds everything and runs the chat server on http://127.0.0.1:8000/
#   make test   builds everything and runs the whole test suite (C tests, pytest, sanitizers)
#
# Both create .venv (Python venv) and install pyws into it in editable mode with its test
# dependencies from PyPI. Needs: python3 (>= 3.9) with venv, a C compiler (gcc or clang), make.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CC ?= cc
CSRCS := $(wildcard csrc/*.c)
CHDRS := $(wildcard csrc/*.h)
# The event half (sockets, loop, topics); the protocol half is everything else and builds alone.
EVENT_SRCS := $(wildcard csrc/poller_*.c) csrc/loop.c csrc/listen.c csrc/wake.c csrc/conn.c csrc/ws.c csrc/upgrade.c csrc/net.c csrc/timer.c csrc/topics.c csrc/client.c csrc/tls.c csrc/transport_tcp.c csrc/state.c csrc/stats.c
PROTOCOL_SRCS := $(filter-out $(EVENT_SRCS),$(CSRCS))
CFLAGS_TEST := -std=c11 -O1 -g -Wall -Wextra -Werror -DPYWS_CHECK_STATES -Icsrc -fsanitize=address,undefined -fno-sanitize-recover=undefined
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: all demo test test-c test-py test-poll test-asan bench lint clean fuzz conformance

all: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py build_ffi.py $(CSRCS) $(CHDRS)
	@./scripts/check-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,bench]'
	@touch $@

demo: $(VENV)/.installed
	$(PY) examples/chat_server.py --host $(HOST) --port $(PORT)

test: test-c test-py test-poll test-asan lint

# C unit tests: each csrc/tests/test_*.c is a standalone program built with ASan+UBSan.
build/c/%: csrc/tests/%.c $(CSRCS) $(CHDRS) $(wildcard csrc/tests/*.h)
	@mkdir -p build/c
	$(CC) $(CFLAGS_TEST) $(PROTOCOL_SRCS) $< -o $@ -lz -lpthread

C_TESTS := $(patsubst csrc/tests/%.c,build/c/%,$(wildcard csrc/tests/test_*.c))

# Each test runs once as is (AUTO = the best kernel), then once per kernel this CPU runs, forced
# with PYWS_FORCE_IMPL (test_utf8_simd --impls lists them: scalar sse2 sse4 avx2 avx512 here).
# Every test runs on the best kernels the CPU has and on the scalar ones; the kernel tests also
# on each SIMD path the CPU runs (PYWS_FORCE_IMPL), the others use the kernels only through
# the dispatch those runs already cover.
KERNEL_TESTS := build/c/test_kernels build/c/test_utf8_simd
test-c: $(C_TESTS)
	@impls="$$(build/c/test_utf8_simd --impls)" || exit 1; \
	for t in $(C_TESTS); do echo "== $$t"; $$t || exit 1; \
	  case " $(KERNEL_TESTS) " in *" $$t "*) paths="$$impls";; *) paths=scalar;; esac; \
	  for i in $$paths; do \
	    PYWS_FORCE_IMPL=$$i $$t > /dev/null || { echo "$$t failed with PYWS_FORCE_IMPL=$$i"; exit 1; }; \
	  done; \
	done

test-py: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The same Python suite against the poll(2) backend (compiled into a separate directory).
test-poll: $(VENV)/.installed
	rm -rf build/poll && mkdir -p build/poll
	PYWS_POLLER=poll $(PY) build_ffi.py --outdir build/poll > /dev/null
	cp pyws/*.py pyws/py.typed build/poll/pyws/
	cd build/poll && PYWS_EXPECT_BACKEND=poll ../../$(PY) -m pytest -q -p no:cacheprovider ../../tests

# The Python suite against a build with AddressSanitizer and UndefinedBehaviorSanitizer (and
# PYWS_CHECK_STATES: an illegal connection state change aborts; build_ffi.py defines it).
test-asan: $(VENV)/.installed
	rm -rf build/asan && mkdir -p build/asan
	PYWS_SANITIZE=1 $(PY) build_ffi.py --outdir build/asan > /dev/null
	cp pyws/*.py pyws/py.typed build/asan/pyws/
	cd build/asan && PYWS_SANITIZED=1 ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ../../$(PY) -m pytest -q -p no:cacheprovider -m "not slow" ../../tests

lint: $(VENV)/.installed
	$(PY) -m mypy --strict pyws

bench: $(VENV)/.installed
	$(PY) -m pytest bench --benchmark-only -q

clean:
	rm -rf build dist *.egg-info pyws/_pyws*.so pyws/_pyws.c .pytest_cache .mypy_cache

# Coverage-guided fuzzing of the parsers with libFuzzer (needs clang: apt-get install clang);
# fuzz_utf8 compares every UTF-8 kernel the CPU runs with the scalar one.
# FUZZ_SECONDS bounds each harness. Each reads csrc/fuzz/seeds/<harness>/ too when it exists
# (hand-made inputs, such as valid compressed frames, that random bytes rarely find).
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p build/fuzz
	@for h in session http deflate utf8; do \
	  clang -g -O1 -Icsrc -fsanitize=fuzzer,address,undefined $(PROTOCOL_SRCS) csrc/fuzz/fuzz_$$h.c -o build/fuzz/fuzz_$$h -lz || exit 1; \
	  mkdir -p build/fuzz/corpus_$$h; \
	  build/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus_$$h \
	    $$(test -d csrc/fuzz/seeds/$$h && echo csrc/fuzz/seeds/$$h) || exit 1; \
	done

# The Autobahn|Testsuite against every handler style of the server and both clients, plain
# and TLS; writes the results into docs/conformance.md. Not part of `make test`: an hour or
# more. The suite runs on Python 2.7 only (scripts/autobahn installs it into build/autobahn/py2;
# docs/conformance.md says why). ROLES= and MODES= narrow it (see scripts/conformance).
conformance: $(VENV)/.installed
	PY=$(PY) scripts/conformance
