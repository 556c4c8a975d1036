"""Custom rate-limit policies (a Siddhi query and a key template, 429
900806) and bandwidth limits at the gateway (docs/ARCHITECTURE.md, "Rate
limiting").

LocalCustomTest: nginx with the module and a snapshot file carrying the
policies as the data API serves them (custom ones with their parsed
"rule"), no event hub: local limits, exact counts.

ClusterCustomTest: the real pieces: NATS, a control plane (policies
through the Admin API), a Traffic Manager and a gateway (apimd --profile
gateway, nginx with the module) following the control plane: a custom
policy on one user, one keyed per API, disabled and deleted policies that
stop applying, Siddhi apim cannot read refused with 400, a bandwidth
subscription policy counting the bytes served.

Needs APIM_NGINX_MODULE (or the module next to apimd), nginx and, for the
cluster, nats-server.
"""

import base64
import http.client
import http.server
import json
import os
import shutil
import tempfile
import time
import unittest

import apimtest
import gwtest
import test_publisher as pt
from gwtest import SIZED_BODY as BODY, siddhi

APP2_ID = "22222222-bbbb-4bbb-8bbb-000000000002"
APP2_KEY = "app2ConsumerKey0001"
CUSTOM = "/api/am/admin/v4/throttling/policies/custom"
SUB_POLICIES = "/api/am/admin/v4/throttling/policies/subscription"
CRED = "gw-custom-" + base64.b32encode(os.urandom(10)).decode().lower()


def request(port, method, path, token, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = {"Authorization": "Bearer " + token}
        if body is not None:
            h["Content-Type"] = "application/octet-stream"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        try:
            js = json.loads(data)
        except ValueError:
            js = None
        return r.status, js, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


class LocalCustomTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        gwtest.avoid_window_end()
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-custom-")
        os.chmod(cls.tmp, 0o755)
        cls.backend = gwtest.start_sized_backend()
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        ec = {"endpoint_type": "http",
              "production_endpoints": {
                  "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}}

        def api(n, ctx, api_tier=None):
            a = {"id": "11111111-aaaa-4aaa-8aaa-00000000020%d" % n, "name": "C%d" % n,
                 "context": ctx, "version": "1.0", "lifeCycleStatus": "PUBLISHED",
                 "endpointConfig": ec, "policies": ["Gold"],
                 "operations": [{"target": "/menu", "verb": verb, "scopes": [],
                                 "authType": "Application & Application User"}
                                for verb in ("GET", "POST")]}
            if api_tier:
                a["apiThrottlingPolicy"] = api_tier
            return a

        apis = [api(1, "/cuser"), api(2, "/cper1"), api(3, "/cper2"), api(4, "/cbw"),
                api(5, "/cbwapi", api_tier="AdvBw")]
        tiers = {1: "Unlimited", 2: "Unlimited", 3: "Unlimited", 4: "Bw10KB", 5: "Unlimited"}
        subs = []
        for i, a in enumerate(apis, 1):
            subs.append({"id": "s%d" % i, "apiId": a["id"], "applicationId": gwtest.APP_ID,
                         "tier": tiers[i], "status": "UNBLOCKED"})
            subs.append({"id": "t%d" % i, "apiId": a["id"], "applicationId": APP2_ID,
                         "tier": "Unlimited", "status": "UNBLOCKED"})

        def bandwidth(level, name, kb):
            return {"id": "pol-" + name, "level": level, "name": name, "doc": {
                "policyName": name, "defaultLimit": {
                    "type": "BANDWIDTHLIMIT", "bandwidth": {
                        "dataAmount": kb, "dataUnit": "KB", "timeUnit": "hour",
                        "unitTime": 1}}}}

        def custom(name, conds, limit, window_ms, tmpl):
            return {"id": "pol-" + name, "level": "custom", "name": name,
                    "doc": {"policyName": name, "keyTemplate": tmpl, "isDeployed": True},
                    "rule": {"conditions": [{"field": f, "value": v} for f, v in conds],
                             "limit": limit, "windowMs": window_ms, "keyTemplate": tmpl}}

        snap = {
            "seq": 1,
            "apis": apis,
            "applications": [
                {"id": gwtest.APP_ID, "name": "App1", "owner": "alice", "tier": "Unlimited"},
                {"id": APP2_ID, "name": "App2", "owner": "bob", "tier": "Unlimited"}],
            "keyMappings": [
                {"applicationId": gwtest.APP_ID, "consumerKey": gwtest.PROD_KEY,
                 "keyType": "PRODUCTION"},
                {"applicationId": APP2_ID, "consumerKey": APP2_KEY, "keyType": "PRODUCTION"}],
            "subscriptions": subs,
            "policies": [
                # alice (written with the tenant domain, as the reference
                # writes users) 3 a day, on her user
                custom("OnlyAlice", [("userId", "alice@carbon.super")], 3, 86400000,
                       "$userId"),
                # carol's calls, 2 an hour per API
                custom("PerApi", [("userId", "carol"), ("apiName", "C2")], 2, 3600000,
                       "$apiContext:$apiVersion"),
                custom("PerApi2", [("userId", "carol"), ("apiName", "C3")], 2, 3600000,
                       "$apiContext:$apiVersion"),
                bandwidth("subscription", "Bw10KB", 10),
                bandwidth("advanced", "AdvBw", 5),
                gwtest.policy("subscription", "Unlimited", 2147483647),
                gwtest.policy("application", "Unlimited", 2147483647),
                gwtest.policy("advanced", "Unlimited", 2147483647)],
            "revokedJwts": [],
            "keyManagers": [{"name": "Resident Key Manager", "issuer": gwtest.ISSUER,
                             "jwks": {"keys": [cls.jwk]}}],
        }
        cls.port, cls.nginx = gwtest.start_snapshot_gateway(cls.tmp, snap)
        cls.alice = gwtest.jwt(cls.key, gwtest.PROD_KEY, "alice", aud=False)
        cls.bob = gwtest.jwt(cls.key, APP2_KEY, "bob", aud=False)
        cls.carol = gwtest.jwt(cls.key, APP2_KEY, "carol", aud=False)
        cls.dave = gwtest.jwt(cls.key, gwtest.PROD_KEY, "dave", aud=False)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        gwtest.stop_backend(getattr(cls, "backend", None))
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def calls(self, path, token, n, method="GET", body=None):
        out = [request(self.port, method, path, token, body) for _ in range(n)]
        return [o[0] for o in out], [o for o in out if o[0] != 200]

    def assert_refusals(self, refused, code, window):
        self.assertTrue(refused)
        for status, js, headers in refused:
            self.assertEqual((status, js["code"], js["message"]),
                             (429, code, "Message throttled out"), js)
            # to the end of the window, aligned to the epoch (UTC)
            retry = int(headers["retry-after"])
            self.assertLessEqual(abs(retry - (window - time.time() % window)), 5, retry)

    def test_custom_policy_on_one_user(self):
        statuses, refused = self.calls("/cuser/1.0/menu", self.alice, 5)
        self.assertEqual(statuses, [200] * 3 + [429] * 2)
        self.assert_refusals(refused, "900806", 86400)
        # the key is the user: alice is refused on every API
        self.assertEqual(self.calls("/cper1/1.0/menu", self.alice, 1)[0], [429])
        # bob is not eligible
        self.assertEqual(self.calls("/cuser/1.0/menu", self.bob, 6)[0], [200] * 6)

    def test_key_template_per_api(self):
        statuses, refused = self.calls("/cper1/1.0/menu", self.carol, 3)
        self.assertEqual(statuses, [200, 200, 429])
        self.assert_refusals(refused, "900806", 3600)
        # another API has its own key
        self.assertEqual(self.calls("/cper2/1.0/menu", self.carol, 3)[0], [200, 200, 429])
        # bob is not eligible
        self.assertEqual(self.calls("/cper1/1.0/menu", self.bob, 3)[0], [200] * 3)

    def test_bandwidth_subscription(self):
        """10 KB an hour of 2000-byte responses: five are under, the sixth
        crosses the limit and passes, the next are refused."""
        statuses, refused = self.calls("/cbw/1.0/menu", self.dave, 8)
        self.assertEqual(statuses, [200] * 6 + [429] * 2)
        self.assert_refusals(refused, "900804", 3600)
        # another application's subscription is Unlimited
        self.assertEqual(self.calls("/cbw/1.0/menu", self.bob, 7)[0], [200] * 7)

    def test_bandwidth_api_counts_request_bodies(self):
        """5 KB on the API: two POSTs of 1000 bytes and their 2000-byte
        answers (6000 bytes) use it up."""
        statuses, refused = self.calls("/cbwapi/1.0/menu", self.bob, 3, "POST", b"y" * 1000)
        self.assertEqual(statuses, [200, 200, 429])
        self.assert_refusals(refused, "900800", 3600)


class ClusterCustomTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not gwtest.HAVE_NATS:
            raise unittest.SkipTest("nats-server not installed")
        gwtest.skip_without_gateway()
        gwtest.avoid_window_end()
        cls.nats = gwtest.NatsServer().start()
        cls.bus = gwtest.Nats(cls.nats.port)
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        c = cls.cp.client()
        r = c.post(SUB_POLICIES, json={
            "policyName": "Bw10KBPerHour", "defaultLimit": {
                "type": "BANDWIDTHLIMIT", "bandwidth": {
                    "dataAmount": 10, "dataUnit": "KB", "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        cls.backend = gwtest.start_sized_backend()
        cls.apis = [cls.deploy(c) for _ in range(2)]
        for user in ("alice", "bob", "carol"):
            cls.cp.create_user(user, "Passw0rd!", ["Internal/subscriber"])
        cls.tokens = {u: cls.subscribed_token(cls.cp.client(u, "Passw0rd!"))
                      for u in ("alice", "bob", "carol")}
        cls.bw_token = cls.subscribed_token(c, "Bw10KBPerHour")
        # custom policies known from the start: the gateway's first
        # snapshot and the Traffic Manager's first fetch carry them
        cls.custom = {}
        for name, cond, limit, tmpl in (
                ("OnlyAlice", "( userId == 'alice@carbon.super' )", 3, "$userId"),
                ("CarolPerApi", "userId == 'carol@carbon.super'", 2,
                 "$apiContext:$apiVersion")):
            r = c.post(CUSTOM, json={"policyName": name, "description": "test",
                                     "keyTemplate": tmpl, "siddhiQuery": siddhi(cond, limit)})
            assert r.status == 201, r.text
            assert r.json["isDeployed"] is True, r.text
            cls.custom[name] = r.json["policyId"]
        cls.tm = gwtest.start_tm(cls.nats.url, cls.cp.base_url, CRED)
        cls.gw = gwtest.GatewayProc({
            "event_hub": {"url": cls.nats.url},
            "gateway": {"control_plane_url": cls.cp.base_url, "credential": CRED}}).start()
        for name, _ in cls.apis:
            path = "/%s/1.0.0/items" % name.lower()
            ok = gwtest.wait_for(lambda: gwtest.call(cls.gw.port, path, "not-a-token")[0] == 401,
                             20, 0.1)
            assert ok, "the gateway does not serve the API"

    @classmethod
    def deploy(cls, c):
        name = pt.uniq("CustApi")
        api = pt.create_api(unittest.TestCase(), c, name=name,
                            policies=["Bw10KBPerHour", "Unlimited"],
                            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}})
        gwtest.deploy_publish(c, api["id"])
        return name, api["id"]

    @classmethod
    def subscribed_token(cls, c, tier="Unlimited"):
        return gwtest.subscribed_app(cls.cp, c, [api_id for _, api_id in cls.apis], tier,
                                     "CustApp")[1]

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "gw", None) is not None:
            cls.gw.close()
        tm = getattr(cls, "tm", None)
        if tm is not None and tm.running():
            tm.stop()
        if getattr(cls, "cp", None) is not None:
            cls.cp.stop()
        if getattr(cls, "bus", None) is not None:
            cls.bus.close()
        if getattr(cls, "nats", None) is not None:
            cls.nats.stop()
        gwtest.stop_backend(getattr(cls, "backend", None))

    def path(self, i):
        return "/%s/1.0.0/items" % self.apis[i][0].lower()

    def admitted(self, path, token, n, timeout=20):
        """Calls until n were admitted (the Traffic Manager grows the
        worker's allowance as it asks for more): the answers, in order."""
        out = []
        deadline = time.time() + timeout
        while sum(1 for o in out if o[0] == 200) < n and time.time() < deadline:
            out.append(request(self.gw.port, "GET", path, token))
            time.sleep(0.05)
        return out

    def refused_now(self, path, token, code):
        """Three calls in a row, all refused with code."""
        for _ in range(3):
            status, js, headers = request(self.gw.port, "GET", path, token)
            self.assertEqual((status, (js or {}).get("code")), (429, code), js)
            self.assertGreaterEqual(int(headers["retry-after"]), 1)

    def lifted(self, path, token):
        return gwtest.wait_for(lambda: request(self.gw.port, "GET", path, token)[0] == 200,
                           15, 0.2)

    def test_custom_policy_user_disabled_and_deleted(self):
        pid = self.custom["OnlyAlice"]
        alice, bob = self.tokens["alice"], self.tokens["bob"]
        # every answer is 200 or 900806; the window admits exactly 3
        out = self.admitted(self.path(0), alice, 3)
        for status, js, _ in out:
            if status != 200:
                self.assertEqual((status, js["code"]), (429, "900806"), js)
        dbg = ([d for d in self.bus.since(0, "apim.throttle.decisions")][-3:],
               [m.get("quota") for m in self.bus.since(0, "apim.throttle.usage")][-5:],
               [m for m in self.bus.since(0, "apim.throttle.tm")][-1:],
               self.tm.stderr_tail())
        self.assertEqual(sum(1 for o in out if o[0] == 200), 3, dbg)
        self.refused_now(self.path(0), alice, "900806")
        # the key is the user: every API
        self.refused_now(self.path(1), alice, "900806")
        # bob is not eligible
        self.assertEqual([request(self.gw.port, "GET", self.path(0), bob)[0]
                          for _ in range(5)], [200] * 5)

        # not deployed: lifted
        r = self.cp.client().put(CUSTOM + "/" + pid, json={
            "policyName": "OnlyAlice", "keyTemplate": "$userId", "isDeployed": False,
            "siddhiQuery": siddhi("( userId == 'alice@carbon.super' )", 3)})
        self.assertEqual(r.status, 200, r.text)
        self.assertFalse(r.json["isDeployed"])
        self.assertTrue(self.lifted(self.path(0), alice))
        self.assertEqual([request(self.gw.port, "GET", self.path(0), alice)[0]
                          for _ in range(5)], [200] * 5)

        # deployed again, it applies again; deleted, lifted
        r = self.cp.client().put(CUSTOM + "/" + pid, json={
            "policyName": "OnlyAlice", "keyTemplate": "$userId", "isDeployed": True,
            "siddhiQuery": siddhi("( userId == 'alice@carbon.super' )", 3)})
        self.assertEqual(r.status, 200, r.text)
        self.assertTrue(gwtest.wait_for(
            lambda: request(self.gw.port, "GET", self.path(0), alice)[0] == 429, 15, 0.1))
        r = self.cp.client().delete(CUSTOM + "/" + pid)
        self.assertEqual(r.status, 200, r.text)
        self.assertTrue(self.lifted(self.path(0), alice))

    def test_key_template_per_api(self):
        carol = self.tokens["carol"]
        for i in range(2):
            # each API has its own count: exactly 2
            out = self.admitted(self.path(i), carol, 2)
            self.assertEqual(sum(1 for o in out if o[0] == 200), 2)
            for status, js, _ in out:
                if status != 200:
                    self.assertEqual((status, js["code"]), (429, "900806"), js)
            self.refused_now(self.path(i), carol, "900806")
        # the usage events carried the custom keys, per API
        quota = [q for m in self.bus.since(0, "apim.throttle.usage")
                 for q in m.get("quota", []) if q["level"] == "custom"]
        keys = {q["key"] for q in quota if q["policy"] == "CarolPerApi"}
        self.assertEqual(keys, {"custom:CarolPerApi:/%s:1.0.0" % n.lower()
                                for n, _ in self.apis})

    def test_invalid_siddhi_refused(self):
        c = self.cp.client()
        r = c.post(CUSTOM, json={
            "policyName": "BadOr", "keyTemplate": "$userId",
            "siddhiQuery": siddhi("(userId == 'a' or userId == 'b')", 5)})
        self.assertEqual(r.status, 400, r.text)
        self.assertIn("'or' is not supported", r.json["description"])
        self.assertIn("Supported:", r.json["description"])
        r = c.post(CUSTOM, json={
            "policyName": "BadWindow", "keyTemplate": "$userId",
            "siddhiQuery": siddhi("true", 5).replace("#throttler:timeBatch(1 hour)",
                                                     "#window.time(1 hour)")})
        self.assertEqual(r.status, 400, r.text)
        self.assertIn("expected 'throttler'", r.json["description"])
        r = c.post(CUSTOM, json={"policyName": "BadTemplate",
                                 "keyTemplate": "$customProperty.x",
                                 "siddhiQuery": siddhi("true", 5)})
        self.assertEqual(r.status, 400, r.text)
        self.assertIn("not supported in custom policies", r.json["description"])
        # nothing was stored
        names = [p["policyName"] for p in c.get(CUSTOM).json["list"]]
        self.assertFalse({"BadOr", "BadWindow", "BadTemplate"} & set(names))
        # the documented forms are accepted ('>' too), here not deployed
        r = c.post(CUSTOM, json={"policyName": "Gt", "keyTemplate": "$clientIp:gt",
                                 "isDeployed": False,
                                 "siddhiQuery": siddhi("true", 4, op=">")})
        self.assertEqual(r.status, 201, r.text)
        self.assertFalse(r.json["isDeployed"])
        c.delete(CUSTOM + "/" + r.json["policyId"])

    def test_bandwidth_subscription(self):
        """10 KB an hour of 2000-byte responses: the window serves six (the
        sixth crosses the limit), then 900804."""
        out = self.admitted(self.path(0), self.bw_token, 6)
        for status, js, _ in out:
            if status != 200:
                self.assertEqual((status, js["code"]), (429, "900804"), js)
        self.assertEqual(sum(1 for o in out if o[0] == 200), 6)
        self.refused_now(self.path(0), self.bw_token, "900804")
        # the subscription key counted the bytes (the sixth answer's in the
        # report after it)
        def counted():
            return max([q["count"] for m in self.bus.since(0, "apim.throttle.usage")
                        for q in m.get("quota", []) if q["policy"] == "Bw10KBPerHour"],
                       default=0)
        self.assertTrue(gwtest.wait_for(lambda: counted() == 6 * BODY, 5), counted())


if __name__ == "__main__":
    unittest.main()
