#!/usr/bin/env python
"""
Serve a catalogue (``tools/index_catalogue.py``) as an HTTP search service with a page:

    python tools/serve.py --catalogue catalogue/ [--images shop_images/] [--host 127.0.0.1] \\
        [--port 8000] [--workers 1] [KEY VALUE ...]

Then open http://127.0.0.1:8000/ (drop a photo), or ``POST /search`` a photo in the multipart
field ``image`` (``?top_k=10&min_score=0.5&max_garments=5&all_categories=false``); the API is at
``/docs``. The catalogue's own model is loaded once (other weights are refused at start-up, as
``tools/search.py`` refuses them); a GPU is used when present. ``--workers N`` starts N
processes that serve the same (read-only) catalogue, each with its own model.

The shop images served are the catalogue's own, from the folder it was indexed from (checked at
start-up: it must hold the catalogue's images with their recorded sizes) or ``--images``. Uploads
are capped at 20 MiB as they arrive (413), a body that stalls 30 s or takes over 120 s gets a 408,
and a connection whose request headers take over 10 s is closed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import torch

from deepfashion2.utils.cli import tool_main


@tool_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalogue", required=True)
    p.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--images", help="the shop images (default: the folder indexed)")
    p.add_argument(
        "--model", help="the exported model (.onnx / .ts) the catalogue was indexed with"
    )
    p.add_argument(
        "--parallel",
        type=int,
        help="inferences at once per process, exported ONNX models only (default: one per core,"
        " shared among --workers)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    import uvicorn

    from deepfashion2.apps.serve.app import (
        ENV_CATALOGUE,
        ENV_IMAGES,
        ENV_MODEL,
        ENV_OPTS,
        ENV_PARALLEL,
        create_app,
    )
    from deepfashion2.apps.serve.guard import HeaderTimeoutProtocol

    opts = list(args.opts)
    if "MODEL.DEVICE" not in opts[::2]:
        opts += ["MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu"]
    parallel = args.parallel
    if parallel is None and args.workers > 1 and (args.model or "").endswith(".onnx"):
        parallel = max(1, (os.cpu_count() or 1) // args.workers)  # the cores, shared
    if args.workers > 1:  # each worker process builds the app from the environment
        os.environ[ENV_CATALOGUE], os.environ[ENV_OPTS] = args.catalogue, json.dumps(opts)
        os.environ[ENV_IMAGES] = args.images or ""
        os.environ[ENV_MODEL] = args.model or ""
        os.environ[ENV_PARALLEL] = str(parallel or "")
        uvicorn.run(
            "deepfashion2.apps.serve.app:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            http=HeaderTimeoutProtocol,
        )
        return
    app = create_app(
        args.catalogue, opts, image_root=args.images, model=args.model, parallel=parallel
    )  # errors: one line
    print(f"Serving {args.catalogue} on http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, http=HeaderTimeoutProtocol)


if __name__ == "__main__":
    main()
