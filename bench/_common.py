"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid


def run_json_child(script: str, *args: str, env: dict | None = None) -> dict:
    """Run ``script --child ARGS`` in a fresh Python process; return the JSON of its last line."""
    out = subprocess.run(
        [sys.executable, script, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def eval_only(run_dir: str, weights: str, out: str, opts=(), folder: str = "inference") -> dict:
    """
    ``tools/train_net.py --eval-only`` of a demo run (its ``config.yaml``) with ``weights``, in a
    fresh process writing to ``out``; the results dict it saved in ``out/<folder>`` (``inference``,
    or ``inference_TTA`` for the TTA pass).
    """
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    subprocess.run(
        [sys.executable, os.path.join(root, "tools", "train_net.py"), "--eval-only",
         "--config-file", os.path.join(run_dir, "config.yaml"), "OUTPUT_DIR", out,
         "MODEL.WEIGHTS", weights, *opts],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with open(os.path.join(out, folder, "deepfashion2_metrics.json")) as f:
        return json.load(f)


def wait_until_serving(proc: subprocess.Popen, port: int, timeout: float = 180.0) -> str | None:
    """Poll ``GET /healthz`` of the server ``proc`` started on 127.0.0.1:``port`` until it answers
    200; None then, else why not (the process ended, another status, no answer in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the server exited with status {proc.returncode}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            return None if status == 200 else f"/healthz answered {status}"
        except OSError:
            time.sleep(0.2)
    return f"no answer on /healthz within {timeout:.0f} s"


def multipart(field: str, data: bytes, filename: str = "photo.jpg") -> tuple[bytes, dict]:
    """(body, headers) of a multipart/form-data upload of ``data`` in ``field``: one file, as a
    browser's form sends it (the search service's API)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def write_json(path: str, result: dict, indent: int = 1) -> None:
    """Write a benchmark's result dict to ``path`` (the ``--out`` of every script)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=indent)


def cpu_model() -> str:
    """The CPU's name: results round differently on another CPU (see the README)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"
