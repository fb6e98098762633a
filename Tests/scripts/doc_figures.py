#!/usr/bin/env python3
"""Every figure quoted in the docs comes from a generated file, or says it was measured by hand, when, and how.

A figure is a number outside code (fenced blocks and `code spans` are commands and constants) written with
a decimal point or with at least three digits (1,234 and 12.5 %; not 4 or 64). It passes when
  * some number in a generated file under results/ (*.md, *.json, *.jsonl, *.txt) equals it at the
    precision it is written with (results say 1806.4, the docs may say 1806 or 1,806), or
  * its section (from the note to the next heading) holds a hand-measurement note — a line
    with "hand measurement", a date YYYY-MM-DD and a `command` in a code span — e.g.
        *Hand measurement, 2026-12-04, shared 2-core machine:* `time make demo`
  * its section holds a note of figures computed rather than measured —
    a line starting "*Computed" (e.g. "*Computed from the sizes, not measured:*"): arithmetic on sizes, or
  * it is in a table column (or row) that quotes the papers: header or first cell naming the seed,
    the paper, the report, OWT or LM1B.
Specification documents (SPECS) define numbers rather than measure them and are not checked.
Not figures: section numbers (§3.2, Table 13, seed 003, Fig. 2), years, dates and versions (1.2.3),
powers of two and of ten and 2^k - 1 (sizes and settings: 256, 1024, 1000, 255), numbers in links and paths.

    python3 Tests/scripts/doc_figures.py            # README.md, data/README.md, docs/*.md
    python3 Tests/scripts/doc_figures.py FILE...    # these files
Exits 1 listing each unbacked figure (file:line, the number, the line). Files in PENDING are checked
and reported but do not fail the run (their owners move them to generated files).
"""
import glob, json, os, re, sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# Files whose figures are reported but do not fail the run (none: every section of docs/benchmarks.md is dated).
PENDING = set()
SPECS = {"docs/stream-format.md", "docs/tokenizer.md", "docs/scorer-protocol.md", "docs/pack-blocks.md"}
NUM = re.compile(r"(?<![\w.\-/#@:])[-−]?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d{3,})(?![\w.]*[\w/])")
NOT_FIGURE_BEFORE = re.compile(r"(§|\bTables?|\bFig\.?|\bFigure|\bseed|\bpaper|\bversion|\bv|\bissue|\bPR|\bBY|\bAttribution"
                               r"|\bPython|\bSwift|\bOpenBLAS|\boneDNN|\btorch|\bdiatheke|\bshakespeare|\bU\+|\bEMA|min\()\s*$", re.I)
HAND = re.compile(r"hand[- ]measure(ment|d)", re.I)
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
COMPUTED = re.compile(r"\s*\*+Computed\b")


def numbers_in_results():
    """Every number in the generated files, rounded to 0-4 decimals (as strings without separators)."""
    seen = set()
    for path in glob.glob(os.path.join(ROOT, "results", "**", "*"), recursive=True):
        if not path.endswith((".md", ".json", ".jsonl", ".txt")):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for m in re.finditer(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
            s = m.group(0).replace(",", "")
            try:
                x = float(s)
            except ValueError:
                continue
            seen.add(s)
            for d in range(5):
                seen.add(f"{x:.{d}f}")
                seen.add(f"{x * 100:.{d}f}")      # fractions quoted as percentages
    return seen


def not_a_figure(s, before, after):
    v = s.replace(",", "").lstrip("-−")
    if NOT_FIGURE_BEFORE.search(before):
        return True
    if "." not in v:
        n = int(v)
        if 1900 <= n <= 2100 and "," not in s:
            return True                                   # a year
        if n & (n - 1) == 0 or (n + 1) & n == 0 or re.fullmatch(r"10*", v):
            return True                                   # a power of two or of ten: a size or a setting
    if re.match(r"\.\d|-\d", after) or re.search(r"\d\.$", before):
        return True                                       # part of a version a.b.c
    return False


QUOTE = re.compile(r"\bseed\b|\bOWT\b|\bLM1B\b|\breport\b|\bpaper\b", re.I)


def quoted_cells(lines, i, text):
    """Character ranges of a table row that quote the papers: cells under a header naming the seed / paper,
    and whole rows whose first cell does (e.g. "*seed 000, L' = 4*")."""
    if not text.lstrip().startswith("|"):
        return []
    h = i
    while h > 0 and lines[h - 1].lstrip().startswith("|"):
        h -= 1
    header = [c for c in lines[h].strip().strip("|").split("|")]
    cells, pos, out = [], text.index("|") + 1, []
    for k, c in enumerate(text.strip().strip("|").split("|")):
        start = text.index(c, pos) if c else pos
        cells.append((start, start + len(c)))
        pos = start + len(c) + 1
    first = text.strip().strip("|").split("|")[0]
    if re.match(r"\s*\*?\s*seed\b", first, re.I):
        return [(0, len(text))]
    for k, (a, b) in enumerate(cells):
        if k < len(header) and QUOTE.search(header[k]) and i != h:
            out.append((a, b))
    return out


def check(path, seen):
    bad = []
    rel = os.path.relpath(path, ROOT)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # blocks: runs of non-blank lines; a block is hand-measured (or computed) when it or an earlier block of
    # its section holds such a note
    note = lambda l: bool(HAND.search(l) and DATE.search(l) and re.search(r"`[^`]+`", l)) or bool(COMPUTED.match(l))
    hand, blocks, cur = [False] * len(lines), [], []
    for i, l in enumerate(lines + [""]):
        if l.strip():
            cur.append(i)
        elif cur:
            blocks.append(cur)
            cur = []
    # a note covers its own block and every later block of its section (up to the next heading)
    noted = False
    for b in blocks:
        if lines[b[0]].startswith("#"):
            noted = False
        noted = noted or any(note(lines[k]) for k in b)
        for k in b:
            hand[k] = noted
    fence = False
    for i, l in enumerate(lines):
        if l.startswith("```"):
            fence = not fence
            continue
        if fence or hand[i] or l.lstrip().startswith("<!--"):
            continue
        text = re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), l)              # code spans
        text = re.sub(r"\]\([^)]*\)|https?://\S+", lambda m: " " * len(m.group(0)), text)   # links
        text = DATE.sub(lambda m: " " * len(m.group(0)), text)
        text = re.sub(r"\b\d{1,2}:\d{2}(:\d{2})?\b", lambda m: " " * len(m.group(0)), text)  # clock times
        skip = quoted_cells(lines, i, text)
        for m in NUM.finditer(text):
            s = m.group(1)
            if any(a <= m.start() < b for a, b in skip):
                continue
            if not_a_figure(s, text[max(0, m.start() - 12):m.start()], text[m.end():m.end() + 2]):
                continue
            if s.replace(",", "") in seen:
                continue
            bad.append(f"{rel}:{i + 1}: {s}   | {l.strip()[:140]}")
    return bad


def main():
    files = sys.argv[1:] or (["README.md", "data/README.md"] +
                             sorted(f for f in glob.glob("docs/*.md", root_dir=ROOT) if f not in SPECS))
    seen = numbers_in_results()
    failed, pending = [], []
    for f in files:
        bad = check(os.path.join(ROOT, f), seen)
        (pending if f in PENDING else failed).extend(bad)
    for b in pending:
        print("pending: " + b)
    for b in failed:
        print(b)
    if pending:
        print(f"doc_figures: {len(pending)} figures in {', '.join(sorted(PENDING))} not yet backed (reported, not failed)")
    if failed:
        print(f"doc_figures: {len(failed)} figures are in no file under results/ and in no dated hand-measurement "
              "section; generate them into results/ or add a line '*Hand measurement, YYYY-MM-DD:* `command`' to their section")
        return 1
    print(f"doc_figures: every figure in {len(files) - len(PENDING & set(files))} files is backed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
