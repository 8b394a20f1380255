# Helpers for scripts/: install a missing tool from the package registries this project uses.
# Sourced, not run.

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=false
apt_install() {
  if ! $apt_updated; then
    as_root apt-get update -qq
    apt_updated=true
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_command CMD apt|pip PACKAGE: installs PACKAGE when CMD is not on PATH.
ensure_command() {
  local cmd=$1 via=$2 package=$3
  command -v "$cmd" >/dev/null 2>&1 && return 0
  step "installing $package ($via) for $cmd"
  case $via in
    apt) apt_install "$package" ;;
    pip) python3 -m pip install --quiet "$package" ;;
    *) echo "unknown installer $via" >&2; return 1 ;;
  esac
  hash -r
  command -v "$cmd" >/dev/null 2>&1 || { echo "$cmd still missing after installing $package" >&2; return 1; }
}

# pip may install console scripts outside PATH (e.g. ~/.local/bin); make them findable.
py_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
[[ -n "$py_scripts" && ":$PATH:" != *":$py_scripts:"* ]] && export PATH="$PATH:$py_scripts"
[[ ":$PATH:" != *":$HOME/.local/bin:"* ]] && export PATH="$PATH:$HOME/.local/bin"
true
