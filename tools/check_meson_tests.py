#!/usr/bin/env python3
"""Why this file exists: Meson cannot glob, so tests/meson.build and meson.build name the test files and
the example programs explicitly, while CMake finds them with a glob. This script keeps the two builds
running the same things: it compares each explicit list with the files on disk and exits 1 when they
differ (.ci/run runs it), or rewrites the lists with --fix.

    python3 tools/check_meson_tests.py          # check
    python3 tools/check_meson_tests.py --fix    # rewrite the lists from the files on disk
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_files():
    tests = ROOT / "tests"
    return sorted(p.relative_to(tests).as_posix() for p in tests.glob("*/test_*.cpp"))


def example_names():
    return sorted(p.stem for p in (ROOT / "examples").glob("*.cpp"))


# (meson file, marker word, variable, how to list the files on disk)
LISTS = [
    (ROOT / "tests" / "meson.build", "test files", "bora_test_files", test_files),
    (ROOT / "meson.build", "examples", "bora_examples", example_names),
]


def find_block(text, marker, path):
    """Returns (start, end, indent, entries) of the list between the BEGIN/END marker comments."""
    pattern = re.compile(
        r"^(?P<indent>[ \t]*)# BEGIN " + re.escape(marker) + r"\b[^\n]*\n"
        r"(?P<body>.*?)"
        r"^[ \t]*# END " + re.escape(marker) + r"\b[^\n]*$",
        re.M | re.S)
    match = pattern.search(text)
    if not match:
        sys.exit(f"{path}: no '# BEGIN {marker}' ... '# END {marker}' block")
    entries = re.findall(r"'([^']*)'", match.group("body"))
    return match.start("body"), match.end("body"), match.group("indent"), entries


def render(variable, indent, entries):
    lines = [f"{indent}{variable} = ["]
    lines += [f"{indent}  '{entry}'," for entry in entries]
    lines.append(f"{indent}]")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite the lists instead of checking them")
    args = parser.parse_args()

    stale = False
    for path, marker, variable, on_disk in LISTS:
        text = path.read_text()
        start, end, indent, listed = find_block(text, marker, path.relative_to(ROOT))
        wanted = on_disk()
        if listed == wanted:
            continue
        if args.fix:
            path.write_text(text[:start] + render(variable, indent, wanted) + text[end:])
            print(f"{path.relative_to(ROOT)}: updated the {marker} list ({len(wanted)} entries)")
            continue
        stale = True
        missing = sorted(set(wanted) - set(listed))
        extra = sorted(set(listed) - set(wanted))
        print(f"{path.relative_to(ROOT)}: the {marker} list does not match the files on disk")
        for name in missing:
            print(f"  missing from the list: {name}")
        for name in extra:
            print(f"  listed but no such file: {name}")
        if not missing and not extra:
            print("  same entries, but not sorted or listed twice")
    if stale:
        print("run: python3 tools/check_meson_tests.py --fix")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
