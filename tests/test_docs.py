"""
The commands the documentation shows name only what exists: every script and config file, every
``--flag`` of the script it is given to, every config key (``MODEL.TIMM.WEIGHTS``). A renamed
flag or file fails here instead of failing the reader.
"""

import glob
import os
import re
import shlex

import pytest
from conftest import ROOT

DOCS = ["README.md", "MODEL_ZOO.md", "datasets/README.md"] + [
    os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
]
KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _commands(text: str) -> list[str]:
    """The shell commands of a document's ``bash`` blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _config_keys() -> set[str]:
    from detectron2.config import get_cfg

    from deepfashion2 import add_deepfashion2_config

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    keys = set()

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            keys.add(name)
            if isinstance(v, dict):
                walk(v, name + ".")

    walk(cfg, "")
    return keys


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_name_existing_scripts_flags_files_and_keys(doc):
    text = open(os.path.join(ROOT, doc)).read()
    keys = _config_keys()
    checked = 0
    for command in _commands(text):
        words = shlex.split(command)
        for i, w in enumerate(words):
            if w.endswith(".py") and "/" in w and not w.startswith("configs/"):
                # the script: it exists, and so do its flags
                script = os.path.join(ROOT, w.replace(".venv/bin/python ", ""))
                assert os.path.exists(script), (doc, command)
                source = open(script).read()
                flags = set(re.findall(r'"(--[a-z0-9-]+)"', source))
                if "default_argument_parser" in source:  # Detectron2's own flags
                    from detectron2.engine import default_argument_parser

                    flags |= set(default_argument_parser()._option_string_actions)
                for flag in (x.split("=")[0] for x in words[i + 1 :] if x.startswith("--")):
                    assert flag in flags, (doc, command, flag)
                checked += 1
            elif w.startswith("configs/") and w.endswith((".yaml", ".py")):
                assert os.path.exists(os.path.join(ROOT, w)), (doc, command, w)
            elif KEY.match(w) and not w.startswith(("DEEPFASHION2_", "DF2_")):
                assert w in keys, (doc, command, w)
    if "```bash" in text:
        assert checked or "make " in text, doc


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run_from_a_fresh_shell(doc):
    """A reader's shell has no environment active: the project's scripts run with .venv's
    Python, never a bare ``python`` (which has neither torch nor the project)."""
    text = open(os.path.join(ROOT, doc)).read()
    bare = re.findall(r"(?<![/\w.])python3? (?:tools|datasets|bench)/\S+", text)
    assert not bare, f"{doc}: {bare[:3]} (write .venv/bin/python)"
