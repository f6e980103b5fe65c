"""Every script's --help: each flag explained, a default shown once where there is one, an example at the end."""
import pytest

import eval_maebm
import one_center
import sweep
import toy_2d
import train_maebm
from conftest import call_script
from utils.evaluation import MODES

SCRIPTS = ["one_center.py", "train_maebm.py", "train_maebm_celeba.py", "eval_maebm.py", "sweep.py", "toy_2d.py",
           "bench/fid_of_samples.py", "bench/gpu_check.py", "bench/inception.py", "bench/mutants.py",
           "bench/precision.py", "bench/quality.py", "bench/score_levels.py", "bench/train_step.py"]


@pytest.mark.parametrize("module", [train_maebm, eval_maebm, one_center, sweep, toy_2d])
def test_every_flag_has_help_that_states_its_default(module):
    parser = module.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        shown = formatter._get_help_string(action)
        if action.default not in (None, False, "", []):
            assert "%(default)s" in shown or "default" in action.help.lower(), action.option_strings[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_no_empty_default_and_ends_with_an_example(script):
    proc = call_script(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "(default: None)" not in text and "(default: )" not in text and "(default: [])" not in text
    last = text.strip().splitlines()
    assert last[-2] == "example:" and last[-1].strip().startswith(f"python {script} "), last[-3:]


def test_eval_help_describes_each_mode():
    squeeze = lambda text: "".join(text.split())  # argparse wraps lines, at hyphens too
    text = squeeze(eval_maebm.build_parser().format_help())
    for mode, (_, _, _, line) in MODES.items():
        assert squeeze(f"{mode}: {line}") in text
