#!/bin/bash
# t-mta-crash: a short run of test/crash-load.sh: kill -9 in the middle of
# a load through the MTA, restart, and no acknowledged message is lost
# (duplicates are counted and allowed).  The full run: test/crash-load.sh.
exec bash "$(dirname "$0")/../crash-load.sh" -n "${MTA_CRASH_N:-800}" -c 10 -k 0.5 -s 2048
