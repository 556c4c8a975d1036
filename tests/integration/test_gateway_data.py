"""The gateway's data path: deltas, resyncs and the cache journal.

nginx with ngx_http_apim_module follows a control plane with a large-ish
data set (2,000 subscriptions, 1,000 applications with 2 keys each). The
control plane here is a small Python server speaking the internal data API
(/snapshot, /sequence, /changes, the same shapes apimd serves) so that the
tests can do what apimd would only do in a disaster: lose a NATS message,
go back in its sequence (database restored), purge its change log. A real
nats-server carries the events. The tests assert what a caller sees
(status, fault code, the backend's answer) and which fetches the gateway
made (deltas, not full snapshots, for ordinary changes).

The last class talks to a real apimd: /internal/data/v1/changes answers
what changed since a sequence number.

Needs APIM_NGINX_MODULE, /usr/sbin/nginx and nats-server; skipped otherwise.
"""

import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

import apimtest
import gwtest

MODULE = os.environ.get("APIM_NGINX_MODULE", "")
if MODULE and not os.path.isabs(MODULE) and not os.path.exists(MODULE):
    MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", MODULE)
NGINX = os.environ.get("APIM_NGINX", "/usr/sbin/nginx")
HAVE_ALL = (bool(MODULE) and os.path.exists(MODULE) and os.path.exists(NGINX)
            and shutil.which("nats-server") is not None)

CRED = "gw-data-credential"
ISSUER = gwtest.ISSUER


# -- data ---------------------------------------------------------------------

def uid(kind, i):
    """A stable UUID-looking id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "%s/%d" % (kind, i)))


def make_api(i, backend_url):
    """An API document with realistic field sizes (5 operations)."""
    ops = []
    for j, (verb, target) in enumerate([("GET", "/items"), ("POST", "/items"),
                                        ("GET", "/items/{itemId}"),
                                        ("PUT", "/items/{itemId}"),
                                        ("DELETE", "/items/{itemId}")]):
        ops.append({"id": "", "target": target, "verb": verb,
                    "authType": "Application & Application User",
                    "throttlingPolicy": "Unlimited",
                    "scopes": ["items:write"] if verb == "DELETE" else [],
                    "usedProductIds": [], "amznResourceName": None,
                    "operationPolicies": {"request": [], "response": [], "fault": []}})
    return {
        "id": uid("api", i), "name": "InventoryService%05d" % i,
        "description": "Inventory of the warehouse number %d: items, stock levels and "
                       "reservations, for the ordering and shipping teams." % i,
        "context": "/inventory%05d" % i, "version": "1.0.0", "provider": "admin",
        "lifeCycleStatus": "PUBLISHED", "isDefaultVersion": True, "type": "HTTP",
        "transport": ["http", "https"], "tags": ["inventory", "warehouse"],
        "policies": ["Unlimited", "Gold"], "apiThrottlingPolicy": None,
        "visibility": "PUBLIC", "gatewayVendor": "wso2",
        "endpointConfig": {"endpoint_type": "http",
                           "production_endpoints": {"url": backend_url + "/prod/%d" % i},
                           "sandbox_endpoints": {"url": backend_url + "/sand/%d" % i}},
        "corsConfiguration": {"corsConfigurationEnabled": False,
                              "accessControlAllowOrigins": ["*"],
                              "accessControlAllowCredentials": False,
                              "accessControlAllowHeaders": ["authorization", "Content-Type"],
                              "accessControlAllowMethods": ["GET", "PUT", "POST", "DELETE"]},
        "businessInformation": {"businessOwner": "Team %d" % (i % 50),
                                "businessOwnerEmail": "team%d@example.com" % (i % 50)},
        "operations": ops, "revisionId": uid("rev", i), "revisionNumber": 1,
        "vhost": "localhost", "deployedTime": 1764000000000, "gatewayLabel": "Default",
    }


def make_app(i):
    return {"id": uid("app", i), "name": "Application%06d" % i, "owner": "user%05d" % (i % 5000),
            "tier": "Unlimited", "status": "APPROVED", "tokenType": "JWT"}


def make_keys(i):
    return [{"applicationId": uid("app", i), "consumerKey": "ck%06dPROD%s" % (i, "x" * 14),
             "keyType": "PRODUCTION", "keyManager": "Resident Key Manager",
             "state": "COMPLETED"},
            {"applicationId": uid("app", i), "consumerKey": "ck%06dSAND%s" % (i, "x" * 14),
             "keyType": "SANDBOX", "keyManager": "Resident Key Manager",
             "state": "COMPLETED"}]


def make_sub(app, api, status="UNBLOCKED"):
    return {"id": uid("sub", app * 1000003 + api), "apiId": uid("api", api),
            "applicationId": uid("app", app), "tier": "Gold", "status": status}


class Data:
    """The control plane's state: entities by key, the change log, seq."""

    def __init__(self, napis, napps, nsubs, backend_url, jwk):
        self.seq = 1
        self.apis = {uid("api", i): make_api(i, backend_url) for i in range(napis)}
        self.apps = {}
        self.keys = {}
        for i in range(napps):
            self.apps[uid("app", i)] = make_app(i)
            for k in make_keys(i):
                self.keys[k["consumerKey"]] = k
        self.subs = {}
        for n in range(nsubs):
            s = make_sub(n % napps, (n // napps + n) % napis)
            self.subs[(s["applicationId"], s["apiId"])] = s
        self.revoked = {}
        self.kms = [{"name": "Resident Key Manager", "type": "default", "issuer": ISSUER,
                     "jwks": {"keys": [jwk]}}]
        self.log = []          # (seq, type, key)
        self.purged_upto = 0   # log rows <= this are gone

    def snapshot(self, label="Default"):
        return {"seq": self.seq, "gatewayLabel": label,
                "apis": list(self.apis.values()),
                "applications": list(self.apps.values()),
                "keyMappings": list(self.keys.values()),
                "subscriptions": list(self.subs.values()),
                "policies": [], "blockConditions": [],
                "revokedJwts": list(self.revoked.values()),
                "keyManagers": self.kms}

    def change(self, kind, key, value):
        """Sets (or deletes, value None) one entity; returns the new seq."""
        table = {"api": self.apis, "application": self.apps, "key_mapping": self.keys,
                 "subscription": self.subs, "revoked_jwt": self.revoked}.get(kind)
        if table is not None:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        self.seq += 1
        self.log.append((self.seq, kind, key))
        return self.seq

    def changes(self, since):
        """What apimd's /changes answers."""
        out = {"seq": self.seq, "since": since}
        if since > self.seq:
            return dict(out, full=True, reason="ahead")
        if since < self.purged_upto:
            return dict(out, full=True, reason="purged")
        rows = [r for r in self.log if r[0] > since]
        if any(kind not in ("api", "application", "key_mapping", "subscription",
                            "revoked_jwt") for _, kind, _ in rows):
            return dict(out, full=True, reason="kind")
        for name in ("apis", "deletedApis", "applications", "deletedApplications",
                     "keyMappings", "deletedKeyMappings", "subscriptions",
                     "deletedSubscriptions", "revokedJwts"):
            out[name] = []
        seen = set()
        for _, kind, key in rows:
            if (kind, key) in seen:
                continue
            seen.add((kind, key))
            if kind == "api":
                if key in self.apis:
                    out["apis"].append(self.apis[key])
                else:
                    out["deletedApis"].append(key)
            elif kind == "application":
                if key in self.apps:
                    out["applications"].append(self.apps[key])
                else:
                    out["deletedApplications"].append(key)
            elif kind == "key_mapping":
                if key in self.keys:
                    out["keyMappings"].append(self.keys[key])
                else:
                    out["deletedKeyMappings"].append(key)
            elif kind == "subscription":
                if key in self.subs:
                    out["subscriptions"].append(self.subs[key])
                else:
                    out["deletedSubscriptions"].append({"applicationId": key[0],
                                                        "apiId": key[1]})
            elif kind == "revoked_jwt" and key in self.revoked:
                out["revokedJwts"].append(self.revoked[key])
        return out


class FakeControlPlane:
    """The internal data API over a Data, counting what the gateways fetch."""

    def __init__(self, data):
        self.data = data
        self.lock = threading.Lock()
        self.fetches = {"snapshot": 0, "changes": 0, "sequence": 0}
        self.down = False
        self._cache = (None, None)
        cp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # headers and body are two writes: no Nagle delay between
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                name = url.path.rsplit("/", 1)[-1]
                if (cp.down or self.headers.get("X-APIM-Gateway-Credential") != CRED
                        or name not in cp.fetches):
                    self._send(503 if cp.down else 404, b"{}")
                    return
                with cp.lock:
                    cp.fetches[name] += 1
                    if name == "snapshot":
                        body = cp._snapshot_text()
                    elif name == "sequence":
                        body = json.dumps({"seq": cp.data.seq}).encode()
                    else:
                        body = json.dumps(cp.data.changes(int(q["since"]))).encode()
                self._send(200, body)

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def _snapshot_text(self):
        if self._cache[0] != (id(self.data), self.data.seq):
            self._cache = ((id(self.data), self.data.seq),
                           json.dumps(self.data.snapshot()).encode())
        return self._cache[1]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.srv.server_port

    def count(self, name):
        with self.lock:
            return self.fetches[name]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def nats_publish(url, subject, body):
    """Publishes one message with the NATS text protocol and waits for the
    server to have it (PING/PONG)."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                  + b"PUB %s %d\r\n" % (subject.encode(), len(payload)) + payload
                  + b"\r\nPING\r\n")
        while True:
            line = f.readline()
            if not line or line.startswith(b"PONG"):
                break


def sign(key_path, client, jti, kid):
    """An RS256 JWT of our Key Manager for client."""
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    claims = {"iss": ISSUER, "sub": "alice", "aud": client, "azp": client,
              "client_id": client, "scope": "default", "iat": now, "exp": now + 3600,
              "jti": jti}
    signing_input = (gwtest.b64url(json.dumps(header).encode()) + "."
                     + gwtest.b64url(json.dumps(claims).encode()))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path],
                         input=signing_input.encode(), check=True,
                         capture_output=True).stdout
    return signing_input + "." + gwtest.b64url(sig)


class Gateway:
    """nginx with the module following a control plane (feed mode), or a
    snapshot file (file mode, cp_url None)."""

    def __init__(self, cp_url=None, hub_url=None, snapshot_file=None, workers=1,
                 tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="apim-gwdata-")
        os.chmod(self.tmp, 0o755)
        self.port = apimtest.unused_port()
        self.cp_url, self.hub_url = cp_url, hub_url
        self.snapshot_file = snapshot_file
        self.workers = workers
        self.proc = None

    @property
    def cache(self):
        return os.path.join(self.tmp, "cache", "snapshot.json")

    def start(self, wait_listen=True):
        os.makedirs(os.path.join(self.tmp, "cache"), exist_ok=True)
        if self.cp_url:
            data = ("apim_control_plane_url %s;\n    apim_gateway_credential %s;\n"
                    "    apim_gateway_label Default;\n    apim_cache_file %s;\n"
                    % (self.cp_url, CRED, self.cache))
            if self.hub_url:
                data += "    apim_event_hub_url %s;\n" % self.hub_url
        else:
            data = "apim_snapshot_file %s;\n" % self.snapshot_file
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
load_module %(module)s;
user root;
daemon off;
master_process on;
worker_processes %(workers)d;
error_log %(dir)s/error.log notice;
pid %(dir)s/nginx.pid;
events { worker_connections 256; }
http {
    %(data)s
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            apim_gateway on;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
    }
}
""" % {"module": os.path.abspath(MODULE), "dir": self.tmp, "port": self.port,
       "data": data, "workers": self.workers})
        with open(os.path.join(self.tmp, "stderr.log"), "a") as err:
            self.proc = subprocess.Popen([NGINX, "-c", conf, "-p", self.tmp + "/"],
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=apimtest._child_setup)
        deadline = time.time() + 60
        while wait_listen and time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: %s" % self.log("stderr.log"))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        if wait_listen:
            raise RuntimeError("nginx did not listen")
        return self

    def workers_pids(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self, name="error.log"):
        try:
            with open(os.path.join(self.tmp, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def call(self, path, token=None):
        """(status, fault code or None, body bytes)."""
        c = socket.create_connection(("127.0.0.1", self.port), 10)
        c.close()
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            h = {"Authorization": "Bearer " + token} if token else {}
            conn.request("GET", path, headers=h)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        code = None
        try:
            code = str(json.loads(body).get("code"))
        except (ValueError, AttributeError):
            pass
        return r.status, code, body


# -- tests against the fake control plane -------------------------------------

NAPIS, NAPPS, NSUBS = 20, 1000, 2000


@unittest.skipUnless(HAVE_ALL, "needs the module, nginx and nats-server")
class GatewayDeltaTest(unittest.TestCase):
    """Ordinary changes arrive as deltas; gaps, a sequence going back and a
    purged log are recovered; the cache journal survives a restart."""

    @classmethod
    def setUpClass(cls):
        import test_events as te
        cls.tmp = tempfile.mkdtemp(prefix="apim-gwdata-")
        cls.backend = gwtest.start_backend("production")
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        cls.data = Data(NAPIS, NAPPS, NSUBS,
                        "http://127.0.0.1:%d" % cls.backend.server_port, cls.jwk)
        cls.cp = FakeControlPlane(cls.data)
        cls.nats = te.NatsServer().start()
        cls.gw = Gateway(cls.cp.url, cls.nats.url).start()
        cls.wait_log("snapshot seq %d " % cls.data.seq)
        time.sleep(0.3)  # the NATS subscription

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.nats.stop()
        cls.cp.stop()
        cls.backend.shutdown()
        shutil.rmtree(cls.gw.tmp, ignore_errors=True)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def wait_log(cls, text, timeout=20, since=0):
        """Waits for text in the gateway's log (after offset since)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in cls.gw.log()[since:]:
                return
            time.sleep(0.05)
        raise AssertionError("no %r in the gateway log:\n%s\n--- stderr ---\n%s"
                             % (text, cls.gw.log()[-3000:], cls.gw.log("stderr.log")[-1000:]))

    def publish(self, kind, seq):
        subject = {"revoked_jwt": "apim.revoke"}.get(kind, "apim.notify." + kind)
        nats_publish(self.nats.url, subject, {"seq": seq, "type": kind, "id": "x",
                                              "action": "update", "payload": None,
                                              "ts": int(time.time() * 1000)})

    def change(self, kind, key, value, publish=True):
        with self.cp.lock:
            seq = self.data.change(kind, key, value)
        if publish:
            self.publish(kind, seq)
        return seq

    def token(self, app, sandbox=False, jti=None):
        ck = make_keys(app)[1 if sandbox else 0]["consumerKey"]
        return sign(self.key, ck, jti or "jti-%s" % uuid.uuid4(), self.jwk["kid"])

    def wait_status(self, path, token, status, code=None, timeout=5):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            got = self.gw.call(path, token)
            if got[0] == status and (code is None or got[1] == code):
                return got
            time.sleep(0.02)
        self.fail("%s: wanted %s %s, last got %s %s %r\n%s" % (
            path, status, code, got[0], got[1], got[2][:300], self.gw.log()[-2000:]))

    def path(self, api):
        return "/inventory%05d/1.0.0/items" % api

    def test_1_loaded_data_is_served(self):
        # app 7 is subscribed to API 7 (n=7) and API 8 (n=1007)
        tok = self.token(7)
        status, _, body = self.gw.call(self.path(7), tok)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["path"], "/prod/7/items")
        self.assertEqual(self.gw.call(self.path(8), tok)[0], 200)
        self.assertEqual(self.gw.call(self.path(9), tok)[1], "900908")
        self.assertEqual(self.gw.call("/inventory%05d/1.0.0/items" % 7,
                                      self.token(7, sandbox=True))[0], 200)

    def test_2_subscribe_unsubscribe_as_deltas(self):
        snaps = self.cp.count("snapshot")
        tok = self.token(11)
        self.assertEqual(self.gw.call(self.path(3), tok)[1], "900908")
        s = make_sub(11, 3)
        self.change("subscription", (s["applicationId"], s["apiId"]), s)
        self.wait_status(self.path(3), tok, 200)
        self.change("subscription", (s["applicationId"], s["apiId"]), None)
        self.wait_status(self.path(3), tok, 403, "900908")
        # the other subscriptions of the application still work
        self.assertEqual(self.gw.call(self.path(11), tok)[0], 200)
        self.assertEqual(self.cp.count("snapshot"), snaps, "a full snapshot was fetched")
        self.assertIn("delta seq", self.gw.log())

    def test_3_block_and_revoke_as_deltas(self):
        snaps = self.cp.count("snapshot")
        tok = self.token(12)
        self.assertEqual(self.gw.call(self.path(12), tok)[0], 200)
        s = make_sub(12, 12, status="BLOCKED")
        self.change("subscription", (s["applicationId"], s["apiId"]), s)
        self.wait_status(self.path(12), tok, 401, "900907")
        s = make_sub(12, 12)
        self.change("subscription", (s["applicationId"], s["apiId"]), s)
        self.wait_status(self.path(12), tok, 200)
        jti = "revoked-%s" % uuid.uuid4()
        tok = self.token(12, jti=jti)
        self.assertEqual(self.gw.call(self.path(12), tok)[0], 200)
        self.change("revoked_jwt", jti, {"jti": jti, "expiry": int(time.time()) + 3600})
        self.wait_status(self.path(12), tok, 401, "900901")
        self.assertEqual(self.cp.count("snapshot"), snaps)

    def test_4_undeploy_and_redeploy_api_as_deltas(self):
        snaps = self.cp.count("snapshot")
        tok = self.token(13)
        self.assertEqual(self.gw.call(self.path(13), tok)[0], 200)
        api = self.data.apis[uid("api", 13)]
        self.assertEqual(self.gw.call("/inventory%05d/items" % 13, tok)[0], 200)
        self.change("api", api["id"], None)
        self.wait_status(self.path(13), tok, 403, "900906")
        # the default version's unversioned context went with it
        self.assertEqual(self.gw.call("/inventory%05d/items" % 13, tok)[1], "900906")
        # the subscription on another API is untouched
        self.assertEqual(self.gw.call(self.path(14), tok)[0], 200)
        moved = dict(api, endpointConfig={
            "endpoint_type": "http",
            "production_endpoints": {"url": "http://127.0.0.1:%d/moved"
                                     % self.backend.server_port}})
        self.change("api", api["id"], moved)
        _, _, body = self.wait_status(self.path(13), tok, 200)
        self.assertEqual(json.loads(body)["path"], "/moved/items")
        self.assertEqual(self.cp.count("snapshot"), snaps)

    def test_5_new_application_and_keys_as_deltas(self):
        snaps = self.cp.count("snapshot")
        n = NAPPS + 5
        tok = self.token(n)
        # an unknown consumer key
        self.assertIn(self.gw.call(self.path(1), tok)[1], ("900901", "900908"))
        app = make_app(n)
        self.change("application", app["id"], app)
        for k in make_keys(n):
            self.change("key_mapping", k["consumerKey"], k)
        s = make_sub(n, 1)
        self.change("subscription", (s["applicationId"], s["apiId"]), s)
        self.wait_status(self.path(1), tok, 200)
        # application deleted: its keys go with it
        self.change("application", app["id"], None)
        deadline = time.time() + 5
        while self.gw.call(self.path(1), tok)[0] == 200 and time.time() < deadline:
            time.sleep(0.02)
        self.assertIn(self.gw.call(self.path(1), tok)[1], ("900901", "900908"))
        self.assertEqual(self.cp.count("snapshot"), snaps)

    def test_6_lost_message_gap_is_recovered(self):
        snaps = self.cp.count("snapshot")
        tok = self.token(15)
        a, b = make_sub(15, 2), make_sub(15, 4)
        # the event of the first change is lost
        self.change("subscription", (a["applicationId"], a["apiId"]), a, publish=False)
        time.sleep(0.3)
        self.assertEqual(self.gw.call(self.path(2), tok)[1], "900908")
        self.change("subscription", (b["applicationId"], b["apiId"]), b)
        self.wait_status(self.path(4), tok, 200, timeout=2)
        self.assertEqual(self.gw.call(self.path(2), tok)[0], 200)
        self.assertEqual(self.cp.count("snapshot"), snaps)

    def test_7_sequence_going_back_causes_full_resync(self):
        snaps = self.cp.count("snapshot")
        tok = self.token(16)
        self.assertEqual(self.gw.call(self.path(16), tok)[0], 200)
        # the database is restored from an older backup: lower seq, and the
        # subscription of app 16 to API 16 is not in it
        old = Data(NAPIS, NAPPS, NSUBS, "http://127.0.0.1:%d" % self.backend.server_port,
                   self.jwk)
        s = make_sub(16, 16)
        old.subs.pop((s["applicationId"], s["apiId"]))
        old.seq = 2
        with self.cp.lock:
            saved = self.cp.data
            self.cp.data = old
        try:
            # its next event (or the sequence poll) has a lower seq than ours
            self.publish("heartbeat", 2)
            self.wait_status(self.path(16), tok, 403, "900908", timeout=15)
            self.assertGreater(self.cp.count("snapshot"), snaps)
            self.assertIn("went back", self.gw.log())
            # and it follows the restored database's changes from there
            s2 = make_sub(16, 5)
            with self.cp.lock:
                seq = old.change("subscription", (s2["applicationId"], s2["apiId"]), s2)
            self.publish("subscription", seq)
            self.wait_status(self.path(5), tok, 200)
        finally:
            with self.cp.lock:
                # back to the newer history: it is ahead of the restored one
                saved.seq = max(saved.seq, old.seq) + 1
                saved.purged_upto = saved.seq
                self.cp.data = saved
            self.publish("heartbeat", saved.seq)
            self.wait_status(self.path(16), tok, 200, timeout=15)

    def test_8_purged_log_or_unknown_change_takes_a_full_snapshot(self):
        snaps = self.cp.count("snapshot")
        with self.cp.lock:
            seq = self.data.change("policy", "p1", None)
        self.publish("policy", seq)
        self.wait_log("no delta from seq %d to %d (kind)" % (seq - 1, seq))
        deadline = time.time() + 5
        while self.cp.count("snapshot") == snaps and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.cp.count("snapshot"), snaps + 1)

    def test_9_cache_and_journal_serve_with_control_plane_down(self):
        tok = self.token(17)
        s = make_sub(17, 6)
        self.change("subscription", (s["applicationId"], s["apiId"]), s)
        self.wait_status(self.path(6), tok, 200)
        self.gw.stop()
        mark = len(self.gw.log())
        self.cp.down = True
        try:
            self.gw.start()
            self.wait_log("journaled deltas applied", since=mark)
            self.wait_status(self.path(6), tok, 200, timeout=10)
            self.assertEqual(self.gw.call(self.path(17), tok)[0], 200)
        finally:
            self.cp.down = False
        self.wait_log("answers again; full resync", timeout=30, since=mark)


# -- file mode: a snapshot larger than the parser's window --------------------

@unittest.skipUnless(HAVE_ALL, "needs the module, nginx and nats-server")
class GatewayFileTest(unittest.TestCase):
    """A snapshot file of several MB (the parser reads it through a 1 MB
    window) with one API larger than the window; a half-written file is
    refused and the data before it kept."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apim-gwdata-")
        os.chmod(cls.tmp, 0o755)
        cls.backend = gwtest.start_backend("production")
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        cls.data = Data(3, 3000, 6000, "http://127.0.0.1:%d" % cls.backend.server_port,
                        cls.jwk)
        # API 2 is larger than the window (and than the window doubled)
        cls.data.apis[uid("api", 2)]["description"] = "x" * (2500 * 1024)
        cls.path = os.path.join(cls.tmp, "snapshot.json")
        cls.write(json.dumps(cls.data.snapshot()).encode())
        cls.gw = Gateway(snapshot_file=cls.path).start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.backend.shutdown()
        shutil.rmtree(cls.gw.tmp, ignore_errors=True)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def write(cls, text):
        tmp = cls.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cls.path)

    def token(self, app):
        return sign(self.key, make_keys(app)[0]["consumerKey"], "jti-%s" % uuid.uuid4(),
                    self.jwk["kid"])

    def test_large_file_and_half_written_file(self):
        self.assertGreater(os.path.getsize(self.path), 3 * 1024 * 1024)
        # app 2999 (the last one) is subscribed to API 2 (n=2999) and API 0 (n=5999)
        tok = self.token(2999)
        for api in (0, 2):
            status, _, body = self.gw.call("/inventory%05d/1.0.0/items" % api, tok)
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["path"], "/prod/%d/items" % api)
        self.assertEqual(self.gw.call("/inventory00001/1.0.0/items", tok)[1], "900908")
        # a half-written file: refused, the data before it still served
        text = json.dumps(self.data.snapshot()).encode()
        self.write(text[:len(text) * 3 // 5])
        deadline = time.time() + 5
        while "cannot load snapshot" not in self.gw.log() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("cannot load snapshot", self.gw.log())
        self.assertEqual(self.gw.call("/inventory00002/1.0.0/items", tok)[0], 200)
        # the whole file with one subscription less
        s = make_sub(2999, 2)
        del self.data.subs[(s["applicationId"], s["apiId"])]
        self.write(json.dumps(self.data.snapshot()).encode())
        deadline = time.time() + 5
        while (self.gw.call("/inventory00002/1.0.0/items", tok)[0] == 200
               and time.time() < deadline):
            time.sleep(0.05)
        self.assertEqual(self.gw.call("/inventory00002/1.0.0/items", tok)[1], "900908")
        self.assertEqual(self.gw.call("/inventory00000/1.0.0/items", tok)[0], 200)


# -- the real control plane ---------------------------------------------------

@unittest.skipUnless(HAVE_ALL, "needs the module, nginx and nats-server")
class ChangesEndpointTest(unittest.TestCase):
    """apimd's GET /internal/data/v1/changes."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.ApimServer(conf={"gateway": {"credential": CRED}})
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def get(self, path, cred=CRED):
        c = self.srv.client(None)
        return c.get(path, headers={"X-APIM-Gateway-Credential": cred} if cred else {})

    def test_changes_since(self):
        seq = self.get("/internal/data/v1/sequence").json["seq"]
        r = self.get("/internal/data/v1/changes?since=%d" % seq)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json["seq"], seq)
        self.assertEqual(r.json["applications"], [])
        self.assertNotIn("full", r.json)
        admin = self.srv.client()
        a = admin.post("/api/am/devportal/v3/applications",
                       json={"name": "DeltaApp", "throttlingPolicy": "Unlimited"})
        self.assertIn(a.status, (200, 201), a.text)
        app_id = a.json["applicationId"]
        r = self.get("/internal/data/v1/changes?since=%d" % seq)
        self.assertGreater(r.json["seq"], seq)
        self.assertEqual([x["id"] for x in r.json["applications"]], [app_id])
        self.assertEqual(r.json["applications"][0]["name"], "DeltaApp")
        d = admin.delete("/api/am/devportal/v3/applications/" + app_id)
        self.assertIn(d.status, (200, 204), d.text)
        r = self.get("/internal/data/v1/changes?since=%d" % seq)
        self.assertEqual(r.json["applications"], [])
        self.assertEqual(r.json["deletedApplications"], [app_id])

    def test_ahead_bad_and_unauthorized(self):
        seq = self.get("/internal/data/v1/sequence").json["seq"]
        r = self.get("/internal/data/v1/changes?since=%d" % (seq + 100))
        self.assertEqual(r.status, 200)
        self.assertTrue(r.json["full"])
        self.assertEqual(r.json["seq"], seq)
        self.assertEqual(self.get("/internal/data/v1/changes?since=abc").status, 400)
        self.assertEqual(self.get("/internal/data/v1/changes").status, 400)
        self.assertEqual(self.get("/internal/data/v1/changes?since=0", cred="nope").status,
                         401)


if __name__ == "__main__":
    unittest.main()
