"""Self sign-up (POST /api/identity/user/v1.0/me, the reference's
self-registration API): the account it creates and its roles, the password
policy, duplicates, bad bodies, and switching sign-up off in apim.conf."""

import secrets
import unittest

import apimtest

SIGNUP = "/api/identity/user/v1.0/me"
DEVPORTAL = "/api/am/devportal/v3"
CLAIM = "http://wso2.org/claims/"
PASSWORD = "Password12!"


def uniq(prefix="kim"):
    return "%s%s" % (prefix, secrets.token_hex(3))


def signup_body(username, password=PASSWORD, claims=None, realm="PRIMARY"):
    """The reference's request, as the WSO2 documentation shows it."""
    if claims is None:
        claims = [{"uri": CLAIM + "givenname", "value": "Kim"},
                  {"uri": CLAIM + "emailaddress", "value": "kim.anderson@example.com"},
                  {"uri": CLAIM + "lastname", "value": "Anderson"},
                  {"uri": CLAIM + "mobile", "value": "+947721584558"}]
    user = {"username": username, "password": password, "claims": claims}
    if realm is not None:
        user["realm"] = realm
    return {"user": user,
            "properties": [{"key": "callback",
                            "value": "https://localhost:9443/authenticationendpoint/login.do"}]}


def scim_user(srv, username):
    r = srv.client().get("/scim2/Users", query={"filter": 'userName eq "%s"' % username})
    assert r.status == 200, r
    res = r.json.get("Resources") or []
    return res[0] if res else None


class SignupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()
        cls.anon = cls.srv.client(None)

    def assertError(self, r, status, *needles):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.json.get("code"), status, r)
        for n in needles:
            self.assertIn(n, r.json.get("description", ""), r)

    def signup(self, username, status=201, **kw):
        r = self.anon.post(SIGNUP, json=signup_body(username, **kw))
        self.assertEqual(r.status, status, r)
        return r

    def test_sign_up_and_use_the_developer_portal(self):
        name = uniq()
        r = self.signup(name)
        self.assertEqual(r.json["username"], name)
        self.assertEqual(r.json["realm"], "PRIMARY")
        self.assertEqual(sorted(r.json["roles"]), ["Internal/everyone", "Internal/subscriber"])
        self.assertIn({"uri": CLAIM + "emailaddress", "value": "kim.anderson@example.com"},
                      r.json["claims"])
        self.assertNotIn(PASSWORD, r.text)
        self.assertNotIn("password", r.json)
        # the account holds the profile claims and the subscriber role
        u = scim_user(self.srv, name)
        self.assertIsNotNone(u)
        self.assertEqual(u["id"], r.json["id"])
        self.assertEqual(u["name"]["givenName"], "Kim")
        self.assertEqual(u["name"]["familyName"], "Anderson")
        self.assertIn("kim.anderson@example.com", r.text)
        # the new user signs in to the Developer Portal with Basic
        me = self.srv.client(name, PASSWORD)
        r = me.get(DEVPORTAL + "/apis")
        self.assertEqual(r.status, 200, r)
        self.assertIn("list", r.json)
        # ... with a subscriber's rights only: no Publisher
        self.assertEqual(me.get("/api/am/publisher/v4/apis").status, 403)
        self.assertEqual(self.srv.client(name, "Wrong12!pass").get(DEVPORTAL + "/apis").status,
                         401)

    def test_claims_are_optional(self):
        name = uniq()
        r = self.signup(name, claims=[], realm=None)
        self.assertEqual(r.json["claims"], [])
        self.assertEqual(self.srv.client(name, PASSWORD).get(DEVPORTAL + "/apis").status, 200)

    def test_weak_password(self):
        name = uniq()
        for pw in ("short1A", "alllowercaseletters", "12345678901"):
            r = self.anon.post(SIGNUP, json=signup_body(name, password=pw))
            self.assertError(r, 400, "8 to 256 characters")
        self.assertIsNone(scim_user(self.srv, name))
        self.assertEqual(self.srv.client(name, "short1A").get(DEVPORTAL + "/apis").status, 401)

    def test_duplicate_username(self):
        name = uniq()
        self.signup(name)
        r = self.anon.post(SIGNUP, json=signup_body(name, password="Other12!pass"))
        self.assertError(r, 409, name, "already exists")
        # the first account is untouched
        self.assertEqual(self.srv.client(name, PASSWORD).get(DEVPORTAL + "/apis").status, 200)
        self.assertEqual(self.srv.client(name, "Other12!pass").get(DEVPORTAL + "/apis").status,
                         401)
        # nobody can take over the admin account either
        r = self.anon.post(SIGNUP, json=signup_body(self.srv.admin_username))
        self.assertError(r, 409, "already exists")
        self.assertEqual(self.srv.client().get(DEVPORTAL + "/apis").status, 200)

    def test_username_rules(self):
        for bad in ("ab", "x" * 101, "kim anderson", "kim:x", "kim/x", "kïm123"):
            r = self.anon.post(SIGNUP, json=signup_body(bad))
            self.assertError(r, 400, "username")
        for good in ("abc" + secrets.token_hex(2), "k.a_b-c@example.com" + secrets.token_hex(2),
                     "u" + secrets.token_hex(2) + "x" * 95):
            self.signup(good)
            self.assertEqual(self.srv.client(good, PASSWORD).get(DEVPORTAL + "/apis").status,
                             200)

    def test_bad_bodies(self):
        name = uniq()
        cases = [
            ({}, "'user' is required"),
            ({"user": "kim"}, "'user' is required"),
            ({"user": {"password": PASSWORD}}, "user.username"),
            ({"user": {"username": name}}, "user.password"),
            ({"user": {"username": name, "password": 5}}, "user.password"),
            ({"user": {"username": name, "password": PASSWORD, "realm": "SECONDARY"}},
             "SECONDARY"),
            ({"user": {"username": name, "password": PASSWORD, "claims": {"a": 1}}},
             "user.claims"),
            ({"user": {"username": name, "password": PASSWORD, "claims": [{"value": "x"}]}},
             "claims[0]"),
            ({"user": {"username": name, "password": PASSWORD,
                       "claims": [{"uri": CLAIM + "emailaddress", "value": "not-an-address"}]}},
             "not an e-mail address"),
            ({"user": {"username": name, "password": PASSWORD,
                       "claims": [{"uri": CLAIM + "givenname", "value": "x" * 300}]}},
             "at most 255"),
            ({"user": {"username": name, "password": PASSWORD}, "properties": "x"},
             "properties"),
        ]
        for body, needle in cases:
            self.assertError(self.anon.post(SIGNUP, json=body), 400, needle)
        r = self.anon.post(SIGNUP, data=b"{not json", content_type="application/json")
        self.assertEqual(r.status, 400, r)
        self.assertIsNone(scim_user(self.srv, name))

    def test_sign_up_with_bad_credentials_is_401(self):
        # credentials, when sent, are checked even on a public resource
        r = self.srv.client("nobody", "Wrong12!pass").post(SIGNUP, json=signup_body(uniq()))
        self.assertEqual(r.status, 401, r)


class SignupDisabledTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.ApimServer(conf={"devportal": {"self_signup": False}})
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.cleanup()

    def test_disabled(self):
        name = uniq()
        r = self.srv.client(None).post(SIGNUP, json=signup_body(name))
        self.assertEqual(r.status, 403, r)
        self.assertIn("Self sign-up is disabled", r.json["description"])
        self.assertIsNone(scim_user(self.srv, name))
        self.assertEqual(self.srv.client(name, PASSWORD).get(DEVPORTAL + "/apis").status, 401)
        # the admin still creates accounts
        self.srv.create_user(name, PASSWORD, ["Internal/subscriber"])
        self.assertEqual(self.srv.client(name, PASSWORD).get(DEVPORTAL + "/apis").status, 200)


if __name__ == "__main__":
    unittest.main()
