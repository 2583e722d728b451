#!/usr/bin/env bash
# stages.sh STAGE... runs `make STAGE` for each stage in turn, with a banner naming the
# stage and the time, its elapsed time when it ends, and a final summary line. It stops
# at the first stage that fails (its exit code is make's).
set -uo pipefail
make_cmd=${MAKE:-make}
total=$#
i=0
summary=()
t0=$(date +%s)
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
for stage in "$@"; do
	i=$((i + 1))
	echo
	echo "==== [$i/$total] make $stage ($(date -u +%H:%M:%S) UTC)"
	s=$(date +%s)
	"$make_cmd" --no-print-directory "$stage"
	rc=$?
	el=$(($(date +%s) - s))
	if [ $rc -ne 0 ]; then
		echo "==== [$i/$total] make $stage FAILED after $(fmt $el)"
		summary+=("$stage FAILED")
		joined=$(printf '%s, ' "${summary[@]}")
		echo "==== make test: FAILED at $stage after $(fmt $(($(date +%s) - t0))) (${joined%, })"
		exit $rc
	fi
	echo "==== [$i/$total] make $stage passed in $(fmt $el)"
	summary+=("$stage $(fmt $el)")
done
joined=$(printf '%s, ' "${summary[@]}")
echo "==== make test: all $total stages passed in $(fmt $(($(date +%s) - t0))) (${joined%, })"
