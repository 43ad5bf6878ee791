#!/bin/sh
# tests/install/check-postinst.sh — the postinst's spool layout, run for real
# (as root, with the package's tarry user and tarrydrop group, made by the
# postinst's own create_accounts if missing) in a scratch spool: the owners
# and modes tmpfiles.d gives, and a link planted in the spool by the tarry
# user refused with its target left as it was. Needs root (77 otherwise).
set -eu
[ "$(id -u)" = 0 ] || { echo "skipped: needs root (creates the tarry user, chowns)"; exit 77; }
src=${TARRY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
# the postinst's functions, without running its case statement
sed -n '/^create_accounts()/,/^}/p; /^spool_folder()/,/^}/p; /^create_spool()/,/^}/p' \
        "$src/debian/tarry.postinst" >"$work/functions.sh"
. "$work/functions.sh"
spool=/var/spool/tarry # the accounts as the package makes them (the home is not created)
create_accounts
fail=0
bad() { echo "FAIL: $*"; fail=1; }
is() { # PATH MODE OWNER:GROUP
        got=$(stat -c '%a %U:%G' "$1")
        [ "$got" = "$2 $3" ] || bad "$1 is $got, not $2 $3"
}

spool="$work/spool"
create_spool || bad "create_spool failed on a fresh spool"
is "$spool" 711 tarry:tarry
for d in tmp incoming active hold corrupt state; do
        is "$spool/$d" 750 tarry:tarry
done
is "$spool/maildrop" 1730 tarry:tarrydrop
create_spool || bad "create_spool failed on an existing spool (an upgrade)"
is "$spool/active" 750 tarry:tarry

# the tarry user replaces active/ with a link to a folder of root's
mkdir -m 0700 "$work/roots"
rmdir "$spool/active"
su -s /bin/sh -c "ln -s '$work/roots' '$spool/active'" tarry 2>/dev/null ||
        ln -s "$work/roots" "$spool/active"
if (create_spool) 2>"$work/err"; then
        bad "create_spool accepted a link at active/"
fi
grep -q "active is not a folder (a symbolic link?): refusing to touch it" "$work/err" ||
        bad "no refusal naming active/: $(cat "$work/err")"
is "$work/roots" 700 root:root
# and a link at maildrop/ (chmod 1730 would follow it)
rm "$spool/active" && mkdir -m 0750 "$spool/active" && chown tarry:tarry "$spool/active"
rmdir "$spool/maildrop"
ln -s "$work/roots" "$spool/maildrop"
(create_spool) 2>/dev/null && bad "create_spool accepted a link at maildrop/"
is "$work/roots" 700 root:root
[ "$fail" = 0 ] && echo "postinst layout OK"
exit "$fail"
