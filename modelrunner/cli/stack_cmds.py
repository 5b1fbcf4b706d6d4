"""Commands on the local stack: up, down, status, logs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from modelrunner.cli import client
from modelrunner.cli.client import CliError
from modelrunner.cli.output import console, err_console, print_json, table
from modelrunner.common.config import LOG_LEVELS
from modelrunner.common.names import MAX_PORT
from modelrunner.stack import DEFAULT_GRPC_BASE_PORT, DEFAULT_HTTP_PORT, Ports, Stack, StackLayout

DataDirOpt = Annotated[
    Optional[str], typer.Option("--data-dir", help="Data directory (env MODELRUNNER_DATA_DIR; default: the user's).")
]
TAIL_WINDOW = 1 << 20  # bytes read from the end of a log to find its last lines
SERVICES = ("store", "distribution", "runner", "gateway", "launcher")


def up(
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="Stay attached; Ctrl-C stops the stack.")] = False,
    data_dir: DataDirOpt = None,
    port: Annotated[int, typer.Option("--port", help="HTTP port of the gateway.")] = DEFAULT_HTTP_PORT,
    grpc_base_port: Annotated[
        int, typer.Option("--grpc-base-port", help="First of four gRPC ports (store, distribution, runner, gateway); 0: any free.")
    ] = DEFAULT_GRPC_BASE_PORT,
    default_model: Annotated[
        bool, typer.Option("--default-model/--no-default-model", help="Import SmolLM2 135M Instruct (ai/smollm2) on first start.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the stack to be healthy.")] = 120.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the local stack (store, distribution, runner, gateway)."""
    from modelrunner import launcher  # grpc and the launcher load only for the commands that use them

    _check_up_options(port, grpc_base_port, timeout, log_level)
    layout = StackLayout.resolve(data_dir)
    _check_data_dir(layout)
    log_level = log_level.lower()
    started = time.monotonic()
    try:
        if foreground:
            stack = Stack(layout, Ports.from_base(port, grpc_base_port), log_level)
            code = launcher.run_foreground(
                stack, default_model=default_model, timeout=timeout, say=lambda m: console.print(m, markup=False)
            )
            raise typer.Exit(code)
        argv = ["--data-dir", str(layout.data_dir), "--port", str(port), "--grpc-base-port", str(grpc_base_port),
                "--timeout", str(timeout), "--log-level", log_level]
        if not default_model:
            argv.append("--no-default-model")
        if launcher.running_state(layout) is None:  # else start_background names the running stack
            launcher.check_ports_free(Stack(layout, Ports.from_base(port, grpc_base_port), log_level))
        with err_console.status("Starting Model Runner...") as spinner:
            states = {"starting": "Starting Model Runner...", "importing": "Importing the default model (first start)..."}
            state = launcher.start_background(
                argv, layout, timeout + 600, lambda s: spinner.update(states.get(s, s))
            )
    except launcher.LaunchError as err:
        raise CliError(str(err)) from None
    console.print(f"Model Runner is up in {time.monotonic() - started:.1f}s: {state.url} "
                  f"(OpenAI API at {state.url}/v1). Stop it with `modelrunner down`.", markup=False)




def _check_up_options(port: int, grpc_base_port: int, timeout: float, log_level: str) -> None:
    """Options `up` cannot start with, refused before any process starts (a service would die on them)."""
    if not 1 <= port <= MAX_PORT:
        raise CliError(f"--port {port} is not a TCP port: choose one from 1 to {MAX_PORT}")
    if grpc_base_port != 0:
        if not 1 <= grpc_base_port <= MAX_PORT - 3:
            raise CliError(f"--grpc-base-port {grpc_base_port}: the four gRPC ports it starts must lie from 1 to "
                           f"{MAX_PORT} (so at most {MAX_PORT - 3}); 0 picks any free ports")
        if grpc_base_port <= port <= grpc_base_port + 3:
            raise CliError(f"--port {port} is one of the gRPC ports {grpc_base_port}-{grpc_base_port + 3} "
                           "(--grpc-base-port and the next three): choose another")
    if not timeout > 0:
        raise CliError(f"--timeout must be more than 0 seconds, not {timeout:g}")
    if log_level.lower() not in LOG_LEVELS:
        raise CliError(f"--log-level {log_level!r}: choose one of {', '.join(LOG_LEVELS)}")


def _check_data_dir(layout: StackLayout) -> None:
    """The data directory must be one the stack can write its logs and state in."""
    for path in (layout.logs_dir, layout.run_dir):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot use {layout.data_dir} as the data directory: {err.strerror or err} "
                           f"({err.filename or path}); choose another with --data-dir") from None


def down(
    data_dir: DataDirOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait before killing.")] = 40.0,
) -> None:
    """Stop the stack `modelrunner up` started."""
    from modelrunner import launcher

    layout = StackLayout.resolve(data_dir)
    state = launcher.stop_background(layout, timeout)
    console.print("Model Runner stopped." if state else "Model Runner is not running.", markup=False)


def status(data_dir: DataDirOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether the stack and each of its services is healthy."""
    from modelrunner import launcher, probes

    layout = StackLayout.resolve(data_dir)
    state = launcher.running_state(layout)
    url = state.url if state else client.gateway_url()
    report: dict = {"url": url, "gateway_http": "SERVING" if probes.http_health(url) else "UNREACHABLE", "services": {}}
    if state:
        report["state"] = state.state
        for name, svc in state.services.items():
            report["services"][name] = {
                "pid": svc["pid"], "addr": svc["addr"], "health": probes.grpc_health(svc["addr"]),
                "restarts": svc.get("restarts", 0), "last_exit": svc.get("last_exit", ""),
            }
    healthy = report["gateway_http"] == "SERVING" and all(s["health"] == "SERVING" for s in report["services"].values())
    if as_json:
        print_json(report)
    else:
        rows = [[name, s["addr"], str(s["pid"]), s["health"], str(s["restarts"]), s["last_exit"] or "-"]
                for name, s in report["services"].items()]
        rows.append(["gateway (HTTP)", url, "-", report["gateway_http"], "-", "-"])
        table(["SERVICE", "ADDRESS", "PID", "HEALTH", "RESTARTS", "LAST EXIT"], rows)
    if not healthy:
        raise CliError(f"Model Runner is not healthy at {url}: start it with `modelrunner up`"
                       if report["gateway_http"] != "SERVING" else "some services are not healthy: see `modelrunner logs`")


def _format(service: str, line: str, raw: bool) -> str:
    """A JSON log line as "service ts level msg key=value"; other lines as they are."""
    if not raw and line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            extra = " ".join(f"{k}={v}" for k, v in entry.items()
                             if k not in ("ts", "level", "service", "logger", "msg", "exc"))
            out = f"{entry.get('ts', '')} {entry.get('level', '').upper():7} {entry.get('msg', '')} {extra}".rstrip()
            if entry.get("exc"):
                out += "\n" + entry["exc"]
            line = out
    return f"{service:12} | {line}"


def logs(
    service: Annotated[Optional[str], typer.Argument(help=f"One of {', '.join(SERVICES)}; all when left out.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--tail", "-n", help="Lines of each log to show first.")] = 50,
    raw: Annotated[bool, typer.Option("--raw", help="Print JSON log lines as written.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Show the services' logs."""
    from modelrunner.launcher import tail

    if service is not None and service not in SERVICES:
        raise CliError(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    layout = StackLayout.resolve(data_dir)
    paths = {name: layout.log_file(name) for name in ([service] if service else SERVICES)}
    present = {name: path for name, path in paths.items() if path.exists()}
    if not present and not follow:
        raise CliError(f"no logs in {layout.logs_dir}: the stack has not run with this data directory")
    positions: dict[str, int] = {}
    for name, path in present.items():
        positions[name] = path.stat().st_size
        recent = tail(path, max(0, positions[name] - TAIL_WINDOW), lines) if lines else ""
        for line in recent.splitlines():
            print(_format(name, line, raw), flush=True)
    try:
        while follow:
            time.sleep(0.3)
            for name, path in paths.items():
                positions[name] = _print_new(name, path, positions.get(name, 0), raw)
    except KeyboardInterrupt:  # the way to stop following: not an error
        pass


def _print_new(name: str, path: Path, position: int, raw: bool) -> int:
    """Prints whole lines appended since `position`; returns the new position (0 after truncation)."""
    try:
        size = path.stat().st_size
    except OSError:
        return position
    if size < position:
        position = 0
    if size == position:
        return position
    with path.open("rb") as f:
        f.seek(position)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.decode(errors="replace").splitlines():
        print(_format(name, line, raw), flush=True)
    return position + len(complete)
