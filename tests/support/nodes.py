"""Node processes for tests: started on a private DDS domain over loopback, one client each,
stopped (SIGINT) afterwards with the end of each node's log printed (pytest shows it when a
test failed)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def node_processes(
    commands: Mapping[str, Sequence[str]], domain_id: int, logs: Path, *, active_timeout: float
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``commands``: namespace -> node command line. Yields (clients, processes) by namespace,
    once every node is active."""
    import rclpy

    from wise_dev.node_client import NodeClient, start_node, stop_node

    procs = {
        ns: start_node(cmd, domain_id, logs / f"{ns.strip('/')}.log")
        for ns, cmd in commands.items()
    }
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rclpy.init()
    clients = {ns: NodeClient(ns) for ns in procs}
    try:
        for ns, client in clients.items():
            client.wait_for_state("active", timeout=active_timeout, proc=procs[ns])
        yield clients, procs
    finally:
        for client in clients.values():
            client.close()
        rclpy.try_shutdown()
        for proc in procs.values():
            stop_node(proc)
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
