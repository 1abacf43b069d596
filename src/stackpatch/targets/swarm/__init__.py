"""The Docker Swarm backend: `client` (the SDK and the one error map), `spec` (pure spec builders),
`target` (SwarmTarget: reads, writes, jobs, exec, the lock)."""

from stackpatch.targets.swarm.target import SwarmTarget, from_config, lock_name

__all__ = ["SwarmTarget", "from_config", "lock_name"]
