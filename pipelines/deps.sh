#!/usr/bin/env bash
# Installs what a target needs on a fresh Debian machine, only when missing, before it starts work:
#   deps.sh            the build: pkg-config, zstd (library + tool), OpenBLAS, python3
#   deps.sh figures    + python3-matplotlib, python3-numpy (figures and reports of make did / paper / medium)
#   deps.sh export     + numpy and safetensors for Python (checkpoint export to F16/BF16: did-ship,
#                      medium-ship); safetensors is not in Debian: `python3 -m pip install safetensors`
# Swift itself (6.x) is not in Debian's archive: it must already be on PATH.
set -euo pipefail

figures=0; export_=0
for a in "$@"; do
  case "$a" in
    figures) figures=1 ;;
    export) export_=1 ;;
    *) echo "usage: pipelines/deps.sh [figures] [export]" >&2; exit 64 ;;
  esac
done

need=()
pkg-config --version >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Open MPI: `mpirun -np N train` (libmpi is loaded at run time; single-process train does not need it).
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
pkg-config --exists ompi 2>/dev/null || need+=(libopenmpi-dev)
py_has() { command -v python3 >/dev/null 2>&1 && python3 -c "import $1" >/dev/null 2>&1; }
[ $figures = 0 ] || py_has matplotlib || need+=(python3-matplotlib)
[ $figures = 0 ] || py_has numpy || need+=(python3-numpy)
[ $export_ = 0 ] || py_has numpy || need+=(python3-numpy)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "deps: missing Debian packages and not root: run  apt-get install -y ${need[*]}  as root, then again." >&2
      exit 1
    fi
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ $export_ = 1 ] && ! py_has safetensors; then
  echo "deps: the Python package 'safetensors' is missing (not in Debian's archive): run" >&2
  echo "      python3 -m pip install safetensors   (in a venv, or with --break-system-packages), then again." >&2
  exit 1
fi
for m in $([ $figures = 1 ] && echo matplotlib numpy) $([ $export_ = 1 ] && echo numpy); do
  py_has $m || { echo "deps: python3 cannot import $m after installing it; check the python3 on PATH" >&2; exit 1; }
done

if ! command -v swift >/dev/null 2>&1; then
  echo "deps: 'swift' (6.0 or newer) is not on PATH. Install the Swift toolchain from swift.org" >&2
  echo "      and add its usr/bin to PATH, then run this again." >&2
  exit 1
fi
