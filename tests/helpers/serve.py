"""The inpainting page on a real uvicorn server in a background thread, on a free local port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from tasks.serve import make_app


@contextlib.contextmanager
def serving(net, **app_options) -> Iterator[str]:
    """Serve ``make_app(net, **app_options)``; yields the base URL, stops the server after."""
    config = uvicorn.Config(
        make_app(net, **app_options), host="127.0.0.1", port=0, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # generous: the server binds in milliseconds, but a loaded CI machine may stall a thread
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
