"""Every flag of every script has a help line that shows its default; eval's --help says what each mode does."""
import pytest

import eval_maebm
import one_center
import sweep
import toy_2d
import train_maebm
from utils.evaluation import MODES


@pytest.mark.parametrize("module", [train_maebm, eval_maebm, one_center, sweep, toy_2d])
def test_every_flag_has_help_with_its_default(module):
    parser = module.build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        if action.default not in (None, False):
            assert "%(default)s" in parser._get_formatter()._get_help_string(action), action.option_strings[0]
    assert "(default: " in text


def test_eval_help_describes_each_mode():
    squeeze = lambda text: "".join(text.split())  # argparse wraps lines, at hyphens too
    text = squeeze(eval_maebm.build_parser().format_help())
    for mode, (_, _, _, line) in MODES.items():
        assert squeeze(f"{mode}: {line}") in text
