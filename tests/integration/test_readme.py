"""README.md tells the truth about the things an operator copies from it: the configuration table
lists exactly the settings `kumaguard --help` prints (same variables, flags and defaults), the two
commands come first and exist, and the files it links to are in the repository."""

import os
import re
import subprocess

from kg_harness import BUILD_DIR, ROOT

README = os.path.join(ROOT, "README.md")
ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# "  --db-password VALUE                DB_PASSWORD, DB_PASSWORD_FILE"
HELP_SETTING_RE = re.compile(
    r"^  --([a-z0-9-]+)(?: VALUE)?\s+([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*)\s*$")
HELP_DEFAULT_RE = re.compile(r"\(default: (.*)\)\s*$")


def read_readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def help_settings():
    """{variable: (flag, default text)} from `kumaguard --help`; *_FILE variants share the row."""
    out = subprocess.run([os.path.join(BUILD_DIR, "kumaguard"), "--help"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    lines = out.splitlines()
    settings = {}
    for i, line in enumerate(lines):
        m = HELP_SETTING_RE.match(line)
        if not m:
            continue
        d = HELP_DEFAULT_RE.search(lines[i + 1]) if i + 1 < len(lines) else None
        assert d, "no default on the line after %r" % line
        for var in m.group(2).split(", "):
            settings[var] = ("--" + m.group(1), d.group(1))
    assert len(settings) > 30, "could not parse `kumaguard --help`:\n" + out
    return settings


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def configuration_table(text):
    """Rows of the first table under '## Configuration' as lists of cells."""
    m = re.search(r"^## Configuration\s*$", text, re.M)
    assert m, "README.md has no '## Configuration' section"
    section = text[m.end():]
    nxt = re.search(r"^## ", section, re.M)
    section = section[:nxt.start()] if nxt else section
    rows = [ln for ln in section.splitlines() if ln.lstrip().startswith("|")]
    assert len(rows) > 2, "no table under '## Configuration'"
    header = [c.lower() for c in split_row(rows[0])]
    assert header[:3] == ["variable", "flag", "default"], header
    assert set(rows[1].replace("|", "").strip()) <= set("-: "), "second row is not a separator"
    return [split_row(r) for r in rows[2:]]


def backticked(cell):
    return re.findall(r"`([^`]+)`", cell)


def readme_settings():
    """{variable: (flags in its row, default cell)} from the README's configuration table."""
    settings = {}
    for cells in configuration_table(read_readme()):
        names = [b for b in backticked(cells[0]) if ENV_RE.match(b)]
        assert names, "row without a variable name: %r" % cells
        flags = [b for b in backticked(cells[1]) if b.startswith("--")]
        for var in names:
            assert var not in settings, "%s appears twice in the table" % var
            settings[var] = (flags, cells[2])
    return settings


def test_configuration_table_lists_exactly_the_settings_of_help():
    helped, documented = help_settings(), readme_settings()
    missing = sorted(set(helped) - set(documented))
    extra = sorted(set(documented) - set(helped))
    assert not missing, "in `kumaguard --help` but not in README's table: %s" % missing
    assert not extra, "in README's table but not in `kumaguard --help`: %s" % extra


def test_configuration_table_flags_and_defaults_match_help():
    helped, documented = help_settings(), readme_settings()
    wrong = []
    for var, (flag, default) in sorted(helped.items()):
        if var not in documented:
            continue  # reported by the test above
        flags, default_cell = documented[var]
        if flags != [flag]:
            wrong.append("%s: README flag %s, --help %s" % (var, flags, flag))
        if var == "KUMAGUARD_WEB_DIR":
            # compiled in from the build (source tree or install prefix): README names both
            if "share/kumaguard/web" not in default_cell:
                wrong.append("%s: README should name the installed web directory" % var)
        elif default == "unset":
            if "unset" not in default_cell:
                wrong.append("%s: README default %r, --help unset" % (var, default_cell))
        elif "`%s`" % default not in default_cell:
            wrong.append("%s: README default %r, --help %r" % (var, default_cell, default))
    assert not wrong, "\n".join(wrong)


def test_the_two_commands_come_first_and_exist():
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", read_readme(), re.M | re.S)
    assert [b.strip() for b in blocks[:2]] == ["./scripts/run.sh", "./scripts/test.sh"], blocks[:2]
    for script in ("scripts/run.sh", "scripts/test.sh"):
        path = os.path.join(ROOT, script)
        assert os.path.isfile(path) and os.access(path, os.X_OK), "%s is not executable" % script
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "scripts/test.sh" in f.read(), ".ci/run must run the README's test command"


def test_files_the_readme_links_to_exist():
    text = read_readme()
    targets = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    local = sorted(t for t in targets if not re.match(r"^[a-z]+:", t))
    assert "docs/API.md" in local and "docs/dashboard.png" in local
    missing = [t for t in local if not os.path.exists(os.path.join(ROOT, t))]
    assert not missing, "README.md links to files that are not in the repository: %s" % missing
