"""Commands on models: pull, push, ls, rm, inspect, tag, package, run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from modelrunner.cli import chat, client, progress
from modelrunner.cli.client import CliError, GatewayUnreachable, model_path
from modelrunner.cli.output import ago, console, err_console, error, familiar, human_size, print_json, short_id, table
from modelrunner.common.names import InvalidReference, Reference, is_digest, parse_reference

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def checked(name: str) -> str:
    """Validates a model name (or a sha256 id) before it goes anywhere; returns it as typed."""
    if is_digest(name):
        return name
    try:
        parse_reference(name)
    except InvalidReference as err:
        raise CliError(str(err)) from None
    return name


def _reference(name: str) -> Reference:
    try:
        return parse_reference(name)
    except InvalidReference as err:
        raise CliError(str(err)) from None


def _transfer(verb: str, method: str, path: str, body: dict | None, name: str) -> dict:
    gateway = client.connect()
    try:
        return progress.render(verb, gateway.json_lines(method, path, json=body))
    except KeyboardInterrupt:
        raise CliError(f"{verb.lower()} of {name} interrupted; run it again to resume", exit_code=130) from None
    finally:
        gateway.close()


def pull(model: Annotated[str, typer.Argument(help="Model to pull, e.g. ai/gemma3.")]) -> None:
    """Pull a model from a registry."""
    done = _transfer("Pulling", "POST", "/models/create", {"from": checked(model)}, model)
    console.print(done.get("message") or f"Pulled {model}", markup=False)


def push(model: Annotated[str, typer.Argument(help="Model to push, e.g. myregistry:5000/team/model:tag.")]) -> None:
    """Push a model to its registry."""
    done = _transfer("Pushing", "POST", f"/models/{model_path(checked(model))}/push", None, model)
    console.print(done.get("message") or f"Pushed {model}", markup=False)


def ls(
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print model ids only.")] = False,
) -> None:
    """List the local models."""
    gateway = client.connect()
    models = gateway.json("GET", "/models") or []
    if as_json:
        print_json(models)
        return
    if quiet:
        for model in models:
            print(model.get("id", ""))
        return
    rows = []
    for model in models:
        cfg = model.get("config") or {}
        size = cfg.get("size") or human_size(model.get("size"))
        for tag in model.get("tags") or ["<none>"]:
            rows.append([
                familiar(tag) if tag != "<none>" else tag,
                cfg.get("parameters") or "-",
                cfg.get("quantization") or "-",
                cfg.get("architecture") or "-",
                short_id(model.get("id", "")),
                ago(model.get("created")),
                size,
            ])
    table(["MODEL NAME", "PARAMETERS", "QUANTIZATION", "ARCHITECTURE", "MODEL ID", "CREATED", "SIZE"], rows)


def rm(
    models: Annotated[list[str], typer.Argument(help="Models (names or ids) to remove.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove a model even when it has several tags.")] = False,
) -> None:
    """Remove local models (several at once)."""
    gateway = client.connect()
    failed = 0
    for name in models:
        try:
            actions = gateway.json("DELETE", f"/models/{model_path(checked(name))}", params={"force": str(force).lower()})
        except GatewayUnreachable:
            raise
        except CliError as err:
            hint = f" (`modelrunner rm --force {name}`)" if err.status == 409 and not force else ""
            error(f"{name}: {err}{hint}")
            failed += 1
            continue
        for action in actions or []:
            for key in ("Untagged", "Deleted"):
                if action.get(key):
                    console.print(f"{key}: {action[key]}", markup=False)
    if failed:
        raise typer.Exit(1)


def inspect(
    model: Annotated[str, typer.Argument(help="Model name or id.")],
    remote: Annotated[bool, typer.Option("--remote", "-r", help="Ask the registry instead of the local store.")] = False,
) -> None:
    """Show a model's id, tags, config and manifest as JSON."""
    gateway = client.connect()
    params = {"remote": "true"} if remote else None
    print_json(gateway.json("GET", f"/models/{model_path(checked(model))}", params=params))


def tag(
    source: Annotated[str, typer.Argument(help="Existing model name or id.")],
    target: Annotated[str, typer.Argument(help="New name, e.g. myregistry:5000/team/model:v1.")],
) -> None:
    """Give a model another name."""
    ref = _reference(target)
    repo = ref.familiar.rsplit(":", 1)[0] if ref.tag else ref.familiar
    gateway = client.connect()
    gateway.request("POST", f"/models/{model_path(checked(source))}/tag", params={"repo": repo, "tag": ref.tag or "latest"})
    console.print(f"Tagged {source} as {ref.familiar}", markup=False)


def package(
    gguf: Annotated[Path, typer.Argument(help="GGUF file (the first shard of a sharded model).")],
    name: Annotated[str, typer.Argument(help="Name to give the model, e.g. ai/mymodel:v1.")],
    license_file: Annotated[Optional[Path], typer.Option("--license", "-l", help="License file to include.")] = None,
    chat_template: Annotated[Optional[Path], typer.Option("--chat-template", help="Jinja chat template to include.")] = None,
    context_size: Annotated[int, typer.Option("--context-size", help="Context length to record (0: the GGUF's).")] = 0,
) -> None:
    """Package a local GGUF file as a model in the store (the files are uploaded: the store may be remote)."""
    from modelrunner.common.errors import ServiceError  # imported on use: they pull in grpc and numpy
    from modelrunner.store.artifact import shard_paths

    checked(name)
    try:
        shards = shard_paths(_existing(gguf))
    except ServiceError as err:
        raise CliError(err.message) from None
    extras = {field: _existing(path) for field, path in (("license", license_file), ("chat_template", chat_template))
              if path is not None}
    gateway = client.connect()
    try:
        body: dict = {"name": name, "gguf": [_upload(gateway, shard) for shard in shards]}
        body.update({field: _upload(gateway, path) for field, path in extras.items()})
        if context_size:
            body["context_size"] = context_size
        model = gateway.json("POST", "/models/package", json=body) or {}
    finally:
        gateway.close()
    console.print(f"Packaged {name} ({short_id(model.get('id', ''))})", markup=False)


def _existing(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise CliError(f"{path}: no such file")
    return resolved


def _upload(gateway: client.Gateway, path: Path) -> dict:
    """Streams `path` to the Store as a blob; returns how PackageModel names it."""
    from modelrunner.store.upload import file_digest

    digest = file_digest(path)
    with path.open("rb") as body:
        gateway.request("PUT", f"/models/blobs/{digest}", content=body,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)})
    return {"digest": digest, "name": path.name}


def run(
    model: Annotated[str, typer.Argument(help="Model to chat with; pulled first when not present.")],
    prompt: Annotated[Optional[str], typer.Argument(help="Answer this once and exit.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest answer in tokens (0: no limit).")] = 0,
) -> None:
    """Chat with a model, or answer one prompt (also from piped stdin)."""
    checked(model)
    if max_tokens < 0:
        raise CliError(f"--max-tokens must be 0 (no limit) or more, not {max_tokens}")
    gateway = client.connect()
    try:
        found = gateway.json("GET", f"/models/{model_path(model)}")
    except CliError as err:
        if err.status != 404:
            raise
        error(f"{model} is not present locally; pulling it")
        pull(model)
        found = None
    name = _served_name(model, found)
    piped = None if sys.stdin.isatty() else _read_stdin()
    if prompt is not None or piped:
        text = "\n\n".join(part for part in (prompt, piped) if part)
        chat.answer_once(gateway, name, text, max_tokens)
        return
    if piped is not None:  # stdin was empty and not a terminal: nothing to answer
        raise CliError("no prompt: give one as an argument or on stdin")
    _enable_readline()
    chat.repl(gateway, name, max_tokens=max_tokens)


def _served_name(typed: str, model: dict | None) -> str:
    """The name to chat with. `GET /models/{name}` also finds a model by id (`40ca68a09432`, with or
    without `sha256:`) and by a bare name part (`smollm2` for `ai/smollm2:latest`), as Docker Model
    Runner does; the chat routes take references only, so such a name becomes the model's first tag
    (its id when it has none), as `docker model run` expands it."""
    if not isinstance(model, dict):
        return typed
    tags = [t for t in model.get("tags") or [] if isinstance(t, str)]
    try:
        if str(parse_reference(typed)) in tags:
            return typed
    except InvalidReference:
        pass
    return familiar(tags[0]) if tags else str(model.get("id") or typed)


def _read_stdin() -> str:
    """Piped stdin as text; bytes that are not UTF-8 become U+FFFD (a warning says so) rather than
    fail: whatever the locale's error handler would do with them."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream with no bytes under it (a test's StringIO)
        return sys.stdin.read()
    data = buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        err_console.print(f"[yellow]warning:[/yellow] stdin is not UTF-8 text (byte {err.start}): "
                          "invalid bytes sent as U+FFFD", markup=True, soft_wrap=True)
        return data.decode("utf-8", "replace")


def _enable_readline() -> None:
    """Line editing and in-session history for input(), where the platform has readline."""
    try:
        import readline  # noqa: F401
    except ImportError:
        pass
