#!/usr/bin/env bash
# Packs the built CLI for a machine that has PyTorch's pip wheel (torch 2.11) but none of the
# Debian libraries the build links, such as a GPU cluster's node or a container: the stripped
# `distillery` and every shared library it needs beyond the wheel's (torch/lib, nvidia/*/lib) and
# the C library's own, with a launcher that puts them, the wheel's libraries and CUDA's runtime
# from the wheel on the search path. Then checks the bundle here, as far as a machine without a
# GPU can: with only the bundle's and the wheel's directories added, ldd must resolve every
# library, each from the bundle, the wheel or the C library, and the bundled CLI must run.
#   tools/bundle_cli.sh [OUT]     (default build/bundle: OUT/distillery/ and OUT/distillery.tar.gz)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DISTILLERY_BUILD_DIR:-$root/build}
out=${1:-$build/bundle}
python=${DISTILLERY_PYTHON:-$root/.venv/bin/python}
torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
wheel_paths="$torch_dir/lib:$torch_dir/../nvidia/cu13/lib"
# The C library's parts come with every Linux; everything else the CLI needs travels.
system='/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux-x86-64)\.so'

bundle="$out/distillery"
rm -rf "$bundle" "$out/distillery.tar.gz"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/lib-cxx"
strip -o "$bundle/bin/distillery" "$build/distillery"
LD_LIBRARY_PATH="$wheel_paths" ldd "$build/distillery" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r library; do
  case "$library" in "$torch_dir"/* | "$(dirname "$torch_dir")"/nvidia/*) continue ;; esac
  [[ "$library" =~ $system ]] && continue
  # The C++ runtime apart: this one needs the build machine's C library (2.36), and a machine
  # with an older one has a C++ runtime of its own that the launcher then keeps.
  case "$(basename "$library")" in libstdc++.so.* | libgcc_s.so.*) cp -L "$library" "$bundle/lib-cxx/" ;; *) cp -L "$library" "$bundle/lib/" ;; esac
done
cat > "$bundle/distillery" <<'LAUNCHER'
#!/usr/bin/env bash
# The bundled distillery CLI: its libraries beside it, LibTorch and CUDA's runtime from the
# Python environment's torch wheel (DISTILLERY_TORCH_DIR, else python3's torch).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cxx=
glibc=$(getconf GNU_LIBC_VERSION 2> /dev/null | awk '{print $2}')
[ "$(printf '%s\n' 2.36 "${glibc:-0}" | sort -V | head -1)" = 2.36 ] && cxx="$here/lib-cxx:"
torch_dir=${DISTILLERY_TORCH_DIR:-$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')} || {
  echo "error: no torch wheel found for the bundled distillery (set DISTILLERY_TORCH_DIR to the torch package directory)" >&2
  exit 1
}
export LD_LIBRARY_PATH="$cxx$here/lib:$torch_dir/lib:$torch_dir/../nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# DISTILLERY_BUNDLE_LDD=1: list how the libraries resolve on this machine instead of running.
[ -n "${DISTILLERY_BUNDLE_LDD:-}" ] && exec ldd "$here/bin/distillery"
exec "$here/bin/distillery" "$@"
LAUNCHER
chmod +x "$bundle/distillery"

# Every library resolved, and from the bundle, the wheel or the C library only.
resolved=$(DISTILLERY_TORCH_DIR="$torch_dir" DISTILLERY_BUNDLE_LDD=1 "$bundle/distillery" 2>&1)
if grep -q "not found" <<<"$resolved"; then
  echo "bundle_cli: libraries not found:" >&2
  grep "not found" <<<"$resolved" >&2
  exit 1
fi
outside=$(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$resolved" | grep -v -e "^$bundle/lib/" -e "^$bundle/lib-cxx/" -e "^$torch_dir/" -e "^$(dirname "$torch_dir")/nvidia/" | grep -Ev "$system" || true)
if [ -n "$outside" ]; then
  echo "bundle_cli: resolved outside the bundle and the wheel:" >&2
  echo "$outside" >&2
  exit 1
fi
DISTILLERY_TORCH_DIR="$torch_dir" "$bundle/distillery" --help > /dev/null
tar -C "$out" -czf "$out/distillery.tar.gz" distillery
echo "bundle_cli: $bundle: the CLI $(du -b "$bundle/bin/distillery" | cut -f1) bytes, $(ls "$bundle/lib" "$bundle/lib-cxx" | grep -c "\.so") libraries of" \
  "$(du -cb "$bundle"/lib/* "$bundle"/lib-cxx/* | tail -1 | cut -f1) bytes; $out/distillery.tar.gz $(du -b "$out/distillery.tar.gz" | cut -f1) bytes"
