"""Burst control (spike arrest) of subscription tiers and backend maxTps at
the gateway, counted in the shared memory zone of apim_shared_zone by every
worker.

GatewayBurstModuleTest: nginx with 2 workers (each with its own listening
socket, reuseport) and a snapshot file: a subscription's rateLimitCount
per minute holds across both workers (429, 900807, Retry-After); another
subscription is counted apart; maxTps answers 503 900801 per key type.

AllInOneBurstTest: apimd --profile all-in-one renders apim_shared_zone; a
subscription policy made through the Admin API with a burst limit is
enforced on the API subscribed with it, and an API's maxTps set through
the Publisher on its backend.
"""

import concurrent.futures
import os
import time
import unittest

import gwtest
import test_publisher as pt

ADMIN = "/api/am/admin/v4"
API3_ID = "11111111-aaaa-4aaa-8aaa-0000000000f3"


def wait_minute_start(margin=20):
    """Waits until the current minute has at least margin seconds left, so
    that a per-minute window does not end in the middle of a test: True
    when it waited into a new minute (a new window)."""
    start = int(time.time() // 60)
    while time.time() % 60 > 60 - margin:
        time.sleep(0.2)
    return int(time.time() // 60) != start


class GatewayBurstModuleTest(gwtest.PizzaGateway, unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.setup_pizza("apim-gw-burst-")
        snap = cls.base_snapshot()
        # App1 -> PizzaShack 1.0.0 on Burst5 (5 per minute); App2 -> the
        # same API on Gold (no burst limit)
        snap["subscriptions"][0]["tier"] = "Burst5"
        snap["subscriptions"].append(
            {"id": "s2", "apiId": gwtest.API_ID, "applicationId": gwtest.APP2_ID,
             "tier": "Gold", "status": "UNBLOCKED"})
        # an API with maxTps: 4 per minute in production, 2 per second in
        # sandbox
        ec = snap["apis"][0]["endpointConfig"]
        snap["apis"].append({
            "id": API3_ID, "name": "Slow", "context": "/slow", "version": "v1",
            "isDefaultVersion": False, "lifeCycleStatus": "PUBLISHED",
            "endpointConfig": ec,
            "maxTps": {"production": 4, "productionTimeUnit": "MINUTE",
                       "sandbox": 2},
            "operations": [{"target": "/*", "verb": "GET",
                            "authType": "Application & Application User",
                            "scopes": []}]})
        snap["subscriptions"].append(
            {"id": "s4", "apiId": API3_ID, "applicationId": gwtest.APP_ID,
             "tier": "Gold", "status": "UNBLOCKED"})
        snap["policies"] = [
            {"id": "p1", "level": "subscription", "name": "Burst5",
             "doc": {"defaultLimit": {"type": "REQUESTCOUNTLIMIT"},
                     "rateLimitCount": 5, "rateLimitTimeUnit": "min"}},
            {"id": "p2", "level": "subscription", "name": "Gold",
             "doc": {"rateLimitCount": 0, "rateLimitTimeUnit": None}},
            # an application policy's burst is not a subscription's
            {"id": "p3", "level": "application", "name": "Gold",
             "doc": {"burstLimit": {"rateLimitCount": 1,
                                    "rateLimitTimeUnit": "min"}}}]
        cls.write_snapshot(snap)
        cls.port = gwtest.free_port()
        cls.start_nginx()

    @classmethod
    def start_nginx(cls):
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(
            cls.tmp, gwtest.snapshot_http(cls.tmp, cls.port, "\n    apim_shared_zone 1m;",
                                          listen_opts=" reuseport"), workers=2,
            log_format="$pid $status $apim_fault_code $apim_app_id $apim_api_id"))

    def many(self, path, tok, n, parallel=8):
        """n calls on new connections, parallel at a time: the answers."""
        with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
            return list(ex.map(lambda _: self.call("GET", path, tok), range(n)))

    def pids_of(self, app_id, api_id):
        """The workers that answered app_id's calls to api_id (refused or
        not)."""
        pids = set()
        for line in self.read_log("access.log").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[3] == app_id and parts[4] == api_id:
                pids.add(parts[0])
        return pids

    def test_burst_limit_holds_across_workers(self):
        tok = self.token()
        wait_minute_start()
        before = len(gwtest.Backend.seen)
        res = self.many("/pizzashack/1.0.0/menu", tok, 40)
        ok = [r for r in res if r[0] == 200]
        refused = [r for r in res if r[0] != 200]
        self.assertEqual(len(ok), 5, [r[0] for r in res])
        self.assertEqual(len(gwtest.Backend.seen) - before, 5)
        for r in refused:
            doc = self.assert_fault(r, 429, "900807")
            self.assertEqual(doc["message"], "Message throttled out")
            retry = int(r[1]["retry-after"])
            self.assertTrue(1 <= retry <= 60, retry)
        # both workers answered this subscription's calls
        self.assertEqual(len(self.pids_of(gwtest.APP_ID, gwtest.API_ID)), 2,
                         self.read_log("access.log"))
        # the same subscription through the sandbox key: the same count
        self.assert_fault(self.call("GET", "/pizzashack/1.0.0/menu",
                                    self.token(client=gwtest.SAND_KEY)), 429, "900807")
        # another subscription on a tier without a burst limit
        res = self.many("/pizzashack/1.0.0/menu", self.token(client=gwtest.OTHER_KEY), 12)
        self.assertEqual([r[0] for r in res], [200] * 12)

    def test_max_tps_per_key_type(self):
        tok = self.token()
        wait_minute_start()
        res = self.many("/slow/v1/x", tok, 16)
        ok = [r for r in res if r[0] == 200]
        self.assertEqual(len(ok), 4, [r[0] for r in res])
        for r in res:
            if r[0] != 200:
                self.assert_fault(r, 503, "900801")
        self.assertEqual(len(self.pids_of(gwtest.APP_ID, API3_ID)), 2)
        # the sandbox has its own limit: 2 per second
        sand = self.token(client=gwtest.SAND_KEY)
        res = self.many("/slow/v1/x", sand, 12, parallel=12)
        codes = [r[0] for r in res]
        self.assertIn(200, codes)
        self.assertIn(503, codes)
        self.assert_backend(res[codes.index(200)], "sandbox")
        # a new second lets it through again (generous wait)
        deadline = time.time() + 10
        while time.time() < deadline:
            time.sleep(1.1)
            if self.call("GET", "/slow/v1/x", sand)[0] == 200:
                break
        else:
            self.fail("the sandbox maxTps window did not reset")


class AllInOneBurstTest(gwtest.AllInOne, unittest.TestCase):

    def deploy(self, tier, **api_fields):
        """An API deployed, published and subscribed on tier: (its name,
        the Authorization header of a production token)."""
        c = self.srv.client()
        backend = self.start_backend()
        cfg = {"endpoint_type": "http",
               "production_endpoints": {"url": "http://127.0.0.1:%d/be"
                                               % backend.server_port}}
        name = pt.uniq("GwBurst")
        api = pt.create_api(self, c, name=name, policies=sorted({"Unlimited", tier}),
                            endpointConfig=cfg, **api_fields)
        gwtest.deploy_publish(c, api["id"])
        _, token = gwtest.subscribed_app(self.srv, c, api["id"], tier, "BurstApp")
        return name, {"Authorization": "Bearer " + token}

    def test_max_tps_from_the_publisher(self):
        name, auth = self.deploy("Unlimited", maxTps={"production": 2,
                                                      "productionTimeUnit": "MINUTE"})
        path = "/%s/1.0.0/items" % name.lower()
        self.assertTrue(gwtest.wait_for(lambda: gwtest.get(self.gw_port, path, auth)[0] == 200,
                                    15, 0.1))
        left = 2 if wait_minute_start() else 1
        codes = [gwtest.get(self.gw_port, path, auth)[0] for _ in range(4)]
        self.assertEqual(codes, [200] * left + [503] * (4 - left))
        status, js, body = gwtest.get(self.gw_port, path, auth)
        self.assertEqual(js["code"], "900801", body)

    def test_subscription_burst_limit_from_the_admin_api(self):
        with open(os.path.join(self.srv.home, "gateway", "nginx.conf")) as f:
            self.assertIn("apim_shared_zone", f.read())
        c = self.srv.client()
        tier = pt.uniq("Spike")
        r = c.post(ADMIN + "/throttling/policies/subscription", json={
            "policyName": tier, "displayName": tier,
            "defaultLimit": {"type": "REQUESTCOUNTLIMIT",
                             "requestCount": {"timeUnit": "min", "unitTime": 1,
                                              "requestCount": 1000}},
            "rateLimitCount": 3, "rateLimitTimeUnit": "min"})
        self.assertEqual(r.status, 201, r.text)
        name, auth = self.deploy(tier)
        path = "/%s/1.0.0/items" % name.lower()

        # the first call that passes is counted, unless a new minute began
        self.assertTrue(gwtest.wait_for(lambda: gwtest.get(self.gw_port, path, auth)[0] == 200,
                                    15, 0.1))
        left = 3 if wait_minute_start() else 2
        codes = [gwtest.get(self.gw_port, path, auth)[0] for _ in range(6)]
        self.assertEqual(codes, [200] * left + [429] * (6 - left))
        status, js, body = gwtest.get(self.gw_port, path, auth)
        self.assertEqual(js["code"], "900807", body)


if __name__ == "__main__":
    unittest.main()
