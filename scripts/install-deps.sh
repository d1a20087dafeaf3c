#!/bin/sh
# install-deps.sh: installs the Debian 12 packages that mpt builds, tests
# and runs with, then Intel's OpenCL CPU runtime from PyPI as a second
# OpenCL vendor (install-intel-opencl.sh; optional: a failure there only
# warns).  Run as root (or with sudo available).  Safe to repeat.
# (install-host-blas.sh, a newer OpenBLAS for ./configure
# --with-host-blas=scipy-openblas, is not run: Debian's is the default.)
set -eu

packages="
  build-essential autoconf automake libtool libtool-bin autoconf-archive pkg-config
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
  libclblast-dev clblast-utils libopenblas-dev
  libhwloc-dev libhwloc-plugins hwloc
  libjansson-dev zlib1g-dev
  check libsubunit-dev
  libopenmpi-dev openmpi-bin
  dataset-fashion-mnist
  oclgrind python3-venv
  clang libclang-rt-14-dev
  libmicrohttpd-dev prometheus curl
  chromium libjs-chart.js help2man
"

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo apt-get install -y -q $packages

# The second vendor: optional, so its failure must not stop the build.
$sudo "$(dirname "$0")/install-intel-opencl.sh" ||
    echo "install-deps.sh: warning: install-intel-opencl.sh failed; cross-vendor tests will skip" >&2
