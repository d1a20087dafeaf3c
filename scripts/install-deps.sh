#!/bin/sh
# install-deps.sh: installs the Debian 12 packages that mpt builds, tests
# and runs with.  Run as root (or with sudo available).  Safe to repeat.
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
  clang libclang-rt-14-dev
"

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo apt-get install -y -q $packages
