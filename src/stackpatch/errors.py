"""The exception hierarchy. Every error a user can fix is a UserError: one line, exit status 2."""

from __future__ import annotations


class StackpatchError(Exception):
    """Base of every error stackpatch raises on purpose. Its message is one line for the user."""

    exit_code = 1


class UserError(StackpatchError):
    """Bad input or a refused precondition: nothing was changed. Exit status 2."""

    exit_code = 2


class ConfigError(UserError):
    """stackpatch.toml is missing or invalid."""


class GitError(UserError):
    """A git command failed in a way the user must resolve."""


class EngineError(UserError):
    """The Docker engine is missing, unreachable or refused a request."""


class EngineUnreachable(EngineError):
    """The engine does not answer (refused connection, timeout, lost socket). Before a run changed
    anything this is a refusal (exit 2); mid-run the runner journals the run as interrupted."""


class EngineObjectMissing(EngineError):
    """The engine answered 404: the service, task, container or config does not exist."""


class FaultError(StackpatchError):
    """A fault mid-run (build, push, deploy). The journal says where the run stands. Exit status 1."""
