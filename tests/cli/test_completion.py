"""Shell completion, which click provides: the scripts README tells users to load, and a completion."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli


@pytest.mark.parametrize("shell, defines", [
    ("bash", "_bigembed_completion() {"), ("zsh", "#compdef bigembed"), ("fish", "function _bigembed_completion"),
])
def test_completion_script_defines_the_completion_function(shell, defines):
    r = CliRunner().invoke(cli, [], prog_name="bigembed", env={"_BIGEMBED_COMPLETE": f"{shell}_source"})
    assert r.exit_code == 0, r.output
    assert defines in r.output and "_BIGEMBED_COMPLETE" in r.output


def test_bash_completes_a_verb_and_an_option():
    env = {"_BIGEMBED_COMPLETE": "bash_complete", "COMP_WORDS": "bigembed exp", "COMP_CWORD": "1"}
    r = CliRunner().invoke(cli, [], prog_name="bigembed", env=env)
    assert r.exit_code == 0 and r.output.splitlines() == ["plain,export"]
    env = {**env, "COMP_WORDS": "bigembed export RUN --form", "COMP_CWORD": "3"}
    r = CliRunner().invoke(cli, [], prog_name="bigembed", env=env)
    assert r.output.splitlines() == ["plain,--format"]
