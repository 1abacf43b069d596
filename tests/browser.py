"""Headless Chromium (Debian's `chromium`) for the report tests, with the network cut off and watched.

Every request Chromium makes goes to a local dead-end proxy (`--proxy-server`, `<-loopback>` so that
even 127.0.0.1 goes through it) that records it and closes the connection: nothing reaches a network,
and a page that tries to load anything is caught. Chromium's own background requests (time, component
updates, accounts) go there too; they are told apart by their exact host names.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# hosts Chromium itself talks to on start, whatever the page (seen with an empty page)
CHROMIUM_OWN_HOSTS = {"clients2.google.com", "update.googleapis.com", "accounts.google.com",
                      "redirector.gvt1.com", "edgedl.me.gvt1.com", "optimizationguide-pa.googleapis.com",
                      "safebrowsingohttpgateway.googleapis.com", "content-autofill.googleapis.com",
                      "www.google.com", "android.clients.google.com", "clientservices.googleapis.com"}
# and any other host under Google's service domains (Chromium adds new ones with its releases)
CHROMIUM_OWN_DOMAINS = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")

def chromium() -> str:
    path = shutil.which("chromium")
    if not path:
        raise AssertionError("chromium is not installed: run `make setup` (it installs Debian's chromium)")
    return path


@dataclass
class DeadEndProxy:
    """Listens on 127.0.0.1, records the first line and Host of every request, answers nothing."""

    requests: list[str] = field(default_factory=list)

    def __enter__(self) -> "DeadEndProxy":
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            c.settimeout(2)
            try:
                self.requests.append(c.recv(1024).decode(errors="replace").split("\r\n", 1)[0])
            except OSError:
                pass
            c.close()

    def __exit__(self, *exc) -> None:
        try:
            self._srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._srv.close()

    def page_requests(self) -> list[str]:
        """Requests that are not Chromium's own background traffic."""
        out = []
        for line in self.requests:
            parts = line.split()
            target = parts[1] if len(parts) > 1 else ""
            host = re.sub(r"^[a-z]+://", "", target).split("/", 1)[0].split(":", 1)[0]
            if not line.strip():
                continue  # a connection closed before it sent a request line: nothing was asked for
            if host not in CHROMIUM_OWN_HOSTS and not host.endswith(CHROMIUM_OWN_DOMAINS):
                out.append(line)
        return out


def run(page: Path, *args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Chromium headless on file://page with `args`; (the process, the page's network requests)."""
    with DeadEndProxy() as proxy, tempfile.TemporaryDirectory(prefix="sp-chromium-") as profile:
        argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
                f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
                *args, Path(page).resolve().as_uri()]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc, proxy.page_requests()


def dump_dom(page: Path) -> tuple[str, list[str]]:
    proc, reqs = run(page, "--dump-dom")
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout, reqs


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 1900) -> list[str]:
    proc, reqs = run(page, f"--screenshot={png}", f"--window-size={width},{height}")
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return reqs


def png_colors(png: Path) -> Counter:
    """How many pixels of each colour (#rrggbb) a PNG has."""
    import matplotlib.image
    import numpy as np
    img = matplotlib.image.imread(str(png))
    rgb = (img[..., :3] * 255).round().astype(np.uint32).reshape(-1, 3)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    colors, counts = np.unique(packed, return_counts=True)
    return Counter({f"#{int(c):06x}": int(n) for c, n in zip(colors, counts)})
