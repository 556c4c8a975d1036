"""The Traffic Manager (apimd --profile traffic-manager) on a real NATS
server, fed with usage reports as gateway workers send them, with its
rate limits from a real control plane: allowances that never add up to
more than a key's limit, "throttled until" when the cluster used it up,
policies followed when the Admin API changes them, one leader among
several Traffic Managers and a take-over when it dies, and a restarted
Traffic Manager that neither forgets a window nor grants past the limit.

The parties here are test clients speaking the usage protocol of
docs/ARCHITECTURE.md ("Rate limiting") over a raw NATS socket.
"""

import base64
import os
import time
import unittest

import apimtest
from gwtest import HAVE_NATS, HOUR_MS, Nats, NatsServer, wait_for, window_start

CRED = "tm-cred-" + base64.b32encode(os.urandom(10)).decode().lower()
POLICIES = "/api/am/admin/v4/throttling/policies/subscription"


@unittest.skipUnless(HAVE_NATS, "nats-server not installed")
class TrafficManagerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # an hour-long window: no test straddles two windows
        if time.time() % 3600 > 3600 - 120:
            time.sleep(3600 - time.time() % 3600 + 1)
        cls.nats = NatsServer().start()
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        r = cls.cp.client().post(POLICIES, json={
            "policyName": "Tm100PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 100, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        cls.tms = []
        cls.bus = Nats(cls.nats.port)

    @classmethod
    def tearDownClass(cls):
        cls.bus.close()
        for tm in cls.tms:
            if tm.running():
                tm.stop()
        cls.cp.stop()
        cls.nats.stop()

    def start_tm(self, name):
        tm = apimtest.ApimServer(profile="traffic-manager", conf={
            "event_hub": {"url": self.nats.url},
            "gateway": {"control_plane_url": self.cp.base_url, "credential": CRED}})
        tm.start(wait=False)
        self.tms.append(tm)
        ok = wait_for(lambda: "rate-limit policies (" in tm.stderr_this_run() or
                           not tm.running(), 20)
        self.assertTrue(ok and tm.running(), tm.stderr_tail())
        return tm

    def heartbeat_of(self, tm, t0, timeout=5):
        pid = str(tm.proc.pid)
        return self.bus.wait_for(lambda s, b: s == "apim.throttle.tm" and
                                 b["tm"].endswith("/" + pid), timeout, t0)

    def report(self, party, key, count, allowance=0, policy="Tm100PerHour",
               level="subscription", ws=None):
        gw, pid = party.split("/")
        self.bus.publish("apim.throttle.usage", {
            "gatewayId": gw, "pid": int(pid), "entries": [], "quota": [{
                "key": key, "level": level, "policy": policy,
                "windowStart": window_start() if ws is None else ws,
                "count": count, "allowance": allowance}]})

    def grants(self, t0, key):
        """party -> the largest allowance granted for key since t0"""
        out = {}
        for d in self.bus.since(t0, "apim.throttle.decisions"):
            for g in d["grants"]:
                if g["key"] == key:
                    out[g["party"]] = max(out.get(g["party"], 0), g["allowance"])
        return out

    def implicit(self):
        """What a party may admit without a grant: limit / (2 N), N the live
        parties the Traffic Manager announced last (as a gateway does)."""
        beats = self.bus.since(0, "apim.throttle.tm")
        n = beats[-1]["parties"] if beats else 1
        return 100 // (2 * max(n, 1))

    def drive(self, key, parties, rates, seconds, counts=None, held=None):
        """Parties admit at rates (requests per 100 ms) within what they hold
        (their grant, else the implicit allowance), and report every 100 ms.
        Returns (counts, held)."""
        counts = counts or {p: 0 for p in parties}
        held = held or {p: 0 for p in parties}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            granted = self.grants(0, key)
            for p, rate in zip(parties, rates):
                held[p] = max(held[p], granted.get(p, 0))
                cap = held[p] if held[p] > 0 else self.implicit()
                counts[p] = min(cap, counts[p] + rate)
                self.report(p, key, counts[p], held[p])
            time.sleep(0.1)
        return counts, held

    def test_1_allowances_within_the_limit_then_throttled(self):
        tm = self.start_tm("a")
        t0 = time.monotonic()
        beat = self.heartbeat_of(tm, t0)
        self.assertTrue(beat["leader"])
        key = "sub:app-1:/pizza:1.0"
        parties = ["gwA/1", "gwB/2", "gwC/3"]
        counts, held = self.drive(key, parties, [3, 2, 1], 2.5)
        granted = self.grants(t0, key)
        self.assertTrue(granted, "no allowance granted")
        # the invariant: what the parties may admit never exceeds the limit
        total = sum(max(held[p], counts[p]) for p in parties)
        self.assertLessEqual(total, 100, (held, counts))
        # the busiest party holds the most
        self.assertGreaterEqual(held["gwA/1"], held["gwC/3"])
        # the cluster uses the quota up: throttled until the window's end
        last = 100 - counts["gwB/2"] - counts["gwC/3"]
        self.report("gwA/1", key, last, max(held["gwA/1"], last))
        d = self.bus.wait_for(lambda s, b: s == "apim.throttle.decisions" and
                              any(x["key"] == key for x in b["throttled"]), 3, t0)
        until = [x for x in d["throttled"] if x["key"] == key][0]["throttledUntil"]
        self.assertEqual(until, window_start() + HOUR_MS)
        # and no allowance grows any more
        t1 = time.monotonic()
        self.drive(key, parties, [3, 2, 1], 0.5, dict(counts, **{"gwA/1": last}), held)
        self.assertEqual(self.grants(t1, key), {})

    def test_2_unknown_policy_and_bad_window_are_ignored(self):
        t0 = time.monotonic()
        for _ in range(10):
            self.report("gwA/1", "sub:x:/y:1", 5, policy="NoSuchPolicy")
            self.report("gwA/1", "sub:z:/y:1", 5, ws=window_start() + 1234)
            time.sleep(0.1)
        self.assertEqual(self.grants(t0, "sub:x:/y:1"), {})
        self.assertEqual(self.grants(t0, "sub:z:/y:1"), {})

    def test_3_policy_created_later_is_followed(self):
        r = self.cp.client().post(POLICIES, json={
            "policyName": "Tm50PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 50, "timeUnit": "hour", "unitTime": 1}}})
        self.assertEqual(r.status, 201, r.text)
        key = "sub:app-3:/later:1.0"
        t0 = time.monotonic()
        deadline = time.monotonic() + 5
        n = 0
        while time.monotonic() < deadline and not self.grants(t0, key):
            n = min(n + 2, 8)
            self.report("gwA/1", key, n, policy="Tm50PerHour")
            time.sleep(0.1)
        g = self.grants(t0, key)
        self.assertIn("gwA/1", g)
        self.assertLessEqual(g["gwA/1"], 50)

    def test_4_second_tm_is_standby_and_takes_over(self):
        first = self.tms[0] if self.tms and self.tms[0].running() else self.start_tm("a")
        second = self.start_tm("b")
        t0 = time.monotonic()
        time.sleep(1.2)
        b1 = self.heartbeat_of(first, time.monotonic())
        b2 = self.heartbeat_of(second, time.monotonic())
        self.assertTrue(b1["leader"])
        self.assertFalse(b2["leader"])
        # only the leader publishes decisions
        key = "sub:app-4:/ha:1.0"
        self.drive(key, ["gwA/1"], [10], 1.0)
        deciders = {d["tm"] for d in self.bus.since(t0, "apim.throttle.decisions")}
        self.assertEqual(deciders, {b1["tm"]})
        # the leader dies: the standby leads within about a second
        first.proc.kill()
        first.proc.wait(5)
        first._forget()
        t1 = time.monotonic()
        beat = self.bus.wait_for(lambda s, b: s == "apim.throttle.tm" and
                                 b["tm"] == b2["tm"] and b["leader"], 3, t1)
        self.assertTrue(beat["leader"])
        self.assertLess(time.monotonic() - t1, 2.5)

    def test_5_restarted_tm_keeps_the_window(self):
        tm = [t for t in self.tms if t.running()]
        tm = tm[0] if tm else self.start_tm("c")
        key = "sub:app-5:/restart:1.0"
        parties = ["gwA/1", "gwB/2"]
        t0 = time.monotonic()
        counts, held = self.drive(key, parties, [2, 2], 1.8)
        self.assertTrue(self.grants(t0, key), (counts, held))
        tm.stop()
        tm.start(wait=False)
        self.assertTrue(wait_for(lambda: "rate-limit policies (" in tm.stderr_this_run(),
                                      20), tm.stderr_tail())
        t1 = time.monotonic()
        counts, held = self.drive(key, parties, [2, 2], 3.0, counts, held)
        # the new one grants, and never past the limit with what was held
        self.assertTrue(self.grants(t1, key), (counts, held, tm.stderr_tail(8),
                                               self.bus.since(t1, "apim.throttle.tm")[-2:]))
        total = sum(max(held[p], counts[p]) for p in parties)
        self.assertLessEqual(total, 100, (held, counts))

    def test_6_custom_and_bandwidth_policies(self):
        """A custom policy's limit comes from its Siddhi query (parsed by the
        control plane); a party stuck at its allowance that reports what it
        refused is granted more; bandwidth quotas are bytes, past 32 bits."""
        c = self.cp.client()
        r = c.post("/api/am/admin/v4/throttling/policies/custom", json={
            "policyName": "TmCustom", "keyTemplate": "$userId",
            "siddhiQuery": "FROM RequestStream SELECT userId, (userId == 'alice') AS "
                           "isEligible INSERT INTO E; FROM E[isEligible==true]"
                           "#throttler:timeBatch(1 hour) SELECT throttleKey, "
                           "(count(userId) >= 3) AS isThrottled GROUP BY throttleKey "
                           "INSERT ALL EVENTS INTO ResultStream;"})
        self.assertEqual(r.status, 201, r.text)
        r = c.post(POLICIES, json={
            "policyName": "Tm8GBPerHour", "defaultLimit": {
                "type": "BANDWIDTHLIMIT", "bandwidth": {
                    "dataAmount": 8, "dataUnit": "GB", "timeUnit": "hour", "unitTime": 1}}})
        self.assertEqual(r.status, 201, r.text)
        tm = [t for t in self.tms if t.running()]
        tm = tm[0] if tm else self.start_tm("d")
        ckey, bkey = "custom:TmCustom:alice@carbon.super", "sub:app-6:/bytes:1.0"
        t0 = time.monotonic()
        deadline = time.monotonic() + 8
        denied, size = 0, 0
        while time.monotonic() < deadline and not (self.grants(t0, ckey) and
                                                   self.grants(t0, bkey)):
            # (the policies may reach the Traffic Manager after a refetch)
            denied += 1
            size = min(size + 1024 ** 3, 4 * 1024 ** 3)
            gw, pid = "gwA", 1
            self.bus.publish("apim.throttle.usage", {
                "gatewayId": gw, "pid": pid, "entries": [], "quota": [
                    {"key": ckey, "level": "custom", "policy": "TmCustom",
                     "windowStart": window_start(), "count": 1, "allowance": 0,
                     "denied": denied},
                    {"key": bkey, "level": "subscription", "policy": "Tm8GBPerHour",
                     "windowStart": window_start(), "count": size, "allowance": 0}]})
            time.sleep(0.1)
        g = self.grants(t0, ckey)
        self.assertIn("gwA/1", g, tm.stderr_tail())
        self.assertGreater(g["gwA/1"], 1)
        self.assertLessEqual(g["gwA/1"], 3)
        g = self.grants(t0, bkey)
        self.assertIn("gwA/1", g, tm.stderr_tail())
        self.assertGreater(g["gwA/1"], 2 ** 31)
        self.assertLessEqual(g["gwA/1"], 8 * 1024 ** 3)


if __name__ == "__main__":
    unittest.main()
