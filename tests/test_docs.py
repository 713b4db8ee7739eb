"""The pages cannot drift from the code: links, anchors and shown commands are checked.

Every markdown page of the repository (not run folders under outputs/, not hidden folders) is
read, and

- every relative link and image points at a file or folder that exists;
- every ``#anchor`` (on the same page or another) names a heading or an explicit anchor there,
  with GitHub's rules for turning a heading into an anchor;
- every ``python <script>.py ...`` and ``python -m <package>.<tool> ...`` command shown, in a code
  block or an inline code span, is accepted by that script's own argument parser. Only the
  parser runs: ``argparse.ArgumentParser.parse_args`` is wrapped so that it stops the script
  right after parsing, before any data is read or any model is built;
- the learner's text does not speak of how the tutorial was made.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"outputs", "node_modules", "venv", "site-packages", "__pycache__"}


def markdown_pages() -> list[Path]:
    pages = []
    for path in sorted(ROOT.rglob("*.md")):
        parts = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in SKIP_DIRS for part in parts[:-1]):
            continue
        if parts[0] == "data" and path.name != "README.md":
            continue  # the learner's own files (git-ignored)
        pages.append(path)
    return pages


PAGES = markdown_pages()
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


@dataclass
class Line:
    number: int  # 1-based
    text: str
    in_code: bool
    language: str  # of the fenced block, "" outside or when none is given


def read_lines(page: Path) -> list[Line]:
    lines, fence, language = [], None, ""
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(text)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
            continue
        if fence is not None and text.strip().startswith(fence[:3]) and text.strip().strip(fence[0]) == "":
            fence, language = None, ""
            continue
        lines.append(Line(number, text, fence is not None, language))
    return lines


def strip_inline_code(text: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", text)


# ---------------------------------------------------------------------------------------- anchors

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation dropped
    (except - and _), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in read_lines(page):
        if line.in_code:
            continue
        for name in re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", line.text):
            found.add(name)
        match = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line.text)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


_ANCHOR_CACHE: dict[Path, set[str]] = {}


def anchors_of(page: Path) -> set[str]:
    if page not in _ANCHOR_CACHE:
        _ANCHOR_CACHE[page] = anchors(page)
    return _ANCHOR_CACHE[page]


def test_slug_follows_github():
    assert slug("Chapter 1: Your first network, XOR") == "chapter-1-your-first-network-xor"
    assert slug("The benchmark suite (`benchmarks/run.py`)") == "the-benchmark-suite-benchmarksrunpy"
    assert slug("compile, fit, evaluate, predict") == "compile-fit-evaluate-predict"
    assert slug("Why it is fast, and why JAX is this chapter's default") == (
        "why-it-is-fast-and-why-jax-is-this-chapters-default")
    assert slug("`mlp_one_layer` and **bold**") == "mlp_one_layer-and-bold"


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Results\n\n## Results\n\n```\n# Results\n```\n\n### Results\n")
    assert anchors(page) == {"results", "results-1", "results-2"}


# ------------------------------------------------------------------------------------------ links

LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(page: Path):
    for line in read_lines(page):
        if line.in_code:
            continue
        for target in LINK.findall(strip_inline_code(line.text)):
            yield line.number, target


LINKS = [(page, number, target) for page in PAGES for number, target in links(page)
         if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: ...


def _link_id(case) -> str:
    page, number, target = case
    return f"{page.relative_to(ROOT)}:{number}:{target}"


def test_pages_are_found():
    names = {str(page.relative_to(ROOT)) for page in PAGES}
    assert "README.md" in names
    assert not any(name.startswith("outputs/") for name in names)


@pytest.mark.parametrize("case", LINKS, ids=[_link_id(c) for c in LINKS])
def test_link_resolves(case):
    page, number, target = case
    path_part, _, anchor = target.partition("#")
    where = f"{page.relative_to(ROOT)}, line {number}: link {target!r}"
    destination = (page.parent / path_part).resolve() if path_part else page
    assert destination.exists(), f"{where}: {path_part} does not exist"
    if anchor:
        assert destination.suffix == ".md", f"{where}: an anchor into a file that is not a page"
        assert anchor in anchors_of(destination), (
            f"{where}: no heading or anchor '{anchor}' in {destination.relative_to(ROOT)}")


# --------------------------------------------------------------------------------------- commands

ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
SHELL_STOPS = {"|", "||", "&", "&&", ";", ">", ">>", "2>", "<"}


def shown_commands(page: Path):
    """(line number, text, inline) of every python command shown: lines of code blocks that are
    not Python source or JSON, joined across trailing backslashes, and inline code spans.

    A command whose next line in its block is an ``error:`` or ``usage:`` line is shown failing
    on purpose (a page about bad input) and is left out."""
    lines = read_lines(page)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.in_code and line.language not in ("python", "py", "json", "yaml", "toml"):
            text, number = line.text, line.number
            while text.rstrip().endswith("\\") and i + 1 < len(lines) and lines[i + 1].in_code:
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].text.strip()
            following = lines[i + 1] if i + 1 < len(lines) else None
            shown_failing = (following is not None and following.in_code
                             and following.text.lstrip().startswith(("error:", "usage:")))
            if not shown_failing:
                yield number, text, False
        elif not line.in_code:
            for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line.text):
                yield line.number, span, True
        i += 1


def split_command(text: str) -> list[str] | None:
    """The python command's words, prompt, environment assignments, comments and anything after
    a pipe, ; or && left out; None when the text is not a python command."""
    text = text.strip()
    if text.startswith("$ "):
        text = text[2:]
    text = re.sub(r"\[(--[^\]]*)\]", r"\1", text)  # "[--flag value]": an optional part, shown
    text = re.sub(r"<[^<>|]*>", lambda m: m.group(0).replace(" ", "_"), text)  # "<a run>": one word
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        return None
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words or words[0] not in ("python", "python3") or "..." in words:
        return None  # not python, or abbreviated: "..." stands for arguments left out
    for index, word in enumerate(words):
        if word in SHELL_STOPS or word.startswith((">", "2>")):
            return words[:index]
    return words


@dataclass
class Command:
    page: Path
    number: int
    words: list[str]
    module: str  # import name of the script, or a path to load it from
    argv: list[str]
    inline: bool = False  # an inline code span in the text, which may only name the tool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}, line {self.number}: {shlex.join(self.words)}"


def resolve(words: list[str]) -> tuple[str, list[str]] | None:
    """(importable script, its argv) for a command of this repository, None for others
    (python -c, python -m pytest, pip ...)."""
    if len(words) < 2:
        return None
    if words[1] == "-m":
        if len(words) < 3:
            return None
        name = words[2]
        if not (ROOT / (name.replace(".", "/") + ".py")).is_file():
            return None  # pytest, pip, a standard-library module
        return name, words[3:]
    script = words[1]
    if not script.endswith(".py"):
        return None
    return script, words[2:]


COMMANDS = []
for _page in PAGES:
    for _number, _text, _inline in shown_commands(_page):
        _words = split_command(_text)
        if _words is None:
            continue
        _resolved = resolve(_words)
        if _resolved is not None:
            COMMANDS.append(Command(_page, _number, _words, *_resolved, inline=_inline))


class _Parsed(BaseException):  # noqa: N818 - a signal, not an error; BaseException so no handler eats it
    pass


def load_script(name: str):
    """The module of a script given as a path (``mnist/mnist.py``) or a module name."""
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = ROOT / name
    assert path.is_file(), f"{name} does not exist"
    relative = path.relative_to(ROOT).with_suffix("")
    if (path.parent / "__init__.py").is_file() and path.parent.parent == ROOT:
        return importlib.import_module(".".join(relative.parts))
    module_name = "_docs_" + "_".join(relative.parts)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def parse_only(command: Command, monkeypatch) -> str | None:
    """Run the script's argument parser on the shown argv; None if it accepts them, else why not."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        raise _Parsed(original(parser, args, namespace))

    monkeypatch.syspath_prepend(str(ROOT))
    module = load_script(command.module)
    entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
    if entry is None:
        return "the script has neither parse_args(argv) nor main(argv)"
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [command.module, *command.argv])
    environment = dict(os.environ)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            entry(list(command.argv))
    except _Parsed:
        return None
    except SystemExit as stop:
        asks_for_help = any(a in ("-h", "--help") for a in command.argv)
        if stop.code in (0, None) and asks_for_help:
            return None
        message = stderr.getvalue().strip()
        if command.inline and "the following arguments are required" in message:
            return None  # text that names a tool ("run `python -m utils.inspect` on a run")
        return f"exit {stop.code}: {message.splitlines()[-1] if message else ''}"
    finally:
        os.environ.clear()
        os.environ.update(environment)
    return "the script returned without parsing its flags through argparse"


def test_commands_are_found():
    shown = {command.module for command in COMMANDS}
    assert "xor/xor.py" in shown and "mlp/mlp.py" in shown


def test_split_command():
    assert split_command("KERAS_BACKEND=jax python xor/xor.py --epochs 3  # comment") == [
        "python", "xor/xor.py", "--epochs", "3"]
    assert split_command("$ python mlp/mlp.py --predict Age=52 | head") == [
        "python", "mlp/mlp.py", "--predict", "Age=52"]
    assert split_command("pytest -q") is None
    assert split_command("python cnn/filters.py outputs/mnist/<a conv_net run> --index 0") == [
        "python", "cnn/filters.py", "outputs/mnist/<a_conv_net_run>", "--index", "0"]
    assert split_command("python serving/app.py --backend jax ...") is None
    assert resolve(["python", "-m", "pytest"]) is None
    assert resolve(["python", "-m", "utils.compare", "--latest", "5"]) == ("utils.compare",
                                                                            ["--latest", "5"])


def test_a_wrong_flag_is_caught(monkeypatch):
    bad = Command(ROOT / "README.md", 0, ["python", "xor/xor.py", "--no-such-flag"], "xor/xor.py",
                  ["--no-such-flag"])
    assert "unrecognized arguments" in parse_only(bad, monkeypatch)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.page.relative_to(ROOT)}:{c.number}"
                                                   for c in COMMANDS])
def test_shown_command_parses(command, monkeypatch):
    problem = parse_only(command, monkeypatch)
    assert problem is None, f"{command.where}: {problem}"


# ------------------------------------------------------------------------------ the learner's text

BUILDER_WORDS = re.compile(r"\bthe (seed|brief|issue)\b", re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_speaks_to_the_learner(page):
    found = [f"line {line.number}: {line.text.strip()}" for line in read_lines(page)
             if BUILDER_WORDS.search(line.text)]
    assert not found, f"{page.relative_to(ROOT)} speaks of how it was made:\n" + "\n".join(found)
