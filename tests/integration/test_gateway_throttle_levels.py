"""Issue 6 across two gateways: every rate-limit level refuses past its
limit with its own fault code, and the two gateways together admit the
limit (docs/ARCHITECTURE.md, "Rate limiting").

One topology: NATS, a control plane (policies through the Admin API), two
Traffic Managers (a leader and a standby) and two gateways (apimd
--profile gateway, nginx with the module). One API, application and token
per row of LEVELS, so that no two rows share a throttle key; the rows are
driven together, alternating between the gateways, until no row admits
any more. A request-count limit below 50 must be admitted exactly; a
bandwidth limit admits at least its bytes and less than one response more
per gateway (the request that crosses the limit passes).

Then, mid-window on fresh keys: the leading Traffic Manager killed (the
standby takes over with the same state) and the last Traffic Manager
restarted: the two gateways still admit exactly the limit.

(One gateway, each level exactly: test_gateway_throttle.LocalLimitsTest and
test_gateway_custom; windows resetting: LocalLimitsTest.test_window_resets;
all Traffic Managers killed: test_gateway_throttle.ClusterTest.test_2;
blocking conditions taking effect and lifting: test_gateway_block.)
"""

import base64
import os
import time
import unittest

import apimtest
import gwtest
import test_publisher as pt

POLICIES = "/api/am/admin/v4/throttling/policies/"
LIMIT = 12
CRED = "gw-levels-" + base64.b32encode(os.urandom(10)).decode().lower()
BW_LIMIT = 10 * 1024       # bytes: 10 KB, of gwtest.SIZED_BODY-byte responses
QUIET = 2.0                # seconds without an admission: a row is done


def rc(count):
    return {"type": "REQUESTCOUNTLIMIT",
            "requestCount": {"requestCount": count, "timeUnit": "hour", "unitTime": 1}}


# (row, policy level and body, what the API/application/subscription use,
#  request headers, fault code)
LEVELS = [
    ("subscription", ("subscription", {"defaultLimit": rc(LIMIT)}),
     {"tier": True}, None, "900804"),
    ("application", ("application", {"defaultLimit": rc(LIMIT)}),
     {"app": True}, None, "900803"),
    ("api", ("advanced", {"defaultLimit": rc(LIMIT)}),
     {"api": True}, None, "900800"),
    ("resource", ("advanced", {"defaultLimit": rc(LIMIT)}),
     {"resource": True}, None, "900802"),
    ("group", ("advanced", {"defaultLimit": rc(1000), "conditionalGroups": [
        {"description": "gold plan",
         "conditions": [{"type": "HEADERCONDITION", "invertCondition": False,
                         "headerCondition": {"headerName": "X-Plan",
                                             "headerValue": "gold"}}],
         "limit": rc(LIMIT)}]}),
     {"api": True}, {"X-Plan": "gold"}, "900800"),
    ("custom", ("custom", None), {}, None, "900806"),
    ("bandwidth", ("subscription", {"defaultLimit": {
        "type": "BANDWIDTHLIMIT", "bandwidth": {
            "dataAmount": 10, "dataUnit": "KB", "timeUnit": "hour", "unitTime": 1}}}),
     {"tier": True}, None, "900804"),
]


class Row:
    def __init__(self, name, code, path, token, headers, gws):
        self.name, self.code, self.path, self.token = name, code, path, token
        self.headers = headers or {}
        self.ok = {g.port: 0 for g in gws}
        self.other = []
        self.last = time.monotonic()

    def total(self):
        return sum(self.ok.values())


@unittest.skipUnless(gwtest.HAVE_NATS, "nats-server not installed")
class TwoGatewayLevelsTest(unittest.TestCase):
    """Tests run in order; test_2 kills the leading Traffic Manager."""

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()
        gwtest.avoid_window_end()
        cls.nats = gwtest.NatsServer().start()
        cls.bus = gwtest.Nats(cls.nats.port)
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        cls.backend = gwtest.start_sized_backend()
        c = cls.cp.client()
        cls.rows = {}
        made = []
        for name, (level, body), uses, headers, code in LEVELS:
            policy = pt.uniq("Lv" + name.capitalize())
            api_name = pt.uniq("LvApi")
            if level == "custom":
                body = {"keyTemplate": "$apiContext", "siddhiQuery": gwtest.siddhi(
                    "apiContext == '/%s'" % api_name.lower(), LIMIT)}
            r = c.post(POLICIES + level, json=dict(body, policyName=policy,
                                                  description="issue 6"))
            assert r.status == 201, r.text
            made.append((name, code, headers, cls.deploy(c, api_name, policy, uses),
                         policy, uses))
        cls.tms = [gwtest.start_tm(cls.nats.url, cls.cp.base_url, CRED)]
        time.sleep(0.5)     # the first is the oldest: it leads
        cls.tms.append(gwtest.start_tm(cls.nats.url, cls.cp.base_url, CRED))
        extra = {"event_hub": {"url": cls.nats.url},
                 "gateway": {"control_plane_url": cls.cp.base_url, "credential": CRED}}
        cls.gws = [gwtest.GatewayProc(extra).start(), gwtest.GatewayProc(extra).start()]
        cls.made = made
        for name, code, headers, (api_name, api_id), policy, uses in made:
            cls.rows[name] = Row(name, code, "/%s/1.0.0/items" % api_name.lower(),
                                 cls.token(c, api_id, policy, uses), headers, cls.gws)
        # two more applications on the subscription row's API: fresh keys
        name, code, headers, (api_name, api_id), policy, uses = made[0]
        cls.more = [cls.token(c, api_id, policy, uses) for _ in range(2)]
        cls.sub_path = "/%s/1.0.0/items" % api_name.lower()
        for g in cls.gws:
            for row in cls.rows.values():
                ok = gwtest.wait_for(
                    lambda: gwtest.call(g.port, row.path, "not-a-token")[0] == 401, 20, 0.1)
                assert ok, "gateway %d does not serve %s" % (g.port, row.path)

    @classmethod
    def deploy(cls, c, name, policy, uses):
        kw = {}
        if uses.get("api"):
            kw["apiThrottlingPolicy"] = policy
        if uses.get("resource"):
            kw["operations"] = [{"target": "/items", "verb": "GET", "throttlingPolicy": policy}]
        api = pt.create_api(unittest.TestCase(), c, name=name,
                            policies=[policy, "Unlimited"] if uses.get("tier") else ["Unlimited"],
                            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}},
                            **kw)
        gwtest.deploy_publish(c, api["id"])
        return name, api["id"]

    @classmethod
    def token(cls, c, api_id, policy, uses):
        return gwtest.subscribed_app(
            cls.cp, c, api_id, policy if uses.get("tier") else "Unlimited", "LvApp",
            app_tier=policy if uses.get("app") else "Unlimited")[1]

    @classmethod
    def tearDownClass(cls):
        for g in getattr(cls, "gws", []):
            g.close()
        for tm in getattr(cls, "tms", []):
            if tm.running():
                tm.stop()
        for name in ("cp", "bus", "nats"):
            o = getattr(cls, name, None)
            if o is not None:
                o.stop() if name != "bus" else o.close()
        gwtest.stop_backend(getattr(cls, "backend", None))

    def parties(self):
        beats = self.bus.since(0, "apim.throttle.tm")
        return beats[-1]["parties"] if beats else 0

    def drive(self, rows, until=None, timeout=30):
        """Calls every row on both gateways in turn, every 50 ms, until
        until() holds, or else until no row admitted anything for QUIET
        seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for row in rows:
                for g in self.gws:
                    status, js, headers = gwtest.call(g.port, row.path, row.token, row.headers)
                    if status == 200:
                        row.ok[g.port] += 1
                        row.last = time.monotonic()
                    else:
                        row.other.append((status, (js or {}).get("code"),
                                          headers.get("retry-after")))
            if until is not None:
                if until():
                    return
            elif all(time.monotonic() - r.last > QUIET for r in rows):
                return
            time.sleep(0.05)
        if until is not None:
            self.fail("not reached within %d s: %r" % (timeout, [(r.name, r.ok) for r in rows]))

    def assert_limit(self, row, limit=LIMIT, sub=True):
        if sub:
            with self.subTest(row.name):
                return self.assert_limit(row, limit, False)
        self.assertEqual(row.total(), limit, (row.name, row.ok))
        # both gateways admitted some of it (their implicit allowances)
        self.assertTrue(all(row.ok.values()), (row.name, row.ok))
        self.assertTrue(row.other, row.name)
        for status, code, retry in row.other:
            self.assertEqual((status, code), (429, row.code), row.name)
            self.assertGreaterEqual(int(retry), 1, row.name)

    def test_1_each_level_admits_its_limit_across_two_gateways(self):
        self.assertTrue(gwtest.wait_for(lambda: self.parties() >= 2, 10), self.parties())
        rows = [self.rows[name] for name, *_ in LEVELS]
        self.drive(rows)
        print("\n  admitted by the two gateways: " + ", ".join(
            "%s %d (%s)" % (r.name, r.total(), "+".join(str(v) for v in r.ok.values()))
            for r in rows))
        for row in rows:
            if row.name == "bandwidth":
                continue
            self.assert_limit(row)
        # bandwidth: at least the limit's bytes, less than one response
        # more per gateway
        row = self.rows["bandwidth"]
        with self.subTest("bandwidth"):
            self.assertGreaterEqual(row.total() * gwtest.SIZED_BODY, BW_LIMIT, row.ok)
            self.assertLess(row.total() * gwtest.SIZED_BODY,
                            BW_LIMIT + 2 * gwtest.SIZED_BODY, row.ok)
            self.assertTrue(all(row.ok.values()), row.ok)
            self.assertTrue(row.other)
            for status, code, retry in row.other:
                self.assertEqual((status, code), (429, "900804"))

    def leads(self, tm, timeout=5):
        pid = str(tm.proc.pid)
        t0 = time.monotonic()
        return self.bus.wait_for(lambda s, b: s == "apim.throttle.tm" and
                                 b["tm"].endswith("/" + pid) and b["leader"], timeout, t0)

    # A standby must not allocate (it would count as given the grants it
    # never published and, once leading, find the quota spent: 6 of 12
    # were admitted before trafficmanager.c allocated only when leading).
    def test_2_leading_traffic_manager_killed_mid_window(self):
        first, second = self.tms
        self.assertTrue(self.leads(first))
        row = Row("leader killed", "900804", self.sub_path, self.more[0], None, self.gws)
        self.drive([row], until=lambda: row.total() >= LIMIT // 2)
        first._kill()      # SIGKILL
        t0 = time.monotonic()
        self.assertTrue(self.leads(second))
        self.drive([row])
        print("\n  leader killed at %d: admitted %d" % (LIMIT // 2, row.total()))
        self.assert_limit(row, sub=False)

    def test_3_traffic_manager_restarted_mid_window(self):
        tm = [t for t in self.tms if t.running()][0]
        row = Row("restarted", "900804", self.sub_path, self.more[1], None, self.gws)
        self.drive([row], until=lambda: row.total() >= LIMIT // 2)
        tm.stop()
        tm.start(wait=False)
        self.assertTrue(gwtest.wait_for(lambda: "rate-limit policies (" in tm.stderr_this_run(),
                                    20), tm.stderr_tail())
        self.drive([row])
        print("\n  Traffic Manager restarted at %d: admitted %d" % (LIMIT // 2, row.total()))
        self.assert_limit(row)
