"""Key Manager tokens: the token endpoint and its grants (client_credentials,
password, refresh_token, authorization_code + PKCE through the login page),
every RFC 6749 error, bearer tokens on the Publisher, introspection,
revocation, userinfo, expiry, and signatures checked by the OpenSSL command
line (not by our verifier)."""

import base64
import hashlib
import html.parser
import json
import os
import secrets
import sqlite3
import subprocess
import time
import unittest
import urllib.parse

import apimtest
import jwkpem

APIS = "/api/am/publisher/v4/apis"
PW = "Passw0rd!x"
FORM = "application/x-www-form-urlencoded"
CALLBACK = "https://app.example/callback"


_users_created = False


def srv():
    return apimtest.shared()


def b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def claims_of(jwt):
    return b64url_json(jwt.split(".")[1])


def basic(user, password):
    """Plain Basic credentials. (Our client ids and secrets are base64url, which
    the form-urlencoding of RFC 6749 2.3.1 leaves unchanged; that encoding has
    its own test.)"""
    raw = "%s:%s" % (user, password)
    return "Basic " + base64.b64encode(raw.encode()).decode()


def register(s, name, grants, callback=None, owner=None, client=None):
    body = {"clientName": name, "grantType": grants, "saasApp": True}
    if callback:
        body["callbackUrl"] = callback
    if owner:
        body["owner"] = owner
    r = (client or s.client()).post("/client-registration/v0.17/register", json=body)
    if r.status != 200:
        raise AssertionError("registering %s failed: %r" % (name, r))
    return r.json["clientId"], r.json["clientSecret"]


def form_post(s, path, form, auth=None, headers=None, content_type=FORM):
    h = {}
    if auth is not None:
        h["Authorization"] = basic(*auth) if isinstance(auth, tuple) else auth
    h.update(headers or {})
    data = urllib.parse.urlencode(form) if isinstance(form, (dict, list)) else form
    return s.client(None).post(path, data=data, content_type=content_type, headers=h)


def token(s, client, form, **kw):
    return form_post(s, "/oauth2/token", form, auth=client, **kw)


def bearer(s, tok):
    """Anonymous client sending Authorization: Bearer tok."""
    c = s.client(None)
    orig = c.request

    def req(method, path, headers=None, **kw):
        h = {"Authorization": "Bearer " + tok}
        h.update(headers or {})
        return orig(method, path, headers=h, **kw)
    c.request = req
    return c


def api_body(**kw):
    name = "Tok" + secrets.token_hex(3)
    b = {"name": name, "context": "/" + name.lower(), "version": "1.0.0",
         "policies": ["Unlimited"],
         "endpointConfig": {"endpoint_type": "http",
                            "production_endpoints": {"url": "http://127.0.0.1:9/backend"}},
         "operations": [{"target": "/items", "verb": "GET"}]}
    b.update(kw)
    return b


def db_rows(s, sql):
    """Rows of a query on apimgtdb, as lists of strings."""
    if apimtest.is_postgresql():
        out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "|", "-d", s.apimgtdb_url,
                              "-c", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return [line.split("|") for line in out.stdout.splitlines() if line]
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(s.home, "apimgt.db"), uri=True)
    try:
        return [["" if v is None else str(v) for v in row] for row in con.execute(sql)]
    finally:
        con.close()


def pkce_pair():
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(40)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class FormParser(html.parser.HTMLParser):
    """The inputs of the page's form (name -> value) and its action."""

    def __init__(self):
        super().__init__()
        self.inputs = {}
        self.action = None
        self.method = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action, self.method = a.get("action"), a.get("method")
        if tag == "input" and a.get("name"):
            self.inputs[a["name"]] = a.get("value") or ""


def parse_form(text):
    p = FormParser()
    p.feed(text)
    return p


class TokensBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = srv()
        cls.admin = cls.srv.client()
        global _users_created
        if not _users_created:
            s = cls.srv
            s.create_user("tk_creator", PW, ["Internal/creator"],
                          name={"givenName": "Cora", "familyName": "Creator"},
                          emails=[{"value": "cora@example.com", "primary": True}])
            s.create_user("tk_sub", PW, ["Internal/subscriber"])
            s.create_user("tk_lock", PW, ["Internal/subscriber"])
            _users_created = True

    def assertOAuthError(self, r, status, error):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json", r)
        self.assertEqual(r.json.get("error"), error, r)
        self.assertTrue(r.json.get("error_description"), r)
        self.assertEqual(r.headers.get("cache-control"), "no-store", r)

    def client_of(self, grants, callback=None, owner=None):
        return register(self.srv, "tk" + secrets.token_hex(4), grants, callback, owner)

    def password_token(self, client, user, password, scope=None, **extra):
        form = {"grant_type": "password", "username": user, "password": password}
        if scope is not None:
            form["scope"] = scope
        form.update(extra)
        r = token(self.srv, client, form)
        self.assertEqual(r.status, 200, r)
        return r.json

    def introspect(self, tok, auth=None):
        r = form_post(self.srv, "/oauth2/introspect", {"token": tok},
                      auth=auth or (self.srv.admin_username, self.srv.admin_password))
        self.assertEqual(r.status, 200, r)
        return r.json


class ClientCredentialsTest(TokensBase):
    def test_token_and_claims(self):
        cid, sec = self.client_of("client_credentials")
        r = token(self.srv, (cid, sec), {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("cache-control"), "no-store")
        self.assertEqual(r.headers.get("pragma"), "no-cache")
        j = r.json
        self.assertEqual(j["token_type"], "Bearer")
        self.assertEqual(j["expires_in"], 3600)
        self.assertEqual(j["scope"], "default")
        self.assertNotIn("refresh_token", j)
        header = b64url_json(j["access_token"].split(".")[0])
        self.assertEqual(header["alg"], "RS256")
        self.assertTrue(header.get("kid"))
        c = claims_of(j["access_token"])
        self.assertEqual(c["sub"], "admin")  # the client's owner, as the reference
        self.assertEqual(c["aud"], cid)
        self.assertEqual(c["azp"], cid)
        self.assertEqual(c["client_id"], cid)
        self.assertEqual(c["aut"], "APPLICATION")
        self.assertEqual(c["scope"], "default")
        self.assertEqual(c["exp"] - c["iat"], 3600)
        self.assertEqual(c["nbf"], c["iat"])
        self.assertLessEqual(abs(c["iat"] - time.time()), 30)
        self.assertRegex(c["jti"], r"^[0-9a-f-]{36}$")
        self.assertTrue(c["iss"].endswith("/oauth2/token"), c["iss"])

    def test_form_authentication(self):
        cid, sec = self.client_of("client_credentials")
        r = token(self.srv, None, {"grant_type": "client_credentials", "client_id": cid,
                                   "client_secret": sec})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(claims_of(r.json["access_token"])["client_id"], cid)

    def test_basic_credentials_are_form_urldecoded(self):
        # RFC 6749 2.3.1: id and secret are form-urlencoded before base64;
        # an encoded plain character decodes to itself
        cid, sec = self.client_of("client_credentials")
        enc = "".join("%%%02X" % ord(ch) for ch in sec[:3]) + sec[3:]
        raw = ("%s:%s" % (cid, enc)).encode()
        r = token(self.srv, "Basic " + base64.b64encode(raw).decode(),
                  {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 200, r)

    def test_scopes_follow_the_owner_roles(self):
        # the owner is a creator: apim:api_create yes, apim:admin no, an API scope passes
        cid, sec = self.client_of("client_credentials", owner="tk_creator")
        r = token(self.srv, (cid, sec), {"grant_type": "client_credentials",
                                         "scope": "apim:api_create apim:admin read:pets"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["scope"], "apim:api_create read:pets")
        self.assertEqual(claims_of(r.json["access_token"])["sub"], "tk_creator")

    def test_validity_period(self):
        cid, sec = self.client_of("client_credentials")
        r = token(self.srv, (cid, sec), {"grant_type": "client_credentials",
                                         "validity_period": "120"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["expires_in"], 120)
        c = claims_of(r.json["access_token"])
        self.assertEqual(c["exp"] - c["iat"], 120)
        # longer than the application's validity: the application's wins
        r = token(self.srv, (cid, sec), {"grant_type": "client_credentials",
                                         "validity_period": "999999"})
        self.assertEqual(r.json["expires_in"], 3600, r)
        r = token(self.srv, (cid, sec), {"grant_type": "client_credentials",
                                         "validity_period": "soon"})
        self.assertOAuthError(r, 400, "invalid_request")


class TokenErrorsTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cc = register(cls.srv, "tk_err_cc", "client_credentials")

    def test_wrong_secret_basic_is_401_with_www_authenticate(self):
        r = token(self.srv, (self.cc[0], "wrong-secret"), {"grant_type": "client_credentials"})
        self.assertOAuthError(r, 401, "invalid_client")
        self.assertIn("Basic", r.headers.get("www-authenticate", ""))

    def test_unknown_client_form(self):
        r = token(self.srv, None, {"grant_type": "client_credentials", "client_id": "nobody",
                                   "client_secret": "x"})
        self.assertOAuthError(r, 401, "invalid_client")

    def test_no_client_authentication(self):
        r = token(self.srv, None, {"grant_type": "client_credentials"})
        self.assertOAuthError(r, 401, "invalid_client")
        # a client_id without a secret: public clients are not supported
        r = token(self.srv, None, {"grant_type": "client_credentials", "client_id": self.cc[0]})
        self.assertOAuthError(r, 401, "invalid_client")

    def test_bearer_header_is_not_client_authentication(self):
        r = token(self.srv, "Bearer abc", {"grant_type": "client_credentials"})
        self.assertOAuthError(r, 401, "invalid_client")

    def test_both_authentication_methods(self):
        r = token(self.srv, self.cc, {"grant_type": "client_credentials",
                                      "client_id": self.cc[0], "client_secret": self.cc[1]})
        self.assertOAuthError(r, 400, "invalid_request")
        self.assertIn("not both", r.json["error_description"])

    def test_json_body_is_refused(self):
        r = token(self.srv, self.cc, json.dumps({"grant_type": "client_credentials"}),
                  content_type="application/json")
        self.assertOAuthError(r, 400, "invalid_request")
        self.assertIn("x-www-form-urlencoded", r.json["error_description"])

    def test_charset_in_content_type_is_fine(self):
        r = token(self.srv, self.cc, {"grant_type": "client_credentials"},
                  content_type=FORM + "; charset=UTF-8")
        self.assertEqual(r.status, 200, r)

    def test_missing_grant_type(self):
        r = token(self.srv, self.cc, {"scope": "x"})
        self.assertOAuthError(r, 400, "invalid_request")

    def test_unsupported_grant_type(self):
        r = token(self.srv, self.cc, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
        self.assertOAuthError(r, 400, "unsupported_grant_type")

    def test_grant_not_allowed_for_client(self):
        r = token(self.srv, self.cc, {"grant_type": "password", "username": "admin",
                                      "password": self.srv.admin_password})
        self.assertOAuthError(r, 400, "unauthorized_client")

    def test_repeated_parameter(self):
        r = token(self.srv, self.cc, "grant_type=client_credentials&grant_type=password")
        self.assertOAuthError(r, 400, "invalid_request")
        self.assertIn("repeated", r.json["error_description"])

    def test_malformed_scope(self):
        r = token(self.srv, self.cc, {"grant_type": "client_credentials", "scope": 'a"b'})
        self.assertOAuthError(r, 400, "invalid_scope")

    def test_get_is_not_allowed(self):
        r = self.srv.client(None).get("/oauth2/token")
        self.assertEqual(r.status, 405, r)


class PasswordGrantTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cl = register(cls.srv, "tk_pw", "password refresh_token client_credentials")

    def test_creator_gets_only_role_scopes(self):
        j = self.password_token(self.cl, "tk_creator", PW,
                                "apim:api_create apim:api_publish apim:api_view")
        self.assertEqual(j["scope"], "apim:api_create apim:api_view")
        self.assertTrue(j.get("refresh_token"))
        c = claims_of(j["access_token"])
        self.assertEqual(c["sub"], "tk_creator")
        self.assertEqual(c["aut"], "APPLICATION_USER")
        self.assertEqual(c["scope"], "apim:api_create apim:api_view")

    def test_subscriber_never_gets_api_create(self):
        j = self.password_token(self.cl, "tk_sub", PW, "apim:api_create apim:subscribe")
        self.assertEqual(j["scope"], "apim:subscribe")
        j = self.password_token(self.cl, "tk_sub", PW, "apim:api_create")
        self.assertEqual(j["scope"], "default")

    def test_wrong_password(self):
        r = token(self.srv, self.cl, {"grant_type": "password", "username": "tk_sub",
                                      "password": "nope"})
        self.assertOAuthError(r, 400, "invalid_grant")
        r = token(self.srv, self.cl, {"grant_type": "password", "username": "tk_nobody",
                                      "password": "nope"})
        self.assertOAuthError(r, 400, "invalid_grant")

    def test_missing_credentials(self):
        r = token(self.srv, self.cl, {"grant_type": "password", "username": "tk_sub"})
        self.assertOAuthError(r, 400, "invalid_request")

    def test_no_refresh_token_without_the_refresh_grant(self):
        cl = self.client_of("password")
        j = self.password_token(cl, "tk_sub", PW)
        self.assertNotIn("refresh_token", j)


class PublisherFlowTest(TokensBase):
    """The reference's flow: register a client, get a password-grant token
    with apim:api_create apim:api_publish, call the Publisher."""

    def test_end_to_end(self):
        r = self.admin.post("/client-registration/v0.17/register", json={
            "callbackUrl": "www.google.lk", "clientName": "rest_api_publisher",
            "owner": "admin", "grantType": "password refresh_token client_credentials",
            "saasApp": True})
        self.assertEqual(r.status, 200, r)
        cl = (r.json["clientId"], r.json["clientSecret"])
        j = self.password_token(cl, "admin", self.srv.admin_password,
                                "apim:api_create apim:api_publish apim:api_view")
        self.assertEqual(set(j["scope"].split()),
                         {"apim:api_create", "apim:api_publish", "apim:api_view"})
        b = bearer(self.srv, j["access_token"])
        r = b.get(APIS)
        self.assertEqual(r.status, 200, r)
        r = b.post(APIS, json=api_body())
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["provider"], "admin")

        # a token without apim:api_create may read but not create
        j = self.password_token(cl, "admin", self.srv.admin_password, "apim:api_view")
        b = bearer(self.srv, j["access_token"])
        self.assertEqual(b.get(APIS).status, 200)
        r = b.post(APIS, json=api_body())
        self.assertEqual(r.status, 403, r)
        self.assertIn("apim:api_create", r.json["description"])

        # a subscriber asking for apim:api_create gets a token that cannot create
        j = self.password_token(cl, "tk_sub", PW, "apim:api_create apim:api_view")
        self.assertNotIn("apim:api_create", j["scope"])
        r = bearer(self.srv, j["access_token"]).post(APIS, json=api_body())
        self.assertEqual(r.status, 403, r)

    def test_bad_bearer_tokens_are_401(self):
        cl = self.client_of("client_credentials")
        good = token(self.srv, cl, {"grant_type": "client_credentials"}).json["access_token"]
        h, p, s = good.split(".")
        forged_claims = claims_of(good)
        forged_claims["scope"] = "apim:admin"
        forged = h + "." + base64.urlsafe_b64encode(
            json.dumps(forged_claims).encode()).rstrip(b"=").decode() + "." + s
        none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        for t in ("garbage", forged, none_alg + "." + p + ".", h + "." + p + ".AAAA"):
            r = bearer(self.srv, t).get(APIS)
            self.assertEqual(r.status, 401, (t[:20], r))

    def test_user_token_scopes_shrink_with_roles(self):
        # a user removed from a role loses its apim: scopes at once
        self.srv.create_user("tk_demoted", PW, ["Internal/creator"])
        cl = self.client_of("password")
        j = self.password_token(cl, "tk_demoted", PW, "apim:api_create apim:api_view")
        b = bearer(self.srv, j["access_token"])
        self.assertEqual(b.post(APIS, json=api_body()).status, 201)
        c = self.admin
        users = c.get("/scim2/Users", query={"filter": 'userName eq "tk_demoted"'}).json
        uid = users["Resources"][0]["id"]
        g = c.get("/scim2/Groups", query={"filter": 'displayName eq "Internal/creator"'}).json
        gid = g["Resources"][0]["id"]
        r = c.patch("/scim2/Groups/" + gid, json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": 'members[value eq "%s"]' % uid}]},
            content_type="application/scim+json")
        self.assertIn(r.status, (200, 204), r)
        self.assertEqual(b.post(APIS, json=api_body()).status, 403)


class RefreshTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cl = register(cls.srv, "tk_refresh", "password refresh_token")

    def refresh(self, rt, client=None, **extra):
        form = {"grant_type": "refresh_token", "refresh_token": rt}
        form.update(extra)
        return token(self.srv, client or self.cl, form)

    def test_rotation(self):
        j1 = self.password_token(self.cl, "tk_creator", PW, "apim:api_view apim:api_create")
        r = self.refresh(j1["refresh_token"])
        self.assertEqual(r.status, 200, r)
        j2 = r.json
        self.assertNotEqual(j2["refresh_token"], j1["refresh_token"])
        self.assertEqual(j2["scope"], "apim:api_view apim:api_create")
        c1, c2 = claims_of(j1["access_token"]), claims_of(j2["access_token"])
        self.assertNotEqual(c1["jti"], c2["jti"])
        self.assertEqual(c2["sub"], "tk_creator")
        # the new access token works, the replaced one is revoked
        self.assertEqual(bearer(self.srv, j2["access_token"]).get(APIS).status, 200)
        self.assertEqual(bearer(self.srv, j1["access_token"]).get(APIS).status, 401)
        # the used refresh token stops working ...
        r = self.refresh(j1["refresh_token"])
        self.assertOAuthError(r, 400, "invalid_grant")
        # ... and its reuse takes the whole grant down
        self.assertEqual(bearer(self.srv, j2["access_token"]).get(APIS).status, 401)
        self.assertFalse(self.introspect(j2["access_token"])["active"])
        self.assertOAuthError(self.refresh(j2["refresh_token"]), 400, "invalid_grant")

    def test_scope_may_only_narrow(self):
        j = self.password_token(self.cl, "tk_creator", PW, "apim:api_view apim:api_create")
        r = self.refresh(j["refresh_token"], scope="apim:api_view apim:admin")
        self.assertOAuthError(r, 400, "invalid_scope")
        r = self.refresh(j["refresh_token"], scope="apim:api_view")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["scope"], "apim:api_view")

    def test_other_client_cannot_refresh(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        other = self.client_of("password refresh_token")
        self.assertOAuthError(self.refresh(j["refresh_token"], client=other), 400,
                              "invalid_grant")
        # and the attempt did not spend it
        self.assertEqual(self.refresh(j["refresh_token"]).status, 200)

    def test_unknown_and_missing(self):
        self.assertOAuthError(self.refresh("not-a-refresh-token"), 400, "invalid_grant")
        r = token(self.srv, self.cl, {"grant_type": "refresh_token"})
        self.assertOAuthError(r, 400, "invalid_request")

    def test_refresh_tokens_are_stored_hashed(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        jti = claims_of(j["access_token"])["jti"]
        rows = db_rows(self.srv, "SELECT refresh_hash FROM km_token WHERE jti = '%s'" % jti)
        self.assertEqual(rows, [[hashlib.sha256(j["refresh_token"].encode()).hexdigest()]])
        dump = repr(db_rows(self.srv, "SELECT * FROM km_token"))
        self.assertNotIn(j["refresh_token"], dump)
        self.assertNotIn(j["access_token"], dump)


class AuthorizationCodeTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cl = register(cls.srv, "tk_code", "authorization_code refresh_token", CALLBACK)

    def authorize_params(self, challenge, **kw):
        q = {"response_type": "code", "client_id": self.cl[0], "redirect_uri": CALLBACK,
             "scope": "apim:api_view apim:api_create openid", "state": "st-" + secrets.token_hex(4),
             "code_challenge": challenge, "code_challenge_method": "S256"}
        q.update(kw)
        return {k: v for k, v in q.items() if v is not None}

    def open_form(self, challenge, **kw):
        r = self.srv.client(None).get("/oauth2/authorize", query=self.authorize_params(
            challenge, **kw))
        self.assertEqual(r.status, 200, r)
        cookie = r.headers.get("set-cookie", "").split(";")[0]
        self.assertTrue(cookie.startswith("apim_authz="), r.headers)
        return r, parse_form(r.text), cookie

    def submit(self, form, cookie, **kw):
        fields = dict(form.inputs)
        fields.update(kw)
        fields = {k: v for k, v in fields.items() if v is not None}
        h = {"Cookie": cookie} if cookie else {}
        return form_post(self.srv, "/oauth2/authorize", fields, headers=h)

    def login(self, user="tk_creator", password=PW, **kw):
        """Drives the page; returns (verifier, state, query of the redirect)."""
        verifier, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge, **kw)
        r = self.submit(form, cookie, username=user, password=password, consent="approve")
        self.assertEqual(r.status, 302, r)
        loc = r.headers["location"]
        self.assertTrue(loc.startswith(CALLBACK + "?"), loc)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
        return verifier, form.inputs.get("state"), q

    def exchange(self, code, verifier, redirect_uri=CALLBACK, client=None):
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        return token(self.srv, client or self.cl, {k: v for k, v in form.items() if v})

    def test_full_flow(self):
        verifier, challenge = pkce_pair()
        r, form, cookie = self.open_form(challenge)
        self.assertEqual(r.headers.get("x-frame-options"), "DENY")
        self.assertIn("default-src 'none'", r.headers.get("content-security-policy", ""))
        self.assertIn("no-store", r.headers.get("cache-control", ""))
        self.assertTrue(r.headers["content-type"].startswith("text/html"))
        self.assertIn("HttpOnly", r.headers.get("set-cookie"))
        self.assertEqual(form.method, "post")
        self.assertIn("csrf_token", form.inputs)
        self.assertIn("apim:api_create", r.text)  # the scopes are listed
        state = form.inputs["state"]
        r = self.submit(form, cookie, username="tk_creator", password=PW, consent="approve")
        self.assertEqual(r.status, 302, r)
        loc = urllib.parse.urlsplit(r.headers["location"])
        self.assertEqual("%s://%s%s" % (loc.scheme, loc.netloc, loc.path), CALLBACK)
        q = dict(urllib.parse.parse_qsl(loc.query))
        self.assertEqual(q["state"], state)
        code = q["code"]
        r = self.exchange(code, verifier)
        self.assertEqual(r.status, 200, r)
        j = r.json
        self.assertEqual(j["scope"], "apim:api_view apim:api_create openid")
        self.assertTrue(j.get("refresh_token"))
        c = claims_of(j["access_token"])
        self.assertEqual((c["sub"], c["aut"], c["client_id"]),
                         ("tk_creator", "APPLICATION_USER", self.cl[0]))
        self.assertEqual(bearer(self.srv, j["access_token"]).get(APIS).status, 200)
        # the code is single use, and its reuse revokes what it gave
        self.assertOAuthError(self.exchange(code, verifier), 400, "invalid_grant")
        self.assertEqual(bearer(self.srv, j["access_token"]).get(APIS).status, 401)
        self.assertOAuthError(token(self.srv, self.cl, {"grant_type": "refresh_token",
                                                        "refresh_token": j["refresh_token"]}),
                              400, "invalid_grant")

    def test_subscriber_scopes_are_narrowed(self):
        verifier, _, q = self.login(user="tk_sub", scope="apim:api_create apim:subscribe")
        r = self.exchange(q["code"], verifier)
        self.assertEqual(r.json["scope"], "apim:subscribe", r)

    def test_wrong_verifier(self):
        verifier, _, q = self.login()
        other, _ = pkce_pair()
        r = self.exchange(q["code"], other)
        self.assertOAuthError(r, 400, "invalid_grant")
        self.assertIn("code_verifier", r.json["error_description"])
        # a verifier of the wrong shape fails the same way
        self.assertOAuthError(self.exchange(self.login()[2]["code"], "short"), 400,
                              "invalid_grant")

    def test_missing_verifier(self):
        _, _, q = self.login()
        r = self.exchange(q["code"], None)
        self.assertOAuthError(r, 400, "invalid_request")

    def test_redirect_uri_must_match(self):
        verifier, _, q = self.login()
        r = self.exchange(q["code"], verifier, redirect_uri="https://evil.example/cb")
        self.assertOAuthError(r, 400, "invalid_grant")
        verifier, _, q = self.login()
        r = self.exchange(q["code"], verifier, redirect_uri=None)
        self.assertOAuthError(r, 400, "invalid_grant")

    def test_code_of_another_client(self):
        verifier, _, q = self.login()
        other = self.client_of("authorization_code", CALLBACK)
        r = self.exchange(q["code"], verifier, client=other)
        self.assertOAuthError(r, 400, "invalid_grant")
        # still usable by its own client
        self.assertEqual(self.exchange(q["code"], verifier).status, 200)

    def test_unknown_code(self):
        verifier, _ = pkce_pair()
        self.assertOAuthError(self.exchange("made-up", verifier), 400, "invalid_grant")

    def test_redirect_uri_omitted_uses_the_registered_one(self):
        verifier, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge, redirect_uri=None)
        r = self.submit(form, cookie, username="tk_creator", password=PW, consent="approve")
        self.assertEqual(r.status, 302, r)
        self.assertTrue(r.headers["location"].startswith(CALLBACK + "?code="))
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
        self.assertEqual(self.exchange(q["code"], verifier, redirect_uri=None).status, 200)

    def test_deny(self):
        _, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge)
        r = self.submit(form, cookie, consent="deny")
        self.assertEqual(r.status, 302, r)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
        self.assertEqual(q["error"], "access_denied")
        self.assertEqual(q["state"], form.inputs["state"])
        self.assertNotIn("code", q)

    def test_wrong_password_shows_the_form_again(self):
        _, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge)
        r = self.submit(form, cookie, username="tk_creator", password="wrong", consent="approve")
        self.assertEqual(r.status, 401, r)
        self.assertNotIn("location", r.headers)
        self.assertIn("Wrong user name or password", r.text)
        again = parse_form(r.text)
        self.assertEqual(again.inputs.get("username"), "tk_creator")
        self.assertEqual(again.inputs.get("password"), "")  # never echoed

    def test_csrf_token_is_bound_to_cookie_and_parameters(self):
        _, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge)
        # without the cookie (a cross-site POST carries none)
        r = self.submit(form, None, username="tk_creator", password=PW, consent="approve")
        self.assertEqual(r.status, 400, r)
        self.assertNotIn("location", r.headers)
        # another browser's cookie
        r = self.submit(form, "apim_authz=" + "A" * 43, username="tk_creator", password=PW,
                        consent="approve")
        self.assertEqual(r.status, 400, r)
        # parameters changed after the page was rendered
        r = self.submit(form, cookie, username="tk_creator", password=PW, consent="approve",
                        scope="apim:admin")
        self.assertEqual(r.status, 400, r)
        r = self.submit(form, cookie, username="tk_creator", password=PW, consent="approve",
                        csrf_token=None)
        self.assertEqual(r.status, 400, r)
        # the untouched form still works
        r = self.submit(form, cookie, username="tk_creator", password=PW, consent="approve")
        self.assertEqual(r.status, 302, r)

    def test_errors_before_the_redirect_uri_is_trusted_are_pages(self):
        _, challenge = pkce_pair()
        c = self.srv.client(None)
        for q in (self.authorize_params(challenge, redirect_uri="https://evil.example/cb"),
                  self.authorize_params(challenge, client_id="no-such-client"),
                  self.authorize_params(challenge, client_id=None)):
            r = c.get("/oauth2/authorize", query=q)
            self.assertEqual(r.status, 400, r)
            self.assertNotIn("location", r.headers)
            self.assertTrue(r.headers["content-type"].startswith("text/html"))
            self.assertEqual(r.headers.get("x-frame-options"), "DENY")
        # a client without a callback URL cannot use the page
        nocb = self.client_of("client_credentials")
        r = c.get("/oauth2/authorize", query=self.authorize_params(challenge, client_id=nocb[0],
                                                                   redirect_uri=None))
        self.assertEqual(r.status, 400, r)
        self.assertNotIn("location", r.headers)

    def test_errors_after_are_redirected(self):
        _, challenge = pkce_pair()
        c = self.srv.client(None)
        cases = [({"code_challenge": None}, "invalid_request"),
                 ({"code_challenge_method": "plain"}, "invalid_request"),
                 ({"code_challenge_method": None}, "invalid_request"),
                 ({"code_challenge": "too-short"}, "invalid_request"),
                 ({"response_type": "token"}, "unsupported_response_type")]
        for kw, err in cases:
            q = self.authorize_params(challenge, **kw)
            r = c.get("/oauth2/authorize", query=q)
            self.assertEqual(r.status, 302, (kw, r))
            got = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
            self.assertEqual(got["error"], err, kw)
            self.assertEqual(got["state"], q["state"], kw)
            self.assertTrue(r.headers["location"].startswith(CALLBACK + "?"))
        # a client without the authorization_code grant
        other = self.client_of("client_credentials", CALLBACK)
        r = c.get("/oauth2/authorize", query=self.authorize_params(challenge, client_id=other[0]))
        self.assertEqual(r.status, 302, r)
        self.assertIn("error=unauthorized_client", r.headers["location"])

    def test_page_escapes_what_it_echoes(self):
        _, challenge = pkce_pair()
        evil = '"><script>alert(1)</script>'
        r, form, _ = self.open_form(challenge, state=evil, scope="<b>x</b>")
        self.assertNotIn("<script>", r.text)
        self.assertNotIn("<b>x</b>", r.text)
        self.assertEqual(form.inputs["state"], evil)  # round-trips intact

    def test_state_is_url_encoded_in_the_redirect(self):
        verifier, challenge = pkce_pair()
        _, form, cookie = self.open_form(challenge, state="a b&c=d")
        r = self.submit(form, cookie, consent="deny")
        loc = r.headers["location"]
        self.assertIn("state=a%20b%26c%3Dd", loc)


class IntrospectionTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cl = register(cls.srv, "tk_intro", "password refresh_token client_credentials")
        cls.other = register(cls.srv, "tk_intro2", "client_credentials")

    def test_active_token_as_admin(self):
        j = self.password_token(self.cl, "tk_creator", PW, "apim:api_view")
        c = claims_of(j["access_token"])
        r = form_post(self.srv, "/oauth2/introspect",
                      {"token": j["access_token"], "token_type_hint": "access_token"},
                      auth=(self.srv.admin_username, self.srv.admin_password))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("cache-control"), "no-store")
        i = r.json
        self.assertIs(i["active"], True)
        self.assertEqual(i["scope"], "apim:api_view")
        self.assertEqual(i["client_id"], self.cl[0])
        self.assertEqual(i["username"], "tk_creator")
        self.assertEqual(i["sub"], "tk_creator")
        self.assertEqual(i["token_type"], "Bearer")
        for k in ("exp", "iat", "nbf", "aud", "iss", "jti"):
            self.assertEqual(i[k], c[k], k)

    def test_clients_see_only_their_tokens(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        self.assertIs(self.introspect(j["access_token"], auth=self.cl)["active"], True)
        self.assertEqual(self.introspect(j["access_token"], auth=self.other), {"active": False})

    def test_bearer_admin_may_introspect(self):
        j = self.password_token(self.cl, "admin", self.srv.admin_password, "apim:admin")
        self.assertEqual(j["scope"], "apim:admin")
        subject = self.password_token(self.cl, "tk_sub", PW)["access_token"]
        r = form_post(self.srv, "/oauth2/introspect", {"token": subject},
                      auth="Bearer " + j["access_token"])
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json["active"], True)
        # a bearer token without apim:admin may not
        weak = self.password_token(self.cl, "admin", self.srv.admin_password,
                                   "apim:api_view")["access_token"]
        r = form_post(self.srv, "/oauth2/introspect", {"token": subject}, auth="Bearer " + weak)
        self.assertEqual(r.status, 403, r)

    def test_callers_that_may_not(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        r = form_post(self.srv, "/oauth2/introspect", {"token": j["access_token"]})
        self.assertEqual(r.status, 401, r)
        r = form_post(self.srv, "/oauth2/introspect", {"token": j["access_token"]},
                      auth=("tk_creator", PW))
        self.assertEqual(r.status, 403, r)
        r = form_post(self.srv, "/oauth2/introspect", {"token": j["access_token"]},
                      auth=("admin", "wrong"))
        self.assertEqual(r.status, 401, r)
        r = form_post(self.srv, "/oauth2/introspect", {"token": j["access_token"]},
                      auth=(self.cl[0], "wrong"))
        self.assertEqual(r.status, 401, r)

    def test_inactive_tokens(self):
        self.assertEqual(self.introspect("garbage"), {"active": False})
        self.assertEqual(self.introspect("a.b.c"), {"active": False})
        good = token(self.srv, self.cl, {"grant_type": "client_credentials"}).json["access_token"]
        h, p, s = good.split(".")
        self.assertEqual(self.introspect(h + "." + p + "." + s[:-4] + "AAAA"), {"active": False})
        r = form_post(self.srv, "/oauth2/introspect", {},
                      auth=(self.srv.admin_username, self.srv.admin_password))
        self.assertOAuthError(r, 400, "invalid_request")

    def test_refresh_token(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        i = self.introspect(j["refresh_token"])
        self.assertIs(i["active"], True)
        self.assertEqual(i["client_id"], self.cl[0])
        self.assertEqual(i["username"], "tk_sub")
        token(self.srv, self.cl, {"grant_type": "refresh_token",
                                  "refresh_token": j["refresh_token"]})
        self.assertEqual(self.introspect(j["refresh_token"]), {"active": False})


class RevocationTest(TokensBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cl = register(cls.srv, "tk_rev", "password refresh_token client_credentials")

    def revoke(self, tok, client=None, hint=None):
        form = {"token": tok}
        if hint:
            form["token_type_hint"] = hint
        return form_post(self.srv, "/oauth2/revoke", form, auth=client or self.cl)

    def test_revoke_access_token(self):
        j = self.password_token(self.cl, "tk_creator", PW, "apim:api_view")
        jti = claims_of(j["access_token"])["jti"]
        b = bearer(self.srv, j["access_token"])
        self.assertEqual(b.get(APIS).status, 200)
        before = db_rows(self.srv, "SELECT MAX(seq) FROM am_change_log")[0][0]
        r = self.revoke(j["access_token"], hint="access_token")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(b.get(APIS).status, 401)
        self.assertEqual(self.introspect(j["access_token"]), {"active": False})
        rows = db_rows(self.srv, "SELECT jti, expiry_ms FROM am_revoked_jwt WHERE jti = '%s'"
                       % jti)
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(int(rows[0][1]) // 1000, claims_of(j["access_token"])["exp"])
        log = db_rows(self.srv, "SELECT seq, action, payload FROM am_change_log WHERE"
                      " entity_type = 'revoked_jwt' AND entity_id = '%s'" % jti)
        self.assertEqual(len(log), 1, log)
        self.assertGreater(int(log[0][0]), int(before or 0))
        self.assertEqual(log[0][1], "revoke")
        self.assertEqual(json.loads(log[0][2]),
                         {"jti": jti, "exp": claims_of(j["access_token"])["exp"]})
        # revoking again changes nothing and is still 200
        self.assertEqual(self.revoke(j["access_token"]).status, 200)
        log = db_rows(self.srv, "SELECT seq FROM am_change_log WHERE"
                      " entity_type = 'revoked_jwt' AND entity_id = '%s'" % jti)
        self.assertEqual(len(log), 1, log)
        # the refresh token issued with it is gone too
        self.assertOAuthError(token(self.srv, self.cl, {"grant_type": "refresh_token",
                                                        "refresh_token": j["refresh_token"]}),
                              400, "invalid_grant")

    def test_revoke_refresh_token_revokes_its_access_tokens(self):
        j1 = self.password_token(self.cl, "tk_creator", PW, "apim:api_view")
        j2 = token(self.srv, self.cl, {"grant_type": "refresh_token",
                                       "refresh_token": j1["refresh_token"]}).json
        self.assertEqual(bearer(self.srv, j2["access_token"]).get(APIS).status, 200)
        r = self.revoke(j2["refresh_token"], hint="refresh_token")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(bearer(self.srv, j2["access_token"]).get(APIS).status, 401)
        self.assertOAuthError(token(self.srv, self.cl, {"grant_type": "refresh_token",
                                                        "refresh_token": j2["refresh_token"]}),
                              400, "invalid_grant")
        self.assertEqual(self.introspect(j2["refresh_token"]), {"active": False})

    def test_other_clients_tokens_are_ignored(self):
        j = self.password_token(self.cl, "tk_creator", PW, "apim:api_view")
        other = self.client_of("client_credentials")
        self.assertEqual(self.revoke(j["access_token"], client=other).status, 200)
        self.assertEqual(self.revoke(j["refresh_token"], client=other).status, 200)
        self.assertEqual(bearer(self.srv, j["access_token"]).get(APIS).status, 200)
        self.assertIs(self.introspect(j["access_token"])["active"], True)

    def test_unknown_tokens_are_200(self):
        self.assertEqual(self.revoke("nothing-like-a-token").status, 200)
        self.assertEqual(self.revoke("a.b.c").status, 200)

    def test_errors(self):
        j = self.password_token(self.cl, "tk_sub", PW)
        r = form_post(self.srv, "/oauth2/revoke", {"token": j["access_token"]})
        self.assertOAuthError(r, 401, "invalid_client")
        r = form_post(self.srv, "/oauth2/revoke", {"token": j["access_token"]},
                      auth=(self.cl[0], "wrong"))
        self.assertOAuthError(r, 401, "invalid_client")
        r = form_post(self.srv, "/oauth2/revoke", {}, auth=self.cl)
        self.assertOAuthError(r, 400, "invalid_request")
        self.assertIs(self.introspect(j["access_token"])["active"], True)


class ClientLifecycleTest(TokensBase):
    def test_deleting_a_client_revokes_its_fresh_tokens(self):
        cl = self.client_of("client_credentials password")
        # issued a moment before the deletion: their rows may still be queued
        cc = [token(self.srv, cl, {"grant_type": "client_credentials"}).json["access_token"]
              for _ in range(5)]
        pw = self.password_token(cl, "tk_creator", PW, "apim:api_view")["access_token"]
        self.assertEqual(bearer(self.srv, pw).get(APIS).status, 200)
        r = self.admin.delete("/oauth2/register/" + cl[0])
        self.assertIn(r.status, (200, 204), r)
        for t in cc + [pw]:
            self.assertEqual(self.introspect(t), {"active": False})
        self.assertEqual(bearer(self.srv, pw).get(APIS).status, 401)
        jtis = ",".join("'%s'" % claims_of(t)["jti"] for t in cc + [pw])
        rows = db_rows(self.srv, "SELECT COUNT(*) FROM am_revoked_jwt WHERE jti IN (%s)" % jtis)
        self.assertEqual(rows, [["6"]])


class UserinfoTest(TokensBase):
    def test_userinfo(self):
        cl = self.client_of("password")
        j = self.password_token(cl, "tk_creator", PW, "openid")
        r = bearer(self.srv, j["access_token"]).get("/oauth2/userinfo")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["sub"], "tk_creator")
        self.assertEqual(r.json["preferred_username"], "tk_creator")
        self.assertEqual(r.json.get("given_name"), "Cora")
        self.assertEqual(r.json.get("family_name"), "Creator")
        self.assertEqual(r.json.get("email"), "cora@example.com")

    def test_without_a_valid_token(self):
        r = self.srv.client(None).get("/oauth2/userinfo")
        self.assertEqual(r.status, 401, r)
        self.assertIn("Bearer", r.headers.get("www-authenticate", ""))
        r = bearer(self.srv, "garbage").get("/oauth2/userinfo")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["error"], "invalid_token")
        self.assertIn('error="invalid_token"', r.headers.get("www-authenticate", ""))


# -- independent signature verification ----------------------------------------

def openssl_verifies(s, jwt):
    """True when `openssl dgst -sha256 -verify` (through jwkpem) accepts the
    JWT's signature with the key of its kid from /oauth2/jwks."""
    kid = b64url_json(jwt.split(".")[0])["kid"]
    jwk = jwkpem.find_jwk(s.client(None).get("/oauth2/jwks").json, kid)
    assert jwk is not None, "kid %s is not in /oauth2/jwks" % kid
    ok, _ = jwkpem.openssl_verify(jwt, jwk)
    return ok


class SignatureTest(TokensBase):
    def test_rs256_verified_by_openssl(self):
        cl = self.client_of("client_credentials")
        t = token(self.srv, cl, {"grant_type": "client_credentials"}).json["access_token"]
        self.assertTrue(openssl_verifies(self.srv, t))
        # and a tampered payload is refused by the same check
        h, p, s = t.split(".")
        c = claims_of(t)
        c["sub"] = "mallory"
        p2 = base64.urlsafe_b64encode(json.dumps(c).encode()).rstrip(b"=").decode()
        self.assertFalse(openssl_verifies(self.srv, h + "." + p2 + "." + s))


# -- a server with no leeway, ES256 and a low failure limit ----------------------

class StrictServerTest(unittest.TestCase):
    """keymanager.leeway=0 (expiry observable in seconds), ES256, and three
    failures a minute before the limiter answers 429."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.ApimServer(conf={
            "keymanager": {"leeway": 0, "signing_alg": "ES256", "auth_failures_per_minute": 3},
            "security": {"lockout_attempts": 100}})
        cls.srv.start()
        cls.srv.create_user("st_user", PW, ["Internal/creator"])
        cls.cl = register(cls.srv, "st_client", "password client_credentials")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_es256_verified_by_openssl(self):
        r = token(self.srv, self.cl, {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 200, r)
        t = r.json["access_token"]
        self.assertEqual(b64url_json(t.split(".")[0])["alg"], "ES256")
        self.assertTrue(openssl_verifies(self.srv, t))

    def test_expired_token_is_refused(self):
        r = token(self.srv, self.cl, {"grant_type": "password", "username": "st_user",
                                      "password": PW, "scope": "apim:api_view",
                                      "validity_period": "1"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["expires_in"], 1)
        t = r.json["access_token"]
        b = bearer(self.srv, t)
        self.assertEqual(b.get(APIS).status, 200)
        time.sleep(2.2)
        self.assertEqual(b.get(APIS).status, 401)
        r = form_post(self.srv, "/oauth2/introspect", {"token": t},
                      auth=(self.srv.admin_username, self.srv.admin_password))
        self.assertEqual(r.json, {"active": False})

    def test_token_rows_survive_a_restart(self):
        # rows of client_credentials tokens are written behind; a clean stop
        # writes what is queued
        cl = register(self.srv, "st_rows", "client_credentials")
        toks = [token(self.srv, cl, {"grant_type": "client_credentials"}).json["access_token"]
                for _ in range(20)]
        self.srv.restart()
        jtis = ",".join("'%s'" % claims_of(t)["jti"] for t in toks)
        rows = db_rows(self.srv, "SELECT COUNT(*) FROM km_token WHERE jti IN (%s) AND"
                       " state = 'ACTIVE' AND client_id = '%s'" % (jtis, cl[0]))
        self.assertEqual(rows, [["20"]])
        r = form_post(self.srv, "/oauth2/introspect", {"token": toks[-1]}, auth=cl)
        self.assertIs(r.json["active"], True, r)
        self.assertEqual(r.json["username"], "admin")

    def test_user_failures_are_limited(self):
        self.srv.create_user("st_limited", PW, ["Internal/subscriber"])
        form = {"grant_type": "password", "username": "st_limited", "password": "bad"}
        for _ in range(3):
            r = token(self.srv, self.cl, form)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json["error"], "invalid_grant")
        r = token(self.srv, self.cl, form)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.headers.get("retry-after"), "60")
        # even the right password waits
        r = token(self.srv, self.cl, dict(form, password=PW))
        self.assertEqual(r.status, 429, r)
        # another user is not affected
        r = token(self.srv, self.cl, dict(form, username="st_user", password=PW))
        self.assertEqual(r.status, 200, r)

    def test_client_failures_are_limited(self):
        cl = register(self.srv, "st_client_lim", "client_credentials")
        for _ in range(3):
            r = token(self.srv, (cl[0], "bad"), {"grant_type": "client_credentials"})
            self.assertEqual(r.status, 401, r)
        r = token(self.srv, (cl[0], "bad"), {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.headers.get("retry-after"), "60")
        r = token(self.srv, cl, {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 429, r)

    def test_login_page_failures_are_limited(self):
        self.srv.create_user("st_page", PW, ["Internal/subscriber"])
        cl = register(self.srv, "st_code", "authorization_code", CALLBACK)
        _, challenge = pkce_pair()
        c = self.srv.client(None)
        r = c.get("/oauth2/authorize", query={
            "response_type": "code", "client_id": cl[0], "redirect_uri": CALLBACK,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"})
        self.assertEqual(r.status, 200, r)
        cookie = r.headers["set-cookie"].split(";")[0]
        fields = parse_form(r.text).inputs
        statuses = []
        for pw in ("bad1", "bad2", "bad3", "bad4", PW):
            f = dict(fields, username="st_page", password=pw, consent="approve")
            statuses.append(form_post(self.srv, "/oauth2/authorize", f,
                                      headers={"Cookie": cookie}).status)
        self.assertEqual(statuses, [401, 401, 401, 429, 429])


if __name__ == "__main__":
    unittest.main()
