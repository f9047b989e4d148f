"""A local HTTP server for the download tests (127.0.0.1, any free port). Not a test module."""
import contextlib
import http.server
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def serve(respond: Callable[[http.server.BaseHTTPRequestHandler, bool], None]) -> Iterator[str]:
    """Serve HEAD and GET with `respond(handler, with_body)`; yields the server's base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            respond(self, False)

        def do_GET(self):
            respond(self, True)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f'http://127.0.0.1:{httpd.server_address[1]}'
    finally:
        httpd.shutdown()
        httpd.server_close()
