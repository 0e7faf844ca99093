#!/usr/bin/env bash
# tests/preload/test_exports.sh - what libgreen.so shows the programs it is
# preloaded into.
#
# usage: tests/preload/test_exports.sh BUILD/libgreen.so
#
# (a) the exported (defined, dynamic) symbols are exactly the PL_SYM names
#     of preload/symbols.def plus libgreen_* (the entry points the Python
#     side finds with dlsym): the version script is generated from
#     symbols.def (Makefile, <build dir>/gen/libgreen.map), so this checks
#     the generator end to end, and that no internal symbol and no ev_*
#     (libev is a library of its own, see (d)) comes out of libgreen.so;
# (b) LD_BIND_NOW=1 LD_PRELOAD=<so> /bin/true exits 0 and prints nothing
#     (hard rule 13: the object loads into any program, -z now included);
# (c) no undefined Py*/_Py* symbol (it would break (b) in any non-Python
#     program);
# (d) libev is the shared libev.so.4 (Debian's libev.a is not PIC), the
#     one libgreen_pyXY.so links too, so both drive the hub's loop with
#     the same code.
#
# Prints one "ok ..." or "FAIL ..." line per check and a last line
# "exports: N passed, M failed"; exits 1 if any check failed, 2 on bad usage.

set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD/libgreen.so" >&2
    exit 2
fi

so=$1
here=$(cd "$(dirname "$0")" && pwd)
def="$here/../../preload/symbols.def"
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

finish() {
    echo "exports: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

if [ ! -f "$so" ]; then
    bad "shared object $so not found (run make first)"
    finish
fi
if [ ! -f "$def" ]; then
    bad "symbol list $def not found"
    finish
fi
# LD_PRELOAD needs a path with a slash to skip the library search path.
case $so in
    */*) abs_so=$(cd "$(dirname "$so")" && pwd)/$(basename "$so") ;;
    *) abs_so=$PWD/$so ;;
esac

# ---- (a) exported symbols == symbols.def + libgreen_* ---------------------

# Lines of symbols.def that start with PL_SYM(type, name, ...: the name is
# the second argument. The type may hold spaces ("unsigned int").
sed -n 's/^[[:space:]]*PL_SYM([^,]*,[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*,.*/\1/p' \
    "$def" | LC_ALL=C sort -u >"$tmp/want"

# nm -D --defined-only: "address type name[@version]". Type A entries are
# version-node names from a version script, not symbols a program binds.
if ! nm -D --defined-only "$so" >"$tmp/nm_def" 2>"$tmp/nm_err"; then
    bad "exports: nm -D --defined-only failed: $(head -c 300 "$tmp/nm_err")"
else
    awk 'NF >= 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm_def" |
        LC_ALL=C sort -u >"$tmp/have"
    grep -v '^libgreen_' "$tmp/have" >"$tmp/have_pl" || true
    extra=$(LC_ALL=C comm -13 "$tmp/want" "$tmp/have_pl" | tr '\n' ' ')
    missing=$(LC_ALL=C comm -23 "$tmp/want" "$tmp/have_pl" | tr '\n' ' ')
    nwant=$(wc -l <"$tmp/want")
    napi=$(grep -c '^libgreen_' "$tmp/have" || true)
    leaked_ev=$(grep -E '^ev_' "$tmp/have" | tr '\n' ' ' || true)
    if [ "$nwant" -eq 0 ]; then
        bad "exports: no PL_SYM line found in $def"
    elif [ -n "$extra" ] || [ -n "$missing" ]; then
        msg="exports differ from symbols.def + libgreen_*:"
        [ -n "$extra" ] && msg="$msg exported but not listed: ${extra% }"
        [ -n "$missing" ] && msg="$msg; listed but not exported: ${missing% }"
        [ -n "$leaked_ev" ] && msg="$msg; libev leaks: ${leaked_ev% }"
        bad "$msg"
    else
        ok "exports: exactly the $nwant symbols of symbols.def + $napi libgreen_* (no ev_*)"
    fi
fi

# ---- (b) loads into /bin/true with LD_BIND_NOW=1 ---------------------------

out=$(LD_BIND_NOW=1 LD_PRELOAD="$abs_so" /bin/true 2>&1)
rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    bad "bind-now: LD_BIND_NOW=1 LD_PRELOAD=$abs_so /bin/true: exit $rc, output: $(printf '%s' "$out" | head -c 500)"
else
    ok "bind-now: LD_BIND_NOW=1 LD_PRELOAD=<so> /bin/true exits 0, no output"
fi

# ---- (c) no undefined Python symbol ----------------------------------------

if ! nm -D --undefined-only "$so" >"$tmp/nm_undef" 2>"$tmp/nm_err"; then
    bad "no-python: nm -D --undefined-only failed: $(head -c 300 "$tmp/nm_err")"
else
    py=$(awk '{ n = $NF; sub(/@.*/, "", n); if (n ~ /^_?Py/) print n }' \
        "$tmp/nm_undef" | tr '\n' ' ')
    if [ -n "$py" ]; then
        bad "no-python: undefined Python symbols: ${py% }"
    else
        ok "no-python: no undefined Py*/_Py* symbol"
    fi
fi

# ---- (d) linked against the shared libev.so.4 ------------------------------

if ldd "$so" 2>&1 | grep -Eq '^[[:space:]]*libev\.so\.4 => /'; then
    ok "libev: ldd shows libev.so.4 => $(ldd "$so" | awk '$1 == "libev.so.4" { print $3 }')"
else
    bad "libev: ldd shows no resolved libev.so.4: $(ldd "$so" 2>&1 | tr '\n' ';' | head -c 500)"
fi

finish
