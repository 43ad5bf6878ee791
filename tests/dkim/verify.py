#!/usr/bin/python3
"""verify.py MESSAGE [NAME=TXT...] — verify every DKIM-Signature of MESSAGE
with Debian's python3-dkim (python3-nacl for ed25519), an implementation
independent of libopendkim. Each NAME=TXT answers the TXT lookup of NAME
(e.g. s1._domainkey.example.com.=v=DKIM1; k=rsa; p=...); nothing asks real DNS.
Prints one line per signature, "pass d=... s=... a=..." or "fail ...", and
exits 0 only if there is at least one signature and all pass."""
import sys

import dkim

records = {}
for arg in sys.argv[2:]:
    name, _, txt = arg.partition("=")
    records[name.rstrip(".").lower()] = txt.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip(".").lower())


msg = open(sys.argv[1], "rb").read()
n = 0
ok = True
d = dkim.DKIM(msg)
for i in range(len([h for h in d.headers if h[0].lower() == b"dkim-signature"])):
    try:
        good = d.verify(idx=i, dnsfunc=dnsfunc)
        why = ""
    except dkim.DKIMException as e:
        good = False
        why = " (%s)" % e
    value = [h for h in d.headers if h[0].lower() == b"dkim-signature"][i][1]
    sig = dict(dkim.util.parse_tag_value(b"".join(value.split())))
    print("%s d=%s s=%s a=%s h=%s%s" % ("pass" if good else "fail", sig[b"d"].decode(),
                                        sig[b"s"].decode(), sig[b"a"].decode(),
                                        sig[b"h"].decode(), why))
    n += 1
    ok = ok and good
sys.exit(0 if n and ok else 1)
