"""Key Manager OAuth clients: the reference's client registration
(/client-registration/v0.17/register, as apictl and the portals use it),
RFC 7591 dynamic registration (/oauth2/register) with RFC 7592 management
(/oauth2/register/{client_id}), secrets that are shown once and stored
hashed, and client authentication at the token endpoint with its failure
limit."""

import base64
import hashlib
import json
import os
import sqlite3
import unittest
import urllib.parse

import apimtest

V017 = "/client-registration/v0.17/register"
DCR = "/oauth2/register"
TOKEN = "/oauth2/token"
PW = "Passw0rd!"
FAILURES_PER_MINUTE = 4
SUPPORTED = "client_credentials, password, refresh_token, authorization_code"

# Every secret and registration token handed out in this module: none may
# show up in the logs or, in clear, in the database.
ISSUED = []


def server():
    return apimtest.shared(conf={
        "log": {"level": "debug"},
        "keymanager": {"auth_failures_per_minute": FAILURES_PER_MINUTE},
    })


_users = set()


def user(srv, name, roles=("Internal/subscriber",)):
    """A user with the given roles (created once per module)."""
    if name not in _users:
        srv.create_user(name, PW, list(roles))
        _users.add(name)
    return srv.client(name, PW)


def v017(c, name, owner=None, grants="password refresh_token", callback=None, **extra):
    body = {"clientName": name, "grantType": grants, "saasApp": True}
    if owner is not None:
        body["owner"] = owner
    if callback is not None:
        body["callbackUrl"] = callback
    body.update(extra)
    r = c.post(V017, json=body)
    if r.status == 200 and r.json:
        ISSUED.append(r.json.get("clientSecret"))
    return r


def dcr(c, body):
    r = c.post(DCR, json=body)
    if r.status == 201 and r.json:
        ISSUED.append(r.json.get("client_secret"))
        ISSUED.append(r.json.get("registration_access_token"))
    return r


def bearer(token):
    return {"Authorization": "Bearer " + token}


def basic(cid, secret):
    raw = ("%s:%s" % (cid, secret)).encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def form(**fields):
    return urllib.parse.urlencode(fields)


class ClientsTestCase(unittest.TestCase):
    def setUp(self):
        self.srv = server()
        self.c = self.srv.client()
        self.anon = self.srv.client(None)

    def assertError(self, r, status, text=None):
        """A reference error body {code, message, description}."""
        self.assertEqual(r.status, status, r)
        self.assertIsNotNone(r.json, r)
        self.assertEqual(r.json.get("code"), status, r.json)
        if text is not None:
            self.assertIn(text, r.json.get("description", ""), r.json)

    def assertOAuthError(self, r, status, error, text=None):
        """An RFC 7591 / RFC 6749 error body {error, error_description}."""
        self.assertEqual(r.status, status, r)
        self.assertIsNotNone(r.json, r)
        self.assertEqual(r.json.get("error"), error, r.json)
        self.assertTrue(r.json.get("error_description"), r.json)
        if text is not None:
            self.assertIn(text, r.json["error_description"], r.json)


class V017RegisterTest(ClientsTestCase):
    """POST /client-registration/v0.17/register, user Basic auth."""

    def test_admin_registers_the_reference_example(self):
        r = v017(self.c, "rest_api_publisher", owner="admin", callback="www.google.lk")
        self.assertEqual(r.status, 200, r)
        j = r.json
        self.assertRegex(j["clientId"], r"^[A-Za-z0-9_-]{27}$")
        self.assertRegex(j["clientSecret"], r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(j["clientName"], "rest_api_publisher")
        self.assertEqual(j["appOwner"], "admin")
        self.assertEqual(j["callBackURL"], "www.google.lk")
        self.assertIs(j["isSaasApplication"], True)
        self.assertEqual(j["jsonAppAttribute"], "{}")
        self.assertIn("tokenType", j)
        self.assertIsNone(j["tokenType"])
        inner = json.loads(j["jsonString"])
        self.assertEqual(inner, {"grant_types": "password refresh_token",
                                 "redirect_uris": "www.google.lk",
                                 "client_name": "rest_api_publisher"})
        self.assertEqual(r.headers.get("cache-control"), "no-store", r.headers)

    def test_owner_defaults_to_the_caller_and_carbon_super_is_the_same_user(self):
        r = v017(self.c, "v017_default_owner")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["appOwner"], "admin")
        r = v017(self.c, "v017_tenant_owner", owner="admin@carbon.super")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["appOwner"], "admin")

    def test_subscriber_registers_for_self(self):
        c = user(self.srv, "v017_sub")
        r = v017(c, "sub_client", owner="v017_sub", grants="client_credentials")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["appOwner"], "v017_sub")
        self.assertEqual(json.loads(r.json["jsonString"])["grant_types"], "client_credentials")
        # the same name is free for another owner
        r = v017(self.c, "sub_client")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["appOwner"], "admin")

    def test_owner_mismatch_is_403_for_non_admins(self):
        c = user(self.srv, "v017_sub2")
        r = v017(c, "not_mine", owner="admin")
        self.assertError(r, 403, "apim:admin")

    def test_admin_registers_for_another_user(self):
        user(self.srv, "v017_sub3")
        r = v017(self.c, "for_sub3", owner="v017_sub3")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["appOwner"], "v017_sub3")
        r = v017(self.c, "for_nobody", owner="no_such_user_x")
        self.assertError(r, 400, "no_such_user_x")

    def test_missing_client_name_is_400(self):
        r = self.c.post(V017, json={"owner": "admin", "grantType": "password"})
        self.assertError(r, 400, "clientName")
        r = v017(self.c, "")
        self.assertError(r, 400, "clientName")

    def test_bad_field_types_are_400(self):
        r = self.c.post(V017, json={"clientName": ["x"]})
        self.assertError(r, 400, "clientName")
        r = self.c.post(V017, json={"clientName": "x", "saasApp": "yes"})
        self.assertError(r, 400, "saasApp")
        r = self.c.post(V017, data="clientName=x", content_type="text/plain")
        self.assertIn(r.status, (400, 415), r)

    def test_unknown_grant_type_is_400_naming_the_supported_ones(self):
        r = v017(self.c, "v017_bad_grant",
                 grants="password urn:ietf:params:oauth:grant-type:saml2-bearer")
        self.assertError(r, 400, "urn:ietf:params:oauth:grant-type:saml2-bearer")
        self.assertIn(SUPPORTED, r.json["description"])
        r = v017(self.c, "v017_implicit", grants="implicit")
        self.assertError(r, 400, "'implicit'")

    def test_authorization_code_needs_a_valid_callback(self):
        r = v017(self.c, "v017_code_nocb", grants="authorization_code")
        self.assertError(r, 400, "callback")
        r = v017(self.c, "v017_code_badcb", grants="authorization_code",
                 callback="ftp://x.example/cb")
        self.assertError(r, 400, "http or https")
        r = v017(self.c, "v017_code_frag", grants="authorization_code",
                 callback="https://app.example.com/cb#frag")
        self.assertError(r, 400, "fragment")
        r = v017(self.c, "v017_code_ok", grants="authorization_code refresh_token",
                 callback="http://localhost:8080/cb")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["callBackURL"], "http://localhost:8080/cb")
        self.assertEqual(json.loads(r.json["jsonString"])["grant_types"],
                         "refresh_token authorization_code")

    def test_registering_again_returns_the_same_client_with_a_new_secret(self):
        first = v017(self.c, "rest_api_import_export_admin")
        self.assertEqual(first.status, 200, first)
        again = v017(self.c, "rest_api_import_export_admin",
                     grants="client_credentials password refresh_token")
        self.assertEqual(again.status, 200, again)
        self.assertEqual(again.json["clientId"], first.json["clientId"])
        self.assertNotEqual(again.json["clientSecret"], first.json["clientSecret"])
        self.assertEqual(json.loads(again.json["jsonString"])["grant_types"],
                         "client_credentials password refresh_token")

    def test_authentication_is_required(self):
        r = self.anon.post(V017, json={"clientName": "anon_client"})
        self.assertError(r, 401)
        r = self.srv.client("admin", "wrong-password").post(V017, json={"clientName": "x"})
        self.assertError(r, 401)


class DcrTest(ClientsTestCase):
    """RFC 7591 POST /oauth2/register and RFC 7592 /oauth2/register/{id}."""

    def register(self, c=None, **over):
        body = {"client_name": "dcr_%s" % os.urandom(4).hex(),
                "redirect_uris": ["https://app.example.com/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "apim:api_view  apim:subscribe"}
        body.update(over)
        r = dcr(c or self.c, body)
        self.assertEqual(r.status, 201, r)
        return r.json

    def test_register_answers_rfc7591_fields(self):
        r = dcr(self.c, {"client_name": "dcr_fields",
                         "redirect_uris": ["https://app.example.com/callback"],
                         "grant_types": ["refresh_token", "authorization_code"],
                         "scope": "apim:api_view  apim:subscribe",
                         "logo_uri": "https://app.example.com/logo.png"})
        self.assertEqual(r.status, 201, r)
        j = r.json
        self.assertRegex(j["client_id"], r"^[A-Za-z0-9_-]{27}$")
        self.assertRegex(j["client_secret"], r"^[A-Za-z0-9_-]{43}$")
        self.assertRegex(j["registration_access_token"], r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(j["client_secret_expires_at"], 0)
        self.assertIsInstance(j["client_id_issued_at"], int)
        self.assertEqual(j["client_name"], "dcr_fields")
        self.assertEqual(j["redirect_uris"], ["https://app.example.com/callback"])
        self.assertEqual(j["grant_types"], ["refresh_token", "authorization_code"])
        self.assertEqual(j["response_types"], ["code"])
        self.assertEqual(j["token_endpoint_auth_method"], "client_secret_basic")
        self.assertEqual(j["scope"], "apim:api_view apim:subscribe")
        self.assertTrue(j["registration_client_uri"].endswith(DCR + "/" + j["client_id"]), j)
        self.assertEqual(r.headers.get("cache-control"), "no-store", r.headers)

    def test_registration_client_uri_matches_the_discovery_metadata(self):
        j = self.register()
        r = self.anon.get("/.well-known/openid-configuration")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(j["registration_client_uri"],
                         r.json["registration_endpoint"] + "/" + j["client_id"])

    def test_registration_client_uri_follows_a_configured_issuer(self):
        with apimtest.ApimServer(conf={"keymanager": {
                "issuer": "https://km.example.com/oauth2/token"}}) as srv:
            r = srv.client().post(DCR, json={"client_name": "behind_proxy",
                                             "grant_types": ["client_credentials"]})
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.json["registration_client_uri"],
                             "https://km.example.com/oauth2/register/" + r.json["client_id"])
            ISSUED.append(r.json["client_secret"])

    def test_read_update_delete_with_the_registration_token(self):
        j = self.register(token_endpoint_auth_method="client_secret_post")
        path = DCR + "/" + j["client_id"]
        tok = bearer(j["registration_access_token"])

        r = self.anon.get(path, headers=tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["client_id"], j["client_id"])
        self.assertEqual(r.json["client_name"], j["client_name"])
        self.assertEqual(r.json["token_endpoint_auth_method"], "client_secret_post")
        self.assertNotIn("client_secret", r.json)
        self.assertNotIn(j["client_secret"], r.text)
        self.assertNotIn(j["registration_access_token"], r.text)

        r = self.anon.put(path, headers=tok, json={
            "client_id": j["client_id"], "client_name": j["client_name"] + "_v2",
            "redirect_uris": ["https://app.example.com/other"],
            "grant_types": ["authorization_code", "client_credentials"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["client_name"], j["client_name"] + "_v2")
        self.assertEqual(r.json["redirect_uris"], ["https://app.example.com/other"])
        self.assertEqual(r.json["grant_types"], ["client_credentials", "authorization_code"])
        # left out: back to the defaults (RFC 7592 section 2.2)
        self.assertNotIn("scope", r.json)
        self.assertEqual(r.json["token_endpoint_auth_method"], "client_secret_basic")
        self.assertNotIn(j["client_secret"], r.text)
        r = self.anon.get(path, headers=tok)
        self.assertEqual(r.json["client_name"], j["client_name"] + "_v2")

        r = self.anon.delete(path, headers=tok)
        self.assertEqual(r.status, 204, r)
        r = self.anon.get(path, headers=tok)
        self.assertOAuthError(r, 401, "invalid_token")

    def test_wrong_or_foreign_registration_token_is_401(self):
        a = self.register()
        b = self.register()
        for headers in (bearer("x" * 43), bearer(b["registration_access_token"]),
                        {"Authorization": None}):
            for method in ("get", "put", "delete"):
                kw = {"json": {"client_name": "hijack"}} if method == "put" else {}
                r = getattr(self.anon, method)(DCR + "/" + a["client_id"], headers=headers, **kw)
                self.assertOAuthError(r, 401, "invalid_token")
                self.assertIn("Bearer", r.headers.get("www-authenticate", ""), r.headers)
        r = self.anon.get(DCR + "/no_such_client", headers=bearer(a["registration_access_token"]))
        self.assertOAuthError(r, 401, "invalid_token")
        # nothing changed
        r = self.anon.get(DCR + "/" + a["client_id"],
                          headers=bearer(a["registration_access_token"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["client_name"], a["client_name"])

    def test_admin_manages_with_basic_and_others_may_not(self):
        j = self.register()
        path = DCR + "/" + j["client_id"]
        r = self.c.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["client_id"], j["client_id"])
        r = self.c.get(DCR + "/no_such_client")
        self.assertOAuthError(r, 404, "invalid_client")
        c = user(self.srv, "dcr_other")
        r = c.get(path)
        self.assertOAuthError(r, 403, "access_denied")
        r = c.delete(path)
        self.assertEqual(r.status, 403, r)
        r = self.srv.client("admin", "wrong-password").get(path)
        self.assertEqual(r.status, 401, r)

    def test_update_checks(self):
        j = self.register()
        path = DCR + "/" + j["client_id"]
        tok = bearer(j["registration_access_token"])
        base = {"client_name": j["client_name"], "redirect_uris": j["redirect_uris"],
                "grant_types": j["grant_types"]}
        r = self.anon.put(path, headers=tok, json=dict(base, client_id="other"))
        self.assertOAuthError(r, 400, "invalid_client_metadata", "client_id")
        r = self.anon.put(path, headers=tok, json=dict(base, client_secret="guess"))
        self.assertOAuthError(r, 400, "invalid_client_metadata", "client_secret")
        r = self.anon.put(path, headers=tok,
                          json=dict(base, client_secret=j["client_secret"]))
        self.assertEqual(r.status, 200, r)
        r = self.anon.put(path, headers=tok, json=dict(base, registration_access_token="x"))
        self.assertOAuthError(r, 400, "invalid_client_metadata", "registration_access_token")
        r = self.anon.put(path, headers=tok, json=dict(base, redirect_uris=["javascript:alert(1)"]))
        self.assertOAuthError(r, 400, "invalid_redirect_uri")

    def test_bad_redirect_uris_are_invalid_redirect_uri(self):
        for uris in (["https://app.example.com/cb#fragment"], ["ftp://app.example.com/cb"],
                     ["/relative/cb"], ["https:///nohost"], ["https://a b.example.com/"],
                     ["https://user@app.example.com/cb"], ["https://app.example.com:99999/"],
                     ["https://a.example.com/1", "https://a.example.com/2"], [""]):
            r = dcr(self.c, {"client_name": "dcr_bad_uri", "redirect_uris": uris,
                             "grant_types": ["authorization_code"]})
            self.assertOAuthError(r, 400, "invalid_redirect_uri")
        # authorization_code is the RFC 7591 default and needs a redirect URI
        r = dcr(self.c, {"client_name": "dcr_default_grant"})
        self.assertOAuthError(r, 400, "invalid_redirect_uri", "authorization_code")
        r = dcr(self.c, {"client_name": "dcr_local", "redirect_uris": ["http://127.0.0.1:8000/cb"]})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["grant_types"], ["authorization_code"])

    def test_bad_metadata_is_invalid_client_metadata(self):
        cases = [
            ({"client_name": "x", "grant_types": ["implicit"]}, "implicit"),
            ({"client_name": "x", "grant_types": ["client_credentials"],
              "token_endpoint_auth_method": "none"}, "none"),
            ({"client_name": "x", "grant_types": "client_credentials"}, "grant_types"),
            ({"client_name": 7, "grant_types": ["client_credentials"]}, "client_name"),
            ({"client_name": "x", "grant_types": ["client_credentials"],
              "response_types": ["token"]}, "token"),
            ({"client_name": "x", "grant_types": ["client_credentials"],
              "scope": "a \"b\""}, "scope"),
        ]
        for body, text in cases:
            r = dcr(self.c, body)
            self.assertOAuthError(r, 400, "invalid_client_metadata", text)
        r = self.c.post(DCR, data="{not json", content_type="application/json")
        self.assertOAuthError(r, 400, "invalid_client_metadata")
        r = self.c.post(DCR, data="client_name=x", content_type="application/x-www-form-urlencoded")
        self.assertOAuthError(r, 400, "invalid_client_metadata")

    def test_duplicate_name_for_the_same_user_is_refused(self):
        body = {"client_name": "dcr_dup", "grant_types": ["client_credentials"]}
        self.assertEqual(dcr(self.c, body).status, 201)
        r = dcr(self.c, body)
        self.assertOAuthError(r, 400, "invalid_client_metadata", "dcr_dup")
        c = user(self.srv, "dcr_dup_user")
        self.assertEqual(dcr(c, body).status, 201)

    def test_anonymous_registration_is_401(self):
        r = self.anon.post(DCR, json={"client_name": "anon", "grant_types": ["client_credentials"]})
        self.assertEqual(r.status, 401, r)

    def test_a_subscriber_registers_a_client_owned_by_them(self):
        c = user(self.srv, "dcr_sub")
        j = self.register(c, grant_types=["client_credentials"], redirect_uris=[])
        self.assertEqual(j["grant_types"], ["client_credentials"])
        self.assertEqual(j["response_types"], [])
        rows = db_rows(self.srv, "SELECT owner FROM km_oauth_client WHERE client_id = '%s'"
                       % j["client_id"])
        self.assertIn("dcr_sub", rows)


def db_rows(srv, sql):
    """The result of a query on apimgtdb as text (one row a line)."""
    if apimtest.is_postgresql():
        return apimtest.psql(sql, url=srv.apimgtdb_url)
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(srv.home, "apimgt.db"), uri=True)
    try:
        return "\n".join("|".join("" if v is None else str(v) for v in row)
                         for row in con.execute(sql))
    finally:
        con.close()


class SecretStorageTest(ClientsTestCase):
    def test_secret_is_stored_hashed(self):
        r = v017(self.c, "storage_check", grants="client_credentials")
        self.assertEqual(r.status, 200, r)
        secret, cid = r.json["clientSecret"], r.json["clientId"]
        rows = db_rows(self.srv, "SELECT * FROM km_oauth_client WHERE client_id = '%s'" % cid)
        self.assertIn(cid, rows)
        self.assertNotIn(secret, rows)
        self.assertIn(hashlib.sha256(secret.encode()).hexdigest(), rows)

        j = dcr(self.c, {"client_name": "storage_dcr", "grant_types": ["client_credentials"]}).json
        everything = db_rows(self.srv, "SELECT * FROM km_oauth_client")
        self.assertNotIn(j["client_secret"], everything)
        self.assertNotIn(j["registration_access_token"], everything)
        self.assertIn(hashlib.sha256(j["registration_access_token"].encode()).hexdigest(),
                      everything)

    def test_zz_no_secret_in_the_logs(self):
        # named to run after the other tests of this class; also checked at
        # the end of the token tests
        v017(self.c, "log_check")
        dcr(self.c, {"client_name": "log_check_dcr", "grant_types": ["password"]})
        log = self.srv.stderr()
        self.assertIn("log_check", log)  # registrations are logged, without secrets
        for s in [x for x in ISSUED if x]:
            self.assertNotIn(s, log)


class ClientAuthenticationTest(ClientsTestCase):
    """Client authentication at the token endpoint with issued secrets."""

    def setUp(self):
        super().setUp()
        r = self.anon.post(TOKEN, data=form(grant_type="client_credentials"),
                           content_type="application/x-www-form-urlencoded")
        if r.status == 404:
            self.skipTest("POST /oauth2/token answers 404 on this build (the token endpoint "
                          "is not there yet)")

    def token(self, fields, headers=None):
        return self.anon.post(TOKEN, data=form(**fields),
                              content_type="application/x-www-form-urlencoded", headers=headers)

    def client(self, name, grants="client_credentials password refresh_token"):
        r = v017(self.c, name, grants=grants)
        self.assertEqual(r.status, 200, r)
        return r.json["clientId"], r.json["clientSecret"]

    def test_basic_and_form_authentication(self):
        cid, secret = self.client("auth_ok")
        r = self.token({"grant_type": "client_credentials"}, basic(cid, secret))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json["access_token"], r.json)
        r = self.token({"grant_type": "client_credentials", "client_id": cid,
                        "client_secret": secret})
        self.assertEqual(r.status, 200, r)

    def test_the_reference_flow_password_grant(self):
        cid, secret = self.client("rest_api_flow", grants="password refresh_token")
        r = self.token({"grant_type": "password", "username": "admin",
                        "password": self.srv.admin_password,
                        "scope": "apim:api_view apim:api_create"}, basic(cid, secret))
        self.assertEqual(r.status, 200, r)
        r = self.srv.client(None).get("/api/am/publisher/v4/apis",
                                      headers=bearer(r.json["access_token"]))
        self.assertEqual(r.status, 200, r)

    def test_wrong_secret_is_invalid_client(self):
        cid, secret = self.client("auth_wrong")
        r = self.token({"grant_type": "client_credentials"}, basic(cid, secret + "x"))
        self.assertOAuthError(r, 401, "invalid_client")
        self.assertIn("Basic", r.headers.get("www-authenticate", ""), r.headers)
        r = self.token({"grant_type": "client_credentials"}, basic("no_such_client", secret))
        self.assertOAuthError(r, 401, "invalid_client")
        r = self.token({"grant_type": "client_credentials", "client_id": cid,
                        "client_secret": "nope"})
        self.assertOAuthError(r, 401, "invalid_client")

    def test_too_many_failures_lock_the_client_id(self):
        cid, secret = self.client("auth_limit")
        other_id, other_secret = self.client("auth_limit_other")
        for _ in range(FAILURES_PER_MINUTE):
            r = self.token({"grant_type": "client_credentials"}, basic(cid, "wrong"))
            self.assertOAuthError(r, 401, "invalid_client")
        r = self.token({"grant_type": "client_credentials"}, basic(cid, secret))
        self.assertEqual(r.status, 429, r)
        self.assertNotIn("access_token", r.json or {})
        # another client is not affected
        r = self.token({"grant_type": "client_credentials"}, basic(other_id, other_secret))
        self.assertEqual(r.status, 200, r)

    def test_registering_again_retires_the_old_secret(self):
        cid, old = self.client("auth_rereg")
        cid2, new = self.client("auth_rereg")
        self.assertEqual(cid, cid2)
        r = self.token({"grant_type": "client_credentials"}, basic(cid, old))
        self.assertOAuthError(r, 401, "invalid_client")
        r = self.token({"grant_type": "client_credentials"}, basic(cid, new))
        self.assertEqual(r.status, 200, r)

    def test_grant_types_of_the_client_are_enforced(self):
        cid, secret = self.client("auth_pw_only", grants="password")
        r = self.token({"grant_type": "client_credentials"}, basic(cid, secret))
        self.assertOAuthError(r, 400, "unauthorized_client")

    def test_deleted_client_can_no_longer_authenticate(self):
        j = dcr(self.c, {"client_name": "auth_deleted", "grant_types": ["client_credentials"]}).json
        creds = basic(j["client_id"], j["client_secret"])
        r = self.token({"grant_type": "client_credentials"}, creds)
        self.assertEqual(r.status, 200, r)
        access = r.json["access_token"]
        r = self.anon.delete(DCR + "/" + j["client_id"],
                             headers=bearer(j["registration_access_token"]))
        self.assertEqual(r.status, 204, r)
        r = self.token({"grant_type": "client_credentials"}, creds)
        self.assertOAuthError(r, 401, "invalid_client")
        # its tokens were revoked with it
        r = self.c.post("/oauth2/introspect", data=form(token=access),
                        content_type="application/x-www-form-urlencoded")
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json.get("active"), False, r.json)

    def test_zz_no_secret_in_the_logs(self):
        log = self.srv.stderr()
        for s in [x for x in ISSUED if x]:
            self.assertNotIn(s, log)


if __name__ == "__main__":
    unittest.main()
