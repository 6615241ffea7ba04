#!/usr/bin/env bash
# Compile QOKit's C state-vector simulator (libcsim.so) into the installed qokit package.
#
#     bench/build_qokit.sh [PYTHON]        (default: python3 on PATH; pass the venv's python)
#
# The PyPI wheel (qokit 0.1.4) ships qokit/fur/c/csim/src/{fur,diagonal,qaoa_fur}.c but neither
# the headers nor libcsim.so, and QOKit then silently falls back to its numpy simulator
# (qokit/fur/c/csim/libpath.py: the C simulator is "available" iff libcsim.so sits next to it).
# This script writes the three headers (plain prototypes of the functions in the .c files, as in
# upstream's fur.h / diagonal.h / qaoa_fur.h) into a scratch directory, compiles the shipped
# sources with
#     gcc -O3 -march=native -fopenmp -fPIC -shared
# (upstream's makefile uses -fopenmp -fPIC without -O; the sources parallelise with
# `#pragma omp parallel for`) and installs the library where libpath.py looks. Idempotent: it
# rebuilds only when the sources, flags or compiler changed (a stamp beside the library).
set -euo pipefail

PY="${1:-${PYTHON:-python3}}"
CC="${CC:-gcc}"
CFLAGS="-O3 -march=native -fopenmp -fPIC -Wall"

# Locate the package without importing it (importing qokit pulls in qiskit, pytket, numba.cuda).
CSIM="$("$PY" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("qokit")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("qokit is not installed for this interpreter")
print(pathlib.Path(list(spec.submodule_search_locations)[0]) / "fur" / "c" / "csim")
EOF
)"
SRC="$CSIM/src"
LIB="$CSIM/libcsim.so"
STAMP="$CSIM/libcsim.so.build"
for f in fur.c diagonal.c qaoa_fur.c; do
    [ -f "$SRC/$f" ] || { echo "build_qokit: $SRC/$f not found" >&2; exit 1; }
done

WANT="$(cat "$SRC/fur.c" "$SRC/diagonal.c" "$SRC/qaoa_fur.c" | sha256sum | cut -d' ' -f1) $CC $("$CC" -dumpfullversion) $CFLAGS"
if [ -f "$LIB" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "build_qokit: $LIB is up to date"
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/fur.h" <<'EOF'
#pragma once
#include <stddef.h>
void furx_all(double* a_real, double* a_imag, double theta, unsigned int n_qubits, size_t n_states);
void furxy(double* a_real, double* a_imag, double theta, unsigned int q1, unsigned int q2, size_t n_states);
void furxy_ring(double* a_real, double* a_imag, double theta, unsigned int n_qubits, size_t n_states);
void furxy_complete(double* a_real, double* a_imag, double theta, unsigned int n_qubits, size_t n_states);
EOF
cat >"$TMP/diagonal.h" <<'EOF'
#pragma once
#include <stddef.h>
void apply_diagonal(double* sv_real, double* sv_imag, double theta, double* const diag, size_t n);
EOF
cat >"$TMP/qaoa_fur.h" <<'EOF'
#pragma once
#include <stddef.h>
void apply_qaoa_furx(double* sv_real, double* sv_imag, double* const gammas, double* const betas, double* const hc_diag, unsigned int n_qubits, size_t n_states, size_t n_layers);
void apply_qaoa_furxy_ring(double* sv_real, double* sv_imag, double* const gammas, double* const betas, double* const hc_diag, unsigned int n_qubits, size_t n_states, size_t n_layers, size_t n_trotters);
void apply_qaoa_furxy_complete(double* sv_real, double* sv_imag, double* const gammas, double* const betas, double* const hc_diag, unsigned int n_qubits, size_t n_states, size_t n_layers, size_t n_trotters);
EOF

# shellcheck disable=SC2086
"$CC" $CFLAGS -I"$TMP" -shared "$SRC/qaoa_fur.c" "$SRC/fur.c" "$SRC/diagonal.c" -o "$TMP/libcsim.so"
for sym in apply_qaoa_furx furxy apply_qaoa_furxy_ring apply_qaoa_furxy_complete; do
    nm -D --defined-only "$TMP/libcsim.so" | grep -qw "$sym" \
        || { echo "build_qokit: $sym missing from libcsim.so" >&2; exit 1; }
done
install -m 0755 "$TMP/libcsim.so" "$LIB"
echo "$WANT" >"$STAMP"
echo "build_qokit: built $LIB ($CC $CFLAGS)"
