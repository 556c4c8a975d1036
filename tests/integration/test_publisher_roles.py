"""Publisher v4 authorization: the status each role gets on each endpoint
(admin, Internal/creator, Internal/publisher, Internal/subscriber,
anonymous), and that a creator may change only the APIs it provides."""

import json
import unittest

import apimtest
import test_publisher as pt

PUB = pt.PUB
APIS = pt.APIS
PW = "Passw0rd!x"
ROLES = ("admin", "creator", "creator2", "publisher", "subscriber", "anonymous")


class RoleMatrixTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()
        srv = cls.srv
        srv.create_user("pcreator", PW, ["Internal/creator"])
        srv.create_user("pcreator2", PW, ["Internal/creator"])
        srv.create_user("ppublisher", PW, ["Internal/publisher"])
        srv.create_user("psubscriber", PW, ["Internal/subscriber"])
        cls.clients = {
            "admin": srv.client(),
            "creator": srv.client("pcreator", PW),
            "creator2": srv.client("pcreator2", PW),
            "publisher": srv.client("ppublisher", PW),
            "subscriber": srv.client("psubscriber", PW),
            "anonymous": srv.client(None),
        }

    def api_of(self, role):
        """A fresh API provided by the creator (owned by "creator")."""
        api = pt.create_api(self, self.clients[role])
        self.addCleanup(lambda: self.clients["admin"].delete(APIS + "/" + api["id"]))
        return api

    def revision_of(self, api):
        r = self.clients["admin"].post(APIS + "/%s/revisions" % api["id"], json={})
        self.assertEqual(r.status, 201, r)
        return r.json

    def check(self, expected, call):
        """expected: {role: status}; call(client, role) -> Response."""
        for role, status in expected.items():
            with self.subTest(role=role):
                r = call(self.clients[role], role)
                self.assertEqual(r.status, status, r)
                if status == 403:
                    self.assertEqual(r.json["code"], 403, r)
                if status == 401:
                    self.assertIn("www-authenticate", r.headers)

    def test_read_endpoints(self):
        api = self.api_of("creator")
        rev = self.revision_of(api)
        doc = self.clients["admin"].post(APIS + "/%s/documents" % api["id"], json={
            "name": "D", "type": "HOWTO", "sourceType": "INLINE"}).json
        paths = ["", "/" + api["id"], "/%s/swagger" % api["id"],
                 "/%s/lifecycle-state" % api["id"], "/%s/revisions" % api["id"],
                 "/%s/revisions/%s" % (api["id"], rev["id"]), "/%s/deployments" % api["id"],
                 "/%s/documents" % api["id"],
                 "/%s/documents/%s" % (api["id"], doc["documentId"])]
        expected = {"admin": 200, "creator": 200, "creator2": 200, "publisher": 200,
                    "subscriber": 403, "anonymous": 401}
        for p in paths:
            self.check(expected, lambda c, role: c.get(APIS + p))

    def test_create(self):
        expected = {"admin": 201, "creator": 201, "publisher": 403, "subscriber": 403,
                    "anonymous": 401}

        def call(c, role):
            r = c.post(APIS, json=pt.api_body())
            if r.status == 201:
                self.addCleanup(lambda: self.clients["admin"].delete(APIS + "/" + r.json["id"]))
                self.assertEqual(r.json["provider"], "admin" if role == "admin" else "pcreator")
            return r
        self.check(expected, call)
        # a creator cannot create for someone else
        r = self.clients["creator"].post(APIS, json=pt.api_body(provider="pcreator2"))
        pt.assert_error(self, r, 403, "pcreator2")

    def test_update_only_own(self):
        api = self.api_of("creator")
        url = APIS + "/" + api["id"]
        expected = {"admin": 200, "creator": 200, "creator2": 403, "publisher": 403,
                    "subscriber": 403, "anonymous": 401}
        self.check(expected, lambda c, role: c.put(url, json={"description": role}))
        r = self.clients["creator2"].put(url, json={"description": "x"})
        pt.assert_error(self, r, 403, "pcreator2", "is not allowed to modify")
        self.assertEqual(self.clients["admin"].get(url).json["description"], "creator")
        body, ctype = pt.multipart([("apiDefinition", json.dumps({
            "openapi": "3.0.1", "info": {"title": "t", "version": "1"},
            "paths": {"/x": {"get": {}}}}), None, None)])
        self.check({"admin": 200, "creator": 200, "creator2": 403, "publisher": 403,
                    "subscriber": 403, "anonymous": 401},
                   lambda c, role: c.put(url + "/swagger", data=body, content_type=ctype))

    def test_delete_only_own(self):
        expected = {"creator2": 403, "publisher": 403, "subscriber": 403, "anonymous": 401,
                    "creator": 200, "admin": 200}
        for role, status in expected.items():
            with self.subTest(role=role):
                api = self.api_of("creator")
                r = self.clients[role].delete(APIS + "/" + api["id"])
                self.assertEqual(r.status, status, r)

    def test_lifecycle(self):
        expected = {"creator": 403, "creator2": 403, "subscriber": 403, "anonymous": 401,
                    "publisher": 200, "admin": 200}
        for role, status in expected.items():
            with self.subTest(role=role):
                api = self.api_of("creator")
                r = self.clients[role].post(PUB + "/apis/change-lifecycle",
                                            query={"apiId": api["id"], "action": "Publish"})
                self.assertEqual(r.status, status, r)

    def test_revisions_and_deployments(self):
        api = self.api_of("creator")
        rurl = APIS + "/%s/revisions" % api["id"]
        created = []

        def create_rev(c, role):
            r = c.post(rurl, json={"description": role})
            if r.status == 201:
                created.append(r.json["id"])
            return r
        self.check({"admin": 201, "creator": 201, "creator2": 403, "publisher": 403,
                    "subscriber": 403, "anonymous": 401}, create_rev)
        rev = created[0]

        def deploy(c, role):
            return c.post(APIS + "/%s/deploy-revision" % api["id"], query={"revisionId": rev},
                          json=[{"name": "Default", "vhost": "localhost"}])
        self.check({"admin": 201, "creator": 201, "creator2": 403, "publisher": 201,
                    "subscriber": 403, "anonymous": 401}, deploy)

        def undeploy(c, role):
            r = c.post(APIS + "/%s/undeploy-revision" % api["id"], query={"revisionId": rev},
                       json=[{"name": "Default"}])
            if r.status == 201:  # deploy again for the next role
                self.clients["admin"].post(APIS + "/%s/deploy-revision" % api["id"],
                                           query={"revisionId": rev}, json=[{"name": "Default"}])
            return r
        self.check({"creator2": 403, "subscriber": 403, "anonymous": 401, "publisher": 201,
                    "creator": 201, "admin": 201}, undeploy)
        self.check({"creator2": 403, "publisher": 403, "subscriber": 403, "anonymous": 401,
                    "creator": 201},
                   lambda c, role: c.post(APIS + "/%s/restore-revision" % api["id"],
                                          query={"revisionId": rev}))
        self.check({"creator2": 403, "publisher": 403, "subscriber": 403, "anonymous": 401,
                    "creator": 200},
                   lambda c, role: c.delete(rurl + "/" + created[1]))

    def test_documents(self):
        api = self.api_of("creator")
        url = APIS + "/%s/documents" % api["id"]
        n = [0]

        def add(c, role):
            n[0] += 1
            return c.post(url, json={"name": "Doc%d" % n[0], "type": "HOWTO",
                                     "sourceType": "INLINE"})
        self.check({"admin": 201, "creator": 201, "creator2": 403, "publisher": 403,
                    "subscriber": 403, "anonymous": 401}, add)
        doc = self.clients["admin"].get(url).json["list"][0]["documentId"]
        self.check({"creator2": 403, "publisher": 403, "subscriber": 403, "anonymous": 401,
                    "creator": 201},
                   lambda c, role: c.post(url + "/%s/content" % doc, data="text",
                                          content_type="text/plain"))
        self.check({"admin": 200, "creator": 200, "publisher": 200, "subscriber": 403,
                    "anonymous": 401},
                   lambda c, role: c.get(url + "/%s/content" % doc))

    def test_copy_and_import(self):
        api = self.api_of("creator")
        versions = iter(["2", "3", "4", "5", "6", "7"])

        def copy(c, role):
            r = c.post(PUB + "/apis/copy-api", query={"apiId": api["id"],
                                                      "newVersion": next(versions)})
            if r.status == 201:
                self.addCleanup(lambda: self.clients["admin"].delete(APIS + "/" + r.json["id"]))
            return r
        self.check({"admin": 201, "creator": 201, "creator2": 403, "publisher": 403,
                    "subscriber": 403, "anonymous": 401}, copy)

        def imp(c, role):
            props = pt.api_body()
            body, ctype = pt.multipart([
                ("file", json.dumps({"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                                     "paths": {"/x": {"get": {}}}}), "a.json", None),
                ("additionalProperties", json.dumps(props), None, None)])
            r = c.post(PUB + "/apis/import-openapi", data=body, content_type=ctype)
            if r.status == 201:
                self.addCleanup(lambda: self.clients["admin"].delete(APIS + "/" + r.json["id"]))
            return r
        self.check({"admin": 201, "creator": 201, "publisher": 403, "subscriber": 403,
                    "anonymous": 401}, imp)

    def test_subscriptions(self):
        self.check({"admin": 200, "creator": 200, "publisher": 200, "subscriber": 403,
                    "anonymous": 401},
                   lambda c, role: c.get(PUB + "/subscriptions"))
        # the unknown id shows that authorization passed (404) or not (401/403)
        self.check({"admin": 404, "publisher": 404, "creator": 403, "subscriber": 403,
                    "anonymous": 401},
                   lambda c, role: c.post(PUB + "/subscriptions/block-subscription",
                                          query={"subscriptionId": pt.UNKNOWN_ID,
                                                 "blockState": "BLOCKED"}))
        self.check({"admin": 404, "publisher": 404, "creator": 403, "subscriber": 403,
                    "anonymous": 401},
                   lambda c, role: c.post(PUB + "/subscriptions/unblock-subscription",
                                          query={"subscriptionId": pt.UNKNOWN_ID}))

    def test_wrong_password_is_401(self):
        r = self.srv.client("pcreator", "wrong").get(APIS)
        self.assertEqual(r.status, 401, r)


if __name__ == "__main__":
    unittest.main()
