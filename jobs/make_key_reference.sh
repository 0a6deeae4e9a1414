#!/usr/bin/env bash
# Writes docs/keys.md, the YAML key reference, from the schema (qforge config keys --markdown).
# Usage: bash jobs/make_key_reference.sh [QFORGE_BINARY]   (default build/qforge)
set -euo pipefail
cd "$(dirname "$0")/.."
qforge=${1:-build/qforge}
{
  printf '# Every key of the YAML experiment\n\n'
  printf 'Generated from the schema (src/config/schema.h) by `qforge config keys --markdown`; the Python\n'
  printf 'settings classes come from the same schema (`qforge config schema`). Do not edit by hand:\n'
  printf '`tests/cli/test_cli.py::test_key_reference_is_the_schemas` fails when this page and the schema part.\n'
  printf 'Regenerate it with `bash jobs/make_key_reference.sh`.\n\n'
  "$qforge" config keys --markdown
} > docs/keys.md
echo "wrote docs/keys.md"
