"""examples/hello.py - a small Flask app whose routes block the way real
apps do: they sleep, talk to a socket, and stream. Nothing in it knows
about libgreen; under the preload every request still runs concurrently.

    /            a greeting
    /sleep?s=0.5 blocks in time.sleep (one green thread parks, others run)
    /socket      a TCP round trip to a local echo service (blocking socket
                 calls made cooperative underneath)
    /stream      a chunked response produced over time
"""
import socket
import threading
import time

from flask import Flask, Response, g, request


def _echo_server():
    """A tiny echo service on a free loopback port, in a real OS thread."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)

    def serve():
        while True:
            conn, _ = srv.accept()
            with conn:
                data = conn.recv(65536)
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()


def create_app():
    app = Flask(__name__)
    echo_addr = _echo_server()

    @app.route("/")
    def index():
        return "Hello from libgreen: every request in its own green thread.\n"

    @app.route("/sleep")
    def sleep():
        seconds = min(float(request.args.get("s", "0.5")), 10.0)
        g.started = time.monotonic()
        time.sleep(seconds)
        return "slept %.3f s\n" % (time.monotonic() - g.started)

    @app.route("/socket")
    def socket_call():
        with socket.create_connection(echo_addr, timeout=5) as s:
            s.sendall(b"ping")
            return "echo said %r\n" % s.recv(16).decode()

    @app.route("/stream")
    def stream():
        def generate():
            for i in range(5):
                yield "chunk %d\n" % i
                time.sleep(0.1)
        return Response(generate(), mimetype="text/plain")

    return app
