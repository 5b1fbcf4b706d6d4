"""The `modelrunner` command: Docker Model Runner's `docker model` commands, against our gateway."""

from __future__ import annotations

from typing import Annotated

import typer

from modelrunner.cli import docker_plugin, engines, models, request_log, stack_cmds
from modelrunner.cli.client import CliError
from modelrunner.cli.output import error

app = typer.Typer(
    name="modelrunner",
    help="Pull models from OCI registries, run them, and serve them through the OpenAI API.\n\n"
    "Talks to the gateway at $MODELRUNNER_HOST (default http://127.0.0.1:12434); `modelrunner up` starts it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (models.pull, models.push, models.ls, models.rm, models.inspect, models.tag, models.package,
                models.run, engines.ps, engines.unload, engines.df, engines.configure, request_log.requests,
                stack_cmds.up, stack_cmds.down, stack_cmds.status, stack_cmds.logs):
    app.command()(command)
app.command("list", hidden=True)(models.ls)
app.command("install-docker-plugin")(docker_plugin.install_docker_plugin)


def _version(value: bool) -> None:
    if value:
        print(docker_plugin.cli_version())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    pass


def main() -> None:
    """Entry point: every CliError ends as one line on stderr and its exit code."""
    try:
        app()
    except CliError as err:
        error(str(err))
        raise SystemExit(err.exit_code) from None


if __name__ == "__main__":
    main()
