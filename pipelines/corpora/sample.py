"""The small public-domain sample shipped in data/ (tests, quickstart), cut from the full corpora.

usage: sample.py train OUT.jsonl web.jsonl shakespeare.jsonl   # data/sample.jsonl
       sample.py reference OUT.jsonl jargon.jsonl               # data/heldout-reference.jsonl
(data/heldout-narrative.jsonl is `mix.py heldout-narrative`, the same set as the full pipeline's.)

Only public-domain sources are shipped: the World English Bible, Shakespeare and the Jargon
File. The training sample avoids everything mix.py holds out, so the held-out sets stay unseen.
"""
import sys

from common import read_jsonl, write_jsonl
from mix import _hash, heldout

SAMPLE_BOOKS = {"Genesis", "Psalms", "Mark", "John"}
SAMPLE_WORKS = {"hamlet", "macbeth", "midsummer_nights_dream", "sonnets"}
REFERENCE_CHUNKS = range(150, 190)   # ~40 x 4 KB of Jargon File lexicon entries


def in_sample(source):
    kind, _, rest = source.partition("/")
    if kind == "web":
        return rest.rsplit(" ", 1)[0] in SAMPLE_BOOKS
    if kind == "shakespeare":
        return rest.split("/")[0] in SAMPLE_WORKS
    return False


def main(role, out, paths):
    docs = [(d["source"], d["text"]) for path in paths for d in read_jsonl(path)]
    if role == "train":
        picked = sorted((d for d in docs if in_sample(d[0]) and heldout(d[0]) is None),
                        key=lambda d: _hash(d[0]))
    elif role == "reference":
        wanted = {f"jargon/{k}" for k in REFERENCE_CHUNKS}
        picked = [d for d in docs if d[0] in wanted]
    else:
        sys.exit(__doc__)
    write_jsonl(out, picked)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
