"""Shared helpers for the corpus extractors: whitespace normalisation and atomic JSONL output.

Every extractor emits documents in a deterministic order as JSON lines
{"text": ..., "source": ...}; consumers only need "text", "source" says where it came from.
"""
import hashlib
import json
import os
import re
import sys
import tempfile
import unicodedata

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")   # runs of horizontal whitespace (incl. no-break space)
_BLANKS = re.compile(r"\n{3,}")             # more than one blank line


def normalise(text):
    """NFC, unix newlines, single spaces inside lines, no trailing spaces, at most one blank line.

    Line breaks are kept because they carry meaning in verse, plays and lists."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def chunk_paragraphs(paragraphs, max_bytes):
    """Greedily join paragraphs (blank-line separated) into chunks of at most ~max_bytes.

    Used for sources made of many tiny items (fortunes, dictionary entries) so that a
    document is a sensible length rather than one line."""
    chunk, size = [], 0
    for p in paragraphs:
        n = len(p.encode("utf-8")) + 2
        if chunk and size + n > max_bytes:
            yield "\n\n".join(chunk)
            chunk, size = [], 0
        chunk.append(p)
        size += n
    if chunk:
        yield "\n\n".join(chunk)


def write_jsonl(path, docs):
    """Write (source, text) pairs as JSON lines, atomically (temp file + rename).

    Texts are normalised here; empty documents and exact duplicates (after normalisation; the
    BBC set has ~100) are dropped, the first occurrence kept. Returns the count written."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".jsonl")
    count, dropped, seen = 0, 0, set()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for source, text in docs:
                text = normalise(text)
                digest = hashlib.sha256(text.encode("utf-8")).digest()
                if not text or digest in seen:
                    dropped += 1
                    continue
                seen.add(digest)
                out.write(json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n")
                count += 1
        os.chmod(tmp, 0o644)   # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if count == 0:
        os.unlink(path)
        sys.exit(f"error: no documents extracted for {path}; check the input package")
    print(f"{path}: {count} documents ({dropped} empty or duplicate dropped)", file=sys.stderr)
    return count


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
