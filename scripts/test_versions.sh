#!/usr/bin/env bash
# Runs the test suite against each Keras/TensorFlow pair of
# scripts/version_matrix.txt, each in its own virtual environment (made
# once, under $LEARNDROP_MATRIX_DIR, by default ./.venv-matrix/NAME).
#
#   bash scripts/test_versions.sh                   # every pair
#   bash scripts/test_versions.sh oldest            # one pair
#   bash scripts/test_versions.sh oldest -- -n 0    # pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MATRIX="$ROOT/scripts/version_matrix.txt"
DIR="${LEARNDROP_MATRIX_DIR:-$ROOT/.venv-matrix}"
PYTHON="${PYTHON:-python3}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

wanted=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  wanted+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift

summary=()
status=0
while read -r name requirements; do
  case "$name" in "" | \#*) continue ;; esac
  if [ ${#wanted[@]} -gt 0 ] && ! printf '%s\n' "${wanted[@]}" | grep -qx "$name"; then
    continue
  fi
  venv="$DIR/$name"
  stamp="$venv/.installed-$(printf '%s\n' "$requirements" \
    | cat - "$ROOT/setup.cfg" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    # Word splitting is wanted: one requirement per word.
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet $requirements -e "$ROOT[test]"
    touch "$stamp"
  fi
  versions="$("$venv/bin/python" -c 'import keras, numpy, tensorflow as tf
print(f"tensorflow {tf.__version__}, keras {keras.__version__}, numpy {numpy.__version__}")')"
  echo "== $name: $versions"
  start=$SECONDS
  if (cd "$ROOT" && "$venv/bin/python" -m pytest -q -n 2 "$@"); then
    result="passed"
  else
    result="FAILED"
    status=1
  fi
  summary+=("$name ($versions): $result in $((SECONDS - start)) s")
done <"$MATRIX"

echo
printf '%s\n' "${summary[@]}"
exit $status
