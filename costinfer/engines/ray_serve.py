"""Self-hosted model servers on Ray (``--engine ray --ray-serve CMD``): costinfer asks the cluster for servers, one
Ray actor each (holding the GPUs a server of the model needs, ``gpus`` in its ``[self_hosted]`` entry, default 1,
where the cluster has GPUs), and each actor starts ``CMD`` on its node
with ``{port}`` replaced by a free port, e.g. ``vllm serve Qwen/Qwen2.5-7B-Instruct --port {port}``. When every
server answers ``GET /v1/models``, the run sends its calls to them as replicas of one model (``backends/replicas.py``):
the least busy gets each call, one that dies rests and its calls go to the others. The calls, their outcomes, the
budget's reservations, the durable results and resume stay in this process, exactly as with servers given by
``--base-url``; the request key names the command, not the servers' addresses, so a rerun on new servers (new ports,
other nodes) finds its cached answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from costinfer.engines.ray_embed import connect, missing_ray
from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog
from costinfer.spec import RaySpec

READY_TIMEOUT_S = 900.0  # a vLLM server loading a large model takes minutes


def identity(command: str | None) -> str | None:
    """What stands for a run's --ray-serve servers in the request key: the command that starts them (None: no such
    servers, their base URL does)."""
    if command is None:
        return None
    return "ray-serve/" + hashlib.sha256(" ".join(shlex.split(command)).encode()).hexdigest()[:16]


class ServerActor:
    """One Ray actor: starts the server command on its node and stops it with the actor."""

    def __init__(self, command: str, ready_timeout_s: float, on_loopback: bool) -> None:
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        host = "127.0.0.1" if on_loopback else ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        args = [part.replace("{port}", str(port)) for part in shlex.split(command)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base_url = f"http://{host}:{port}/v1"
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server command exited with {self.process.returncode}: {command}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"no answer at {self.base_url}/models after {ready_timeout_s:.0f} s") from None
                time.sleep(0.5)

    def address(self) -> str:
        """The server's base URL."""
        return self.base_url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Servers:
    urls: list[str]
    gpus: int  # GPUs held by the servers (0 on a cluster without GPUs)


def servers_for_run(ray: RaySpec, model: str, catalog: Catalog) -> AbstractContextManager[Servers]:
    """A run's ``--ray-serve`` servers, each reserving the GPUs its model's ``[self_hosted]`` entry gives a server
    (``gpus``, default 1): the GPU time the ledger bills (``gpu_cost.py``) is then what the cluster reserved."""
    assert ray.serve is not None
    entry = catalog.entry(model) or {}
    return ray_servers(ray.serve, ray.servers, ray.address, int(entry.get("gpus") or 1))


@contextlib.contextmanager
def ray_servers(
    command: str,
    count: int | None,
    address: str | None,
    gpus_per_server: int = 1,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[Servers]:
    """Start ``count`` servers (default: as many as the cluster's GPUs allow, or one) and stop them at the end."""
    why = missing_ray(address)
    if why:
        raise ConfigError(why)
    import ray

    resources = connect(address)
    gpus = int(resources.get("GPU", 0))
    count = count or max(1, gpus // gpus_per_server)
    # a server holds its GPUs where there are GPUs; otherwise it reserves nothing, or it would take the CPUs the
    # semantic tier's embedding workers wait for on the same cluster
    actor_class: Any = ray.remote(num_gpus=gpus_per_server if gpus else 0, num_cpus=0)(ServerActor)
    on_loopback = not address  # a Ray of our own runs on this machine: its servers are on loopback
    actors: list[Any] = [actor_class.remote(command, ready_timeout_s, on_loopback) for _ in range(count)]
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Ray's notices must not reach the results or --json
            try:
                found = ray.get([a.address.remote() for a in actors])
            except Exception as exc:  # a command that fails, a server that never answers, too few resources
                raise ConfigError(f"--ray-serve: the servers did not start: {exc}") from exc
        yield Servers(list(found), gpus=count * gpus_per_server if gpus else 0)
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.get(actor.stop.remote(), timeout=30)
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            ray.shutdown()
