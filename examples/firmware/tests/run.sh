#!/bin/sh
# Builds the host tests for a family and runs them; writes out/<family>/junit-host.xml.
set -e
family="$1"
mkdir -p "out/$family"
${CC:-cc} -O1 -Wall -DFAMILY="\"$family\"" -o "out/$family/tests" tests/test_main.c src/crc.c
exec "out/$family/tests" "$family" "out/$family/junit-host.xml"
