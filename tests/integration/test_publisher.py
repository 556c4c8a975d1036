"""Publisher v4 REST API: APIs (create, read, search, update, delete, copy),
validation messages, the lifecycle, and the OpenAPI definition (generated,
replaced, imported; JSON and YAML).

The helpers at the top are also used by test_publisher_revisions.py and
test_publisher_roles.py (import test_publisher as pt)."""

import json
import os
import re
import secrets
import subprocess
import unittest

import apimtest

PUB = "/api/am/publisher/v4"
APIS = PUB + "/apis"
UNKNOWN_ID = "00000000-0000-4000-8000-00000000abcd"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def uniq(prefix):
    return "%s%s" % (prefix, secrets.token_hex(3))


def api_body(name=None, **kw):
    """A complete, valid API object; keyword arguments replace fields."""
    name = name or uniq("Api")
    b = {"name": name, "context": "/" + name.lower(), "version": "1.0.0",
         "description": "test API", "tags": ["test"],
         "policies": ["Unlimited"],
         "endpointConfig": {"endpoint_type": "http",
                            "production_endpoints": {"url": "http://127.0.0.1:9/backend"}},
         "operations": [{"target": "/items", "verb": "GET"},
                        {"target": "/items/{itemId}", "verb": "PUT"}]}
    b.update(kw)
    return b


def create_api(tc, client, **kw):
    r = client.post(APIS, json=api_body(**kw))
    tc.assertEqual(r.status, 201, r)
    return r.json


def assert_error(tc, r, status, *needles):
    """r is an error of status whose description mentions every needle."""
    tc.assertEqual(r.status, status, r)
    body = r.json
    tc.assertIsInstance(body, dict, r)
    tc.assertEqual(body.get("code"), status, r)
    for n in needles:
        tc.assertIn(n, body.get("description", ""), r)


def multipart(fields):
    """fields: [(name, value, filename or None, content type or None)] ->
    (body bytes, Content-Type)."""
    boundary = "----apimtest" + secrets.token_hex(8)
    out = b""
    for name, value, filename, ctype in fields:
        if isinstance(value, str):
            value = value.encode("utf-8")
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += b"--" + boundary.encode() + b"\r\n"
        out += ("Content-Disposition: %s\r\n" % disp).encode()
        if ctype is not None:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, "multipart/form-data; boundary=" + boundary


def sql(srv, statement, db="apimgt"):
    """Runs SQL on the server's database (sqlite3 or psql CLI); returns rows
    as lists of strings."""
    if apimtest.is_postgresql():
        url = srv.apimgtdb_url if db == "apimgt" else srv.shareddb_url
        argv = ["psql", "-X", "-q", "-t", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", url,
                "-c", statement]
    else:
        argv = ["sqlite3", "-separator", "|",
                os.path.join(srv.home, "apimgt.db" if db == "apimgt" else "shared.db"),
                statement]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("SQL failed: %s: %s" % (statement, r.stderr))
    return [line.split("|") for line in r.stdout.splitlines() if line.strip()]


def changes(srv, entity_id):
    """(action, payload dict) of the change log entries of an entity, in order."""
    rows = sql(srv, "SELECT action, payload FROM am_change_log WHERE entity_id = '%s' "
                    "ORDER BY seq" % entity_id)
    return [(a, json.loads(p) if p else None) for a, p in rows]


class PublisherCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()
        cls.c = cls.srv.client()

    def create(self, **kw):
        api = create_api(self, self.c, **kw)
        self.addCleanup(lambda: self.c.delete(APIS + "/" + api["id"]))
        return api

    def assertError(self, r, status, *needles):
        assert_error(self, r, status, *needles)


# ---------------------------------------------------------------- CRUD

class ApiCrudTest(PublisherCase):
    def test_create_returns_the_normalised_api(self):
        name = uniq("Pizza")
        r = self.c.post(APIS, json=api_body(name, context="pizza" + name.lower() + "/",
                                            operations=[{"target": "/menu", "verb": "get"},
                                                        {"target": "/order/{id}",
                                                         "verb": "POST",
                                                         "authType": "Application"}]))
        self.assertEqual(r.status, 201, r)
        api = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + api["id"]))
        self.assertRegex(api["id"], UUID_RE)
        self.assertEqual(r.headers.get("location"), APIS + "/" + api["id"])
        self.assertEqual(api["name"], name)
        self.assertEqual(api["context"], "/pizza" + name.lower())
        self.assertEqual(api["version"], "1.0.0")
        self.assertEqual(api["provider"], "admin")
        self.assertEqual(api["lifeCycleStatus"], "CREATED")
        self.assertEqual(api["type"], "HTTP")
        self.assertEqual(api["transport"], ["http", "https"])
        self.assertEqual(api["visibility"], "PUBLIC")
        self.assertEqual(api["securityScheme"], ["oauth2", "oauth_basic_auth_api_key_mandatory"])
        self.assertFalse(api["isDefaultVersion"])
        self.assertTrue(api["createdTime"].isdigit())
        self.assertEqual(api["policies"], ["Unlimited"])
        ops = api["operations"]
        self.assertEqual([(o["target"], o["verb"], o["authType"], o["throttlingPolicy"])
                          for o in ops],
                         [("/menu", "GET", "Any", "Unlimited"),
                          ("/order/{id}", "POST", "Application", "Unlimited")])
        self.assertFalse(api["corsConfiguration"]["corsConfigurationEnabled"])

    def test_get_and_etag(self):
        api = self.create()
        r = self.c.get(APIS + "/" + api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, api)
        etag = r.headers.get("etag")
        self.assertTrue(etag)
        r = self.c.get(APIS + "/" + api["id"], headers={"If-None-Match": etag})
        self.assertEqual(r.status, 304)

    def test_defaults_without_operations(self):
        api = self.create(operations=None)
        self.assertEqual(sorted(o["verb"] for o in api["operations"]),
                         ["DELETE", "GET", "PATCH", "POST", "PUT"])
        self.assertEqual({o["target"] for o in api["operations"]}, {"/*"})

    def test_endpoint_kinds(self):
        lb = {"endpoint_type": "load_balance",
              "production_endpoints": [{"url": "http://10.0.0.1:8080/"},
                                       {"url": "https://10.0.0.2/"}],
              "sandbox_endpoints": [{"url": "http://sandbox:8080/"}]}
        api = self.create(endpointConfig=lb)
        self.assertEqual(len(api["endpointConfig"]["production_endpoints"]), 2)
        self.assertEqual(api["endpointConfig"]["algoClassName"],
                         "org.apache.synapse.endpoints.algorithms.RoundRobin")
        fo = {"endpoint_type": "failover",
              "production_endpoints": {"url": "http://primary/"},
              "production_failovers": [{"url": "http://backup1/"}, {"url": "http://backup2/"}]}
        api = self.create(endpointConfig=fo)
        self.assertEqual(len(api["endpointConfig"]["production_failovers"]), 2)
        sandbox_only = {"endpoint_type": "http", "sandbox_endpoints": {"url": "https://sb/"}}
        api = self.create(endpointConfig=sandbox_only)
        self.assertNotIn("production_endpoints", api["endpointConfig"])

    def test_scopes_and_operation_scopes(self):
        scopes = [{"scope": {"name": "menu_read", "displayName": "Read menu",
                             "description": "read", "bindings": ["Internal/subscriber"]},
                   "shared": False}]
        api = self.create(scopes=scopes,
                          operations=[{"target": "/menu", "verb": "GET",
                                       "scopes": ["menu_read"]}])
        self.assertEqual(api["scopes"][0]["scope"]["name"], "menu_read")
        self.assertEqual(api["scopes"][0]["scope"]["bindings"], ["Internal/subscriber"])
        self.assertEqual(api["operations"][0]["scopes"], ["menu_read"])

    def test_list_paging_and_search(self):
        tag = uniq("tag")
        names = [uniq("Srch") for _ in range(3)]
        for n in names:
            self.create(name=n, tags=[tag])
        r = self.c.get(APIS, query={"query": "tag:" + tag, "limit": 2})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 2)
        self.assertEqual(r.json["pagination"]["total"], 3)
        self.assertIn("offset=2", r.json["pagination"]["next"])
        r = self.c.get(APIS, query={"query": "tag:" + tag, "limit": 2, "offset": 2})
        self.assertEqual(r.json["count"], 1)
        info = r.json["list"][0]
        for k in ("id", "name", "context", "version", "provider", "lifeCycleStatus", "type"):
            self.assertIn(k, info)
        # sorted by name, both ways
        r = self.c.get(APIS, query={"query": "tag:" + tag, "sortBy": "name",
                                    "sortOrder": "desc"})
        self.assertEqual([a["name"] for a in r.json["list"]], sorted(names, reverse=True))
        # attribute searches
        target = names[1]
        for q in ("name:" + target, target.lower(), "context:/" + target.lower(),
                  'name:"%s"' % target, "name:%s tag:%s" % (target, tag)):
            r = self.c.get(APIS, query={"query": q})
            self.assertEqual(r.status, 200, r)
            self.assertEqual([a["name"] for a in r.json["list"]], [target], q)
        r = self.c.get(APIS, query={"query": "provider:admin tag:" + tag})
        self.assertEqual(r.json["count"], 3)
        r = self.c.get(APIS, query={"query": 'name:"%s"' % target[:-1]})
        self.assertEqual(r.json["count"], 0)
        r = self.c.get(APIS, query={"query": "status:PUBLISHED tag:" + tag})
        self.assertEqual(r.json["count"], 0)
        self.assertError(self.c.get(APIS, query={"query": "colour:red"}), 400, "colour")
        self.assertError(self.c.get(APIS, query={"sortBy": "size"}), 400, "sortBy")
        self.assertError(self.c.get(APIS, query={"limit": 0}), 400, "limit")

    def test_update(self):
        api = self.create()
        body = dict(api)
        body.update({"description": "changed", "tags": ["a", "b"], "name": "Renamed",
                     "context": "/renamed", "version": "9.9",
                     "operations": [{"target": "/things", "verb": "DELETE",
                                     "throttlingPolicy": "10KPerMin"}]})
        r = self.c.put(APIS + "/" + api["id"], json=body)
        self.assertEqual(r.status, 200, r)
        got = r.json
        self.assertEqual(got["description"], "changed")
        self.assertEqual(got["tags"], ["a", "b"])
        # name, context, version and provider are not changed by PUT (as the reference)
        self.assertEqual((got["name"], got["context"], got["version"]),
                         (api["name"], api["context"], api["version"]))
        self.assertEqual([(o["target"], o["verb"], o["throttlingPolicy"])
                          for o in got["operations"]], [("/things", "DELETE", "10KPerMin")])
        self.assertGreaterEqual(int(got["lastUpdatedTime"]), int(api["lastUpdatedTime"]))
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).json, got)
        # a partial body keeps the other fields
        r = self.c.put(APIS + "/" + api["id"], json={"description": "again"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["tags"], ["a", "b"])
        # tag search follows the update
        r = self.c.get(APIS, query={"query": "tag:b name:" + api["name"]})
        self.assertEqual(r.json["count"], 1)

    def test_update_if_match(self):
        api = self.create()
        url = APIS + "/" + api["id"]
        etag = self.c.get(url).headers["etag"]
        r = self.c.put(url, json={"description": "x"}, headers={"If-Match": '"stale"'})
        self.assertEqual(r.status, 412, r)
        self.assertEqual(self.c.get(url).json["description"], api["description"])
        r = self.c.put(url, json={"description": "y"}, headers={"If-Match": etag})
        self.assertEqual(r.status, 200, r)
        # the old ETag no longer matches
        r = self.c.put(url, json={"description": "z"}, headers={"If-Match": etag})
        self.assertEqual(r.status, 412, r)

    def test_update_validation_leaves_api_unchanged(self):
        api = self.create()
        url = APIS + "/" + api["id"]
        self.assertError(self.c.put(url, json={"policies": ["NoSuchTier"]}), 400, "NoSuchTier")
        self.assertError(self.c.put(url, json={"visibility": "SECRET"}), 400, "visibility")
        self.assertError(self.c.put(url, json={"bogus": 1}), 400, "bogus")
        self.assertEqual(self.c.get(url).json, api)

    def test_delete(self):
        api = create_api(self, self.c)
        url = APIS + "/" + api["id"]
        r = self.c.delete(url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.get(url).status, 404)
        self.assertError(self.c.delete(url), 404, api["id"])
        self.assertEqual(changes(self.srv, api["id"])[-1][0], "delete")

    def test_unknown_api_is_404(self):
        for path in ("", "/swagger", "/lifecycle-state", "/revisions", "/deployments",
                     "/documents"):
            self.assertError(self.c.get(APIS + "/" + UNKNOWN_ID + path), 404, UNKNOWN_ID)
        self.assertError(self.c.put(APIS + "/" + UNKNOWN_ID, json={"description": "x"}), 404)
        self.assertError(self.c.delete(APIS + "/" + UNKNOWN_ID), 404)
        self.assertError(self.c.post(PUB + "/apis/change-lifecycle",
                                     query={"apiId": UNKNOWN_ID, "action": "Publish"}), 404)

    def test_duplicates_are_409(self):
        api = self.create()
        # same context and version under another name
        self.assertError(self.c.post(APIS, json=api_body(context=api["context"])), 409,
                         "API with context %s and version 1.0.0 already exists"
                         % api["context"])
        # same name and version under another context
        self.assertError(self.c.post(APIS, json=api_body(api["name"],
                                                         context=uniq("/other"))),
                         409, api["name"], "already exists")
        # the same gateway path written with {version}
        self.assertError(self.c.post(APIS, json=api_body(context=api["context"] +
                                                         "/{version}")), 409, "context")
        # another version of the same context is fine
        self.create(name=api["name"], context=api["context"], version="2.0.0")

    def test_malformed_bodies(self):
        self.assertError(self.c.post(APIS, data="{bad json", content_type="application/json"),
                         400, "Malformed JSON")
        self.assertError(self.c.post(APIS, json=[1, 2]), 400, "JSON object")
        r = self.c.post(APIS, data="name=x", content_type="text/plain")
        self.assertEqual(r.status, 415, r)
        self.assertError(self.c.post(APIS, data="", content_type="application/json"), 400,
                         "missing")

    def test_admin_may_create_for_another_provider(self):
        api = self.create(provider="someone")
        self.assertEqual(api["provider"], "someone")


# ---------------------------------------------------------------- validation

class ApiValidationTest(PublisherCase):
    CASES = [
        ({"colour": "red"}, "Unknown field 'colour'"),
        ({"name": 42}, "'name' must be a string"),
        ({"tags": "food"}, "'tags' must be an array"),
        ({"isDefaultVersion": "yes"}, "'isDefaultVersion' must be a boolean"),
        ({"cacheTimeout": "long"}, "'cacheTimeout' must be an integer"),
        ({"name": ""}, "'name'"),
        ({"name": "bad/name"}, "'name'"),
        ({"version": "1.0 beta"}, "'version'"),
        ({"context": "/pizza shop"}, "'context'"),
        ({"context": "/a//b"}, "//"),
        ({"context": "/_apim/metrics"}, "reserved"),
        ({"context": "_apim"}, "reserved"),
        ({"context": "/{id}/x"}, "{version}"),
        ({"context": "/" + "c" * 210}, "200"),
        ({"type": "GRAPHQL"}, "not supported"),
        ({"type": "SOAPY"}, "'type'"),
        ({"transport": ["ftp"]}, "transport"),
        ({"transport": []}, "transport"),
        ({"visibility": "HIDDEN"}, "visibility"),
        ({"visibility": "RESTRICTED"}, "visibleRoles"),
        ({"securityScheme": ["kerberos"]}, "securityScheme"),
        ({"securityScheme": ["mutualssl"]}, "not supported"),
        ({"policies": ["Platinum"]}, "Subscription policy 'Platinum'"),
        ({"apiThrottlingPolicy": "1PerDay"}, "'1PerDay'"),
        ({"operations": [{"target": "/a", "verb": "GET", "throttlingPolicy": "Gold"}]},
         "'Gold'"),
        ({"operations": [{"target": "/a b", "verb": "GET"}]}, "operations[0].target"),
        ({"operations": [{"target": "a", "verb": "GET"}]}, "must start with /"),
        ({"operations": [{"target": "/a?x=1", "verb": "GET"}]}, "query"),
        ({"operations": [{"target": "/*/a", "verb": "GET"}]}, "wildcard"),
        ({"operations": [{"target": "/{id", "verb": "GET"}]}, "unclosed"),
        ({"operations": [{"target": "/a", "verb": "BREW"}]}, "operations[0].verb"),
        ({"operations": [{"target": "/a"}]}, "operations[0].verb"),
        ({"operations": [{"verb": "GET"}]}, "operations[0].target"),
        ({"operations": [{"target": "/a", "verb": "GET", "authType": "Everyone"}]},
         "authType"),
        ({"operations": [{"target": "/a", "verb": "GET"}, {"target": "/a", "verb": "get"}]},
         "twice"),
        ({"operations": [{"target": "/a", "verb": "GET", "scopes": ["nope"]}]},
         "does not declare"),
        ({"operations": [{"target": "/a", "verb": "GET", "color": 1}]}, "operations[0].color"),
        ({"operations": "GET /a"}, "'operations' must be an array"),
        ({"endpointConfig": {"endpoint_type": "http"}}, "production_endpoints or"),
        ({"endpointConfig": {"production_endpoints": {"url": "http://x/"}}}, "endpoint_type"),
        ({"endpointConfig": {"endpoint_type": "awslambda"}}, "not supported"),
        ({"endpointConfig": {"endpoint_type": "http",
                             "production_endpoints": {"url": "ftp://files/"}}},
         "production_endpoints.url"),
        ({"endpointConfig": {"endpoint_type": "http",
                             "production_endpoints": {"url": "http:// spaced/"}}}, "spaces"),
        ({"endpointConfig": {"endpoint_type": "http",
                             "production_endpoints": {"uri": "http://x/"}}}, "uri"),
        ({"endpointConfig": {"endpoint_type": "load_balance", "production_endpoints": []}},
         "at least one endpoint"),
        ({"endpointConfig": {"endpoint_type": "http", "production_endpoints": {"url": "http://x/"},
                             "production_failovers": [{"url": "http://y/"}]}}, "failover"),
        ({"scopes": [{"scope": {"displayName": "x"}}]}, "scopes[0].scope.name"),
        ({"scopes": [{"scope": {"name": "a"}}, {"scope": {"name": "a"}}]}, "twice"),
        ({"maxTps": {"production": "fast"}}, "maxTps.production"),
        ({"corsConfiguration": {"accessControlAllowOrigins": ["ftp://x"]}}, "origin"),
        ({"subscriptionAvailability": "EVERYWHERE"}, "subscriptionAvailability"),
    ]

    def test_rejections_name_the_field(self):
        for change, needle in self.CASES:
            with self.subTest(change=change):
                body = api_body()
                body.update(change)
                r = self.c.post(APIS, json=body)
                if r.status == 201:
                    self.c.delete(APIS + "/" + r.json["id"])
                self.assertError(r, 400, needle)

    def test_nothing_created_on_error(self):
        name = uniq("Never")
        body = api_body(name, policies=["Platinum"])
        self.assertEqual(self.c.post(APIS, json=body).status, 400)
        self.assertEqual(self.c.get(APIS, query={"query": "name:" + name}).json["count"], 0)

    def test_nulls_mean_defaults(self):
        api = self.create(apiThrottlingPolicy=None, description=None, maxTps=None,
                          wsdlInfo=None, lifeCycleStatus="PUBLISHED", id=UNKNOWN_ID)
        self.assertIsNone(api["apiThrottlingPolicy"])
        self.assertEqual(api["lifeCycleStatus"], "CREATED")  # read-only
        self.assertNotEqual(api["id"], UNKNOWN_ID)            # read-only


# ---------------------------------------------------------------- copy

class CopyApiTest(PublisherCase):
    COPY = PUB + "/apis/copy-api"

    def test_new_version(self):
        api = self.create(isDefaultVersion=True)
        r = self.c.post(APIS + "/%s/documents" % api["id"],
                        json={"name": "Guide", "type": "HOWTO", "sourceType": "INLINE",
                              "inlineContent": "hello"})
        self.assertEqual(r.status, 201, r)
        r = self.c.post(self.COPY, query={"apiId": api["id"], "newVersion": "2.0.0",
                                          "defaultVersion": "true"})
        self.assertEqual(r.status, 201, r)
        new = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + new["id"]))
        self.assertNotEqual(new["id"], api["id"])
        self.assertEqual((new["name"], new["context"], new["version"], new["lifeCycleStatus"]),
                         (api["name"], api["context"], "2.0.0", "CREATED"))
        self.assertEqual(new["operations"], api["operations"])
        self.assertTrue(new["isDefaultVersion"])
        self.assertFalse(self.c.get(APIS + "/" + api["id"]).json["isDefaultVersion"])
        docs = self.c.get(APIS + "/%s/documents" % new["id"]).json
        self.assertEqual([d["name"] for d in docs["list"]], ["Guide"])
        # the same version again
        self.assertError(self.c.post(self.COPY, query={"apiId": api["id"],
                                                       "newVersion": "2.0.0"}),
                         409, "already exists")
        self.assertError(self.c.post(self.COPY, query={"apiId": api["id"],
                                                       "newVersion": "1.0.0"}), 409)

    def test_bad_requests(self):
        api = self.create()
        self.assertError(self.c.post(self.COPY, query={"apiId": api["id"]}), 400, "newVersion")
        self.assertError(self.c.post(self.COPY, query={"newVersion": "2"}), 400, "apiId")
        self.assertError(self.c.post(self.COPY, query={"apiId": UNKNOWN_ID, "newVersion": "2"}),
                         404)
        self.assertError(self.c.post(self.COPY, query={"apiId": api["id"],
                                                       "newVersion": "2 beta"}), 400, "version")
        self.assertError(self.c.post(self.COPY, query={"apiId": api["id"], "newVersion": "3",
                                                       "defaultVersion": "maybe"}),
                         400, "defaultVersion")


# ---------------------------------------------------------------- lifecycle

class LifecycleTest(PublisherCase):
    LC = PUB + "/apis/change-lifecycle"

    def act(self, api_id, action, status=200, **q):
        q.update({"apiId": api_id, "action": action})
        r = self.c.post(self.LC, query=q)
        self.assertEqual(r.status, status, r)
        return r

    def test_state_of_a_new_api(self):
        api = self.create()
        r = self.c.get(APIS + "/%s/lifecycle-state" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["state"], "Created")
        self.assertEqual(r.json["availableTransitions"],
                         [{"event": "Publish", "targetState": "Published"},
                          {"event": "Deploy as a Prototype", "targetState": "Prototyped"}])
        self.assertEqual(len(r.json["checkItems"]), 2)

    def test_full_lifecycle(self):
        api = self.create()
        steps = [("Deploy as a Prototype", "Prototyped", "PROTOTYPED"),
                 ("Publish", "Published", "PUBLISHED"),
                 ("Block", "Blocked", "BLOCKED"),
                 ("Re-Publish", "Published", "PUBLISHED"),
                 ("Demote to Created", "Created", "CREATED"),
                 ("Publish", "Published", "PUBLISHED"),
                 ("Deprecate", "Deprecated", "DEPRECATED"),
                 ("Retire", "Retired", "RETIRED")]
        for action, label, status in steps:
            r = self.act(api["id"], action)
            self.assertEqual(r.json["lifecycleState"]["state"], label)
            self.assertIn("workflowStatus", r.json)
            self.assertEqual(self.c.get(APIS + "/" + api["id"]).json["lifeCycleStatus"], status)
        r = self.c.get(APIS + "/%s/lifecycle-state" % api["id"])
        self.assertEqual(r.json["availableTransitions"], [])
        self.assertError(self.act(api["id"], "Publish", 400), 400, "RETIRED",
                         "no further action")

    def test_invalid_transitions(self):
        api = self.create()
        self.assertError(self.act(api["id"], "Block", 400), 400,
                         "Action 'Block' is not allowed for an API in state CREATED",
                         "Publish, Deploy as a Prototype")
        self.assertError(self.act(api["id"], "Retire", 400), 400, "CREATED")
        self.assertError(self.act(api["id"], "Launch", 400), 400, "Unknown lifecycle action")
        self.assertError(self.c.post(self.LC, query={"apiId": api["id"]}), 400, "action")
        self.assertError(self.c.post(self.LC, query={"action": "Publish"}), 400, "apiId")
        self.act(api["id"], "Publish")
        self.assertError(self.act(api["id"], "Re-Publish", 400), 400,
                         "Block, Deploy as a Prototype, Demote to Created, Deprecate, Publish")

    def test_publish_needs_endpoint_and_policy(self):
        api = self.create(endpointConfig=None)
        self.assertError(self.act(api["id"], "Publish", 400), 400, "endpoint")
        api = self.create(policies=[])
        self.assertError(self.act(api["id"], "Publish", 400), 400, "subscription policy")
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).json["lifeCycleStatus"], "CREATED")

    def test_deprecate_old_versions(self):
        v1 = self.create()
        self.act(v1["id"], "Publish")
        r = self.c.post(PUB + "/apis/copy-api", query={"apiId": v1["id"], "newVersion": "2.0.0"})
        self.assertEqual(r.status, 201, r)
        v2 = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + v2["id"]))
        other = self.create()  # another API: untouched
        self.act(other["id"], "Publish")
        self.act(v2["id"], "Publish",
                 lifecycleChecklist="Deprecate old versions after publishing the API:true,"
                                    "Requires re-subscription when publishing the API:false")
        self.assertEqual(self.c.get(APIS + "/" + v1["id"]).json["lifeCycleStatus"], "DEPRECATED")
        self.assertEqual(self.c.get(APIS + "/" + v2["id"]).json["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual(self.c.get(APIS + "/" + other["id"]).json["lifeCycleStatus"],
                         "PUBLISHED")

    def test_search_by_status(self):
        tag = uniq("lc")
        a = self.create(tags=[tag])
        self.create(tags=[tag])
        self.act(a["id"], "Publish")
        r = self.c.get(APIS, query={"query": "status:PUBLISHED tag:" + tag})
        self.assertEqual([x["id"] for x in r.json["list"]], [a["id"]])


# ---------------------------------------------------------------- OpenAPI

OAS = {
    "openapi": "3.0.1",
    "info": {"title": "Petstore", "version": "1.0.0", "description": "pets"},
    "servers": [{"url": "http://127.0.0.1:9/petstore"}],
    "paths": {
        "/pets": {
            "get": {"summary": "List pets", "responses": {"200": {"description": "ok"}},
                    "x-auth-type": "None", "x-throttling-tier": "10KPerMin"},
            "post": {"responses": {"201": {"description": "made"}},
                     "security": [{"default": ["pets_write"]}]},
        },
        "/pets/{petId}": {
            "parameters": [{"name": "petId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": {"x-auth-type": "Application User",
                       "responses": {"204": {"description": "gone"}}},
        },
    },
    "components": {"securitySchemes": {"default": {
        "type": "oauth2",
        "flows": {"implicit": {"authorizationUrl": "https://test.com",
                               "scopes": {"pets_write": "write pets"},
                               "x-scopes-bindings": {"pets_write": "admin,Internal/creator"}}}}}},
}

OAS_YAML = """openapi: 3.0.3
info:
  title: Yaml Store
  version: '2.1'
paths:
  /orders:
    get:
      x-auth-type: Application
      responses:
        '200':
          description: ok
  /orders/{id}:
    patch:
      responses:
        200:
          description: ok
"""


class OpenApiTest(PublisherCase):
    def swagger(self, api_id):
        r = self.c.get(APIS + "/%s/swagger" % api_id)
        self.assertEqual(r.status, 200, r)
        return r.json

    def test_generated_definition(self):
        scopes = [{"scope": {"name": "read_items", "description": "read",
                             "bindings": ["admin", "Internal/subscriber"]}}]
        api = self.create(scopes=scopes,
                          operations=[{"target": "/items", "verb": "GET",
                                       "scopes": ["read_items"]},
                                      {"target": "/items/{itemId}", "verb": "PUT",
                                       "authType": "Application",
                                       "throttlingPolicy": "20KPerMin"}])
        o = self.swagger(api["id"])
        self.assertEqual(o["openapi"], "3.0.1")
        self.assertEqual(o["info"]["title"], api["name"])
        self.assertEqual(o["info"]["version"], "1.0.0")
        get = o["paths"]["/items"]["get"]
        self.assertEqual(get["x-auth-type"], "Application & Application User")
        self.assertEqual(get["x-throttling-tier"], "Unlimited")
        self.assertEqual(get["security"], [{"default": ["read_items"]}])
        put = o["paths"]["/items/{itemId}"]["put"]
        self.assertEqual(put["x-auth-type"], "Application")
        self.assertEqual(put["x-throttling-tier"], "20KPerMin")
        self.assertEqual(put["parameters"][0]["name"], "itemId")
        flows = o["components"]["securitySchemes"]["default"]["flows"]["implicit"]
        self.assertEqual(flows["scopes"], {"read_items": "read"})
        self.assertEqual(flows["x-scopes-bindings"], {"read_items": "admin,Internal/subscriber"})
        self.assertEqual(o["x-wso2-basePath"], api["context"] + "/1.0.0")

    def check_petstore_operations(self, api):
        ops = {(o["target"], o["verb"]): o for o in api["operations"]}
        self.assertEqual(set(ops), {("/pets", "GET"), ("/pets", "POST"),
                                    ("/pets/{petId}", "DELETE")})
        self.assertEqual(ops[("/pets", "GET")]["authType"], "None")
        self.assertEqual(ops[("/pets", "GET")]["throttlingPolicy"], "10KPerMin")
        self.assertEqual(ops[("/pets", "POST")]["scopes"], ["pets_write"])
        self.assertEqual(ops[("/pets/{petId}", "DELETE")]["authType"], "Application User")
        self.assertEqual([s["scope"]["name"] for s in api["scopes"]], ["pets_write"])
        self.assertEqual(api["scopes"][0]["scope"]["bindings"], ["admin", "Internal/creator"])

    def test_put_multipart(self):
        api = self.create()
        body, ctype = multipart([("apiDefinition", json.dumps(OAS), None, None)])
        r = self.c.put(APIS + "/%s/swagger" % api["id"], data=body, content_type=ctype)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["paths"]["/pets"]["get"]["summary"], "List pets")
        got = self.c.get(APIS + "/" + api["id"]).json
        self.check_petstore_operations(got)
        # the stored definition keeps what it said, with the API's identity
        o = self.swagger(api["id"])
        self.assertEqual(o["paths"]["/pets"]["get"]["summary"], "List pets")
        self.assertEqual(o["info"]["title"], api["name"])
        # an API update that drops an operation drops its path too
        ops = [x for x in got["operations"] if x["verb"] != "DELETE"]
        self.assertEqual(self.c.put(APIS + "/" + api["id"], json={"operations": ops}).status,
                         200)
        o = self.swagger(api["id"])
        self.assertNotIn("/pets/{petId}", o["paths"])
        self.assertEqual(o["paths"]["/pets"]["get"]["summary"], "List pets")

    def test_put_raw_json_and_yaml(self):
        api = self.create()
        r = self.c.put(APIS + "/%s/swagger" % api["id"], data=json.dumps(OAS),
                       content_type="application/json")
        self.assertEqual(r.status, 200, r)
        self.check_petstore_operations(self.c.get(APIS + "/" + api["id"]).json)
        r = self.c.put(APIS + "/%s/swagger" % api["id"], data=OAS_YAML,
                       content_type="application/yaml")
        self.assertEqual(r.status, 200, r)
        got = self.c.get(APIS + "/" + api["id"]).json
        self.assertEqual(sorted((o["target"], o["verb"], o["authType"])
                                for o in got["operations"]),
                         [("/orders", "GET", "Application"), ("/orders/{id}", "PATCH", "Any")])
        body, ctype = multipart([("file", OAS_YAML, "api.yaml", "application/x-yaml")])
        r = self.c.put(APIS + "/%s/swagger" % api["id"], data=body, content_type=ctype)
        self.assertEqual(r.status, 200, r)

    def test_put_rejections(self):
        api = self.create()
        url = APIS + "/%s/swagger" % api["id"]
        cases = [
            (json.dumps({"swagger": "2.0", "info": {}, "paths": {}}), "Swagger 2.0"),
            (json.dumps({"openapi": "4.0", "info": {}, "paths": {}}), "not supported"),
            (json.dumps({"openapi": "3.0.0", "info": {}}), "paths"),
            ("{not json", "not valid JSON"),
            ("key: [unclosed", "YAML"),
            (json.dumps({"openapi": "3.0.0", "info": {}, "paths": {
                "/a b": {"get": {}}}}), "target"),
            (json.dumps({"openapi": "3.0.0", "info": {}, "paths": {
                "/a": {"get": {"x-throttling-tier": "NoSuchTier"}}}}), "NoSuchTier"),
            (json.dumps({"openapi": "3.0.0", "info": {}, "paths": {
                "/a": {"get": {"x-auth-type": "Anyone"}}}}), "x-auth-type"),
            (json.dumps({"openapi": "3.0.0", "info": {}, "paths": {
                "/a": {"get": {"security": [{"default": ["ghost"]}]}}}}), "ghost"),
        ]
        for text, needle in cases:
            with self.subTest(needle=needle):
                self.assertError(self.c.put(url, data=text, content_type="application/json"),
                                 400, needle)
        # aliases that expand a small YAML document enormously are refused
        bomb = "openapi: 3.0.0\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for prev, cur in zip("abcdef", "bcdefg"):
            bomb += "%s: &%s [%s]\n" % (cur, cur, ", ".join(["*" + prev] * 10))
        self.assertError(self.c.put(url, data=bomb, content_type="application/yaml"), 400,
                         "expands")
        body, ctype = multipart([("other", "x", None, None)])
        self.assertError(self.c.put(url, data=body, content_type=ctype), 400, "apiDefinition")
        body, ctype = multipart([("url", "http://example.com/x.json", None, None)])
        self.assertError(self.c.put(url, data=body, content_type=ctype), 400, "url")
        self.assertError(self.c.put(url, data=b"--x\r\nbroken", content_type=(
            "multipart/form-data; boundary=x")), 400)
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).json["operations"],
                         api["operations"])

    def import_api(self, fields):
        body, ctype = multipart(fields)
        return self.c.post(PUB + "/apis/import-openapi", data=body, content_type=ctype)

    def test_import_json(self):
        name = uniq("Pets")
        props = {"name": name, "version": "1.0.0", "context": "/" + name.lower(),
                 "policies": ["Unlimited"],
                 "endpointConfig": {"endpoint_type": "http",
                                    "production_endpoints": {"url": "http://10.1.1.1/"}}}
        r = self.import_api([("file", json.dumps(OAS), "petstore.json", "application/json"),
                             ("additionalProperties", json.dumps(props), None, None)])
        self.assertEqual(r.status, 201, r)
        api = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + api["id"]))
        self.assertEqual(api["name"], name)
        self.assertEqual(api["lifeCycleStatus"], "CREATED")
        self.check_petstore_operations(api)
        self.assertEqual(api["endpointConfig"]["production_endpoints"]["url"], "http://10.1.1.1/")
        o = self.swagger(api["id"])
        self.assertEqual(o["paths"]["/pets"]["get"]["summary"], "List pets")
        self.assertEqual(o["info"]["title"], name)

    def test_import_yaml_defaults_from_definition(self):
        ctx = uniq("/yaml")
        r = self.import_api([("file", OAS_YAML, "store.yaml", None),
                             ("additionalProperties", json.dumps({"context": ctx}), None,
                              None)])
        self.assertEqual(r.status, 201, r)
        api = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + api["id"]))
        self.assertEqual((api["name"], api["version"], api["context"]),
                         ("Yaml Store", "2.1", ctx))
        self.assertEqual(len(api["operations"]), 2)
        # servers[0] gives the endpoint when additionalProperties has none
        props = {"name": uniq("Srv"), "version": "1", "context": uniq("/srv")}
        r = self.import_api([("file", json.dumps(OAS), "p.json", None),
                             ("additionalProperties", json.dumps(props), None, None)])
        self.assertEqual(r.status, 201, r)
        self.addCleanup(lambda: self.c.delete(APIS + "/" + r.json["id"]))
        self.assertEqual(r.json["endpointConfig"]["production_endpoints"]["url"],
                         "http://127.0.0.1:9/petstore")

    def test_import_rejections(self):
        props = json.dumps({"name": uniq("Bad"), "version": "1", "context": uniq("/bad")})
        r = self.c.post(PUB + "/apis/import-openapi", data=json.dumps(OAS),
                        content_type="application/json")
        self.assertEqual(r.status, 415, r)
        self.assertError(self.import_api([("file", json.dumps(OAS), "p.json", None)]), 400,
                         "context")
        self.assertError(self.import_api([("file", json.dumps({"swagger": "2.0"}), "p.json",
                                           None), ("additionalProperties", props, None, None)]),
                         400, "Swagger 2.0")
        self.assertError(self.import_api([("additionalProperties", props, None, None)]), 400,
                         "file")
        self.assertError(self.import_api([("file", json.dumps(OAS), "p.json", None),
                                          ("additionalProperties", "[1]", None, None)]),
                         400, "additionalProperties")
        bad = json.dumps({"name": uniq("Bad"), "version": "1", "context": uniq("/bad"),
                          "policies": ["Nope"]})
        self.assertError(self.import_api([("file", json.dumps(OAS), "p.json", None),
                                          ("additionalProperties", bad, None, None)]), 400,
                         "Nope")


if __name__ == "__main__":
    unittest.main()
