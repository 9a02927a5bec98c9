#!/usr/bin/env python3
"""Lines per file and per function of server/*.c, for a tree or a git revision.

    scripts/code-stats.py [REV]     (default: the working tree)

A function is a top-level definition: a line starting at column 0 with an identifier and '(',
whose body opens with '{' alone on the next line and ends with '}' alone at column 0."""
import re
import subprocess
import sys


def files_at(rev):
    if rev is None:
        import glob
        for p in sorted(glob.glob("server/*.c")):
            yield p, open(p).read()
        return
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "server/"], check=True,
                           capture_output=True, text=True).stdout.split()
    for p in sorted(n for n in names if n.endswith(".c")):
        yield p, subprocess.run(["git", "show", "%s:%s" % (rev, p)], check=True,
                                capture_output=True, text=True).stdout


def functions(text):
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines) - 1:
        m = re.match(r"^[A-Za-z_].*?\b([A-Za-z_]\w*)\(", lines[i])
        if m and not lines[i].rstrip().endswith(";"):
            j = i
            while j < len(lines) and lines[j] != "{" and not lines[j].rstrip().endswith(";"):
                j += 1
            if j < len(lines) and lines[j] == "{":
                k = j + 1
                while k < len(lines) and lines[k] != "}":
                    k += 1
                out.append((m.group(1), k - i + 1))
                i = k
        i += 1
    return out


def main():
    rev = sys.argv[1] if len(sys.argv) > 1 else None
    total = 0
    funcs = []
    per_file = []
    for path, text in files_at(rev):
        n = text.count("\n")
        total += n
        per_file.append((n, path))
        funcs += [(ln, path.split("/")[-1] + ":" + name) for name, ln in functions(text)]
    per_file.sort(reverse=True)
    funcs.sort(reverse=True)
    print("revision: %s" % (rev or "working tree"))
    print("server/*.c: %d files, %d lines, %d functions" % (len(per_file), total, len(funcs)))
    print("largest files: " + ", ".join("%s %d" % (p.split("/")[-1], n) for n, p in per_file[:6]))
    lens = sorted(n for n, _ in funcs)
    print("function length: median %d, p90 %d, max %d; over 60 lines: %d; over 100: %d" % (
        lens[len(lens) // 2], lens[int(len(lens) * 0.9)], lens[-1],
        sum(1 for n in lens if n > 60), sum(1 for n in lens if n > 100)))
    print("longest functions: " + ", ".join("%s %d" % (f, n) for n, f in funcs[:8]))


if __name__ == "__main__":
    main()
