"""docs/bad-input.md names the tests that keep each row true: every test file and test function it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "bad-input.md").read_text()


def test_every_test_file_named_on_the_page_exists():
    files = set(re.findall(r"tests/(test_\w+\.py)", PAGE))
    assert len(files) >= 8
    assert sorted(f for f in files if not (ROOT / "tests" / f).is_file()) == []


def test_every_test_function_named_on_the_page_is_defined():
    named = set(re.findall(r"\b(test_\w+)\b(?!\.py)", PAGE)) - {f[:-3] for f in re.findall(r"test_\w+\.py", PAGE)}
    defined = {
        m for path in (ROOT / "tests").glob("test_*.py") for m in re.findall(r"def (test_\w+)", path.read_text())
    }
    assert len(named) >= 10
    assert sorted(named - defined) == []
