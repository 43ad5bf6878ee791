#!/bin/sh
# tests/install/check-deb.sh — build the Debian package from a copy of the
# checkout and check what it installs: binaries, mailq and sendmail where
# Debian's MTAs put them, units, sysusers.d/tmpfiles.d, the conffile, man
# pages, the mail-transport-agent relations, the postinst that makes
# sendmail set-group-ID tarrydrop and lays out the spool, and lintian
# without errors. Slow (a full build): skipped unless TARRY_TEST_DEB=1.
set -eu
if [ "${TARRY_TEST_DEB:-0}" != 1 ]; then
        echo "skipped: set TARRY_TEST_DEB=1 to build and check the Debian package"
        exit 77
fi
src=${TARRY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
for tool in dpkg-buildpackage dh lintian scdoc git; do
        command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install debhelper lintian scdoc)"; exit 1; }
done
work=$(mktemp -d)
[ -n "${TARRY_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir "$work/tarry"
# the checkout as it is (uncommitted files included), without build directories
(cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -xf - -C "$work/tarry"
echo "building the package in $work"
if ! (cd "$work/tarry" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1; then
        tail -40 "$work/build.log"
        echo "FAIL: dpkg-buildpackage"
        exit 1
fi
deb=$(ls "$work"/tarry_*.deb)
echo "built $(basename "$deb")"
dpkg-deb -c "$deb" >"$work/contents"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
fail=0
bad() { echo "FAIL: $*"; fail=1; }
# has MODE-REGEX PATH: an entry of dpkg-deb -c with that mode and owner
has() {
        awk -v m="$1" -v p="./$2" '$1 ~ "^" m "$" && $2 == "root/root" && $6 == p { f = 1 } END { exit !f }' \
                "$work/contents" || bad "no $2 with mode $1 in the package"
}
link() {
        awk -v p="./$1" -v t="$2" '$6 == p && $7 == "->" && $8 == t { f = 1 } END { exit !f }' \
                "$work/contents" || bad "no symlink $1 -> $2"
}
has '-rwxr-xr-x' usr/sbin/tarryd
has '-rwxr-xr-x' usr/sbin/sendmail
has '-rwxr-xr-x' usr/bin/tarryq
link usr/bin/mailq ../sbin/sendmail
link usr/lib/sendmail ../sbin/sendmail
has '-rw-r--r--' lib/systemd/system/tarryd.service
has '-rw-r--r--' usr/lib/sysusers.d/tarry.conf
has '-rw-r--r--' usr/lib/tmpfiles.d/tarry.conf
has '-rw-r--r--' etc/tarry/tarry.conf
has '-rw-r--r--' usr/share/tarry/tarry-policy.json
for m in man8/tarryd.8 man1/tarryq.1 man1/sendmail.1 man5/tarry.conf.5; do
        has '-rw-r--r--' "usr/share/man/$m.gz"
done
grep -qx /etc/tarry/tarry.conf "$work/control/conffiles" || bad "/etc/tarry/tarry.conf is not a conffile"
for f in Provides Conflicts Replaces; do
        [ "$(dpkg-deb -f "$deb" "$f")" = mail-transport-agent ] || bad "$f is not mail-transport-agent"
done
# sendmail becomes set-group-ID tarrydrop at configure time, never setgid root
grep -q 'dpkg-statoverride --update --add root tarrydrop 2755 /usr/sbin/sendmail' \
        "$work/control/postinst" || bad "postinst does not make sendmail set-group-ID tarrydrop"
grep -q 'spool_folder 1730 tarry tarrydrop "$spool/maildrop"' "$work/control/postinst" ||
        bad "postinst does not create maildrop/ 1730 tarry:tarrydrop"
grep -q 'install -d -o tarry -g tarry -m 0711 "$spool"' "$work/control/postinst" ||
        bad "postinst does not create the spool 0711"
grep -q 'deb-systemd-helper enable .tarryd.service' "$work/control/postinst" ||
        bad "postinst does not enable tarryd.service"
grep -q 'dpkg-statoverride --remove /usr/sbin/sendmail' "$work/control/postrm" ||
        bad "postrm purge keeps the override"
# the tmpfiles.d file shipped says the same
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/lib/tmpfiles.d/tarry.conf >"$work/tmpfiles"
grep -Eq '^d /var/spool/tarry/maildrop +1730 tarry tarrydrop' "$work/tmpfiles" ||
        bad "tmpfiles.d: maildrop is not 1730 tarry tarrydrop"
grep -Eq '^d /var/spool/tarry +0711 tarry tarry' "$work/tmpfiles" || bad "tmpfiles.d: spool is not 0711"
# run the postinst's accounts and spool layout in a scratch dir, with the
# package's own owners (the tarry user and tarrydrop group, made by the
# postinst's create_accounts when missing): the owners and modes it leaves
sed -n '/^create_accounts()/,/^}/p; /^spool_folder()/,/^}/p; /^create_spool()/,/^}/p' \
        "$work/control/postinst" >"$work/layout.sh"
if [ "$(id -u)" = 0 ]; then
        chmod 0755 "$work"
        (spool=/var/spool/tarry && . "$work/layout.sh" && create_accounts)
        (spool="$work/spool" && . "$work/layout.sh" && create_spool) || bad "create_spool failed"
        [ "$(stat -c '%a %U:%G' "$work/spool/maildrop")" = "1730 tarry:tarrydrop" ] ||
                bad "maildrop after postinst: $(stat -c '%a %U:%G' "$work/spool/maildrop")"
        [ "$(stat -c '%a %U:%G' "$work/spool")" = "711 tarry:tarry" ] ||
                bad "spool after postinst: $(stat -c '%a %U:%G' "$work/spool")"
        [ "$(stat -c '%a %U:%G' "$work/spool/active")" = "750 tarry:tarry" ] ||
                bad "active/ after postinst: $(stat -c '%a %U:%G' "$work/spool/active")"
else
        echo "note: postinst layout not executed (needs root)"
fi
lintian --tag-display-limit 0 "$deb" >"$work/lintian" 2>&1 || true
cat "$work/lintian"
if grep -q '^E: ' "$work/lintian"; then
        bad "lintian reports errors"
fi
[ "$fail" = 0 ] && echo "package OK"
exit "$fail"
