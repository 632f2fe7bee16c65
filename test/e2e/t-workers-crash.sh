#!/bin/bash
# t-workers-crash: test/crash-load.sh with workers 2: kill -9 in the middle
# of a load through the MTA whose 20 sessions are spread over both
# workers (crash-load checks that each took some), restart, and no
# acknowledged message is lost (duplicates are counted and allowed).
exec bash "$(dirname "$0")/../crash-load.sh" -W "${MXB_WORKERS_CRASH:-2}" -n "${MTA_CRASH_N:-800}" -c 20 -k 0.5 -s 2048
