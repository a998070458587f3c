"""A TCP echo backend in its own process (uvloop): `python -m bench.echo_proc --max-seconds N`.

Prints the port it listens on (127.0.0.1, ephemeral) as one line, then echoes until its
stdin reaches EOF (the parent closed it or went away) or `--max-seconds` passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvloop

from offload.echo import serve_echo


async def _serve(max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await serve_echo("127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    done: asyncio.Future[None] = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not done.done():
            done.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await asyncio.wait_for(done, max_seconds)
    except TimeoutError:
        pass
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Serve echo until stdin closes or the time bound passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.max_seconds))


if __name__ == "__main__":
    main()
