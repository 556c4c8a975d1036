"""Publisher v4: revisions, deployments (and the change sequence gateways
follow), documents, the subscriptions of an API, and the walkthrough
create -> revision -> deploy -> publish."""

import secrets
import time
import unittest

import apimtest
import test_publisher as pt

PUB = pt.PUB
APIS = pt.APIS
UNKNOWN_ID = pt.UNKNOWN_ID
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]


class Case(pt.PublisherCase):
    def revision(self, api_id, description="rev", status=201):
        r = self.c.post(APIS + "/%s/revisions" % api_id, json={"description": description})
        self.assertEqual(r.status, status, r)
        return r.json

    def deploy(self, api_id, rev_id, envs=None, status=201):
        r = self.c.post(APIS + "/%s/deploy-revision" % api_id, query={"revisionId": rev_id},
                        json=envs or DEFAULT_ENV)
        self.assertEqual(r.status, status, r)
        return r

    def undeploy(self, api_id, rev_id, envs=None, status=201, **q):
        q["revisionId"] = rev_id
        r = self.c.post(APIS + "/%s/undeploy-revision" % api_id, query=q,
                        json=envs if envs is not None else DEFAULT_ENV)
        self.assertEqual(r.status, status, r)
        return r

    def deployments(self, api_id):
        r = self.c.get(APIS + "/%s/deployments" % api_id)
        self.assertEqual(r.status, 200, r)
        return r.json


# ---------------------------------------------------------------- revisions

class RevisionTest(Case):
    def test_create_list_get(self):
        api = self.create()
        rev = self.revision(api["id"], "first")
        self.assertRegex(rev["id"], pt.UUID_RE)
        self.assertEqual(rev["displayName"], "Revision 1")
        self.assertEqual(rev["description"], "first")
        self.assertEqual(rev["apiInfo"], {"id": api["id"]})
        self.assertEqual(rev["deploymentInfo"], [])
        self.assertTrue(rev["createdTime"].isdigit())
        rev2 = self.revision(api["id"])
        self.assertEqual(rev2["displayName"], "Revision 2")
        r = self.c.get(APIS + "/%s/revisions" % api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 2)
        self.assertEqual([x["id"] for x in r.json["list"]], [rev["id"], rev2["id"]])
        r = self.c.get(APIS + "/%s/revisions/%s" % (api["id"], rev["id"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["displayName"], "Revision 1")
        self.assertError(self.c.get(APIS + "/%s/revisions/%s" % (api["id"], UNKNOWN_ID)), 404)
        # a revision of another API is not found under this one
        other = self.create()
        self.assertError(self.c.get(APIS + "/%s/revisions/%s" % (other["id"], rev["id"])), 404)

    def test_bad_bodies(self):
        api = self.create()
        self.assertError(self.c.post(APIS + "/%s/revisions" % api["id"],
                                     json={"description": 5}), 400, "description")
        self.assertError(self.c.post(APIS + "/%s/revisions" % api["id"],
                                     json={"description": "x" * 300}), 400, "255")
        self.assertError(self.c.post(APIS + "/%s/revisions" % api["id"],
                                     json={"notes": "x"}), 400, "notes")
        r = self.c.post(APIS + "/%s/revisions" % api["id"], data="", content_type=None)
        self.assertEqual(r.status, 201, r)  # no body: a revision without description

    def test_at_most_five(self):
        api = self.create()
        revs = [self.revision(api["id"], "r%d" % i) for i in range(5)]
        r = self.c.post(APIS + "/%s/revisions" % api["id"], json={"description": "sixth"})
        self.assertError(r, 400, "Maximum number of revisions per API reached (5); "
                                 "delete one first")
        r = self.c.delete(APIS + "/%s/revisions/%s" % (api["id"], revs[0]["id"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 4)
        self.assertNotIn(revs[0]["id"], [x["id"] for x in r.json["list"]])
        # numbers keep growing after a delete
        self.assertEqual(self.revision(api["id"])["displayName"], "Revision 6")
        self.assertError(self.c.delete(APIS + "/%s/revisions/%s" % (api["id"], revs[0]["id"])),
                         404)

    def test_restore(self):
        api = self.create(description="before")
        rev = self.revision(api["id"])
        url = APIS + "/" + api["id"]
        r = self.c.put(url, json={"description": "after", "operations": [
            {"target": "/new", "verb": "POST"}]})
        self.assertEqual(r.status, 200, r)
        r = self.c.post(APIS + "/%s/restore-revision" % api["id"],
                        query={"revisionId": rev["id"]})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["description"], "before")
        self.assertEqual(r.json["operations"], api["operations"])
        self.assertEqual(self.c.get(url).json["description"], "before")
        self.assertError(self.c.post(APIS + "/%s/restore-revision" % api["id"],
                                     query={"revisionId": UNKNOWN_ID}), 404)
        self.assertError(self.c.post(APIS + "/%s/restore-revision" % api["id"]), 400,
                         "revisionId")

    def test_revision_is_a_snapshot(self):
        api = self.create()
        rev = self.revision(api["id"])
        self.c.put(APIS + "/" + api["id"], json={"description": "changed later"})
        rows = pt.sql(self.srv, "SELECT doc FROM am_revision WHERE id = '%s'" % rev["id"])
        self.assertIn('"description":"test API"', rows[0][0])
        self.assertNotIn("changed later", rows[0][0])

    def test_policy_used_only_by_a_revision_cannot_be_deleted(self):
        name = pt.uniq("RevTier")
        r = self.c.post("/api/am/admin/v4/throttling/policies/subscription", json={
            "policyName": name, "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"timeUnit": "min", "unitTime": 1, "requestCount": 5}}})
        self.assertEqual(r.status, 201, r)
        pol_url = "/api/am/admin/v4/throttling/policies/subscription/" + r.json["policyId"]
        api = self.create(policies=[name])
        rev = self.revision(api["id"])
        self.assertEqual(self.c.put(APIS + "/" + api["id"],
                                    json={"policies": ["Unlimited"]}).status, 200)
        self.assertEqual(self.c.delete(pol_url).status, 409)  # the revision still uses it
        self.c.delete(APIS + "/%s/revisions/%s" % (api["id"], rev["id"]))
        self.assertEqual(self.c.delete(pol_url).status, 200)

    def test_retired_api_takes_no_new_revision(self):
        api = self.create()
        for action in ("Publish", "Deprecate", "Retire"):
            r = self.c.post(PUB + "/apis/change-lifecycle",
                            query={"apiId": api["id"], "action": action})
            self.assertEqual(r.status, 200, r)
        self.assertError(self.c.post(APIS + "/%s/revisions" % api["id"], json={}), 400,
                         "RETIRED")


# ---------------------------------------------------------------- deployments

class DeploymentTest(Case):
    def test_deploy_move_undeploy_and_change_log(self):
        api = self.create()
        rev1 = self.revision(api["id"])
        rev2 = self.revision(api["id"])
        r = self.deploy(api["id"], rev1["id"])
        d = r.json
        self.assertEqual(len(d), 1)
        self.assertEqual((d[0]["name"], d[0]["vhost"], d[0]["displayOnDevportal"],
                          d[0]["revisionUuid"]), ("Default", "localhost", True, rev1["id"]))
        deps = self.deployments(api["id"])
        self.assertEqual([(x["name"], x["revisionId"]) for x in deps],
                         [("Default", rev1["id"])])
        self.assertEqual(deps[0]["status"], "APPROVED")
        self.assertTrue(deps[0]["deployedTime"].isdigit())
        r = self.c.get(APIS + "/%s/revisions/%s" % (api["id"], rev1["id"]))
        self.assertEqual([x["name"] for x in r.json["deploymentInfo"]], ["Default"])
        r = self.c.get(APIS + "/%s/revisions" % api["id"], query={"query": "deployed:true"})
        self.assertEqual([x["id"] for x in r.json["list"]], [rev1["id"]])
        r = self.c.get(APIS + "/%s/revisions" % api["id"], query={"query": "deployed:false"})
        self.assertEqual([x["id"] for x in r.json["list"]], [rev2["id"]])
        # deploying rev2 moves Default from rev1 to rev2
        self.deploy(api["id"], rev2["id"])
        self.assertEqual([(x["name"], x["revisionId"]) for x in self.deployments(api["id"])],
                         [("Default", rev2["id"])])
        # a deployed revision cannot be deleted; rev1 now can
        self.assertError(self.c.delete(APIS + "/%s/revisions/%s" % (api["id"], rev2["id"])),
                         400, "deployed on Default")
        # undeploying the revision that is not there
        self.assertError(self.undeploy(api["id"], rev1["id"], status=400), 400,
                         "not deployed on Default")
        r = self.undeploy(api["id"], rev2["id"])
        self.assertEqual(r.json, [])
        self.assertEqual(self.deployments(api["id"]), [])
        self.assertEqual(self.c.delete(APIS + "/%s/revisions/%s" % (api["id"], rev2["id"])).status,
                         200)
        log = pt.changes(self.srv, api["id"])
        self.assertEqual([a for a, _ in log], ["deploy", "deploy", "undeploy"])
        self.assertEqual(log[0][1]["revisionId"], rev1["id"])
        self.assertEqual(log[0][1]["environment"], "Default")
        self.assertEqual(log[1][1]["revisionId"], rev2["id"])
        self.assertEqual(log[2][1], {"revisionId": rev2["id"], "environment": "Default",
                                     "vhost": "localhost"})

    def test_deploy_errors(self):
        api = self.create()
        rev = self.revision(api["id"])
        url = APIS + "/%s/deploy-revision" % api["id"]
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json=[{"name": "Mars", "vhost": "localhost"}]),
                         400, "Gateway environment Mars does not exist")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json={"name": "Default"}), 400, "array")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]}, json=[]), 400,
                         "at least one")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json=[{"vhost": "localhost"}]), 400, "name")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json=[{"name": "Default", "vhost": "bad host"}]), 400,
                         "vhost")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json=[{"name": "Default"}, {"name": "Default"}]), 400,
                         "twice")
        self.assertError(self.c.post(url, query={"revisionId": rev["id"]},
                                     json=[{"name": "Default", "colour": 1}]), 400, "colour")
        self.assertError(self.c.post(url, query={"revisionId": UNKNOWN_ID}, json=DEFAULT_ENV),
                         404)
        self.assertError(self.c.post(url, json=DEFAULT_ENV), 400, "revisionId")
        self.assertEqual(self.deployments(api["id"]), [])
        self.assertEqual(pt.changes(self.srv, api["id"]), [])

    def test_several_environments(self):
        env = pt.uniq("Edge")
        r = self.c.post("/api/am/admin/v4/environments",
                        json={"name": env, "vhosts": [{"host": "edge.example.com"}]})
        self.assertEqual(r.status, 201, r)
        api = self.create()
        rev = self.revision(api["id"])
        self.deploy(api["id"], rev["id"], [{"name": "Default"},
                                           {"name": env, "vhost": "edge.example.com",
                                            "displayOnDevportal": False}])
        deps = {x["name"]: x for x in self.deployments(api["id"])}
        self.assertEqual(set(deps), {"Default", env})
        self.assertEqual(deps["Default"]["vhost"], "localhost")
        self.assertFalse(deps[env]["displayOnDevportal"])
        # revisionNumber and allEnvironments
        r = self.c.post(APIS + "/%s/undeploy-revision" % api["id"],
                        query={"revisionNumber": "1", "allEnvironments": "true"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.deployments(api["id"]), [])
        self.assertEqual([a for a, _ in pt.changes(self.srv, api["id"])],
                         ["deploy", "deploy", "undeploy", "undeploy"])

    def test_lifecycle_of_a_deployed_api_is_recorded(self):
        api = self.create()
        r = self.c.post(PUB + "/apis/change-lifecycle", query={"apiId": api["id"],
                                                              "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(pt.changes(self.srv, api["id"]), [])  # not deployed: nothing to tell
        rev = self.revision(api["id"])
        self.deploy(api["id"], rev["id"])
        r = self.c.post(PUB + "/apis/change-lifecycle", query={"apiId": api["id"],
                                                              "action": "Block"})
        self.assertEqual(r.status, 200, r)
        log = pt.changes(self.srv, api["id"])
        self.assertEqual(log[-1], ("lifecycle", {"from": "PUBLISHED", "to": "BLOCKED"}))

    def test_default_version_change_of_a_deployed_api_is_recorded(self):
        v1 = self.create()
        self.deploy(v1["id"], self.revision(v1["id"])["id"])
        r = self.c.put(APIS + "/" + v1["id"], json={"isDefaultVersion": True})
        self.assertEqual(r.status, 200, r)
        r = self.c.post(PUB + "/apis/copy-api", query={"apiId": v1["id"], "newVersion": "2",
                                                     "defaultVersion": "true"})
        self.assertEqual(r.status, 201, r)
        self.addCleanup(lambda: self.c.delete(APIS + "/" + r.json["id"]))
        self.assertEqual([c for c in pt.changes(self.srv, v1["id"]) if c[0] == "default-version"],
                         [("default-version", {"isDefaultVersion": True}),
                          ("default-version", {"isDefaultVersion": False})])
        self.assertEqual(pt.changes(self.srv, r.json["id"]), [])  # not deployed

    def test_delete_api_removes_everything(self):
        api = pt.create_api(self, self.c)
        rev = self.revision(api["id"])
        self.deploy(api["id"], rev["id"])
        r = self.c.post(APIS + "/%s/documents" % api["id"],
                        json={"name": "Doc", "type": "HOWTO", "sourceType": "INLINE"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.c.delete(APIS + "/" + api["id"]).status, 200)
        self.assertEqual(pt.changes(self.srv, api["id"])[-1][0], "delete")
        for table in ("am_api", "am_revision", "am_deployment", "am_policy_usage",
                      "am_api_tag"):
            key = "id" if table == "am_api" else "api_id"
            rows = pt.sql(self.srv, "SELECT COUNT(*) FROM %s WHERE %s = '%s'" %
                          (table, key, api["id"]))
            self.assertEqual(rows, [["0"]], table)
        rows = pt.sql(self.srv, "SELECT COUNT(*) FROM am_api_document WHERE api_id = '%s'" %
                      api["id"], db="shared")
        self.assertEqual(rows, [["0"]])


class WalkthroughTest(Case):
    def test_create_revision_deploy_publish(self):
        name = pt.uniq("Walk")
        r = self.c.post(APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)
        api = r.json
        self.addCleanup(lambda: self.c.delete(APIS + "/" + api["id"]))
        rev = self.revision(api["id"], "ready")
        self.deploy(api["id"], rev["id"])
        r = self.c.post(PUB + "/apis/change-lifecycle",
                        query={"apiId": api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["lifecycleState"]["state"], "Published")
        got = self.c.get(APIS + "/" + api["id"]).json
        self.assertEqual(got["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual([(d["name"], d["revisionId"]) for d in self.deployments(api["id"])],
                         [("Default", rev["id"])])
        r = self.c.get(APIS, query={"query": "name:%s status:PUBLISHED" % name})
        self.assertEqual(r.json["count"], 1)
        self.assertEqual([a for a, _ in pt.changes(self.srv, api["id"])], ["deploy", "lifecycle"])


# ---------------------------------------------------------------- documents

class DocumentTest(Case):
    def docs(self, api_id):
        return APIS + "/%s/documents" % api_id

    def add_doc(self, api_id, **kw):
        body = {"name": pt.uniq("Doc"), "type": "HOWTO", "summary": "how to",
                "sourceType": "INLINE", "visibility": "API_LEVEL"}
        body.update(kw)
        r = self.c.post(self.docs(api_id), json=body)
        self.assertEqual(r.status, 201, r)
        return r.json

    def test_crud(self):
        api = self.create()
        d = self.add_doc(api["id"], name="Getting started")
        self.assertRegex(d["documentId"], pt.UUID_RE)
        self.assertEqual((d["name"], d["type"], d["sourceType"], d["visibility"],
                          d["createdBy"]),
                         ("Getting started", "HOWTO", "INLINE", "API_LEVEL", "admin"))
        url = self.docs(api["id"]) + "/" + d["documentId"]
        self.assertEqual(self.c.get(url).json["name"], "Getting started")
        self.add_doc(api["id"], name="Another", type="SAMPLES")
        r = self.c.get(self.docs(api["id"]), query={"limit": 1})
        self.assertEqual(r.json["count"], 1)
        self.assertEqual(r.json["pagination"]["total"], 2)
        self.assertEqual(r.json["list"][0]["name"], "Another")
        self.assertError(self.c.post(self.docs(api["id"]), json={
            "name": "Getting started", "type": "HOWTO", "sourceType": "INLINE"}), 409,
            "Getting started")
        # PUT keeps the name, changes the rest
        r = self.c.put(url, json={"name": "Renamed", "type": "SUPPORT_FORUM",
                                  "summary": "new", "sourceType": "INLINE"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["name"], r.json["type"], r.json["summary"]),
                         ("Getting started", "SUPPORT_FORUM", "new"))
        self.assertError(self.c.put(url, json={"type": "BOOK"}), 400, "BOOK")
        self.assertEqual(self.c.delete(url).status, 200)
        self.assertError(self.c.get(url), 404)
        self.assertError(self.c.delete(url), 404)

    def test_validation(self):
        api = self.create()
        url = self.docs(api["id"])
        cases = [({"type": "HOWTO", "sourceType": "INLINE"}, "name"),
                 ({"name": "x", "sourceType": "INLINE"}, "type"),
                 ({"name": "x", "type": "HOWTO"}, "sourceType"),
                 ({"name": "x", "type": "NOVEL", "sourceType": "INLINE"}, "NOVEL"),
                 ({"name": "x", "type": "HOWTO", "sourceType": "FAX"}, "FAX"),
                 ({"name": "x", "type": "HOWTO", "sourceType": "INLINE",
                   "visibility": "ME"}, "visibility"),
                 ({"name": "x", "type": "HOWTO", "sourceType": "URL"}, "sourceUrl"),
                 ({"name": "x", "type": "HOWTO", "sourceType": "URL",
                   "sourceUrl": "ftp://x/"}, "sourceUrl"),
                 ({"name": "x", "type": "OTHER", "sourceType": "INLINE"}, "otherTypeName"),
                 ({"name": "x", "type": "HOWTO", "sourceType": "INLINE", "pages": 3},
                  "pages"),
                 ({"name": 5, "type": "HOWTO", "sourceType": "INLINE"}, "name"),
                 ({"name": "n" * 61, "type": "HOWTO", "sourceType": "INLINE"}, "60")]
        for body, needle in cases:
            with self.subTest(body=body):
                self.assertError(self.c.post(url, json=body), 400, needle)
        self.assertError(self.c.get(url + "/" + UNKNOWN_ID), 404)
        self.assertEqual(self.c.get(url).json["count"], 0)

    def test_inline_content(self):
        api = self.create()
        d = self.add_doc(api["id"])
        curl = self.docs(api["id"]) + "/%s/content" % d["documentId"]
        self.assertError(self.c.get(curl), 404, "no content")
        text = "# Title\n\nSome *markdown* text with ünïcode."
        body, ctype = pt.multipart([("inlineContent", text, None, None)])
        r = self.c.post(curl, data=body, content_type=ctype)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["documentId"], d["documentId"])
        r = self.c.get(curl)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/plain"))
        self.assertEqual(r.text, text)
        # a plain text body works too
        r = self.c.post(curl, data="plain text", content_type="text/plain")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.c.get(curl).text, "plain text")
        # a file does not go into an INLINE document
        body, ctype = pt.multipart([("file", b"%PDF", "a.pdf", "application/pdf")])
        self.assertError(self.c.post(curl, data=body, content_type=ctype), 400, "FILE")
        body, ctype = pt.multipart([("inlineContent", "x", None, None),
                                    ("file", b"y", "y.txt", "text/plain")])
        self.assertError(self.c.post(curl, data=body, content_type=ctype), 400, "Only one")
        body, ctype = pt.multipart([("other", "x", None, None)])
        self.assertError(self.c.post(curl, data=body, content_type=ctype), 400, "inlineContent")

    def test_file_content(self):
        api = self.create()
        d = self.add_doc(api["id"], sourceType="FILE")
        curl = self.docs(api["id"]) + "/%s/content" % d["documentId"]
        data = bytes(range(256)) * 4
        body, ctype = pt.multipart([("file", data, "../../guide.pdf", "application/pdf")])
        r = self.c.post(curl, data=body, content_type=ctype)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["fileName"], "guide.pdf")
        r = self.c.get(curl)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)
        self.assertEqual(r.headers["content-type"], "application/pdf")
        self.assertIn('filename="guide.pdf"', r.headers["content-disposition"])
        body, ctype = pt.multipart([("inlineContent", "text", None, None)])
        self.assertError(self.c.post(curl, data=body, content_type=ctype), 400, "FILE")

    def test_url_document(self):
        api = self.create()
        d = self.add_doc(api["id"], sourceType="URL", sourceUrl="https://docs.example.com/a")
        self.assertEqual(d["sourceUrl"], "https://docs.example.com/a")
        curl = self.docs(api["id"]) + "/%s/content" % d["documentId"]
        r = self.c.get(curl)
        self.assertEqual(r.status, 303, r)
        self.assertEqual(r.headers["location"], "https://docs.example.com/a")
        self.assertError(self.c.post(curl, data="x", content_type="text/plain"), 400, "URL")

    def test_unknown_api(self):
        self.assertError(self.c.get(self.docs(UNKNOWN_ID)), 404)
        self.assertError(self.c.post(self.docs(UNKNOWN_ID), json={
            "name": "x", "type": "HOWTO", "sourceType": "INLINE"}), 404)


# ---------------------------------------------------------------- subscriptions

class SubscriptionTest(Case):
    SUBS = PUB + "/subscriptions"

    def seed(self, api_id, status="UNBLOCKED", tier="Gold"):
        """An application and its subscription to api_id, written straight
        into apimgtdb (the Developer Portal API that creates them comes
        later)."""
        app_id = "a0000000-0000-4000-8000-%s" % secrets.token_hex(6)
        sub_id = "50000000-0000-4000-8000-%s" % secrets.token_hex(6)
        now = int(time.time() * 1000)
        pt.sql(self.srv, "INSERT INTO am_application (id, name, owner, tier, status, token_type, "
                         "description, created_ms, updated_ms) VALUES ('%s', '%s', 'sub1', "
                         "'10PerMin', 'APPROVED', 'JWT', 'test app', %d, %d)"
               % (app_id, pt.uniq("App"), now, now))
        pt.sql(self.srv, "INSERT INTO am_subscription (id, api_id, application_id, tier, status, "
                         "created_ms, updated_ms) VALUES ('%s', '%s', '%s', '%s', '%s', %d, %d)"
               % (sub_id, api_id, app_id, tier, status, now, now))
        return app_id, sub_id

    def test_list_block_unblock(self):
        api = self.create()
        app_id, sub_id = self.seed(api["id"])
        r = self.c.get(self.SUBS, query={"apiId": api["id"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], 1)
        s = r.json["list"][0]
        self.assertEqual(s["subscriptionId"], sub_id)
        self.assertEqual(s["subscriptionStatus"], "UNBLOCKED")
        self.assertEqual(s["throttlingPolicy"], "Gold")
        self.assertEqual(s["applicationInfo"]["applicationId"], app_id)
        self.assertEqual(s["applicationInfo"]["subscriber"], "sub1")
        self.assertEqual(s["applicationInfo"]["throttlingPolicy"], "10PerMin")
        r = self.c.post(self.SUBS + "/block-subscription",
                        query={"subscriptionId": sub_id, "blockState": "PROD_ONLY_BLOCKED"})
        self.assertEqual(r.status, 200, r)
        r = self.c.get(self.SUBS, query={"apiId": api["id"]})
        self.assertEqual(r.json["list"][0]["subscriptionStatus"], "PROD_ONLY_BLOCKED")
        r = self.c.post(self.SUBS + "/block-subscription",
                        query={"subscriptionId": sub_id, "blockState": "BLOCKED"})
        self.assertEqual(r.status, 200, r)
        r = self.c.post(self.SUBS + "/unblock-subscription", query={"subscriptionId": sub_id})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.get(self.SUBS, query={"apiId": api["id"]})
                         .json["list"][0]["subscriptionStatus"], "UNBLOCKED")
        log = pt.changes(self.srv, sub_id)
        self.assertEqual([a for a, _ in log], ["block", "block", "unblock"])
        self.assertEqual(log[0][1], {"apiId": api["id"], "applicationId": app_id,
                                     "status": "PROD_ONLY_BLOCKED"})
        # unblocking what is unblocked changes nothing
        r = self.c.post(self.SUBS + "/unblock-subscription", query={"subscriptionId": sub_id})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(pt.changes(self.srv, sub_id)), 3)
        # all subscriptions (no apiId) include it
        r = self.c.get(self.SUBS, query={"limit": 1000})
        self.assertIn(sub_id, [x["subscriptionId"] for x in r.json["list"]])

    def test_errors(self):
        api = self.create()
        _, held = self.seed(api["id"], status="ON_HOLD")
        self.assertError(self.c.post(self.SUBS + "/block-subscription",
                                     query={"subscriptionId": held, "blockState": "BLOCKED"}),
                         400, "ON_HOLD")
        self.assertError(self.c.post(self.SUBS + "/block-subscription",
                                     query={"subscriptionId": held, "blockState": "FROZEN"}),
                         400, "blockState")
        self.assertError(self.c.post(self.SUBS + "/block-subscription",
                                     query={"blockState": "BLOCKED"}), 400, "subscriptionId")
        self.assertError(self.c.post(self.SUBS + "/block-subscription",
                                     query={"subscriptionId": UNKNOWN_ID,
                                            "blockState": "BLOCKED"}), 404)
        self.assertError(self.c.post(self.SUBS + "/unblock-subscription",
                                     query={"subscriptionId": UNKNOWN_ID}), 404)
        self.assertError(self.c.get(self.SUBS, query={"apiId": UNKNOWN_ID}), 404)

    def test_api_with_subscriptions_cannot_be_deleted(self):
        api = pt.create_api(self, self.c)
        _, sub_id = self.seed(api["id"])
        self.assertError(self.c.delete(APIS + "/" + api["id"]), 409, "active subscription")
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).status, 200)
        pt.sql(self.srv, "UPDATE am_subscription SET status = 'REJECTED' WHERE id = '%s'" % sub_id)
        self.assertEqual(self.c.delete(APIS + "/" + api["id"]).status, 200)

    def test_subscription_tier_in_use(self):
        name = pt.uniq("SubTier")
        r = self.c.post("/api/am/admin/v4/throttling/policies/subscription", json={
            "policyName": name, "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"timeUnit": "min", "unitTime": 1, "requestCount": 5}}})
        self.assertEqual(r.status, 201, r)
        pol_url = "/api/am/admin/v4/throttling/policies/subscription/" + r.json["policyId"]
        api = self.create()
        _, sub_id = self.seed(api["id"], tier=name)
        self.assertEqual(self.c.delete(pol_url).status, 409)
        pt.sql(self.srv, "DELETE FROM am_subscription WHERE id = '%s'" % sub_id)
        self.assertEqual(self.c.delete(pol_url).status, 200)


if __name__ == "__main__":
    unittest.main()
