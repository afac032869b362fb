#!/bin/sh
# Guards against the classic multi-ISA ODR trap: an inline function instantiated in an
# AVX2/AVX-512 object is a weak symbol, and the linker may keep that copy for the SSE2 path
# too (illegal instruction on older CPUs). Every weak symbol of the per-ISA objects must
# therefore be specific to its architecture (name an xsimd arch type).
# Usage: check_isa_symbols.sh OBJECT...
set -eu
bad=0
for obj in "$@"; do
  case "$obj" in *table_* | *avx512bf16*) ;; *) continue ;; esac
  leaks=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WVu]$/' | grep -v 'xsimd::' | grep -v 'DW.ref.__gxx_personality' || true)
  if [ -n "$leaks" ]; then
    echo "$obj defines weak symbols shared with other ISAs:" >&2
    echo "$leaks" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] && echo "per-ISA objects: every weak symbol is architecture-specific"
exit "$bad"
