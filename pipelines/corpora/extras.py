"""Optional small corpora from Debian packages, cut into ~4 KB documents of whole items.

usage: extras.py fortunes OUT.jsonl   # Debian `fortunes`: /usr/share/games/fortunes/<topic>, "%"-separated
       extras.py jargon OUT.jsonl     # Debian `jargon-text`: the Jargon File 4.4.7, one entry per paragraph

Single fortunes or jargon entries are a line or two, too short to be documents, so consecutive
items of the same file are joined (blank-line separated) up to CHUNK_BYTES.
"""
import gzip
import os
import re
import sys

from common import chunk_paragraphs, write_jsonl

FORTUNES = "/usr/share/games/fortunes"
JARGON = "/usr/share/doc/jargon-text/jargon.txt.gz"
CHUNK_BYTES = 4000
TOC_LINE = re.compile(r"^[ \t]+(?![ \t:])[^\n]{1,60}\n?$")   # but not a ":Headword: n." line
HEADWORD = re.compile(r"^:([^:\n]+):", re.MULTILINE)


def fortunes():
    # the plain topic files; skip the strfile indexes (.dat) and the .u8 symlinks to them
    names = sorted(n for n in os.listdir(FORTUNES)
                   if "." not in n and os.path.isfile(os.path.join(FORTUNES, n)))
    if not names:
        sys.exit(f"error: no fortune files in {FORTUNES}; apt-get install fortunes")
    for name in names:
        with open(os.path.join(FORTUNES, name), encoding="utf-8", errors="replace") as f:
            items = [i.strip("\n") for i in re.split(r"^%$", f.read(), flags=re.MULTILINE)]
        for k, chunk in enumerate(chunk_paragraphs([i for i in items if i.strip()], CHUNK_BYTES)):
            yield f"fortunes/{name}/{k}", chunk


def jargon():
    with gzip.open(JARGON, "rt", encoding="utf-8") as f:
        raw = re.split(r"\n[ \t]*\n", f.read())
    # the tables of contents are indented one-line paragraphs (one per entry name): skip them
    paragraphs = []
    for p in raw:
        if not p.strip() or TOC_LINE.match(p):
            continue
        if paragraphs and HEADWORD.match(paragraphs[-1]) and "\n" not in paragraphs[-1]:
            paragraphs[-1] += "\n" + p.strip()   # keep ":Acme: n." with its definition
        else:
            paragraphs.append(p.strip())
    paragraphs = [HEADWORD.sub(r"\1:", p) for p in paragraphs]
    for k, chunk in enumerate(chunk_paragraphs(paragraphs, CHUNK_BYTES)):
        yield f"jargon/{k}", chunk


if __name__ == "__main__":
    kind, out = sys.argv[1:3]
    write_jsonl(out, {"fortunes": fortunes, "jargon": jargon}[kind]())
