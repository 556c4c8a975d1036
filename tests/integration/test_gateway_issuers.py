"""Tokens of other issuers at the gateway: an identity provider played by a
small Python HTTP server that publishes an RS256 JWKS (keys made and tokens
signed by the openssl command line), registered through the Admin API
/key-managers, and a real apimd all-in-one gateway (nginx with the module)
in front of a published, subscribed API.

A token the issuer signs reaches the backend; a token naming another
issuer, a bad signature, an expired token or an unknown client are
refused; a key rotated at the issuer is picked up (the new kid accepted,
the old one refused); a disabled or deleted key manager's tokens are
refused. The application is found through the token's consumer-key claim
in the applications' key mappings.

Needs nginx, the module next to apimd (or APIM_NGINX_MODULE) and openssl;
skipped otherwise.
"""

import base64
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import apimtest
import gwtest
import test_publisher as pt

KM = "/api/am/admin/v4/key-managers"
ROTATE = "/api/am/admin/v4/signing-keys/rotate"
DP = "/api/am/devportal/v3"
FORM = "application/x-www-form-urlencoded"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


class Key:
    """An RSA key pair made by openssl, as a JWK and a signer."""

    def __init__(self, folder, kid):
        self.kid = kid
        self.path = os.path.join(folder, kid + ".pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", self.path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        out = subprocess.run(["openssl", "rsa", "-in", self.path, "-noout", "-modulus"],
                             check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True).stdout.strip()
        modulus = bytes.fromhex(out.split("=", 1)[1])
        self.jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64url(modulus), "e": b64url((65537).to_bytes(3, "big"))}

    def sign(self, claims, kid=None):
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        data = (b64url(json.dumps(header).encode()) + "." +
                b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.path],
                             input=data.encode(), check=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE).stdout
        return data + "." + b64url(sig)


class Issuer:
    """Serves {"keys": [...]} at /jwks; keys can be replaced (rotation)."""

    def __init__(self):
        issuer = self
        self.keys = []
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                doc = {"keys": [k.jwk for k in issuer.keys]}
                if self.path == "/jwks":
                    issuer.hits += 1
                    out = json.dumps(doc).encode()
                elif self.path == "/jwks-big":
                    # the right keys, padded past the gateway's bound
                    doc["padding"] = "x" * (300 * 1024)
                    out = json.dumps(doc).encode()
                elif self.path == "/jwks-junk":
                    out = b"<html>not a key set</html>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/jwks" % self.httpd.server_port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Backend(http.server.BaseHTTPRequestHandler):
    seen = []

    def do_GET(self):
        Backend.seen.append(self.path)
        out = json.dumps({"path": self.path,
                          "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class GatewayIssuersTest(unittest.TestCase):
    """Ordered steps (test_1 .. test_6) sharing one gateway, API,
    application and issuer."""

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl not installed")
        cls.tmp = tempfile.mkdtemp(prefix="apimtest-issuers-")
        cls.key1 = Key(cls.tmp, "idp-key-1")
        cls.key2 = Key(cls.tmp, "idp-key-2")
        cls.issuer = Issuer()
        cls.issuer.keys = [cls.key1]
        cls.backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
        threading.Thread(target=cls.backend.serve_forever, daemon=True).start()

        cls.srv = apimtest.ApimServer()
        cls.srv.prepare()
        off = gwtest.gateway_offset()
        cls.srv._write_conf(off)
        cls.srv.start()
        cls.gw_port = gwtest.GW_HTTP + off
        c = cls.srv.client()

        name = pt.uniq("IdpApi")
        r = c.post(pt.APIS, json=pt.api_body(
            name=name, policies=["Unlimited"],
            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}}))
        assert r.status == 201, r
        api = r.json
        cls.path = "/%s/1.0.0/items" % name.lower()
        gwtest.deploy_publish(c, api["id"])
        r = c.post(DP + "/applications", json={"name": pt.uniq("IdpApp"),
                                               "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        app = r.json
        r = c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                "apiId": api["id"],
                                                "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        r = c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        assert r.status == 200, r
        cls.keys = r.json   # our Key Manager's client of the first application
        cls.api = api

        cls.iss = "https://idp-%s.example/oauth2/token" % pt.uniq("x")
        r = c.post(KM, json={"name": pt.uniq("Idp"), "type": "custom", "issuer": cls.iss,
                             "certificates": {"type": "JWKS", "value": cls.issuer.url}})
        assert r.status == 201, r
        cls.km = r.json

        # a second application whose keys are a client of the issuer,
        # mapped by the Developer Portal (the secret stays at the issuer)
        r = c.post(DP + "/applications", json={"name": pt.uniq("IdpApp2"),
                                               "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        cls.app2 = r.json
        r = c.post(DP + "/subscriptions", json={"applicationId": cls.app2["applicationId"],
                                                "apiId": api["id"],
                                                "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        cls.client_id = pt.uniq("idp-client")
        r = c.post(DP + "/applications/%s/map-keys" % cls.app2["applicationId"], json={
            "consumerKey": cls.client_id, "keyType": "PRODUCTION",
            "keyManager": cls.km["name"]})
        assert r.status == 200, r
        assert r.json["keyManager"] == cls.km["name"], r.json
        assert "consumerSecret" not in r.json, r.json
        cls.mapping = r.json

    @classmethod
    def tearDownClass(cls):
        for name in ("srv",):
            s = getattr(cls, name, None)
            if s is not None:
                s.stop()
        for name in ("issuer",):
            s = getattr(cls, name, None)
            if s is not None:
                s.close()
        b = getattr(cls, "backend", None)
        if b is not None:
            b.shutdown()
            b.server_close()
        shutil.rmtree(getattr(cls, "tmp", "/nonexistent"), ignore_errors=True)

    # -- helpers

    def claims(self, **kw):
        now = int(time.time())
        c = {"iss": self.iss, "sub": "alice@idp", "azp": self.client_id,
             "aud": self.client_id, "iat": now, "nbf": now, "exp": now + 600,
             "jti": pt.uniq("jti"), "scope": "default"}
        c.update(kw)
        return c

    def call(self, token):
        return gwtest.get(self.gw_port, self.path, {"Authorization": "Bearer " + token})

    def wait_for(self, token, status, code=None, timeout=30):
        last = {}

        def check():
            last["r"] = self.call(token)
            s, js, _ = last["r"]
            return s == status and (code is None or (js or {}).get("code") == code)

        self.assertTrue(gwtest.wait_for(check, timeout, 0.1),
                        "wanted %s %s, last answer: %r\n%s"
                        % (status, code, last.get("r"), self.gateway_log()[-3000:]))
        return last["r"]

    def assertRefused(self, token, status=401, code="900901"):
        s, js, body = self.call(token)
        self.assertEqual((s, (js or {}).get("code")), (status, code), body)

    def gateway_log(self):
        for root, _dirs, files in os.walk(self.srv.home):
            if "error.log" in files:
                with open(os.path.join(root, "error.log"), errors="replace") as f:
                    return f.read()
        return ""

    def put_km(self, **change):
        r = self.srv.client().put(KM + "/" + self.km["id"], json=dict(self.km, **change))
        self.assertEqual(r.status, 200, r)

    # -- steps

    def test_1_issuer_token_reaches_the_backend(self):
        token = self.key1.sign(self.claims())
        Backend.seen.clear()
        status, js, body = self.wait_for(token, 200)
        self.assertEqual(js["path"], "/be/items")
        self.assertIsNone(js["authorization"])  # the token is not forwarded
        self.assertIn("/be/items", Backend.seen)
        self.assertGreater(self.issuer.hits, 0)
        # our own Key Manager's tokens still work next to it
        r = self.srv.client(None).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": gwtest.basic(self.keys["consumerKey"],
                                               self.keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.call(r.json["access_token"])[0], 200)

    def test_1b_issuer_cannot_name_a_client_of_ours(self):
        # the issuer's valid token naming our Key Manager's client of the
        # first application: that client is not the issuer's to name
        self.wait_for(self.key1.sign(self.claims()), 200)
        token = self.key1.sign(self.claims(azp=self.keys["consumerKey"],
                                           aud=self.keys["consumerKey"]))
        self.assertRefused(token, 403, "900908")

    def test_1c_mapping_rules(self):
        c = self.srv.client()
        app = self.app2["applicationId"]
        # an unknown key manager
        r = c.post(DP + "/applications/%s/map-keys" % app, json={
            "consumerKey": "x", "keyType": "SANDBOX", "keyManager": "NoSuchKm"})
        self.assertEqual(r.status, 400, r)
        self.assertIn("NoSuchKm", r.json["description"] + r.json["message"])
        # its clients are created there, not here
        r = c.post(DP + "/applications/%s/generate-keys" % app, json={
            "keyType": "SANDBOX", "grantTypesToBeSupported": ["client_credentials"],
            "keyManager": self.km["name"]})
        self.assertEqual(r.status, 400, r)
        self.assertIn("map-keys", r.json["description"] + r.json["message"])
        # nor its tokens
        r = c.post(DP + "/applications/%s/oauth-keys/%s/generate-token"
                   % (app, self.mapping["keyMappingId"]),
                   json={"grantType": "CLIENT_CREDENTIALS", "validityPeriod": 3600})
        self.assertEqual(r.status, 400, r)
        # the same client once only
        r = c.post(DP + "/applications/%s/map-keys" % app, json={
            "consumerKey": self.client_id, "keyType": "SANDBOX",
            "keyManager": self.km["name"]})
        self.assertEqual(r.status, 409, r)
        # listed with the application's keys
        r = c.get(DP + "/applications/%s/oauth-keys" % app)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([k["keyManager"] for k in r.json["list"]], [self.km["name"]])
        # and the Developer Portal offers the key manager for mapping only
        r = c.get(DP + "/key-managers")
        self.assertEqual(r.status, 200, r)
        listed = {k["name"]: k for k in r.json["list"]}
        self.assertEqual(r.json["count"], len(r.json["list"]))
        self.assertIn("Resident Key Manager", listed)
        self.assertIn(self.km["name"], listed)
        self.assertFalse(listed[self.km["name"]]["enableOAuthAppCreation"])
        self.assertTrue(listed[self.km["name"]]["enableMapOAuthConsumerApps"])

    def test_2_other_issuer_bad_signature_expired_refused(self):
        # the issuer's key and kid, but another iss
        self.assertRefused(self.key1.sign(self.claims(iss="https://evil.example/token")))
        self.assertRefused(self.key1.sign(self.claims(iss=None)))
        # the right iss and kid, signed by a key the issuer does not publish
        self.assertRefused(self.key2.sign(self.claims(), kid=self.key1.kid))
        # expired
        now = int(time.time())
        self.assertRefused(self.key1.sign(self.claims(iat=now - 7200, nbf=now - 7200,
                                                      exp=now - 3600)))
        # a client no application has
        self.assertRefused(self.key1.sign(self.claims(azp="unknown-client")), 403, "900908")
        # and the good one still passes
        self.assertEqual(self.call(self.key1.sign(self.claims()))[0], 200)

    def test_3_rotated_key_is_picked_up(self):
        self.issuer.keys = [self.key2]
        new = self.key2.sign(self.claims())
        old = self.key1.sign(self.claims())
        last = {}

        def rotated():
            # every worker fetches for itself: each needs a token with the
            # new kid before it drops the old key
            last["new"] = self.call(new)[0]
            last["old"] = self.call(old)[0]
            return last["new"] == 200 and last["old"] == 401

        self.assertTrue(gwtest.wait_for(rotated, 40, 0.1),
                        "%r\n%s" % (last, self.gateway_log()[-3000:]))
        self.assertEqual(self.call(new)[0], 200)

    def test_4_disabled_key_manager_refused(self):
        token = self.key2.sign(self.claims())
        self.assertEqual(self.call(token)[0], 200)
        self.put_km(enabled=False)
        self.wait_for(token, 401, "900901")
        self.put_km(enabled=True)
        self.wait_for(token, 200)

    def test_5_bad_jwks_url_refused_and_logged(self):
        # the URL changes to one that does not serve a usable key set: the
        # keys of the old URL are no longer used, the gateway keeps
        # answering and says why in its log
        token = self.key2.sign(self.claims())
        for path, why in (("/gone", "HTTP 404"), ("-big", "larger than 256 KB"),
                          ("-junk", "is not a JSON key set")):
            url = self.issuer.url + path
            self.put_km(certificates={"type": "JWKS", "value": url})
            self.wait_for(token, 401, "900901")
            self.assertTrue(gwtest.wait_for(
                lambda: ('from "%s": %s' % (url, why)) in self.gateway_log()
                or ('from "%s" %s' % (url, why)) in self.gateway_log(), 20, 0.2),
                "%s not logged:\n%s" % (why, self.gateway_log()[-3000:]))
        self.put_km(certificates={"type": "JWKS", "value": self.issuer.url})
        self.wait_for(token, 200)

    def test_6_deleted_key_manager_refused(self):
        token = self.key2.sign(self.claims())
        self.assertEqual(self.call(token)[0], 200)
        r = self.srv.client().delete(KM + "/" + self.km["id"])
        self.assertEqual(r.status, 200, r)
        self.wait_for(token, 401, "900901")

    def test_7_our_key_rotated_takes_effect(self):
        """Our Key Manager's signing key rotated through the Admin API: the
        next token (new kid) passes the gateway at once, and tokens of the
        old key keep working until they expire."""
        def our_token():
            r = self.srv.client(None).post(
                "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
                headers={"Authorization": gwtest.basic(self.keys["consumerKey"],
                                                   self.keys["consumerSecret"])})
            self.assertEqual(r.status, 200, r)
            return r.json["access_token"]

        def kid_of(tok):
            return json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))["kid"]

        old = our_token()
        self.wait_for(old, 200)
        r = self.srv.client().post(ROTATE, query={"alg": "ES256"})
        self.assertEqual(r.status, 201, r)
        new = our_token()
        self.assertNotEqual(kid_of(new), kid_of(old))
        self.assertEqual(kid_of(new), r.json["kid"])
        t0 = time.monotonic()
        self.wait_for(new, 200, timeout=5)
        self.assertLess(time.monotonic() - t0, 2.0, "the gateway learnt the new key late")
        self.assertEqual(self.call(old)[0], 200)

    def test_2b_consumer_key_claim_of_the_key_manager(self):
        """A key manager whose tokens name the client in another claim."""
        self.put_km(consumerKeyClaim="cid")
        try:
            claims = self.claims(cid=self.client_id)
            del claims["azp"]
            self.wait_for(self.key1.sign(claims), 200)
            # azp is not that key manager's claim any more
            self.assertRefused(self.key1.sign(self.claims(jti=pt.uniq("j"))), 403, "900908")
        finally:
            self.put_km(consumerKeyClaim="azp")
        self.wait_for(self.key1.sign(self.claims()), 200)


if __name__ == "__main__":
    unittest.main()
