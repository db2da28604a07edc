"""The project's own files: the Dockerfile lints clean, the README's test command is CI's."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_dockerfile_is_clean_under_hadolint() -> None:
    done = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", readme, re.S)
    run, test = blocks[0].strip(), blocks[1].strip()
    assert "pennybot chat" in run and "pip install" in run
    assert test.endswith("bash scripts/test.sh")
    assert "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()
