"""The gateway module's balancer (upstream apim_backend { apim_balancer;
keepalive N; }): load-balanced endpoints alternate, failover reaches the
next endpoint when the first refuses or times out, connections to the
backend are reused, https backends get SNI and Host of the endpoint, and
the backend sees X-Forwarded-For/Proto.

nginx runs with the same location as apimd renders (gateway_nginx.c:
apim_backend_uri and a proxy_pass without variables) and a snapshot file
(no apimd); a second server has the older form with variables in
proxy_pass. Needs APIM_NGINX_MODULE and /usr/sbin/nginx.
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

import gwtest
from gwtest import free_port, simple_api as api


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keepalive; answers what it got as JSON and counts the
    connections it accepted."""
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with self.server.lock:
            self.server.requests += 1
        rec = {"backend": self.server.label, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "sni": getattr(self.server, "sni", None)}
        out = json.dumps(rec).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def start_backend(label, tls_ctx=None):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.label = label
    srv.lock = threading.Lock()
    srv.connections = 0
    srv.requests = 0
    srv.sni = None
    if tls_ctx is not None:
        def sni_cb(sock, name, ctx):
            srv.sni = name
        tls_ctx.sni_callback = sni_cb
        srv.socket = tls_ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Silent:
    """Accepts connections and never answers (a backend that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(c)

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.held:
            c.close()


class GatewayUpstreamTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-up-")
        os.chmod(cls.tmp, 0o755)
        cls.a = start_backend("a")
        cls.b = start_backend("b")
        cls.keep = start_backend("keep")
        cls.silent = Silent()
        cls.closed_port = free_port()   # nothing listens there

        cert = os.path.join(cls.tmp, "backend.crt")
        key = os.path.join(cls.tmp, "backend.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        cls.tls = start_backend("tls", ctx)

        def url(srv, path=""):
            return "http://127.0.0.1:%d%s" % (srv.server_port, path)

        apis = [
            api(1, "/lb", {"endpoint_type": "load_balance",
                           "algoClassName": "org.apache.synapse.endpoints.algorithms."
                                            "RoundRobin",
                           "production_endpoints": [{"url": url(cls.a, "/svc")},
                                                    {"url": url(cls.b, "/svc")}]}),
            api(2, "/fo-refused", {"endpoint_type": "failover",
                                   "production_endpoints": {
                                       "url": "http://127.0.0.1:%d/svc" % cls.closed_port},
                                   "production_failovers": [{"url": url(cls.b, "/svc")}]}),
            api(3, "/fo-timeout", {"endpoint_type": "failover",
                                   "production_endpoints": {
                                       "url": "http://127.0.0.1:%d/svc" % cls.silent.port,
                                       "config": {"actionDuration": "400"}},
                                   "production_failovers": [{"url": url(cls.a, "/svc")}]}),
            api(4, "/hang", {"endpoint_type": "http",
                             "production_endpoints": {
                                 "url": "http://127.0.0.1:%d/svc" % cls.silent.port,
                                 "config": {"actionDuration": 400}}}),
            api(5, "/keep", {"endpoint_type": "http",
                             "production_endpoints": {"url": url(cls.keep, "/k/")}}),
            api(6, "/tls", {"endpoint_type": "http",
                            "production_endpoints": {
                                "url": "https://localhost:%d/secure" % cls.tls.server_port}}),
            api(8, "/tls-ip", {"endpoint_type": "http",
                               "production_endpoints": {
                                   "url": "https://127.0.0.1:%d/secure" % cls.tls.server_port}}),
            api(9, "/root", {"endpoint_type": "http",
                              "production_endpoints": {"url": url(cls.keep)}}),
            api(7, "/down", {"endpoint_type": "failover",
                             "production_endpoints": {
                                 "url": "http://127.0.0.1:%d/" % cls.closed_port},
                             "production_failovers": []}),
        ]
        with open(os.path.join(cls.tmp, "snapshot.json"), "w") as f:
            json.dump({"seq": 1, "apis": apis, "applications": [], "keyMappings": [],
                       "subscriptions": [], "revokedJwts": [], "keyManagers": []}, f)
        cls.cert = cert
        cls.port = free_port()
        cls.verify_port = free_port()
        cls.start_nginx()

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        for name in ("a", "b", "keep", "tls"):
            srv = getattr(cls, name, None)
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        if getattr(cls, "silent", None) is not None:
            cls.silent.close()
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def start_nginx(cls):
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(cls.tmp, """
    apim_snapshot_file %(dir)s/snapshot.json;
    upstream apim_backend {
        apim_balancer;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%(port)d;
        # an internal redirect into the gateway's location
        location /again/ {
            rewrite ^/again(/.*)$ $1 last;
        }
        location / {
            apim_gateway on;
            apim_backend_uri on;
            proxy_pass https://apim_backend;
            proxy_redirect off;
            proxy_set_header Host $apim_upstream_host;
            proxy_next_upstream error timeout;
            proxy_ssl_server_name on;
            proxy_ssl_name $apim_upstream_name;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }
    server {
        listen 127.0.0.1:%(verify_port)d;
        location / {
            apim_gateway on;
            proxy_pass $apim_upstream_scheme://apim_backend$apim_upstream_uri$is_args$args;
            proxy_set_header Host $apim_upstream_host;
            proxy_ssl_server_name on;
            proxy_ssl_name $apim_upstream_name;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %(cert)s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }""" % {"dir": cls.tmp, "port": cls.port,
       "verify_port": cls.verify_port, "cert": cls.cert}))

    @classmethod
    def read_log(cls, name):
        return gwtest.read_log(cls.tmp, name)

    def call(self, path, headers=None, timeout=10, port=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            return r.status, doc, body
        finally:
            c.close()

    def backend_of(self, path):
        st, doc, body = self.call(path)
        self.assertEqual(st, 200, body)
        return doc

    # -- tests ---------------------------------------------------------------

    def test_load_balance_alternates_between_endpoints(self):
        seen = [self.backend_of("/lb/v1/items")["backend"] for _ in range(6)]
        self.assertEqual(sorted(set(seen)), ["a", "b"], seen)
        for x, y in zip(seen, seen[1:]):
            self.assertNotEqual(x, y, seen)
        doc = self.backend_of("/lb/v1/items/7?q=1")
        self.assertEqual(doc["path"], "/svc/items/7?q=1")

    def test_failover_when_first_endpoint_refuses(self):
        for _ in range(3):
            doc = self.backend_of("/fo-refused/v1/menu")
            self.assertEqual(doc["backend"], "b")
            self.assertEqual(doc["path"], "/svc/menu")

    def test_failover_when_first_endpoint_times_out(self):
        doc = self.backend_of("/fo-timeout/v1/menu")
        self.assertEqual(doc["backend"], "a")
        self.assertEqual(doc["path"], "/svc/menu")

    def test_endpoint_timeout_without_failover_is_504(self):
        # actionDuration 400 ms: nginx's default read timeout (60 s) would
        # exceed the client's 10 s
        st, _, body = self.call("/hang/v1/x")
        self.assertEqual(st, 504, body)

    def test_all_endpoints_down_is_502(self):
        st, _, body = self.call("/down/v1/x")
        self.assertEqual(st, 502, body)

    def test_connections_to_backend_are_reused(self):
        before_conn = self.keep.connections
        before_req = self.keep.requests
        for i in range(8):
            doc = self.backend_of("/keep/v1/item/%d" % i)
            self.assertEqual(doc["backend"], "keep")
            self.assertEqual(doc["path"], "/k/item/%d" % i)
        self.assertEqual(self.keep.requests - before_req, 8)
        self.assertLessEqual(self.keep.connections - before_conn, 1)

    def test_https_backend_gets_sni_and_host_of_the_endpoint(self):
        doc = self.backend_of("/tls/v1/hello")
        self.assertEqual(doc["backend"], "tls")
        self.assertEqual(doc["path"], "/secure/hello")
        self.assertEqual(doc["sni"], "localhost")
        self.assertEqual(doc["headers"]["host"], "localhost:%d" % self.tls.server_port)
        # TLS connections are reused too
        before = self.tls.connections
        for _ in range(4):
            self.assertEqual(self.backend_of("/tls/v1/again")["sni"], "localhost")
        self.assertLessEqual(self.tls.connections - before, 1)

    def test_https_backend_verified_against_the_endpoint_host(self):
        # verification on: the certificate names localhost, the endpoint too
        st, doc, body = self.call("/tls/v1/hello", port=self.verify_port)
        self.assertEqual(st, 200, body)
        self.assertEqual(doc["sni"], "localhost")
        # the same backend by IP address: the name does not match (and
        # the connection verified for localhost is not reused for it)
        st, _, body = self.call("/tls-ip/v1/hello", port=self.verify_port)
        self.assertEqual(st, 502, body)
        # without verification (the default) the IP endpoint is reached,
        # with no SNI (RFC 6066: no IP addresses)
        st, doc, body = self.call("/tls-ip/v1/hello")
        self.assertEqual(st, 200, body)
        self.assertEqual(doc["path"], "/secure/hello")

    def test_forwarded_headers_and_host(self):
        doc = self.backend_of("/keep/v1/fwd")
        self.assertEqual(doc["headers"]["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(doc["headers"]["x-forwarded-proto"], "http")
        self.assertEqual(doc["headers"]["host"], "127.0.0.1:%d" % self.keep.server_port)
        doc = self.backend_of_with("/keep/v1/fwd", {"X-Forwarded-For": "10.1.2.3"})
        self.assertEqual(doc["headers"]["x-forwarded-for"], "10.1.2.3, 127.0.0.1")

    def test_backend_uri_escaping_arguments_and_api_root(self):
        # what the backend receives: the endpoint's path, the rest of the
        # path escaped again, the query as the client sent it; the same
        # with the older proxy_pass with variables (second server)
        cases = [("/keep/v1/a%20b/c?x=1&y=%2F", "/k/a%20b/c?x=1&y=%2F"),
                 ("/keep/v1/x%3Fy", "/k/x%3Fy"),
                 ("/keep/v1/caf%C3%A9/", "/k/caf%C3%A9/"),
                 ("/keep/v1/a+b?", "/k/a+b"),
                 ("/keep/v1", "/k"),
                 ("/keep/v1?q=2", "/k?q=2"),
                 ("/root/v1", "/"),
                 ("/root/v1/?q=3", "/?q=3"),
                 ("/root/v1/deep/er", "/deep/er")]
        # after an internal redirect (nginx escapes such a URI itself;
        # not x%3Fy: rewrite takes a decoded "?" for the arguments)
        for path, want in (cases[0], cases[2], cases[3]):
            st, doc, body = self.call("/again" + path)
            self.assertEqual(st, 200, (path, body))
            self.assertEqual(doc["path"], want, path)
        for path, want in cases:
            for port in (self.port, self.verify_port):
                st, doc, body = self.call(path, port=port)
                self.assertEqual(st, 200, (path, port, body))
                self.assertEqual(doc["path"], want, (path, port))
                self.assertEqual(doc["headers"]["host"],
                                 "127.0.0.1:%d" % self.keep.server_port)

    def backend_of_with(self, path, headers):
        st, doc, body = self.call(path, headers)
        self.assertEqual(st, 200, body)
        return doc


if __name__ == "__main__":
    unittest.main()
