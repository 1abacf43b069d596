"""The benchmark harness (issue 6), quickly and without Docker: the load generator against a local
server, the chart and the results schema on the recorded sample in benchmarks/samples/."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from benchmarks import loadgen, schema
from benchmarks.chart import chart, relative_phases

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "benchmarks" / "samples"


class Server:
    """A stdlib HTTP server on 127.0.0.1 answering `status` with a /version-like JSON body."""

    def __init__(self, status: int = 200, revision: str = "abc1234def", script=None) -> None:
        """`script(n)` -> (status, revision) for the n-th request (1-based), when given."""
        self.status, self.revision, self.hits = status, revision, 0
        lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with lock:
                    srv.hits += 1
                    n = srv.hits
                    srv.gets.append(self.path)
                status, revision = script(n) if script else (srv.status, srv.revision)
                body = json.dumps({"release": "26.11.1", "revision": revision}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    srv.posts.append((self.path, data))
                body = json.dumps({"id": len(srv.posts), "request_id": data["request_id"]}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.posts: list[tuple[str, dict]] = []
        self.gets: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/version"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_loadgen_sends_a_fixed_rate_and_records_every_request(tmp_path):
    out = tmp_path / "run.jsonl"
    with Server() as srv:
        samples = asyncio.run(loadgen.run(srv.url, rate=40, duration=1.0, out=out))
    assert len(samples) == 40 and srv.hits == 40
    assert [s.seq for s in samples] == list(range(40))
    assert all(s.ok and s.status == 200 and s.revision == "abc1234def" for s in samples)
    # due times are 1/rate apart: an open-loop schedule
    assert samples[-1].t == pytest.approx(39 / 40)
    assert len(out.read_text().splitlines()) == 40
    summary = loadgen.summarize(loadgen.load(out))
    assert summary["total_requests"] == 40 and summary["failed_requests"] == 0
    assert summary["longest_gap_s"] <= summary["duration_s"]
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert [r["revision"] for r in summary["revisions"]] == ["abc1234def"]


def test_loadgen_counts_500s_and_refused_connections_as_failed():
    with Server(status=500) as srv:
        samples = asyncio.run(loadgen.run(srv.url, rate=20, duration=0.5))
    url = srv.url  # closed now: nothing listens
    refused = asyncio.run(loadgen.run(url, rate=20, duration=0.5, timeout=1))
    s = loadgen.summarize(samples + refused)
    assert s["total_requests"] == 20 and s["failed_requests"] == 20
    assert s["p50_ms"] is None and s["revisions"] == []
    assert s["statuses"]["500"] == 10 and s["statuses"]["ConnectionRefusedError"] == 10
    assert s["longest_gap_s"] >= 0.45  # no successful answer at all during the run


def test_loadgen_longest_gap_is_the_stretch_without_a_success():
    # 15 answers from the old revision, 20 503s, then the new revision
    srv = Server(script=lambda n: (503 if 15 < n <= 35 else 200, "old1234" if n <= 15 else "new5678"))
    with srv:
        samples = asyncio.run(loadgen.run(srv.url, rate=50, duration=1.0))
    s = loadgen.summarize(samples)
    assert s["total_requests"] == 50 and s["failed_requests"] == 20 and s["statuses"] == {"200": 30, "503": 20}
    assert s["longest_gap_s"] > 0.1  # 20 requests due 20 ms apart had no successful answer
    # the server picks the answer by arrival, the summary goes by due time: on a loaded machine two
    # requests due 20 ms apart can arrive the other way round, so the spans may interleave where the
    # answers change; the first request due got the old revision and the last one the new
    revs = [r["revision"] for r in s["revisions"]]
    assert revs[0] == "old1234" and revs[-1] == "new5678" and set(revs) == {"old1234", "new5678"}


def test_loadgen_mixes_in_posts_each_with_its_own_request_id():
    with Server() as srv:
        samples = asyncio.run(loadgen.run(srv.url, rate=50, duration=1.0, post_share=0.2, tag="lgtest1"))
    posts = [s for s in samples if s.method == "POST"]
    assert len(samples) == 50 and len(posts) == 10 and all(s.ok and s.status == 201 for s in posts)
    assert [s.seq for s in posts] == [4, 9, 14, 19, 24, 29, 34, 39, 44, 49]  # spread evenly, open loop
    assert sorted(d["request_id"] for _, d in srv.posts) == sorted(s.request_id for s in posts)
    assert {path for path, _ in srv.posts} == {"/notes"} and posts[0].request_id == "lgtest1-4"
    s = loadgen.summarize(samples)
    assert (s["post_requests"], s["post_ok"]) == (10, 10) and s["max_ms"] >= s["p99_ms"]
    assert [r["revision"] for r in s["revisions"]] == ["abc1234def"]  # POST answers name no revision
    with pytest.raises(ValueError, match="post_share"):
        asyncio.run(loadgen.run(srv.url, rate=1, duration=0.1, post_share=1.5))


def test_loadgen_spreads_the_gets_over_the_paths_in_turn():
    with Server() as srv:
        samples = asyncio.run(loadgen.run(srv.url, rate=50, duration=0.6, post_share=0.2,
                                          also_get=["/files/revision"]))
    gets = [s for s in samples if s.method == "GET"]
    assert len(samples) == 30 and len(gets) == 24 and all(s.ok for s in samples)
    # in turn, POSTs left out of the count: /version, /files/revision, /version, ...
    assert [s.path for s in gets] == ["/version", "/files/revision"] * 12
    assert all(0 <= s.connect_ms <= s.latency_ms for s in samples)  # the connect, within the request's time
    assert sorted(srv.gets) == sorted(s.path for s in gets)
    assert {s.path for s in samples if s.method == "POST"} == {"/notes"}
    with pytest.raises(ValueError, match="must start with '/'"):
        asyncio.run(loadgen.run(srv.url, rate=1, duration=0.1, also_get=["files"]))


def test_post_figures_set_the_rows_against_the_answers():
    S = loadgen.Sample
    samples = [S(0, 1.0, 0, 201, None, 5, 0, None, "POST", "t-0"), S(1, 1.1, 0.1, 201, None, 5, 0, None, "POST", "t-1"),
               S(2, 1.2, 0.2, 502, None, 5, 0, None, "POST", "t-2"), S(3, 1.3, 0.3, None, "Timeout", 5, 0, None, "POST", "t-3"),
               S(4, 1.4, 0.4, 200, None, 5, 0, "abc", "GET", None), S(5, 1.5, 0.5, 201, None, 5, 0, None, "POST", "t-5")]
    # t-0 once; t-1 twice (replayed); t-2 failed, not written; t-3 timed out but written; t-5 answered, no row
    f = loadgen.post_figures(samples, {"t-0": 1, "t-1": 2, "t-3": 1, "other-9": 1})
    assert f == {"post_requests": 5, "post_ok": 3, "post_rows": 4, "post_applied_twice": 1, "post_lost": 1,
                 "post_applied_unanswered": 1, "post_unknown_rows": 1}


@pytest.mark.parametrize("url", ["http://localhost:8080/", "http://10.0.0.1/", "https://127.0.0.1/",
                                 "http://127.0.0.2/", "http://example.com/?h=127.0.0.1"])
def test_loadgen_refuses_any_host_but_127_0_0_1(url):
    with pytest.raises(ValueError, match="refusing"):
        asyncio.run(loadgen.run(url, rate=1, duration=0.1))


def test_loadgen_must_be_bounded():
    with pytest.raises(ValueError, match="bounded"):
        asyncio.run(loadgen.run("http://127.0.0.1:9/", rate=1))


def test_loadgen_stops_when_the_stop_file_appears(tmp_path):
    stop = tmp_path / "stop"

    async def later():
        await asyncio.sleep(0.3)
        stop.touch()
    with Server() as srv:
        async def both():
            return (await asyncio.gather(loadgen.run(srv.url, rate=50, stop_file=stop, max_duration=5), later()))[0]
        samples = asyncio.run(both())
    # stopped by the file, long before max_duration (5 s, 250 requests)
    assert 1 <= len(samples) < 150 and samples[-1].t < 3.0


def test_chart_draws_the_recorded_sample(tmp_path):
    samples = loadgen.load(SAMPLES / "run.jsonl")
    phases = json.loads((SAMPLES / "phases.json").read_text())
    rel = relative_phases(phases, samples[0].ts)
    assert all(0 <= a <= b < 10 for a, b in rel.values())  # epoch phases shifted to the load's start
    png = chart(samples, phases, tmp_path / "run.png", title="sample")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # and as a script, the way `make bench` calls it
    out = tmp_path / "cli.png"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chart.py"), str(SAMPLES / "run.jsonl"),
                    "--phases", str(SAMPLES / "phases.json"), "--out", str(out)], check=True, timeout=60,
                   capture_output=True)
    assert out.read_bytes()[:4] == b"\x89PNG"


def _results_from_sample() -> dict:
    summary = loadgen.summarize(loadgen.load(SAMPLES / "run.jsonl"))
    phases = json.loads((SAMPLES / "phases.json").read_text())
    lead = max(b for _, b in phases.values()) - min(a for a, _ in phases.values())
    c = schema.contender_figures(summary, phases, lead)
    return {"machine": schema.machine_info(),
            "contenders": {"stackpatch": {**c, "overhead_share": 0.08}, "manual_routine": c},
            "build_dir": {"files": 10_000, "incremental_s": 0.3, "fresh_clone_s": 2.5}}


def test_schema_holds_for_figures_made_from_the_recorded_sample(tmp_path):
    data = _results_from_sample()
    c = data["contenders"]["manual_routine"]
    assert (c["total_requests"], c["failed_requests"]) == (170, 52)  # what the recorded sample holds
    assert set(c["phases"]) == {"build", "wave rest", "purge"}
    f = tmp_path / "results.json"
    f.write_text(json.dumps(data))
    r = schema.validate(f)
    assert r.contenders.stackpatch.overhead_share == 0.08 and r.machine.cores >= 1
    assert subprocess.run([sys.executable, str(ROOT / "benchmarks" / "schema.py"), str(f)],
                          capture_output=True, timeout=60).returncode == 0


@pytest.mark.parametrize("breaks", [
    lambda d: d["contenders"]["stackpatch"].update(overhead_share=1.5),
    lambda d: d["contenders"]["stackpatch"].pop("overhead_share"),
    lambda d: d["contenders"]["manual_routine"].update(failed_requests=10_000),
    lambda d: d["contenders"]["manual_routine"].update(p50_ms=10_000.0),
    lambda d: d["contenders"]["manual_routine"]["phases"].update(build=-1),
    lambda d: d["build_dir"].pop("files"),
    lambda d: d.pop("machine"),
    lambda d: d["contenders"].pop("manual_routine"),
    lambda d: d["contenders"]["stackpatch"].update(post_requests=10, post_applied_twice=11),
    lambda d: d["contenders"]["stackpatch"].update(post_requests=10_000),
    lambda d: d["contenders"]["stackpatch"].update(rate=0),
    lambda d: d["contenders"]["manual_routine"].update(runs=[]),
    lambda d: d["contenders"]["manual_routine"].update(range={"lead_time_s": [3.0, 2.0]}),
    lambda d: d["contenders"].update(competent_script={"lead_time_s": 1.0}),
    lambda d: d["contenders"]["stackpatch"].update(runs=[{k: v for k, v in d["contenders"]["stackpatch"].items()
                                                          if k != "overhead_share"}]),
    lambda d: d.update(limit_s=0),
])
def test_schema_refuses_broken_results(breaks, tmp_path):
    data = _results_from_sample()
    breaks(data)
    with pytest.raises(ValidationError):
        schema.validate(data)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    assert subprocess.run([sys.executable, str(ROOT / "benchmarks" / "schema.py"), str(f)],
                          capture_output=True, timeout=60).returncode == 1


def test_manual_routine_script_parses_and_refuses_missing_inputs():
    script = ROOT / "benchmarks" / "manual_routine.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    r = subprocess.run(["bash", str(script), "--repo", "/nonexistent"], capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "--ref is required" in r.stderr and r.stdout == ""
    r = subprocess.run(["bash", str(script), "--repo", "r", "--ref", "x", "--version", "v", "--registry", "h/n",
                        "--stack", "s", "--base-image", "b"], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "REGISTRY_PASSWORD" in r.stderr
    for bad, says in ((["--node-host", "worker1"], "--node-host 'worker1': expected NODE=HOST"),
                      (["--swarm-host", ""], "--swarm-host needs a docker host")):
        r = subprocess.run(["bash", str(script), "--repo", "r", *bad], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 2 and says in r.stderr and r.stdout == "", r.stderr


def test_builddir_bench_measures_with_stackpatchs_code_or_says_pending():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "builddir_bench.py"), "--files", "300", "--repeat", "1"],
                       capture_output=True, text=True, timeout=300)
    if importlib.util.find_spec("stackpatch.images") is None:
        assert r.returncode == 3 and "PENDING" in r.stderr and r.stdout == ""
    else:
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["files"] == 300 and res["incremental_s"] > 0 and res["fresh_clone_s"] > 0


def test_measure_runs_a_command_under_load_and_finds_when_the_new_revision_serves(tmp_path):
    from benchmarks import measure

    rev_file = tmp_path / "revision"
    rev_file.write_text("old1111")
    deploy = (
        "import json, sys, time\n"
        "def mark(p, e): print(json.dumps({'phase': p, 'event': e, 'ts': time.time()}), flush=True)\n"
        "mark('build', 'start'); time.sleep(0.3); mark('build', 'end')\n"
        "mark('deploy', 'start'); open(sys.argv[1], 'w').write('new2222'); time.sleep(0.2); mark('deploy', 'end')\n"
        "print(json.dumps({'phase': 'done', 'event': 'end', 'ts': time.time(), 'revision': 'new2222'}))\n"
    )
    srv = Server(script=lambda n: (200, rev_file.read_text()))
    with srv:
        figures = asyncio.run(measure.measure(
            srv.url, [sys.executable, "-c", deploy, str(rev_file)], tmp_path / "out", "manual_routine",
            rate=40, before=0.3, after=0.4))
    assert figures["exit_code"] == 0 and figures["revision"] == "new2222" and figures["new_revision_served"]
    assert set(figures["phases"]) == {"build", "deploy"}
    assert 0.25 <= figures["phases"]["build"] < 2.0
    # the new revision serves right after the deploy phase began, not at the end of the command
    assert figures["phase_times"]["deploy"][0] <= figures["lead_time_s"] < figures["command_s"] + 0.5
    assert figures["failed_requests"] == 0 and figures["total_requests"] >= 30
    assert figures["baseline"]["failed_requests"] == 0 and 5 <= figures["baseline"]["total_requests"] <= 20
    schema.Contender.model_validate(figures)
    out = tmp_path / "out"
    assert (out / "manual_routine.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "manual_routine.contender.json").read_text())["lead_time_s"] == figures["lead_time_s"]
    assert len((out / "manual_routine.jsonl").read_text().splitlines()) == figures["total_requests"]


def test_serving_since_needs_the_new_revision_to_stay():
    S = loadgen.Sample
    seq = [S(0, 100.0, 0, 200, None, 1, 0, "a"), S(1, 101.0, 1, 200, None, 1, 0, "b"),
           S(2, 102.0, 2, 200, None, 1, 0, "a"), S(3, 103.0, 3, 200, None, 1, 0, "b"),
           S(4, 104.0, 4, 503, None, 1, 0, None), S(5, 105.0, 5, 200, None, 1, 0, "b")]
    from benchmarks.measure import serving_since
    assert serving_since(seq, "b", 0) == pytest.approx(103.001)
    assert serving_since(seq, "c", 0) is None
    # POSTs' answers name no revision: the new one serves from its first GET on, whatever POSTs come after
    posts = [S(10 + k, 103.5 + k, 3.5 + k, 201, None, 1, 0, None, "POST", f"t-{k}") for k in range(3)]
    assert serving_since(sorted(seq + posts, key=lambda s: s.ts), "b", 0) == pytest.approx(103.001)
    # … but a GET answered by the old revision after it still means the new one had not taken over
    assert serving_since(seq + posts + [S(20, 107.0, 7, 200, None, 1, 0, "a")], "b", 0) is None


def test_stackpatch_phases_and_overhead_from_a_recorded_ship_journal():
    from benchmarks.run import overhead, stackpatch_phases
    recs = [json.loads(line) for line in (SAMPLES / "ship-journal.jsonl").read_text().splitlines()]
    start = next(r for r in recs if r["kind"] == "run-start")
    t0 = start["ts"] - 12.0   # the command started 12 s before the run-start record
    end = recs[-1]["ts"] + 0.2
    ph = stackpatch_phases(recs, t0, end)
    # the build half from build_timings, then the journal's steps, in order, never overlapping
    # (without stderr lines: end to end up to the run-start record, the rest at the start is `plan`)
    assert list(ph)[:7] == ["plan", "workdir", "build:app", "build:front", "verify", "push", "update:phpfiles"]
    assert {"update:phpfiles", "gate:canary", "migrate", "update:phpha", "update:web", "purge"} <= set(ph)
    spans = sorted(ph.values())
    assert all(a <= b for a, b in spans) and all(p[1] <= n[0] + 1e-3 for p, n in zip(spans, spans[1:]))
    assert ph["push"][1] == pytest.approx(start["ts"], abs=1e-3)
    for k, v in start["build_timings"].items():
        assert ph[k][1] - ph[k][0] == pytest.approx(v, abs=2e-3)
    # the anchors from stderr lines move the build phases to when stackpatch announced them
    lines = [(t0 + 1.0, "→ sync the clean build directory at 2ced581"),
             (t0 + 1.4, "→ build 127.0.0.1:5000/ns/app:git-commit-2ced581")]
    anchored = stackpatch_phases(recs, t0, end, lines)
    assert anchored["workdir"][0] == pytest.approx(t0 + 1.0, abs=1e-3)
    assert anchored["build:app"][0] == pytest.approx(t0 + 1.4, abs=1e-3)
    assert anchored["plan"] == [pytest.approx(t0, abs=1e-3), pytest.approx(t0 + 1.0, abs=1e-3)]
    assert anchored["lock"][1] == pytest.approx(start["ts"], abs=1e-3) and anchored["lock"][0] > t0 + 1.4

    wall = end - t0
    o = overhead(ph, wall)
    waits = sum(b - a for k, (a, b) in ph.items()
                if k.startswith(("build:", "update:", "gate:", "serving")) or k in ("verify", "push", "migrate"))
    assert o["waits_s"] == pytest.approx(waits, abs=2e-3)
    assert o["overhead_share"] == pytest.approx((wall - waits) / wall, abs=1e-3)
    # its parts: what is not a wait, and the time between steps
    assert set(o["overhead_parts_s"]) == {"plan", "workdir", "purge", "between steps"}
    assert sum(o["overhead_parts_s"].values()) == pytest.approx(o["overhead_s"], abs=0.01)


def test_run_assembles_results_that_hold_against_the_schema():
    from benchmarks.run import assemble, compact_revisions, overhead, stackpatch_phases
    samples = loadgen.load(SAMPLES / "run.jsonl")
    summary = loadgen.summarize(samples)
    recs = [json.loads(line) for line in (SAMPLES / "ship-journal.jsonl").read_text().splitlines()]
    t0 = next(r for r in recs if r["kind"] == "run-start")["ts"] - 12.0
    ph = stackpatch_phases(recs, t0, recs[-1]["ts"])
    wall = recs[-1]["ts"] - t0
    rel = {k: [a - t0, b - t0] for k, (a, b) in ph.items()}
    sp = schema.contender_figures(summary, ph, wall - 5, **overhead(rel, wall), rate=100.0, post_requests=34,
                                  post_applied_twice=0, p99_during_ms=summary["p99_ms"], max_ms=1200.0,
                                  baseline={"p99_ms": summary["p99_ms"] / 4})
    sp["revisions"] = compact_revisions(summary["revisions"], summary["revisions"][-1]["revision"])
    manual_phases = json.loads((SAMPLES / "phases.json").read_text())
    mr = schema.contender_figures(summary, manual_phases, 4 * wall)
    bd = {"files": 10_000, "incremental_s": 0.3, "fresh_clone_s": 2.5,
          "scaling": [{"files": 1000, "incremental_s": 0.25, "fresh_clone_s": 0.4},
                      {"files": 30_000, "incremental_s": 0.35, "fresh_clone_s": 7.0}]}
    from benchmarks.run import combine
    cs = combine([dict(mr, lead_time_s=wall - 8), dict(mr, lead_time_s=wall - 6), dict(mr, lead_time_s=wall - 7)])
    res = assemble(schema.machine_info(), sp, mr, bd, cs, limit_s=9.5, date="2026-11-26")
    r = schema.validate(res)
    assert r.contenders.competent_script.lead_time_s == pytest.approx(wall - 7, abs=1e-3) and r.limit_s == 9.5
    assert len(r.contenders.competent_script.runs) == 3
    assert res["targets"]["lead_time_le_1_3x_competent"]["value"] == pytest.approx((wall - 5) / (wall - 7), abs=0.01)
    assert res["targets"]["overhead_le_5pct"]["target"] == 0.05
    assert 0 < r.contenders.stackpatch.overhead_share < 1
    t = res["targets"]
    assert t["stackpatch_zero_failed"] == {"met": False, "value": 52, "target": 0}
    assert t["lead_time_5x_shorter"]["met"] is False and t["lead_time_5x_shorter"]["value"] == pytest.approx(
        4 * wall / (wall - 5), abs=0.01)
    assert t["builddir_grows_with_change"]["met"] is True
    assert t["builddir_grows_with_change"]["fresh_clone_ratio"] == 17.5
    assert t["stackpatch_no_post_applied_twice"] == {"met": True, "value": 0, "target": 0}
    assert t["stackpatch_p99_during_le_2x_before"] == {"met": False, "value": 4.0, "target": 2.0}
    assert t["stackpatch_max_latency_le_1s"]["met"] is False
    by = sp["revisions"]["by_revision"]
    assert sum(v["count"] for v in by.values()) == summary["total_requests"] - summary["failed_requests"]
    from benchmarks.report import render
    md = render(res)
    assert "| 0 failed requests | 52 of 170 |" in md and "**missed**" in md and f"{r.machine.cores} cores" in md
    assert "| no POST applied twice | 0 of 34 POSTs |" in md and "100 requests/s offered" in md
    broken = dict(res, contenders={"stackpatch": {k: v for k, v in sp.items() if k != "overhead_share"},
                                   "manual_routine": mr})
    with pytest.raises(ValidationError):
        assemble(broken["machine"], broken["contenders"]["stackpatch"], mr, bd)


def test_committed_results_hold_against_the_schema():
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    for f in files:
        r = schema.validate(f)
        assert r.contenders.stackpatch.lead_time_s > 0
        for png in (f.with_name(f"{f.stem}-stackpatch.png"), f.with_name(f"{f.stem}-manual-routine.png")):
            assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 300_000


def test_overhead_over_the_lead_time_counts_only_what_ran_before_it():
    from benchmarks.run import overhead
    ph = {"plan": [0, 1], "build:app": [1, 3], "update:phpha": [3, 8], "update:web": [8, 10], "purge": [10, 10.5]}
    o = overhead(ph, 11.0, lead_s=9.0)
    assert o["waits_s"] == 9.0 and o["overhead_s"] == 2.0 and o["overhead_share"] == round(2 / 11, 4)
    assert o["overhead_parts_s"] == {"plan": 1.0, "purge": 0.5, "between steps": 0.5}
    assert o["overhead_share_of_lead_time"] == round(1 / 9, 4)   # plan only: purge came after


def test_competent_script_refuses_bad_input_in_one_line():
    script = ROOT / "benchmarks" / "competent_script.py"
    base = ["--repo", "r", "--ref", "x", "--version", "v", "--registry", "h/n", "--stack", "s", "--base-image", "b",
            "--workdir", "/nonexistent"]
    for argv, env, want in (
            (["--repo", "r"], {"REGISTRY_USER": "u", "REGISTRY_PASSWORD": "p"}, "the following arguments are required"),
            (base, {}, "set REGISTRY_USER and REGISTRY_PASSWORD"),
            (base[:7] + ["h-without-namespace"] + base[8:], {"REGISTRY_USER": "u", "REGISTRY_PASSWORD": "p"},
             "expected HOST[:PORT]/NAMESPACE"),
            (base + ["--image", "app"], {"REGISTRY_USER": "u", "REGISTRY_PASSWORD": "p"}, "expected NAME=VALUE"),
            (base + ["--node-host", "worker1"], {"REGISTRY_USER": "u", "REGISTRY_PASSWORD": "p"},
             "--node-host 'worker1': expected NAME=VALUE"),
            (base + ["--swarm-host", ""], {"REGISTRY_USER": "u", "REGISTRY_PASSWORD": "p"},
             "--swarm-host needs a docker host")):
        r = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", **env})
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and want in r.stderr and "Traceback" not in r.stderr


def _run(lead, failed, p50, p99, max_ms, phases, overhead_share=None, limit_s=None):
    r = {"lead_time_s": lead, "failed_requests": failed, "total_requests": 1000 + failed, "longest_gap_s": lead / 100,
         "p50_ms": p50, "p99_ms": p99, "max_ms": max_ms, "phases": phases, "command_s": lead + 5,
         "revisions": [], "revision": "abc"}
    if overhead_share is not None:
        r["overhead_share"] = overhead_share
    if limit_s is not None:
        r["limit_s"] = limit_s
    return r


def test_several_runs_combine_into_medians_with_their_range_and_runs():
    from benchmarks.run import combine
    runs = [_run(30.0, 2, 5.0, 40.0, 900.0, {"build": 3.0, "deploy": 20.0}, 0.02, 10.0),
            _run(20.0, 0, 4.0, 30.0, 1500.0, {"build": 2.0, "deploy": 15.0}, 0.04, 9.0),
            _run(25.0, 1, 6.0, 50.0, 700.0, {"build": 4.0, "deploy": 18.0, "extra": 1.0}, 0.03, 11.0)]
    c = combine(runs)
    assert (c["lead_time_s"], c["failed_requests"], c["p50_ms"], c["p99_ms"]) == (25.0, 1, 5.0, 40.0)
    assert c["overhead_share"] == 0.03 and c["limit_s"] == 10.0
    assert c["phases"] == {"build": 3.0, "deploy": 18.0, "extra": 1.0}
    assert c["max_latency_s"] == 1.5   # the slowest request of any run, not a median
    assert c["range"]["lead_time_s"] == [20.0, 30.0] and c["range"]["failed_requests"] == [0, 2]
    assert c["range"]["max_latency_s"] == [0.7, 1.5]
    assert [r["lead_time_s"] for r in c["runs"]] == [30.0, 20.0, 25.0]   # in the order they ran
    assert all(r["max_latency_s"] is not None and "phases" in r and "revisions" not in r for r in c["runs"])
    schema.StackpatchContender.model_validate(c)
    one = combine(runs[:1])
    assert one["lead_time_s"] == 30.0 and len(one["runs"]) == 1 and one["range"]["lead_time_s"] == [30.0, 30.0]


def test_the_limit_line_adds_the_build_the_push_and_one_healthy_task_per_wave():
    from benchmarks.run import limit_figures
    recs = [json.loads(line) for line in (SAMPLES / "ship-journal.jsonl").read_text().splitlines()]
    start = next(r for r in recs if r["kind"] == "run-start")
    intents = {r["step"]: r["ts"] for r in recs if r["kind"] == "intent" and not r.get("undo")}
    lines = [(intents["update:phpfiles"] + 0.5, "phpfiles: 0/1 running on the new image (updating)"),
             (intents["update:phpfiles"] + 2.5, "phpfiles: 1/1 running on the new image, healthy"),
             (intents["update:phpha"] + 3.0, "phpha: 1/2 running on the new image (updating)"),
             (intents["update:phpha"] + 4.0, "web: 1/1 running on the new image (updating)")]
    got = limit_figures(recs, lines)
    bt = start["build_timings"]
    want = {**{k: v for k, v in bt.items() if k.startswith("build:") or k == "push"},
            "first healthy task:canary": 2.5, "first healthy task:rest": 3.0}
    assert got["parts_s"] == pytest.approx(want, abs=2e-3)
    assert got["limit_s"] == pytest.approx(sum(want.values()), abs=5e-3)
    assert limit_figures(recs, lines[:2]) is None   # the rest's first healthy task is not in the lines


def test_builds_side_by_side_start_together_and_the_limit_counts_the_slowest():
    from benchmarks.run import limit_figures, stackpatch_phases
    recs = [json.loads(line) for line in (SAMPLES / "ship-journal.jsonl").read_text().splitlines()]
    start = next(r for r in recs if r["kind"] == "run-start")
    start["build_timings"] = {"workdir": 0.1, "build:app": 3.0, "build:front": 1.0, "push": 2.0, "verify": 5.0,
                              "tag": 0.2}
    start["build_beside"] = ["build:app", "build:front"]
    t0 = start["ts"] - 12.0
    ph = stackpatch_phases(recs, t0, recs[-1]["ts"])
    assert ph["build:app"][0] == ph["build:front"][0] == pytest.approx(ph["workdir"][1], abs=1e-3)
    assert ph["push"][0] == ph["verify"][0] == pytest.approx(ph["build:app"][1], abs=1e-3)
    assert ph["tag"][1] == pytest.approx(start["ts"], abs=1e-3)
    lines = [(t0 + 1.0, "→ sync the clean build directory at 2ced581"),
             (t0 + 1.2, "→ build 127.0.0.1:5000/ns/app:git-commit-2ced581, 127.0.0.1:5000/ns/front:git-commit-2ced581"
                        " side by side")]
    an = stackpatch_phases(recs, t0, recs[-1]["ts"], lines)
    assert an["build:app"][0] == an["build:front"][0] == pytest.approx(t0 + 1.2, abs=1e-3)
    assert an["build:front"][1] == pytest.approx(t0 + 2.2, abs=1e-3)
    assert an["push"][0] == pytest.approx(t0 + 4.2, abs=1e-3)
    intents = {r["step"]: r["ts"] for r in recs if r["kind"] == "intent" and not r.get("undo")}
    got = limit_figures(recs, [(intents["update:phpfiles"] + 2.5, "phpfiles: 1/1 running on the new image"),
                               (intents["update:phpha"] + 3.0, "phpha: 1/2 running on the new image")])
    assert got["parts_s"] == pytest.approx({"build:app": 3.0, "push": 2.0, "first healthy task:canary": 2.5,
                                            "first healthy task:rest": 3.0}, abs=2e-3)


def test_verify_beside_the_push_is_placed_beside_it_and_counted_once():
    from benchmarks.run import overhead, stackpatch_phases
    recs = [json.loads(line) for line in (SAMPLES / "ship-journal.jsonl").read_text().splitlines()]
    start = next(r for r in recs if r["kind"] == "run-start")
    start["build_timings"] = {"workdir": 0.1, "build:app": 1.0, "build:front": 1.0, "push": 2.0, "verify": 5.0,
                              "tag": 0.2}
    t0 = start["ts"] - 12.0
    ph = stackpatch_phases(recs, t0, recs[-1]["ts"])
    assert ph["push"][0] == ph["verify"][0] == pytest.approx(ph["build:front"][1], abs=1e-3)
    assert ph["tag"][0] == pytest.approx(ph["verify"][1], abs=1e-3)
    lines = [(t0 + 1.0, "→ sync the clean build directory at 2ced581"),
             (t0 + 1.2, "→ build 127.0.0.1:5000/ns/app:git-commit-2ced581"),
             (t0 + 2.3, "→ build 127.0.0.1:5000/ns/front:git-commit-2ced581"),
             (t0 + 3.4, "→ push 127.0.0.1:5000/ns/app:stackpatch-prepush-2ced581 while verify runs"),
             (t0 + 3.5, "→ verify: deploying throwaway stack spverify-1 from deploy/verify.yml"),
             (t0 + 8.6, "→ tag 127.0.0.1:5000/ns/app:git-commit-2ced581, :26.11.1b (verified)")]
    an = stackpatch_phases(recs, t0, recs[-1]["ts"], lines)
    assert an["push"][0] == pytest.approx(t0 + 3.4, abs=1e-3) and an["verify"][0] == pytest.approx(t0 + 3.5, abs=1e-3)
    assert an["tag"][0] == pytest.approx(t0 + 8.6, abs=1e-3)
    rel = {k: [a - t0, b - t0] for k, (a, b) in an.items()}
    o = overhead({k: rel[k] for k in ("push", "verify", "tag")}, 6.0)
    assert o["waits_s"] == pytest.approx(5.1, abs=2e-3)   # push [3.4, 5.4] and verify [3.5, 8.5]: 5.1 s, not 7
