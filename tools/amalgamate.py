#!/usr/bin/env python3
"""Why this file exists: some users want bora as one file they can drop into a project. This script
writes single_include/bora.hpp from include/bora/bora.hpp by inlining every bora header once, and makes
Highway's per-target compilation work from that one file. `--check` fails when the file is stale.

    python3 tools/amalgamate.py            # (re)write single_include/bora.hpp
    python3 tools/amalgamate.py --check    # exit 1 if single_include/bora.hpp is not what this writes

How the output works
--------------------
Headers are inlined depth-first in include order; each keeps its own include guard, so emitting a header
a second time would be harmless, and it is skipped when it has already been emitted outside any #if.
System and third-party includes (<...>) stay where they are.

The SIMD kernels need care. In the modular tree, ops/implementation.hpp does
    #define HWY_TARGET_INCLUDE "bora/ops/kernels-inl.h"
    #include <hwy/foreach_target.h>     // re-includes kernels-inl.h once per CPU target
    #include <hwy/highway.h>
    #include "bora/ops/kernels-inl.h"   // once more, for the static (baseline) target
With one file there is no kernels-inl.h to re-include, so the single header re-includes *itself*:
    #if defined(BORA_SINGLE_HEADER_KERNEL_PASS)
      <kernels-inl.h, toggle guard and all>
    #else
      <every other header, in order>
    #endif
and in the implementation part `HWY_TARGET_INCLUDE` names the single header, the foreach_target.h
include and the direct kernels include are each wrapped in `#define BORA_SINGLE_HEADER_KERNEL_PASS` /
`#undef`. Each re-inclusion therefore sees only the kernels, exactly as kernels-inl.h would be seen.
Highway's foreach_target.h includes the file by name from its own directory, so the single header's
directory must be on the include path (-I), or BORA_SINGLE_HEADER_PATH must name it.

kernels-inl.h gathers several per-target files (ops/*-inl.h), which include each other too. Each has
a toggle guard (`#if defined(X) == defined(HWY_TARGET_TOGGLE)` ...), so within one pass only its first
inclusion counts: the kernel section holds each once, at its first include, and later includes of it
are dropped. That is only the same thing if the first include is not itself conditional, so per-target
files must be included unconditionally (inside their includer's toggle guard, under no other #if).
"""
import argparse
import difflib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
ENTRY = "bora/bora.hpp"
OUTPUT = ROOT / "single_include" / "bora.hpp"

PASS_MACRO = "BORA_SINGLE_HEADER_KERNEL_PASS"
PATH_MACRO = "BORA_SINGLE_HEADER_PATH"

BORA_INCLUDE = re.compile(r'^\s*#\s*include\s*(?:"(bora/[^"]+)"|<(bora/[^>]+)>)')
FOREACH_TARGET_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]hwy/foreach_target\.h[>"]')
# `#define HWY_TARGET_INCLUDE "bora/ops/kernels-inl.h"`, or any macro naming the per-target file that
# HWY_TARGET_INCLUDE is then set to (implementation.hpp uses BORA_KERNELS_INCLUDE).
TARGET_INCLUDE_DEFINE = re.compile(r'^(\s*#\s*define\s+\w+\s+)"(bora/[^"]+-inl\.h)"(.*)$')
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\b")
IF_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef)\b")
ENDIF_DIRECTIVE = re.compile(r"^\s*#\s*endif\b")
IFNDEF_NAME = re.compile(r"^\s*#\s*ifndef\s+(\w+)")
TOGGLE_GUARD = re.compile(r"^\s*#\s*if\s+defined\s*\(\s*\w+\s*\)\s*==\s*defined\s*\(\s*HWY_TARGET_TOGGLE\s*\)")
DEFINE_NAME = re.compile(r"^\s*#\s*define\s+(\w+)\s*$")
VERSION_DEFINE = re.compile(r"^\s*#\s*define\s+BORA_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)")


class AmalgamationError(Exception):
    pass


def read_header(name):
    path = INCLUDE_DIR / name
    if not path.is_file():
        raise AmalgamationError(f"#include \"{name}\": no such file under include/")
    return path.read_text().splitlines()


def include_guard_lines(lines):
    """Indices of (#ifndef X, #define X, final #endif) if the file opens with a classic guard, else None.

    A guard does not count as a condition: what it wraps is still emitted unconditionally."""
    directives = [i for i, line in enumerate(lines) if line.lstrip().startswith("#")]
    if len(directives) < 3:
        return None
    first, second, last = directives[0], directives[1], directives[-1]
    ifndef, define = IFNDEF_NAME.match(lines[first]), DEFINE_NAME.match(lines[second])
    if ifndef and define and ifndef.group(1) == define.group(1) and ENDIF_DIRECTIVE.match(lines[last]):
        return first, second, last
    return None


def toggle_guard_lines(lines):
    """Indices of (#if defined(X) == defined(HWY_TARGET_TOGGLE), its #endif) in a per-target file, or None.

    Like an include guard it does not count as a condition: within one pass what it wraps is seen once."""
    depth = 0
    opening = None
    for i, line in enumerate(lines):
        if IF_DIRECTIVE.match(line):
            if depth == 0 and opening is None and TOGGLE_GUARD.match(line):
                opening = i
            depth += 1
        elif ENDIF_DIRECTIVE.match(line):
            depth -= 1
            if depth == 0 and opening is not None:
                return opening, i
    return None


def find_kernel_file():
    """The one per-target file named by `#define HWY_TARGET_INCLUDE "bora/..."` in the headers."""
    names = set()
    for path in sorted(INCLUDE_DIR.rglob("*")):
        if path.suffix not in (".hpp", ".h") or not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = TARGET_INCLUDE_DEFINE.match(line)
            if match:
                names.add(match.group(2))
    if len(names) > 1:
        raise AmalgamationError(
            "more than one HWY_TARGET_INCLUDE file (" + ", ".join(sorted(names)) + "); the single header "
            "can re-include itself for one of them only: include the others from that one")
    return names.pop() if names else None


class Amalgamator:
    def __init__(self):
        self.kernel_file = find_kernel_file()
        self.kernel_lines = None        # the kernel section, built when the kernel file is first named
        self.emitted = set()            # headers already emitted outside any #if (their guard holds)
        self.stack = []                 # headers being inlined, to report include cycles
        self.in_kernel_section = False
        self.kernel_emitted = set()     # ... within one kernel pass (the kernel section is one pass)

    def run(self):
        main_part = self.inline(ENTRY, conditional=False)
        return self.assemble(main_part)

    def inline(self, name, conditional):
        """Lines of header `name` with its bora includes inlined; `conditional` = inside an #if."""
        if name in self.stack:
            raise AmalgamationError("include cycle: " + " -> ".join(self.stack + [name]))
        self.stack.append(name)
        lines = read_header(name)
        guard = include_guard_lines(lines)
        if guard is None and name.endswith("-inl.h"):
            guard = toggle_guard_lines(lines)
        depth = 0  # #if nesting inside this file, the include guard excluded
        out = [f"// ---- begin {name} " + "-" * max(3, 90 - len(name))]
        for index, line in enumerate(lines):
            if PRAGMA_ONCE.match(line):
                raise AmalgamationError(f"{name}:{index + 1}: #pragma once would stop the single header "
                                        "from re-including itself for Highway; use an include guard")
            is_guard_line = guard is not None and index in guard
            if IF_DIRECTIVE.match(line) and not is_guard_line:
                depth += 1
            elif ENDIF_DIRECTIVE.match(line) and not is_guard_line:
                depth -= 1
            here_conditional = conditional or depth > 0

            define = TARGET_INCLUDE_DEFINE.match(line)
            if define:
                self.build_kernel_section()
                out.append(f"{define.group(1)}{PATH_MACRO}{define.group(3)}")
                continue
            if FOREACH_TARGET_INCLUDE.match(line):
                out += [
                    # GCC and Clang look for foreach_target.h's quoted include in hwy/ and then on the
                    # include path only, never beside this file: say so now rather than fail obscurely.
                    "#if defined(BORA_SINGLE_HEADER_DEFAULT_PATH) && !defined(HWY_COMPILE_ONLY_STATIC) && \\",
                    "    defined(__GNUC__) && defined(__has_include)",
                    "#if !__has_include(<bora.hpp>)",
                    "#error \"bora.hpp re-includes itself once per SIMD target: add its directory to the include "
                    f"path (-I) or define {PATH_MACRO}\"",
                    "#endif",
                    "#endif",
                    f"#define {PASS_MACRO}", line, f"#undef {PASS_MACRO}",
                ]
                continue
            match = BORA_INCLUDE.match(line)
            if not match:
                out.append(line)
                continue
            included = match.group(1) or match.group(2)
            if included == self.kernel_file:
                # The static target's kernels: the single header again, seen in its kernel pass.
                self.build_kernel_section()
                out += [f"#define {PASS_MACRO}", f"#include {PATH_MACRO}", f"#undef {PASS_MACRO}"]
                continue
            if included.endswith("-inl.h") and not self.stack[0:1] == [self.kernel_file]:
                raise AmalgamationError(f"{name}:{index + 1}: per-target file {included} is included "
                                        f"outside {self.kernel_file}; include it from there")
            if included.endswith("-inl.h"):
                if here_conditional:
                    raise AmalgamationError(f"{name}:{index + 1}: per-target file {included} is included under "
                                            "an #if; include it unconditionally (see the notes at the top)")
                # Toggle-guarded: within the pass, includes after the first are no-ops.
                if included not in self.kernel_emitted:
                    self.kernel_emitted.add(included)
                    out += self.inline(included, conditional=False)
                continue
            emitted = self.kernel_emitted if self.in_kernel_section else self.emitted
            if included in emitted:
                continue
            out += self.inline(included, here_conditional)
            if not here_conditional:
                emitted.add(included)
        out.append(f"// ---- end {name} " + "-" * max(3, 92 - len(name)))
        self.stack.pop()
        return out

    def build_kernel_section(self):
        if self.kernel_lines is not None or self.kernel_file is None:
            return
        saved_stack, self.stack = self.stack, []
        # Evaluated only inside the implementation, so nothing it inlines counts as emitted for the rest;
        # what the rest emitted before this point is defined when the passes run. Conditions are counted
        # from the start of the pass.
        self.in_kernel_section = True
        self.kernel_emitted = set(self.emitted) | {self.kernel_file}
        self.kernel_lines = self.inline(self.kernel_file, conditional=False)
        self.in_kernel_section = False
        self.stack = saved_stack

    def assemble(self, main_part):
        version = {}
        for line in read_header(ENTRY):
            match = VERSION_DEFINE.match(line)
            if match:
                version[match.group(1)] = match.group(2)
        version_text = ".".join(version.get(k, "?") for k in ("MAJOR", "MINOR", "PATCH"))
        out = [
            f"// bora {version_text} -- single-header edition.",
            "// GENERATED FILE, DO NOT EDIT: written by tools/amalgamate.py from include/bora/ "
            "(edit those headers",
            "// and run `python3 tools/amalgamate.py`; CI runs `--check` and fails when this file is stale).",
            "//",
            "// Use: in exactly one .cpp, `#define BORA_IMPLEMENTATION` before `#include \"bora.hpp\"`; every",
            "// other file includes it plainly. Link Highway and simdjson (-lhwy -lsimdjson -pthread).",
            "// The implementation re-includes this file once per SIMD target (Highway's foreach_target.h),",
            "// so: keep its directory on the include path (-I), or define BORA_SINGLE_HEADER_PATH to the",
            "// name under which it can be included; and never give it #pragma once.",
        ]
        if self.kernel_lines is None:
            out += main_part
            return "\n".join(out) + "\n"
        out += [
            "",
            f"#ifndef {PATH_MACRO}",
            f"#define {PATH_MACRO} \"bora.hpp\"",
            "#define BORA_SINGLE_HEADER_DEFAULT_PATH",
            "#endif",
            "",
            f"#if defined({PASS_MACRO})",
            f"// Kernel pass: the implementation below re-included this file; only {self.kernel_file} is seen.",
        ]
        out += self.kernel_lines
        out += [
            f"#else  // !{PASS_MACRO}",
        ]
        out += main_part
        out += [f"#endif  // {PASS_MACRO}"]
        return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description="Write single_include/bora.hpp from include/bora/.")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file on disk differs from what would be written")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT, help="where to write (default: %(default)s)")
    args = parser.parse_args()
    try:
        text = Amalgamator().run()
    except AmalgamationError as error:
        print(f"amalgamate.py: {error}", file=sys.stderr)
        return 2
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current == text:
            print(f"{args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output} is up to date")
            return 0
        print(f"amalgamate.py: {args.output} is stale; run `python3 tools/amalgamate.py` and commit it.",
              file=sys.stderr)
        diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), "on disk", "expected", lineterm="", n=1))
        for line in diff[:40]:
            print(line, file=sys.stderr)
        if len(diff) > 40:
            print(f"... ({len(diff) - 40} more diff lines)", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
