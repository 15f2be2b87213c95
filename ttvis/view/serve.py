"""Show a written viewer: open it in the default browser, or serve its folder over HTTP.

``open`` uses the standard library's :mod:`webbrowser`, and only where a browser can appear
(Windows, macOS, or a ``DISPLAY``/``WAYLAND_DISPLAY`` elsewhere); on a headless machine it
says where the page is instead. ``serve`` runs :mod:`http.server` on ``host:port`` (default
127.0.0.1, so only this machine, or an SSH tunnel, reaches it) until Ctrl-C.
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import webbrowser
from pathlib import Path

__all__ = ["can_open_browser", "open_page", "serve_folder"]


def can_open_browser() -> bool:
    """True where :mod:`webbrowser` can show a window: Windows, macOS, or a display."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_page(url: str) -> bool:
    """Open ``url`` in the default browser when :func:`can_open_browser`; True if asked to."""
    if not can_open_browser():
        return False
    return bool(webbrowser.open(url))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base's name)
        pass


def serve_folder(folder: str | Path, host: str, port: int, open_browser: bool) -> None:
    """Serve ``folder`` on ``http://host:port/`` until Ctrl-C (``port`` 0: any free port);
    print the URL, and open it when ``open_browser`` and a browser can appear."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        from ttvis.config_check import ConfigError

        raise ConfigError(
            f"port={port}: cannot listen on {host}:{port} ({err.strerror}); expected a free "
            "port (port=0 picks one)"
        ) from None
    with server:
        url = f"http://{host}:{server.server_address[1]}/"
        print(f"serving {folder} at {url} (Ctrl-C stops)", flush=True)
        if open_browser:
            open_page(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)
