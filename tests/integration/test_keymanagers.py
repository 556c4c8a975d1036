"""Admin v4 /key-managers: the built-in Resident Key Manager and other token
issuers given by a JWKS URL; create, read, update, delete, validation
messages in the reference error body, authorization by role, the change
sequence gateways follow, and the keyManagers of the gateways' snapshot."""

import json
import os
import secrets
import subprocess
import unittest

import apimtest

KM = "/api/am/admin/v4/key-managers"
RESIDENT_ID = "4a8b7c2e-5f3d-4e6a-9b1c-0d2e3f4a5b6c"
UNKNOWN_ID = "00000000-0000-4000-8000-00000000abcd"


def srv():
    return apimtest.shared()


def uniq(prefix):
    return "%s%s" % (prefix, secrets.token_hex(3))


def km_body(name=None, **kw):
    name = name or uniq("Idp")
    body = {"name": name, "type": "custom", "displayName": name + " issuer",
            "description": "an outside identity provider",
            "issuer": "https://%s.idp.example/oauth2/token" % name.lower(),
            "certificates": {"type": "JWKS",
                             "value": "https://%s.idp.example/jwks" % name.lower()}}
    body.update(kw)
    return body


class KeyManagerCase(unittest.TestCase):

    @property
    def c(self):
        return srv().client()

    def assertError(self, r, status, *needles):
        """r is an error with the reference body whose description says each needle."""
        self.assertEqual(r.status, status, r)
        body = r.json
        self.assertIsInstance(body, dict, r)
        self.assertEqual(str(body.get("code")), str(status), r)
        desc = body.get("description") or ""
        for n in needles:
            self.assertIn(n, desc, r)
        return desc

    def create(self, body, status=201):
        r = self.c.post(KM, json=body)
        self.assertEqual(r.status, status, r)
        if status == 201:
            self.addCleanup(lambda: srv().client().delete(KM + "/" + r.json["id"]))
        return r.json


class CrudTest(KeyManagerCase):

    def test_resident_is_listed_and_read_only(self):
        r = self.c.get(KM)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["count"], len(r.json["list"]))
        first = r.json["list"][0]
        self.assertEqual((first["id"], first["name"], first["type"], first["enabled"]),
                         (RESIDENT_ID, "Resident Key Manager", "default", True))
        r = self.c.get(KM + "/" + RESIDENT_ID)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json["issuer"].endswith("/oauth2/token"), r.json)
        self.assertError(self.c.delete(KM + "/" + RESIDENT_ID), 403, "cannot be deleted")
        self.assertError(self.c.put(KM + "/" + RESIDENT_ID, json=km_body()), 403,
                         "cannot be changed")
        self.assertEqual(self.c.get(KM).json["list"][0]["id"], RESIDENT_ID)

    def test_create_read_update_delete(self):
        body = km_body(consumerKeyClaim="client_id")
        km = self.create(body)
        self.assertEqual(km["name"], body["name"])
        self.assertEqual(km["issuer"], body["issuer"])
        self.assertEqual(km["certificates"], body["certificates"])
        self.assertEqual(km["consumerKeyClaim"], "client_id")
        self.assertEqual(km["scopesClaim"], "scope")   # the default
        self.assertIs(km["enabled"], True)
        url = KM + "/" + km["id"]
        r = self.c.get(url)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, km)
        listed = [k for k in self.c.get(KM).json["list"] if k["id"] == km["id"]]
        self.assertEqual(len(listed), 1)
        self.assertEqual((listed[0]["name"], listed[0]["enabled"]), (body["name"], True))
        # PUT what GET gave, changed
        km2 = dict(km, enabled=False, displayName="Renamed",
                   certificates={"type": "JWKS", "value": "https://other.example/keys"})
        r = self.c.put(url, json=km2)
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json["enabled"], False)
        self.assertEqual(r.json["displayName"], "Renamed")
        got = self.c.get(url).json
        self.assertEqual(got["certificates"]["value"], "https://other.example/keys")
        self.assertIs(got["enabled"], False)
        self.assertEqual(self.c.delete(url).status, 200)
        self.assertError(self.c.get(url), 404)
        self.assertError(self.c.delete(url), 404)

    def test_unknown_ids(self):
        for u in (KM + "/" + UNKNOWN_ID, KM + "/not-a-uuid"):
            self.assertError(self.c.get(u), 404)
            self.assertError(self.c.put(u, json=km_body()), 404)
            self.assertError(self.c.delete(u), 404)

    def test_name_and_issuer_are_unique(self):
        km = self.create(km_body())
        self.assertError(self.c.post(KM, json=km_body(name=km["name"])), 409, km["name"])
        self.assertError(self.c.post(KM, json=km_body(issuer=km["issuer"])), 409,
                         km["issuer"])
        other = self.create(km_body())
        r = self.c.put(KM + "/" + other["id"], json=dict(other, issuer=km["issuer"]))
        self.assertError(r, 409, km["issuer"])
        self.assertEqual(self.c.get(KM + "/" + other["id"]).json["issuer"], other["issuer"])

    def test_name_cannot_change(self):
        km = self.create(km_body())
        r = self.c.put(KM + "/" + km["id"], json=dict(km, name=uniq("Else")))
        self.assertError(r, 400, "'name' cannot be changed")

    def test_validation(self):
        resident_iss = self.c.get(KM + "/" + RESIDENT_ID).json["issuer"]
        cases = [
            ({"name": None}, "'name' is required"),
            ({"name": 5}, "'name' must be a string"),
            ({"name": "has space"}, "name"),
            ({"issuer": None}, "issuer"),
            ({"issuer": "two words"}, "'issuer'"),
            ({"issuer": resident_iss}, "Resident Key Manager"),
            ({"type": None}, "type"),
            ({"certificates": None}, "certificates"),
            ({"certificates": {"type": "JWKS", "value": "ftp://x/jwks"}},
             "'certificates.value'"),
            ({"certificates": {"type": "JWKS", "value": "https://"}}, "'certificates.value'"),
            ({"certificates": {"type": "PEM", "value": "-----BEGIN"}}, "JWKS"),
            ({"certificates": {"type": "X509", "value": "https://x/jwks"}},
             "certificates.type"),
            ({"consumerKeyClaim": "a b"}, "consumerKeyClaim"),
            ({"tokenEndpoint": "not a url"}, "'tokenEndpoint'"),
            ({"enabled": "yes"}, "enabled"),
            ({"tokenType": "SOMETIMES"}, "tokenType"),
            ({"unknownField": 1}, "unknownField"),
            ({"issuer": "https://x/" + "a" * 1100}, "issuer"),
        ]
        before = len(self.c.get(KM).json["list"])
        for change, needle in cases:
            body = km_body()
            for k, v in change.items():
                if v is None:
                    body.pop(k, None)
                else:
                    body[k] = v
            self.assertError(self.c.post(KM, json=body), 400, needle)
        self.assertEqual(len(self.c.get(KM).json["list"]), before)
        self.assertError(self.c.post(KM, json=km_body(name="Resident Key Manager")), 409,
                         "built-in")
        r = self.c.post(KM, data=b"{not json", content_type="application/json")
        self.assertEqual(r.status, 400, r)


class RoleTest(KeyManagerCase):

    @classmethod
    def setUpClass(cls):
        cls.pw = "Passw0rd!k"
        cls.users = {}
        for role in ("Internal/creator", "Internal/publisher", "Internal/subscriber"):
            name = uniq(role.split("/")[1])
            srv().create_user(name, cls.pw, [role])
            cls.users[role] = name

    def test_only_admins(self):
        km = self.create(km_body())
        url = KM + "/" + km["id"]
        for role, status in (("Internal/creator", 403), ("Internal/publisher", 403),
                             ("Internal/subscriber", 403), ("anonymous", 401)):
            c = (srv().client(None) if role == "anonymous"
                 else srv().client(self.users[role], self.pw))
            self.assertEqual(c.get(KM).status, status, role)
            self.assertEqual(c.get(url).status, status, role)
            self.assertEqual(c.post(KM, json=km_body()).status, status, role)
            self.assertEqual(c.put(url, json=dict(km, enabled=False)).status, status, role)
            self.assertEqual(c.delete(url).status, status, role)
        self.assertEqual(self.c.get(url).json, km)


class ChangeAndSnapshotTest(KeyManagerCase):
    """Writes bump the change sequence (gateways refetch); the snapshot
    lists the other issuers next to ours."""

    def sql(self, query):
        s = srv()
        if apimtest.is_postgresql():
            cmd = ["psql", "-X", "-q", "-t", "-A", "-d", s.apimgtdb_url, "-c", query]
        else:
            cmd = ["sqlite3", os.path.join(s.home, "apimgt.db"), query]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def seq(self):
        return int(self.sql("SELECT seq FROM am_change_seq WHERE id = 1"))

    def step(self, fn, action):
        before = self.seq()
        out = fn()
        self.assertEqual(self.seq(), before + 1, action)
        line = self.sql("SELECT entity_type, action, payload FROM am_change_log "
                        "ORDER BY seq DESC LIMIT 1")
        etype, act, payload = line.split("|", 2)
        self.assertEqual((etype, act), ("key_manager", action))
        return out, json.loads(payload)

    def snapshot_key_managers(self):
        with open(os.path.join(srv().home, "gateway-credential")) as f:
            cred = f.read().strip()
        r = srv().client(None).get("/internal/data/v1/snapshot",
                                   headers={"X-APIM-Gateway-Credential": cred})
        self.assertEqual(r.status, 200, r)
        return r.json["keyManagers"]

    def test_changes_are_recorded(self):
        body = km_body()
        km, payload = self.step(lambda: self.create(body), "create")
        self.assertEqual(payload, {"name": body["name"]})
        url = KM + "/" + km["id"]
        self.step(lambda: self.assertEqual(self.c.put(url, json=dict(km, enabled=False)).status,
                                           200), "update")
        before = self.seq()
        self.assertEqual(self.c.post(KM, json=body).status, 409)
        self.assertEqual(self.c.put(url, json=dict(km, issuer="")).status, 400)
        self.assertEqual(self.seq(), before)
        self.step(lambda: self.assertEqual(self.c.delete(url).status, 200), "delete")

    def test_snapshot_lists_other_issuers(self):
        km = self.create(km_body(consumerKeyClaim="cid", scopesClaim="scp"))
        kms = self.snapshot_key_managers()
        self.assertEqual(kms[0]["name"], "Resident Key Manager")
        self.assertTrue(kms[0]["jwks"]["keys"], kms[0])
        mine = [k for k in kms if k.get("name") == km["name"]]
        self.assertEqual(len(mine), 1, kms)
        self.assertEqual(mine[0]["issuer"], km["issuer"])
        self.assertEqual(mine[0]["jwksUrl"], km["certificates"]["value"])
        self.assertEqual((mine[0]["consumerKeyClaim"], mine[0]["scopesClaim"]), ("cid", "scp"))
        self.assertIs(mine[0]["enabled"], True)
        self.assertEqual(self.c.put(KM + "/" + km["id"], json=dict(km, enabled=False)).status,
                         200)
        mine = [k for k in self.snapshot_key_managers() if k.get("name") == km["name"]]
        self.assertIs(mine[0]["enabled"], False)
        self.assertEqual(self.c.delete(KM + "/" + km["id"]).status, 200)
        self.assertEqual([k for k in self.snapshot_key_managers()
                          if k.get("name") == km["name"]], [])


if __name__ == "__main__":
    unittest.main()
