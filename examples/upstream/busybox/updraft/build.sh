#!/bin/sh
# Configures BusyBox with nothing but the options in updraft/busybox.config
# (allnoconfig, then each option switched on, then oldconfig for what they
# imply) and builds it.
set -e
make -s allnoconfig
for opt in $(sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=y$/\1/p' updraft/busybox.config); do
  sed -i "s/^# $opt is not set\$/$opt=y/" .config
done
yes '' | make -s oldconfig >/dev/null
make -s -j2
