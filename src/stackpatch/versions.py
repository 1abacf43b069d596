"""Release and hotfix versions `YY.MM.R[x]` (pure: no git, no I/O).

A release is `YY.MM.R` (e.g. `26.11.1`); its hotfixes add one lowercase letter. The release itself
counts as letter `a`, so the first hotfix of `26.11.1` is `26.11.1b`, then `c`, `d`, ... `z`.

After `z` there is no next letter: `next_hotfix` refuses with a one-line `UserError` that tells the user
to pass VERSION explicitly and suggests the next free release number (`26.11.2` when free). We do not
invent two-letter suffixes (`26.11.1za`): they do not sort after `z` in most tools and do not fit the
`YY.MM.R` plus one letter convention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from stackpatch.errors import UserError

_RE = re.compile(r"^(\d{2})\.(\d{2})\.(\d+)([a-z]?)$")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, order=True)
class Version:
    yy: int
    mm: int
    r: int
    letter: str = ""  # "" for the release itself (which counts as "a")

    @property
    def release(self) -> Version:
        """The release this version patches (`26.11.1b` → `26.11.1`)."""
        return Version(self.yy, self.mm, self.r)

    @property
    def sort_key(self) -> tuple[int, int, int, str]:
        return (self.yy, self.mm, self.r, self.letter or "a")

    def with_letter(self, letter: str) -> Version:
        return Version(self.yy, self.mm, self.r, letter)

    def __str__(self) -> str:
        return f"{self.yy:02d}.{self.mm:02d}.{self.r}{self.letter}"


def parse(text: str) -> Version | None:
    """`26.11.1b` → Version(26, 11, 1, 'b'); None when it is not of the form `YY.MM.R[x]`."""
    m = _RE.match(text.strip())
    if not m:
        return None
    yy, mm, r, letter = m.groups()
    return Version(int(yy), int(mm), int(r), letter)


def check(text: str, pattern: str | None = None) -> str:
    """Return `text` if it is a valid version (by `pattern`, default `YY.MM.R[x]`), else a UserError."""
    ok = re.search(pattern, text) if pattern else parse(text)
    if not ok:
        form = f"the pattern {pattern!r}" if pattern else "YY.MM.R plus an optional letter, like 26.11.1b"
        raise UserError(f"version {text!r} is not of the form {form}: pass a version like 26.11.1b")
    return text


def strip_prefix(name: str, prefix: str) -> str | None:
    """`v26.11.1` with prefix `v` → `26.11.1`; None when `name` lacks the prefix."""
    if prefix and not name.startswith(prefix):
        return None
    return name[len(prefix):]


def newest(names: Iterable[str]) -> Version | None:
    """The highest `YY.MM.R[x]` among `names` (others are ignored), by version order, not by date."""
    found = [v for v in (parse(n) for n in names) if v is not None]
    return max(found, key=lambda v: v.sort_key) if found else None


def next_hotfix(base: Version, taken: Iterable[str]) -> Version:
    """The next free hotfix of `base`'s release, one letter past the highest taken one.

    `taken` are the names (versions, without prefixes) of existing branches and tags, local or remote.
    The letter is past both `base`'s own letter and every taken letter of the same release, so a new
    hotfix never sorts before an existing one (a gap left by a deleted branch is not reused).
    """
    rel = base.release
    used = {base.letter or "a"}
    names = set()
    for name in taken:
        names.add(name)
        v = parse(name)
        if v is not None and v.release == rel:
            used.add(v.letter or "a")
    top = max(LETTERS.index(ch) for ch in used)
    if top + 1 < len(LETTERS):
        return rel.with_letter(LETTERS[top + 1])
    r = rel.r + 1
    while any(str(Version(rel.yy, rel.mm, r, ch)) in names for ch in ("", *LETTERS)):
        r += 1
    raise UserError(f"hotfix letters of {rel} are used up (b..z): pass VERSION explicitly, "
                    f"e.g. `stackpatch start {Version(rel.yy, rel.mm, r)}`")
