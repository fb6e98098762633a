"""Real text shipped as test data inside the PyPI `gensim` wheel (read from the zip; gensim is not imported).

usage: gensim_data.py wikipedia WHEEL.whl OUT.jsonl   # enwiki articles (shortened 2016 dump) -> one per article
       gensim_data.py abc WHEEL.whl OUT.jsonl         # ABC (Australian) news, Lee corpus -> one per article

The wiki dump holds 205 main-namespace pages, about half of them redirects; the rest are
converted from wikitext to plain text by `wikitext_to_text` (templates, tables, references,
files and categories dropped; links reduced to their label; trailing References/See also/...
sections cut). lee_background.cor (300 articles) and lee.cor (50) have one article per line,
in cp1252.
"""
import bz2
import html
import re
import sys
import xml.etree.ElementTree as ET
import zipfile

from common import write_jsonl

DATA = "gensim/test/test_data/"
WIKI = DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE = [DATA + "lee_background.cor", DATA + "lee.cor"]
MIN_ARTICLE_BYTES = 500   # stubs left after cleaning are mostly lists of links

DROP_BLOCKS = re.compile(r"<(ref|math|gallery|timeline|imagemap|score|syntaxhighlight|source|chem)"
                         r"\b[^>]*?(/>|>.*?</\1\s*>)", re.DOTALL | re.IGNORECASE)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
TAG = re.compile(r"</?[a-zA-Z][^>]*>")
TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")          # innermost first, repeated for nesting
TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
LINK = re.compile(r"\[\[([^\[\]]*)\]\]")           # innermost first, repeated for nesting
EXTERNAL = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
NON_TEXT_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE)
HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.MULTILINE)
END_SECTIONS = re.compile(r"^(references|notes|see also|external links|further reading|bibliography|"
                          r"sources|citations|footnotes)\b", re.IGNORECASE)


def _link(m):
    target, _, label = m[1].partition("|")
    if NON_TEXT_LINK.match(target):
        return ""
    return label.rsplit("|", 1)[-1] if label else target


def _repeat(pattern, repl, text):
    while True:
        text, n = pattern.subn(repl, text)
        if n == 0:
            return text


def wikitext_to_text(title, wiki):
    text = COMMENT.sub("", wiki)
    text = DROP_BLOCKS.sub("", text)
    text = _repeat(TEMPLATE, "", text)
    text = _repeat(TABLE, "", text)
    text = _repeat(LINK, _link, text)
    text = EXTERNAL.sub(lambda m: m[1], text)
    text = TAG.sub("", text)
    text = html.unescape(text)                              # &nbsp; &ndash; ... (XML left them escaped once)
    text = re.sub(r"'{2,}", "", text)                       # ''italic'', '''bold'''
    text = re.sub(r"__[A-Z]+__", "", text)                  # __TOC__ and friends
    lines = []
    for line in text.split("\n"):
        h = HEADING.match(line)
        if h:
            if END_SECTIONS.match(h[2]):
                break
            line = "\n" + h[2]
        else:
            line = re.sub(r"^[*#:;]+\s*", "", line)          # list and indent markers
        lines.append(line)
    body = "\n".join(lines)
    body = re.sub(r"\(\s*[,;]?\s*\)", "", body)             # "( )" left by removed templates
    body = re.sub(r" +([,.;:])", r"\1", body)
    return f"{title}\n\n{body}"


def wikipedia(wheel):
    with zipfile.ZipFile(wheel) as z, z.open(WIKI) as raw:
        for _, el in ET.iterparse(bz2.open(raw)):
            if not el.tag.endswith("}page"):
                continue
            ns = el.find("{*}ns").text
            title = el.find("{*}title").text
            wiki = el.find("{*}revision/{*}text").text or ""
            el.clear()
            if ns != "0" or wiki.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = wikitext_to_text(title, wiki)
            if len(text.encode("utf-8")) >= MIN_ARTICLE_BYTES:
                yield f"wikipedia/{title}", text


def abc(wheel):
    with zipfile.ZipFile(wheel) as z:
        for name in LEE:
            lines = z.read(name).decode("cp1252").split("\n")   # Latin-1 era file ("\xa3" = £)
            stem = name.rsplit("/", 1)[-1][: -len(".cor")]
            for i, line in enumerate(lines):
                yield f"abc/{stem}/{i}", line


if __name__ == "__main__":
    kind, wheel, out = sys.argv[1:4]
    write_jsonl(out, {"wikipedia": wikipedia, "abc": abc}[kind](wheel))
