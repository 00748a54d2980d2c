#!/usr/bin/env bash
# Installs what distillery needs to build and test: Debian packages and a Python virtual
# environment holding the pinned torch wheel (whose LibTorch we link) and the reference
# packages the tests compare against. Idempotent: with everything present it only checks.
#
# The environment lives under the user's cache directory, keyed by the pinned versions, so
# fresh clones on the same machine reuse it; `.venv` in the checkout links to it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/distillery
torch_version=$(sed -n 's/^torch==//p' "$root/tools/requirements.txt")
python=${DISTILLERY_PYTHON:-python3}
py_version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
venv="$cache/venv-py$py_version-torch$torch_version"
did_something=0

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config
  libhdf5-dev hdf5-tools libeigen3-dev libstb-dev libopencv-dev libpng-dev libjpeg-dev libgloo-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev zlib1g-dev libzip-dev
  clang libclang-rt-14-dev
  dataset-fashion-mnist
)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  did_something=1
fi

# The stamp holds the requirements it was built from, so editing them rebuilds the venv.
stamp="$venv/.distillery-requirements"
if ! cmp -s "$root/tools/requirements.txt" "$stamp" 2>/dev/null || [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating or updating the Python environment in $venv (a first install takes minutes)"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tools/requirements.txt"
  cp "$root/tools/requirements.txt" "$stamp"
  did_something=1
fi
# Linking the checkout to the shared environment is not an install, so it stays quiet.
[ "$(readlink "$root/.venv" 2>/dev/null)" = "$venv" ] || ln -sfn "$venv" "$root/.venv"

if ((did_something)); then
  echo "bootstrap: done"
else
  echo "bootstrap: nothing to do (Debian packages and $venv already present)"
fi
