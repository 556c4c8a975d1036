"""SCIM 2.0 users and groups (/scim2), roles and their scopes, account
lockout and password changes, as a WSO2 API-M script would use them."""

import time
import unittest

import apimtest

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_CT = "application/scim+json"
PUBLISHER_APIS = "/api/am/publisher/v4/apis"
PW = "Passw0rd!"


def new_user(c, username, password=PW, **fields):
    body = {"schemas": [USER_SCHEMA], "userName": username, "password": password}
    body.update(fields)
    return c.post("/scim2/Users", json=body, content_type=SCIM_CT)


def patch(c, path, *ops):
    return c.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(ops)},
                   content_type=SCIM_CT)


def role_names(user):
    return sorted(r["value"] for r in user.get("roles") or [])


class ScimTestCase(unittest.TestCase):
    def setUp(self):
        self.srv = apimtest.shared()
        self.c = self.srv.client()

    def assertScimError(self, r, status, scim_type=None, detail=None):
        self.assertEqual(r.status, status, r)
        self.assertIsNotNone(r.json, r)
        self.assertEqual(r.json.get("schemas"), [ERROR_SCHEMA], r.json)
        self.assertEqual(r.json.get("status"), str(status), r.json)
        if scim_type is not None:
            self.assertEqual(r.json.get("scimType"), scim_type, r.json)
        if detail is not None:
            self.assertIn(detail, r.json.get("detail", ""), r.json)

    def user_id(self, name):
        r = self.c.get("/scim2/Users", query={"filter": 'userName eq "%s"' % name})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["totalResults"], 1, r.json)
        return r.json["Resources"][0]["id"]


class ScimUsersTest(ScimTestCase):

    def test_create_get_list_delete(self):
        r = new_user(self.c, "sc_alice", name={"givenName": "Alice", "familyName": "Smith"},
                     emails=[{"value": "alice@example.com", "primary": True}],
                     **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                        {"department": "eng"}})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.headers.get("content-type", "").startswith(SCIM_CT), r.headers)
        u = r.json
        self.assertEqual(u["schemas"], [USER_SCHEMA])
        self.assertEqual(u["userName"], "sc_alice")
        self.assertEqual(u["name"], {"givenName": "Alice", "familyName": "Smith"})
        self.assertEqual(u["emails"][0]["value"], "alice@example.com")
        self.assertNotIn("password", u)
        self.assertEqual(role_names(u), ["Internal/everyone"])
        self.assertEqual([g["display"] for g in u["groups"]], ["Internal/everyone"])
        self.assertEqual(u["meta"]["resourceType"], "User")
        self.assertTrue(u["meta"]["location"].endswith("/scim2/Users/" + u["id"]), u["meta"])
        self.assertTrue(u["meta"]["created"].endswith("Z"), u["meta"])
        self.assertTrue(r.headers.get("location", "").endswith("/scim2/Users/" + u["id"]))

        r = self.c.get("/scim2/Users/" + u["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["userName"], "sc_alice")
        self.assertEqual(r.json["name"]["familyName"], "Smith")

        # filter: quoted, and the unquoted form with another case of "eq"
        for f in ('userName eq "sc_alice"', "userName Eq sc_alice", "username EQ sc_alice"):
            r = self.c.get("/scim2/Users", query={"filter": f})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["schemas"], [LIST_SCHEMA])
            self.assertEqual(r.json["totalResults"], 1, (f, r.json))
            self.assertEqual(r.json["itemsPerPage"], 1)
            self.assertEqual(r.json["startIndex"], 1)
            self.assertEqual(r.json["Resources"][0]["id"], u["id"])
        r = self.c.get("/scim2/Users", query={"filter": 'userName eq "nobody-here"'})
        self.assertEqual(r.json["totalResults"], 0)
        self.assertEqual(r.json["Resources"], [])

        # the whole list holds the admin and alice; paging is 1-based
        r = self.c.get("/scim2/Users")
        names = [x["userName"] for x in r.json["Resources"]]
        self.assertIn(self.srv.admin_username, names)
        self.assertIn("sc_alice", names)
        total = r.json["totalResults"]
        r1 = self.c.get("/scim2/Users", query={"startIndex": 1, "count": 1})
        r2 = self.c.get("/scim2/Users", query={"startIndex": 2, "count": 1})
        self.assertEqual(r1.json["totalResults"], total)
        self.assertEqual(r1.json["itemsPerPage"], 1)
        self.assertEqual(r2.json["startIndex"], 2)
        self.assertNotEqual(r1.json["Resources"][0]["id"], r2.json["Resources"][0]["id"])
        self.assertEqual(r1.json["Resources"][0]["userName"], names[0])
        self.assertEqual(r2.json["Resources"][0]["userName"], names[1])
        r = self.c.get("/scim2/Users", query={"count": "many"})
        self.assertScimError(r, 400, "invalidValue", "count")

        r = self.c.delete("/scim2/Users/" + u["id"])
        self.assertEqual(r.status, 204, r)
        r = self.c.get("/scim2/Users/" + u["id"])
        self.assertScimError(r, 404)
        r = self.c.delete("/scim2/Users/" + u["id"])
        self.assertScimError(r, 404)
        r = self.c.get("/scim2/Users", query={"filter": 'userName eq "sc_alice"'})
        self.assertEqual(r.json["totalResults"], 0)

    def test_emails_as_strings(self):
        r = new_user(self.c, "sc_strmail", emails=["str@example.com"])
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["emails"][0]["value"], "str@example.com")

    def test_duplicate_user_is_409(self):
        self.assertEqual(new_user(self.c, "sc_dup").status, 201)
        r = new_user(self.c, "sc_dup")
        self.assertScimError(r, 409, "uniqueness", "sc_dup")

    def test_weak_password_is_400(self):
        for pw in ("short1A", "alllowercase", "lowercase1234"):
            r = new_user(self.c, "sc_weak", password=pw)
            self.assertScimError(r, 400, "invalidValue", "at least 3")
        r = self.c.get("/scim2/Users", query={"filter": 'userName eq "sc_weak"'})
        self.assertEqual(r.json["totalResults"], 0)

    def test_bad_input_is_400(self):
        r = self.c.post("/scim2/Users", json={"schemas": [USER_SCHEMA], "password": PW})
        self.assertScimError(r, 400, "invalidValue", "userName")
        r = self.c.post("/scim2/Users", json={"userName": "sc_nopw"})
        self.assertScimError(r, 400, "invalidValue", "password")
        r = new_user(self.c, "sc:colon")
        self.assertScimError(r, 400, "invalidValue", ":")
        r = self.c.post("/scim2/Users", data=b'{"userName": ', content_type=SCIM_CT)
        self.assertScimError(r, 400, "invalidSyntax")
        r = new_user(self.c, "sc_badrole", roles=[{"value": "Internal/nope"}])
        self.assertScimError(r, 400, "invalidValue", "Internal/nope")
        r = new_user(self.c, "sc_badmail", emails=[{"value": "not-an-address"}])
        self.assertScimError(r, 400, "invalidValue", "not-an-address")

    def test_unsupported_filter_is_400(self):
        for f in ('name.givenName eq "x"', 'userName co "a"', 'userName eq "a" and id eq "b"',
                  'userName eq "unterminated'):
            r = self.c.get("/scim2/Users", query={"filter": f})
            self.assertScimError(r, 400, "invalidFilter")

    def test_unknown_user_is_404(self):
        for path in ("/scim2/Users/00000000-0000-4000-8000-00000000abcd",
                     "/scim2/Users/not-a-uuid"):
            self.assertScimError(self.c.get(path), 404)
            self.assertScimError(self.c.delete(path), 404)
            self.assertScimError(patch(self.c, path, {"op": "replace", "path": "name.givenName",
                                                      "value": "x"}), 404)

    def test_roles_decide_what_a_user_may_call(self):
        r = new_user(self.c, "sc_creator", roles=[{"value": "Internal/creator"}])
        self.assertEqual(r.status, 201, r)
        self.assertEqual(role_names(r.json), ["Internal/creator"])
        creator = self.srv.client("sc_creator", PW)
        self.assertEqual(creator.get(PUBLISHER_APIS).status, 200)
        # a creator is not an administrator: no SCIM
        self.assertEqual(creator.get("/scim2/Users").status, 403)
        self.assertEqual(creator.post("/scim2/Users", json={"userName": "x"}).status, 403)

        self.srv.create_user("sc_subscriber", PW, ["Internal/subscriber"])
        sub = self.srv.client("sc_subscriber", PW)
        self.assertEqual(sub.get(PUBLISHER_APIS).status, 403)

    def test_anonymous_is_401(self):
        anon = self.srv.anonymous()
        for path in ("/scim2/Users", "/scim2/Groups", "/scim2/Me"):
            self.assertEqual(anon.get(path).status, 401, path)
        wrong = self.srv.client(self.srv.admin_username, "Wrong-passw0rd")
        self.assertEqual(wrong.get("/scim2/Users").status, 401)

    def test_patch_roles(self):
        r = new_user(self.c, "sc_patchy")
        uid = r.json["id"]
        user = self.srv.client("sc_patchy", PW)
        self.assertEqual(user.get(PUBLISHER_APIS).status, 403)

        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "add", "path": "roles", "value": [{"value": "Internal/creator"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(role_names(r.json), ["Internal/creator", "Internal/everyone"])
        # takes effect on the next request, no cache in the way
        self.assertEqual(user.get(PUBLISHER_APIS).status, 200)

        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "remove", "path": 'roles[value eq "Internal/creator"]'})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(role_names(r.json), ["Internal/everyone"])
        self.assertEqual(user.get(PUBLISHER_APIS).status, 403)

        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "replace", "path": "roles",
                   "value": [{"value": "Internal/publisher"}, {"value": "Internal/subscriber"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(role_names(r.json), ["Internal/publisher", "Internal/subscriber"])

        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "remove", "path": "roles", "value": [{"value": "Internal/publisher"}]})
        self.assertEqual(role_names(r.json), ["Internal/subscriber"])

        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "add", "path": "roles", "value": [{"value": "Internal/ghost"}]})
        self.assertScimError(r, 400, "invalidValue", "Internal/ghost")
        r = self.c.get("/scim2/Users/" + uid)
        self.assertEqual(role_names(r.json), ["Internal/subscriber"])

    def test_patch_profile(self):
        uid = new_user(self.c, "sc_profile", name={"givenName": "Pat"}).json["id"]
        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "replace", "path": "name.givenName", "value": "Patricia"},
                  {"op": "add", "path": "name.familyName", "value": "Jones"},
                  {"op": "replace", "path": "emails",
                   "value": [{"value": "pj@example.com", "primary": True}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], {"givenName": "Patricia", "familyName": "Jones"})
        self.assertEqual(r.json["emails"][0]["value"], "pj@example.com")
        # no path: the value is an object of attributes
        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "replace", "value": {"name": {"familyName": "Brown"}}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], {"givenName": "Patricia", "familyName": "Brown"})
        r = patch(self.c, "/scim2/Users/" + uid, {"op": "remove", "path": "emails"})
        self.assertNotIn("emails", r.json)
        r = self.c.get("/scim2/Users/" + uid)
        self.assertEqual(r.json["name"]["familyName"], "Brown")

        r = patch(self.c, "/scim2/Users/" + uid, {"op": "replace", "path": "userName",
                                                   "value": "someone-else"})
        self.assertScimError(r, 400, "mutability")
        r = patch(self.c, "/scim2/Users/" + uid, {"op": "replace", "path": "nickName",
                                                   "value": "x"})
        self.assertScimError(r, 400, "invalidPath", "nickName")
        r = patch(self.c, "/scim2/Users/" + uid, {"op": "jump", "path": "name.givenName"})
        self.assertScimError(r, 400, "invalidSyntax")
        r = self.c.patch("/scim2/Users/" + uid, json={"schemas": [PATCH_SCHEMA]})
        self.assertScimError(r, 400, "invalidSyntax", "Operations")

    def test_put_replaces_profile(self):
        uid = new_user(self.c, "sc_put", name={"givenName": "Old", "familyName": "Name"},
                       emails=["old@example.com"]).json["id"]
        r = self.c.put("/scim2/Users/" + uid, json={
            "schemas": [USER_SCHEMA], "userName": "sc_put",
            "name": {"givenName": "New"}, "roles": [{"value": "Internal/observer"}]},
            content_type=SCIM_CT)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], {"givenName": "New"})
        self.assertNotIn("emails", r.json)
        self.assertEqual(role_names(r.json), ["Internal/observer"])
        # the password did not change
        self.assertEqual(self.srv.client("sc_put", PW).get("/scim2/Me").status, 200)
        r = self.c.put("/scim2/Users/" + uid, json={"userName": "sc_renamed"})
        self.assertScimError(r, 400, "mutability")
        r = self.c.put("/scim2/Users/" + uid, json={"userName": "sc_put", "password": "weak"})
        self.assertScimError(r, 400, "invalidValue", "at least 3")

    def test_password_change_takes_effect_at_once(self):
        uid = new_user(self.c, "sc_pwchange").json["id"]
        old = self.srv.client("sc_pwchange", PW)
        self.assertEqual(old.get("/scim2/Me").status, 200)  # now cached as verified
        self.assertEqual(old.get("/scim2/Me").status, 200)
        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "replace", "path": "password", "value": "N3w-Passw0rd"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("password", r.json)
        self.assertEqual(old.get("/scim2/Me").status, 401)
        self.assertEqual(self.srv.client("sc_pwchange", "N3w-Passw0rd").get("/scim2/Me").status,
                         200)
        r = patch(self.c, "/scim2/Users/" + uid,
                  {"op": "replace", "path": "password", "value": "weakweak"})
        self.assertScimError(r, 400, "invalidValue", "at least 3")

    def test_deleted_user_cannot_log_in(self):
        uid = new_user(self.c, "sc_gone").json["id"]
        u = self.srv.client("sc_gone", PW)
        self.assertEqual(u.get("/scim2/Me").status, 200)
        self.assertEqual(self.c.delete("/scim2/Users/" + uid).status, 204)
        self.assertEqual(u.get("/scim2/Me").status, 401)

    def test_me(self):
        new_user(self.c, "sc_me", name={"givenName": "Me"})
        r = self.srv.client("sc_me", PW).get("/scim2/Me")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["userName"], "sc_me")
        self.assertEqual(r.json["name"]["givenName"], "Me")
        self.assertNotIn("password", r.json)
        r = self.c.get("/scim2/Me")
        self.assertEqual(r.json["userName"], self.srv.admin_username)
        self.assertIn("admin", role_names(r.json))

    def test_admin_is_protected(self):
        aid = self.user_id(self.srv.admin_username)
        r = self.c.delete("/scim2/Users/" + aid)
        self.assertScimError(r, 403, None, self.srv.admin_username)
        r = patch(self.c, "/scim2/Users/" + aid,
                  {"op": "replace", "path": "roles", "value": [{"value": "Internal/creator"}]})
        self.assertScimError(r, 403, None, "admin")
        r = patch(self.c, "/scim2/Users/" + aid,
                  {"op": "remove", "path": 'roles[value eq "admin"]'})
        self.assertScimError(r, 403)
        self.assertEqual(self.c.get("/scim2/Users").status, 200)

    def test_service_provider_config(self):
        r = self.c.get("/scim2/ServiceProviderConfig")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json["patch"]["supported"])
        self.assertTrue(r.json["filter"]["supported"])


class ScimGroupsTest(ScimTestCase):

    def group(self, name):
        r = self.c.get("/scim2/Groups", query={"filter": 'displayName eq "%s"' % name})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["totalResults"], 1, r.json)
        return r.json["Resources"][0]

    def test_reference_roles_are_groups(self):
        r = self.c.get("/scim2/Groups")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["schemas"], [LIST_SCHEMA])
        names = {g["displayName"] for g in r.json["Resources"]}
        for role in ("admin", "Internal/creator", "Internal/publisher", "Internal/subscriber",
                     "Internal/everyone", "Internal/devops", "Internal/observer"):
            self.assertIn(role, names)
        admin = self.group("admin")
        self.assertEqual(admin["schemas"], [GROUP_SCHEMA])
        self.assertEqual(admin["meta"]["resourceType"], "Group")
        self.assertIn(self.srv.admin_username, [m.get("display") for m in admin["members"]])
        r = self.c.get("/scim2/Groups", query={"filter": 'displayName eq "no-such-group"'})
        self.assertEqual(r.json["totalResults"], 0)
        r = self.c.get("/scim2/Groups", query={"filter": 'members eq "x"'})
        self.assertScimError(r, 400, "invalidFilter")
        r = self.c.get("/scim2/Groups", query={"count": 2})
        self.assertEqual(r.json["itemsPerPage"], 2)
        self.assertGreaterEqual(r.json["totalResults"], 7)

    def test_group_lifecycle(self):
        uid = new_user(self.c, "sc_member").json["id"]
        r = self.c.post("/scim2/Groups", json={
            "schemas": [GROUP_SCHEMA], "displayName": "sc-qa",
            "members": [{"value": uid, "display": "sc_member"}]}, content_type=SCIM_CT)
        self.assertEqual(r.status, 201, r)
        g = r.json
        self.assertEqual(g["displayName"], "sc-qa")
        self.assertEqual([(m["value"], m["display"]) for m in g["members"]],
                         [(uid, "sc_member")])
        self.assertTrue(r.headers.get("location", "").endswith("/scim2/Groups/" + g["id"]))
        r = self.c.post("/scim2/Groups", json={"displayName": "sc-qa"})
        self.assertScimError(r, 409, "uniqueness", "sc-qa")

        # the user shows the group and the role
        u = self.c.get("/scim2/Users/" + uid).json
        self.assertIn("sc-qa", role_names(u))
        self.assertIn(g["id"], [x["value"] for x in u["groups"]])

        r = patch(self.c, "/scim2/Groups/" + g["id"],
                  {"op": "remove", "path": 'members[value eq "%s"]' % uid})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["members"], [])
        self.assertNotIn("sc-qa", role_names(self.c.get("/scim2/Users/" + uid).json))

        r = patch(self.c, "/scim2/Groups/" + g["id"],
                  {"op": "add", "path": "members", "value": [{"value": uid}]})
        self.assertEqual([m["value"] for m in r.json["members"]], [uid])
        r = patch(self.c, "/scim2/Groups/" + g["id"],
                  {"op": "add", "path": "members",
                   "value": [{"value": "00000000-0000-4000-8000-00000000abcd"}]})
        self.assertScimError(r, 400, "invalidValue")
        r = patch(self.c, "/scim2/Groups/" + g["id"],
                  {"op": "replace", "path": "displayName", "value": "sc-renamed"})
        self.assertScimError(r, 400, "mutability")

        r = self.c.get("/scim2/Groups/" + g["id"])
        self.assertEqual(r.status, 200)
        self.assertEqual([m["value"] for m in r.json["members"]], [uid])

        self.assertEqual(self.c.delete("/scim2/Groups/" + g["id"]).status, 204)
        self.assertScimError(self.c.get("/scim2/Groups/" + g["id"]), 404)
        self.assertNotIn("sc-qa", role_names(self.c.get("/scim2/Users/" + uid).json))

    def test_group_membership_grants_scopes(self):
        uid = new_user(self.c, "sc_viagroup").json["id"]
        user = self.srv.client("sc_viagroup", PW)
        self.assertEqual(user.get(PUBLISHER_APIS).status, 403)
        gid = self.group("Internal/creator")["id"]
        r = patch(self.c, "/scim2/Groups/" + gid,
                  {"op": "add", "path": "members", "value": [{"value": uid}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(user.get(PUBLISHER_APIS).status, 200)
        r = patch(self.c, "/scim2/Groups/" + gid,
                  {"op": "remove", "path": "members", "value": [{"value": uid}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(user.get(PUBLISHER_APIS).status, 403)

    def test_bad_groups(self):
        r = self.c.post("/scim2/Groups", json={"schemas": [GROUP_SCHEMA]})
        self.assertScimError(r, 400, "invalidValue", "displayName")
        r = self.c.post("/scim2/Groups", json={"displayName": "sc-ghosts",
                                               "members": [{"value": "nope"}]})
        self.assertScimError(r, 400, "invalidValue", "nope")
        r = self.c.get("/scim2/Groups", query={"filter": 'displayName eq "sc-ghosts"'})
        self.assertEqual(r.json["totalResults"], 0)

    def test_admin_group_is_protected(self):
        g = self.group("admin")
        self.assertScimError(self.c.delete("/scim2/Groups/" + g["id"]), 403, None, "admin")
        aid = self.user_id(self.srv.admin_username)
        r = patch(self.c, "/scim2/Groups/" + g["id"],
                  {"op": "remove", "path": 'members[value eq "%s"]' % aid})
        self.assertScimError(r, 403)
        self.assertScimError(self.c.delete("/scim2/Groups/" + self.group("Internal/everyone")["id"]),
                             403)


class LockoutTest(unittest.TestCase):
    """security.lockout_attempts failures in a row lock an account for
    security.lockout_seconds, even against the right password."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.ApimServer(conf={"security": {"lockout_attempts": 3,
                                                         "lockout_seconds": 2}})
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.cleanup()

    def test_lockout_and_unlock(self):
        self.srv.create_user("sc_locky", PW)
        right = self.srv.client("sc_locky", PW)
        wrong = self.srv.client("sc_locky", "Not-the-passw0rd")
        self.assertEqual(right.get("/scim2/Me").status, 200)
        for _ in range(3):
            self.assertEqual(wrong.get("/scim2/Me").status, 401)
        r = right.get("/scim2/Me")
        self.assertEqual(r.status, 401, r)
        self.assertIn("locked", (r.json or {}).get("description", "").lower(), r.json)
        time.sleep(2.3)
        self.assertEqual(right.get("/scim2/Me").status, 200)
        # the count starts again: two failures do not lock
        for _ in range(2):
            self.assertEqual(wrong.get("/scim2/Me").status, 401)
        self.assertEqual(right.get("/scim2/Me").status, 200)

    def test_success_resets_the_count(self):
        self.srv.create_user("sc_resets", PW)
        right = self.srv.client("sc_resets", PW)
        wrong = self.srv.client("sc_resets", "Not-the-passw0rd")
        for _ in range(2):
            self.assertEqual(wrong.get("/scim2/Me").status, 401)
        self.assertEqual(right.get("/scim2/Me").status, 200)
        for _ in range(2):
            self.assertEqual(wrong.get("/scim2/Me").status, 401)
        self.assertEqual(right.get("/scim2/Me").status, 200)


if __name__ == "__main__":
    unittest.main()
