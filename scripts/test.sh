#!/usr/bin/env bash
# `make test`: the whole suite, in two phases.
#
#  1. In parallel: pytest-xdist, `-n 2 --dist loadgroup`, every test not marked `serial`. Each worker has
#     its own one-node sandbox (tests/conftest.py's `sandbox`: a unique name, its own registry port); the
#     tests of the 3-node sandbox are one group (`nodes3`), run by one worker, in order, on one sandbox.
#  2. Alone: the tests marked `serial`. They measure the traffic through the front while stackpatch runs
#     (0 failed requests, latency), so they do not share the machine's cores with other tests.
#
# The 3-node sandbox is made once, by the first phase's first multi-node test, in a directory this script
# makes (STACKPATCH_TEST_NODES3_DIR: tests/conftest.py's `nodes3` then keeps it), and used again by the
# second phase's ship under load; the test marked `nodes3_last` (serial too) takes it down and checks what
# it leaves. Whatever happens (a failure, an interrupt, a test deselected), this script's exit runs
# `sandbox down` on that directory if a sandbox is still there, then removes the directory.
#
# Both phases run even when the first one has failures; the exit status is then the first failure's.
# An interrupted or broken first phase (pytest exit 2-4) stops here. PYTEST_ARGS (make test
# PYTEST_ARGS='-k fault') is passed to both phases; a phase with nothing selected (exit 5) is not a failure.
# TEST_WORKERS=N sets the first phase's workers (default 2, one per core here; 0 runs it without xdist).
set -uo pipefail
cd "${0%/*}/.."
py=.venv/bin/python   # the venv `make setup` made
workers="${TEST_WORKERS:-2}"
common=(-q -p no:cacheprovider --durations=20)
xdist=(-n "$workers" --dist loadgroup)
[ "$workers" = 0 ] && xdist=()

n3=$(mktemp -d "${TMPDIR:-/tmp}/stackpatch-test-nodes-XXXXXX")
export STACKPATCH_TEST_NODES3_DIR="$n3/sandbox"
down_nodes3() {
    if [ -e "$n3/sandbox/state.json" ]; then
        echo "== the 3-node sandbox is still up: sandbox down --dir $n3/sandbox"
        if ! .venv/bin/stackpatch sandbox down --dir "$n3/sandbox" >&2; then
            echo "make test: sandbox down failed: run '.venv/bin/stackpatch sandbox down --dir $n3/sandbox' (as root)" >&2
            return
        fi
    fi
    rm -rf "$n3"
}
trap down_nodes3 EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
echo "== test phase 1 of 2: in parallel ($workers workers), every test not marked serial"
"$py" -m pytest "${common[@]}" -m "not bench and not serial" "${xdist[@]}" "$@"
a=$?
echo "== test phase 1 ended (exit $a) after $((SECONDS - t0)) s"
case $a in 0|1|5) ;; *) exit "$a" ;; esac

t1=$SECONDS
echo "== test phase 2 of 2: alone, the tests marked serial (they measure the traffic)"
"$py" -m pytest "${common[@]}" -m "serial and not bench" "$@"
b=$?
echo "== test phase 2 ended (exit $b) after $((SECONDS - t1)) s; the suite took $((SECONDS - t0)) s"

if [ "$a" = 5 ] && [ "$b" = 5 ]; then
    echo "make test: no test selected (check PYTEST_ARGS)" >&2
    exit 5
fi
for rc in "$a" "$b"; do
    case $rc in 0|5) ;; *) exit "$rc" ;; esac
done
exit 0
