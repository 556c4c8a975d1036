"""Rate limiting at the gateway (docs/ARCHITECTURE.md, "Rate limiting"):
the module counts every admitted request per throttle key and window and
refuses past the key's cap with 429, the level's fault code and
Retry-After.

LocalLimitsTest: nginx with the module and a snapshot file carrying
"policies", no event hub: local limits (the whole limit on this worker),
each level refused with its code, stopOnQuotaReach false passing marked.

ClusterTest: the real pieces: NATS, a control plane (policies through the
Admin API, an API deployed and subscribed), a Traffic Manager and two
gateways (apimd --profile gateway, each nginx with the module) following
the control plane: the two gateways together never admit more than the
limit; the usage events carry the "quota" list; the Traffic Manager
killed, the gateways fall back to local limits (logged, "fallback" in the
usage events) and keep limiting.

Needs APIM_NGINX_MODULE (or the module next to apimd), nginx and, for the
cluster, nats-server.
"""

import base64
import os
import shutil
import tempfile
import time
import unittest

import apimtest
import gwtest
import test_publisher as pt
from gwtest import avoid_window_end, call, policy, wait_for

HOUR_MS = gwtest.HOUR_MS
APP2_ID = "22222222-bbbb-4bbb-8bbb-000000000002"
APP2_KEY = "app2ConsumerKey0001"


class LocalLimitsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        avoid_window_end()
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-throttle-")
        os.chmod(cls.tmp, 0o755)
        cls.backend = gwtest.start_backend("production")
        cls.key, cls.jwk = gwtest.rsa_jwk(cls.tmp)
        ec = {"endpoint_type": "http",
              "production_endpoints": {
                  "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}}

        def op(target, tier=None):
            o = {"target": target, "verb": "GET", "authType": "Application & Application User",
                 "scopes": []}
            if tier:
                o["throttlingPolicy"] = tier
            return o

        def api(n, ctx, api_tier=None, ops=None):
            a = {"id": "11111111-aaaa-4aaa-8aaa-00000000010%d" % n, "name": "T%d" % n,
                 "context": ctx, "version": "1.0", "lifeCycleStatus": "PUBLISHED",
                 "endpointConfig": ec, "policies": ["Gold"],
                 "operations": ops or [op("/menu")]}
            if api_tier:
                a["apiThrottlingPolicy"] = api_tier
            return a

        apis = [api(1, "/lvapi", api_tier="Adv5"),
                api(2, "/lvres", ops=[op("/menu", "Adv4"), op("/other")]),
                api(3, "/lvsub"),
                api(4, "/lvapp"),
                api(5, "/lvsoft"),
                api(6, "/lvboth", api_tier="Unlimited", ops=[op("/menu", "Adv4")]),
                api(7, "/lvcond", api_tier="AdvCond"),
                api(8, "/lvsec", api_tier="Adv2PerSec")]
        tiers = {1: "Unlimited", 2: "Unlimited", 3: "Sub3", 4: "Unlimited", 5: "Soft2",
                 6: "Unlimited", 7: "Unlimited", 8: "Unlimited"}
        def group(count, *conds):
            return {"conditions": list(conds), "limit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": count, "timeUnit": "hour", "unitTime": 1}}}

        def ip(kind, invert=False, **kw):
            c = {"ipConditionType": kind, "specificIP": None, "startingIP": None,
                 "endingIP": None}
            c.update(kw)
            return {"type": "IPCONDITION", "invertCondition": invert, "ipCondition": c}

        def header(name, value):
            return {"type": "HEADERCONDITION", "invertCondition": False,
                    "headerCondition": {"headerName": name, "headerValue": value}}

        def jwt(claim, value):
            return {"type": "JWTCLAIMSCONDITION", "invertCondition": False,
                    "jwtClaimsCondition": {"claimUrl": claim, "attribute": value}}

        def query(name, value):
            return {"type": "QUERYPARAMETERCONDITION", "invertCondition": False,
                    "queryParameterCondition": {"parameterName": name,
                                                "parameterValue": value}}

        # conditional groups: the first that holds applies, else the default
        cond_policy = policy("advanced", "AdvCond", 6, conditionalGroups=[
            group(2, header("X-Tier", "gold")),
            group(3, query("plan", "free")),
            group(1, ip("IPSPECIFIC", invert=True, specificIP="10.9.9.9"),
                  header("X-Inv", "yes")),
            group(4, ip("IPRANGE", startingIP="127.0.0.0", endingIP="127.0.0.255"),
                  query("r", "1")),
            group(1, ip("IPSPECIFIC", specificIP="10.9.9.9")),
            # JWT claims (those of the backend JWT): alice's calls with X-Jwt
            group(2, header("X-Jwt", "yes"),
                  jwt("http://wso2.org/claims/enduser", "alice")),
            # ... and a claim that does not hold (the subscriber is alice)
            group(1, header("X-Jwt2", "yes"),
                  jwt("http://wso2.org/claims/subscriber", "mallory"))])
        subs = []
        for i, a in enumerate(apis, 1):
            subs.append({"id": "s%d" % i, "apiId": a["id"], "applicationId": gwtest.APP_ID,
                         "tier": tiers[i], "status": "UNBLOCKED"})
        subs.append({"id": "s2-4", "apiId": apis[3]["id"], "applicationId": APP2_ID,
                     "tier": "Unlimited", "status": "UNBLOCKED"})
        snap = {
            "seq": 1,
            "apis": apis,
            "applications": [
                {"id": gwtest.APP_ID, "name": "App1", "owner": "alice", "tier": "Unlimited"},
                {"id": APP2_ID, "name": "App2", "owner": "bob", "tier": "App6"}],
            "keyMappings": [
                {"applicationId": gwtest.APP_ID, "consumerKey": gwtest.PROD_KEY,
                 "keyType": "PRODUCTION"},
                {"applicationId": APP2_ID, "consumerKey": APP2_KEY, "keyType": "PRODUCTION"}],
            "subscriptions": subs,
            "policies": [
                policy("advanced", "Adv5", 5), policy("advanced", "Adv4", 4),
                policy("advanced", "Adv2PerSec", 2, unit="sec"),
                policy("subscription", "Sub3", 3),
                policy("subscription", "Soft2", 2, stopOnQuotaReach=False),
                policy("application", "App6", 6),
                cond_policy,
                policy("subscription", "Unlimited", 2147483647),
                policy("application", "Unlimited", 2147483647),
                policy("advanced", "Unlimited", 2147483647)],
            "revokedJwts": [],
            "keyManagers": [{"name": "Resident Key Manager", "issuer": gwtest.ISSUER,
                             "jwks": {"keys": [cls.jwk]}}],
        }
        cls.port, cls.nginx = gwtest.start_snapshot_gateway(
            cls.tmp, snap, log_format="$status $apim_fault_code out=$apim_throttled_out $uri")
        cls.tok1 = cls.token(gwtest.PROD_KEY, "alice")
        cls.tok2 = cls.token(APP2_KEY, "bob")
        cls.tok2b = cls.token(APP2_KEY, "carol")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        gwtest.stop_backend(getattr(cls, "backend", None))
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def token(cls, client, sub):
        return gwtest.jwt(cls.key, client, sub, jti="thr-%s-%s" % (sub, int(time.time())),
                          aud=False)

    def run_until_refused(self, path, token, n):
        """n calls: the statuses, and the first refusal (status, body, headers)."""
        statuses, refused = [], None
        for _ in range(n):
            status, js, headers = call(self.port, path, token)
            statuses.append(status)
            if status != 200 and refused is None:
                refused = (status, js, headers)
        return statuses, refused

    def assert_refused(self, refused, code):
        self.assertIsNotNone(refused)
        status, js, headers = refused
        self.assertEqual(status, 429, js)
        self.assertEqual(js["code"], code)
        self.assertEqual(js["message"], "Message throttled out")
        retry = int(headers["retry-after"])
        # to the end of the hour window, at least 1
        self.assertGreaterEqual(retry, 1)
        self.assertLessEqual(retry, 3600)
        self.assertLessEqual(abs(retry - (3600 - time.time() % 3600)), 5)

    def access_log(self):
        with open(os.path.join(self.tmp, "access.log")) as f:
            return f.read().splitlines()

    def test_api_level(self):
        statuses, refused = self.run_until_refused("/lvapi/1.0/menu", self.tok1, 8)
        self.assertEqual(statuses, [200] * 5 + [429] * 3)
        self.assert_refused(refused, "900800")
        # the fault is in $apim_fault_code
        self.assertTrue(wait_for(lambda: any(
            line.startswith("429 900800") and "/lvapi/" in line for line in self.access_log())))

    def test_window_resets(self):
        """2 a second: the third call of a second is refused, with a
        Retry-After of 1; the next second admits 2 again."""
        def second_start():
            # a fresh second with room for three calls
            while time.time() % 1 > 0.3:
                time.sleep(0.01)

        checked = 0
        for _ in range(5):
            second_start()
            t0 = int(time.time())
            statuses, refused = self.run_until_refused("/lvsec/1.0/menu", self.tok1, 3)
            if int(time.time()) != t0:
                continue   # the calls straddled two seconds: try again
            checked += 1
            self.assertEqual(statuses, [200, 200, 429])
            self.assertEqual(refused[1]["code"], "900800")
            self.assertEqual(refused[2]["retry-after"], "1")
            if checked == 2:
                break
            time.sleep(1.0)
        self.assertGreaterEqual(checked, 1, "every try straddled two seconds")
        # the next second admits again
        time.sleep(1 - time.time() % 1 + 0.02)
        self.assertEqual(call(self.port, "/lvsec/1.0/menu", self.tok1)[0], 200)

    def test_resource_level_only_its_resource(self):
        statuses, refused = self.run_until_refused("/lvres/1.0/menu", self.tok1, 6)
        self.assertEqual(statuses, [200] * 4 + [429] * 2)
        self.assert_refused(refused, "900802")
        # another resource of the API has no policy
        self.assertEqual([call(self.port, "/lvres/1.0/other", self.tok1)[0]
                          for _ in range(6)], [200] * 6)

    def test_resource_policy_not_applied_under_an_api_policy(self):
        statuses, _ = self.run_until_refused("/lvboth/1.0/menu", self.tok1, 7)
        self.assertEqual(statuses, [200] * 7)

    def test_advanced_conditional_groups(self):
        base = "/lvcond/1.0/menu"

        def statuses(path, headers=None, n=8):
            out = [call(self.port, path, self.tok1, headers) for _ in range(n)]
            for status, js, _ in out:
                if status != 200:
                    self.assertEqual((status, js["code"]), (429, "900800"))
            return [o[0] for o in out]
        self.assertEqual(statuses(base, {"X-Tier": "gold"}), [200] * 2 + [429] * 6)
        self.assertEqual(statuses(base + "?plan=free"), [200] * 3 + [429] * 5)
        # an inverted IP condition (we are not 10.9.9.9) and a header
        self.assertEqual(statuses(base, {"X-Inv": "yes"}), [200] + [429] * 7)
        # an IP range and a query parameter
        self.assertEqual(statuses(base + "?r=1"), [200] * 4 + [429] * 4)
        # JWT claim conditions: the end user's holds (limit 2)
        self.assertEqual(statuses(base, {"X-Jwt": "yes"}, n=3), [200] * 2 + [429])
        # no group holds (the IP one is for 10.9.9.9, the subscriber is not
        # mallory): the default limit, counted apart from the groups'
        self.assertEqual(statuses(base + "?plan=paid", {"X-Tier": "silver", "X-Jwt2": "yes"}),
                         [200] * 6 + [429] * 2)

    def test_subscription_level(self):
        statuses, refused = self.run_until_refused("/lvsub/1.0/menu", self.tok1, 5)
        self.assertEqual(statuses, [200] * 3 + [429] * 2)
        self.assert_refused(refused, "900804")

    def test_application_level_per_user(self):
        statuses, refused = self.run_until_refused("/lvapp/1.0/menu", self.tok2, 8)
        self.assertEqual(statuses, [200] * 6 + [429] * 2)
        self.assert_refused(refused, "900803")
        # the application key is appId:user: another user has their own
        statuses, _ = self.run_until_refused("/lvapp/1.0/menu", self.tok2b, 6)
        self.assertEqual(statuses, [200] * 6)

    def test_stop_on_quota_reach_false_passes_marked(self):
        statuses, _ = self.run_until_refused("/lvsoft/1.0/menu", self.tok1, 5)
        self.assertEqual(statuses, [200] * 5)

        def marks():
            return [line.split("out=")[1].split(" ")[0] for line in self.access_log()
                    if "/lvsoft/" in line]
        self.assertTrue(wait_for(lambda: len(marks()) == 5), marks())
        self.assertEqual(marks(), [""] * 2 + ["true"] * 3)


CRED = "thr-cred-" + base64.b32encode(os.urandom(10)).decode().lower()
SUB_POLICIES = "/api/am/admin/v4/throttling/policies/subscription"
LIMIT = 20


@unittest.skipUnless(gwtest.HAVE_NATS, "nats-server not installed")
class ClusterTest(unittest.TestCase):
    """Tests run in order (test_1..., test_2...): the last kills the
    Traffic Manager."""

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()
        avoid_window_end()
        cls.nats = gwtest.NatsServer().start()
        cls.bus = gwtest.Nats(cls.nats.port)
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        c = cls.cp.client()
        r = c.post(SUB_POLICIES, json={
            "policyName": "Thr20PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": LIMIT, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        r = c.post(SUB_POLICIES, json={
            "policyName": "Thr4Soft", "stopOnQuotaReach": False, "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 4, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        cls.backend = gwtest.start_backend("production")
        cls.name = pt.uniq("ThrApi")
        api = pt.create_api(unittest.TestCase(), c, name=cls.name, policies=["Thr20PerHour", "Thr4Soft", "Unlimited"],
                            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}})
        cls.api_id = api["id"]
        gwtest.deploy_publish(c, api["id"])
        cls.apps = [cls.subscribed_app(c) for _ in range(2)]
        cls.soft_app = cls.subscribed_app(c, "Thr4Soft")
        cls.tm = cls.start_tm()
        extra = {"event_hub": {"url": cls.nats.url},
                 "gateway": {"control_plane_url": cls.cp.base_url, "credential": CRED}}
        cls.gws = [gwtest.GatewayProc(extra).start(), gwtest.GatewayProc(extra).start()]
        cls.path = "/%s/1.0.0/items" % cls.name.lower()
        # both gateways serve the API (a bad token: nothing counted)
        for g in cls.gws:
            ok = wait_for(lambda: call(g.port, cls.path, "not-a-token")[0] == 401, 20, 0.1)
            assert ok, "gateway %d does not serve the API" % g.port

    @classmethod
    def subscribed_app(cls, c, tier="Thr20PerHour"):
        return gwtest.subscribed_app(cls.cp, c, cls.api_id, tier)

    @classmethod
    def start_tm(cls):
        return gwtest.start_tm(cls.nats.url, cls.cp.base_url, CRED)

    @classmethod
    def tearDownClass(cls):
        for g in getattr(cls, "gws", []):
            g.close()
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

    def error_log(self, g):
        try:
            with open(os.path.join(g.home, "gateway", "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def parties(self):
        beats = self.bus.since(0, "apim.throttle.tm")
        return beats[-1]["parties"] if beats else 0

    def drive(self, token, rounds):
        """rounds calls to each gateway, alternating: ({port: 200s}, other
        answers)."""
        ok = {g.port: 0 for g in self.gws}
        other = []
        for _ in range(rounds):
            for g in self.gws:
                status, js, headers = call(g.port, self.path, token)
                if status == 200:
                    ok[g.port] += 1
                else:
                    other.append((status, js, headers.get("retry-after")))
            time.sleep(0.02)
        return ok, other

    def assert_throttled(self, other):
        self.assertTrue(other)
        for status, js, retry in other:
            self.assertEqual(status, 429, js)
            self.assertEqual(js["code"], "900804")
            self.assertGreaterEqual(int(retry), 1)

    def test_0_stop_on_quota_reach_false_passes_marked(self):
        self.assertTrue(wait_for(lambda: self.parties() >= 2, 10), self.parties())
        app_id, token = self.soft_app
        t0 = time.monotonic()
        ok, other = self.drive(token, 6)
        self.assertEqual(other, [])
        self.assertEqual(sum(ok.values()), 12)

        # the usage entries count the requests that passed over the limit:
        # at most the limit (4) passed unmarked
        def marked():
            return sum(e.get("throttledOut", 0)
                       for m in self.bus.since(t0, "apim.throttle.usage")
                       for e in m["entries"] if e["appId"] == app_id)
        self.assertTrue(wait_for(lambda: marked() >= 12 - 4, 5), marked())
        self.assertLessEqual(marked(), 12)

    def test_1_two_gateways_stay_within_the_limit(self):
        # both workers are live parties for the Traffic Manager
        self.assertTrue(wait_for(lambda: self.parties() >= 2, 10), self.parties())
        app_id, token = self.apps[0]
        ok, other = self.drive(token, 2 * LIMIT)
        total = sum(ok.values())
        self.assertLessEqual(total, LIMIT, ok)
        # at least the implicit allowances: floor(20 / (2 * 2)) each
        self.assertGreaterEqual(total, LIMIT // 2, ok)
        self.assert_throttled(other)
        # more later: never over the limit
        time.sleep(1)
        more, other = self.drive(token, 10)
        self.assertLessEqual(total + sum(more.values()), LIMIT, (ok, more))
        self.assert_throttled(other)

        # the usage events carried the counts of the subscription key
        key = "%s:/%s:1.0.0" % (app_id, self.name.lower())
        quota = [q for m in self.bus.since(0, "apim.throttle.usage")
                 for q in m.get("quota", []) if q["key"] == key]
        self.assertTrue(quota)
        for q in quota:
            self.assertEqual(q["level"], "subscription")
            self.assertEqual(q["policy"], "Thr20PerHour")
            self.assertEqual(q["windowStart"] % HOUR_MS, 0)
        self.assertEqual(max(q["count"] for q in quota), max(ok.values()))
        # the Traffic Manager granted allowances to these gateways' workers
        grants = [g for d in self.bus.since(0, "apim.throttle.decisions")
                  for g in d["grants"] if g["key"] == key]
        self.assertTrue(grants)
        self.assertLessEqual(sum({g["party"]: g["allowance"] for g in grants}.values()),
                             LIMIT)

    def test_2_traffic_manager_killed_local_limits(self):
        self.assertTrue(wait_for(lambda: self.parties() >= 2, 10), self.parties())
        n = self.parties()
        type(self).tm._kill()   # SIGKILL: no clean shutdown
        for g in self.gws:
            self.assertTrue(wait_for(lambda: "no Traffic Manager heard" in self.error_log(g),
                                     10), self.error_log(g))
        app_id, token = self.apps[1]
        ok, other = self.drive(token, LIMIT)
        # each gateway admits the limit divided by the parties last heard of
        self.assertEqual(sorted(ok.values()), [LIMIT // n] * 2, ok)
        self.assert_throttled(other)
        # and says so in its usage events
        t0 = time.monotonic()
        call(self.gws[0].port, self.path, token)
        self.assertTrue(self.bus.wait_for(lambda s, b: s == "apim.throttle.usage" and
                                          b.get("fallback") is True, 5, t0))

        # a Traffic Manager again: back to allowances
        type(self).tm = self.start_tm()
        for g in self.gws:
            self.assertTrue(wait_for(lambda: "Traffic Manager heard again" in self.error_log(g),
                                     10), self.error_log(g))


if __name__ == "__main__":
    unittest.main()
