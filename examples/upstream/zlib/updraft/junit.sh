#!/bin/sh
# junit.sh OUT NAME=COMMAND...: runs each command with sh, one JUnit test
# case each (failed when the command exits non-zero, with the end of its
# output), and writes the report to OUT. Exits 1 if a command failed.
out=$1; shift
status=0; cases=""; n=0; failures=0
for spec in "$@"; do
  name=${spec%%=*}; cmd=${spec#*=}; n=$((n + 1))
  if output=$(sh -c "$cmd" 2>&1); then
    cases="$cases  <testcase classname=\"selftest\" name=\"$name\"/>
"
  else
    status=1; failures=$((failures + 1))
    tail=$(printf '%s\n' "$output" | tail -n 20 | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g')
    cases="$cases  <testcase classname=\"selftest\" name=\"$name\"><failure message=\"exit status\">$tail</failure></testcase>
"
  fi
done
printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="selftest" tests="%d" failures="%d">\n%s</testsuite>\n' \
  "$n" "$failures" "$cases" >"$out.tmp" && mv "$out.tmp" "$out"
exit $status
