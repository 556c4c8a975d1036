"""Key Manager signing keys: the JWKS (RFC 7517), the discovery documents
(OpenID Connect discovery / RFC 8414), the Admin signing-key routes and who
may use them, rotation (old keys stay published), persistence across
restarts, a second node on the same databases, the master key, and token
signatures checked by the OpenSSL command line against the published JWK
(not by our own verifier)."""

import base64
import os
import secrets
import stat
import time
import unittest
import urllib.parse

import apimtest
import jwkpem

JWKS = "/oauth2/jwks"
DISCOVERY = "/.well-known/openid-configuration"
DISCOVERY_TOKEN = "/oauth2/token/.well-known/openid-configuration"
RFC8414 = "/.well-known/oauth-authorization-server/oauth2/token"
KEYS = "/api/am/admin/v4/signing-keys"
ROTATE = KEYS + "/rotate"
PW = "Passw0rd!k"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def srv():
    return apimtest.shared()


def new_master_key():
    return base64.b64encode(secrets.token_bytes(32)).decode()


def jwks_of(s):
    r = s.client(None).get(JWKS)
    if r.status != 200:
        raise AssertionError("GET %s: %r" % (JWKS, r))
    return r.json


def kids(s):
    return [k["kid"] for k in jwks_of(s)["keys"]]


def active_key(s):
    r = s.client().get(KEYS)
    if r.status != 200:
        raise AssertionError("GET %s: %r" % (KEYS, r))
    act = [k for k in r.json["list"] if k["active"]]
    if len(act) != 1:
        raise AssertionError("expected one active key: %r" % r.json)
    return act[0]


def check_jwk(tc, k):
    """Shape of one published key (RFC 7517/7518), and OpenSSL can read it."""
    tc.assertEqual(k["use"], "sig")
    tc.assertIsInstance(k["kid"], str)
    tc.assertEqual(len(k["kid"]), 22)
    for m in PRIVATE_MEMBERS:
        tc.assertNotIn(m, k, "private member %s published" % m)
    text = jwkpem.openssl_pubkey_text(k)
    if k["kty"] == "RSA":
        tc.assertEqual(k["alg"], "RS256")
        tc.assertEqual(set(k), {"kty", "n", "e", "kid", "alg", "use"})
        n = jwkpem.b64url_decode(k["n"])
        tc.assertEqual(len(n), 256, "RSA 2048 modulus without a leading zero byte")
        tc.assertTrue(n[0] & 0x80)
        tc.assertEqual(k["e"], "AQAB")
        tc.assertIn("2048 bit", text)
    else:
        tc.assertEqual(k["kty"], "EC")
        tc.assertEqual(k["alg"], "ES256")
        tc.assertEqual(set(k), {"kty", "crv", "x", "y", "kid", "alg", "use"})
        tc.assertEqual(k["crv"], "P-256")
        tc.assertEqual(len(jwkpem.b64url_decode(k["x"])), 32)
        tc.assertEqual(len(jwkpem.b64url_decode(k["y"])), 32)
        tc.assertIn("256 bit", text)
    # the kid is derived from the key: base64url(SHA-256(SPKI))[:16 bytes]
    import hashlib
    tc.assertEqual(k["kid"], jwkpem.b64url_encode(
        hashlib.sha256(jwkpem.jwk_to_der(k)).digest()[:16]))


def token_endpoint_missing(s):
    r = s.client(None).post("/oauth2/token", data="grant_type=client_credentials",
                            content_type="application/x-www-form-urlencoded")
    return r.status == 404


def client_credentials_token(tc, s):
    """A client_credentials access token from POST /oauth2/token (skips the
    test while the token endpoint does not exist yet)."""
    if token_endpoint_missing(s):
        tc.skipTest("POST /oauth2/token answers 404: the token endpoint is not built yet, "
                    "so there is no token to check with OpenSSL")
    r = s.client().post("/client-registration/v0.17/register",
                        json={"clientName": "keys" + secrets.token_hex(4),
                              "grantType": "client_credentials", "saasApp": True})
    tc.assertEqual(r.status, 200, r)
    cid, secret = r.json["clientId"], r.json["clientSecret"]
    auth = base64.b64encode(("%s:%s" % (urllib.parse.quote(cid, safe=""),
                                        urllib.parse.quote(secret, safe=""))).encode()).decode()
    r = s.client(None).post("/oauth2/token", data="grant_type=client_credentials",
                            content_type="application/x-www-form-urlencoded",
                            headers={"Authorization": "Basic " + auth})
    tc.assertEqual(r.status, 200, r)
    tok = r.json["access_token"]
    tc.assertEqual(tok.count("."), 2)
    return tok


class JwksAndDiscoveryTest(unittest.TestCase):
    def test_jwks(self):
        r = srv().client(None).get(JWKS)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))
        self.assertIn("max-age", r.headers.get("cache-control", ""))
        keys = r.json["keys"]
        self.assertEqual(len(keys), 1)
        self.assertEqual(keys[0]["kty"], "RSA")  # keymanager.signing_alg defaults to RS256
        for k in keys:
            check_jwk(self, k)

    def test_jwks_is_public(self):
        self.assertEqual(srv().client(None).get(JWKS).status, 200)
        self.assertEqual(srv().client().get(JWKS).status, 200)

    def test_discovery_documents(self):
        s = srv()
        docs = []
        for path in (DISCOVERY, DISCOVERY_TOKEN, RFC8414):
            r = s.client(None).get(path)
            self.assertEqual(r.status, 200, "%s: %r" % (path, r))
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))
            docs.append(r.json)
        self.assertEqual(docs[0], docs[1])
        self.assertEqual(docs[0], docs[2])
        d = docs[0]
        base = "http://localhost:%d" % s.port
        self.assertEqual(d["issuer"], base + "/oauth2/token")
        self.assertEqual(d["token_endpoint"], base + "/oauth2/token")
        self.assertEqual(d["authorization_endpoint"], base + "/oauth2/authorize")
        self.assertEqual(d["jwks_uri"], base + "/oauth2/jwks")
        self.assertEqual(d["introspection_endpoint"], base + "/oauth2/introspect")
        self.assertEqual(d["revocation_endpoint"], base + "/oauth2/revoke")
        self.assertEqual(d["registration_endpoint"], base + "/oauth2/register")
        self.assertEqual(d["userinfo_endpoint"], base + "/oauth2/userinfo")
        self.assertEqual(sorted(d["grant_types_supported"]),
                         ["authorization_code", "client_credentials", "password",
                          "refresh_token"])
        self.assertEqual(d["response_types_supported"], ["code"])
        self.assertEqual(d["code_challenge_methods_supported"], ["S256"])
        self.assertEqual(sorted(d["token_endpoint_auth_methods_supported"]),
                         ["client_secret_basic", "client_secret_post"])
        self.assertIn("RS256", d["id_token_signing_alg_values_supported"])
        self.assertIn("ES256", d["id_token_signing_alg_values_supported"])
        for scope in ("apim:api_create", "apim:api_publish", "apim:admin", "apim:subscribe"):
            self.assertIn(scope, d["scopes_supported"])
        # the jwks_uri, taken relative to the server, serves the JWKS
        path = urllib.parse.urlparse(d["jwks_uri"]).path
        self.assertEqual(s.client(None).get(path).json, jwks_of(s))

    def test_configured_issuer(self):
        with apimtest.ApimServer(conf={"keymanager": {
                "issuer": "https://km.example.com/oauth2/token"}}) as s:
            d = s.client(None).get(DISCOVERY).json
            self.assertEqual(d["issuer"], "https://km.example.com/oauth2/token")
            self.assertEqual(d["jwks_uri"], "https://km.example.com/oauth2/jwks")
            self.assertEqual(d["token_endpoint"], "https://km.example.com/oauth2/token")


class AdminRoutesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = srv()
        cls.creator = "kcreator" + secrets.token_hex(3)
        cls.subscriber = "ksub" + secrets.token_hex(3)
        s.create_user(cls.creator, PW, ["Internal/creator"])
        s.create_user(cls.subscriber, PW, ["Internal/subscriber"])

    def test_list(self):
        r = srv().client().get(KEYS)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], len(r.json["list"]))
        k = active_key(srv())
        self.assertIn(k["kid"], kids(srv()))
        self.assertEqual(set(k), {"kid", "alg", "active", "createdTime", "retireAfter",
                                  "publicKey"})
        self.assertIsNone(k["retireAfter"])
        self.assertTrue(k["createdTime"].endswith("Z"))
        for m in PRIVATE_MEMBERS:
            self.assertNotIn(m, k["publicKey"])
        self.assertNotIn("private", r.text.lower())

    def test_who_may(self):
        s = srv()
        for path, method in ((KEYS, "get"), (ROTATE, "post")):
            r = getattr(s.client(None), method)(path)
            self.assertEqual(r.status, 401, "%s %s anonymous: %r" % (method, path, r))
            for user in (self.creator, self.subscriber):
                r = getattr(s.client(user, PW), method)(path, query={"alg": "RS256"})
                self.assertEqual(r.status, 403, "%s %s as %s: %r" % (method, path, user, r))
        self.assertEqual(len(kids(s)), 1, "a refused rotation changed the keys")

    def test_rotate_unknown_alg(self):
        s = srv()
        before = kids(s)
        for alg in ("HS256", "none", "rs256", "PS256"):
            r = s.client().post(ROTATE, query={"alg": alg})
            self.assertEqual(r.status, 400, r)
            self.assertIn("RS256 or ES256", r.json["description"])
        self.assertEqual(kids(s), before)


class RotationTest(unittest.TestCase):
    """Rotation, restarts and the master key on a server of its own."""

    def test_rotate_restart_and_openssl(self):
        with apimtest.ApimServer() as s:
            first = active_key(s)
            self.assertEqual(first["alg"], "RS256")
            self.assertEqual(kids(s), [first["kid"]])

            # master key generated into the home, 0600, 32 bytes base64
            path = os.path.join(s.home, "master-key")
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            with open(path) as f:
                self.assertEqual(len(base64.b64decode(f.read().strip(), validate=True)), 32)
            with open(path) as f:
                secret = f.read().strip()
            self.assertNotIn(secret, s.stderr() + s.stdout())

            if not token_endpoint_missing(s):
                jwkpem.assert_openssl_verifies(self, client_credentials_token(self, s),
                                               jwks_of(s))

            t0 = time.time()
            r = s.client().post(ROTATE, query={"alg": "ES256"})
            self.assertEqual(r.status, 201, r)
            new = r.json
            self.assertEqual(new["alg"], "ES256")
            self.assertTrue(new["active"])
            self.assertNotEqual(new["kid"], first["kid"])
            self.assertEqual(new["publicKey"]["kty"], "EC")
            self.assertEqual(kids(s), [new["kid"], first["kid"]])  # newest first
            for k in jwks_of(s)["keys"]:
                check_jwk(self, k)
            listed = {k["kid"]: k for k in s.client().get(KEYS).json["list"]}
            self.assertFalse(listed[first["kid"]]["active"])
            self.assertIsNotNone(listed[first["kid"]]["retireAfter"])
            self.assertTrue(listed[new["kid"]]["active"])

            if not token_endpoint_missing(s):
                tok = client_credentials_token(self, s)
                self.assertEqual(jwkpem.jws_parts(tok)[0]["kid"], new["kid"])
                self.assertEqual(jwkpem.jws_parts(tok)[0]["alg"], "ES256")
                jwkpem.assert_openssl_verifies(self, tok, jwks_of(s))

            # restart: same keys, the ES256 key chosen through the API stays
            s.restart()
            self.assertEqual(kids(s), [new["kid"], first["kid"]])
            self.assertEqual(active_key(s)["kid"], new["kid"])
            self.assertIn("chosen through the Admin API", s.stderr_this_run())

            # rotation without alg: keymanager.signing_alg (RS256)
            r = s.client().post(ROTATE)
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.json["alg"], "RS256")
            self.assertEqual(len(kids(s)), 3)
            self.assertLess(time.time() - t0, 120)

            # another master key: apimd refuses to start, and says why
            s.stop()
            with open(path) as f:
                good = f.read()
            with open(path, "w") as f:
                f.write(new_master_key() + "\n")
            s.start(wait=False)
            rc = s.wait_exit()
            self.assertNotEqual(rc, 0)
            err = s.stderr_this_run()
            self.assertIn("cannot decrypt signing key ", err)
            self.assertIn("the master key differs from the one that encrypted it", err)
            with open(path, "w") as f:
                f.write(good)
            s.start()
            self.assertEqual(len(kids(s)), 3)

    def test_configured_master_key_and_second_node(self):
        key = new_master_key()
        conf = {"keymanager": {"master_key": key}, "admin": {"password": "Adm1n-" + PW}}
        with apimtest.ApimServer(conf=conf) as a:
            self.assertFalse(os.path.exists(os.path.join(a.home, "master-key")))
            with apimtest.ApimServer(conf=conf, databases_from=a) as b:
                self.assertEqual(kids(a), kids(b))
                r = a.client().post(ROTATE, query={"alg": "ES256"})
                self.assertEqual(r.status, 201, r)
                new = r.json["kid"]
                # b picks the rotation up by itself within a few seconds
                deadline = time.time() + 15
                while time.time() < deadline and kids(b)[0] != new:
                    time.sleep(0.5)
                self.assertEqual(kids(b), kids(a))
                self.assertEqual(active_key(b)["kid"], new)
                if not token_endpoint_missing(b):
                    tok = client_credentials_token(self, b)
                    self.assertEqual(jwkpem.jws_parts(tok)[0]["kid"], new)
                    jwkpem.assert_openssl_verifies(self, tok, jwks_of(a))
            # a node with another master key cannot start on these databases
            other = apimtest.ApimServer(conf={"keymanager": {"master_key": new_master_key()}},
                                        databases_from=a)
            other.start(wait=False)
            self.assertNotEqual(other.wait_exit(), 0)
            self.assertIn("the master key differs", other.stderr_this_run())
            other.cleanup()


class TwoNodesStartingTest(unittest.TestCase):
    ROUNDS = 2

    def test_two_nodes_starting_at_once_share_one_key(self):
        """Two nodes on empty databases start at the same moment: one signing
        key is made, and both publish and use it."""
        for rnd in range(self.ROUNDS):
            with self.subTest(round=rnd):
                conf = {"keymanager": {"master_key": new_master_key(), "signing_alg": "ES256"},
                        "admin": {"password": "Adm1n-" + PW}}
                a = apimtest.ApimServer(conf=conf)
                b = apimtest.ApimServer(conf=conf, databases_from=a)
                a.prepare()
                b.prepare()
                for s in (a, b):
                    self.addCleanup(s.cleanup)
                    self.addCleanup(s.stop)
                a.start(wait=False)
                b.start(wait=False)
                a.wait_live()
                b.wait_live()
                ka, kb = kids(a), kids(b)
                self.assertEqual(len(ka), 1, ka)
                self.assertEqual(ka, kb)
                self.assertEqual(jwks_of(a)["keys"][0]["alg"], "ES256")
                self.assertEqual(active_key(b)["kid"], ka[0])
                a.stop()
                b.stop()


class OpenSSLVerificationTest(unittest.TestCase):
    def test_token_signature_checked_by_openssl(self):
        s = srv()
        tok = client_credentials_token(self, s)
        header, claims, _, _ = jwkpem.jws_parts(tok)
        self.assertEqual(header["typ"], "JWT")
        self.assertEqual(header["alg"], "RS256")
        jwk = jwkpem.assert_openssl_verifies(self, tok, jwks_of(s))
        self.assertEqual(jwk["kid"], header["kid"])
        d = s.client(None).get(DISCOVERY).json
        self.assertEqual(claims["iss"], d["issuer"])


if __name__ == "__main__":
    unittest.main()
