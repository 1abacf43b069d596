"""stackpatch: patch a running Docker Swarm stack from a git-flow hotfix branch."""

__version__ = "0.1.0"
