#!/bin/sh
# Installs the build into a scratch prefix, then builds tests/package against it twice:
# with find_package(attn) and with pkg-config. Usage: run.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
"$work/build/example"
"$work/build/c_example" "$src/../data/mha_b3.safetensors"
# The installed Python module imports from the prefix alone (rpath to the installed libattn).
for site in "$work"/prefix/lib/python3*/dist-packages; do
  [ -d "$site" ] || continue
  PYTHONPATH="$site" /usr/bin/python3 -c 'import attn; y = attn.MultiHeadAttention(3, 2, 6, 0.0, 2, seed=123)(__import__("numpy").ones((1, 2, 3), "float32")); assert y.shape == (1, 2, 2) and abs(float(y.sum())) < 10, y; print("python: installed attn", attn.__version__, "imports and runs")'
done
pc_dir=$(dirname "$(find "$work/prefix" -name attn.pc | head -n 1)")
PKG_CONFIG_PATH="$pc_dir" pkg-config --exists attn
# shellcheck disable=SC2046
c++ "$src/main.cpp" -o "$work/consumer_pc" $(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs attn)
LD_LIBRARY_PATH="$(PKG_CONFIG_PATH="$pc_dir" pkg-config --variable=libdir attn)" "$work/consumer_pc"
grep -rqE '#include.*(xsimd|tbb|oneapi)|xsimd::|tbb::' "$work/prefix/include/attn" && { echo "public headers name xsimd or TBB" >&2; exit 1; }
echo "package: find_package, pkg-config and C consumers built and ran"
