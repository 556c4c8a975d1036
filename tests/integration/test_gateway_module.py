"""The gateway's nginx module (ngx_http_apim_module.so) on Debian's nginx:
routing, JWT checks, subscriptions, scopes, fault bodies and hot reload of
the snapshot file, with a real nginx and a small backend started here.

Needs APIM_NGINX_MODULE (set by CMake's integration test definition) and
/usr/sbin/nginx; skipped otherwise. Does not use apimd: the snapshot file
has the shape the control plane's internal data API will serve.
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

MODULE = os.environ.get("APIM_NGINX_MODULE", "")
NGINX = os.environ.get("APIM_NGINX", "/usr/sbin/nginx")

ISSUER = "https://127.0.0.1:9443/oauth2/token"
KID = "gw-test-key"
PROD_KEY = "prodConsumerKey0001"
SAND_KEY = "sandConsumerKey0001"
OTHER_KEY = "otherConsumerKey001"
API_ID = "11111111-aaaa-4aaa-8aaa-000000000001"
API2_ID = "11111111-aaaa-4aaa-8aaa-000000000002"
BLOCKED_API_ID = "11111111-aaaa-4aaa-8aaa-000000000003"
APP_ID = "22222222-bbbb-4bbb-8bbb-000000000001"
APP2_ID = "22222222-bbbb-4bbb-8bbb-000000000002"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    """Echoes what it got as JSON."""
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


def start_backend(label):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.label = label
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


def rsa_jwk(tmp):
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
    return key, {"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
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


class GatewayModuleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not MODULE or not os.path.exists(MODULE):
            raise unittest.SkipTest("APIM_NGINX_MODULE not built")
        if not os.path.exists(NGINX):
            raise unittest.SkipTest("nginx not installed")
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-")
        os.chmod(cls.tmp, 0o755)
        cls.prod = start_backend("production")
        cls.sand = start_backend("sandbox")
        cls.key, cls.jwk = rsa_jwk(cls.tmp)
        cls.ec_key, cls.ec_jwk = ec_jwk(cls.tmp, "gw-test-ec-key")
        cls.snapshot_path = os.path.join(cls.tmp, "snapshot.json")
        cls.snapshot = cls.base_snapshot()
        cls.write_snapshot(cls.snapshot)
        cls.port = free_port()
        cls.start_nginx()

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            cls.nginx.send_signal(signal.SIGQUIT)
            try:
                cls.nginx.wait(10)
            except subprocess.TimeoutExpired:
                cls.nginx.kill()
                cls.nginx.wait()
        for b in ("prod", "sand"):
            srv = getattr(cls, b, None)
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- fixtures ------------------------------------------------------------

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

    @classmethod
    def write_snapshot(cls, snap):
        tmp = cls.snapshot_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(snap, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cls.snapshot_path)

    @classmethod
    def start_nginx(cls):
        conf = os.path.join(cls.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
load_module %(module)s;
user root;
daemon off;
master_process on;
worker_processes 1;
error_log %(dir)s/error.log notice;
pid %(dir)s/nginx.pid;
events { worker_connections 256; }
http {
    apim_snapshot_file %(dir)s/snapshot.json;
    access_log %(dir)s/access.log;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            apim_gateway on;
            proxy_set_header X-Apim-Api-Id $apim_api_id;
            proxy_set_header X-Apim-App-Id $apim_app_id;
            proxy_set_header X-Apim-Key-Type $apim_key_type;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
        location /plain/ {
            proxy_pass http://127.0.0.1:%(prod)d/;
        }
    }
}
""" % {"module": MODULE, "dir": cls.tmp, "port": cls.port,
       "prod": cls.prod.server_port})
        with open(os.path.join(cls.tmp, "stderr.log"), "w") as err:
            cls.nginx = subprocess.Popen([NGINX, "-c", conf, "-p", cls.tmp + "/"],
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 10
        while time.time() < deadline:
            if cls.nginx.poll() is not None:
                raise RuntimeError("nginx exited: %s" % cls.read_log("stderr.log")
                                   + cls.read_log("error.log"))
            try:
                socket.create_connection(("127.0.0.1", cls.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen")

    @classmethod
    def read_log(cls, name):
        try:
            with open(os.path.join(cls.tmp, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

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
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                              self.ec_key if ec else self.key],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        if ec:
            sig = der_ecdsa_to_jose(sig)
        if tamper:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        return signing_input + "." + b64url(sig)

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

    def assert_fault(self, res, status, code):
        st, headers, body = res
        self.assertEqual(st, status, body)
        self.assertEqual(headers.get("content-type"), "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["code"], code)
        self.assertTrue(doc["message"])
        self.assertIn("description", doc)
        return doc

    def assert_backend(self, res, label="production"):
        st, _, body = res
        self.assertEqual(st, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["backend"], label)
        return doc

    # -- tests ---------------------------------------------------------------

    def test_valid_token_reaches_backend_without_authorization(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu?size=large",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/menu?size=large")
        self.assertNotIn("authorization", doc["headers"])
        self.assertEqual(doc["headers"]["x-apim-api-id"], API_ID)
        self.assertEqual(doc["headers"]["x-apim-app-id"], APP_ID)
        self.assertEqual(doc["headers"]["x-apim-key-type"], "PRODUCTION")

    def test_post_body_is_proxied(self):
        doc = self.assert_backend(self.call("POST", "/pizzashack/1.0.0/order",
                                            self.token(scope="default order:write"),
                                            headers={"Content-Type": "application/json"},
                                            body=b'{"pizza":"margherita"}'))
        self.assertEqual(doc["method"], "POST")
        self.assertEqual(doc["body"], '{"pizza":"margherita"}')

    def test_sandbox_key_reaches_sandbox_endpoint(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                            self.token(client=SAND_KEY)), "sandbox")
        self.assertEqual(doc["path"], "/pizza-sandbox/menu")
        self.assertEqual(doc["headers"]["x-apim-key-type"], "SANDBOX")

    def test_default_version_on_unversioned_context(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/menu", self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/menu")
        self.assertEqual(doc["headers"]["x-apim-api-id"], API_ID)

    def test_other_version_is_a_different_api(self):
        # version 2.0.0 exists but App1 is not subscribed to it
        self.assert_fault(self.call("GET", "/pizzashack/2.0.0/menu", self.token()),
                          403, "900908")
        # and it has no /order resource
        self.assert_fault(self.call("POST", "/pizzashack/2.0.0/order", self.token()),
                          403, "900906")

    def test_template_with_param(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/order/42",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/order/42")
        # {param} is exactly one segment
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/order/42/extra",
                                    self.token()), 403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/order/", self.token()),
                          403, "900906")

    def test_wildcard_and_longest_match(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/files/a/b.txt",
                                            self.token()))
        self.assertEqual(doc["path"], "/pizza-backend/files/a/b.txt")
        # /files/* needs a token ...
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/files/other"),
                          401, "900902")
        # ... but the more specific /files/special is authType None
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/files/special"))

    def test_verb_mismatch_is_900906(self):
        doc = self.assert_fault(self.call("PUT", "/pizzashack/1.0.0/menu", self.token()),
                                403, "900906")
        self.assertEqual(doc["message"], "No matching resource found for given API Request")

    def test_unknown_api_and_resource(self):
        self.assert_fault(self.call("GET", "/nosuchapi/1.0.0/menu", self.token()),
                          403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/nosuch", self.token()),
                          403, "900906")
        self.assert_fault(self.call("GET", "/pizzashack/9.9.9/menu", self.token()),
                          403, "900906")

    def test_auth_none_passes_without_token(self):
        doc = self.assert_backend(self.call("GET", "/pizzashack/1.0.0/health"))
        self.assertEqual(doc["path"], "/pizza-backend/health")

    def test_missing_credentials_900902(self):
        st, headers, _ = self.call("GET", "/pizzashack/1.0.0/menu")
        self.assert_fault((st, headers, _), 401, "900902")
        self.assertIn("bearer", headers.get("www-authenticate", "").lower())
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    headers={"Authorization": "Basic YWxpY2U6eA=="}),
                          401, "900902")

    def test_invalid_credentials_900901(self):
        cases = {
            "garbage": "not.a.jwt",
            "bad signature": self.token(tamper=True),
            "expired": self.token(exp_in=-120),
            "not yet valid": self.token(nbf_in=600),
            "unknown kid": self.token(kid="other-kid"),
            "wrong issuer": self.token(iss="https://evil.example/token"),
            "revoked jti": self.token(jti="revoked-jti-1"),
        }
        for what, tok in cases.items():
            with self.subTest(what):
                doc = self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok),
                                        401, "900901")
                self.assertEqual(doc["message"], "Invalid Credentials")

    def test_es256_token(self):
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(ec=True)))
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(ec=True, tamper=True)), 401, "900901")
        # an RS256 header on the EC key (algorithm confusion) is refused
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(ec=True, alg="RS256")), 401, "900901")

    def test_leeway_of_30_seconds(self):
        # expired 10 s ago and valid from 10 s on: inside the leeway
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(exp_in=-10, nbf_in=10)))

    def test_api_blocked_700700(self):
        self.assert_fault(self.call("GET", "/old/v1/anything", self.token()),
                          503, "700700")

    def test_not_subscribed_900908(self):
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(client=OTHER_KEY)), 403, "900908")
        # a client id without any key mapping
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(client="unknownClient")), 403, "900908")

    def test_scope_900910(self):
        self.assert_fault(self.call("POST", "/pizzashack/1.0.0/order",
                                    self.token(scope="default")), 403, "900910")
        self.assert_fault(self.call("DELETE", "/pizzashack/1.0.0/order/7",
                                    self.token(scope="order:write")), 403, "900910")
        self.assert_backend(self.call("DELETE", "/pizzashack/1.0.0/order/7",
                                      self.token(scope="order:admin default")))

    def test_api_root_and_host_only_backend(self):
        # endpointConfig given as a JSON string, as the reference stores it
        doc = self.assert_backend(self.call("GET", "/root/v1"))
        self.assertEqual(doc["path"], "/")
        doc = self.assert_backend(self.call("GET", "/root/v1/a/b%20c?q=1"))
        self.assertEqual(doc["path"], "/a/b%20c?q=1")

    def test_keepalive_connection_mixes_faults_and_calls(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            tok = self.token()
            for i in range(3):
                c.request("POST", "/pizzashack/1.0.0/order", body=b"x" * 5000,
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                self.assertEqual(r.status, 403)
                self.assertEqual(json.loads(r.read())["code"], "900910")
                c.request("GET", "/pizzashack/1.0.0/menu",
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                self.assertEqual(r.status, 200)
                self.assertEqual(json.loads(r.read())["path"], "/pizza-backend/menu")
        finally:
            c.close()

    def test_plain_location_is_untouched(self):
        st, _, body = self.call("GET", "/plain/x")
        self.assertEqual(st, 200, body)

    def test_zy_requests_during_many_reloads(self):
        """Swapping the data under traffic never fails a request."""
        stop = threading.Event()

        def rewrite():
            i = 0
            while not stop.is_set():
                snap = json.loads(json.dumps(self.snapshot))
                snap["seq"] = 100 + i
                i += 1
                self.write_snapshot(snap)
                time.sleep(0.03)

        t = threading.Thread(target=rewrite)
        t.start()
        statuses = {}
        try:
            tok = self.token()
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            deadline = time.time() + 1.5
            while time.time() < deadline:
                c.request("GET", "/pizzashack/1.0.0/menu",
                          headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            c.close()
        finally:
            stop.set()
            t.join()
            self.write_snapshot(self.snapshot)
        self.assertEqual(list(statuses), [200], statuses)
        self.assertGreater(statuses[200], 20)
        self.assertNotIn("exited on signal", self.read_log("error.log"))

    def test_zz_reload_snapshot(self):
        """Subscription changes in the file apply within a second, no restart."""
        pid = self.read_log("nginx.pid").strip()
        snap = json.loads(json.dumps(self.snapshot))
        tok2 = self.token(client=OTHER_KEY)
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok2), 403, "900908")

        snap["seq"] = 2
        snap["subscriptions"].append({"id": "s2", "apiId": API_ID,
                                      "applicationId": APP2_ID, "tier": "Gold",
                                      "status": "UNBLOCKED"})
        self.write_snapshot(snap)
        self.assert_backend(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 200))

        # block it: 900907; production-only block: 900907 for production keys
        snap["seq"] = 3
        snap["subscriptions"][-1]["status"] = "BLOCKED"
        snap["subscriptions"][0]["status"] = "PROD_ONLY_BLOCKED"
        self.write_snapshot(snap)
        self.assert_fault(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 401), 401, "900907")
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", self.token()),
                          401, "900907")
        self.assert_backend(self.call("GET", "/pizzashack/1.0.0/menu",
                                      self.token(client=SAND_KEY)), "sandbox")

        # a broken file keeps the last good data
        with open(self.snapshot_path + ".tmp", "w") as f:
            f.write("{not json")
        os.replace(self.snapshot_path + ".tmp", self.snapshot_path)
        time.sleep(0.6)
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu", tok2), 401, "900907")

        self.write_snapshot(self.snapshot)
        self.assert_fault(self.wait_for(lambda: self.call(
            "GET", "/pizzashack/1.0.0/menu", tok2), 403), 403, "900908")
        self.assertEqual(self.read_log("nginx.pid").strip(), pid)
        self.assertNotIn("exited on signal", self.read_log("error.log"))

    def wait_for(self, fn, status, timeout=1.0):
        deadline = time.time() + timeout
        while True:
            res = fn()
            if res[0] == status or time.time() > deadline:
                return res
            time.sleep(0.05)


class GatewayShutdownTest(unittest.TestCase):
    """Runs after GatewayModuleTest in the same module: its own nginx, a few
    requests, then SIGQUIT: no worker may have crashed."""

    def test_clean_shutdown(self):
        if not MODULE or not os.path.exists(MODULE) or not os.path.exists(NGINX):
            self.skipTest("APIM_NGINX_MODULE not built")
        cls = GatewayModuleTest
        try:
            cls.setUpClass()
            t = GatewayModuleTest("test_valid_token_reaches_backend_without_authorization")
            t.test_valid_token_reaches_backend_without_authorization()
            t.assert_fault(t.call("GET", "/pizzashack/1.0.0/menu"), 401, "900902")
            snap = json.loads(json.dumps(cls.snapshot))
            snap["seq"] = 9
            cls.write_snapshot(snap)
            time.sleep(0.5)
            cls.nginx.send_signal(signal.SIGQUIT)
            self.assertEqual(cls.nginx.wait(10), 0)
            log = cls.read_log("error.log")
            self.assertNotIn("exited on signal", log)
            self.assertNotRegex(log, r"\[(alert|emerg|crit)\]")
            self.assertIn("reloaded", log)
        finally:
            cls.tearDownClass()


if __name__ == "__main__":
    unittest.main()
