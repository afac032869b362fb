#!/usr/bin/env bash
# Fails when a tracked C/C++ file differs from what .clang-format makes of it (clang-format 14).
# Usage: tools/check_format.sh   (lists the drifting files; to fix one: clang-format-14 -i FILE)
set -euo pipefail
cd "$(dirname "$0")/.."

# The style is pinned to Debian 12's clang-format 14: other versions format some constructs
# differently, so a file clean under one would drift under another.
clang_format=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" >/dev/null && "$candidate" --version | grep -q 'version 14\.'; then
    clang_format=$candidate
    break
  fi
done
if [ -z "$clang_format" ]; then
  echo "check_format: clang-format 14 not found (tools/setup.sh installs it)" >&2
  exit 2
fi

mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c')
drifting=()
for f in "${files[@]}"; do
  "$clang_format" --style=file --dry-run -Werror "$f" >/dev/null 2>&1 || drifting+=("$f")
done

if [ ${#drifting[@]} -gt 0 ]; then
  echo "check_format: ${#drifting[@]} of ${#files[@]} files differ from $clang_format's output:" >&2
  printf '  %s\n' "${drifting[@]}" >&2
  echo "check_format: run '$clang_format -i FILE...' on them" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files match .clang-format ($clang_format)" >&2
