#!/usr/bin/env python3
"""tests/data/split-corpus.py — split the labelled replies into a tune part and
a held-out part, by source, deterministically.

Usage: tests/data/split-corpus.py [--check]   (from anywhere)

Reads tests/data/replies-dev.jsonl and writes replies-tune.jsonl and
replies-heldout.jsonl next to it (--check: only compares them, exit 1 if
they differ from what this script would write).

Rule (docs/scheduler.md, "Corpus"):
1. A line's source field has parts separated by ";" or " + "; the
   references of a part are the pages and files it names ("github:OWNER/
   REPO:PATH", a URL, "github-index file id N", remarks included), else its
   text before any " (" remark ("seed"). Lines sharing a reference belong to
   one source group (connected components), so one page, file or seed set
   falls on one side.
2. Groups are ordered by the SHA-256 of their smallest reference; the first
   groups in that order go to the held-out part until it holds at least
   20 % of the lines. Everything else is the tune part.
3. Lines keep their order of replies-dev.jsonl in both parts.
Rules are written against the tune part only; the held-out part is read
only to report accuracy (test_corpus.c).
"""
import hashlib
import json
import os
import re
import sys

HELD_OUT_SHARE = 0.20
HERE = os.path.dirname(os.path.abspath(__file__))
REF = re.compile(r"github:[^\s();,']+|https?://[^\s();,']+|github-index file id \d+")


def references(source):
    refs = []
    for part in re.split(r"\s*;\s*|\s+\+\s+", source):
        # the pages and files it names (also inside remarks: "(awsdocs copy,
        # github-index file id …)"), else its text without the remarks
        found = REF.findall(part)
        if found:
            refs.extend(found)
        elif part.split(" (")[0].strip():
            refs.append(part.split(" (")[0].strip())
    return refs or [source.strip()]


def split(lines):
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    refs_of = []
    for line in lines:
        refs = references(json.loads(line)["source"])
        refs_of.append(refs)
        for r in refs[1:]:
            parent[find(r)] = find(refs[0])
        find(refs[0])
    groups = {}
    for i, refs in enumerate(refs_of):
        groups.setdefault(find(refs[0]), []).append(i)
    members = {}
    for r in parent:
        members.setdefault(find(r), []).append(r)
    order = sorted(groups, key=lambda g: hashlib.sha256(min(members[g]).encode()).hexdigest())
    held = set()
    for g in order:
        if len(held) >= HELD_OUT_SHARE * len(lines):
            break
        held.update(groups[g])
    tune = [l for i, l in enumerate(lines) if i not in held]
    heldout = [l for i, l in enumerate(lines) if i in held]
    return tune, heldout


def main():
    check = "--check" in sys.argv[1:]
    with open(os.path.join(HERE, "replies-dev.jsonl")) as f:
        lines = [l if l.endswith("\n") else l + "\n" for l in f if l.strip()]
    tune, heldout = split(lines)
    ok = True
    for name, part in (("replies-tune.jsonl", tune), ("replies-heldout.jsonl", heldout)):
        path = os.path.join(HERE, name)
        text = "".join(part)
        if check:
            try:
                same = open(path).read() == text
            except OSError:
                same = False
            if not same:
                print(f"{path}: differs from the split of replies-dev.jsonl", file=sys.stderr)
                ok = False
        else:
            with open(path, "w") as f:
                f.write(text)
    print(f"{len(lines)} replies: {len(tune)} tune, {len(heldout)} held out")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
