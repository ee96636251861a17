#!/usr/bin/env bash
# The example project (what `make demo` runs): builds, its tests pass, and a
# change to a header rebuilds what includes it and nothing else.
source "$(dirname "$0")/lib.bash"

: "${VITTE_SOURCE_DIR:?}"
command -v cc >/dev/null || { echo "no C compiler: skipped"; exit 0; }
new_project c_project
cp -R "$VITTE_SOURCE_DIR/examples/c_project/." .

vt build
expect_rc 0 "build"
check "the calculator works" [ "$(./build/calc '2 * (3 + 4)')" = 14 ]
vt test -v
expect_rc 0 "test"
expect_out "9 cases, 0 failed"
vt build
expect_out "0 ran" "nothing to do"
echo '/* a comment */' >>src/main.c
vt build --explain
expect_out "explain: compile:main: input .*src/main.c changed"
expect_no_out "explain: compile:parse" "the other file is not compiled again"
finish
