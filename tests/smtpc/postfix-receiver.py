#!/usr/bin/env python3
"""tests/smtpc/postfix-receiver.py — tarry's SMTP client against a real
receiver: Debian's Postfix smtpd on a loopback port (a separate instance,
as bench/vs-postgrey sets one up), relaying what it accepts to the scripted
server (tests/fixture, --record), which shows what Postfix understood of
tarry's commands. Real tarryd and sendmail.

1. Postfix offering DSN, 8BITMIME, SMTPUTF8, PIPELINING:
   `sendmail -N success,delay -R hdrs -V inv-42` with an 8-bit body reaches
   the fixture through Postfix as RET=HDRS ENVID=inv-42 BODY=8BITMIME and
   NOTIFY=SUCCESS,DELAY: Postfix accepted and passed on each parameter.
2. Postfix with those keywords discarded (smtpd_discard_ehlo_keywords):
   the body arrives 7-bit (quoted-printable), no NOTIFY, and the sender gets
   one "relayed" DSN.
Skipped (77) unless run as root with Postfix installed."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import importlib.machinery
import importlib.util

SRC = os.environ.get("TARRY_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("TARRY_BUILD_DIR", os.path.join(SRC, "build"))
if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
    print("1..0 # SKIP needs root and Debian's postfix")
    sys.exit(77)
_loader = importlib.machinery.SourceFileLoader("vs_postfix", os.path.join(SRC, "bench", "vs-postfix"))
_spec = importlib.util.spec_from_loader("vs_postfix", _loader)
vp = importlib.util.module_from_spec(_spec)
_loader.exec_module(vp)

EHLO = "250-fixture.test\\n250-PIPELINING\\n250-8BITMIME\\n250-SIZE 10000000\\n250-DSN\\n250 SMTPUTF8"
BODY = ("From: bench@example.com\nTo: u@pf.test\nSubject: postfix receiver\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\ngr\u00fc\u00df dich\n").encode()


class Receiver(vp.Postfix):
    """Postfix smtpd on 127.0.0.1:port, relaying pf.test and example.com to the fixture."""

    def __init__(self, tmp, port, fixture_port, discard):
        super().__init__(tmp, fixture_port)
        with open(os.path.join(self.etc, "main.cf"), "a") as f:
            f.write("mynetworks = 127.0.0.0/8\nrelay_domains = pf.test, example.com\n"
                    "smtpd_relay_restrictions = permit_mynetworks, reject\n"
                    "smtputf8_enable = yes\nsmtpd_error_sleep_time = 0\n"
                    "smtp_connection_cache_on_demand = no\n")
            if discard:
                f.write("smtpd_discard_ehlo_keywords = dsn, 8bitmime, smtputf8, pipelining\n")
        with open(os.path.join(self.etc, "master.cf"), "a") as f:
            f.write(f"127.0.0.1:{port} inet n - n - - smtpd\n")


def records(path, n, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(x) for x in f if x.strip()]
            if len(lines) >= n:
                return lines
        time.sleep(0.2)
    raise SystemExit(f"not ok - fewer than {n} transactions reached the fixture in {timeout} s")


def scenario(discard):
    tmp = tempfile.mkdtemp(prefix="pf-rcv.")
    os.chmod(tmp, 0o755)
    rec, saved = os.path.join(tmp, "rec.jsonl"), os.path.join(tmp, "saved")
    os.makedirs(saved)
    fx = subprocess.Popen([os.path.join(BUILD, "tests/fixture/smtp-fixture"), "--port-file",
                           os.path.join(tmp, "fx.port"), "--record", rec, "--set", f"ehlo={EHLO}",
                           "--set", f"save_dir={saved}"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(os.path.join(tmp, "fx.port")) and open(os.path.join(tmp, "fx.port")).read().strip():
            break
        time.sleep(0.05)
    fport = int(open(os.path.join(tmp, "fx.port")).read().split()[-1])
    pport = vp.free_port()
    os.makedirs(os.path.join(tmp, "pf"))
    os.makedirs(os.path.join(tmp, "t"))
    pf = tarry = None
    try:
        pf = Receiver(os.path.join(tmp, "pf"), pport, fport, discard)
        tarry = vp.Tarry(os.path.join(tmp, "t"), pport, BUILD)
        pf.start()
        tarry.start()
        tarry.wait_ready()
        cmd = [f"{BUILD}/cli/sendmail", "-C", tarry.conf, "-f", "bench@example.com", "-N",
               "success,delay", "-R", "hdrs", "-V", "inv-42", "u@pf.test"]
        subprocess.run(cmd, input=BODY, check=True)
        return tmp, rec, saved, records(rec, 2 if discard else 1)
    finally:
        if tarry:
            tarry.stop()
        if pf:
            pf.stop()
        fx.terminate()
        fx.wait()


def check(ok, name, detail=""):
    print(("ok" if ok else "not ok") + f" - {name}" + (f" # {detail}" if detail and not ok else ""))
    return ok


def main():
    print("1..2")
    good = True
    tmp, rec, saved, t = scenario(False)
    m = t[0]
    good &= check("RET=HDRS" in m["mail_params"] and "ENVID=inv-42" in m["mail_params"]
                  and "BODY=8BITMIME" in m["mail_params"]
                  and "NOTIFY=SUCCESS,DELAY" in m["rcpt_params"][0],
                  "postfix_with_dsn_passes_on_every_parameter_tarry_sent", json.dumps(m))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp, rec, saved, t = scenario(True)
    msg = next((x for x in t if x["mail_from"]), None)
    dsn = next((x for x in t if not x["mail_from"]), None)
    body = b""
    for name in sorted(os.listdir(saved)):
        body += open(os.path.join(saved, name), "rb").read() + b"\n--\n"
    good &= check(msg is not None and "NOTIFY" not in msg["rcpt_params"][0]
                  and dsn is not None and dsn["rcpts"] == ["bench@example.com"]
                  and b"Action: relayed" in body and b"gr=C3=BC=C3=9F" in body
                  and max(body) < 0x80,
                  "postfix_without_dsn_or_8bitmime_gets_7bit_and_the_sender_a_relayed_dsn",
                  json.dumps(t))
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
