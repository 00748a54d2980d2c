# Sourced by the build scripts: one compiler cache shared by every clone on this machine.
# Paths are taken relative to the checkout so a fresh clone elsewhere still hits the cache;
# sourced by hand, without the caller's $root, the checkout is found from this file's place
# (an empty base directory would key every entry by absolute paths and miss in any other clone).
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export CCACHE_DIR=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/distillery/ccache}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}
export CCACHE_NOHASHDIR=true
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
