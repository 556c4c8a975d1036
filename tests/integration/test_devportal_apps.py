"""Developer Portal v3: applications, OAuth keys and tokens, API keys and
subscriptions: the consumer journey (create an application, subscribe,
generate keys, use the token, rotate the secret, API keys, delete), every
error case, ownership (another user's things are 404), the authorization
matrix, and the change sequence the gateways follow."""

import base64
import json
import secrets
import unittest
import urllib.parse

import apimtest
import test_publisher as pt

DP = "/api/am/devportal/v3"
APPS = DP + "/applications"
SUBS = DP + "/subscriptions"
PUB = pt.PUB
APIS = pt.APIS
UNKNOWN_ID = pt.UNKNOWN_ID
PW = "Passw0rd!dp"
FORM = "application/x-www-form-urlencoded"
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]

_fixture = {}


def srv():
    return apimtest.shared()


def uniq(prefix):
    return pt.uniq(prefix)


def claims_of(jwt):
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def basic(user, password):
    raw = "%s:%s" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe=""))
    return "Basic " + base64.b64encode(raw.encode()).decode()


def token_request(client_id, secret, form):
    """POST /oauth2/token with client Basic credentials."""
    return srv().client(None).post("/oauth2/token", data=urllib.parse.urlencode(form),
                                   content_type=FORM,
                                   headers={"Authorization": basic(client_id, secret)})


def bearer_get(tok, path, query=None):
    return srv().client(None).get(path, query=query, headers={"Authorization": "Bearer " + tok})


def sql(statement):
    return pt.sql(srv(), statement)


def seq():
    return int(sql("SELECT seq FROM am_change_seq WHERE id = 1")[0][0])


def changes_of(entity_id):
    """[(entity_type, action, payload)] recorded for an entity, in order."""
    rows = sql("SELECT entity_type, action, payload FROM am_change_log WHERE entity_id = '%s' "
               "ORDER BY seq" % entity_id)
    return [(t, a, json.loads(p) if p else None) for t, a, p in rows]


def published_api(policies=("Gold", "Unlimited"), **kw):
    """An API created, revisioned, deployed and published by admin."""
    c = srv().client()
    api = pt.create_api(unittest.TestCase(), c, policies=list(policies), **kw)
    r = c.post(APIS + "/%s/revisions" % api["id"], json={"description": "r1"})
    assert r.status == 201, r
    r = c.post(APIS + "/%s/deploy-revision" % api["id"], query={"revisionId": r.json["id"]},
               json=DEFAULT_ENV)
    assert r.status == 201, r
    r = c.post(PUB + "/apis/change-lifecycle", query={"apiId": api["id"], "action": "Publish"})
    assert r.status == 200, r
    return c.get(APIS + "/" + api["id"]).json


def fixture():
    """Users and APIs shared by every test of the module (made once)."""
    if not _fixture:
        s = srv()
        s.create_user("dp_alice", PW, ["Internal/subscriber"])
        s.create_user("dp_bob", PW, ["Internal/subscriber"])
        s.create_user("dp_carol", PW, ["Internal/creator"])
        _fixture["api"] = published_api()
        _fixture["api2"] = published_api(policies=("Silver",))
        _fixture["created_api"] = pt.create_api(unittest.TestCase(), s.client(),
                                                policies=["Gold"])
    return _fixture


class Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.f = fixture()
        cls.srv = srv()
        cls.admin = cls.srv.client()
        cls.alice = cls.srv.client("dp_alice", PW)
        cls.bob = cls.srv.client("dp_bob", PW)
        cls.carol = cls.srv.client("dp_carol", PW)
        cls.anon = cls.srv.client(None)

    def assertError(self, r, status, *needles):
        pt.assert_error(self, r, status, *needles)

    def app(self, client=None, status=201, **kw):
        body = {"name": uniq("App"), "throttlingPolicy": "Unlimited",
                "description": "test application"}
        body.update(kw)
        r = (client or self.alice).post(APPS, json=body)
        self.assertEqual(r.status, status, r)
        return r.json

    def subscribe(self, app_id, api_id=None, tier="Gold", client=None, status=201):
        r = (client or self.alice).post(SUBS, json={
            "applicationId": app_id, "apiId": api_id or self.f["api"]["id"],
            "throttlingPolicy": tier})
        self.assertEqual(r.status, status, r)
        return r.json

    def keys(self, app_id, client=None, status=200, **kw):
        body = {"keyType": "PRODUCTION", "grantTypesToBeSupported":
                ["client_credentials", "password", "refresh_token"],
                "callbackUrl": "", "scopes": ["apim:subscribe"], "validityTime": 3600}
        body.update(kw)
        r = (client or self.alice).post(APPS + "/%s/generate-keys" % app_id, json=body)
        self.assertEqual(r.status, status, r)
        return r.json


# ---------------------------------------------------------------- journey

class ConsumerJourneyTest(Case):
    def test_journey(self):
        api = self.f["api"]
        start = seq()

        # application
        app = self.app(name=uniq("Journey"), attributes={"ref": "42"})
        self.assertEqual(app["owner"], "dp_alice")
        self.assertEqual(app["status"], "APPROVED")
        self.assertEqual(app["tokenType"], "JWT")
        self.assertEqual(app["attributes"], {"ref": "42"})
        self.assertEqual((app["keys"], app["subscriptionCount"], app["hashEnabled"]),
                         ([], 0, False))
        self.assertEqual(seq(), start + 1)

        # subscription
        sub = self.subscribe(app["applicationId"])
        self.assertEqual(sub["status"], "UNBLOCKED")
        self.assertEqual((sub["throttlingPolicy"], sub["requestedThrottlingPolicy"]),
                         ("Gold", "Gold"))
        self.assertEqual(sub["apiInfo"]["id"], api["id"])
        self.assertEqual(sub["apiInfo"]["name"], api["name"])
        self.assertEqual(sub["apiInfo"]["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual(sub["applicationInfo"]["applicationId"], app["applicationId"])
        self.assertEqual(sub["applicationInfo"]["subscriptionCount"], 1)
        self.assertEqual(seq(), start + 2)

        # keys and the first token
        k = self.keys(app["applicationId"])
        self.assertEqual(seq(), start + 3)
        for f in ("keyMappingId", "consumerKey", "consumerSecret"):
            self.assertTrue(k[f], f)
        self.assertEqual((k["keyType"], k["mode"], k["keyState"], k["keyManager"]),
                         ("PRODUCTION", "CREATED", "COMPLETED", "Resident Key Manager"))
        self.assertEqual(sorted(k["supportedGrantTypes"]),
                         ["client_credentials", "password", "refresh_token"])
        tok = k["token"]["accessToken"]
        self.assertEqual(k["token"]["tokenScopes"], ["apim:subscribe"])
        self.assertEqual(k["token"]["validityTime"], 3600)
        c = claims_of(tok)
        self.assertEqual((c["client_id"], c["sub"]), (k["consumerKey"], "dp_alice"))

        # the token works as a bearer token on the Developer Portal
        r = bearer_get(tok, APPS)
        self.assertEqual(r.status, 200, r)
        self.assertIn(app["applicationId"], [a["applicationId"] for a in r.json["list"]])

        # the key mapping is listed, its secret never again
        r = self.alice.get(APPS + "/%s/oauth-keys" % app["applicationId"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 1)
        listed = r.json["list"][0]
        self.assertEqual(listed["consumerKey"], k["consumerKey"])
        self.assertNotIn("consumerSecret", listed)
        got = self.alice.get(APPS + "/" + app["applicationId"]).json
        self.assertEqual([x["keyMappingId"] for x in got["keys"]], [k["keyMappingId"]])
        self.assertNotIn("consumerSecret", got["keys"][0])
        kpath = APPS + "/%s/oauth-keys/%s" % (app["applicationId"], k["keyMappingId"])

        # generate-token with the secret
        r = self.alice.post(kpath + "/generate-token",
                            json={"consumerSecret": k["consumerSecret"], "validityPeriod": 600,
                                  "scopes": ["apim:subscribe"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["validityTime"], 600)
        self.assertEqual(r.json["tokenScopes"], ["apim:subscribe"])
        self.assertEqual(bearer_get(r.json["accessToken"], APPS).status, 200)
        r = self.alice.post(kpath + "/generate-token", json={"consumerSecret": "wrong"})
        self.assertError(r, 400, "consumerSecret")

        # the token endpoint accepts the keys
        form = {"grant_type": "client_credentials"}
        self.assertEqual(token_request(k["consumerKey"], k["consumerSecret"], form).status, 200)

        # regenerate-secret: the old secret stops working, the new one works
        r = self.alice.post(kpath + "/regenerate-secret")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["consumerKey"], k["consumerKey"])
        new_secret = r.json["consumerSecret"]
        self.assertNotEqual(new_secret, k["consumerSecret"])
        r = token_request(k["consumerKey"], k["consumerSecret"], form)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["error"], "invalid_client")
        self.assertEqual(token_request(k["consumerKey"], new_secret, form).status, 200)
        # tokens issued with the old secret were revoked with it
        self.assertEqual(bearer_get(tok, APPS).status, 401)

        # API key
        before = seq()
        r = self.alice.post(APPS + "/%s/api-keys/PRODUCTION/generate" % app["applicationId"],
                            json={"validityPeriod": 3600,
                                  "additionalProperties": {"permittedIP": "127.0.0.1"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["validityTime"], 3600)
        apikey = r.json["apikey"]
        c = claims_of(apikey)
        self.assertEqual(c["token_type"], "apiKey")
        self.assertEqual(c["keytype"], "PRODUCTION")
        self.assertEqual(c["sub"], "dp_alice")
        self.assertEqual(c["exp"] - c["iat"], 3600)
        self.assertEqual(c["permittedIP"], "127.0.0.1")
        self.assertEqual(c["application"]["uuid"], app["applicationId"])
        self.assertEqual(c["application"]["name"], app["name"])
        self.assertEqual(c["application"]["tier"], "Unlimited")
        self.assertEqual(len(c["subscribedAPIs"]), 1)
        sa = c["subscribedAPIs"][0]
        self.assertEqual((sa["name"], sa["version"], sa["publisher"], sa["subscriptionTier"]),
                         (api["name"], "1.0.0", "admin", "Gold"))
        self.assertEqual(sa["context"], api["context"] + "/1.0.0")
        self.assertEqual(c["tierInfo"]["Gold"]["tierQuotaType"], "requestCount")
        self.assertEqual(seq(), before, "issuing an API key changes nothing gateways hold")
        # an API key is no bearer token for the REST APIs
        self.assertEqual(bearer_get(apikey, APPS).status, 401)

        # revoke it: its jti goes to am_revoked_jwt under the change sequence
        rk = APPS + "/%s/api-keys/PRODUCTION/revoke" % app["applicationId"]
        r = self.alice.post(rk, json={"apikey": apikey})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sql("SELECT COUNT(*) FROM am_revoked_jwt WHERE jti = '%s'"
                             % c["jti"]), [["1"]])
        self.assertEqual(seq(), before + 1)
        self.assertEqual(changes_of(c["jti"])[-1][:2], ("revoked_jwt", "revoke"))

        # delete the application: subscriptions, keys and client go with it
        before = seq()
        r = self.alice.delete(APPS + "/" + app["applicationId"])
        self.assertEqual(r.status, 200, r)
        # subscription, key mapping and application in one transaction, then the
        # client's one live token (from the new secret) revoked with the client
        self.assertEqual(seq(), before + 4)
        self.assertError(self.alice.get(SUBS + "/" + sub["subscriptionId"]), 404)
        self.assertError(self.alice.get(APPS + "/" + app["applicationId"]), 404)
        r = token_request(k["consumerKey"], new_secret, form)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["error"], "invalid_client")
        self.assertEqual(changes_of(app["applicationId"])[-1][:2], ("application", "delete"))
        self.assertEqual(changes_of(sub["subscriptionId"])[-1][:2], ("subscription", "delete"))
        self.assertEqual(changes_of(k["keyMappingId"])[-1][:2], ("key_mapping", "delete"))

    def test_delete_revokes_live_api_keys(self):
        app = self.app()
        self.subscribe(app["applicationId"])
        r = self.alice.post(APPS + "/%s/api-keys/SANDBOX/generate" % app["applicationId"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["validityTime"], -1)
        c = claims_of(r.json["apikey"])
        self.assertGreater(c["exp"] - c["iat"], 99 * 365 * 24 * 3600, "no expiry: 100 years")
        self.assertEqual(c["keytype"], "SANDBOX")
        self.assertEqual(sql("SELECT COUNT(*) FROM am_revoked_jwt WHERE jti = '%s'"
                             % c["jti"]), [["0"]])
        self.assertEqual(self.alice.delete(APPS + "/" + app["applicationId"]).status, 200)
        self.assertEqual(sql("SELECT COUNT(*) FROM am_revoked_jwt WHERE jti = '%s'"
                             % c["jti"]), [["1"]])

    def test_change_records(self):
        app = self.app()
        aid = app["applicationId"]
        self.assertEqual(changes_of(aid), [("application", "create", {
            "name": app["name"], "owner": "dp_alice", "tier": "Unlimited", "tokenType": "JWT",
            "status": "APPROVED", "attributes": {}})])
        sub = self.subscribe(aid)
        self.assertEqual(changes_of(sub["subscriptionId"]), [("subscription", "create", {
            "apiId": self.f["api"]["id"], "applicationId": aid, "tier": "Gold",
            "status": "UNBLOCKED"})])
        before = seq()
        r = self.alice.put(SUBS + "/" + sub["subscriptionId"],
                           json={"applicationId": aid, "apiId": self.f["api"]["id"],
                                 "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(seq(), before + 1)
        self.assertEqual(changes_of(sub["subscriptionId"])[-1],
                         ("subscription", "update", {
                             "apiId": self.f["api"]["id"], "applicationId": aid,
                             "tier": "Unlimited", "status": "UNBLOCKED"}))
        k = self.keys(aid, keyType="SANDBOX")
        self.assertEqual(changes_of(k["keyMappingId"]), [("key_mapping", "create", {
            "applicationId": aid, "consumerKey": k["consumerKey"], "keyType": "SANDBOX"})])
        before = seq()
        r = self.alice.put(APPS + "/" + aid, json={"name": app["name"],
                                                  "throttlingPolicy": "10PerMin"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(seq(), before + 1)
        self.assertEqual(changes_of(aid)[-1][2]["tier"], "10PerMin")
        # refused requests record nothing
        before = seq()
        self.subscribe(aid, status=409)
        self.subscribe(aid, api_id=self.f["api2"]["id"], tier="Gold", status=400)
        self.keys(aid, keyType="SANDBOX", status=409)
        self.app(name=app["name"], status=409)
        self.assertEqual(seq(), before)


# ---------------------------------------------------------------- applications

class ApplicationTest(Case):
    def test_create_and_get(self):
        name = uniq("Shape")
        r = self.alice.post(APPS, json={"name": name, "throttlingPolicy": "50PerMin",
                                        "description": "d", "tokenType": "JWT",
                                        "groups": [], "attributes": {"a": "b"},
                                        "applicationId": "ignored", "owner": "mallory"})
        self.assertEqual(r.status, 201, r)
        app = r.json
        self.assertTrue(pt.UUID_RE.match(app["applicationId"]), app)
        self.assertTrue(r.headers["location"].endswith(APPS + "/" + app["applicationId"]))
        self.assertEqual((app["name"], app["throttlingPolicy"], app["description"],
                          app["owner"]), (name, "50PerMin", "d", "dp_alice"))
        self.assertTrue(app["createdTime"].isdigit())
        r = self.alice.get(APPS + "/" + app["applicationId"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, app)

    def test_validation(self):
        cases = [
            ({"throttlingPolicy": "Unlimited"}, "'name' is required"),
            ({"name": "x" * 101, "throttlingPolicy": "Unlimited"}, "1 to 100"),
            ({"name": " padded", "throttlingPolicy": "Unlimited"}, "space"),
            ({"name": 5, "throttlingPolicy": "Unlimited"}, "'name' must be a string"),
            ({"name": uniq("a")}, "'throttlingPolicy' is required"),
            ({"name": uniq("a"), "throttlingPolicy": "Gold"}, "not an application-level"),
            ({"name": uniq("a"), "throttlingPolicy": "Nope"}, "Unlimited"),
            ({"name": uniq("a"), "throttlingPolicy": "Unlimited", "tokenType": "SAML"},
             "tokenType"),
            ({"name": uniq("a"), "throttlingPolicy": "Unlimited", "attributes": {"x": 1}},
             "Attribute 'x' must be a string"),
            ({"name": uniq("a"), "throttlingPolicy": "Unlimited", "attributes": []},
             "'attributes'"),
            ({"name": uniq("a"), "throttlingPolicy": "Unlimited", "description": "d" * 513},
             "'description'"),
            ({"name": uniq("a"), "throttlingPolicy": "Unlimited", "groups": "g"}, "'groups'"),
        ]
        for body, needle in cases:
            self.assertError(self.alice.post(APPS, json=body), 400, needle)
        self.assertError(self.alice.post(APPS, data=b"{", content_type="application/json"),
                         400, "Malformed")
        # 100 characters (not bytes) is fine
        self.app(name="\u00e9" * 100)
        self.app(name=uniq("Oauth"), tokenType="OAUTH")

    def test_name_unique_per_owner(self):
        name = uniq("Same")
        self.app(name=name)
        self.assertError(self.alice.post(APPS, json={"name": name,
                                                     "throttlingPolicy": "Unlimited"}),
                         409, name)
        self.app(client=self.bob, name=name)

    def test_list_own_only_and_admin_sees_all(self):
        tag = uniq("L")
        mine = [self.app(name="%s-a%d" % (tag, i)) for i in range(3)]
        theirs = self.app(client=self.bob, name=tag + "-b")
        r = self.alice.get(APPS, query={"query": tag})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(a["applicationId"] for a in r.json["list"]),
                         sorted(a["applicationId"] for a in mine))
        self.assertEqual(r.json["pagination"]["total"], 3)
        r = self.alice.get(APPS, query={"query": tag, "limit": 2, "offset": 1})
        self.assertEqual((r.json["count"], r.json["pagination"]["total"]), (2, 3))
        self.assertEqual([a["name"] for a in r.json["list"]], [tag + "-a1", tag + "-a2"])
        r = self.alice.get(APPS, query={"query": tag, "sortOrder": "desc"})
        self.assertEqual(r.json["list"][0]["name"], tag + "-a2")
        r = self.admin.get(APPS, query={"query": tag})
        self.assertEqual(r.json["pagination"]["total"], 4)
        self.assertIn(theirs["applicationId"], [a["applicationId"] for a in r.json["list"]])
        self.assertError(self.alice.get(APPS, query={"sortBy": "color"}), 400, "sortBy")
        self.assertError(self.alice.get(APPS, query={"limit": "x"}), 400)

    def test_update(self):
        app = self.app()
        path = APPS + "/" + app["applicationId"]
        new = uniq("Renamed")
        r = self.alice.put(path, json={"name": new, "throttlingPolicy": "20PerMin",
                                       "description": "changed", "attributes": {"k": "v"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["name"], r.json["throttlingPolicy"], r.json["description"],
                          r.json["attributes"]), (new, "20PerMin", "changed", {"k": "v"}))
        self.assertEqual(self.alice.get(path).json["name"], new)
        other = self.app()
        self.assertError(self.alice.put(path, json={"name": other["name"],
                                                    "throttlingPolicy": "Unlimited"}), 409)
        self.assertError(self.alice.put(path, json={"name": new, "throttlingPolicy": "Bad"}),
                         400, "application-level")
        r = self.alice.put(path, json={"name": new, "throttlingPolicy": "Unlimited"},
                           headers={"If-Match": '"stale"'})
        self.assertEqual(r.status, 412, r)
        etag = self.alice.get(path).headers["etag"]
        r = self.alice.put(path, json={"name": new, "throttlingPolicy": "Unlimited"},
                           headers={"If-Match": etag})
        self.assertEqual(r.status, 200, r)

    def test_rename_keeps_keys_usable(self):
        app = self.app()
        k = self.keys(app["applicationId"])
        r = self.alice.put(APPS + "/" + app["applicationId"],
                           json={"name": uniq("New"), "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 200, r)
        # the old name is free again, keys included
        again = self.app(name=app["name"])
        self.keys(again["applicationId"])
        self.assertEqual(token_request(k["consumerKey"], k["consumerSecret"],
                                       {"grant_type": "client_credentials"}).status, 200)

    def test_other_users_application_is_404(self):
        app = self.app(client=self.bob)
        aid = app["applicationId"]
        for r in (self.alice.get(APPS + "/" + aid),
                  self.alice.put(APPS + "/" + aid, json={"name": "x",
                                                         "throttlingPolicy": "Unlimited"}),
                  self.alice.delete(APPS + "/" + aid),
                  self.alice.post(APPS + "/%s/generate-keys" % aid,
                                  json={"keyType": "PRODUCTION",
                                        "grantTypesToBeSupported": ["client_credentials"]}),
                  self.alice.get(APPS + "/%s/oauth-keys" % aid),
                  self.alice.post(APPS + "/%s/api-keys/PRODUCTION/generate" % aid, json={}),
                  self.alice.post(SUBS, json={"applicationId": aid,
                                              "apiId": self.f["api"]["id"],
                                              "throttlingPolicy": "Gold"}),
                  self.alice.get(SUBS, query={"applicationId": aid})):
            self.assertError(r, 404, aid)
        self.assertEqual(self.bob.get(APPS + "/" + aid).status, 200)
        # admins see and manage every application
        self.assertEqual(self.admin.get(APPS + "/" + aid).status, 200)
        self.assertError(self.alice.get(APPS + "/" + UNKNOWN_ID), 404, UNKNOWN_ID)

    def test_admin_deletes_anothers_application(self):
        app = self.app(client=self.bob)
        self.assertEqual(self.admin.delete(APPS + "/" + app["applicationId"]).status, 200)
        self.assertError(self.bob.get(APPS + "/" + app["applicationId"]), 404)


# ---------------------------------------------------------------- keys

class KeysTest(Case):
    def test_generate_validation(self):
        aid = self.app()["applicationId"]
        gk = APPS + "/%s/generate-keys" % aid
        ok = {"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]}
        cases = [
            (dict(ok, keyType="TEST"), "'keyType'"),
            ({"grantTypesToBeSupported": ["client_credentials"]}, "'keyType'"),
            (dict(ok, grantTypesToBeSupported=None), "'grantTypesToBeSupported' is required"),
            (dict(ok, grantTypesToBeSupported=["magic"]), "unsupported grant type"),
            (dict(ok, grantTypesToBeSupported=["implicit"]), "at least one of"),
            (dict(ok, grantTypesToBeSupported=["authorization_code"]), "callback"),
            (dict(ok, keyManager="Okta"), "Key Manager 'Okta' not found"),
            (dict(ok, validityTime="soon"), "'validityTime'"),
            (dict(ok, scopes="apim:subscribe"), "'scopes'"),
            (dict(ok, additionalProperties={"application_access_token_expiry_time": "x"}),
             "application_access_token_expiry_time"),
        ]
        for body, needle in cases:
            self.assertError(self.alice.post(gk, json=body), 400, needle)
        self.assertEqual(self.alice.get(APPS + "/%s/oauth-keys" % aid).json["count"], 0)

    def test_reference_request_and_deprecated_paths(self):
        """A request as the reference's Developer Portal sends it: grants we do
        not implement are left out, validityTime is a string."""
        aid = self.app()["applicationId"]
        k = self.keys(aid, keyType="SANDBOX", keyManager="Resident Key Manager",
                      grantTypesToBeSupported=[
                          "refresh_token", "urn:ietf:params:oauth:grant-type:saml2-bearer",
                          "password", "client_credentials", "iwa:ntlm",
                          "urn:ietf:params:oauth:grant-type:jwt-bearer"],
                      callbackUrl="www.example.com", validityTime="1800",
                      additionalProperties={"application_access_token_expiry_time": "N/A",
                                            "refresh_token_expiry_time": "86400"})
        self.assertEqual(sorted(k["supportedGrantTypes"]),
                         ["client_credentials", "password", "refresh_token"])
        self.assertEqual(k["callbackUrl"], "www.example.com")
        self.assertEqual(k["token"]["validityTime"], 1800)
        self.assertEqual(k["additionalProperties"]["refresh_token_expiry_time"], "86400")
        # a SANDBOX key pair and a PRODUCTION one live side by side
        self.keys(aid, keyType="PRODUCTION")
        r = self.alice.get(APPS + "/%s/keys" % aid)
        self.assertEqual([x["keyType"] for x in r.json["list"]], ["PRODUCTION", "SANDBOX"])
        r = self.alice.get(APPS + "/%s/keys/SANDBOX" % aid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["keyMappingId"], k["keyMappingId"])
        r = self.alice.post(APPS + "/%s/keys/SANDBOX/generate-token" % aid,
                            json={"consumerSecret": k["consumerSecret"]})
        self.assertEqual(r.status, 200, r)
        self.assertError(self.alice.get(APPS + "/%s/keys/OTHER" % aid), 400)

    def test_no_client_credentials_no_first_token(self):
        aid = self.app()["applicationId"]
        k = self.keys(aid, grantTypesToBeSupported=["password", "refresh_token"])
        self.assertIsNone(k["token"])
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, k["keyMappingId"])
        r = self.alice.post(kpath + "/generate-token",
                            json={"consumerSecret": k["consumerSecret"]})
        self.assertError(r, 400, "client_credentials")

    def test_update_keys(self):
        aid = self.app()["applicationId"]
        k = self.keys(aid)
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, k["keyMappingId"])
        before = seq()
        r = self.alice.put(kpath, json={"supportedGrantTypes": ["password", "authorization_code"],
                                        "callbackUrl": "https://app.example/cb",
                                        "additionalProperties": {"note": "x"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(seq(), before + 1)
        self.assertEqual(sorted(r.json["supportedGrantTypes"]), ["authorization_code", "password"])
        self.assertEqual(r.json["callbackUrl"], "https://app.example/cb")
        self.assertEqual(r.json["additionalProperties"], {"note": "x"})
        self.assertEqual(self.alice.get(kpath).json["callbackUrl"], "https://app.example/cb")
        # client_credentials is gone: no more application tokens
        r = self.alice.post(kpath + "/generate-token",
                            json={"consumerSecret": k["consumerSecret"]})
        self.assertError(r, 400, "client_credentials")
        r = token_request(k["consumerKey"], k["consumerSecret"],
                          {"grant_type": "client_credentials"})
        self.assertEqual(r.status, 400, r)
        self.assertError(self.alice.put(kpath, json={"callbackUrl": None}), 400, "callback")
        self.assertError(self.alice.get(APPS + "/%s/oauth-keys/%s" % (aid, UNKNOWN_ID)), 404)

    def test_generate_twice_is_409_and_clean_up(self):
        aid = self.app()["applicationId"]
        k = self.keys(aid)
        self.assertError(self.alice.post(APPS + "/%s/generate-keys" % aid, json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]}),
            409, k["keyMappingId"])
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, k["keyMappingId"])
        before = seq()
        self.assertEqual(self.alice.post(kpath + "/clean-up").status, 200)
        self.assertEqual(seq(), before + 2, "the mapping, and the first token revoked")
        self.assertError(self.alice.get(kpath), 404)
        r = token_request(k["consumerKey"], k["consumerSecret"],
                          {"grant_type": "client_credentials"})
        self.assertEqual(r.json["error"], "invalid_client")
        self.keys(aid)  # and they can be generated again

    def test_generate_token_revokes_the_old_one(self):
        aid = self.app()["applicationId"]
        k = self.keys(aid)
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, k["keyMappingId"])
        old = k["token"]["accessToken"]
        self.assertEqual(bearer_get(old, APPS).status, 200)
        r = self.alice.post(kpath + "/generate-token",
                            json={"consumerSecret": k["consumerSecret"], "revokeToken": old,
                                  "scopes": ["apim:subscribe"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(bearer_get(old, APPS).status, 401)
        self.assertEqual(bearer_get(r.json["accessToken"], APPS).status, 200)

    def test_map_existing_client(self):
        r = self.alice.post("/client-registration/v0.17/register", json={
            "clientName": uniq("mine"), "owner": "dp_alice",
            "grantType": "client_credentials password", "saasApp": True})
        self.assertEqual(r.status, 200, r)
        cid, csec = r.json["clientId"], r.json["clientSecret"]
        aid = self.app()["applicationId"]
        mk = APPS + "/%s/map-keys" % aid
        self.assertError(self.alice.post(mk, json={"consumerKey": cid, "consumerSecret": "no",
                                                   "keyType": "SANDBOX"}), 400, "do not match")
        self.assertError(self.alice.post(mk, json={"consumerKey": cid, "keyType": "SANDBOX"}),
                         400, "consumerSecret")
        before = seq()
        r = self.alice.post(mk, json={"consumerKey": cid, "consumerSecret": csec,
                                      "keyType": "SANDBOX", "keyManager": "Resident Key Manager"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(seq(), before + 1)
        self.assertEqual((r.json["mode"], r.json["keyType"], r.json["consumerKey"]),
                         ("MAPPED", "SANDBOX", cid))
        # one application per client
        other = self.app()["applicationId"]
        self.assertError(self.alice.post(APPS + "/%s/map-keys" % other, json={
            "consumerKey": cid, "consumerSecret": csec, "keyType": "SANDBOX"}), 409)
        # bob cannot map alice's client even with its secret
        bobs = self.app(client=self.bob)["applicationId"]
        self.assertError(self.bob.post(APPS + "/%s/map-keys" % bobs, json={
            "consumerKey": cid, "consumerSecret": csec, "keyType": "PRODUCTION"}),
            400, "belongs to user dp_alice")
        # clean-up (and deleting the application) leave a mapped client alone
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, r.json["keyMappingId"])
        self.assertEqual(self.alice.post(kpath + "/clean-up").status, 200)
        self.assertEqual(token_request(cid, csec, {"grant_type": "client_credentials"}).status,
                         200)

    def test_other_users_keys_are_404(self):
        aid = self.app()["applicationId"]
        k = self.keys(aid)
        kpath = APPS + "/%s/oauth-keys/%s" % (aid, k["keyMappingId"])
        for r in (self.bob.get(kpath), self.bob.put(kpath, json={}),
                  self.bob.post(kpath + "/generate-token",
                                json={"consumerSecret": k["consumerSecret"]}),
                  self.bob.post(kpath + "/regenerate-secret"),
                  self.bob.post(kpath + "/clean-up")):
            self.assertError(r, 404)
        # a key mapping of another application of the same owner is not this one's
        other = self.app()["applicationId"]
        self.assertError(self.alice.get(APPS + "/%s/oauth-keys/%s"
                                        % (other, k["keyMappingId"])), 404)


# ---------------------------------------------------------------- API keys

class ApiKeyTest(Case):
    def test_validation_and_revoke_errors(self):
        aid = self.app()["applicationId"]
        gen = APPS + "/%s/api-keys/%%s/generate" % aid
        self.assertError(self.alice.post(gen % "TEST", json={}), 400, "PRODUCTION or SANDBOX")
        self.assertError(self.alice.post(gen % "PRODUCTION", json={"validityPeriod": "x"}),
                         400, "validityPeriod")
        self.assertError(self.alice.post(gen % "PRODUCTION", json={"validityPeriod": -5}),
                         400, "validityPeriod")
        self.assertError(self.alice.post(gen % "PRODUCTION", json={
            "additionalProperties": {"permittedIP": 5}}), 400, "permittedIP")
        key = self.alice.post(gen % "PRODUCTION", json={"validityPeriod": 60}).json["apikey"]
        rv = APPS + "/%s/api-keys/%%s/revoke" % aid
        self.assertError(self.alice.post(rv % "PRODUCTION", json={}), 400, "'apikey'")
        self.assertError(self.alice.post(rv % "PRODUCTION", json={"apikey": "abc"}), 400,
                         "not a valid API key")
        self.assertError(self.alice.post(rv % "SANDBOX", json={"apikey": key}), 400,
                         "PRODUCTION")
        other = self.app()["applicationId"]
        self.assertError(self.alice.post(APPS + "/%s/api-keys/PRODUCTION/revoke" % other,
                                         json={"apikey": key}), 400, "does not belong")
        # an access token is no API key
        k = self.keys(aid)
        self.assertError(self.alice.post(rv % "PRODUCTION",
                                         json={"apikey": k["token"]["accessToken"]}),
                         400, "not an API key")
        self.assertEqual(self.alice.post(rv % "PRODUCTION", json={"apikey": key}).status, 200)
        self.assertEqual(self.alice.post(rv % "PRODUCTION", json={"apikey": key}).status, 200)

    def test_snapshot_excludes_blocked_and_lists_tiers(self):
        aid = self.app()["applicationId"]
        s1 = self.subscribe(aid)
        self.subscribe(aid, api_id=self.f["api2"]["id"], tier="Silver")
        r = self.admin.post(PUB + "/subscriptions/block-subscription",
                            query={"subscriptionId": s1["subscriptionId"],
                                   "blockState": "BLOCKED"})
        self.assertEqual(r.status, 200, r)
        r = self.alice.post(APPS + "/%s/api-keys/PRODUCTION/generate" % aid,
                            json={"validityPeriod": 0,
                                  "additionalProperties": {"permittedReferer": "*.example"}})
        self.assertEqual(r.status, 200, r)
        c = claims_of(r.json["apikey"])
        self.assertEqual([a["name"] for a in c["subscribedAPIs"]], [self.f["api2"]["name"]])
        self.assertEqual(list(c["tierInfo"]), ["Silver"])
        self.assertEqual(c["permittedReferer"], "*.example")
        self.assertNotIn("permittedIP", c)


# ---------------------------------------------------------------- subscriptions

class SubscriptionTest(Case):
    def test_errors(self):
        aid = self.app()["applicationId"]
        api = self.f["api"]
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": api["id"],
                                                     "throttlingPolicy": "Bronze"}),
                         400, "'Bronze' is not available", "Gold, Unlimited")
        self.assertError(self.alice.post(SUBS, json={
            "applicationId": aid, "apiId": self.f["created_api"]["id"],
            "throttlingPolicy": "Gold"}), 400, "CREATED", "PUBLISHED or PROTOTYPED")
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": UNKNOWN_ID,
                                                     "throttlingPolicy": "Gold"}), 404,
                         UNKNOWN_ID)
        self.assertError(self.alice.post(SUBS, json={"apiId": api["id"],
                                                     "throttlingPolicy": "Gold"}),
                         400, "'applicationId' is required")
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": api["id"]}),
                         400, "'throttlingPolicy' is required")
        self.assertError(self.alice.post(SUBS, json=[]), 400)
        sub = self.subscribe(aid)
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": api["id"],
                                                     "throttlingPolicy": "Unlimited"}),
                         409, "already subscribed", sub["subscriptionId"])

    def test_lifecycle_states(self):
        api = published_api()
        aid = self.app()["applicationId"]
        r = self.admin.post(PUB + "/apis/change-lifecycle",
                            query={"apiId": api["id"], "action": "Deprecate"})
        self.assertEqual(r.status, 200, r)
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": api["id"],
                                                     "throttlingPolicy": "Gold"}),
                         400, "DEPRECATED")
        proto = pt.create_api(self, self.admin, policies=["Gold"])
        r = self.admin.post(PUB + "/apis/change-lifecycle",
                            query={"apiId": proto["id"], "action": "Deploy as a Prototype"})
        self.assertEqual(r.status, 200, r)
        self.subscribe(aid, api_id=proto["id"])

    def test_restricted_api_is_404_for_others(self):
        api = published_api(visibility="RESTRICTED", visibleRoles=["admin"])
        aid = self.app()["applicationId"]
        self.assertError(self.alice.post(SUBS, json={"applicationId": aid, "apiId": api["id"],
                                                     "throttlingPolicy": "Gold"}), 404)
        admins = self.app(client=self.admin)["applicationId"]
        self.subscribe(admins, api_id=api["id"], client=self.admin)

    def test_list_get_update_delete(self):
        api = self.f["api"]
        aid = self.app()["applicationId"]
        bobs = self.app(client=self.bob)["applicationId"]
        sub = self.subscribe(aid)
        self.subscribe(aid, api_id=self.f["api2"]["id"], tier="Silver")
        self.subscribe(bobs, client=self.bob)
        self.assertError(self.alice.get(SUBS), 400, "applicationId", "apiId")
        r = self.alice.get(SUBS, query={"applicationId": aid})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["pagination"]["total"], 2)
        self.assertEqual(sorted(s["apiId"] for s in r.json["list"]),
                         sorted([api["id"], self.f["api2"]["id"]]))
        r = self.alice.get(SUBS, query={"applicationId": aid, "limit": 1})
        self.assertEqual((r.json["count"], r.json["pagination"]["total"]), (1, 2))
        # by API: only the caller's applications
        r = self.alice.get(SUBS, query={"apiId": api["id"]})
        owners = {s["applicationInfo"]["owner"] for s in r.json["list"]}
        self.assertEqual(owners, {"dp_alice"})
        r = self.admin.get(SUBS, query={"apiId": api["id"]})
        self.assertIn(bobs, [s["applicationId"] for s in r.json["list"]])
        self.assertError(self.alice.get(SUBS, query={"apiId": UNKNOWN_ID}), 404)

        path = SUBS + "/" + sub["subscriptionId"]
        r = self.alice.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["subscriptionId"], sub["subscriptionId"])
        self.assertError(self.bob.get(path), 404)
        self.assertEqual(self.admin.get(path).status, 200)

        r = self.alice.put(path, json={"throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["throttlingPolicy"], r.json["requestedThrottlingPolicy"]),
                         ("Unlimited", "Unlimited"))
        self.assertEqual(self.alice.get(path).json["throttlingPolicy"], "Unlimited")
        self.assertError(self.alice.put(path, json={"throttlingPolicy": "Silver"}), 400,
                         "Gold, Unlimited")
        self.assertError(self.alice.put(path, json={}), 400, "'throttlingPolicy'")
        self.assertError(self.alice.put(path, json={"throttlingPolicy": "Gold",
                                                    "apiId": self.f["api2"]["id"]}), 400,
                         "cannot change")
        self.assertError(self.bob.put(path, json={"throttlingPolicy": "Gold"}), 404)
        self.assertError(self.bob.delete(path), 404)

        before = seq()
        self.assertEqual(self.alice.delete(path).status, 200)
        self.assertEqual(seq(), before + 1)
        self.assertError(self.alice.get(path), 404)
        self.assertError(self.alice.delete(path), 404)
        self.subscribe(aid)  # and subscribe again

    def test_blocked_subscription(self):
        aid = self.app()["applicationId"]
        sub = self.subscribe(aid)
        path = SUBS + "/" + sub["subscriptionId"]
        r = self.admin.post(PUB + "/subscriptions/block-subscription",
                            query={"subscriptionId": sub["subscriptionId"],
                                   "blockState": "BLOCKED"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.alice.get(path).json["status"], "BLOCKED")
        before = seq()
        self.assertError(self.alice.put(path, json={"throttlingPolicy": "Gold",
                                                    "status": "UNBLOCKED"}),
                         400, "cannot be changed here")
        self.assertError(self.alice.put(path, json={"throttlingPolicy": "Unlimited"}), 400,
                         "BLOCKED")
        self.assertError(self.alice.delete(path), 400, "BLOCKED", "unblock")
        self.assertError(self.alice.post(SUBS, json={
            "applicationId": aid, "apiId": self.f["api"]["id"], "throttlingPolicy": "Gold"}),
            409)
        self.assertEqual(seq(), before)
        self.assertEqual(self.alice.get(path).json["status"], "BLOCKED")

    def test_multiple_all_or_nothing(self):
        a1 = self.app()["applicationId"]
        a2 = self.app()["applicationId"]
        api = self.f["api"]["id"]
        bad = [{"applicationId": a1, "apiId": api, "throttlingPolicy": "Gold"},
               {"applicationId": a2, "apiId": api, "throttlingPolicy": "Platinum"}]
        before = seq()
        self.assertError(self.alice.post(SUBS + "/multiple", json=bad), 400, "Platinum")
        dup = [{"applicationId": a1, "apiId": api, "throttlingPolicy": "Gold"},
               {"applicationId": a1, "apiId": api, "throttlingPolicy": "Unlimited"}]
        self.assertError(self.alice.post(SUBS + "/multiple", json=dup), 409, "1 and 2")
        self.assertError(self.alice.post(SUBS + "/multiple", json={}), 400, "array")
        self.assertEqual(seq(), before)
        self.assertEqual(self.alice.get(SUBS, query={"applicationId": a1}).json["count"], 0)
        good = [{"applicationId": a1, "apiId": api, "throttlingPolicy": "Gold"},
                {"applicationId": a2, "apiId": api, "throttlingPolicy": "Unlimited"}]
        r = self.alice.post(SUBS + "/multiple", json=good)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(s["applicationId"], s["throttlingPolicy"], s["status"])
                          for s in r.json],
                         [(a1, "Gold", "UNBLOCKED"), (a2, "Unlimited", "UNBLOCKED")])
        self.assertEqual(seq(), before + 2)


# ---------------------------------------------------------------- authorization

class AuthorizationTest(Case):
    def test_anonymous_is_401(self):
        aid = self.app()["applicationId"]
        for method, path in (("GET", APPS), ("POST", APPS), ("GET", APPS + "/" + aid),
                             ("POST", APPS + "/%s/generate-keys" % aid),
                             ("POST", APPS + "/%s/api-keys/PRODUCTION/generate" % aid),
                             ("GET", SUBS), ("POST", SUBS), ("POST", SUBS + "/multiple")):
            r = self.anon.request(method, path, json={} if method == "POST" else None)
            self.assertEqual(r.status, 401, "%s %s: %r" % (method, path, r))

    def test_creator_without_subscriber_scopes_is_403(self):
        aid = self.app()["applicationId"]
        for method, path in (("GET", APPS), ("POST", APPS),
                             ("POST", APPS + "/%s/generate-keys" % aid),
                             ("POST", APPS + "/%s/api-keys/PRODUCTION/generate" % aid),
                             ("GET", SUBS), ("POST", SUBS)):
            r = self.carol.request(method, path, json={} if method == "POST" else None)
            self.assertEqual(r.status, 403, "%s %s: %r" % (method, path, r))

    def test_bearer_token_scopes(self):
        """A user token with apim:subscribe works; without it, 403."""
        r = self.alice.post("/client-registration/v0.17/register", json={
            "clientName": uniq("rest"), "owner": "dp_alice",
            "grantType": "password refresh_token", "saasApp": True})
        self.assertEqual(r.status, 200, r)
        cid, csec = r.json["clientId"], r.json["clientSecret"]
        r = token_request(cid, csec, {"grant_type": "password", "username": "dp_alice",
                                      "password": PW, "scope": "apim:subscribe"})
        self.assertEqual(r.status, 200, r)
        tok = r.json["access_token"]
        r = srv().client(None).post(APPS, json={"name": uniq("Bearer"),
                                                "throttlingPolicy": "Unlimited"},
                                    headers={"Authorization": "Bearer " + tok})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["owner"], "dp_alice")
        r = token_request(cid, csec, {"grant_type": "password", "username": "dp_alice",
                                      "password": PW, "scope": "openid"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(bearer_get(r.json["access_token"], APPS).status, 403)


if __name__ == "__main__":
    unittest.main()
