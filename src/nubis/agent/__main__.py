"""``python -m nubis.agent --listen ADDRESS --port PORT --token-file FILE``: run the
host network agent (as root: it changes the host's links)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from nubis.agent import DEFAULT_PORT
from nubis.agent.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="nubis-agent", description=__doc__)
    parser.add_argument("--listen", required=True, help="the host's management address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    token = args.token_file.read_text().strip()
    if len(token) < 16:
        parser.error("the token file must hold a token of 16 characters or more")
    uvicorn.run(create_app(token), host=args.listen, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
