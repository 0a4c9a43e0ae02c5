#!/usr/bin/env python3
"""Why this file exists: the files on disk are the one list of tests and example programs. CMake globs
them itself (tests/CMakeLists.txt, CMakeLists.txt); Meson cannot glob, so its build files run this script
at configure time and get the same list, named by the same rule:

    python3 tools/list_sources.py tests      # "io/test_gguf_reader.cpp io/gguf_reader" per test file
    python3 tools/list_sources.py examples   # "bench" per examples/<name>.cpp

A test file tests/<layer>/test_<what>.cpp is the test named <layer>/<what> in both ctest and meson test
(.ci/run compares the two lists). Meson does not watch folders: after adding or removing a file, run
`meson setup --reconfigure <builddir>` (a fresh build directory, as in CI, always sees every file).
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_files():
    """(file relative to tests/, test name) for every tests/<layer>/test_<what>.cpp, sorted."""
    tests = ROOT / "tests"
    files = sorted(p.relative_to(tests).as_posix() for p in tests.glob("*/test_*.cpp"))
    return [(f, f.rsplit("/", 1)[0] + "/" + f.rsplit("/", 1)[1][len("test_"):-len(".cpp")]) for f in files]


def example_names():
    return sorted(p.stem for p in (ROOT / "examples").glob("*.cpp"))


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("tests", "examples"):
        sys.exit("usage: list_sources.py tests|examples")
    if sys.argv[1] == "tests":
        lines = [f"{path} {name}" for path, name in test_files()]
    else:
        lines = example_names()
    if not lines:
        sys.exit(f"list_sources.py: no {sys.argv[1]} found under {ROOT}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
