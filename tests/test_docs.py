"""Every command line in README.md and docs/ parses with its script's own parser, so no stale flag survives a
rename; the README stays a guide of at most 200 lines that starts with the two set-up commands."""
import glob
import os
import re
import shlex

import pytest

from conftest import ROOT, script_main
from utils.errors import ArgumentParser

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                                             recursive=True))
# what each launcher runs, and how its own arguments become that script's flags
LAUNCHED = {"quickstart.sh": "train_maebm.py", "eval_ebm.sh": "eval_maebm.py", "eval_all_in_one.sh": "eval_maebm.py"}


class Parsed(Exception):
    """Raised by the patched parser once a command line has parsed: nothing after parsing runs."""


def shell_snippets(text):
    """Lines of fenced and indented code blocks, and inline code spans."""
    snippets, fenced = [], False
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            snippets.append(line.strip())
        else:
            snippets += re.findall(r"`([^`]+)`", line)
    return snippets


def commands(text):
    """Each `python SCRIPT ...`, `torchrun ... SCRIPT ...` and `bash scripts/NAME.sh ...` as a list of words."""
    found = []
    for snippet in shell_snippets(text):
        for part in re.split(r"&&|;|\|", re.sub(r"(^|\s)#.*$", "", snippet)):
            if not re.match(r"\s*([A-Z_]+=\S+\s+)*(python3?|torchrun|bash)\s", part):  # VAR=value may come first
                continue
            words = shlex.split(part)
            while re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            found.append([w for w in words if w != "..."])  # "..." stands for flags left out
    return found


def script_and_flags(words):
    """(the Python script, its argv) that a documented command runs; None for commands that are not ours."""
    if words[0] == "torchrun":
        words = ["python"] + words[next(i for i, w in enumerate(words) if w.endswith(".py")):]
    if words[0].startswith("python"):
        if len(words) < 2 or not words[1].endswith(".py"):
            return None  # python -m ..., python - (a here-document)
        return words[1], words[2:]
    launcher, args = words[1], words[2:]
    name = os.path.basename(launcher)
    assert os.path.isfile(os.path.join(ROOT, launcher)), f"no launcher {launcher}"
    if name in ("setup_env.sh", "run_tests.sh", "run"):  # they install, then run pytest
        return None
    if name == "eval_ebm.sh":
        return "eval_maebm.py", ["--load_path", args[0], "--eval", args[1] if len(args) > 1 else "fid", *args[2:]]
    if name == "eval_all_in_one.sh":
        return "eval_maebm.py", ["--load_path", args[0], "--eval", "test_clf", *args[1:]]
    if name in LAUNCHED:
        return LAUNCHED[name], args
    text = open(os.path.join(ROOT, launcher)).read()
    return re.search(r"launch_training (\S+\.py)", text).group(1), args


def documented_commands():
    for page in PAGES:
        for words in commands(open(os.path.join(ROOT, page)).read()):
            target = script_and_flags(words)
            if target is not None:
                yield pytest.param(page, *target, id=f"{page}: {' '.join(words)[:90]}")


@pytest.mark.parametrize("page,script,argv", list(documented_commands()))
def test_documented_command_parses(page, script, argv, monkeypatch, capsys):
    assert os.path.isfile(os.path.join(ROOT, script)), f"{page}: no script {script}"
    real = ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed()
    monkeypatch.setattr(ArgumentParser, "parse_args", parse_then_stop)
    try:
        script_main(script)(argv)
    except Parsed:
        return
    except SystemExit as e:
        if e.code == 0 and ("--help" in argv or "-h" in argv):
            return
        pytest.fail(f"{page}: `{script} {' '.join(argv)}` does not parse: {capsys.readouterr().err.strip()}")
    pytest.fail(f"{page}: `{script}` ran without parsing its flags with the project's ArgumentParser")


def test_the_docs_name_many_commands_of_every_kind():
    found = [(page, script) for page, script, _ in (p.values for p in documented_commands())]
    scripts = {script for _, script in found}
    assert {"train_maebm.py", "eval_maebm.py", "one_center.py", "toy_2d.py", "bench/quality.py"} <= scripts, scripts
    assert {page for page, _ in found} >= {"README.md", "docs/recipes.md", "docs/evaluation.md"}


def test_readme_is_a_guide_that_starts_with_the_two_commands():
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    assert len(lines) <= 200, len(lines)
    block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert lines.index("```bash") <= 3 and [line.split()[:2] for line in block] == [
        ["bash", "scripts/quickstart.sh"], ["bash", "scripts/run_tests.sh"]]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "bash scripts/run_tests.sh" in ci
    for page in PAGES:  # every relative link points at a file that exists
        text = open(os.path.join(ROOT, page)).read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert os.path.exists(os.path.join(ROOT, os.path.dirname(page), target)), (page, target)
