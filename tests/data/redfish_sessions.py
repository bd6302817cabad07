"""A Redfish session service in front of a BMC that has none (sushy-tools' emulator).

Real BMCs prefer sessions: POST /redfish/v1/SessionService/Sessions with UserName and Password
answers 201 with an X-Auth-Token header and the session's Location; every later request carries
the token; DELETE on the Location ends the session. sushy-tools has no session service, so this
front provides one: it refuses any request without a live token (HTTP Basic included) and
forwards the others to the emulator with Basic auth. GET /front/stats says what happened.

usage: redfish_sessions.py BACKEND_URL USER PASSWORD   (prints "listening PORT" when ready)
"""

import base64
import json
import secrets
import ssl
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND, USER, PASSWORD = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
SESSIONS = "/redfish/v1/SessionService/Sessions"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
# The emulator's certificate is the test's own self-signed one.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

lock = threading.Lock()
tokens = {}  # token -> session id
stats = {"opened": 0, "closed": 0, "forwarded": 0, "refused": 0}


def count(key):
    with lock:
        stats[key] += 1


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.serve("GET")

    def do_POST(self):
        self.serve("POST")

    def do_PATCH(self):
        self.serve("PATCH")

    def do_DELETE(self):
        self.serve("DELETE")

    def serve(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.rstrip("/")
        if path == "/front/stats":
            with lock:
                text = json.dumps(stats).encode()
            return self.reply(200, text, [("Content-Type", "application/json")])
        if method == "POST" and path == SESSIONS:
            asked = json.loads(body or b"{}")
            if asked.get("UserName") != USER or asked.get("Password") != PASSWORD:
                count("refused")
                return self.reply(401)
            token, session = secrets.token_hex(16), secrets.token_hex(4)
            with lock:
                tokens[token] = session
            count("opened")
            return self.reply(
                201,
                json.dumps({"Id": session, "UserName": USER}).encode(),
                [
                    ("X-Auth-Token", token),
                    ("Location", f"{SESSIONS}/{session}"),
                    ("Content-Type", "application/json"),
                ],
            )
        token = self.headers.get("X-Auth-Token")
        with lock:
            session = tokens.get(token)
        if session is None:
            count("refused")
            return self.reply(401)
        if method == "DELETE" and path.startswith(SESSIONS + "/"):
            if path.rsplit("/", 1)[1] != session:
                return self.reply(404)
            with lock:
                del tokens[token]
            count("closed")
            return self.reply(204)
        request = urllib.request.Request(
            BACKEND + self.path,
            data=body or None,
            method=method,
            headers={
                "Authorization": BASIC,
                "Accept": "application/json",
                "Content-Type": self.headers.get("Content-Type", "application/json"),
            },
        )
        try:
            with urllib.request.urlopen(request, context=INSECURE, timeout=30) as answer:
                code, text, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
        except urllib.error.HTTPError as error:
            code, text, kind = error.code, error.read(), error.headers.get("Content-Type")
        count("forwarded")
        self.reply(code, text, [("Content-Type", kind or "application/json")])


server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
