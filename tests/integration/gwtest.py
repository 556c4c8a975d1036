"""Shared helpers of the gateway integration tests (no tests here).

nginx with ngx_http_apim_module in a temp folder (conf rendering, start, wait
for the port, graceful stop, logs), an echoing Python backend, RSA/EC signing
keys and JWT minting by the openssl CLI, small HTTP call helpers, polling,
nats-server children and a NATS subscriber, and `apimd --profile gateway`
in a fresh home (GatewayProc).  See notes/HELPERS.md.
"""

import base64
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import apimtest
import test_publisher as pt

MODULE = os.environ.get("APIM_NGINX_MODULE", "")
if MODULE and not os.path.isabs(MODULE) and not os.path.exists(MODULE):
    # run.py may run us from another folder: relative to the repository
    MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", MODULE)
NGINX = os.environ.get("APIM_NGINX", "/usr/sbin/nginx")
HAVE_NATS = shutil.which("nats-server") is not None
HOUR_MS = 3600 * 1000
# nginx, the module and nats-server: what the feed-mode tests need
HAVE_ALL = (bool(MODULE) and os.path.exists(MODULE) and os.path.exists(NGINX)
            and HAVE_NATS)

# the Key Manager the module snapshots trust, and its RSA key's kid
ISSUER = "https://127.0.0.1:9443/oauth2/token"
KID = "gw-test-key"

# the snapshot of PizzaGateway (GatewayModuleTest and the tests built on it)
PROD_KEY = "prodConsumerKey0001"
SAND_KEY = "sandConsumerKey0001"
OTHER_KEY = "otherConsumerKey001"
API_ID = "11111111-aaaa-4aaa-8aaa-000000000001"
API2_ID = "11111111-aaaa-4aaa-8aaa-000000000002"
BLOCKED_API_ID = "11111111-aaaa-4aaa-8aaa-000000000003"
APP_ID = "22222222-bbbb-4bbb-8bbb-000000000001"
APP2_ID = "22222222-bbbb-4bbb-8bbb-000000000002"

# apimd --profile gateway listens on GW_HTTP + port offset
GW_HTTP = 8280
DP = "/api/am/devportal/v3"
FORM = "application/x-www-form-urlencoded"
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]


# ---- small things ---------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def wait_for(cond, timeout=10, step=0.05):
    """Polls cond until it returns something true (returned) or timeout
    seconds passed (then cond's last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def basic(user, password):
    raw = "%s:%s" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe=""))
    return "Basic " + base64.b64encode(raw.encode()).decode()


def claims_of(jwt):
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def get(port, path, headers=None, timeout=5):
    """GET 127.0.0.1:port path: (status, JSON body or None, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        try:
            js = json.loads(body)
        except ValueError:
            js = None
        return r.status, js, body
    finally:
        conn.close()


def call(port, path, token, headers=None):
    """GET with a bearer token: (status, JSON body or None, lower-case headers)."""
    h = {"Authorization": "Bearer " + token}
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=h)
        r = c.getresponse()
        body = r.read()
        try:
            js = json.loads(body)
        except ValueError:
            js = None
        return r.status, js, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- an echoing backend ---------------------------------------------------

class Backend(http.server.BaseHTTPRequestHandler):
    """Echoes what it got as JSON (and keeps it in Backend.seen)."""
    seen = []

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body.decode("utf-8", "replace"),
               "backend": self.server.label}
        Backend.seen.append(rec)
        out = json.dumps(rec).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


def start_backend(label, handler=Backend):
    """A threading HTTP server on a free port; srv.label names it in answers."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.label = label
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


def stop_backend(srv):
    if srv is not None:
        srv.shutdown()
        srv.server_close()


# every answer of SizedBackend has this many bytes
SIZED_BODY = 2000


def siddhi(condition, limit, window="1 hour", op=">="):
    """A custom rule's query in the reference's documented form."""
    return ("FROM RequestStream\n"
            "SELECT userId, %s AS isEligible , str:concat('x','') as throttleKey\n"
            "INSERT INTO EligibilityStream;\n"
            "FROM EligibilityStream[isEligible==true]#throttler:timeBatch(%s)\n"
            "SELECT throttleKey, (count(userId) %s %d) as isThrottled, expiryTimeStamp "
            "group by throttleKey\n"
            "INSERT ALL EVENTS into ResultStream;" % (condition, window, op, limit))


class SizedBackend(http.server.BaseHTTPRequestHandler):
    """Answers SIZED_BODY bytes; remembers the request bodies' sizes."""

    def do_GET(self):
        self.answer()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.answer()

    def answer(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(SIZED_BODY))
        self.end_headers()
        self.wfile.write(b"x" * SIZED_BODY)

    def log_message(self, *args):
        pass


def start_sized_backend():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SizedBackend)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ---- keys and tokens ------------------------------------------------------

def rsa_jwk(tmp, kid=KID):
    """A 2048-bit RSA key by the openssl CLI: (private PEM path, JWK)."""
    key = os.path.join(tmp, "signing.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", key], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mod = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"],
                         check=True, capture_output=True, text=True).stdout
    n = bytes.fromhex(mod.strip().split("=", 1)[1])
    text = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    e = int(re.search(r"publicExponent: (\d+)", text).group(1))
    eb = e.to_bytes((e.bit_length() + 7) // 8, "big")
    return key, {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                 "n": b64url(n), "e": b64url(eb)}


def ec_jwk(tmp, kid):
    """A P-256 key by the openssl CLI: (private PEM path, JWK)."""
    key = os.path.join(tmp, "ec-signing.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = subprocess.run(["openssl", "ec", "-in", key, "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    pub = re.search(r"pub:\s*\n((?:\s+[0-9a-f:]+\n)+)", text).group(1)
    pub = bytes.fromhex(re.sub(r"[\s:]", "", pub))
    assert len(pub) == 65 and pub[0] == 4
    return key, {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                 "alg": "ES256", "x": b64url(pub[1:33]), "y": b64url(pub[33:])}


def der_ecdsa_to_jose(der):
    """DER ECDSA-Sig-Value (as openssl dgst writes it) -> R || S."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def sign_jwt(key_path, header, claims, ec=False, tamper=False):
    """header.claims signed with the PEM key at key_path (SHA-256; an EC key's
    DER signature is turned into JOSE R || S); tamper flips a signature bit."""
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode()))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path],
                         input=signing_input.encode(), check=True,
                         capture_output=True).stdout
    if ec:
        sig = der_ecdsa_to_jose(sig)
    if tamper:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    return signing_input + "." + b64url(sig)


def jwt(key_path, client, sub="alice", jti=None, exp_in=3600, kid=KID, iss=ISSUER,
        aud=True):
    """An RS256 access token of our Key Manager for client (consumer key)."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    claims = {"iss": iss, "sub": sub}
    if aud:
        claims["aud"] = client
    claims.update({"azp": client, "client_id": client, "scope": "default",
                   "iat": now, "exp": now + exp_in,
                   "jti": jti if jti is not None else "jti-%s-%d" % (sub, now)})
    return sign_jwt(key_path, header, claims)


def simple_api(n, context, ec, auth="None", prefix="33333333", name="Api"):
    """A snapshot API n: version v1, GET /* with auth, endpoint config ec."""
    return {"id": "%s-aaaa-4aaa-8aaa-%012d" % (prefix, n), "name": "%s%d" % (name, n),
            "context": context, "version": "v1", "isDefaultVersion": False,
            "lifeCycleStatus": "PUBLISHED", "endpointConfig": ec, "policies": [],
            "operations": [{"target": "/*", "verb": "GET", "authType": auth,
                            "scopes": []}]}


# ---- nginx with the module ------------------------------------------------

def skip_without_module():
    """SkipTest unless the module is built and nginx installed."""
    if not MODULE or not os.path.exists(MODULE):
        raise unittest.SkipTest("APIM_NGINX_MODULE not built")
    if not os.path.exists(NGINX):
        raise unittest.SkipTest("nginx not installed")


def nginx_conf(tmp, http, workers=1, log_format=None, module=None):
    """An nginx.conf loading the module, with its pid, logs and temp paths
    in tmp; http is the rest of the http block (apim_* directives, upstreams,
    servers); log_format, if given, is the access log's format."""
    access = "%s/access.log" % tmp
    if log_format:
        access = "%s apim" % access
        access = "log_format apim '%s';\n    access_log %s" % (log_format, access)
    else:
        access = "access_log " + access
    return """
load_module %(module)s;
user root;
daemon off;
master_process on;
worker_processes %(workers)d;
error_log %(dir)s/error.log notice;
pid %(dir)s/nginx.pid;
events { worker_connections 256; }
http {
    %(access)s;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
%(http)s
}
""" % {"module": module or MODULE, "dir": tmp, "workers": workers, "http": http,
       "access": access}


def read_log(tmp, name="error.log"):
    try:
        with open(os.path.join(tmp, name), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def start_nginx(tmp, port, conf, append=False):
    """Writes conf to tmp/nginx.conf, starts nginx (stderr into
    tmp/stderr.log) and waits until it listens on port: the Popen."""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    with open(os.path.join(tmp, "stderr.log"), "a" if append else "w") as err:
        proc = subprocess.Popen([NGINX, "-c", path, "-p", tmp + "/"],
                                stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=apimtest._child_setup)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("nginx exited: %s%s" % (read_log(tmp, "stderr.log"),
                                                       read_log(tmp, "error.log")))
        if port_open(port):
            return proc
        time.sleep(0.05)
    raise RuntimeError("nginx did not listen")


def snapshot_http(tmp, port, directives="", hosts=("127.0.0.1",), listen_opts=""):
    """The http block most module tests use: the module reading
    tmp/snapshot.json (plus directives, apim_* lines), one server on port
    (one listen per host in hosts, with listen_opts) proxying every request
    through the module."""
    listens = "".join("\n        listen %s:%d%s;" % (h, port, listen_opts) for h in hosts)
    return """
    apim_snapshot_file %(dir)s/snapshot.json;%(directives)s
    server {%(listens)s
        location / {
            apim_gateway on;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
    }""" % {"dir": tmp, "directives": directives, "listens": listens}


def start_snapshot_gateway(tmp, snap, directives="", **conf):
    """Writes snap to tmp/snapshot.json and starts nginx on a free port
    with snapshot_http(); conf goes to nginx_conf (log_format, workers).
    Returns (port, process)."""
    with open(os.path.join(tmp, "snapshot.json"), "w") as f:
        json.dump(snap, f)
    port = free_port()
    return port, start_nginx(tmp, port, nginx_conf(tmp, snapshot_http(tmp, port, directives),
                                                  **conf))


def stop_nginx(proc):
    """Graceful stop (SIGQUIT), killed after 10 s; nginx's exit status."""
    rc = None
    if proc is not None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return rc


# ---- nginx + module on a snapshot file: the PizzaShack fixture ------------

class SnapshotGateway:
    """A mixin for unittest.TestCase classes with nginx and the module on
    cls.snapshot_path (cls.tmp, cls.port): atomic snapshot writes, logs and
    calls (status, lower-case headers, body)."""

    @classmethod
    def write_snapshot(cls, snap):
        tmp = cls.snapshot_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(snap, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cls.snapshot_path)

    @classmethod
    def read_log(cls, name):
        return read_log(cls.tmp, name)

    def call(self, method, path, token=None, headers=None, body=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def assert_backend(self, res, label="production"):
        st, _, body = res
        self.assertEqual(st, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["backend"], label)
        return doc


class PizzaGateway(SnapshotGateway):
    """A mixin for unittest.TestCase classes: nginx with the module reading
    tmp/snapshot.json (PizzaShack 1.0.0/2.0.0, a blocked API, App1/App2, the
    RSA and EC keys of our Key Manager), a production and a sandbox backend;
    tokens, calls and fault assertions.  setUpClass calls setup_pizza(),
    writes a snapshot, sets cls.port and starts nginx (start_nginx)."""

    @classmethod
    def setup_pizza(cls, prefix):
        skip_without_module()
        cls.tmp = tempfile.mkdtemp(prefix=prefix)
        os.chmod(cls.tmp, 0o755)
        cls.prod = start_backend("production")
        cls.sand = start_backend("sandbox")
        cls.key, cls.jwk = rsa_jwk(cls.tmp)
        cls.ec_key, cls.ec_jwk = ec_jwk(cls.tmp, "gw-test-ec-key")
        cls.snapshot_path = os.path.join(cls.tmp, "snapshot.json")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            stop_nginx(cls.nginx)
        for b in ("prod", "sand"):
            stop_backend(getattr(cls, b, None))
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def base_snapshot(cls):
        prod_url = "http://127.0.0.1:%d/pizza-backend" % cls.prod.server_port
        sand_url = "http://127.0.0.1:%d/pizza-sandbox/" % cls.sand.server_port
        ec = {"endpoint_type": "http",
              "production_endpoints": {"url": prod_url},
              "sandbox_endpoints": {"url": sand_url}}

        def op(target, verb, auth="Application & Application User", scopes=()):
            return {"target": target, "verb": verb, "authType": auth,
                    "scopes": list(scopes)}

        pizza = {"id": API_ID, "name": "PizzaShack", "context": "/pizzashack",
                 "version": "1.0.0", "isDefaultVersion": True,
                 "lifeCycleStatus": "PUBLISHED", "endpointConfig": ec,
                 "policies": ["Unlimited"],
                 "operations": [op("/menu", "GET"),
                                op("/order", "POST", scopes=["order:write"]),
                                op("/order/{orderId}", "GET"),
                                op("/order/{orderId}", "DELETE",
                                   scopes=["order:admin"]),
                                op("/health", "GET", auth="None"),
                                op("/files/*", "GET"),
                                op("/files/special", "GET", auth="None")]}
        pizza2 = dict(pizza, id=API2_ID, version="2.0.0", isDefaultVersion=False,
                      operations=[op("/menu", "GET")])
        blocked = {"id": BLOCKED_API_ID, "name": "Old", "context": "/old",
                   "version": "v1", "isDefaultVersion": False,
                   "lifeCycleStatus": "BLOCKED", "endpointConfig": ec,
                   "policies": [], "operations": [op("/*", "GET")]}
        root = {"id": "11111111-aaaa-4aaa-8aaa-000000000004", "name": "Root",
                "context": "/root", "version": "v1", "isDefaultVersion": False,
                "lifeCycleStatus": "PUBLISHED",
                "endpointConfig": json.dumps({"endpoint_type": "http",
                                              "production_endpoints": {
                                                  "url": "http://127.0.0.1:%d"
                                                         % cls.prod.server_port}}),
                "policies": [], "operations": [op("/*", "GET", auth="None")]}
        return {
            "seq": 1,
            "apis": [pizza, pizza2, blocked, root],
            "applications": [
                {"id": APP_ID, "name": "App1", "owner": "alice", "tier": "Unlimited"},
                {"id": APP2_ID, "name": "App2", "owner": "bob", "tier": "Unlimited"}],
            "keyMappings": [
                {"applicationId": APP_ID, "consumerKey": PROD_KEY,
                 "keyType": "PRODUCTION"},
                {"applicationId": APP_ID, "consumerKey": SAND_KEY,
                 "keyType": "SANDBOX"},
                {"applicationId": APP2_ID, "consumerKey": OTHER_KEY,
                 "keyType": "PRODUCTION"}],
            "subscriptions": [
                {"id": "s1", "apiId": API_ID, "applicationId": APP_ID,
                 "tier": "Gold", "status": "UNBLOCKED"},
                {"id": "s3", "apiId": BLOCKED_API_ID, "applicationId": APP_ID,
                 "tier": "Gold", "status": "UNBLOCKED"}],
            "revokedJwts": [{"jti": "revoked-jti-1", "expiry": int(time.time()) + 3600}],
            "keyManagers": [{"name": "Resident Key Manager", "issuer": ISSUER,
                             "jwks": {"keys": [cls.jwk, cls.ec_jwk]}}],
        }

    def token(self, client=PROD_KEY, scope="default", exp_in=3600, nbf_in=None,
              jti="jti-%d" % 0, kid=KID, iss=ISSUER, tamper=False, ec=False,
              alg=None):
        now = int(time.time())
        if ec and kid == KID:
            kid = self.ec_jwk["kid"]
        header = {"alg": alg or ("ES256" if ec else "RS256"), "typ": "JWT", "kid": kid}
        claims = {"iss": iss, "sub": "alice", "aud": client, "azp": client,
                  "client_id": client, "scope": scope, "iat": now,
                  "exp": now + exp_in, "jti": jti}
        if nbf_in is not None:
            claims["nbf"] = now + nbf_in
        return sign_jwt(self.ec_key if ec else self.key, header, claims,
                        ec=ec, tamper=tamper)

    def assert_fault(self, res, status, code):
        st, headers, body = res
        self.assertEqual(st, status, body)
        self.assertEqual(headers.get("content-type"), "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["code"], code)
        self.assertTrue(doc["message"])
        self.assertIn("description", doc)
        return doc


# ---- NATS -----------------------------------------------------------------

class NatsServer:
    """A nats-server child on 127.0.0.1:port (a fixed port across restarts)."""

    def __init__(self, port=None):
        self.port = port or apimtest.unused_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     preexec_fn=apimtest._child_setup)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("nats-server did not start on port %d" % self.port)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port


class NatsSub:
    """Subscribes to apim.> and collects (subject, json body) in arrival order."""

    def __init__(self, port, connect_timeout=10, skip_throttle=None):
        # change events only, unless subscribing to apim.throttle.* on purpose
        self.skip_throttle = skip_throttle
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.sock.settimeout(None)
        self.f = self.sock.makefile("rb")
        info = self.f.readline()
        if not info.startswith(b"INFO "):
            raise RuntimeError("not a NATS server: %r" % info)
        self.msgs = []
        self.cond = threading.Condition()
        self.pong = threading.Event()
        self.closed = False
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                          b'SUB apim.> 1\r\nPING\r\n')
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.pong.wait(10):
            raise RuntimeError("no PONG from nats-server")

    def _read(self):
        try:
            while True:
                line = self.f.readline()
                if not line:
                    break
                if line.startswith(b"MSG "):
                    parts = line.split()
                    size = int(parts[-1])
                    payload = self.f.read(size + 2)[:size]
                    if self.skip_throttle and parts[1].startswith(b"apim.throttle."):
                        continue  # rate limiting traffic, not change events
                    with self.cond:
                        self.msgs.append((parts[1].decode(), json.loads(payload)))
                        self.cond.notify_all()
                elif line.startswith(b"PING"):
                    self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    self.pong.set()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def wait_for(self, pred, timeout=5):
        """The first (subject, body) matching pred; fails after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.msgs:
                    if pred(*m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching NATS message within %.1f s; got %r"
                                         % (timeout, self.msgs[-20:]))
                self.cond.wait(left)

    def changes(self):
        """Change events (not heartbeats), deduplicated by seq, in seq order."""
        with self.cond:
            seen = {}
            for subj, body in self.msgs:
                if subj != "apim.notify.heartbeat":
                    seen.setdefault(body["seq"], (subj, body))
            return [seen[k] for k in sorted(seen)]


class Nats:
    """A raw NATS client: publishes, and collects what it subscribed to."""

    def __init__(self, port, subjects=("apim.throttle.>",)):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)
        self.f = self.sock.makefile("rb")
        if not self.f.readline().startswith(b"INFO "):
            raise RuntimeError("not a NATS server")
        self.msgs = []
        self.cond = threading.Condition()
        self.pong = threading.Event()
        self.lock = threading.Lock()
        subs = b"".join(b"SUB %s %d\r\n" % (s.encode(), i + 1) for i, s in enumerate(subjects))
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n' + subs +
                          b"PING\r\n")
        threading.Thread(target=self._read, daemon=True).start()
        if not self.pong.wait(10):
            raise RuntimeError("no PONG")

    def _read(self):
        try:
            while True:
                line = self.f.readline()
                if not line:
                    break
                if line.startswith(b"MSG "):
                    parts = line.split()
                    payload = self.f.read(int(parts[-1]) + 2)[:-2]
                    with self.cond:
                        self.msgs.append((parts[1].decode(), json.loads(payload),
                                          time.monotonic()))
                        self.cond.notify_all()
                elif line.startswith(b"PING"):
                    with self.lock:
                        self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    self.pong.set()
        except (OSError, ValueError):
            pass

    def publish(self, subject, body):
        data = json.dumps(body).encode()
        with self.lock:
            self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(data), data))

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def since(self, t0, subject):
        with self.cond:
            return [b for s, b, t in self.msgs if s == subject and t >= t0]

    def wait_for(self, pred, timeout=5.0, t0=0.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for s, b, t in self.msgs:
                    if t >= t0 and pred(s, b):
                        return b
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching NATS message within %.1f s; last: %r"
                                         % (timeout, [(s, b) for s, b, _ in self.msgs[-8:]]))
                self.cond.wait(left)



# ---- apimd --profile gateway ----------------------------------------------

def module_path():
    """The module apimd finds by itself (next to it), else APIM_NGINX_MODULE."""
    here = os.path.join(os.path.dirname(os.path.abspath(apimtest.apimd_path())),
                        "ngx_http_apim_module.so")
    if os.path.exists(here):
        return here
    env = os.environ.get("APIM_NGINX_MODULE", "")
    return env if env and os.path.exists(env) else None


def skip_without_gateway():
    if not os.path.exists(NGINX):
        raise unittest.SkipTest("nginx not installed")
    if module_path() is None:
        raise unittest.SkipTest("ngx_http_apim_module.so not built")


def gateway_offset():
    """A port offset with both 9443+off and 8280+off free."""
    for _ in range(50):
        off = apimtest.free_port_offset()
        if apimtest.port_is_free(GW_HTTP + off):
            return off
    raise RuntimeError("no free gateway port")


class GatewayProc:
    """apimd --profile gateway in a fresh home."""

    def __init__(self, extra=None):
        self.dir = tempfile.mkdtemp(prefix="apimtest-gw-")
        self.home = os.path.join(self.dir, "home")
        self.off = gateway_offset()
        self.port = GW_HTTP + self.off
        conf = {"server": {"home": self.home, "host": "127.0.0.1",
                           "port_offset": self.off},
                "log": {"format": "text"},
                # a control plane nobody answers on
                "gateway": {"control_plane_url": "http://127.0.0.1:%d"
                                                 % apimtest.unused_port(),
                            "credential": "gw-profile-test-credential"}}
        self.conf = apimtest.merge_conf(conf, extra or {})
        self.conf_path = apimtest.write_conf(os.path.join(self.dir, "apim.conf"), self.conf)
        self.out = os.path.join(self.dir, "stdout")
        self.err = os.path.join(self.dir, "stderr")
        self.proc = None

    def start(self):
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                [apimtest.apimd_path(), "--profile", "gateway", "--config", self.conf_path],
                env=apimtest.clean_env(), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=o, stderr=e, preexec_fn=apimtest._child_setup)
        # ready: apimd printed its banner (after nginx listens)
        if not wait_for(lambda: self.proc.poll() is not None or
                        "ready in" in self.stdout(), 20):
            raise AssertionError("gateway did not listen: %s" % self.stderr())
        if self.proc.poll() is not None:
            raise AssertionError("apimd exited %d: %s" % (self.proc.returncode, self.stderr()))
        return self

    def stdout(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def nginx_pid(self):
        path = os.path.join(self.home, "gateway", "nginx.pid")
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def worker_pids(self, master):
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    fields = f.read().split(")")[-1].split()
                if int(fields[1]) == master and fields[0] != "Z":
                    out.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
        return sorted(out)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pid = self.nginx_pid()
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        apimtest.assert_no_sanitizer_report(self.stderr() if os.path.exists(self.err) else "")
        shutil.rmtree(self.dir, ignore_errors=True)


class HeaderEcho(http.server.BaseHTTPRequestHandler):
    """GET only: echoes the path and the forwarding headers it got."""
    def do_GET(self):
        out = json.dumps({"path": self.path,
                          "backend": getattr(self.server, "label", ""),
                          "authorization": self.headers.get("Authorization"),
                          "host": self.headers.get("Host"),
                          "x-forwarded-for": self.headers.get("X-Forwarded-For"),
                          "x-forwarded-proto": self.headers.get("X-Forwarded-Proto")}
                         ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class AllInOne:
    """A mixin for unittest.TestCase classes: apimd (all-in-one profile, the
    gateway on GW_HTTP + offset, cls.gw_port) shared by the class; APIs
    deployed, published, subscribed and a token, in one call.  srv_conf:
    apimd's conf over the harness defaults."""

    srv_conf = None

    @classmethod
    def setUpClass(cls):
        skip_without_gateway()
        cls.srv = apimtest.ApimServer(conf=cls.srv_conf)
        cls.srv.prepare()
        # the harness checks 9443+offset only: make sure 8280+offset is free too
        off = gateway_offset()
        cls.srv._write_conf(off)
        cls.srv.start()
        cls.gw_port = GW_HTTP + off

    @classmethod
    def tearDownClass(cls):
        srv = getattr(cls, "srv", None)
        if srv is not None:
            srv.stop()

    def start_backend(self, label="be"):
        backend = start_backend(label, HeaderEcho)
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        return backend

    def deploy_subscribe_token(self, endpoint_config, prefix):
        """An API with endpoint_config, deployed, published, subscribed:
        (its name, an access token)."""
        c = self.srv.client()
        name = pt.uniq(prefix)
        api = pt.create_api(self, c, name=name, policies=["Unlimited"],
                            endpointConfig=endpoint_config)
        r = c.post(pt.APIS + "/%s/revisions" % api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        r = c.post(pt.APIS + "/%s/deploy-revision" % api["id"],
                   query={"revisionId": r.json["id"]}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)
        r = c.post(pt.PUB + "/apis/change-lifecycle",
                   query={"apiId": api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        r = c.post(DP + "/applications", json={"name": pt.uniq("GwApp"),
                                               "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app = r.json
        r = c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                "apiId": api["id"],
                                                "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        r = c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        keys = r.json
        r = self.srv.client(None).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        return name, r.json["access_token"]


# ---- feed mode ------------------------------------------------------------

class FeedNginx:
    """nginx with the module in feed mode (following a control plane and
    its event hub), in its own temp folder."""

    def __init__(self, cp_url, hub_url, cred):
        self.tmp = tempfile.mkdtemp(prefix="apim-gwfeed-")
        self.port = apimtest.unused_port()
        self.cp_url = cp_url
        self.hub_url = hub_url
        self.cred = cred
        self.proc = None

    @property
    def cache(self):
        return os.path.join(self.tmp, "cache", "snapshot.json")

    def start(self):
        os.makedirs(os.path.join(self.tmp, "cache"), exist_ok=True)
        self.proc = start_nginx(self.tmp, self.port, nginx_conf(self.tmp, """
    apim_control_plane_url %(cp)s;
    apim_gateway_credential %(cred)s;
    apim_gateway_label Default;
    apim_event_hub_url %(hub)s;
    apim_cache_file %(cache)s;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            apim_gateway on;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
    }""" % {"port": self.port, "cp": self.cp_url, "cred": self.cred, "hub": self.hub_url,
           "cache": self.cache}, workers=2, module=os.path.abspath(MODULE)), append=True)
        return self

    def stop(self):
        """Graceful stop (SIGQUIT); returns nginx's exit status."""
        rc = stop_nginx(self.proc)
        self.proc = None
        return rc

    def log(self, name="error.log"):
        return read_log(self.tmp, name)

    def call(self, path, token=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        try:
            conn.request("GET", path, headers=headers)
            res = conn.getresponse()
            body = res.read()
        finally:
            conn.close()
        code = None
        if res.status != 200:
            try:
                code = json.loads(body)["code"]
            except (ValueError, KeyError, TypeError):
                code = None
        return res.status, code, body


# ---- control plane, Traffic Manager -----------------------------------------

def deploy_publish(c, api_id):
    """A revision of the API, deployed on Default, and the API published."""
    r = c.post(pt.APIS + "/%s/revisions" % api_id, json={"description": "r1"})
    assert r.status == 201, r.text
    r = c.post(pt.APIS + "/%s/deploy-revision" % api_id,
               query={"revisionId": r.json["id"]}, json=DEFAULT_ENV)
    assert r.status == 201, r.text
    r = c.post(pt.PUB + "/apis/change-lifecycle",
               query={"apiId": api_id, "action": "Publish"})
    assert r.status == 200, r.text


def subscribed_app(cp, c, api_id, tier, prefix="ThrApp", app_tier="Unlimited"):
    """A new application (on app_tier) of c's user subscribed to api_id (or
    each of a list of ids) on tier, with production keys: (its id, an access
    token from cp)."""
    r = c.post(DP + "/applications", json={"name": pt.uniq(prefix),
                                           "throttlingPolicy": app_tier})
    assert r.status == 201, r.text
    app = r.json
    for one in [api_id] if isinstance(api_id, str) else api_id:
        r = c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                "apiId": one,
                                                "throttlingPolicy": tier})
        assert r.status == 201, r.text
    r = c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
        "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
        "callbackUrl": "", "scopes": [], "validityTime": 3600})
    assert r.status == 200, r.text
    keys = r.json
    r = cp.client(None).post(
        "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
        headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
    assert r.status == 200, r.text
    return app["applicationId"], r.json["access_token"]


def start_tm(nats_url, cp_url, cred):
    """apimd --profile traffic-manager on the hub, once it loaded the
    control plane's rate-limit policies."""
    tm = apimtest.ApimServer(profile="traffic-manager", conf={
        "event_hub": {"url": nats_url},
        "gateway": {"control_plane_url": cp_url, "credential": cred}})
    tm.start(wait=False)
    ok = wait_for(lambda: "rate-limit policies (" in tm.stderr_this_run() or
                  not tm.running(), 20)
    assert ok and tm.running(), tm.stderr_tail()
    return tm


def avoid_window_end():
    """Hour windows: no test straddles two."""
    if time.time() % 3600 > 3600 - 150:
        time.sleep(3600 - time.time() % 3600 + 1)


def window_start(ms=None):
    ms = int(time.time() * 1000) if ms is None else ms
    return ms - ms % HOUR_MS


def policy(level, name, count, unit="hour", **extra):
    """A rate-limit policy as the snapshot carries it."""
    doc = {"policyName": name, "defaultLimit": {
        "type": "REQUESTCOUNTLIMIT",
        "requestCount": {"requestCount": count, "timeUnit": unit, "unitTime": 1}}}
    doc.update(extra)
    return {"id": "pol-" + name, "level": level, "name": name, "doc": doc}
