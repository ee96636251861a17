# Sourced by the command's tests (tests/cli/*.sh). ctest gives each script
# $VITTE (the command) and $VITTE_TEST_TMP (a fresh scratch directory).
set -euo pipefail

: "${VITTE:?run through ctest, which sets VITTE}"
: "${VITTE_TEST_TMP:?run through ctest, which sets VITTE_TEST_TMP}"

TEST_NAME=$(basename "$0" .sh)
failures=0
checks=0

fail() {
    echo "FAIL [$TEST_NAME] $*" >&2
    failures=$((failures + 1))
}

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
    local what=$1
    shift
    checks=$((checks + 1))
    if ! "$@"; then
        fail "$what"
    fi
}

# A project directory of its own: cd into it.
new_project() {
    PROJECT=$VITTE_TEST_TMP/$1
    rm -rf "$PROJECT"
    mkdir -p "$PROJECT"
    cd "$PROJECT"
}

# vt ARGS...: runs vitte, output in $OUT (stdout+stderr), status in $RC.
vt() {
    set +e
    OUT=$("$VITTE" "$@" 2>&1 </dev/null)
    RC=$?
    set -e
}

expect_rc() {
    checks=$((checks + 1))
    if [[ $RC != "$1" ]]; then
        fail "${2:-exit status}: expected $1, got $RC; output:"
        printf '%s\n' "$OUT" | sed 's/^/    /' >&2
    fi
}

expect_out() {
    checks=$((checks + 1))
    if ! grep -qE -- "$1" <<<"$OUT"; then
        fail "${2:-output} should match /$1/; output:"
        printf '%s\n' "$OUT" | sed 's/^/    /' >&2
    fi
}

expect_no_out() {
    checks=$((checks + 1))
    if grep -qE -- "$1" <<<"$OUT"; then
        fail "${2:-output} should not match /$1/; output:"
        printf '%s\n' "$OUT" | sed 's/^/    /' >&2
    fi
}

# How many lines of file $1 are exactly $2.
count_lines() {
    [[ -f $1 ]] || { echo 0; return; }
    grep -cx -- "$2" "$1" || true
}

finish() {
    if ((failures)); then
        echo "[$TEST_NAME] $failures of $checks checks failed" >&2
        exit 1
    fi
    echo "[$TEST_NAME] $checks checks passed"
}
