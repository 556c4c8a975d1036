"""The gateway module's credentials and response headers, on a real nginx
with the module and a snapshot file (no apimd), as test_gateway_module.py:
API keys (header and query, bound to their application and subscriptions,
revoked, refused by APIs without api_key security), the API's
securityScheme, CORS (preflight and response headers), the verified-token
cache following snapshot changes, and the backend JWT (X-JWT-Assertion)
checked against the gateway's own /jwks with the openssl CLI.
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import gwtest
from gwtest import ISSUER, KID, Backend, b64url, start_backend

CRED = "gw-auth-" + base64.b32encode(os.urandom(10)).decode().lower()
PROD_KEY = "authProdConsumerKey1"
SAND_KEY = "authSandConsumerKey1"
PIZZA_ID = "33333333-aaaa-4aaa-8aaa-000000000001"
KEYONLY_ID = "33333333-aaaa-4aaa-8aaa-000000000002"
OAUTHONLY_ID = "33333333-aaaa-4aaa-8aaa-000000000003"
HEADER_ID = "33333333-aaaa-4aaa-8aaa-000000000004"
APP_ID = "44444444-bbbb-4bbb-8bbb-000000000001"
APP2_ID = "44444444-bbbb-4bbb-8bbb-000000000002"
ORIGIN = "https://app.example.com"
EVIL = "https://evil.example.com"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der_int(b):
    b = b.lstrip(b"\0")
    if not b or b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + der_len(len(b)) + b


def jwk_to_pem(tmp, jwk):
    """A PUBKEY PEM file for an RSA JWK, through the openssl CLI."""
    seq = der_int(b64url_decode(jwk["n"])) + der_int(b64url_decode(jwk["e"]))
    der = b"\x30" + der_len(len(seq)) + seq
    pk1 = os.path.join(tmp, "pk1-%s.pem" % jwk["kid"][:8])
    with open(pk1, "w") as f:
        f.write("-----BEGIN RSA PUBLIC KEY-----\n")
        f.write(base64.encodebytes(der).decode())
        f.write("-----END RSA PUBLIC KEY-----\n")
    pub = pk1 + ".pub"
    subprocess.run(["openssl", "rsa", "-RSAPublicKey_in", "-in", pk1,
                    "-pubout", "-out", pub], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pub


def rs256_valid(tmp, pub, jwt):
    """1 when the openssl CLI verifies jwt's RS256 signature with pub."""
    h, p, s = jwt.split(".")
    sig = os.path.join(tmp, "sig.bin")
    with open(sig, "wb") as f:
        f.write(b64url_decode(s))
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub,
                        "-signature", sig], input=(h + "." + p).encode(),
                       capture_output=True)
    return r.returncode == 0


class GatewayAuthTest(gwtest.SnapshotGateway, unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-auth-")
        os.chmod(cls.tmp, 0o755)
        cls.prod = start_backend("production")
        cls.sand = start_backend("sandbox")
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        cls.backend_key = os.path.join(cls.tmp, "backend-jwt.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", cls.backend_key],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        cls.snapshot_path = os.path.join(cls.tmp, "snapshot.json")
        cls.snapshot = cls.base_snapshot()
        cls.write_snapshot(cls.snapshot)
        cls.port = gwtest.free_port()
        cls.start_nginx()

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        for b in ("prod", "sand"):
            gwtest.stop_backend(getattr(cls, b, None))
        if getattr(cls, "tmp", None) and not os.environ.get("APIM_KEEP_TMP"):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- fixtures ------------------------------------------------------------

    @classmethod
    def base_snapshot(cls):
        ec = {"endpoint_type": "http",
              "production_endpoints": {
                  "url": "http://127.0.0.1:%d/pizza-backend" % cls.prod.server_port},
              "sandbox_endpoints": {
                  "url": "http://127.0.0.1:%d/pizza-sandbox" % cls.sand.server_port}}

        def op(target, verb, auth="Application & Application User", scopes=()):
            return {"target": target, "verb": verb, "authType": auth,
                    "scopes": list(scopes)}

        def api(id, name, context, scheme, cors=None, **kw):
            a = {"id": id, "name": name, "context": context, "version": "1.0.0",
                 "isDefaultVersion": False, "lifeCycleStatus": "PUBLISHED",
                 "provider": "admin", "endpointConfig": ec,
                 "securityScheme": scheme,
                 "corsConfiguration": cors or {"corsConfigurationEnabled": False},
                 "operations": [op("/menu", "GET"),
                                op("/order", "POST", scopes=["order:write"]),
                                op("/health", "GET", auth="None")]}
            a.update(kw)
            return a

        pizza = api(PIZZA_ID, "PizzaShack", "/pizza",
                    ["oauth2", "api_key", "oauth_basic_auth_api_key_mandatory"],
                    cors={"corsConfigurationEnabled": True,
                          "accessControlAllowOrigins": [ORIGIN],
                          "accessControlAllowCredentials": True,
                          "accessControlAllowHeaders": ["authorization", "apikey",
                                                        "Content-Type"],
                          "accessControlAllowMethods": ["GET", "POST"]})
        keyonly = api(KEYONLY_ID, "KeyOnly", "/keyonly", ["api_key"])
        oauthonly = api(OAUTHONLY_ID, "OAuthOnly", "/oauthonly", ["oauth2"],
                        cors={"corsConfigurationEnabled": True,
                              "accessControlAllowOrigins": ["*"],
                              "accessControlAllowCredentials": False,
                              "accessControlAllowHeaders": ["authorization"],
                              "accessControlAllowMethods": ["GET"]})
        header = api(HEADER_ID, "OwnHeader", "/ownheader", ["api_key"],
                     apiKeyHeader="X-Team-Key")
        subs = [{"id": "s%d" % i, "apiId": a, "applicationId": APP_ID,
                 "tier": "Gold", "status": "UNBLOCKED"}
                for i, a in enumerate([PIZZA_ID, KEYONLY_ID, OAUTHONLY_ID, HEADER_ID])]
        return {
            "seq": 1,
            "apis": [pizza, keyonly, oauthonly, header],
            "applications": [
                {"id": APP_ID, "name": "App1", "owner": "alice", "tier": "10PerMin"},
                {"id": APP2_ID, "name": "App2", "owner": "bob", "tier": "Unlimited"}],
            "keyMappings": [
                {"applicationId": APP_ID, "consumerKey": PROD_KEY,
                 "keyType": "PRODUCTION"},
                {"applicationId": APP_ID, "consumerKey": SAND_KEY,
                 "keyType": "SANDBOX"}],
            "subscriptions": subs,
            "revokedJwts": [{"jti": "revoked-key-1",
                             "expiry": int(time.time()) + 3600}],
            "keyManagers": [{"name": "Resident Key Manager", "issuer": ISSUER,
                             "jwks": {"keys": [cls.jwk]}}],
        }

    @classmethod
    def start_nginx(cls):
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(cls.tmp, """
    apim_snapshot_file %(dir)s/snapshot.json;
    apim_backend_jwt on;
    apim_backend_jwt_key %(dir)s/backend-jwt.pem;
    server {
        listen 127.0.0.1:%(port)d;
        apim_gateway on;
        location / {
            proxy_set_header X-Apim-Api-Id $apim_api_id;
            proxy_set_header X-Apim-App-Id $apim_app_id;
            proxy_set_header X-Apim-App-Name $apim_app_name;
            proxy_set_header X-Apim-App-Owner $apim_app_owner;
            proxy_set_header X-Apim-App-Tier $apim_app_tier;
            proxy_set_header X-Apim-Sub-Tier $apim_subscription_tier;
            proxy_set_header X-Apim-User $apim_user;
            proxy_set_header X-Apim-Resource $apim_resource;
            proxy_set_header X-Apim-Key-Type $apim_key_type;
            proxy_pass $apim_backend$apim_rest$is_args$args;
        }
        location = /jwks {
            apim_jwks;
        }
    }""" % {"dir": cls.tmp, "port": cls.port},
            log_format='$status "$apim_fault_code" $request_uri'))

    def sign(self, claims, kid=KID, tamper=False):
        header = {"alg": "RS256", "typ": "JWT", "kid": kid}
        return gwtest.sign_jwt(self.key, header, claims, tamper=tamper)

    def token(self, client=PROD_KEY, scope="default", exp_in=3600, jti="tok-1",
              **extra):
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "alice", "aud": client, "azp": client,
                  "scope": scope, "aut": "APPLICATION_USER", "iat": now,
                  "exp": now + exp_in, "jti": jti}
        claims.update(extra)
        return self.sign(claims)

    def api_key(self, key_type="PRODUCTION", apis=(PIZZA_ID, KEYONLY_ID, HEADER_ID),
                jti="key-1", exp_in=3600, app=APP_ID, tamper=False, **extra):
        """An API key shaped as devportal_apikey.c issues them."""
        now = int(time.time())
        names = {PIZZA_ID: "PizzaShack", KEYONLY_ID: "KeyOnly",
                 OAUTHONLY_ID: "OAuthOnly", HEADER_ID: "OwnHeader"}
        claims = {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + exp_in,
                  "jti": jti, "keytype": key_type, "token_type": "apiKey",
                  "application": {"id": app, "uuid": app, "name": "App1",
                                  "owner": "alice", "tier": "10PerMin"},
                  "tierInfo": {"Gold": {"tierQuotaType": "requestCount"}},
                  "subscribedAPIs": [{"name": names.get(a, "Other"), "context": "/x/1.0.0",
                                      "version": "1.0.0", "publisher": "admin",
                                      "subscriptionTier": "Gold", "uuid": a}
                                     for a in apis]}
        claims.update(extra)
        return self.sign(claims, tamper=tamper)

    def assert_fault(self, res, status, code):
        st, headers, body = res
        self.assertEqual(st, status, body)
        self.assertEqual(headers.get("content-type"), "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["code"], code, doc)
        self.assertTrue(doc["message"])
        return doc

    def assert_refused_unseen(self, res, status, code):
        """The fault, and the backend never saw the request."""
        n = len(Backend.seen)
        self.assert_fault(res, status, code)
        self.assertEqual(len(Backend.seen), n)

    def wait_for(self, fn, status, code=None, timeout=5.0):
        """fn() until it answers status (and fault code): a snapshot
        change takes a moment to reach the worker."""
        deadline = time.time() + timeout
        while True:
            res = fn()
            if res[0] == status and (code is None
                                     or json.loads(res[2]).get("code") == code):
                return res
            if time.time() > deadline:
                return res
            time.sleep(0.05)

    def assertion(self, doc):
        jwt = doc["headers"]["x-jwt-assertion"]
        h, p, _ = jwt.split(".")
        return jwt, json.loads(b64url_decode(h)), json.loads(b64url_decode(p))

    # -- API keys ------------------------------------------------------------

    def test_api_key_in_header_is_stripped_and_fills_variables(self):
        doc = self.assert_backend(self.call("GET", "/pizza/1.0.0/menu?size=large",
                                            headers={"apikey": self.api_key()}))
        self.assertEqual(doc["path"], "/pizza-backend/menu?size=large")
        h = doc["headers"]
        self.assertNotIn("apikey", h)
        self.assertNotIn("authorization", h)
        self.assertEqual(h["x-apim-api-id"], PIZZA_ID)
        self.assertEqual(h["x-apim-app-id"], APP_ID)
        self.assertEqual(h["x-apim-app-name"], "App1")
        self.assertEqual(h["x-apim-app-owner"], "alice")
        self.assertEqual(h["x-apim-app-tier"], "10PerMin")
        self.assertEqual(h["x-apim-sub-tier"], "Gold")
        self.assertEqual(h["x-apim-user"], "alice")
        self.assertEqual(h["x-apim-resource"], "GET /menu")
        self.assertEqual(h["x-apim-key-type"], "PRODUCTION")

    def test_api_key_in_query_is_removed_from_args(self):
        key = self.api_key()
        doc = self.assert_backend(self.call(
            "GET", "/pizza/1.0.0/menu?size=large&apikey=%s&crust=thin" % key))
        self.assertEqual(doc["path"], "/pizza-backend/menu?size=large&crust=thin")
        self.assertNotIn(key, json.dumps(doc))
        doc = self.assert_backend(self.call("GET", "/keyonly/1.0.0/menu?apikey=" + key))
        self.assertEqual(doc["path"], "/pizza-backend/menu")

    def test_api_key_header_named_by_api(self):
        key = self.api_key()
        doc = self.assert_backend(self.call("GET", "/ownheader/1.0.0/menu",
                                            headers={"X-Team-Key": key}))
        self.assertNotIn("x-team-key", doc["headers"])
        self.assert_backend(self.call("GET", "/ownheader/1.0.0/menu?X-Team-Key=" + key))
        # the default name is not this API's header
        self.assert_refused_unseen(self.call("GET", "/ownheader/1.0.0/menu",
                                             headers={"apikey": key}), 401, "900902")

    def test_sandbox_api_key_goes_to_sandbox(self):
        doc = self.assert_backend(self.call(
            "GET", "/keyonly/1.0.0/menu",
            headers={"apikey": self.api_key("SANDBOX", jti="key-sand")}), "sandbox")
        self.assertEqual(doc["headers"]["x-apim-key-type"], "SANDBOX")

    def test_invalid_api_keys_are_900901(self):
        for key in (self.api_key(tamper=True, jti="key-t"),
                    self.api_key(exp_in=-3600, jti="key-e"),
                    self.api_key(jti="revoked-key-1"),
                    "not-a-jwt",
                    # an access token is not an API key
                    self.token()):
            self.assert_refused_unseen(self.call("GET", "/keyonly/1.0.0/menu",
                                                 headers={"apikey": key}),
                                       401, "900901")
        # and an API key is not an access token
        self.assert_refused_unseen(self.call("GET", "/pizza/1.0.0/menu",
                                             self.api_key()), 401, "900901")

    def test_missing_api_key_is_900902(self):
        doc = self.assert_fault(self.call("GET", "/keyonly/1.0.0/menu"), 401, "900902")
        self.assertIn("apikey", doc["description"])
        self.assertIn('401 "900902" /keyonly/1.0.0/menu',
                      self.wait_log('"900902" /keyonly/1.0.0/menu'))

    def test_api_without_api_key_refuses_api_keys(self):
        key = self.api_key(apis=(PIZZA_ID, OAUTHONLY_ID))
        self.assert_refused_unseen(self.call("GET", "/oauthonly/1.0.0/menu",
                                             headers={"apikey": key}), 401, "900902")
        self.assert_refused_unseen(self.call("GET", "/oauthonly/1.0.0/menu?apikey=" + key),
                                   401, "900902")
        # the same API takes a token
        self.assert_backend(self.call("GET", "/oauthonly/1.0.0/menu", self.token()))

    def test_api_without_oauth2_refuses_tokens(self):
        self.assert_refused_unseen(self.call("GET", "/keyonly/1.0.0/menu",
                                             self.token()), 401, "900902")

    def test_api_key_bound_to_subscriptions_at_issue(self):
        # App1 is subscribed to OAuthOnly, but this key was issued before
        self.assert_refused_unseen(self.call("GET", "/keyonly/1.0.0/menu",
                                             headers={"apikey": self.api_key(
                                                 apis=(PIZZA_ID,), jti="key-p")}),
                                   403, "900908")
        # an application that the gateway does not know
        self.assert_refused_unseen(self.call("GET", "/keyonly/1.0.0/menu",
                                             headers={"apikey": self.api_key(
                                                 app=APP2_ID, jti="key-a2")}),
                                   403, "900908")

    def test_large_api_key(self):
        # claims larger than a cache entry: verified on every call instead
        apis = (PIZZA_ID, KEYONLY_ID) + tuple(
            "99999999-aaaa-4aaa-8aaa-%012d" % i for i in range(8))
        key = self.api_key(apis=apis, jti="key-large", department="x" * 3200)
        self.assertGreater(len(key), 5000)
        for _ in range(2):
            doc = self.assert_backend(self.call("GET", "/keyonly/1.0.0/menu",
                                                headers={"apikey": key}))
            self.assertEqual(self.assertion(doc)[2]["department"], "x" * 3200)
        self.assert_refused_unseen(self.call("GET", "/oauthonly/1.0.0/menu",
                                             headers={"apikey": key}), 401, "900902")

    def test_api_key_scopes_and_permitted_ip(self):
        # a resource with scopes: an API key carries none
        self.assert_refused_unseen(self.call("POST", "/keyonly/1.0.0/order",
                                             headers={"apikey": self.api_key()},
                                             body=b"{}"), 403, "900910")
        self.assert_refused_unseen(self.call("GET", "/keyonly/1.0.0/menu", headers={
            "apikey": self.api_key(jti="key-ip1", permittedIP="10.1.2.3, 192.168.0.0/16")}),
                                   403, "900908")
        self.assert_backend(self.call("GET", "/keyonly/1.0.0/menu", headers={
            "apikey": self.api_key(jti="key-ip2", permittedIP="10.1.2.3,127.0.0.0/8")}))

    # -- the token cache follows the snapshot --------------------------------

    def test_cached_credentials_follow_snapshot_changes(self):
        key = self.api_key(jti="key-live")
        tok = self.token(jti="tok-live")
        get_key = lambda: self.call("GET", "/keyonly/1.0.0/menu", headers={"apikey": key})
        get_tok = lambda: self.call("GET", "/pizza/1.0.0/menu", tok)
        for _ in range(3):
            self.assert_backend(get_key())
            self.assert_backend(get_tok())
        try:
            snap = self.base_snapshot()
            snap["revokedJwts"].append({"jti": "key-live", "expiry": int(time.time()) + 60})
            for s in snap["subscriptions"]:
                if s["apiId"] == PIZZA_ID:
                    s["status"] = "BLOCKED"
            self.write_snapshot(snap)
            self.assert_fault(self.wait_for(get_key, 401, "900901"), 401, "900901")
            self.assert_fault(self.wait_for(get_tok, 401, "900907"), 401, "900907")

            # the signing key gone: cached tokens are refused too
            snap = self.base_snapshot()
            snap["keyManagers"][0]["jwks"]["keys"] = []
            self.write_snapshot(snap)
            self.assert_fault(self.wait_for(get_tok, 401, "900901"), 401, "900901")
        finally:
            self.write_snapshot(self.snapshot)
        self.assert_backend(self.wait_for(get_tok, 200))
        self.assert_backend(self.wait_for(get_key, 200))

    def test_token_scopes_checked_on_every_call(self):
        tok = self.token(jti="tok-scope", scope="default")
        post = lambda t: self.call("POST", "/pizza/1.0.0/order", t, body=b"{}")
        for _ in range(2):
            self.assert_refused_unseen(post(tok), 403, "900910")
        self.assert_backend(post(self.token(jti="tok-scope2", scope="order:write")))

    # -- CORS ----------------------------------------------------------------

    def test_preflight_allowed_origin(self):
        n = len(Backend.seen)
        st, h, body = self.call("OPTIONS", "/pizza/1.0.0/menu", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "apikey"})
        self.assertEqual(st, 200, body)
        self.assertEqual(h["access-control-allow-origin"], ORIGIN)
        self.assertEqual(h["access-control-allow-methods"], "GET, POST")
        self.assertEqual(h["access-control-allow-headers"],
                         "authorization, apikey, Content-Type")
        self.assertEqual(h["access-control-allow-credentials"], "true")
        self.assertEqual(len(Backend.seen), n)

    def test_preflight_refused_origin(self):
        st, h, _ = self.call("OPTIONS", "/pizza/1.0.0/menu", headers={
            "Origin": EVIL, "Access-Control-Request-Method": "GET"})
        self.assertEqual(st, 403)
        self.assertNotIn("access-control-allow-origin", h)
        self.assertNotIn("access-control-allow-methods", h)

    def test_preflight_for_an_unknown_path_is_900906(self):
        st, h, body = self.call("OPTIONS", "/pizza/1.0.0/nosuch", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
        self.assertEqual((st, json.loads(body)["code"]), (403, "900906"))
        self.assertNotIn("access-control-allow-methods", h)

    def test_preflight_on_api_without_cors_is_not_answered(self):
        st, h, _ = self.call("OPTIONS", "/keyonly/1.0.0/menu", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
        self.assertEqual(st, 403)
        self.assertNotIn("access-control-allow-origin", h)

    def test_cors_headers_on_responses(self):
        key = self.api_key()
        st, h, _ = self.call("GET", "/pizza/1.0.0/menu",
                             headers={"apikey": key, "Origin": ORIGIN})
        self.assertEqual(st, 200)
        self.assertEqual(h["access-control-allow-origin"], ORIGIN)
        self.assertEqual(h["access-control-allow-credentials"], "true")
        # a fault too, so that the browser lets the page read it
        st, h, _ = self.call("GET", "/pizza/1.0.0/menu", headers={"Origin": ORIGIN})
        self.assertEqual(st, 401)
        self.assertEqual(h["access-control-allow-origin"], ORIGIN)
        # an origin not allowed gets none
        st, h, _ = self.call("GET", "/pizza/1.0.0/menu",
                             headers={"apikey": key, "Origin": EVIL})
        self.assertEqual(st, 200)
        self.assertNotIn("access-control-allow-origin", h)
        # "*" without credentials
        st, h, _ = self.call("GET", "/oauthonly/1.0.0/menu", self.token(),
                             headers={"Origin": EVIL})
        self.assertEqual(st, 200)
        self.assertEqual(h["access-control-allow-origin"], "*")
        self.assertNotIn("access-control-allow-credentials", h)
        # no CORS on an API without it
        st, h, _ = self.call("GET", "/keyonly/1.0.0/menu",
                             headers={"apikey": key, "Origin": ORIGIN})
        self.assertEqual(st, 200)
        self.assertNotIn("access-control-allow-origin", h)

    # -- backend JWT ---------------------------------------------------------

    def jwks(self):
        st, h, body = self.call("GET", "/jwks")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/json")
        keys = json.loads(body)["keys"]
        self.assertEqual(len(keys), 1)
        k = keys[0]
        self.assertEqual((k["kty"], k["alg"], k["use"]), ("RSA", "RS256", "sig"))
        # kid: the RFC 7638 thumbprint
        canon = '{"e":"%s","kty":"RSA","n":"%s"}' % (k["e"], k["n"])
        self.assertEqual(k["kid"], b64url(hashlib.sha256(canon.encode()).digest()))
        return k

    def test_backend_jwt_for_a_token(self):
        now = int(time.time())
        tok = self.token(jti="tok-bjwt", department="sales", exp_in=1800)
        doc = self.assert_backend(self.call("GET", "/pizza/1.0.0/menu", tok, headers={
            "X-JWT-Assertion": "forged.by.client"}))
        jwt, hdr, claims = self.assertion(doc)
        self.assertNotEqual(jwt, "forged.by.client")
        k = self.jwks()
        self.assertEqual(hdr["alg"], "RS256")
        self.assertEqual(hdr["kid"], k["kid"])
        pub = jwk_to_pem(self.tmp, k)
        self.assertTrue(rs256_valid(self.tmp, pub, jwt))
        h, p, s = jwt.split(".")
        forged = b64url(json.dumps(dict(claims, **{
            "http://wso2.org/claims/enduser": "mallory"})).encode())
        self.assertFalse(rs256_valid(self.tmp, pub, h + "." + forged + "." + s))

        c = "http://wso2.org/claims/"
        self.assertEqual(claims["iss"], "wso2.org/products/am")
        # valid 15 minutes, never longer than the caller's token
        self.assertEqual(claims["exp"] - claims["iat"], 900)
        self.assertGreaterEqual(claims["iat"], now - 5)
        self.assertEqual(claims[c + "subscriber"], "alice")
        self.assertEqual(claims[c + "applicationid"], APP_ID)
        self.assertEqual(claims[c + "applicationUUId"], APP_ID)
        self.assertEqual(claims[c + "applicationname"], "App1")
        self.assertEqual(claims[c + "applicationtier"], "10PerMin")
        self.assertEqual(claims[c + "apiname"], "PizzaShack")
        self.assertEqual(claims[c + "apicontext"], "/pizza/1.0.0")
        self.assertEqual(claims[c + "version"], "1.0.0")
        self.assertEqual(claims[c + "tier"], "Gold")
        self.assertEqual(claims[c + "keytype"], "PRODUCTION")
        self.assertEqual(claims[c + "usertype"], "APPLICATION_USER")
        self.assertEqual(claims[c + "enduser"], "alice")
        # the caller's other claims are copied, not its identity claims
        self.assertEqual(claims["department"], "sales")
        self.assertEqual(claims["scope"], "default")
        for gone in ("jti", "aud", "sub", "nbf"):
            self.assertNotIn(gone, claims)

        # the same token again: the same claims (a cached or new JWT)
        doc = self.assert_backend(self.call("GET", "/pizza/1.0.0/menu", tok))
        self.assertEqual(self.assertion(doc)[2][c + "applicationname"], "App1")

        short = self.token(jti="tok-short", exp_in=120)
        doc = self.assert_backend(self.call("GET", "/pizza/1.0.0/menu", short))
        self.assertEqual(self.assertion(doc)[2]["exp"], json.loads(
            b64url_decode(short.split(".")[1]))["exp"])

    def test_backend_jwt_for_an_api_key_and_snapshot_changes(self):
        c = "http://wso2.org/claims/"
        key = self.api_key("SANDBOX", jti="key-bjwt")
        get = lambda: self.call("GET", "/keyonly/1.0.0/menu", headers={"apikey": key})
        doc = self.assert_backend(get(), "sandbox")
        jwt, _, claims = self.assertion(doc)
        self.assertTrue(rs256_valid(self.tmp, jwk_to_pem(self.tmp, self.jwks()), jwt))
        self.assertEqual(claims[c + "keytype"], "SANDBOX")
        self.assertEqual(claims[c + "apiname"], "KeyOnly")
        self.assertEqual(claims[c + "applicationname"], "App1")
        for gone in ("application", "subscribedAPIs", "tierInfo"):
            self.assertNotIn(gone, claims)
        self.assertEqual(claims["token_type"], "apiKey")
        # the application renamed: the next JWT says so
        try:
            snap = self.base_snapshot()
            snap["applications"][0]["name"] = "App1 renamed"
            self.write_snapshot(snap)
            deadline = time.time() + 5
            while True:
                name = self.assertion(self.assert_backend(get(), "sandbox"))[2][
                    c + "applicationname"]
                if name != "App1" or time.time() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(name, "App1 renamed")
        finally:
            self.write_snapshot(self.snapshot)
        deadline = time.time() + 5
        while time.time() < deadline and self.assertion(self.assert_backend(
                get(), "sandbox"))[2][c + "applicationname"] != "App1":
            time.sleep(0.05)

    def test_client_assertion_removed_on_open_resources(self):
        doc = self.assert_backend(self.call("GET", "/pizza/1.0.0/health", headers={
            "X-JWT-Assertion": "forged.by.client"}))
        self.assertNotIn("x-jwt-assertion", doc["headers"])

    def wait_log(self, needle, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            log = self.read_log("access.log")
            if needle in log or time.time() > deadline:
                return log
            time.sleep(0.05)


class GatewayApiKeyEndToEndTest(unittest.TestCase):
    """An API key from the Developer Portal (a real apimd) through nginx
    fed by it: accepted in the header and the query, gone from what the
    backend sees, refused (900901) right after the portal revokes it."""

    @classmethod
    def setUpClass(cls):
        import apimtest
        import test_publisher as pt
        if not gwtest.HAVE_ALL:
            raise unittest.SkipTest("needs APIM_NGINX_MODULE, nginx and nats-server")
        cls.nats = cls.srv = cls.gw = cls.backend = None
        try:
            cls.nats = gwtest.NatsServer().start()
            cls.srv = apimtest.ApimServer(conf={"event_hub": {"url": cls.nats.url},
                                                "gateway": {"credential": CRED}})
            cls.srv.start()
            cls.backend = start_backend("production")
            cls.gw = gwtest.FeedNginx(cls.srv.base_url, cls.nats.url, CRED).start()
            cls.setup_api(pt)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.gw is not None:
            cls.gw.stop()
            shutil.rmtree(cls.gw.tmp, ignore_errors=True)
        if cls.srv is not None:
            cls.srv.stop()
        if cls.nats is not None:
            cls.nats.stop()
        if cls.backend is not None:
            cls.backend.shutdown()
            cls.backend.server_close()

    @classmethod
    def setup_api(cls, pt):
        c = cls.srv.client()
        dp = "/api/am/devportal/v3"
        name = pt.uniq("KeyApi")
        r = c.post(pt.APIS, json=pt.api_body(
            name=name, policies=["Gold"], securityScheme=["oauth2", "api_key"],
            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}}))
        assert r.status == 201, r
        api = r.json
        gwtest.deploy_publish(c, api["id"])
        r = c.post(dp + "/applications", json={"name": pt.uniq("KeyApp"),
                                               "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        cls.app = r.json
        r = c.post(dp + "/subscriptions", json={"applicationId": cls.app["applicationId"],
                                                "apiId": api["id"],
                                                "throttlingPolicy": "Gold"})
        assert r.status == 201, r
        cls.keys_path = dp + "/applications/%s/api-keys/PRODUCTION" % (
            cls.app["applicationId"])
        r = c.post(cls.keys_path + "/generate", json={"validityPeriod": 3600})
        assert r.status == 200, r
        cls.key = r.json["apikey"]
        cls.client = c
        cls.path = "/%s/1.0.0/items" % name.lower()

    def call(self, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            res = conn.getresponse()
            body = res.read()
        finally:
            conn.close()
        code = None
        if res.status != 200:
            code = json.loads(body).get("code")
        return res.status, code, body

    def wait_for(self, fn, status, code=None, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            res = fn()
            if (res[0] == status and (code is None or res[1] == code)) \
                    or time.time() > deadline:
                return res
            time.sleep(0.02)

    def test_portal_api_key_through_the_gateway(self):
        by_header = lambda: self.call(self.path, {"apikey": self.key})
        st, _, body = self.wait_for(by_header, 200)
        self.assertEqual(st, 200, body[:300])
        rec = json.loads(body)
        self.assertEqual(rec["path"], "/be/items")
        self.assertNotIn("apikey", rec["headers"])
        # two workers: each follows the control plane on its own
        st, _, body = self.wait_for(
            lambda: self.call(self.path + "?apikey=" + self.key + "&q=1"), 200)
        self.assertEqual(st, 200, body[:300])
        self.assertEqual(json.loads(body)["path"], "/be/items?q=1")
        self.assertEqual(self.wait_for(lambda: self.call(self.path), 401)[:2],
                         (401, "900902"))

        r = self.client.post(self.keys_path + "/revoke", json={"apikey": self.key})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.wait_for(by_header, 401, "900901")[:2], (401, "900901"))


if __name__ == "__main__":
    unittest.main()
