#!/usr/bin/env python3
"""Leave-source-out cross-validation of the shipped rules inside the tune split.

The rules were written against the whole tune split, so measuring them on it
(99 %) says how well they remember it, not how well they do on replies they
never saw. This script estimates the second figure without the held-out split:

1. Folds. tune.jsonl is split by source into FOLDS folds, with the group of
   split.py (one provider page, one MTA source file, one bounce falls in one
   fold): a group's fold is sha256("cv:" + group) mod FOLDS. Deterministic; it
   depends on the group's name only.
2. Rules as if the fold had not been seen. The rule texts are alternatives
   ("a|b|c"); most were added for one wording of one source. For fold k, every
   top-level alternative of every rule text is kept only when it matches at
   least one reply of the other folds that carries the rule's class and fits
   its reply code and enhanced code ("support"). Alternatives whose only
   support is fold k were written for fold k: they are dropped, and a rule
   left without alternatives is dropped. Rules without a text condition (the
   enhanced-code rules, ".") and the word families of the fallback are
   treated the same way: a family word only fold k uses is dropped too.
3. The pruned policy file classifies fold k (bench/corpus-measure --policy).

The cross-validated figure is the sum over the folds. It is an estimate, and
an optimistic one: an alternative with support in another fold may still
have been written after reading fold k. docs/corpus.md reports it.

Usage: cv.py [--misses] [--folds K,...] [--min-accuracy PCT]
             [--min-deferral-accuracy PCT] CORPUS_MEASURE [POLICY.json]
  CORPUS_MEASURE: build/bench/corpus-measure; POLICY: data/tarry-policy.json
  --misses lists the misses of the named folds (default: all) -- tune replies.
  --min-*: exit 1 when the cross-validated figure (printed to 0.1 %) is below
  PCT (the test corpus-cv-floor, bench/meson.build).
Never run on the held-out split: the script reads tune.jsonl only.
"""
import argparse
import copy
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

FOLDS = 5
HERE = os.path.dirname(os.path.abspath(__file__))


def group(source):
    return re.split(r" \(| ;", source, maxsplit=1)[0].strip()


def fold_of(g):
    return int(hashlib.sha256(("cv:" + g).encode()).hexdigest()[:8], 16) % FOLDS


ENH = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")
TAGGED = re.compile(r"^([A-Za-z0-9_.-]{1,32}) ([245]\.\d{1,3}\.\d{1,3})(?=\s|$)")


def parse(reply):
    """(code, enhanced, text) roughly as scheduler/classify.c parses a reply."""
    code, enh, parts = "", "", []
    for n, line in enumerate(reply.replace("\r", "").split("\n")):
        m = re.match(r"^(\d{3})(?:[ \t-]|$)", line)
        if m:
            if n == 0:
                code = m.group(1)
            line = line[m.end():]
        line = line.lstrip(" \t")
        m = ENH.match(line)
        if m:
            if n == 0:
                enh = m.group(0)
            line = line[m.end():].lstrip(" \t")
        elif n == 0:
            # a vendor tag or host name before the code (classify.c tag_len_at)
            m = TAGGED.match(line)
            if m and re.search(r"[^A-Za-z]", m.group(1)):
                enh = m.group(2)
                line = m.group(1) + line[m.end():]
        if line:
            parts.append(re.sub(r"[\x00-\x1f\x7f]", " ", line))
    text = " ".join(parts)
    if not enh:
        ms = list(re.finditer(r"\(#([245]\.\d{1,3}\.\d{1,3})[^)]{0,28}\)", text))
        if ms:
            enh = ms[-1].group(1)
            text = (text[: ms[-1].start()] + text[ms[-1].end():]).rstrip(" ")
    return code, enh, text


def alternatives(rx):
    """The top-level '|' alternatives of a POSIX ERE."""
    out, depth, cls, cur, i = [], 0, False, "", 0
    while i < len(rx):
        ch = rx[i]
        if ch == "\\" and i + 1 < len(rx):
            cur += rx[i : i + 2]
            i += 2
            continue
        if cls:
            if ch == "]" and not cur.endswith("[") and not cur.endswith("[^"):
                cls = False
        elif ch == "[":
            cls = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    out.append(cur)
    return out


def py_re(rx):
    return re.compile(rx.replace("[[:space:]]", r"\s").replace("[[:digit:]]", r"\d"), re.I)


def alt_match(pat, s):
    return any(fnmatch.fnmatchcase(s, p) for p in pat.split("|"))


def fits(rule, code, enh):
    if not alt_match(rule.get("code", "4??"), code):
        return False
    e = rule.get("enhanced", "*")
    if e == "-":
        return enh == ""
    return e == "*" or (enh != "" and alt_match(e, enh))


def supported(rx, rows, cls, rule=None):
    try:
        r = py_re(rx)
    except re.error:
        return True  # a pattern Python cannot read: keep it (optimistic)
    for code, enh, text, label in rows:
        if label == cls and (rule is None or fits(rule, code, enh)) and r.search(text):
            return True
    return False


def prune(policy, rows):
    p = copy.deepcopy(policy)
    kept = []
    for rule in p["rules"]:
        alts = [a for a in alternatives(rule["text"]) if supported(a, rows, rule["class"], rule)]
        if alts:
            rule["text"] = "|".join(alts)
            kept.append(rule)
    p["rules"] = kept
    for fam in p.get("word_families", []):
        fam["words"] = [w for w in fam["words"] if supported(w, rows, fam["class"])]
    p["word_families"] = [f for f in p.get("word_families", []) if f["words"]]
    if not p["word_families"]:
        p.pop("word_families", None)
    return p


def measure(exe, policy_path, lines, misses):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.writelines(lines)
        name = f.name
    try:
        args = [exe, "--policy", policy_path] + (["--misses"] if misses else []) + [name]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(name)
    m = re.search(r"class accuracy \S+ % \((\d+)/(\d+)\)\ndeferrals.*\((\d+)/(\d+)\)", out)
    per = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 6 and f[1].isdigit():
            per[f[0]] = tuple(int(x) for x in f[1:4])
    miss = [l[5:] for l in out.splitlines() if l.startswith("MISS ")]
    return tuple(int(x) for x in m.groups()), per, miss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--misses", action="store_true")
    ap.add_argument("--folds", default=",".join(str(k) for k in range(FOLDS)))
    ap.add_argument("--min-accuracy", type=float, default=-1)
    ap.add_argument("--min-deferral-accuracy", type=float, default=-1)
    ap.add_argument("exe")
    ap.add_argument("policy", nargs="?", default=os.path.join(HERE, "../../../data/tarry-policy.json"))
    a = ap.parse_args()
    folds = [int(k) for k in a.folds.split(",")]
    with open(a.policy) as f:
        policy = json.load(f)
    lines = [[] for _ in range(FOLDS)]
    rows = [[] for _ in range(FOLDS)]
    with open(os.path.join(HERE, "tune.jsonl")) as f:
        for line in f:
            o = json.loads(line)
            k = fold_of(group(o["source"]))
            lines[k].append(line)
            rows[k].append(parse(o["reply"]) + (o["class"],))
    tot = [0, 0, 0, 0]
    per_all = {}
    for k in folds:
        train = [r for j in range(FOLDS) if j != k for r in rows[j]]
        pruned = prune(policy, train)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(pruned, f)
            pp = f.name
        try:
            (ok, n, tok, tn), per, miss = measure(a.exe, pp, lines[k], a.misses)
        finally:
            os.unlink(pp)
        nalts = sum(len(alternatives(r["text"])) for r in policy["rules"])
        kalts = sum(len(alternatives(r["text"])) for r in pruned["rules"])
        print("fold %d: %3d replies %5.1f %% (%d/%d), deferrals %5.1f %% (%d/%d); "
              "alternatives kept %d of %d" % (k, n, 100 * ok / n, ok, n, 100 * tok / max(tn, 1),
                                              tok, tn, kalts, nalts))
        for m in miss:
            print("  MISS fold %d %s" % (k, m))
        for x, v in zip(range(4), (ok, n, tok, tn)):
            tot[x] += v
        for c, (lab, got, hit) in per.items():
            s = per_all.setdefault(c, [0, 0, 0])
            s[0] += lab
            s[1] += got
            s[2] += hit
    ok, n, tok, tn = tot
    print("cross-validated: %d replies %.1f %% (%d/%d), deferrals %.1f %% (%d/%d)"
          % (n, 100 * ok / n, ok, n, 100 * tok / max(tn, 1), tok, tn))
    print("%-13s %6s %6s %6s %6s %6s" % ("class", "label", "got", "right", "prec%", "rec%"))
    for c, (lab, got, hit) in per_all.items():
        print("%-13s %6d %6d %6d %6s %6s" % (c, lab, got, hit,
              "%.1f" % (100 * hit / got) if got else "-", "%.1f" % (100 * hit / lab) if lab else "-"))
    rc = 0
    # compare tenths of a percent, rounded as printed
    for name, a_, b_, floor in (("class accuracy", ok, n, a.min_accuracy),
                                ("deferral class accuracy", tok, tn, a.min_deferral_accuracy)):
        if floor >= 0 and (2000 * a_ + b_) // (2 * b_) < round(floor * 10):
            print("cv.py: cross-validated %s is below %.1f %%" % (name, floor), file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
