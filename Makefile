# vitte — this Makefile only drives CMake and CTest; CMakeLists.txt is the build.
#
#   make               debug build in build/debug (asserts on)
#   make test          debug build, then every test (ctest -j2)
#   make demo          release build, then vitte builds and tests examples/c_project
#   make bench         release build with benchmarks, then bench/run
#   make bench-sched   the same, one layer (bench/run --layer sched)
#   make bench-async   the same, the async layer, with its Go and Boost.Context peers
#   make asan          ASan+UBSan build in build/asan, all tests
#   make tsan          TSan build in build/tsan, all tests
#   make valgrind      debug build in build/valgrind, tests under Valgrind
#   make ucontext      fibers on the portable ucontext switch: async tests
#   make install       release build, installed into PREFIX (/usr/local)
#   make clean         remove build/
#
# Variables: PREFIX, JOBS (build parallelism), CTEST_JOBS (2), CTEST_ARGS
# (extra ctest arguments, e.g. CTEST_ARGS='-R sched/' or '-L unit'),
# CMAKE_ARGS (extra cmake arguments). CC picks the compiler when a build
# directory is first configured (make clean to switch).

PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_JOBS ?= 2
CTEST_ARGS ?=
CMAKE_ARGS ?=
CMAKE      ?= cmake
CTEST      ?= ctest

# Installs what a fresh Debian machine lacks (and says so); silent otherwise.
DEPS = scripts/install-deps --check >/dev/null 2>&1 || scripts/install-deps

# $(call configure,DIR,ARGS) then $(call build,DIR)
configure = $(CMAKE) -S . -B $(1) $(2) $(CMAKE_ARGS) >/dev/null
build = $(CMAKE) --build $(1) -j $(JOBS)
ctest = $(CTEST) --test-dir $(1) -j $(CTEST_JOBS) --output-on-failure --no-tests=error $(CTEST_ARGS)

# The harness's per-test deadline (60 s) is scaled by VT_TEST_TIMEOUT_MULT;
# each mode has its default, the environment overrides it, and the same value
# scales ctest's backstop TIMEOUT (configured into the build directory).
all debug test:   export VT_TEST_TIMEOUT_MULT ?= 1
release install:  export VT_TEST_TIMEOUT_MULT ?= 1
asan:             export VT_TEST_TIMEOUT_MULT ?= 2
ucontext:         export VT_TEST_TIMEOUT_MULT ?= 2
tsan:             export VT_TEST_TIMEOUT_MULT ?= 4
valgrind:         export VT_TEST_TIMEOUT_MULT ?= 20
MULT = -DVITTE_TEST_TIMEOUT_MULT=$(VT_TEST_TIMEOUT_MULT)

DEBUG    = -DCMAKE_BUILD_TYPE=Debug -DVITTE_SANITIZE= -DVITTE_TEST_WRAPPER= $(MULT)
RELEASE  = -DCMAKE_BUILD_TYPE=Release -DVITTE_SANITIZE= -DVITTE_TEST_WRAPPER= $(MULT)
ASAN     = -DCMAKE_BUILD_TYPE=Debug -DVITTE_SANITIZE=address $(MULT)
TSAN     = -DCMAKE_BUILD_TYPE=Debug -DVITTE_SANITIZE=thread $(MULT)
# A forked child (tests that fork) must keep its own exit status: valgrind would
# run its leak check at the child's _exit and replace the status on a report.
VALGRIND_CMD = valgrind;--error-exitcode=1;--leak-check=full;--errors-for-leak-kinds=definite;--quiet;--child-silent-after-fork=yes
VALGRIND = -DCMAKE_BUILD_TYPE=Debug -DVITTE_SANITIZE= $(MULT) "-DVITTE_TEST_WRAPPER=$(VALGRIND_CMD)"

export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS  ?= halt_on_error=1:second_deadlock_stack=1

.PHONY: all debug release test demo bench asan tsan valgrind ucontext install clean help

all: debug

help:
	@sed -n '3,14p' Makefile | sed 's/^# \{0,1\}//'

debug:
	$(call configure,build/debug,$(DEBUG))
	$(call build,build/debug)

release:
	$(call configure,build/release,$(RELEASE))
	$(call build,build/release)

test:
	@$(DEPS)
	@$(MAKE) --no-print-directory debug
	$(call ctest,build/debug)

demo:
	@$(DEPS)
	@$(MAKE) --no-print-directory release
	scripts/demo build/release

bench:
	@$(DEPS)
	@$(MAKE) --no-print-directory release CMAKE_ARGS="$(CMAKE_ARGS) -DVITTE_BENCH=ON"
	@test -x bench/run || { echo "make bench: bench/run is missing" >&2; exit 1; }
	bench/run

bench-%:
	@$(DEPS)
	@$(MAKE) --no-print-directory release CMAKE_ARGS="$(CMAKE_ARGS) -DVITTE_BENCH=ON"
	@test -x bench/run || { echo "make $@: bench/run is missing" >&2; exit 1; }
	bench/run --layer $*

# The build's other context switch (the one platforms without assembly get),
# kept working by running the async layer's tests on it.
ucontext:
	@$(DEPS)
	$(call configure,build/ucontext,$(DEBUG) -DVITTE_CONTEXT=ucontext)
	$(call build,build/ucontext)
	$(CTEST) --test-dir build/ucontext -j $(CTEST_JOBS) --output-on-failure --no-tests=error -L async $(CTEST_ARGS)

asan:
	@$(DEPS)
	$(call configure,build/asan,$(ASAN))
	$(call build,build/asan)
	$(call ctest,build/asan)

tsan:
	@$(DEPS)
	$(call configure,build/tsan,$(TSAN))
	$(call build,build/tsan)
	$(call ctest,build/tsan)

# Stress tests are left out: under Valgrind's one-thread-at-a-time emulation
# they take long and find little that ASan and TSan do not.
valgrind:
	@$(DEPS)
	$(call configure,build/valgrind,$(VALGRIND))
	$(call build,build/valgrind)
	$(call ctest,build/valgrind) -LE stress

install: release
	$(CMAKE) --install build/release --prefix $(PREFIX)

clean:
	rm -rf build
