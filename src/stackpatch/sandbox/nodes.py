"""`sandbox up --nodes N` (N > 1): a manager and N-1 workers, each a dockerd of its own.

Each node is a dockerd in its own network namespace (`ip netns`), started through
`nsenter --net=/var/run/netns/NS` (not `ip netns exec`, which remounts /sys and leaves dockerd without its
devices cgroup), then `unshare --uts --mount` so that it has its own hostname and its own
/etc/docker/certs.d (a bind mount of the node's directory: each node trusts the sandbox's CA by itself, no
global file). Each has its own --data-root (an empty image store), --exec-root, unix socket, pid file and
--config-file, and logs to a file. The namespaces hang off one Linux bridge on a /24 of 198.18.0.0/15 (the
range reserved for benchmarks: never a real network); the host holds .1 on it, the manager .2, the workers
.3 and up. One iptables rule (DOCKER-USER, bridge to bridge) lets the nodes' VXLAN through the host's
FORWARD policy.

The manager answers on three ways, all made here: its unix socket; `tcp://ADDR:2376` with TLS client
certificates (the sandbox's CA); and `ssh://root@ADDR` through an sshd in its namespace that accepts only
the sandbox's key, with a forced command that dials the manager's socket. The ssh client finds the key and
the host key through /etc/ssh/ssh_config.d/stackpatch-ID.conf (a `Host ADDR` block: nothing else matches).

Everything made is recorded (in state.json's `nodes`) before it is made, and `remove` undoes exactly that.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stackpatch import ui
from stackpatch.errors import FaultError, UserError

NET = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: benchmarking only
RUN_ROOT = Path("/run/stackpatch")           # short paths: a unix socket path holds at most 107 bytes
CERTS_D = Path("/etc/docker/certs.d")
SSH_CONFIG_D = Path("/etc/ssh/ssh_config.d")
NETNS_DIR = Path("/var/run/netns")
TLS_PORT = 2376
MAX_NODES = 5
TOOLS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "setsid": "util-linux",
         "iptables": "iptables",
         "sshd": "openssh-server", "dockerd": "docker.io", "mount": "mount"}
# the programs run here, by name: root's PATH and the sbin directories (sshd, ip and iptables live there)
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])


# ---------------------------------------------------------------- checks and naming

def check_count(n: int) -> None:
    if not 1 <= n <= MAX_NODES:
        raise UserError(f"--nodes {n} is out of range: use 1 (one engine, the default) to {MAX_NODES}")


def preflight() -> None:
    """What a multi-node `up` needs before it makes anything: root and the tools."""
    if os.geteuid() != 0:
        raise UserError("sandbox up --nodes N > 1 makes network namespaces and daemons: run it as root")
    found = {"ip": shutil.which("ip", path=SBIN_PATH), "nsenter": shutil.which("nsenter", path=SBIN_PATH),
             "unshare": shutil.which("unshare", path=SBIN_PATH), "setsid": shutil.which("setsid", path=SBIN_PATH),
             "iptables": shutil.which("iptables", path=SBIN_PATH),
             "sshd": shutil.which("sshd", path=SBIN_PATH), "dockerd": shutil.which("dockerd", path=SBIN_PATH),
             "mount": shutil.which("mount", path=SBIN_PATH)}
    missing = sorted({TOOLS[tool] for tool, path in found.items() if not path})
    if missing:
        raise UserError(f"sandbox up --nodes needs {', '.join(missing)}: `apt-get install {' '.join(missing)}` "
                        "(or `make setup`) and retry")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": SBIN_PATH}


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=_env())
    if check and proc.returncode != 0:
        raise FaultError(f"`{' '.join(argv[:4])}` failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    return proc


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = []
    for line in _run("ip", "-o", "-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        dst = line.split()[0] if line.split() else ""
        if dst in ("default", "local", "broadcast", "unreachable"):
            dst = line.split()[1] if len(line.split()) > 1 else ""
        try:
            out.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    for line in _run("ip", "-o", "-4", "addr", "show", check=False).stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            out.append(ipaddress.ip_network(parts[parts.index("inet") + 1], strict=False))
    return out


def pick_subnet() -> ipaddress.IPv4Network:
    used = [n for n in _used_networks() if n.version == 4]
    subnets = list(NET.subnets(new_prefix=24))
    # the upper half of 198.19/16: the load tests of other sessions use the low 198.18 addresses
    candidates = subnets[256 + 64:]
    random.shuffle(candidates)
    for s in candidates:
        if not any(s.overlaps(u) for u in used):
            return s
    raise UserError("no free /24 left in 198.18.0.0/15 for the sandbox's bridge: remove an unused one")


def plan(count: int) -> dict[str, Any]:
    """The record of a multi-node world (saved in state.json before anything is made)."""
    sid = secrets.token_hex(3)
    subnet = pick_subnet()
    hosts = list(subnet.hosts())
    nodes = []
    for i in range(count):
        name = "manager" if i == 0 else f"worker{i}"
        nodes.append({"name": name, "hostname": f"sp{sid}-{name}", "role": "manager" if i == 0 else "worker",
                      "addr": str(hosts[i + 1]), "netns": f"sp{sid}-{i}", "veth": f"sp{sid}v{i}"})
    return {"id": sid, "count": count, "subnet": str(subnet), "host_addr": str(hosts[0]),
            "bridge": f"sp{sid}br", "nodes": nodes, "made": [], "registry_certs_d": None,
            "ssh_config": None, "sshd_port": 22}


def run_dir(rec: dict, node: str | None = None) -> Path:
    d = RUN_ROOT / rec["id"]
    return d / node if node else d


def sock(rec: dict, node: str) -> str:
    return str(run_dir(rec, node) / "docker.sock")


def manager(rec: dict) -> dict:
    return rec["nodes"][0]


def unix_host(rec: dict, node: str = "manager") -> str:
    return f"unix://{sock(rec, node)}"


def ssh_host(rec: dict) -> str:
    return f"ssh://root@{manager(rec)['addr']}"


def tcp_host(rec: dict) -> str:
    return f"tcp://{manager(rec)['addr']}:{TLS_PORT}"


def ssh_home(dir: Path) -> Path:
    return dir / "_nodes" / "ssh" / "home"


def client_cert_dir(dir: Path) -> Path:
    return dir / "_nodes" / "tls-client"


# ---------------------------------------------------------------- keys and certificates (cryptography)

def _key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, ips: tuple[str, ...] = (), ca: bool = False,
          client: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if ips:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def make_pki(dir: Path, rec: dict, registry_port: int) -> None:
    """The sandbox's CA, the registry's and the manager's server certificates, a client certificate
    (DOCKER_CERT_PATH layout: ca.pem, cert.pem, key.pem) and the ssh keys. Idempotent."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    base = dir / "_nodes"
    if (base / "ca.pem").is_file() and (base / "ssh" / "id_ed25519").is_file():
        return
    ca_key = _key()
    ca = _cert(f"stackpatch sandbox CA {rec['id']}", ca_key, ca=True)
    _write(base / "ca.pem", _pem_cert(ca))
    _write(base / "ca-key.pem", _pem_key(ca_key), 0o600)
    for name, ips in (("registry", (rec["host_addr"],)), ("manager", (manager(rec)["addr"], "127.0.0.1"))):
        k = _key()
        _write(base / f"{name}-cert.pem", _pem_cert(_cert(name, k, ca, ca_key, ips=ips)))
        _write(base / f"{name}-key.pem", _pem_key(k), 0o600)
    k = _key()
    cdir = client_cert_dir(dir)
    _write(cdir / "ca.pem", _pem_cert(ca))
    _write(cdir / "cert.pem", _pem_cert(_cert("stackpatch client", k, ca, ca_key, client=True)))
    _write(cdir / "key.pem", _pem_key(k), 0o600)
    # ssh: the client's key and the sshd's host key (OpenSSH formats)
    ssh = base / "ssh"
    for fname in ("id_ed25519", "host_ed25519"):
        sk = ed25519.Ed25519PrivateKey.generate()
        _write(ssh / fname, sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()), 0o600)
        pub = sk.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(ssh / f"{fname}.pub", pub + b" stackpatch-sandbox\n")
    for node in rec["nodes"]:  # each node's own certs.d (bind-mounted on /etc/docker/certs.d in its namespace)
        _write(base / node["name"] / "certs.d" / f"{rec['host_addr']}:{registry_port}" / "ca.crt", _pem_cert(ca))
        _write(base / node["name"] / "daemon.json", "{}\n")


# ---------------------------------------------------------------- the record of what was made

def _made(dir: Path, rec: dict, save, kind: str, what: str) -> None:
    """Record one thing before making it (a crash in between leaves a record `remove` tolerates)."""
    if [kind, what] not in rec["made"]:
        rec["made"].append([kind, what])
        save()


def _has(rec: dict, kind: str, what: str) -> bool:
    return [kind, what] in rec["made"]


# ---------------------------------------------------------------- network

def _netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _link_exists(name: str) -> bool:
    return _run("ip", "link", "show", name, check=False).returncode == 0


def make_network(dir: Path, rec: dict, save) -> None:
    br, prefix = rec["bridge"], ipaddress.ip_network(rec["subnet"]).prefixlen
    if not _link_exists(br):
        _made(dir, rec, save, "bridge", br)
        _run("ip", "link", "add", br, "type", "bridge")
        _run("ip", "addr", "add", f"{rec['host_addr']}/{prefix}", "dev", br)
        _run("ip", "link", "set", br, "up")
    rule = ["DOCKER-USER", "-i", br, "-o", br, "-j", "ACCEPT"]
    if _run("iptables", "-C", *rule, check=False).returncode != 0:
        _made(dir, rec, save, "iptables", json.dumps(rule))
        _run("iptables", "-I", *rule)
    for node in rec["nodes"]:
        ns, veth = node["netns"], node["veth"]
        if not _netns_exists(ns):
            _made(dir, rec, save, "netns", ns)
            _run("ip", "netns", "add", ns)
        if not _link_exists(veth):
            _made(dir, rec, save, "veth", veth)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            _run("ip", "link", "set", f"{veth}p", "netns", ns)
            _run("ip", "link", "set", veth, "master", br)
            _run("ip", "link", "set", veth, "up")
            _run("ip", "-n", ns, "link", "set", f"{veth}p", "name", "eth0")
            _run("ip", "-n", ns, "addr", "add", f"{node['addr']}/{prefix}", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "route", "add", "default", "via", rec["host_addr"])


# ---------------------------------------------------------------- daemons

def _pid_alive(pid: int | None, marker: str) -> bool:
    if not pid:
        return False
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def dockerd_pid(rec: dict, node: str) -> int | None:
    pid = _read_pid(run_dir(rec, node) / "docker.pid")
    return pid if _pid_alive(pid, sock(rec, node)) else None


def _spawn(*argv: str, log: Path) -> None:
    """Detached: `setsid --fork` runs it in a session of its own as a child of init, not of this process
    (a test or a library caller that lives on would otherwise keep a zombie of a daemon stopped later);
    output to log, no stdin."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        p = subprocess.Popen(["setsid", "--fork", *argv], stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT, close_fds=True, env=_env())
    p.wait(timeout=30)  # setsid returns once it has forked


def start_daemons(dir: Path, rec: dict, save, registry_port: int) -> None:
    if not CERTS_D.is_dir():
        _made(dir, rec, save, "dir", str(CERTS_D))
        CERTS_D.mkdir(parents=True)
    for node in rec["nodes"]:
        _spawn_daemon(dir, rec, save, node)
    for node in rec["nodes"]:
        wait_engine(rec, node["name"], dir / "_nodes" / node["name"] / "dockerd.log")


def _spawn_daemon(dir: Path, rec: dict, save, node: dict) -> bool:
    """Start the node's dockerd with the arguments `up` gives it, unless it runs; True when started."""
    name = node["name"]
    if dockerd_pid(rec, name):
        return False
    base = dir / "_nodes"
    rd = run_dir(rec, name)
    _made(dir, rec, save, "rundir", str(run_dir(rec)))
    rd.mkdir(parents=True, exist_ok=True)
    (base / name / "data").mkdir(parents=True, exist_ok=True)
    argv = ["dockerd", "--data-root", str(base / name / "data"), "--exec-root", str(rd / "exec"),
            "-H", unix_host(rec, name), "--pidfile", str(rd / "docker.pid"),
            "--config-file", str(base / name / "daemon.json"), "--shutdown-timeout", "2"]
    if node["role"] == "manager":
        argv += ["-H", f"tcp://{node['addr']}:{TLS_PORT}", "--tlsverify", "--tlscacert", str(base / "ca.pem"),
                 "--tlscert", str(base / "manager-cert.pem"), "--tlskey", str(base / "manager-key.pem")]
    # nodeinit sets the hostname, binds the node's certs.d, then execs dockerd (found on PATH)
    _spawn("nsenter", f"--net={NETNS_DIR / node['netns']}", "--",
           "unshare", "--uts", "--mount", "--propagation", "slave", "--",
           sys.executable, "-m", "stackpatch.sandbox.nodeinit", node["hostname"],
           str(base / name / "certs.d"), str(CERTS_D), "--", *argv, log=base / name / "dockerd.log")
    return True


def node_record(rec: dict, node: str) -> dict:
    """A node of the record by its name (`manager`, `worker1`…) or its hostname."""
    for n in rec["nodes"]:
        if node in (n["name"], n["hostname"]):
            return n
    raise UserError(f"this sandbox has no node {node}: its nodes are "
                    f"{', '.join(n['name'] for n in rec['nodes'])}")


def stop_daemon(rec: dict, node: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Send `sig` to the node's dockerd and wait until it is gone (SIGKILL: its containers keep running
    under their shims, as when a daemon crashes; SIGTERM: it stops them first). Its pid, None when it
    did not run."""
    name = node_record(rec, node)["name"]
    pid = dockerd_pid(rec, name)
    if pid is None:
        return None
    _kill([pid], sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dockerd_pid(rec, name):
        time.sleep(0.1)
    if dockerd_pid(rec, name):
        raise FaultError(f"the {name} node's dockerd (pid {pid}) did not stop within {timeout:.0f}s")
    return pid


def set_link(rec: dict, node: str, up: bool) -> None:
    """Take the node's link to the bridge down (a network partition: its daemon and containers keep
    running, nothing reaches them) or bring it back up (host side of its veth)."""
    n = node_record(rec, node)
    _run("ip", "link", "set", n["veth"], "up" if up else "down")


def start_daemon(dir: Path, rec: dict, save, node: str, timeout: float = 120) -> bool:
    """Start the node's dockerd again (after it died or was stopped) with the arguments `up` gave it,
    wait until it answers and until the manager counts every node ready (the node rejoins by itself:
    its swarm state is in its data root). True when it had to be started."""
    n = node_record(rec, node)
    started = _spawn_daemon(dir, rec, save, n)
    wait_engine(rec, n["name"], dir / "_nodes" / n["name"] / "dockerd.log", timeout=timeout)
    deadline = time.monotonic() + timeout
    ready: list = []
    while time.monotonic() < deadline:
        try:
            ready = [x for x in client(rec, "manager", 10).nodes.list()
                     if x.attrs.get("Status", {}).get("State") == "ready"]
        except Exception:  # noqa: BLE001 - the manager itself may be starting
            ready = []
        if len(ready) >= rec["count"]:
            return started
        time.sleep(0.5)
    raise FaultError(f"after starting the {n['name']} node's dockerd, {len(ready)} of {rec['count']} nodes are "
                     f"ready after {timeout:.0f}s (log: {dir / '_nodes' / n['name'] / 'dockerd.log'})")


def client(rec: dict, node: str, timeout: int = 60):
    import docker
    return docker.DockerClient(base_url=unix_host(rec, node), timeout=timeout)


def wait_engine(rec: dict, node: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(sock(rec, node)):
            try:
                client(rec, node, 5).ping()
                return
            except Exception:  # noqa: BLE001 - not yet
                pass
        time.sleep(0.3)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    raise FaultError(f"the {node} node's dockerd did not answer within {timeout:.0f}s "
                     f"({tail[0][:160] if tail else 'no log'}; log: {log})")


def make_swarm(rec: dict) -> None:
    m = client(rec, "manager")
    sw = m.info().get("Swarm") or {}
    if sw.get("LocalNodeState") != "active":
        m.swarm.init(advertise_addr=manager(rec)["addr"], listen_addr=f"{manager(rec)['addr']}:2377")
    m.swarm.reload()
    token = m.swarm.attrs["JoinTokens"]["Worker"]
    for node in rec["nodes"][1:]:
        w = client(rec, node["name"])
        if (w.info().get("Swarm") or {}).get("LocalNodeState") != "active":
            w.swarm.join(remote_addrs=[f"{manager(rec)['addr']}:2377"], join_token=token,
                         advertise_addr=node["addr"], listen_addr=f"{node['addr']}:2377")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = [n for n in m.nodes.list() if n.attrs.get("Status", {}).get("State") == "ready"]
        if len(ready) >= rec["count"]:
            return
        time.sleep(0.5)
    raise FaultError(f"the swarm of the sandbox's nodes has {len(ready)} of {rec['count']} nodes ready after 60s")


# ---------------------------------------------------------------- ssh

def sshd_pid(dir: Path, rec: dict) -> int | None:
    pid = _read_pid(run_dir(rec) / "sshd.pid")
    return pid if _pid_alive(pid, str(dir / "_nodes" / "ssh" / "sshd_config")) else None


def start_sshd(dir: Path, rec: dict, save) -> None:
    ssh = dir / "_nodes" / "ssh"
    m = manager(rec)
    pub = (ssh / "id_ed25519.pub").read_text().strip()
    docker_cli = shutil.which("docker", path="/usr/bin") or shutil.which("docker") or "docker"
    # the key can do one thing: dial the manager's socket (what `docker -H ssh://…` runs remotely)
    _write(ssh / "authorized_keys",
           f'command="{docker_cli} -H {unix_host(rec, "manager")} system dial-stdio",restrict {pub}\n', 0o600)
    _write(ssh / "sshd_config", "\n".join([
        f"ListenAddress {m['addr']}:{rec['sshd_port']}", f"HostKey {ssh / 'host_ed25519'}",
        f"AuthorizedKeysFile {ssh / 'authorized_keys'}", f"PidFile {run_dir(rec) / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PrintMotd no", "X11Forwarding no", "AllowTcpForwarding no", ""]))
    host_pub = (ssh / "host_ed25519.pub").read_text().split()
    _write(ssh / "known_hosts", f"{m['addr']} {host_pub[0]} {host_pub[1]}\n")
    block = [f"Host {m['addr']}", "  User root", f"  IdentityFile {ssh / 'id_ed25519'}", "  IdentitiesOnly yes",
             f"  UserKnownHostsFile {ssh / 'known_hosts'}", "  StrictHostKeyChecking yes", ""]
    # for stackpatch (docker-py's ssh client reads $HOME/.ssh/config and $HOME/.ssh/known_hosts only): a
    # home of its own to run with (HOME=…), or the block to copy into ~/.ssh/config
    _write(ssh_home(dir) / ".ssh" / "config", "\n".join(block), 0o600)
    _write(ssh_home(dir) / ".ssh" / "known_hosts", f"{m['addr']} {host_pub[0]} {host_pub[1]}\n")
    conf = SSH_CONFIG_D / f"stackpatch-{rec['id']}.conf"
    if SSH_CONFIG_D.is_dir() and not conf.exists():
        _made(dir, rec, save, "file", str(conf))
        rec["ssh_config"] = str(conf)
        save()
        _write(conf, "\n".join([f"# stackpatch sandbox {dir} (removed by `stackpatch sandbox down`)", *block]))
    if sshd_pid(dir, rec):
        return
    # sshd's privilege separation directory: shared with any other sshd of this machine, so it is made when
    # missing and never removed (an empty directory in /run, gone at the next boot)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # sshd wants its absolute path (it re-executes itself for each connection)
    _spawn("nsenter", f"--net={NETNS_DIR / m['netns']}", "--", shutil.which("sshd", path=SBIN_PATH) or "/usr/sbin/sshd",
           "-D", "-e", "-f", str(ssh / "sshd_config"), log=ssh / "sshd.log")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not sshd_pid(dir, rec):
        time.sleep(0.1)
    if not sshd_pid(dir, rec):
        raise FaultError(f"the manager's sshd did not start (log: {ssh / 'sshd.log'})")


# ---------------------------------------------------------------- status

def running(dir: Path, rec: dict) -> bool:
    """Every node's dockerd and the manager's sshd are up (a second `up` then starts nothing)."""
    return all(dockerd_pid(rec, n["name"]) for n in rec["nodes"]) and bool(sshd_pid(dir, rec))


def nodes_status(rec: dict) -> list[dict[str, Any]]:
    """[{name, role, addr, docker_host, state}] as the manager sees them (state: ready, down, …, or
    `stopped` when the node's dockerd is not running)."""
    seen: dict[str, str] = {}
    try:
        for n in client(rec, "manager", 10).nodes.list():
            seen[n.attrs.get("Description", {}).get("Hostname", "")] = n.attrs.get("Status", {}).get("State", "?")
    except Exception:  # noqa: BLE001 - a manager that does not answer: each node says what its daemon is
        pass
    out = []
    for node in rec["nodes"]:
        state = seen.get(node["hostname"]) or ("not in the swarm" if dockerd_pid(rec, node["name"]) else "stopped")
        out.append({"name": node["hostname"], "role": node["role"], "addr": node["addr"],
                    "docker_host": unix_host(rec, node["name"]), "state": state})
    return out


def tasks(c, stack: str) -> dict[str, list[dict[str, str]]]:
    """Per service (without the stack prefix): [{node, state, image}] of the tasks meant to run."""
    names = {n.id: n.attrs.get("Description", {}).get("Hostname", n.id) for n in c.nodes.list()}
    out: dict[str, list[dict[str, str]]] = {}
    for svc in c.services.list(filters={"label": f"com.docker.stack.namespace={stack}"}):
        rows = []
        for t in c.api.tasks(filters={"service": svc.id, "desired-state": "running"}):
            rows.append({"node": names.get(t.get("NodeID", ""), t.get("NodeID", "")),
                         "state": t.get("Status", {}).get("State", "?"),
                         "image": t.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")})
        out[svc.name.removeprefix(f"{stack}_")] = sorted(rows, key=lambda r: r["node"])
    return out


# ---------------------------------------------------------------- down

def _netns_inode(ns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return None


def processes(dir: Path, rec: dict) -> list[int]:
    """Every process that belongs to this world: in one of its network namespaces, or naming its run dir
    (dockerd, containerd, shims) or its sshd config. Containers of the nodes run in namespaces of their own
    and are found through their shims' children."""
    inodes = {i for i in (_netns_inode(n["netns"]) for n in rec["nodes"]) if i}
    markers = [str(run_dir(rec)).encode(), str(dir / "_nodes").encode()]
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if inodes and os.stat(p / "ns" / "net").st_ino in inodes:
                found.add(int(p.name))
                continue
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if any(m in cmd for m in markers):
            found.add(int(p.name))
    # the containers: children (any depth) of the shims found
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    stack = list(found)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in found:
                found.add(c)
                stack.append(c)
    return sorted(found)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def remove(dir: Path, rec: dict, save) -> list[str]:
    """Undo what the record says was made, newest first; return what was removed."""
    done: list[str] = []
    # the daemons first (dockerd stops its containers, --shutdown-timeout 2), then whatever is left
    _kill([p for p in [sshd_pid(dir, rec)] if p], signal.SIGTERM)
    pids = [p for p in (dockerd_pid(rec, n["name"]) for n in rec["nodes"]) if p]
    _kill(pids, signal.SIGTERM)
    # a few seconds for dockerd to stop its containers; the world is going away, so then SIGKILL the rest
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and any(dockerd_pid(rec, n["name"]) for n in rec["nodes"]):
        time.sleep(0.2)
    for _ in range(3):
        left = processes(dir, rec)
        if not left:
            break
        _kill(left, signal.SIGKILL)
        time.sleep(0.5)
    if pids:
        done.append(f"{len(pids)} dockerd")
    for kind, what in reversed(list(rec["made"])):
        try:
            if kind == "netns" and _netns_exists(what):
                _run("ip", "netns", "del", what)
            elif kind in ("veth", "bridge") and _link_exists(what):
                _run("ip", "link", "del", what)
            elif kind == "iptables":
                rule = json.loads(what)
                while _run("iptables", "-C", *rule, check=False).returncode == 0:
                    _run("iptables", "-D", *rule)
            elif kind == "file":
                Path(what).unlink(missing_ok=True)
            elif kind == "certs":  # a registry's directory under /etc/docker/certs.d
                shutil.rmtree(what, ignore_errors=True)
            elif kind == "rundir":
                shutil.rmtree(what, ignore_errors=True)
                _rmdir(RUN_ROOT)
            elif kind == "dir":
                _rmdir(Path(what))
        except FaultError as e:
            ui.warn(f"could not remove {kind} {what}: {e}")
            continue
        done.append(f"{kind} {what}")
        rec["made"].remove([kind, what])
        save()
    shutil.rmtree(dir / "_nodes", ignore_errors=True)
    return done


def _rmdir(p: Path) -> None:
    try:
        p.rmdir()  # only when empty
    except OSError:
        pass


def trust_registry_on_host(dir: Path, rec: dict, save, registry_host: str) -> None:
    """The host's engine pushes to the registry on the bridge: it trusts the sandbox's CA for that
    host:port only (/etc/docker/certs.d/HOST:PORT/ca.crt, read by dockerd at each request)."""
    d = CERTS_D / registry_host
    if not (d / "ca.crt").is_file():
        if not CERTS_D.is_dir():
            _made(dir, rec, save, "dir", str(CERTS_D))
        _made(dir, rec, save, "certs", str(d))
        _write(d / "ca.crt", (dir / "_nodes" / "ca.pem").read_bytes())
    rec["registry_certs_d"] = str(d)
    save()
