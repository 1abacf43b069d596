"""`stackpatch sandbox`: a whole local world, built offline, to run the hotfix routine on.

A private registry with auth (Debian's docker-registry, detached, on 127.0.0.1), the engine as a
one-node swarm, a base image built with mmdebstrap, an example git-flow app repo with a bare origin,
and its stack deployed from release 26.11.1. The Python API is in `stackpatch.sandbox.api`.
"""
