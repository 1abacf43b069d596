"""CDN purge against a local server that answers as Cloudflare's purge API does (real HTTP, no mocks)."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from stackpatch.cdn import CloudflarePurger, PurgeError, purge
from stackpatch.config import CdnConfig
from stackpatch.errors import FaultError, UserError
from tests.fakes.cloudflare import FakeCloudflare, fake_cloudflare  # noqa: F401  (fixture)

ENV = "STACKPATCH_TEST_CF_TOKEN"


def cfg(fake: FakeCloudflare, **kw) -> CdnConfig:
    return CdnConfig(zone=fake.zone, api_url=fake.api_url, token_env=ENV, **kw)


def env(fake: FakeCloudflare) -> dict[str, str]:
    return {ENV: fake.token}


class Waits:
    """A real sleep that remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, s: float) -> None:
        self.asked.append(s)
        time.sleep(s)


def purger(fake: FakeCloudflare, **kw) -> CloudflarePurger:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_wait", 2.0)
    return CloudflarePurger(fake.api_url, fake.zone, kw.pop("token", fake.token), **kw)


@pytest.mark.parametrize("mode,items,body", [
    ("everything", [], {"purge_everything": True}),
    ("files", ["https://example.com/a.css", "https://example.com/b.js"],
     {"files": ["https://example.com/a.css", "https://example.com/b.js"]}),
    ("hosts", ["www.example.com", "static.example.com"], {"hosts": ["www.example.com", "static.example.com"]}),
    ("prefixes", ["www.example.com/assets/"], {"prefixes": ["www.example.com/assets/"]}),
    ("tags", ["release", "css"], {"tags": ["release", "css"]}),
])
def test_every_mode_sends_cloudflares_body(fake_cloudflare, mode, items, body):
    result = purge(cfg(fake_cloudflare, purge=mode, items=items), env=env(fake_cloudflare))
    assert result.ok and result.requests == 1 and result.retries == 0 and result.errors == []
    assert fake_cloudflare.accepted == [body]
    assert fake_cloudflare.seen[0].path == f"/client/v4/zones/{fake_cloudflare.zone}/purge_cache"
    assert result.purged == len(items) and len(result.ids) == 1
    assert result.to_json()["items"] == items  # journaled with the purge's result: the report lists them


def test_items_go_in_batches_of_at_most_batch_size(fake_cloudflare):
    files = [f"https://example.com/f{i}.css" for i in range(65)]
    seen: list[tuple[int, int]] = []
    result = purge(cfg(fake_cloudflare, purge="files", items=files), env=env(fake_cloudflare),
                   progress=lambda done, total: seen.append((done, total)))
    assert [len(b["files"]) for b in fake_cloudflare.accepted] == [30, 30, 5]
    assert [f for b in fake_cloudflare.accepted for f in b["files"]] == files
    assert (result.requests, result.purged, result.total) == (3, 65, 65)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_batch_size_is_configurable_and_repeats_are_sent_once(fake_cloudflare):
    tags = [f"t{i % 7}" for i in range(20)]  # 7 distinct
    result = purge(cfg(fake_cloudflare, purge="tags", items=tags, batch_size=3), env=env(fake_cloudflare))
    assert [b["tags"] for b in fake_cloudflare.accepted] == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert result.purged == 7


def test_batch_larger_than_cloudflare_accepts_fails_at_once_with_its_error(fake_cloudflare):
    files = [f"https://example.com/{i}" for i in range(40)]
    with pytest.raises(PurgeError) as e:
        purge(cfg(fake_cloudflare, purge="files", items=files, batch_size=40), env=env(fake_cloudflare))
    assert fake_cloudflare.requests == 1  # a 400 is not retried
    assert "1015: Only 30 files can be purged per request" in str(e.value)
    assert e.value.result.errors == ["1015: Only 30 files can be purged per request"]
    assert "cdn.batch_size" in str(e.value)


def test_401_fails_at_once_listing_cloudflares_error(fake_cloudflare):
    with pytest.raises(PurgeError) as e:
        purge(cfg(fake_cloudflare), env={ENV: "wrong-token-abc"})
    err = e.value
    assert isinstance(err, FaultError) and err.exit_code == 1
    assert fake_cloudflare.requests == 1 and fake_cloudflare.accepted == []
    assert err.result.errors == ["10000: Authentication error"] and err.result.retries == 0
    msg = str(err)
    assert "\n" not in msg and "HTTP 401" in msg and "10000: Authentication error" in msg
    assert "stackpatch purge" in msg and "wrong-token-abc" not in msg


def test_unknown_zone_is_cloudflares_7003_and_not_retried(fake_cloudflare):
    p = CloudflarePurger(fake_cloudflare.api_url, "no-such-zone", fake_cloudflare.token)
    with pytest.raises(PurgeError) as e:
        p.purge("everything")
    assert fake_cloudflare.requests == 1 and "7003" in str(e.value)


def test_429_with_retry_after_is_retried_then_ok(fake_cloudflare):
    fake_cloudflare.fail_next(1, status=429, retry_after=1)
    fake_cloudflare.fail_next(1, status=429, retry_after=0)
    waits = Waits()
    t0 = time.monotonic()
    result = purger(fake_cloudflare, sleep=waits).purge("hosts", ["www.example.com"])
    assert result.ok and result.retries == 2 and result.requests == 3
    assert waits.asked == [1.0, 0.0]  # Retry-After honoured, not the backoff
    assert time.monotonic() - t0 >= 1.0
    assert [s.status for s in fake_cloudflare.seen] == [429, 429, 200]
    assert fake_cloudflare.accepted == [{"hosts": ["www.example.com"]}]


def test_retry_after_is_capped_by_max_wait(fake_cloudflare):
    fake_cloudflare.fail_next(1, status=429, retry_after=3600)
    waits = Waits()
    result = purger(fake_cloudflare, sleep=waits, max_wait=0.05).purge("everything")
    assert result.ok and waits.asked == [0.05]


def test_500_twice_then_ok_with_exponential_backoff(fake_cloudflare):
    fake_cloudflare.fail_next(2, status=500)
    waits = Waits()
    result = purger(fake_cloudflare, sleep=waits).purge("prefixes", ["example.com/a/"])
    assert result.ok and result.retries == 2 and result.requests == 3
    assert waits.asked == pytest.approx([0.01, 0.02])
    assert [s.status for s in fake_cloudflare.seen] == [500, 500, 200]


def test_500_forever_fails_after_the_retries(fake_cloudflare):
    fake_cloudflare.fail_next(100, status=503)
    waits = Waits()
    with pytest.raises(PurgeError) as e:
        purger(fake_cloudflare, sleep=waits, retries=3).purge("tags", ["a"])
    r = e.value.result
    assert fake_cloudflare.requests == 4 and r.requests == 4 and r.retries == 3 and not r.ok
    assert len(waits.asked) == 3 and fake_cloudflare.accepted == []
    assert "HTTP 503 after 4 attempts" in str(e.value) and "0 of 1 tags purged" in str(e.value)


def test_200_without_success_is_a_failure_not_retried(fake_cloudflare):
    fake_cloudflare.fail_next(1, status=200, errors=[{"code": 1001, "message": "purge refused"}])
    with pytest.raises(PurgeError) as e:
        purger(fake_cloudflare).purge("everything")
    assert fake_cloudflare.requests == 1 and "without a successful Cloudflare envelope" in str(e.value)
    assert e.value.result.errors == ["1001: purge refused"]


def test_a_dropped_connection_is_retried(fake_cloudflare):
    fake_cloudflare.fail_next(2, status=0)  # the server closes without answering
    result = purger(fake_cloudflare, sleep=Waits()).purge("everything")
    assert result.ok and result.retries == 2
    assert [s.status for s in fake_cloudflare.seen] == [0, 0, 200]


def test_a_later_batch_failing_reports_what_was_purged(fake_cloudflare):
    fake_cloudflare.fail_next(1, status=403, after=1,
                              errors=[{"code": 10000, "message": "Authentication error"}])
    files = [f"https://example.com/{i}" for i in range(5)]
    with pytest.raises(PurgeError) as e:
        purger(fake_cloudflare, batch_size=2).purge("files", files)
    assert [s.status for s in fake_cloudflare.seen] == [200, 403]  # a 403 is not retried
    assert e.value.result.purged == 2 and "request 2 of 3 (HTTP 403)" in str(e.value)
    assert "2 of 5 files purged" in str(e.value)


def test_unreachable_api_is_retried_then_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits = Waits()
    p = CloudflarePurger(f"http://127.0.0.1:{port}/client/v4", "zone", "tok-xyz", retries=2, backoff=0.01,
                         sleep=waits, timeout=2)
    with pytest.raises(PurgeError) as e:
        p.purge("everything")
    assert len(waits.asked) == 2 and e.value.result.requests == 3
    assert "no answer from" in str(e.value) and "tok-xyz" not in str(e.value)


def test_missing_token_is_a_one_line_user_error_naming_the_variable(fake_cloudflare):
    with pytest.raises(UserError) as e:
        purge(cfg(fake_cloudflare), env={})
    msg = str(e.value)
    assert ENV in msg and "\n" not in msg and e.value.exit_code == 2
    assert fake_cloudflare.requests == 0


def test_a_token_that_cannot_be_a_header_is_refused_without_echoing_it(fake_cloudflare):
    bad = "secret-part\nX-Injected: yes"
    with pytest.raises(UserError) as e:
        purge(cfg(fake_cloudflare), env={ENV: bad})
    assert "secret-part" not in str(e.value) and "cdn.token_env" in str(e.value)
    assert fake_cloudflare.requests == 0


def test_provider_none_and_no_section_purge_nothing(fake_cloudflare):
    r = purge(CdnConfig(provider="none", zone="z"), env={})
    assert r.ok and r.requests == 0 and r.provider == "none"
    assert purge(None).ok
    assert fake_cloudflare.requests == 0


def test_the_token_never_appears_in_output_logs_or_errors(fake_cloudflare, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    token = fake_cloudflare.token
    texts: list[str] = []
    p = purger(fake_cloudflare, retries=2)
    texts.append(repr(p))
    fake_cloudflare.fail_next(1, status=429, retry_after=0)
    ok = p.purge("files", [f"https://example.com/{i}" for i in range(31)])
    texts.append(str(ok.to_json()))
    fake_cloudflare.fail_next(3, status=500)  # retries=2: three attempts
    with pytest.raises(PurgeError) as e:
        p.purge("everything")
    texts += [str(e.value), repr(e.value), str(e.value.result.to_json())]
    # a server that echoes the token back in errors[] is redacted too
    fake_cloudflare.fail_next(1, status=403, errors=[{"code": 9109, "message": f"Invalid token {token}"}])
    with pytest.raises(PurgeError) as e2:
        p.purge("everything")
    texts += [str(e2.value), str(e2.value.result.errors)]
    assert "[token]" in str(e2.value)
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    assert any("retry" in t for t in texts)  # something was logged
    for t in texts:
        assert token not in t


def test_the_fake_runs_standalone_for_a_sandbox(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    record = tmp_path / "purges.jsonl"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.cloudflare", "--zone", "zone1",
                             "--token-env", ENV, "--record", str(record)], cwd=root,
                            env={**os.environ, ENV: "standalone-token"}, stdout=subprocess.PIPE, text=True)
    try:
        api = proc.stdout.readline().strip()
        assert api.startswith("http://127.0.0.1:") and "standalone-token" not in api
        r = purge(CdnConfig(zone="zone1", api_url=api, token_env=ENV, purge="tags", items=["a"]),
                  env={ENV: "standalone-token"})
        assert r.ok
        assert [json.loads(line) for line in record.read_text().splitlines()] == [{"tags": ["a"]}]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
