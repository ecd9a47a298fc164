#!/usr/bin/env bash
# Runs `--check-config` of every daemon on the shipped config files (etc/faas, or the directory
# given as $1), with no FAAS_<DAEMON>_* variables set, so a broken shipped file fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export FAAS_CONFIG_DIR=${1:-etc/faas}
while read -r var; do
    unset "$var"
done < <(compgen -e | grep -E '^FAAS_(GATEWAY|DISPATCHER|WORKER)_' || true)
for daemon in gateway dispatcher worker; do
    if ! out=$(cargo run --quiet --bin "faas-$daemon" -- --check-config); then
        echo "check-config: faas-$daemon rejects $FAAS_CONFIG_DIR/$daemon.toml" >&2
        exit 1
    fi
    echo "check-config: faas-$daemon: $(grep -c ' = ' <<<"$out") settings OK"
done
