#!/usr/bin/env bash
# Regenerates the man pages in man/ with faas-mangen (from src/cli.rs and etc/faas/*.toml).
# With --check, fails instead when the committed pages differ from a fresh generation (CI).
# Either way the pages are then linted with groff; any warning fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --check ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cargo run --quiet --bin faas-mangen -- "$tmp"
    if ! diff -ru man "$tmp"; then
        echo "gen-man: man/ differs from the generated pages; run scripts/gen-man.sh and commit" >&2
        exit 1
    fi
else
    cargo run --quiet --bin faas-mangen -- man
fi
warnings=$(groff -man -Tutf8 -ww -z man/*.[58] 2>&1) || { echo "$warnings" >&2; exit 1; }
if [ -n "$warnings" ]; then
    echo "$warnings" >&2
    exit 1
fi
