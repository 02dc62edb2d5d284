#!/usr/bin/env python
"""
A bounded load test of the search service on loopback, side by side with the command line's cost
per photo: ``tools/serve.py`` is started on 127.0.0.1 (a free port) over a catalogue, then 1, 4
and 16 concurrent clients each send consumer photos to ``POST /search`` for a fixed number of
seconds and stop. Reported per level: requests/s, p50 / p95 latency, errors (must be 0); the
server's resident memory before and after; and ``search_photos``' seconds per photo in one
process (what ``tools/search.py`` spends per photo once its model is loaded).

    python bench/serve.py --catalogue CAT_DIR --photos DIR [--seconds 20] [--out FILE]
        [--screenshot docs/serve.png] [KEY VALUE ...]

``--screenshot``: before the load, the page in Debian's Chromium searching the first photo (the
README's picture).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import subprocess
import sys
import threading
import time

import numpy as np
from _common import cpu_model, multipart, wait_until_serving, write_json

from deepfashion2 import compat

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LEVELS = (1, 4, 16)
QUERY = "/search?top_k=10"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def _post(port: int, photo: bytes) -> tuple[int, float]:
    body, headers = multipart("image", photo)
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", QUERY, body, headers)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status, time.perf_counter() - t


def load(port: int, photos: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` threads, each sending photos in turn until ``seconds`` have passed."""
    lat, errors = [], [0]
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client(k: int):
        i = k
        while time.perf_counter() < end:
            try:
                status, t = _post(port, photos[i % len(photos)])
            except OSError:
                status, t = -1, 0.0
            with lock:
                if status == 200:
                    lat.append(t)
                else:
                    errors[0] += 1
            i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients, "requests": len(lat), "errors": errors[0],
        "requests_per_s": len(lat) / wall,
        "p50_s": float(np.percentile(lat, 50)) if lat else None,
        "p95_s": float(np.percentile(lat, 95)) if lat else None,
    }  # fmt: skip


def cli_cost(catalogue: str, paths: list[str], opts: list[str]) -> float:
    """Seconds per photo of the command line's search, its model loaded once (in this process)."""
    from deepfashion2.apps.catalogue import search_photos
    from deepfashion2.apps.catalogue.search import PEOPLE_POLICY, open_catalogue

    _, embedder = open_catalogue(catalogue, opts)
    search_photos(catalogue, paths[:1], embedder=embedder, top_k=10, **PEOPLE_POLICY)  # warm-up
    t = time.perf_counter()
    for p in paths:
        search_photos(catalogue, [p], embedder=embedder, top_k=10, **PEOPLE_POLICY)
    return (time.perf_counter() - t) / len(paths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalogue", required=True)
    p.add_argument("--photos", required=True, help="folder of consumer photos (*.jpg)")
    p.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    p.add_argument("--num-photos", type=int, default=8)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "serve.json"))
    p.add_argument("--screenshot", help="save the page searching the first photo here (PNG)")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    paths = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))[: args.num_photos]
    photos = [open(x, "rb").read() for x in paths]
    port = compat.free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tools", "serve.py"), "--catalogue", args.catalogue,
         "--port", str(port), *args.opts],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        error = wait_until_serving(server, port)
        if error:
            raise SystemExit(f"the server did not start: {error}")
        _post(port, photos[0])  # warm-up: first inference
        if args.screenshot:
            import _browser

            browser = _browser.chrome()
            try:
                _browser.search_on_page(browser, f"http://127.0.0.1:{port}/", paths[0])
                browser.save_screenshot(args.screenshot)
            finally:
                browser.quit()
        before = _rss_mb(server.pid)
        levels = [load(port, photos, c, args.seconds) for c in LEVELS]
        after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    per_photo = cli_cost(args.catalogue, paths, args.opts)
    result = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "seconds_per_level": args.seconds,
        "photos": len(photos), "levels": levels,
        "server_rss_mb": {"before": before, "after": after},
        "cli_seconds_per_photo": per_photo,
        "service_vs_cli_per_photo": (1 / levels[0]["requests_per_s"]) / per_photo,
    }  # fmt: skip
    for lv in levels:
        print(
            f"{lv['clients']:>2} clients: {lv['requests_per_s']:.2f} req/s, "
            f"p50 {lv['p50_s']:.3f} s, p95 {lv['p95_s']:.3f} s, errors {lv['errors']}"
        )
    print(f"server RSS {before:.0f} -> {after:.0f} MB; CLI {per_photo:.3f} s per photo")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
