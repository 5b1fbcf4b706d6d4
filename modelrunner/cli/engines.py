"""Commands on the inference engines: ps, unload, df, configure."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from modelrunner.cli import client
from modelrunner.cli.client import CliError
from modelrunner.cli.models import JsonOpt, checked
from modelrunner.cli.output import ago, console, familiar, human_size, print_json, table, until


def ps(as_json: JsonOpt = False) -> None:
    """List the models loaded in memory."""
    runners = client.connect().json("GET", "/engines/ps") or []
    if as_json:
        print_json(runners)
        return
    rows = []
    for r in runners:
        slots = f"{r.get('slots_busy', 0)}/{r['slots']}" if r.get("slots") else "-"
        state = "loading" if r.get("loading") else ("busy" if r.get("in_use") else "idle")
        rows.append([
            familiar(r.get("model_name", "")),
            r.get("backend_name", "-"),
            r.get("mode", "-"),
            state,
            human_size(r["memory_bytes"]) if r.get("memory_bytes") else "-",
            slots,
            str(r.get("queued", 0)),
            until(r.get("expires_at")) if "expires_at" in r else (r.get("keep_alive") or "-"),
            ago(r.get("last_used")),
        ])
    table(["MODEL NAME", "BACKEND", "MODE", "STATE", "MEMORY", "SLOTS", "QUEUED", "UNTIL", "LAST USED"], rows)


def unload(
    models: Annotated[Optional[list[str]], typer.Argument(help="Models to unload.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Unload every model.")] = False,
) -> None:
    """Unload models from memory (they stay on disk)."""
    if not models and not all_models:
        raise CliError("name the models to unload, or pass --all")
    body = {"all": all_models, "models": [checked(m) for m in models or []]}
    reply = client.connect().json("POST", "/engines/unload", json=body) or {}
    n = reply.get("unloaded_runners", 0)
    console.print(f"Unloaded {n} model{'s' if n != 1 else ''}", markup=False)


def df(as_json: JsonOpt = False) -> None:
    """Show the disk space models use."""
    usage = client.connect().json("GET", "/engines/df") or {}
    if as_json:
        print_json(usage)
        return
    table(["TYPE", "SIZE"], [
        ["Models", human_size(usage.get("models_disk_usage", 0))],
        ["Inference engine", human_size(usage.get("default_backend_disk_usage", 0))],
    ])


def configure(
    model: Annotated[str, typer.Argument(help="Model to configure, or `show` to list the settings.")],
    context_size: Annotated[int, typer.Option("--context-size", help="Context length in tokens.")] = 0,
    keep_alive: Annotated[Optional[str], typer.Option("--keep-alive", help="Idle time before unloading: 10m, 1h, -1 (never), 0.")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Requests served at once (slots).")] = 0,
    runtime_flags: Annotated[Optional[list[str]], typer.Option("--runtime-flag", help="Extra engine flag (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a model's engine settings (kept across restarts); `configure show` lists them."""
    gateway = client.connect()
    if model == "show":
        reply = gateway.json("GET", "/engines/_configure")
        settings = reply.get("settings", []) if isinstance(reply, dict) else (reply or [])
        if as_json:
            print_json(settings)
            return
        table(["MODEL", "CONTEXT SIZE", "KEEP ALIVE", "PARALLEL", "RUNTIME FLAGS"], [
            [familiar(s.get("model", "")), str(s.get("context-size") or "-"), s.get("keep_alive") or "-",
             str(s.get("parallel") or "-"), " ".join(s.get("runtime-flags") or []) or "-"]
            for s in settings
        ])
        return
    body: dict = {"model": checked(model)}
    if context_size:
        body["context-size"] = context_size
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if parallel:
        body["parallel"] = parallel
    if runtime_flags:
        body["runtime-flags"] = runtime_flags
    if len(body) == 1:
        raise CliError("nothing to configure: give --context-size, --keep-alive, --parallel or --runtime-flag")
    gateway.request("POST", "/engines/_configure", json=body)
    console.print(f"Configured {model}", markup=False)
