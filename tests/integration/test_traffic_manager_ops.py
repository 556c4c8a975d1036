"""Operating the Traffic Manager (apimd --profile traffic-manager): it
serves /health/live, /health/ready (connected to the event hub and the
rate-limit policies read) and Prometheus /metrics on 9443 +
server.port_offset (traffic_manager.port), with counters that move as the
gateways' usage reports arrive.

Reports are sent as gateway workers send them, over a raw NATS socket
(test_traffic_manager.Nats); the rate limits come from a real control
plane.
"""

import base64
import os
import time
import unittest

import apimtest
import gwtest
from gwtest import NatsServer

CRED = "tm-ops-cred-" + base64.b32encode(os.urandom(10)).decode().lower()
POLICIES = "/api/am/admin/v4/throttling/policies/subscription"
POLICY = "TmOps100PerHour"


@unittest.skipUnless(gwtest.HAVE_NATS, "nats-server not installed")
class TrafficManagerOpsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if time.time() % 3600 > 3600 - 60:
            time.sleep(3600 - time.time() % 3600 + 1)
        cls.nats = NatsServer().start()
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        r = cls.cp.client().post(POLICIES, json={
            "policyName": POLICY, "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 100, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        cls.bus = gwtest.Nats(cls.nats.port)

    @classmethod
    def tearDownClass(cls):
        cls.bus.close()
        cls.cp.stop()
        cls.nats.stop()

    def start_tm(self, hub_url, conf=None):
        tm = apimtest.ApimServer(profile="traffic-manager", conf=apimtest.merge_conf({
            "event_hub": {"url": hub_url},
            "gateway": {"control_plane_url": self.cp.base_url, "credential": CRED}},
            conf or {}))
        tm.start()  # waits for /health/live
        self.addCleanup(tm.stop)
        return tm

    def metrics(self, tm):
        """name -> value of the Prometheus text at the TM's /metrics"""
        r = tm.client(None).get("/metrics")
        self.assertEqual(r.status, 200, r.text)
        self.assertTrue(r.headers["content-type"].startswith("text/plain"), r.headers)
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def report(self, party, key, count, policy=POLICY):
        gw, pid = party.split("/")
        self.bus.publish("apim.throttle.usage", {
            "gatewayId": gw, "pid": int(pid), "entries": [], "quota": [{
                "key": key, "level": "subscription", "policy": policy,
                "windowStart": gwtest.window_start(), "count": count, "allowance": 0}]})

    def test_health_and_metrics_follow_the_usage(self):
        tm = self.start_tm(self.nats.url, {"traffic_manager": {"id": "tm-ops-1"}})
        c = tm.client(None)
        self.assertTrue(gwtest.wait_for(lambda: c.get("/health/ready").status == 200, 15),
                        c.get("/health/ready").text)
        r = c.get("/health/ready")
        self.assertEqual(r.json, {"status": "UP",
                                  "checks": {"eventHub": "UP", "policies": "UP"}})
        self.assertEqual(c.get("/health/live").status, 200)
        self.assertIn("health         http://localhost:%d/health/ready" % tm.port,
                      tm.stdout())
        # traffic_manager.id names it on the bus
        beat = self.bus.wait_for(lambda s, b: s == "apim.throttle.tm" and
                                 b["tm"] == "tm-ops-1", 5, time.monotonic())
        before = self.metrics(tm)
        self.assertGreaterEqual(before["apim_tm_policies"], 1)
        self.assertEqual(before["apim_tm_event_hub_connected"], 1)
        self.assertEqual(before["apim_tm_is_leader"], 1 if beat["leader"] else 0)
        key = "sub:app-ops:/metrics:1.0"
        t0 = time.monotonic()
        sent = 0

        def granted():
            return [g for d in self.bus.since(t0, "apim.throttle.decisions")
                    for g in d["grants"] if g["key"] == key]
        # a busy party, reporting every 100 ms, until it is granted more
        while sent < 12 or (not granted() and sent < 50):
            sent += 1
            self.report("gwM/6", key, min(3 * sent, 90))
            time.sleep(0.1)
        time.sleep(0.3)
        after = self.metrics(tm)
        self.assertEqual(after["apim_tm_usage_messages_total"],
                         before["apim_tm_usage_messages_total"] + sent, (before, after))
        self.assertEqual(after["apim_tm_usage_entries_total"],
                         before["apim_tm_usage_entries_total"] + sent, (before, after))
        self.assertGreaterEqual(after["apim_tm_keys"], 1)
        self.assertGreaterEqual(after["apim_tm_parties"], 1)
        # the only Traffic Manager on this bus leads and grants
        self.assertEqual(after["apim_tm_is_leader"], 1)
        self.assertTrue(granted())
        self.assertGreaterEqual(after["apim_tm_grants_published_total"], len(granted()))
        self.assertGreaterEqual(after["apim_tm_decisions_published_total"], 1)
        # an unknown policy is counted as rejected, not as an entry
        self.report("gwM/6", "sub:x:/unknown:1", 1, policy="NoSuchPolicy")
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics(tm)["apim_tm_usage_rejected_total"] >
            after["apim_tm_usage_rejected_total"], 5))
        self.assertEqual(self.metrics(tm)["apim_tm_usage_entries_total"],
                         after["apim_tm_usage_entries_total"])

    def test_ready_only_while_connected_to_the_event_hub(self):
        hub = NatsServer()  # not started yet
        self.addCleanup(hub.stop)
        tm = self.start_tm(hub.url)  # /health/live answers without the event hub
        c = tm.client(None)
        r = c.get("/health/ready")
        self.assertEqual(r.status, 503, r.text)
        self.assertEqual(r.json["checks"]["eventHub"], "DOWN")
        self.assertEqual(c.get("/health/live").status, 200)
        hub.start()
        self.assertTrue(gwtest.wait_for(lambda: c.get("/health/ready").status == 200, 15),
                        c.get("/health/ready").text)
        self.assertEqual(c.get("/health/ready").json["checks"],
                         {"eventHub": "UP", "policies": "UP"})
        # NATS goes away: not ready; back: ready again
        hub.stop()
        self.assertTrue(gwtest.wait_for(lambda: c.get("/health/ready").status == 503, 10))
        self.assertEqual(c.get("/health/ready").json["checks"]["eventHub"], "DOWN")
        self.assertEqual(self.metrics(tm)["apim_tm_event_hub_connected"], 0)
        hub.start()
        self.assertTrue(gwtest.wait_for(lambda: c.get("/health/ready").status == 200, 15))

    def test_own_port(self):
        port = apimtest.unused_port()
        tm = apimtest.ApimServer(profile="traffic-manager", conf={
            "event_hub": {"url": self.nats.url}, "traffic_manager": {"port": port},
            "gateway": {"control_plane_url": self.cp.base_url, "credential": CRED}})
        tm.start(wait=False)
        self.addCleanup(tm.stop)
        c = apimtest.Client("http://127.0.0.1:%d" % port, timeout=2)

        def ready():
            try:
                return c.get("/health/ready").status == 200
            except OSError:
                return False
        self.assertTrue(gwtest.wait_for(ready, 15), tm.stderr_tail())
        self.assertTrue(apimtest.port_is_free(tm.port))  # not on 9443+offset


if __name__ == "__main__":
    unittest.main()
