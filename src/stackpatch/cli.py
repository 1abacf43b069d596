"""The command line. Thin: parse, call one function, render. No decisions here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stackpatch import __version__, ui
from stackpatch.errors import StackpatchError


def _crash_log(e: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file (as pre-commit's error_handler does);
    its path, or None when no file could be written."""
    import os
    import time
    import traceback
    from stackpatch.images.workdir import cache_root
    try:
        d = cache_root() / "logs"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"stackpatch {__version__}\nargv: {' '.join(sys.argv)}\n\n"
                        + "".join(traceback.format_exception(e)))
        return path
    except OSError:
        return None


class Group(click.Group):
    """The one error boundary: a StackpatchError becomes one line and its exit status; anything
    unexpected becomes one line plus the path of a log that holds the traceback (exit 1). Never a
    traceback on the terminal."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except StackpatchError as e:
            ui.fail(str(e))
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            ui.fail("interrupted")
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the boundary: nothing escapes as a traceback
            log = _crash_log(e)
            msg = " ".join(str(e).split())[:200] or "no message"
            ui.fail(f"unexpected {type(e).__name__}: {msg} (a bug in stackpatch; the traceback is in "
                    f"{log or 'no file: the cache directory is not writable'}; please report it)")
            ctx.exit(1)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from stackpatch.sandbox.engine import describe
    click.echo(f"stackpatch {__version__}\n{describe()}")
    ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and the Docker engine (and API version) stackpatch talks to, then exit.")
def main() -> None:
    """Patch a running Docker Swarm stack from a git-flow hotfix branch.

    \b
    The routine, run in your app's repo:
      stackpatch start            hotfix/YY.MM.Rx from the release running on the stack
      (commit the fix, git push)  only pushed code ships
      stackpatch plan             what ship would do; changes nothing
      stackpatch ship --yes       build, verify, push, canary, migrations, the rest, CDN purge;
                                  any failure rolls back to the exact previous images
      stackpatch status|history   what runs now; every run recorded
      stackpatch finish           merge into master and develop, tag, one atomic push

    \b
    Trying it: `stackpatch sandbox up` builds a local world (registry, swarm, example app).
    Exit status: 0 done, 1 a fault mid-run (see the journal), 2 refused (nothing changed).
    """


def _register() -> None:
    from stackpatch.commands import register_all
    register_all(main)


_register()

if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
