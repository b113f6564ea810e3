#!/bin/sh
# Runs BusyBox's test suite (testsuite/runtest) for the applets given and
# writes what it prints (PASS:, FAIL:, SKIPPED:, UNTESTED: lines) as JUnit
# XML to testsuite-junit.xml. Exits as runtest does.
out=testsuite-junit.xml
log=testsuite.log
(cd testsuite && bindir="$PWD/.." srcdir="$PWD" sh ./runtest "$@") >"$log" 2>&1
status=$?
awk '
  function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); gsub(/"/, "\\&quot;", s); return s }
  /^(PASS|FAIL|SKIPPED|UNTESTED): / {
    verdict = substr($0, 1, index($0, ":") - 1); name = substr($0, index($0, ":") + 2)
    n++; cases[n] = name; verdicts[n] = verdict
    if (verdict == "FAIL") failures++
    if (verdict == "SKIPPED" || verdict == "UNTESTED") skipped++
  }
  END {
    printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    printf "<testsuite name=\"busybox\" tests=\"%d\" failures=\"%d\" skipped=\"%d\">\n", n, failures, skipped
    for (i = 1; i <= n; i++) {
      split(cases[i], parts, /[ -]/)
      printf "  <testcase classname=\"busybox.%s\" name=\"%s\"", esc(parts[1]), esc(cases[i])
      if (verdicts[i] == "FAIL") printf "><failure message=\"FAIL\"/></testcase>\n"
      else if (verdicts[i] == "PASS") printf "/>\n"
      else printf "><skipped message=\"%s\"/></testcase>\n", verdicts[i]
    }
    printf "</testsuite>\n"
  }' "$log" >"$out.tmp" && mv "$out.tmp" "$out"
exit $status
