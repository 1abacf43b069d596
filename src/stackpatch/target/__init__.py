"""Targets: where a release is deployed. `base` is the protocol; `swarm` the Docker Swarm implementation."""
