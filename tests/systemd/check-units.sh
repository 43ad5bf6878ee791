#!/bin/sh
# tests/systemd/check-units.sh UNIT — the unit is valid and well confined:
# `systemd-analyze verify` passes and the security exposure is at most 2.0.
set -eu
unit=$1
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# verify checks that ExecStart exists; point it at a binary that does.
sed "s#^ExecStart=[^ ]*#ExecStart=/bin/true#" "$unit" > "$dir/tarryd.service"
systemd-analyze verify --man=no "$dir/tarryd.service"
exposure=$(systemd-analyze security --offline=true "$dir/tarryd.service" 2>&1 |
        sed -n 's/.*Overall exposure level for tarryd.service: \([0-9.]*\).*/\1/p')
echo "exposure: $exposure"
[ -n "$exposure" ] || { echo "no exposure figure"; exit 1; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || { echo "exposure $exposure > 2.0"; exit 1; }
