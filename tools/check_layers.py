#!/usr/bin/env python3
"""Why this file exists: bora's headers form layers, base < quant < io < ops < model < text < top level
(include/bora/*.hpp), and a header may use only its own layer and lower ones; no header is longer than
700 lines. Reviews miss an upward include or a forward declaration that hides one, so CI (.ci/run) runs
this check and it names every breach with file:line.

    python3 tools/check_layers.py

It fails (exit 1) on:
  - an #include of a bora header in a higher layer than the including file;
  - a forward declaration (`class X;` / `struct X;`) of a class or struct defined in a higher layer;
  - a header under include/ longer than 700 lines (single_include/ is generated and not checked).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "include"
LAYERS = ["base", "quant", "io", "ops", "model", "text", "top level"]
MAX_LINES = 700

INCLUDE_LINE = re.compile(r'^\s*#\s*include\s*[<"](bora/[^">]+)[">]')
# `class X;`, `struct X;`, also after `template <...>`; not `friend class X;` or `enum class X;`.
FORWARD_DECLARATION = re.compile(r"^\s*(?:template\s*<[^>]*>\s*)?(class|struct)\s+([A-Za-z_]\w*)\s*;")
DEFINITION = re.compile(r"^\s*(?:template\s*<[^>]*>\s*)?(?:class|struct)\s+(?:\[\[[^\]]*\]\]\s*)?([A-Za-z_]\w*)"
                        r"(?:\s+final)?\s*(?::[^;{]*)?\{")


def layer_of(relative):
    """Layer of a path relative to include/ (bora/io/gguf.hpp -> io); None outside bora/."""
    parts = pathlib.PurePosixPath(relative).parts
    if len(parts) < 2 or parts[0] != "bora":
        return None
    if len(parts) == 2:
        return "top level"
    return parts[1] if parts[1] in LAYERS else None


def code_lines(text):
    """The lines with // comments removed (block comments are not used for code in bora)."""
    return [line.split("//", 1)[0] for line in text.splitlines()]


def main():
    headers = sorted(p for p in INCLUDE.rglob("*") if p.is_file() and p.suffix in (".hpp", ".h"))
    problems = []
    defined_in = {}  # class/struct name -> set of layers defining it
    parsed = []
    for path in headers:
        relative = path.relative_to(INCLUDE).as_posix()
        text = path.read_text()
        lines = code_lines(text)
        layer = layer_of(relative)
        if layer is None:
            problems.append(f"include/{relative}: not in a known layer ({', '.join(LAYERS[:-1])} or include/bora/)")
            continue
        parsed.append((relative, layer, lines, text.count("\n") + (0 if text.endswith("\n") else 1)))
        for line in lines:
            match = DEFINITION.match(line)
            if match:
                defined_in.setdefault(match.group(1), set()).add(layer)

    for relative, layer, lines, line_count in parsed:
        rank = LAYERS.index(layer)
        for number, line in enumerate(lines, 1):
            match = INCLUDE_LINE.match(line)
            if match:
                target_layer = layer_of(match.group(1))
                if target_layer is None:
                    problems.append(f"include/{relative}:{number}: includes {match.group(1)}, which is in no layer")
                elif LAYERS.index(target_layer) > rank:
                    problems.append(f"include/{relative}:{number}: upward include of {match.group(1)} "
                                    f"({layer} must not include {target_layer})")
                continue
            match = FORWARD_DECLARATION.match(line)
            if match and "friend" not in line:
                name = match.group(2)
                higher = sorted((l for l in defined_in.get(name, ()) if LAYERS.index(l) > rank), key=LAYERS.index)
                if higher:
                    problems.append(f"include/{relative}:{number}: forward declaration of {match.group(1)} {name}, "
                                    f"defined in {' and '.join(higher)} ({layer} must not refer to {higher[0]})")
        if line_count > MAX_LINES:
            problems.append(f"include/{relative}: {line_count} lines (at most {MAX_LINES})")

    for problem in problems:
        print(problem)
    if problems:
        print(f"check_layers: {len(problems)} problem(s); layers from bottom to top: {' < '.join(LAYERS)}")
        return 1
    print(f"check_layers: {len(parsed)} headers, every include and forward declaration goes down or sideways, "
          f"none over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
