"""Developer Portal v3: discovery of APIs (lifecycle states and visibility
for anonymous callers, subscribers, creators and admins), search, the API
object with its gateway URLs, OpenAPI, documents, tags, ratings, comments,
and the reference lists (tiers, Key Manager).

APIs are created through the Publisher API as admin; each class tags its
APIs with its own tag so that searches see only them."""

import secrets
import unittest
import urllib.parse

import apimtest
import test_publisher as pt

DP = "/api/am/devportal/v3"
PUB = pt.PUB
APIS = pt.APIS
LC = PUB + "/apis/change-lifecycle"
UNKNOWN_ID = pt.UNKNOWN_ID
PASSWORD = "Passw0rd!x"


def uniq(prefix):
    return "%s%s" % (prefix, secrets.token_hex(3))


class DevportalCase(unittest.TestCase):
    """A shared server with a subscriber, a creator and a second subscriber."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()
        cls.admin = cls.srv.client()
        cls.anon = cls.srv.client(None)
        cls.sub_name, cls.sub2_name, cls.creator_name = uniq("sub"), uniq("subb"), uniq("cre")
        cls.srv.create_user(cls.sub_name, PASSWORD, ["Internal/subscriber"])
        cls.srv.create_user(cls.sub2_name, PASSWORD, ["Internal/subscriber"])
        cls.srv.create_user(cls.creator_name, PASSWORD, ["Internal/creator"])
        cls.sub = cls.srv.client(cls.sub_name, PASSWORD)
        cls.sub2 = cls.srv.client(cls.sub2_name, PASSWORD)
        cls.creator = cls.srv.client(cls.creator_name, PASSWORD)

    def assertError(self, r, status, *needles):
        pt.assert_error(self, r, status, *needles)

    @classmethod
    def make_api(cls, actions=("Publish",), client=None, **kw):
        """Creates an API through the Publisher and runs lifecycle actions (as admin)."""
        c = client or cls.admin
        r = c.post(APIS, json=pt.api_body(**kw))
        assert r.status == 201, r
        api = r.json
        for action in actions:
            r = cls.admin.post(LC, query={"apiId": api["id"], "action": action})
            assert r.status == 200, r
        return api

    def names(self, client, query, **q):
        q["query"] = query
        q.setdefault("limit", 100)
        r = client.get(DP + "/apis", query=q)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], len(r.json["list"]))
        return sorted(a["name"] for a in r.json["list"])


# ---------------------------------------------------------------- visibility

class VisibilityTest(DevportalCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tag = uniq("vis")
        p = uniq("V")
        mk = cls.make_api
        cls.apis = {
            "public": mk(name=p + "Public", tags=[cls.tag]),
            "restricted": mk(name=p + "Restricted", tags=[cls.tag], visibility="RESTRICTED",
                             visibleRoles=["Internal/creator"]),
            "private": mk(name=p + "Private", tags=[cls.tag], visibility="PRIVATE"),
            "created": mk(actions=(), name=p + "Created", tags=[cls.tag]),
            "prototyped": mk(actions=("Deploy as a Prototype",), name=p + "Prototyped",
                             tags=[cls.tag]),
            "deprecated": mk(actions=("Publish", "Deprecate"), name=p + "Deprecated",
                             tags=[cls.tag]),
            "retired": mk(actions=("Publish", "Deprecate", "Retire"), name=p + "Retired",
                          tags=[cls.tag]),
            "blocked": mk(actions=("Publish", "Block"), name=p + "Blocked", tags=[cls.tag]),
        }
        cls.expected = {
            "anonymous": {"public", "prototyped", "deprecated"},
            "subscriber": {"public", "prototyped", "deprecated", "private"},
            "creator": {"public", "prototyped", "deprecated", "private", "restricted"},
            "admin": {"public", "prototyped", "deprecated", "private", "restricted"},
        }

    def callers(self):
        return {"anonymous": self.anon, "subscriber": self.sub, "creator": self.creator,
                "admin": self.admin}

    def test_listed_apis_per_caller(self):
        for who, client in self.callers().items():
            want = sorted(self.apis[k]["name"] for k in self.expected[who])
            self.assertEqual(self.names(client, "tag:" + self.tag), want, who)

    def test_get_per_caller(self):
        for who, client in self.callers().items():
            for key, api in self.apis.items():
                r = client.get(DP + "/apis/" + api["id"])
                if key in self.expected[who]:
                    self.assertEqual(r.status, 200, (who, key, r))
                    self.assertEqual(r.json["id"], api["id"])
                    self.assertEqual(r.json["name"], api["name"])
                else:
                    # invisible and unknown APIs look the same
                    self.assertError(r, 404, "API %s not found" % api["id"])
                for sub in ("/swagger", "/documents", "/ratings", "/comments"):
                    r = client.get(DP + "/apis/" + api["id"] + sub)
                    self.assertEqual(r.status, 200 if key in self.expected[who] else 404,
                                     (who, key, sub, r))

    def test_unknown_and_malformed_ids(self):
        self.assertError(self.anon.get(DP + "/apis/" + UNKNOWN_ID), 404, UNKNOWN_ID)
        self.assertError(self.admin.get(DP + "/apis/not-a-uuid"), 404)
        self.assertError(self.admin.get(DP + "/apis/" + UNKNOWN_ID + "/swagger"), 404)

    def test_lifecycle_status_shown(self):
        r = self.anon.get(DP + "/apis/" + self.apis["deprecated"]["id"])
        self.assertEqual(r.json["lifeCycleStatus"], "DEPRECATED")
        self.assertFalse(r.json["isSubscriptionAvailable"])
        r = self.anon.get(DP + "/apis/" + self.apis["prototyped"]["id"])
        self.assertEqual(r.json["lifeCycleStatus"], "PROTOTYPED")
        r = self.anon.get(DP + "/apis/" + self.apis["public"]["id"])
        self.assertTrue(r.json["isSubscriptionAvailable"])

    def test_demoting_hides_and_publishing_shows(self):
        api = self.make_api(name=uniq("Flip"), tags=[uniq("flip")])
        self.assertEqual(self.anon.get(DP + "/apis/" + api["id"]).status, 200)
        r = self.admin.post(LC, query={"apiId": api["id"], "action": "Demote to Created"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.anon.get(DP + "/apis/" + api["id"]).status, 404)
        self.assertEqual(self.admin.get(DP + "/apis/" + api["id"]).status, 404)
        # changing the visibility applies at once
        r = self.admin.put(APIS + "/" + api["id"], json={"visibility": "PRIVATE"})
        self.assertEqual(r.status, 200, r)
        r = self.admin.post(LC, query={"apiId": api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.anon.get(DP + "/apis/" + api["id"]).status, 404)
        self.assertEqual(self.sub.get(DP + "/apis/" + api["id"]).status, 200)

    def test_bearer_token_sees_what_the_user_sees(self):
        r = self.admin.post("/client-registration/v0.17/register",
                            json={"clientName": uniq("dpcli"), "owner": "admin",
                                  "grantType": "password refresh_token", "saasApp": True})
        if r.status == 404:
            self.skipTest("no Key Manager in this build")
        self.assertEqual(r.status, 200, r)
        cid, secret = r.json["clientId"], r.json["clientSecret"]
        tok = apimtest.Client(self.srv.base_url, cid, secret).post(
            "/oauth2/token", data=urllib.parse.urlencode(
                {"grant_type": "password", "username": self.creator_name,
                 "password": PASSWORD, "scope": "apim:api_view"}),
            content_type="application/x-www-form-urlencoded")
        self.assertEqual(tok.status, 200, tok)
        bearer = apimtest.Client(self.srv.base_url)
        hdr = {"Authorization": "Bearer " + tok.json["access_token"]}
        r = bearer.get(DP + "/apis", query={"query": "tag:" + self.tag, "limit": 100},
                       headers=hdr)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(a["name"] for a in r.json["list"]),
                         sorted(self.apis[k]["name"] for k in self.expected["creator"]))
        r = bearer.get(DP + "/apis", headers={"Authorization": "Bearer not-a-token"})
        self.assertEqual(r.status, 401, r)


# ---------------------------------------------------------------- search

class SearchTest(DevportalCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tag = uniq("srch")
        cls.word = uniq("zebra")
        p = uniq("S")
        cls.a = cls.make_api(name=p + "Alpha", context="/" + uniq("alphactx"),
                             tags=[cls.tag, "red"], description="Delivers " + cls.word)
        cls.b = cls.make_api(name=p + "Beta" + cls.word, context="/" + uniq("betactx"),
                             tags=[cls.tag, "blue"], description="Plain")
        # an API of the creator (provider), published by the admin
        cls.c = cls.make_api(client=cls.creator, name=p + "Gamma",
                             context="/" + uniq("gammactx"), tags=[cls.tag, "red"],
                             description="Another one")
        # hidden from anonymous callers: never found by them
        cls.hidden = cls.make_api(name=p + "Hidden" + cls.word, tags=[cls.tag, "red"],
                                  visibility="RESTRICTED", visibleRoles=["Internal/creator"])

    def test_by_attribute(self):
        a, b, c = self.a["name"], self.b["name"], self.c["name"]
        self.assertEqual(self.names(self.anon, "name:" + a), [a])
        self.assertEqual(self.names(self.anon, "name:" + a.upper()), [a])
        self.assertEqual(self.names(self.anon, "context:" + self.b["context"]), [b])
        self.assertEqual(self.names(self.anon, "tag:" + self.tag), sorted([a, b, c]))
        self.assertEqual(self.names(self.anon, "tag:%s tag:red" % self.tag), sorted([a, c]))
        self.assertEqual(self.names(self.anon, "provider:%s tag:%s" % (self.creator_name,
                                                                      self.tag)), [c])
        self.assertEqual(self.names(self.anon, "description:" + self.word), [a])
        self.assertEqual(self.names(self.anon, "name:%s version:1.0.0" % a), [a])
        self.assertEqual(self.names(self.anon, "name:%s version:9.9.9" % a), [])
        self.assertEqual(self.names(self.anon, 'name:"%s"' % a[:-1]), [])  # quoted: exact
        self.assertEqual(self.names(self.anon, 'name:"%s"' % a), [a])

    def test_bare_word_searches_name_and_description(self):
        a, b = self.a["name"], self.b["name"]
        self.assertEqual(self.names(self.anon, self.word), sorted([a, b]))
        self.assertEqual(self.names(self.anon, self.word.upper()), sorted([a, b]))
        self.assertEqual(self.names(self.creator, self.word),
                         sorted([a, b, self.hidden["name"]]))
        self.assertEqual(self.names(self.anon, "%s tag:blue" % self.word), [b])
        self.assertEqual(self.names(self.anon, uniq("nothing")), [])

    def test_unknown_attribute(self):
        r = self.anon.get(DP + "/apis", query={"query": "color:red"})
        self.assertError(r, 400, "Unknown search attribute 'color'")

    def test_paging(self):
        q = {"query": "tag:" + self.tag}
        r = self.anon.get(DP + "/apis", query=dict(q, limit=2, offset=0))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 2)
        self.assertEqual(r.json["pagination"]["total"], 3)
        self.assertIn("offset=2", r.json["pagination"]["next"])
        first = [x["id"] for x in r.json["list"]]
        r = self.anon.get(DP + "/apis", query=dict(q, limit=2, offset=2))
        self.assertEqual(r.json["count"], 1)
        self.assertNotIn(r.json["list"][0]["id"], first)
        self.assertEqual(r.json["pagination"]["next"], "")
        self.assertError(self.anon.get(DP + "/apis", query={"limit": "0"}), 400)
        self.assertError(self.anon.get(DP + "/apis", query={"offset": "-1"}), 400)

    def test_list_item_shape(self):
        r = self.anon.get(DP + "/apis", query={"query": "name:" + self.a["name"]})
        item = r.json["list"][0]
        self.assertEqual(item["id"], self.a["id"])
        self.assertEqual(item["context"], self.a["context"])
        self.assertEqual(item["version"], "1.0.0")
        self.assertEqual(item["provider"], "admin")
        self.assertEqual(item["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual(item["throttlingPolicies"], ["Unlimited"])
        self.assertEqual(item["avgRating"], "0.0")
        self.assertEqual(item["type"], "HTTP")


# ---------------------------------------------------------------- API object

class ApiObjectTest(DevportalCase):
    def default_env(self):
        r = self.admin.get("/api/am/admin/v4/environments")
        self.assertEqual(r.status, 200, r)
        env = [e for e in r.json["list"] if e["name"] == "Default"][0]
        return env, env["vhosts"][0]

    def deploy(self, api_id, envs):
        r = self.admin.post(APIS + "/%s/revisions" % api_id, json={"description": "r"})
        self.assertEqual(r.status, 201, r)
        r = self.admin.post(APIS + "/%s/deploy-revision" % api_id,
                            query={"revisionId": r.json["id"]}, json=envs)
        self.assertEqual(r.status, 201, r)

    def test_object_fields(self):
        scopes = [{"scope": {"name": uniq("read_menu"), "displayName": "Read menu",
                             "description": "see the menu", "bindings": ["Internal/subscriber"]},
                   "shared": False}]
        api = self.make_api(name=uniq("Obj"), policies=["Gold", "Unlimited"],
                            tags=["food", "menu"], scopes=scopes,
                            businessInformation={"businessOwner": "Kim",
                                                 "businessOwnerEmail": "kim@example.com"},
                            operations=[{"target": "/menu", "verb": "GET",
                                         "scopes": [scopes[0]["scope"]["name"]]},
                                        {"target": "/order", "verb": "POST",
                                         "throttlingPolicy": "10KPerMin"}])
        r = self.anon.get(DP + "/apis/" + api["id"])
        self.assertEqual(r.status, 200, r)
        o = r.json
        for k in ("name", "context", "version", "provider", "description"):
            self.assertEqual(o[k], api[k], k)
        self.assertEqual(o["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual(o["policies"], ["Gold", "Unlimited"])
        self.assertEqual(o["tiers"], [
            {"tierName": "Gold", "tierPlan": "FREE", "monetizationAttributes": None},
            {"tierName": "Unlimited", "tierPlan": "FREE", "monetizationAttributes": None}])
        self.assertEqual(o["tags"], ["food", "menu"])
        self.assertEqual(o["transport"], ["http", "https"])
        self.assertEqual(o["authorizationHeader"], "Authorization")
        self.assertIn("oauth2", o["securityScheme"])
        self.assertEqual(o["businessInformation"]["businessOwner"], "Kim")
        self.assertEqual(o["scopes"], [{"key": scopes[0]["scope"]["name"], "name": "Read menu",
                                        "roles": ["Internal/subscriber"],
                                        "description": "see the menu"}])
        ops = {(x["verb"], x["target"]): x for x in o["operations"]}
        self.assertEqual(ops[("GET", "/menu")]["scopes"], [scopes[0]["scope"]["name"]])
        self.assertEqual(ops[("POST", "/order")]["throttlingPolicy"], "10KPerMin")
        self.assertEqual(ops[("POST", "/order")]["authType"], "Any")
        self.assertEqual(o["avgRating"], "0.0")
        self.assertEqual(o["endpointURLs"], [])  # not deployed anywhere yet
        r = self.anon.get(DP + "/apis/%s/subscription-policies" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual([p["name"] for p in r.json], ["Gold", "Unlimited"])
        self.assertEqual(r.json[0]["requestCount"], 5000)
        self.assertTrue(o["createdTime"].isdigit())
        self.assertTrue(o["lastUpdatedTime"].isdigit())
        # the Publisher-only parts are not shown
        for hidden in ("endpointConfig", "visibleRoles", "accessControlRoles"):
            self.assertNotIn(hidden, o)

    def test_endpoint_urls_after_deploy(self):
        env, vh = self.default_env()
        api = self.make_api(name=uniq("Deployed"), isDefaultVersion=True)
        self.deploy(api["id"], [{"name": "Default", "vhost": vh["host"],
                                 "displayOnDevportal": True}])
        o = self.anon.get(DP + "/apis/" + api["id"]).json
        path = api["context"] + "/1.0.0"
        self.assertEqual(o["endpointURLs"], [{
            "environmentName": "Default",
            "environmentDisplayName": env["displayName"],
            "environmentType": env["type"],
            "URLs": {"http": "http://%s:%d%s" % (vh["host"], vh["httpPort"], path),
                     "https": "https://%s:%d%s" % (vh["host"], vh["httpsPort"], path),
                     "ws": None, "wss": None},
            "defaultVersionURLs": {
                "http": "http://%s:%d%s" % (vh["host"], vh["httpPort"], api["context"]),
                "https": "https://%s:%d%s" % (vh["host"], vh["httpsPort"], api["context"]),
                "ws": None, "wss": None},
        }])
        self.assertEqual(o["environmentList"], ["Default"])
        # the definition tells consumers where to call it
        r = self.anon.get(DP + "/apis/%s/swagger" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["servers"][0]["url"],
                         "https://%s:%d%s" % (vh["host"], vh["httpsPort"], path))
        r = self.anon.get(DP + "/apis/%s/swagger" % api["id"],
                          query={"environmentName": "Nowhere"})
        self.assertError(r, 404, "Nowhere")

    def test_environment_vhost_and_hidden_deployments(self):
        envname = uniq("env")
        r = self.admin.post("/api/am/admin/v4/environments", json={
            "name": envname, "displayName": "EU gateway", "type": "production",
            "vhosts": [{"host": "eu.example.com", "httpContext": "/gw/", "httpPort": 80,
                        "httpsPort": 8443}]})
        self.assertEqual(r.status, 201, r)
        api = self.make_api(name=uniq("Multi"), transport=["https"])
        self.deploy(api["id"], [{"name": envname, "vhost": "eu.example.com",
                                 "displayOnDevportal": True},
                                {"name": "Default", "vhost": self.default_env()[1]["host"],
                                 "displayOnDevportal": False}])
        o = self.anon.get(DP + "/apis/" + api["id"]).json
        self.assertEqual(len(o["endpointURLs"]), 1, o["endpointURLs"])
        e = o["endpointURLs"][0]
        self.assertEqual(e["environmentName"], envname)
        self.assertEqual(e["environmentDisplayName"], "EU gateway")
        self.assertEqual(e["environmentType"], "production")
        # https only (the API's transport), the vhost's context and port
        self.assertEqual(e["URLs"]["https"],
                         "https://eu.example.com:8443/gw%s/1.0.0" % api["context"])
        self.assertIsNone(e["URLs"]["http"])
        self.assertEqual(e["defaultVersionURLs"]["https"], None)

    def test_swagger(self):
        api = self.make_api(name=uniq("Oas"))
        r = self.anon.get(DP + "/apis/%s/swagger" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json["openapi"].startswith("3."))
        self.assertEqual(r.json["info"]["title"], api["name"])
        self.assertIn("/items", r.json["paths"])
        self.assertIn("get", r.json["paths"]["/items"])

    def test_thumbnail(self):
        api = self.make_api(name=uniq("Thumb"))
        self.assertError(self.anon.get(DP + "/apis/%s/thumbnail" % api["id"]), 404,
                         "no thumbnail")
        created = self.make_api(actions=(), name=uniq("Thumb"))
        self.assertError(self.anon.get(DP + "/apis/%s/thumbnail" % created["id"]), 404,
                         "not found")


# ---------------------------------------------------------------- documents

class DocumentTest(DevportalCase):
    def add_doc(self, api_id, name, visibility, content=None, **kw):
        body = {"name": name, "type": "HOWTO", "sourceType": "INLINE",
                "visibility": visibility, "summary": "about " + name}
        body.update(kw)
        r = self.admin.post(APIS + "/%s/documents" % api_id, json=body)
        self.assertEqual(r.status, 201, r)
        if content is not None:
            r = self.admin.post(APIS + "/%s/documents/%s/content" % (api_id, r.json["documentId"]),
                                data=content.encode(), content_type="text/plain")
            self.assertEqual(r.status, 201, r)
        return r.json

    def test_documents(self):
        api = self.make_api(name=uniq("Docs"))
        pub = self.add_doc(api["id"], "Getting started", "API_LEVEL", "Call GET /items")
        priv = self.add_doc(api["id"], "Internal notes", "PRIVATE", "for members")
        own = self.add_doc(api["id"], "Owner notes", "OWNER_ONLY", "for the provider")
        url = self.add_doc(api["id"], "Forum", "API_LEVEL", type="PUBLIC_FORUM",
                           sourceType="URL", sourceUrl="https://forum.example.com/x")

        def names(client):
            r = client.get(DP + "/apis/%s/documents" % api["id"])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["count"], len(r.json["list"]))
            self.assertEqual(r.json["pagination"]["total"], len(r.json["list"]))
            return sorted(d["name"] for d in r.json["list"])

        self.assertEqual(names(self.anon), ["Forum", "Getting started"])
        self.assertEqual(names(self.sub), ["Forum", "Getting started", "Internal notes"])
        self.assertEqual(names(self.admin), ["Forum", "Getting started", "Internal notes",
                                             "Owner notes"])
        r = self.anon.get(DP + "/apis/%s/documents/%s" % (api["id"], pub["documentId"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], "Getting started")
        self.assertEqual(r.json["type"], "HOWTO")
        self.assertEqual(r.json["sourceType"], "INLINE")
        self.assertEqual(r.json["summary"], "about Getting started")
        r = self.anon.get(DP + "/apis/%s/documents/%s/content" % (api["id"], pub["documentId"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.text, "Call GET /items")
        r = self.anon.get(DP + "/apis/%s/documents/%s/content" % (api["id"], url["documentId"]))
        self.assertEqual(r.status, 303, r)
        self.assertEqual(r.headers["location"], "https://forum.example.com/x")
        # documents the caller may not see are not found
        for doc, client in ((priv, self.anon), (own, self.sub)):
            self.assertError(client.get(DP + "/apis/%s/documents/%s" % (api["id"],
                                                                        doc["documentId"])),
                             404)
            self.assertError(client.get(DP + "/apis/%s/documents/%s/content" % (
                api["id"], doc["documentId"])), 404)
        self.assertEqual(self.sub.get(DP + "/apis/%s/documents/%s/content" % (
            api["id"], priv["documentId"])).text, "for members")
        self.assertError(self.anon.get(DP + "/apis/%s/documents/%s" % (api["id"], UNKNOWN_ID)),
                         404)
        # a document under another API is not found here
        other = self.make_api(name=uniq("Other"))
        self.assertError(self.anon.get(DP + "/apis/%s/documents/%s" % (other["id"],
                                                                       pub["documentId"])),
                         404)

    def test_documents_of_invisible_api(self):
        api = self.make_api(actions=(), name=uniq("Draft"))
        doc = self.add_doc(api["id"], "Draft doc", "API_LEVEL", "secret plans")
        self.assertError(self.admin.get(DP + "/apis/%s/documents" % api["id"]), 404)
        self.assertError(self.admin.get(DP + "/apis/%s/documents/%s/content" % (
            api["id"], doc["documentId"])), 404)


# ---------------------------------------------------------------- tags

class TagTest(DevportalCase):
    def test_tags_count_visible_apis(self):
        t1, t2 = uniq("tg"), uniq("tg")
        self.make_api(name=uniq("T"), tags=[t1, t2])
        self.make_api(name=uniq("T"), tags=[t1])
        self.make_api(name=uniq("T"), tags=[t1], visibility="RESTRICTED",
                      visibleRoles=["Internal/creator"])
        self.make_api(actions=(), name=uniq("T"), tags=[t1, t2])

        def tags(client):
            r = client.get(DP + "/tags", query={"limit": 1000})
            self.assertEqual(r.status, 200, r)
            return {t["value"]: t["count"] for t in r.json["list"]}

        self.assertEqual((tags(self.anon)[t1], tags(self.anon)[t2]), (2, 1))
        self.assertEqual(tags(self.creator)[t1], 3)
        self.assertEqual(tags(self.sub)[t1], 2)


# ---------------------------------------------------------------- ratings

class RatingTest(DevportalCase):
    def rate(self, client, api_id, rating, status=200):
        r = client.put(DP + "/apis/%s/user-rating" % api_id, json={"rating": rating})
        self.assertEqual(r.status, status, r)
        return r

    def ratings(self, client, api_id):
        r = client.get(DP + "/apis/%s/ratings" % api_id)
        self.assertEqual(r.status, 200, r)
        return r.json

    def test_average_of_users(self):
        api = self.make_api(name=uniq("Rated"))
        r = self.rate(self.sub, api["id"], 4)
        self.assertEqual(r.json["rating"], 4)
        self.assertEqual(r.json["ratedBy"], self.sub_name)
        self.assertEqual(r.json["apiId"], api["id"])
        self.rate(self.sub2, api["id"], 5)
        rl = self.ratings(self.anon, api["id"])
        self.assertEqual(rl["avgRating"], "4.5")
        self.assertEqual(rl["count"], 2)
        self.assertEqual(rl["userRating"], 0)  # anonymous
        self.assertEqual(sorted((x["ratedBy"], x["rating"]) for x in rl["list"]),
                         sorted([(self.sub_name, 4), (self.sub2_name, 5)]))
        self.assertEqual(self.ratings(self.sub, api["id"])["userRating"], 4)
        o = self.anon.get(DP + "/apis/" + api["id"]).json
        self.assertEqual((o["avgRating"], o["ratingCount"]), ("4.5", 2))
        item = self.anon.get(DP + "/apis", query={"query": "name:" + api["name"]}).json["list"]
        self.assertEqual(item[0]["avgRating"], "4.5")

    def test_one_rating_per_user(self):
        api = self.make_api(name=uniq("Rated"))
        first = self.rate(self.sub, api["id"], 1).json
        again = self.rate(self.sub, api["id"], 3).json
        self.assertEqual(again["ratingId"], first["ratingId"])
        rl = self.ratings(self.sub, api["id"])
        self.assertEqual((rl["count"], rl["avgRating"], rl["userRating"]), (1, "3.0", 3))
        r = self.sub.get(DP + "/apis/%s/user-rating" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["rating"], 3)
        # the other user has not rated: 0, as the reference answers
        r = self.sub2.get(DP + "/apis/%s/user-rating" % api["id"])
        self.assertEqual((r.status, r.json["rating"]), (200, 0))
        # removing the rating
        r = self.sub.delete(DP + "/apis/%s/user-rating" % api["id"])
        self.assertEqual(r.status, 200, r)
        rl = self.ratings(self.sub, api["id"])
        self.assertEqual((rl["count"], rl["avgRating"], rl["userRating"]), (0, "0.0", 0))
        self.assertError(self.sub.delete(DP + "/apis/%s/user-rating" % api["id"]), 404)

    def test_bad_ratings(self):
        api = self.make_api(name=uniq("Rated"))
        for bad in (0, 6, -1, "5", 4.5, None):
            self.assertError(self.rate(self.sub, api["id"], bad, 400), 400, "1 to 5")
        self.assertError(self.sub.put(DP + "/apis/%s/user-rating" % api["id"], json={}), 400,
                         "rating")
        self.assertEqual(self.ratings(self.anon, api["id"])["count"], 0)

    def test_who_may_rate(self):
        api = self.make_api(name=uniq("Rated"))
        self.assertEqual(self.rate(self.anon, api["id"], 5, 401).status, 401)
        # a creator has no apim:subscribe
        self.assertError(self.rate(self.creator, api["id"], 5, 403), 403, "apim:subscribe")
        hidden = self.make_api(name=uniq("Hidden"), visibility="RESTRICTED",
                               visibleRoles=["Internal/creator"])
        self.assertError(self.rate(self.sub, hidden["id"], 5, 404), 404)
        self.assertError(self.rate(self.sub, UNKNOWN_ID, 5, 404), 404)


# ---------------------------------------------------------------- comments

class CommentTest(DevportalCase):
    def comment(self, client, api_id, content, status=201, **q):
        r = client.post(DP + "/apis/%s/comments" % api_id, json={"content": content,
                                                                 "category": "general"},
                        query=q or None)
        self.assertEqual(r.status, status, r)
        return r.json

    def listing(self, client, api_id):
        r = client.get(DP + "/apis/%s/comments" % api_id)
        self.assertEqual(r.status, 200, r)
        return r.json

    def test_add_list_get_delete(self):
        api = self.make_api(name=uniq("Talk"))
        c1 = self.comment(self.sub, api["id"], "Great API")
        self.assertRegex(c1["id"], pt.UUID_RE)
        self.assertEqual((c1["content"], c1["createdBy"], c1["category"]),
                         ("Great API", self.sub_name, "general"))
        self.assertIn("T", c1["createdTime"])
        c2 = self.comment(self.sub2, api["id"], "Needs more docs")
        lst = self.listing(self.anon, api["id"])
        self.assertEqual(lst["count"], 2)
        self.assertEqual(sorted(c["id"] for c in lst["list"]), sorted([c1["id"], c2["id"]]))
        r = self.anon.get(DP + "/apis/%s/comments/%s" % (api["id"], c1["id"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["content"], "Great API")
        # others' comments cannot be deleted ...
        r = self.sub2.delete(DP + "/apis/%s/comments/%s" % (api["id"], c1["id"]))
        self.assertError(r, 403, "own comments")
        self.assertEqual(self.listing(self.anon, api["id"])["count"], 2)
        # ... own ones can
        r = self.sub.delete(DP + "/apis/%s/comments/%s" % (api["id"], c1["id"]))
        self.assertEqual(r.status, 200, r)
        self.assertError(self.anon.get(DP + "/apis/%s/comments/%s" % (api["id"], c1["id"])), 404)
        self.assertEqual([c["id"] for c in self.listing(self.anon, api["id"])["list"]],
                         [c2["id"]])
        # an admin removes any comment
        r = self.admin.delete(DP + "/apis/%s/comments/%s" % (api["id"], c2["id"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.listing(self.anon, api["id"])["count"], 0)

    def test_content_rules(self):
        api = self.make_api(name=uniq("Talk"))
        self.comment(self.sub, api["id"], "x" * 512)
        self.comment(self.sub, api["id"], "é" * 512)  # characters, not bytes
        for bad in ("", "   ", "x" * 513):
            self.assertError(self.sub.post(DP + "/apis/%s/comments" % api["id"],
                                           json={"content": bad}), 400, "1 to 512")
        self.assertError(self.sub.post(DP + "/apis/%s/comments" % api["id"], json={}), 400,
                         "'content' is required")
        self.assertError(self.sub.post(DP + "/apis/%s/comments" % api["id"],
                                       json={"content": 5}), 400, "content")
        self.assertEqual(self.listing(self.anon, api["id"])["count"], 2)

    def test_who_may_comment(self):
        api = self.make_api(name=uniq("Talk"))
        r = self.anon.post(DP + "/apis/%s/comments" % api["id"], json={"content": "hi"})
        self.assertEqual(r.status, 401, r)
        r = self.creator.post(DP + "/apis/%s/comments" % api["id"], json={"content": "hi"})
        self.assertError(r, 403, "apim:subscribe")
        hidden = self.make_api(name=uniq("Hidden"), visibility="RESTRICTED",
                               visibleRoles=["Internal/creator"])
        self.assertError(self.sub.post(DP + "/apis/%s/comments" % hidden["id"],
                                       json={"content": "hi"}), 404)
        c = self.comment(self.admin, hidden["id"], "internal remark")
        self.assertError(self.sub.get(DP + "/apis/%s/comments/%s" % (hidden["id"], c["id"])),
                         404)
        self.assertError(self.anon.get(DP + "/apis/%s/comments" % hidden["id"]), 404)

    def test_replies_and_edit(self):
        api = self.make_api(name=uniq("Talk"))
        root = self.comment(self.sub, api["id"], "Question?")
        reply = self.comment(self.sub2, api["id"], "Answer.", replyTo=root["id"])
        self.assertEqual(reply["parentCommentId"], root["id"])
        lst = self.listing(self.anon, api["id"])
        self.assertEqual([c["id"] for c in lst["list"]], [root["id"]])
        self.assertEqual([c["id"] for c in lst["list"][0]["replies"]["list"]], [reply["id"]])
        self.assertError(self.sub.post(DP + "/apis/%s/comments" % api["id"],
                                       json={"content": "x"}, query={"replyTo": UNKNOWN_ID}),
                         404)
        self.assertError(self.sub.post(DP + "/apis/%s/comments" % api["id"],
                                       json={"content": "x"}, query={"replyTo": reply["id"]}),
                         400, "is itself a reply")
        # edit own comment; not others'
        r = self.sub.patch(DP + "/apis/%s/comments/%s" % (api["id"], root["id"]),
                           json={"content": "Question (edited)?"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["content"], "Question (edited)?")
        r = self.sub2.patch(DP + "/apis/%s/comments/%s" % (api["id"], root["id"]),
                            json={"content": "hijack"})
        self.assertError(r, 403, "own comments")
        # deleting the root deletes its replies
        self.assertEqual(self.sub.delete(DP + "/apis/%s/comments/%s" % (api["id"],
                                                                       root["id"])).status, 200)
        self.assertError(self.anon.get(DP + "/apis/%s/comments/%s" % (api["id"], reply["id"])),
                         404)

    def test_commenter_info(self):
        api = self.make_api(name=uniq("Talk"))
        self.comment(self.sub, api["id"], "hello")
        r = self.anon.get(DP + "/apis/%s/comments" % api["id"],
                          query={"includeCommenterInfo": "true"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["list"][0]["commenterInfo"]["fullName"], self.sub_name)
        r = self.anon.get(DP + "/apis/%s/comments" % api["id"],
                          query={"includeCommenterInfo": "maybe"})
        self.assertError(r, 400, "includeCommenterInfo")


# ---------------------------------------------------------------- reference lists

class ReferenceListTest(DevportalCase):
    def test_application_tiers(self):
        r = self.anon.get(DP + "/throttling-policies/application")
        self.assertEqual(r.status, 200, r)
        by = {p["name"]: p for p in r.json["list"]}
        for name in ("50PerMin", "20PerMin", "10PerMin", "Unlimited"):
            self.assertIn(name, by)
        p = by["10PerMin"]
        self.assertEqual((p["policyLevel"], p["requestCount"], p["unitTime"], p["timeUnit"],
                          p["tierPlan"], p["stopOnQuotaReach"]),
                         ("application", 10, 1, "min", "FREE", True))
        self.assertEqual(p["displayName"], "10PerMin")
        self.assertIn("10", p["description"])
        r = self.anon.get(DP + "/throttling-policies/application/10PerMin")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["requestCount"], 10)

    def test_subscription_tiers(self):
        r = self.anon.get(DP + "/throttling-policies/subscription", query={"limit": 100})
        self.assertEqual(r.status, 200, r)
        by = {p["name"]: p for p in r.json["list"]}
        for name in ("Gold", "Silver", "Bronze", "Unauthenticated", "Unlimited"):
            self.assertIn(name, by)
        self.assertEqual(by["Gold"]["requestCount"], 5000)
        self.assertEqual(by["Gold"]["policyLevel"], "subscription")
        self.assertNotIn("50PerMin", by)
        r = self.anon.get(DP + "/throttling-policies/subscription/Gold")
        self.assertEqual((r.status, r.json["name"]), (200, "Gold"))
        self.assertError(self.anon.get(DP + "/throttling-policies/subscription/Platinum"), 404,
                         "Platinum")
        self.assertError(self.anon.get(DP + "/throttling-policies/subscription/50PerMin"), 404)

    def test_tier_permissions(self):
        name = uniq("Partner")
        r = self.admin.post("/api/am/admin/v4/throttling/policies/subscription", json={
            "policyName": name, "description": "partners only", "billingPlan": "COMMERCIAL",
            "stopOnQuotaReach": False,
            "defaultLimit": {"type": "REQUESTCOUNTLIMIT",
                             "requestCount": {"timeUnit": "hour", "unitTime": 2,
                                              "requestCount": 700}},
            "permissions": {"permissionType": "ALLOW", "roles": ["Internal/creator"]}})
        self.assertEqual(r.status, 201, r)

        def listed(client):
            r = client.get(DP + "/throttling-policies/subscription", query={"limit": 1000})
            self.assertEqual(r.status, 200, r)
            return {p["name"]: p for p in r.json["list"]}.get(name)

        self.assertIsNone(listed(self.anon))
        self.assertIsNone(listed(self.sub))
        self.assertEqual(self.sub.get(DP + "/throttling-policies/subscription/" + name).status,
                         404)
        p = listed(self.creator)
        self.assertEqual((p["requestCount"], p["unitTime"], p["timeUnit"], p["tierPlan"],
                          p["stopOnQuotaReach"]), (700, 2, "hour", "COMMERCIAL", False))
        self.assertIsNotNone(listed(self.admin))
        # the tiers of an API: the caller's only
        api = self.make_api(name=uniq("Tiers"), policies=[name, "Bronze"])
        for client, want in ((self.anon, ["Bronze"]), (self.sub, ["Bronze"]),
                             (self.creator, [name, "Bronze"])):
            r = client.get(DP + "/apis/%s/subscription-policies" % api["id"])
            self.assertEqual(r.status, 200, r)
            self.assertEqual([p["name"] for p in r.json], want)

    def test_other_levels(self):
        for level in ("advanced", "custom", "api"):
            self.assertError(self.anon.get(DP + "/throttling-policies/" + level), 400,
                             "application or subscription")
        self.assertError(self.anon.get(DP + "/throttling-policies/advanced/Unlimited"), 400,
                         "application or subscription")

    def test_key_managers(self):
        r = self.anon.get(DP + "/key-managers")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 1)
        km = r.json["list"][0]
        self.assertEqual((km["name"], km["type"], km["enabled"]),
                         ("Resident Key Manager", "default", True))
        self.assertEqual(sorted(km["availableGrantTypes"]),
                         ["authorization_code", "client_credentials", "password",
                          "refresh_token"])
        self.assertTrue(km["tokenEndpoint"].endswith(":%d/oauth2/token" % self.srv.port),
                        km["tokenEndpoint"])
        self.assertTrue(km["revokeEndpoint"].endswith("/oauth2/revoke"))
        self.assertEqual(km["applicationConfiguration"], [])
        self.assertEqual(self.sub.get(DP + "/key-managers").json, r.json)


if __name__ == "__main__":
    unittest.main()
