"""docs/crash-matrix.md's generated sections: rewritten with SP_WRITE_CRASH_MATRIX=1 (`make crash-matrix`),
otherwise checked against what the tests found."""

from __future__ import annotations

import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "crash-matrix.md"


def sync_section(name: str, body: str) -> None:
    begin, end = f"<!-- crash-matrix:{name}:begin -->", f"<!-- crash-matrix:{name}:end -->"
    text = DOC.read_text() if DOC.exists() else ""
    if os.environ.get("SP_WRITE_CRASH_MATRIX"):
        if begin in text:
            text = text[:text.index(begin) + len(begin)] + "\n" + body + text[text.index(end):]
        else:
            text += f"\n{begin}\n{body}{end}\n"
        DOC.write_text(text)
        return
    assert begin in text, f"docs/crash-matrix.md has no {name} section: run `make crash-matrix`"
    committed = text[text.index(begin) + len(begin):text.index(end)].strip()
    assert committed == body.strip(), f"docs/crash-matrix.md ({name}) is not what the code does: run `make crash-matrix`"
