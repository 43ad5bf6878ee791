#!/usr/bin/env python3
"""tests/bounce/parse_dsn.py — parse a DSN with Python's email package, print JSON.

Usage: parse_dsn.py FILE   (the raw message bytes)

The Criterion tests in this folder call this so that every generated report is
read by a real, independent MIME parser. Output (one JSON object):
  raw:      max_line (bytes, without CRLF), bare_lf, bare_cr, nul counts
  defects:  every defect the parser recorded, in any part
  headers:  top-level header fields, lower-cased name -> list of values
  content_type, params (report-type, boundary...)
  parts:    for each top-level part: content_type, headers, and
            text (text/*), groups (message/delivery-status: one object per
            block, first = per-message fields), or inner (message/rfc822:
            headers and body of the returned message)
"""
import email
import email.policy
import json
import sys


def raw_stats(data):
    lines = data.split(b"\r\n")
    return {
        "max_line": max((len(line) for line in lines), default=0),
        "bare_lf": sum(line.count(b"\n") for line in lines),
        "bare_cr": sum(line.count(b"\r") for line in lines),
        "nul": data.count(b"\0"),
        "ends_with_crlf": data.endswith(b"\r\n"),
    }


def headers_of(msg):
    out = {}
    for name, value in msg.items():
        out.setdefault(name.lower(), []).append(str(value))
    return out


def defects_of(msg):
    found = []
    for part in msg.walk():
        found += [type(d).__name__ + ": " + str(d) for d in part.defects]
        for name, value in part.items():
            found += [name + ": " + type(d).__name__ for d in getattr(value, "defects", ())]
    return found


def describe(part):
    info = {
        "content_type": part.get_content_type(),
        "headers": headers_of(part),
        "charset": part.get_content_charset(),
        "cte": part.get("Content-Transfer-Encoding", "7bit").lower(),
    }
    ctype = info["content_type"]
    if ctype == "message/delivery-status":
        info["groups"] = [
            {k.lower(): str(v) for k, v in block.items()} for block in part.get_payload()
        ]
    elif ctype == "message/rfc822":
        inner = part.get_payload()[0]
        info["inner"] = {
            "headers": headers_of(inner),
            "body": inner.get_payload(decode=True).decode("utf-8", "replace"),
        }
    elif part.get_content_maintype() == "text":
        info["text"] = part.get_content()
        info["flat"] = " ".join(info["text"].split())
    return info


def main():
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = {
        "raw": raw_stats(data),
        "defects": defects_of(msg),
        "headers": headers_of(msg),
        "content_type": msg.get_content_type(),
        "params": {k.lower(): v for k, v in msg["content-type"].params.items()}
        if msg["content-type"]
        else {},
        "parts": [describe(p) for p in msg.iter_parts()],
    }
    json.dump(out, sys.stdout, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
