"""The README's commands stay true: scripts exist, every flag and config key is real.

The first two fenced blocks are the newcomer commands (demo; tests). For every other command
line that runs one of our tools, the script must exist, every ``--flag`` must appear in its
``--help`` and every ``KEY VALUE`` override must be a real config key. The demo test runs the
whole pipeline; here the cheap commands also run for real.
"""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from configs.default import get_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TOOL_RE = re.compile(r"(tools/[\w/]+\.py|models/speed/pidnet_speed\.py|benchmarks/[\w/]+\.py)")


def _blocks():
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def _command_lines():
    lines = []
    for block in _blocks():
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and TOOL_RE.search(line):
                lines.append(line)
    return lines


def _tool_invocations():
    """(script, args) for each tool run on a README line (a line may chain several with &&)."""
    calls = []
    for line in _command_lines():
        for part in re.split(r"&&|\|\||;", line):
            tokens = shlex.split(part, comments=True)
            for i, token in enumerate(tokens):
                if TOOL_RE.fullmatch(token):
                    calls.append((token, tokens[i + 1:]))
                    break
    return calls


@functools.lru_cache(maxsize=None)
def _help(script):
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help failed: {result.stderr[-500:]}"
    return result.stdout


def _config_keys():
    keys = set()

    def walk(node, prefix):
        for key, value in node.items():
            if hasattr(value, "items"):
                walk(value, prefix + key + ".")
            else:
                keys.add(prefix + key)

    walk(get_cfg(), "")
    return keys


def test_first_two_blocks_are_the_newcomer_commands():
    demo, tests = _blocks()[:2]
    assert "pip install -r requirements.txt" in demo and "tools/demo.py" in demo
    assert "pip install -r requirements-dev.txt" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        script = handle.read()
    assert "README.md" in script and "n==3" in script


def test_readme_documents_every_tool():
    scripts = {script for script, _ in _tool_invocations()}
    for tool in ("tools/train.py", "tools/eval.py", "tools/custom.py", "tools/export_netspresso.py",
                 "tools/compress.py", "tools/export_onnx.py", "tools/make_synthetic.py",
                 "tools/make_lists.py", "tools/demo.py", "tools/quantize.py", "models/speed/pidnet_speed.py"):
        assert tool in scripts, f"README never runs {tool}"


@pytest.mark.slow
@pytest.mark.parametrize("script,args", _tool_invocations(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_readme_command_is_valid(script, args):
    assert os.path.isfile(os.path.join(ROOT, script)), f"{script} does not exist"
    help_text = _help(script)
    keys = _config_keys()
    for i, token in enumerate(args):
        if token.startswith("--") and token != "--":
            flag = token.split("=", 1)[0]
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", help_text), f"{script} has no {flag}"
        if token == "--cfg" and i + 1 < len(args) and args[i + 1].endswith(".yaml"):
            assert os.path.isfile(os.path.join(ROOT, args[i + 1])), f"missing config {args[i + 1]}"
        if re.fullmatch(r"[A-Z][A-Z_]*\.[A-Z_.]+", token):
            assert token in keys, f"{token} is not a config key"
