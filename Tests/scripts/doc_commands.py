#!/usr/bin/env python3
"""Every command the docs and the help pages show must work with the tools as built.

  help pages   every tool and subcommand: --help exits 0 and shows an example of itself; its paragraphs
               have no hard line break mid-sentence (they wrap where the terminal wraps them); no example
               line is wrapped by the terminal (each fits in 80 columns or continues with a backslash);
               every example parses (exit 0 under BD3_PARSE_ONLY=1: arguments parsed and validated, no file
               opened).
  docs         README.md and docs/*.md: every command line of the seven tools in a code block (except
               ```text blocks, which hold diagrams) parses the
               same way; a synopsis line ([optional] parts, a|b alternatives, FILE...) and a command quoted
               inline in the text must name only options the tool has.

Usage: python3 Tests/scripts/doc_commands.py [--bin .build/debug]   (run by `make test` after `swift build`)
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys

TOOLS = ["tokenize", "pack-blocks", "train", "score", "draft", "remask", "refine"]
SUBCOMMANDS = {"tokenize": ["train", "import", "encode", "decode", "stats"], "score": ["ppl", "gen"]}
WIDTH = 80  # ArgumentParser wraps help to 80 columns when stdout is not a terminal

errors = []


def fail(where, what):
    errors.append(f"{where}: {what}")


def run(bindir, argv, parse_only):
    env = dict(os.environ, BD3_NO_REEXEC="1")
    if parse_only:
        env["BD3_PARSE_ONLY"] = "1"
    p = subprocess.run([os.path.join(bindir, argv[0])] + argv[1:], env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    return p.returncode, p.stdout, p.stderr


def help_text(bindir, page, cache={}):
    if page not in cache:
        code, out, err = run(bindir, list(page) + ["--help"], parse_only=False)
        cache[page] = (code, out, err)
    return cache[page]


def options_of(bindir, page):
    """The option names (--long and -s) a help page lists."""
    _, out, _ = help_text(bindir, page)
    opts = set()
    section = out.split("USAGE:", 1)[1] if "USAGE:" in out else ""
    for line in section.splitlines():   # every section: OPTIONS, and the titled option groups
        m = re.match(r"\s{2}(-[^\s<]+(?:, -[^\s<]+)*)", line)
        if m:
            opts.update(o.strip() for o in m.group(1).split(","))
    return opts


def page_of(words):
    """('score', 'ppl') for ['score', 'ppl', ...], ('draft',) for ['draft', ...]."""
    if words[0] in SUBCOMMANDS and len(words) > 1 and words[1] in SUBCOMMANDS[words[0]]:
        return (words[0], words[1])
    return (words[0],)


def strip_prefix(cmd):
    cmd = re.sub(r"^\$ ", "", cmd.strip())
    return re.sub(r"^(\.build/(release|debug)/|\$\(BIN\)/|\$BIN/)", "", cmd)


def argv_of(segment):
    """Arguments of one pipeline segment without shell redirections and comments, or None if unparsable."""
    try:
        words = shlex.split(segment, comments=True)
    except ValueError:
        return None
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if re.fullmatch(r"\d?[<>]{1,2}", w):
            skip = True
            continue
        if re.fullmatch(r"\d?[<>]{1,2}\S+", w):
            continue
        out.append(w)
    return out


def is_synopsis(segment):
    return bool(re.search(r"\[|\(|…|\.\.\.|\|", segment))


def check_options(bindir, where, words):
    page = page_of(words)
    known = options_of(bindir, page)
    for w in words[len(page):]:
        name = w.split("=", 1)[0]
        if re.fullmatch(r"--[a-z][a-z0-9-]*", name) or re.fullmatch(r"-[a-zA-Z]", name):
            if name not in known:
                fail(where, f"`{' '.join(page)}` has no option {name}")


def check_command(bindir, where, line, parse):
    """A command line, maybe a pipeline of our tools: parse every segment (or only check its options)."""
    line = strip_prefix(line)
    segments = [strip_prefix(s) for s in re.split(r"\s\|\s", line)]
    if any(not s.split() or s.split()[0].startswith("-") for s in segments[1:]):
        # "--a X | --b Y": alternatives of a synopsis, not a pipe.
        segments, parse = [line.replace("|", " ")], False
    for seg in segments:
        words = seg.split()
        if not words or words[0] not in TOOLS:
            continue
        if not parse or is_synopsis(seg):
            check_options(bindir, where, [w.strip("[]()") for w in words])
            continue
        argv = argv_of(seg)
        if argv is None:
            fail(where, f"cannot split `{seg}`")
            continue
        code, _, err = run(bindir, argv, parse_only=True)
        if code != 0:
            first = err.strip().splitlines()[0] if err.strip() else ""
            fail(where, f"`{' '.join(argv)}` does not parse (exit {code}): {first}")


def joined_lines(lines):
    """Lines with backslash continuations joined."""
    out, cur = [], ""
    for l in lines:
        if l.rstrip().endswith("\\"):
            cur += l.rstrip()[:-1] + " "
        else:
            out.append(cur + l)
            cur = ""
    if cur:
        out.append(cur)
    return out


def check_help(bindir, page):
    where = f"{' '.join(page)} --help"
    code, out, err = help_text(bindir, page)
    if code != 0:
        fail(where, f"exit {code}: {err.strip()}")
        return
    lines = out.split("\n")
    try:
        end = next(i for i, l in enumerate(lines) if l.startswith("USAGE:"))
    except StopIteration:
        fail(where, "no USAGE line")
        return
    body = lines[:end]
    examples = []
    for i, l in enumerate(body):
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if l and not l.startswith(" ") and nxt and not nxt.startswith(" ") and not l.rstrip().endswith(":"):
            first = nxt.split()[0]
            # ArgumentParser ends lines before column 80, counting UTF-8 bytes (γ, ⌊ count 2-3).
            if len(l.encode()) + 1 + len(first.encode()) < WIDTH:
                fail(where, f"hard line break mid-paragraph after: {l!r}")
        if l.startswith("  ") and nxt and not nxt.startswith(" ") and l.strip().split()[0] in TOOLS and not l.rstrip().endswith("\\"):
            fail(where, f"example wrapped by the terminal: {l.strip()!r} / {nxt!r}")
    for l in joined_lines([l for l in body if l.startswith("  ")]):
        s = l.strip()
        if s.split() and s.split()[0] in TOOLS:
            examples.append(s)
    name = " ".join(page)
    if not any(e.startswith(name + " ") or (" | " + name + " ") in e for e in examples):
        fail(where, f"no example of `{name}`")
    for e in examples:
        check_command(bindir, where, e, parse=True)


def check_docs(bindir, root):
    files = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    for f in files:
        text = open(f, encoding="utf-8").read()
        rel = os.path.relpath(f, root)
        for lang, block in re.findall(r"```([^\n]*)\n(.*?)```", text, re.S):
            if lang.strip() == "text":
                continue   # a diagram, not commands
            lines = []
            for line in joined_lines(block.split("\n")):
                # An indented "[--opt ...]" line continues the synopsis above it.
                if lines and re.match(r"\s+[\[-]", line):
                    lines[-1] += " " + line.strip()
                else:
                    lines.append(line)
            for line in lines:
                s = strip_prefix(line)
                if s.split() and s.split()[0] in TOOLS:
                    check_command(bindir, rel, s, parse=True)
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", prose):
            s = strip_prefix(span.replace("\\|", "|"))
            if len(s.split()) > 1 and s.split()[0] in TOOLS:
                check_command(bindir, rel, s, parse=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=".build/debug", help="directory of the built tools")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."), help="repository root")
    a = ap.parse_args()
    for t in TOOLS:
        if not os.access(os.path.join(a.bin, t), os.X_OK):
            sys.exit(f"doc_commands: {a.bin}/{t} not built (run swift build first)")
    pages = [(t,) for t in TOOLS] + [(t, s) for t, subs in SUBCOMMANDS.items() for s in subs]
    for p in pages:
        check_help(a.bin, p)
    check_docs(a.bin, a.root)
    for e in errors:
        print("doc_commands:", e)
    print(f"doc_commands: {len(pages)} help pages and the docs checked, {len(errors)} problem(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
