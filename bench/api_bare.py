"""The load bench's in-run baseline: a bare Starlette endpoint on the same uvicorn (``http`` and ``loop``
"auto", as ``lakecdp serve``: httptools and uvloop when installed) that reads
the body and answers 202, nothing else (no auth, parse, validation or fsync). Its latency under
the same client is what this box gives any HTTP service at that moment.

    python -m bench.api_bare --port 8799
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def accept(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"accepted": 0, "duplicates": 0}, status_code=202)


app = Starlette(routes=[Route("/v1/batch", accept, methods=["POST"]), Route("/v1/events", accept, methods=["POST"])])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
