"""The lint of the stack's update settings: a pure function over plain data, and the Swarm spec reader."""

from __future__ import annotations

from stackpatch.lint import lint
from stackpatch.targets.base import UpdateSettings
from stackpatch.targets.swarm.spec import update_settings

S = 1_000_000_000  # Swarm's durations are nanoseconds
GOOD = UpdateSettings(order="start-first", failure_action="pause", monitor=5, delay=0, healthcheck="service",
                      health_interval=2, health_retries=2)


def codes(u: UpdateSettings, name: str = "phpha") -> list[str]:
    return [w.code for w in lint({name: u}, [name])]


def test_good_settings_give_no_warning():
    assert codes(GOOD) == []


def test_monitor_shorter_than_interval_times_retries():
    from dataclasses import replace
    ws = lint({"phpha": replace(GOOD, monitor=5, health_interval=2, health_retries=3)}, ["phpha"])
    assert [w.code for w in ws] == ["short-monitor"]
    assert "(2s × 3 = 6s)" in ws[0].message and "moby#37972" in ws[0].message and "at least 6s" in ws[0].message


def test_start_first_with_a_host_mode_port():
    from dataclasses import replace
    ws = lint({"web": replace(GOOD, host_ports=(8080,))}, ["web"])
    assert [w.code for w in ws] == ["start-first-host-port"] and "moby#36934" in ws[0].message
    assert codes(replace(GOOD, order="stop-first", host_ports=(8080,))) == []


def test_delay_longer_than_monitor():
    from dataclasses import replace
    assert codes(replace(GOOD, delay=10, monitor=5)) == ["delay-over-monitor"]


def test_a_patched_service_without_healthcheck():
    from dataclasses import replace
    assert codes(replace(GOOD, healthcheck="none", health_interval=None, health_retries=None)) == ["no-healthcheck"]
    assert codes(replace(GOOD, healthcheck="disabled", health_interval=None, health_retries=None)) == ["no-healthcheck"]
    # a service whose image could not be read is not accused of having none
    assert codes(replace(GOOD, healthcheck="unknown", health_interval=None, health_retries=None)) == []


def test_failure_action_rollback():
    from dataclasses import replace
    assert codes(replace(GOOD, failure_action="rollback")) == ["swarm-rollback"]


def test_only_patched_services_are_linted():
    bad = UpdateSettings(failure_action="rollback")
    assert lint({"db": bad, "phpha": GOOD, "web": None}, ["phpha", "web"]) == []


def test_swarm_spec_reader_fills_in_swarms_defaults():
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "x"}}}
    u = update_settings(spec, None)
    assert (u.order, u.failure_action, u.monitor, u.delay, u.healthcheck) == ("stop-first", "pause", 5.0, 0.0, "none")
    # the image's healthcheck counts when the spec has none; Docker's defaults: 30 s, 3 retries
    u = update_settings(spec, {"Test": ["CMD", "true"]})
    assert (u.healthcheck, u.health_interval, u.health_retries) == ("image", 30.0, 3)
    assert update_settings(spec, False).healthcheck == "unknown"


def test_swarm_spec_reader_reads_update_config_healthcheck_and_ports():
    spec = {"UpdateConfig": {"Parallelism": 1, "Delay": 3 * S, "FailureAction": "rollback", "Monitor": 1 * S,
                             "Order": "start-first"},
            "TaskTemplate": {"ContainerSpec": {"Image": "x", "Healthcheck": {"Test": ["CMD", "true"],
                                                                            "Interval": 2 * S, "Retries": 2}}},
            "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"},
                                       {"TargetPort": 81, "PublishedPort": 8081, "PublishMode": "ingress"}]}}
    u = update_settings(spec, None)
    assert u == UpdateSettings(order="start-first", failure_action="rollback", monitor=1.0, delay=3.0,
                               parallelism=1, healthcheck="service", health_interval=2.0, health_retries=2,
                               host_ports=(8080,))
    assert sorted(w.code for w in lint({"phpfiles": u}, ["phpfiles"])) == [
        "delay-over-monitor", "short-monitor", "start-first-host-port", "swarm-rollback"]
    spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {"Test": ["NONE"]}
    assert update_settings(spec, None).healthcheck == "disabled"


def test_a_job_cloned_from_a_service_joins_its_networks_without_its_aliases():
    """`docker stack deploy` gives each service its short name as a network alias; a job that kept it would
    be in `tasks.phpfiles` (measured: nginx sent /files/ requests to the migration job, refused, then
    connects timing out once it exited)."""
    from stackpatch.targets.swarm.spec import job_spec
    spec = {"Name": "acme-prod_phpfiles", "Labels": {"com.docker.stack.namespace": "acme-prod", "x": "y"},
            "TaskTemplate": {"ContainerSpec": {"Image": "app:1", "Env": ["A=1", "B=2"]},
                             "Networks": [{"Target": "net1", "Aliases": ["phpfiles"]}, {"Target": "net2"}]}}
    job = job_spec("acme-prod_job", spec, "app:2", ["python3", "/app/migrate.py"], {"B": "3"})
    assert job["TaskTemplate"]["Networks"] == [{"Target": "net1"}, {"Target": "net2"}]
    assert spec["TaskTemplate"]["Networks"][0]["Aliases"] == ["phpfiles"]  # the service's own spec is untouched
    cs = job["TaskTemplate"]["ContainerSpec"]
    assert (cs["Image"], cs["Command"], cs["Env"]) == ("app:2", ["python3", "/app/migrate.py"], ["A=1", "B=3"])
    assert "Replicas" not in job["Mode"] and job["Mode"]["ReplicatedJob"]["TotalCompletions"] == 1
