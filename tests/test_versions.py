import pytest

from stackpatch import versions
from stackpatch.errors import UserError
from stackpatch.versions import Version, next_hotfix, parse


def test_parse():
    assert parse("26.11.1") == Version(26, 11, 1, "")
    assert parse("16.03.1b") == Version(16, 3, 1, "b")
    assert parse("26.11.12z") == Version(26, 11, 12, "z")
    assert str(parse("16.03.1b")) == "16.03.1b"
    assert parse("16.03.1b").release == Version(16, 3, 1)
    for bad in ("16.3.1", "16.03", "16.03.1B", "16.03.1bb", "v16.03.1", "16.03.1-b", "", "16.03.x"):
        assert parse(bad) is None, bad


def test_order_is_by_version_not_text():
    assert versions.newest(["16.03.1", "16.03.10", "16.03.2", "not-a-version", "16.03.9z"]) == parse("16.03.10")
    assert versions.newest(["16.04.1", "16.03.1b"]) == parse("16.04.1")
    assert versions.newest(["16.03.1", "16.03.1b"]) == parse("16.03.1b")
    assert versions.newest(["x", "y"]) is None


def test_next_hotfix_first_is_b():
    assert str(next_hotfix(parse("26.11.1"), [])) == "26.11.1b"
    assert str(next_hotfix(parse("26.11.1"), ["26.11.1"])) == "26.11.1b"


def test_next_hotfix_skips_taken_and_goes_past_the_highest():
    assert str(next_hotfix(parse("26.11.1"), ["26.11.1b", "26.11.1c"])) == "26.11.1d"
    # a gap (c deleted) is not reused: the new hotfix must sort after every existing one
    assert str(next_hotfix(parse("26.11.1"), ["26.11.1b", "26.11.1d"])) == "26.11.1e"
    # other releases' letters do not count
    assert str(next_hotfix(parse("26.11.1"), ["26.11.2c", "26.12.1d"])) == "26.11.1b"


def test_next_hotfix_of_a_hotfix_base():
    assert str(next_hotfix(parse("16.03.1b"), [])) == "16.03.1c"
    assert str(next_hotfix(parse("16.03.1b"), ["16.03.1b", "16.03.1c"])) == "16.03.1d"


def test_after_z_refuses_with_one_line_and_suggests_a_free_release():
    taken = [f"26.11.1{c}" for c in "bcdefghijklmnopqrstuvwxyz"]
    with pytest.raises(UserError) as e:
        next_hotfix(parse("26.11.1"), taken)
    msg = str(e.value)
    assert "\n" not in msg and "pass VERSION explicitly" in msg and "stackpatch start 26.11.2" in msg
    with pytest.raises(UserError) as e:
        next_hotfix(parse("26.11.1y"), [*taken, "26.11.2", "26.11.3b"])
    assert "stackpatch start 26.11.4" in str(e.value)


def test_check_default_form_and_configured_pattern():
    assert versions.check("26.11.1b") == "26.11.1b"
    with pytest.raises(UserError) as e:
        versions.check("26.11.1.b")
    assert "\n" not in str(e.value) and "26.11.1.b" in str(e.value)
    assert versions.check("2026.1", r"^\d{4}\.\d+$") == "2026.1"
    with pytest.raises(UserError):
        versions.check("26.11.1b", r"^\d{4}\.\d+$")


def test_strip_prefix():
    assert versions.strip_prefix("v26.11.1", "v") == "26.11.1"
    assert versions.strip_prefix("26.11.1", "v") is None
    assert versions.strip_prefix("26.11.1", "") == "26.11.1"
