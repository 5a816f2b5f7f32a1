"""One logging format for the server and the CLI."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # BoxMOT and friends log per frame at INFO; keep the console readable.
    for noisy in ("boxmot", "httpx", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
