#!/usr/bin/env python3
"""Fails when a folder of Sources/BlockDiffusion uses a name declared in a folder it may not depend on.

The order is docs/architecture.md's: a folder may use the folders listed for it, nothing else.
A name is "declared" in a folder when a top-level (or member) declaration of that name is in one of its
files; a use is a whole-word occurrence outside comments and string literals. Names declared in two
folders are skipped (they are ambiguous to a word scan: e.g. a method name reused).
Run from the repository root: python3 Tests/scripts/layers.py
"""
import os, re, sys

ALLOWED = {
    "Support":     [],
    "Streams":     ["Support"],
    "Tokenizer":   ["Support", "Streams"],
    "Packing":     ["Support", "Streams"],
    "Diffusion":   ["Support"],
    "Model":       ["Support", "Diffusion"],
    "Checkpoint":  ["Support", "Streams", "Tokenizer", "Diffusion", "Model"],
    "Objectives":  ["Support", "Streams", "Diffusion", "Model", "Checkpoint"],
    "Training":    ["Support", "Streams", "Diffusion", "Model", "Checkpoint", "Objectives"],
    "Sampling":    ["Support", "Streams", "Tokenizer", "Diffusion", "Model", "Checkpoint", "Objectives"],
    "Scoring":     ["Support", "Streams", "Tokenizer", "Diffusion", "Model", "Checkpoint", "Objectives"],
}
ROOT = "Sources/BlockDiffusion"
DECL = re.compile(r"^\s*(?:(?:public|internal|private|fileprivate|final|static|nonisolated|@\w+(?:\([^)]*\))?)\s+)*"
                  r"(?:class|struct|enum|protocol|func|typealias|actor|let|var)\s+([A-Za-z_]\w*)", re.M)
TOP = re.compile(r"^(?:(?:public|internal|final|@\w+)\s+)*(?:class|struct|enum|protocol|func|typealias|actor|let|var)\s+([A-Za-z_]\w*)", re.M)


def strip(src):
    src = re.sub(r'"""[\s\S]*?"""', '""', src)
    src = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', src)
    src = re.sub(r"/\*[\s\S]*?\*/", "", src)
    return re.sub(r"//.*", "", src)


def main():
    folders = sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)))
    unknown = [d for d in folders if d not in ALLOWED]
    if unknown:
        print(f"layers: folder(s) {unknown} are not in the order of Tests/scripts/layers.py and docs/architecture.md")
        return 1
    files, owner = {}, {}
    for d in folders:
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            if f.endswith(".swift"):
                src = strip(open(os.path.join(ROOT, d, f), encoding="utf-8").read())
                files[(d, f)] = src
                for m in TOP.finditer(src):        # top-level names only: members are reached through their type
                    owner.setdefault(m.group(1), set()).add(d)
    bad = []
    for (d, f), src in files.items():
        for w in sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", src))):
            homes = owner.get(w)
            if not homes or len(homes) != 1 or d in homes:
                continue
            (home,) = homes
            if home not in ALLOWED[d]:
                bad.append(f"{ROOT}/{d}/{f}: uses {w} from {home}/ ({d} may use: {', '.join(ALLOWED[d]) or 'nothing'})")
    for b in bad:
        print(b)
    print(f"layers: {len(files)} files in {len(folders)} folders, {len(bad)} upward use(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
