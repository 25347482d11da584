"""The README's two opening commands are exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    install_and_run, tests = blocks[0].strip(), blocks[1].strip()
    assert install_and_run.startswith("python -m pip install torch==2.13.0 && ")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install_and_run in ci_lines
    assert tests in ci_lines
    assert ci_lines.index(install_and_run) < ci_lines.index(tests)


def test_the_readme_links_to_files_that_exist():
    """The README is the front door to docs/; mkdocs checks the links inside docs/, this checks the README's."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert "docs/index.md" in targets
    assert [t for t in targets if "://" not in t and not (ROOT / t).exists()] == []
