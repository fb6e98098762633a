"""World English Bible (with Deuterocanon) via `diatheke` (Debian sword-text-web) -> one doc per chapter.

usage: web.py OUT.jsonl

We ask diatheke for one book at a time, `diatheke -b engWEB2015eb -f plain -o f -k BOOK`, because
over a multi-book range it repeats a stale Psalm heading before every later verse. Its output:
each verse starts a line "Book C:V: text", poetry continues on the following lines, and a verse
that has a heading (Psalm superscriptions) is indented, its heading on the line just above.
diatheke repeats that heading before every later verse of the book, so a heading is kept only
at verse 1 or when it changes. Footnotes are requested (-o f) only because without them
diatheke glues the neighbouring words together ("Godcreated"); we cut them out: "[C:V note]".
A chapter becomes "Book C" on its own line, then its verses (verse numbers dropped).
"""
import re
import subprocess
import sys

from common import write_jsonl

MODULE = "engWEB2015eb"
BOOKS = """Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|I Samuel|II Samuel|I Kings|
II Kings|I Chronicles|II Chronicles|Ezra|Nehemiah|Esther|Job|Psalms|Proverbs|Ecclesiastes|
Song of Solomon|Isaiah|Jeremiah|Lamentations|Ezekiel|Daniel|Hosea|Joel|Amos|Obadiah|Jonah|Micah|
Nahum|Habakkuk|Zephaniah|Haggai|Zechariah|Malachi|Tobit|Judith|Esther (Greek)|Wisdom|Sirach|Baruch|
I Maccabees|II Maccabees|I Esdras|Prayer of Manasses|Additional Psalm|III Maccabees|II Esdras|
IV Maccabees|Matthew|Mark|Luke|John|Acts|Romans|I Corinthians|II Corinthians|Galatians|Ephesians|
Philippians|Colossians|I Thessalonians|II Thessalonians|I Timothy|II Timothy|Titus|Philemon|Hebrews|
James|I Peter|II Peter|I John|II John|III John|Jude|Revelation of John"""
BOOKS = [b.strip() for b in BOOKS.split("|")]   # NRSVA order, 80 books, as diatheke names them

VERSE = re.compile(r"^(\s*)((?:[IV]+ )?[A-Z][A-Za-z ()]*?) (\d+):(\d+): ?(.*)$")
# "[C:V note]" or "[C:V-W note]", notes may hold one level of [brackets]; also empty "[]"
FOOTNOTE = re.compile(r"\s*\[(\d+:\d+(-\d+)? ([^\[\]]|\[[^\]]*\])*)?\]")
QUERY = {"Esther (Greek)": "EsthGr"}   # diatheke cannot parse the parenthesised name as a key
GLOSSARY = "The following words used in the World English Bible"   # appended to Revelation 22:21


def chapters(book, output):
    """Yield (chapter, text) for one book's diatheke output."""
    chapter, parts, last_heading, above = None, [], None, ""
    for line in output.split("\n"):
        if GLOSSARY in line or line.strip() == f"({MODULE})":
            break
        m = VERSE.match(line)
        if not m:
            if parts:
                parts[-1] += "\n" + line   # poetry continues on the next line
            elif line.strip():
                above = line   # a heading above the book's first verse
            continue
        indent, name, c, v, text = m.groups()
        if name != book:
            sys.exit(f"error: diatheke returned {name!r} when asked for {book!r}")
        heading = None
        if indent:   # the line above was this verse's heading, not part of the last verse
            if parts:
                parts[-1], _, heading = parts[-1].rpartition("\n")
            else:
                heading = above
        if c != chapter:
            if parts:
                yield chapter, parts
            chapter, parts = c, []
        if heading:   # compare headings without their (varying) footnote markers
            heading = " ".join(FOOTNOTE.sub("", heading).split())
        if heading and (v == "1" or heading != last_heading):
            parts.append("\n\n" + heading + "\n\n")
        last_heading = heading or last_heading
        parts.append(text)
    if parts:
        yield chapter, parts


def documents():
    count = 0
    for book in BOOKS:
        run = subprocess.run(["diatheke", "-b", MODULE, "-f", "plain", "-o", "f", "-k",
                              QUERY.get(book, book)],
                             capture_output=True, text=True, check=True)
        for chapter, parts in chapters(book, run.stdout):
            text = FOOTNOTE.sub("", " ".join(parts))
            if not text.strip():   # NRSVA keeps empty Esther (Greek) 11-16: WEB merged them
                continue
            count += 1
            yield f"web/{book} {chapter}", f"{book} {chapter}\n\n{text}"
    if count < 1300:
        sys.exit(f"error: only {count} chapters from diatheke; is sword-text-web installed?")


if __name__ == "__main__":
    write_jsonl(sys.argv[1], documents())
