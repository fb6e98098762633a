#!/usr/bin/env bash
# Installs what the build needs on a fresh Debian machine, only when missing.
# Swift itself (6.x) is not in Debian's archive: it must already be on PATH.
set -euo pipefail

need=()
pkg-config --version >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Open MPI: `mpirun -np N train` (libmpi is loaded at run time; single-process train does not need it).
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
pkg-config --exists ompi 2>/dev/null || need+=(libopenmpi-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "deps: 'swift' (6.0 or newer) is not on PATH. Install the Swift toolchain from swift.org" >&2
  echo "      and add its usr/bin to PATH, then run this again." >&2
  exit 1
fi
