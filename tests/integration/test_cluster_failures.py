"""Failures of the distributed deployment (scripts/apimcluster.py): one
node at a time crashes or goes away while clients use the cluster through
the load balancer. Each test asserts what a client sees and that nothing
written is lost, then brings the node back:

- a gateway killed under load: every GET succeeds (the load balancer
  retries an idempotent request on the other gateway);
- a control-plane node killed: the other keeps serving reads and writes,
  and its changes reach the gateways;
- PostgreSQL restarted: writes during the outage answer 503 with the
  reference error body and leave nothing behind; service resumes by
  itself, change events continue;
- a NATS server killed: changes still reach every gateway through the
  other server (every node is given both URLs);
- a Traffic Manager killed: a subscription's limit still holds across
  both gateways;
- a gateway started while every control-plane node is down: it serves
  from its cache.

The cluster runs its own PostgreSQL, so this runs in the PostgreSQL pass
only (as test_cluster.py).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import apimtest
import gwtest
import test_cluster as tc
import test_publisher as pt

apimcluster = tc.apimcluster
DP = tc.DP
FORM = tc.FORM
LIMIT = 20
call = tc.call


def assert_unavailable(t, r, what):
    """r is a 503 with the reference error body."""
    t.assertEqual(r.status, 503, "%s: %r" % (what, r))
    body = r.json
    t.assertIsInstance(body, dict, r)
    t.assertEqual((body.get("code"), body.get("message")), (503, "Service Unavailable"), r)
    t.assertIn("unavailable", body.get("description", ""), r)


def nginx_pids(node):
    """The gateway node's nginx master and its workers."""
    master = node.nginx_pid()
    if master is None:
        return []
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [master] + [int(p) for p in out.split()]


@unittest.skipIf(tc.skip_reason(), tc.skip_reason())
class ClusterFailuresTest(unittest.TestCase):
    """Tests run in order on one cluster; each leaves every node running."""

    @classmethod
    def setUpClass(cls):
        # hour-long rate-limit windows: no test straddles two
        if time.time() % 3600 > 3600 - 150:
            time.sleep(3600 - time.time() % 3600 + 1)
        cls.root = tempfile.mkdtemp(prefix="apimcluster-fail-")
        cls.failed = False
        cls.cluster = apimcluster.Cluster(
            cls.root, apimd=apimtest.apimd_path(), module=gwtest.module_path(), gateway_hub="all",
            extra_conf={"control-plane": {"security": {"argon2_memlimit_kb": 8192,
                                                       "argon2_opslimit": 1}}})
        cls.backend = None
        try:
            cls.cluster.start()
            cls.backend = gwtest.start_backend("cluster")
            cls.setup_api()
        except Exception:
            cls.failed = True
            cls._stop()
            raise
        sys.stderr.write("\n[cluster failures] %d nodes ready in %.1f s\n" % (
            len(cls.cluster.nodes), cls.cluster.started_in))

    @classmethod
    def _stop(cls):
        if cls.backend is not None:
            cls.backend.shutdown()
            cls.backend.server_close()
        rcs = cls.cluster.stop()
        problems = ["%s exited with %d" % (n, rc) for n, rc in rcs.items()
                    if rc not in (0, None)]
        reports = cls.cluster.sanitizer_reports()
        problems += ["sanitizer report from %s:\n%s" % kv for kv in reports.items()]
        if problems or cls.failed:
            sys.stderr.write("\n[cluster failures] kept %s\n" % cls.root)
        else:
            shutil.rmtree(cls.root, ignore_errors=True)
        return problems

    @classmethod
    def tearDownClass(cls):
        problems = cls._stop()
        if problems:
            raise AssertionError("; ".join(problems))

    def run(self, result=None):
        res = super().run(result)
        if result is not None and (result.failures or result.errors):
            type(self).failed = True
        return res

    # -- set-up and helpers ---------------------------------------------------

    @classmethod
    def admin(cls, url=None):
        return apimtest.Client(url or cls.cluster.control_plane_url, "admin",
                               cls.cluster.admin_password, timeout=30)

    @classmethod
    def setup_api(cls):
        """A subscription tier of LIMIT per hour, an API deployed and
        published (through the load balancer), an application subscribed
        Unlimited with a token."""
        c = cls.admin()
        r = c.post(tc.SUB_POLICIES, json={
            "policyName": "Fail20PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": LIMIT, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r
        cls.api, cls.path = cls.deployed_api(c)
        cls.token = cls.subscribed_token(c, cls.api["id"], "Unlimited")

    @classmethod
    def deployed_api(cls, c):
        name = pt.uniq("FailApi")
        r = c.post(pt.APIS, json=pt.api_body(
            name=name, policies=["Fail20PerHour", "Unlimited"],
            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}}))
        assert r.status == 201, r
        api = r.json
        gwtest.deploy_publish(c, api["id"])
        return api, "/%s/1.0.0/items" % name.lower()

    @classmethod
    def subscribed_token(cls, c, api_id, tier):
        r = c.post(DP + "/applications", json={"name": pt.uniq("FailApp"),
                                               "throttlingPolicy": "Unlimited"})
        assert r.status == 201, r
        app = r.json
        r = c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                "apiId": api_id, "throttlingPolicy": tier})
        assert r.status == 201, r
        r = c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        assert r.status == 200, r
        keys = r.json
        r = apimtest.Client(cls.cluster.control_plane_url).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": gwtest.basic(keys["consumerKey"], keys["consumerSecret"])})
        assert r.status == 200, r
        return r.json["access_token"]

    def setUp(self):
        # whatever an earlier test left behind: every node runs
        for name in self.cluster.names():
            if not self.cluster.node(name).running():
                self.cluster.start_node(name)

    def gateways(self):
        return self.cluster.by_kind("gateway")

    def wait_served(self, path, token, status=200, within=20):
        """Until every gateway (called directly) answers status for path."""
        for g in self.gateways():
            ok = tc.wait_for(lambda: call(g.url, path, token)[0] == status, within)
            self.assertTrue(ok, (g.name, call(g.url, path, token)))

    def sequence(self, node):
        r = apimtest.Client(node.url).get("/internal/data/v1/sequence", headers={
            "X-APIM-Gateway-Credential": self.cluster.gateway_credential})
        self.assertEqual(r.status, 200, r)
        return r.json["seq"]

    # -- 1: a gateway killed under load -----------------------------------------

    def test_1_gateway_killed_under_load(self):
        """A client loop of GETs through the load balancer while gw1
        crashes (apimd and its nginx killed): every request succeeds."""
        c = self.cluster
        self.wait_served(self.path, self.token)
        results, stop = [], threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    results.append(call(c.gateway_url, self.path, self.token)[:2])
                except Exception as e:  # noqa: BLE001 - reported below
                    results.append((None, repr(e)))

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            tc.wait_for(lambda: len(results) >= 30, 20, 0.01)
            victim = c.node("gw1")
            # a crash of the whole node: apimd frozen first (it would
            # restart its nginx), nginx's master and workers killed, then
            # apimd
            os.kill(victim.pid, signal.SIGSTOP)
            pids = nginx_pids(victim)
            self.assertTrue(pids, "gw1 runs no nginx")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            c.kill("gw1")
            self.assertTrue(tc.wait_for(lambda: not apimcluster.port_open(victim.port), 10),
                            "gw1 still listens")
            n = len(results)
            tc.wait_for(lambda: len(results) >= n + 60, 30, 0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        bad = [r for r in results if r[0] != 200]
        self.assertEqual(bad, [], "%d of %d requests failed" % (len(bad), len(results)))
        self.assertGreaterEqual(len(results), 90)
        # and gw1 comes back and serves again
        c.start_node("gw1")
        self.wait_served(self.path, self.token)

    # -- 2: a control-plane node killed ------------------------------------------

    def test_2_control_plane_node_killed(self):
        """cp1 crashes: writes through the load balancer keep succeeding
        (cp2 serves them), every one is stored, and a change made then
        reaches both gateways."""
        c = self.cluster
        cp1, cp2 = c.node("cp1"), c.node("cp2")
        before = self.admin().post(pt.APIS, json=pt.api_body(pt.uniq("BeforeKill")))
        self.assertEqual(before.status, 201, before)
        c.kill("cp1")
        try:
            self.assertFalse(apimcluster.port_open(cp1.port))
            lb = self.admin()
            ids = []
            for i in range(6):
                r = lb.post(pt.APIS, json=pt.api_body(pt.uniq("WhileCp1Down")))
                self.assertEqual(r.status, 201, r)
                ids.append(r.json["id"])
                r = lb.get(pt.APIS + "/" + before.json["id"])
                self.assertEqual(r.status, 200, r)
            direct = self.admin(cp2.url)
            for api_id in ids + [before.json["id"]]:
                self.assertEqual(direct.get(pt.APIS + "/" + api_id).status, 200, api_id)
            # a change made while cp1 is down reaches both gateways
            api, path = self.deployed_api(lb)
            token = self.subscribed_token(lb, api["id"], "Unlimited")
            self.wait_served(path, token)
        finally:
            c.start_node("cp1")
        # cp1 is back and sees what cp2 wrote
        for api_id in ids:
            self.assertEqual(self.admin(cp1.url).get(pt.APIS + "/" + api_id).status, 200)

    # -- 3: PostgreSQL restarted -------------------------------------------------

    def test_3_postgresql_restarted(self):
        """PostgreSQL stops: writes answer 503 and leave nothing; the
        gateways keep serving; once it is back (no control-plane restart)
        reads and writes work and change events continue to the gateways."""
        c = self.cluster
        lb = self.admin()
        name = pt.uniq("DuringOutage")
        seq0 = self.sequence(c.node("cp1"))
        c.stop_node("postgres")
        try:
            for _ in range(2):
                assert_unavailable(self, lb.post(pt.APIS, json=pt.api_body(name)),
                                   "create during the outage")
            # the data plane does not need the database
            status, js, _ = call(c.gateway_url, self.path, self.token)
            self.assertEqual(status, 200, js)
        finally:
            c.start_node("postgres")
        for cp in c.by_kind("control-plane"):
            self.assertTrue(tc.wait_for(lambda: apimtest.Client(cp.url).get(
                "/health/ready").status == 200, 20), cp.name)
        r = lb.get(pt.APIS, query={"query": 'name:"%s"' % name})
        self.assertEqual((r.status, r.json["count"]), (200, 0), r)
        self.assertEqual(self.sequence(c.node("cp2")), seq0)  # nothing half-done recorded
        api, path = self.deployed_api(lb)
        token = self.subscribed_token(lb, api["id"], "Unlimited")
        self.wait_served(path, token)
        self.assertGreater(self.sequence(c.node("cp1")), seq0)
        r = lb.post(pt.APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)

    # -- 4: a NATS server killed -------------------------------------------------

    def test_4_nats_server_killed(self):
        """Each NATS server in turn is killed: a change (undeploy, deploy)
        still reaches both gateways."""
        c = self.cluster
        lb = self.admin()
        api, path = self.deployed_api(lb)
        token = self.subscribed_token(lb, api["id"], "Unlimited")
        self.wait_served(path, token)
        revs = lb.get(pt.APIS + "/%s/revisions" % api["id"]).json["list"]
        rev = revs[0]["id"]
        for victim in c.names("nats"):
            c.kill(victim)
            try:
                r = lb.post(pt.APIS + "/%s/undeploy-revision" % api["id"],
                            query={"revisionId": rev}, json=gwtest.DEFAULT_ENV)
                self.assertEqual(r.status, 201, r)
                self.wait_served(path, token, status=403)
                r = lb.post(pt.APIS + "/%s/deploy-revision" % api["id"],
                            query={"revisionId": rev}, json=gwtest.DEFAULT_ENV)
                self.assertEqual(r.status, 201, r)
                self.wait_served(path, token)
            finally:
                c.start_node(victim)
        for g in self.gateways():
            self.assertTrue(g.running(), g.name)

    # -- 5: a Traffic Manager killed ---------------------------------------------

    def test_5_traffic_manager_killed(self):
        """The leading Traffic Manager crashes: a subscription limited to
        LIMIT per hour still admits at most LIMIT across both gateways
        (each alone would admit LIMIT)."""
        c = self.cluster
        bus = gwtest.Nats(c.node("nats1").port, subjects=("apim.throttle.tm",))
        try:
            beat = bus.wait_for(lambda s, b: b.get("leader"), timeout=10)
        finally:
            bus.close()
        pid = int(beat["tm"].rsplit("/", 1)[1])
        leader = [n for n in c.names("traffic-manager") if c.node(n).pid == pid]
        self.assertEqual(len(leader), 1, (beat, {n: c.node(n).pid
                                                 for n in c.names("traffic-manager")}))
        token = self.subscribed_token(self.admin(), self.api["id"], "Fail20PerHour")
        self.wait_served(self.path, token)
        c.kill(leader[0])
        try:
            admitted, refused = len(self.gateways()), []
            for i in range(2 * LIMIT):
                status, js, headers = call(c.gateway_url, self.path, token)
                if status == 200:
                    admitted += 1
                else:
                    refused.append((status, js, headers.get("retry-after")))
                time.sleep(0.02)
            self.assertLessEqual(admitted, LIMIT, refused)
            self.assertTrue(refused)
            for status, js, retry in refused:
                self.assertEqual((status, js["code"]), (429, "900804"), js)
        finally:
            c.start_node(leader[0])

    # -- 6: a gateway started with the control plane down --------------------------

    def test_6_gateway_starts_with_control_plane_down(self):
        """Both control-plane nodes are down; gw2 restarts and serves the
        APIs from its cache, directly and through the load balancer."""
        c = self.cluster
        gw2 = c.node("gw2")
        self.wait_served(self.path, self.token)
        for cp in c.names("control-plane"):
            c.stop_node(cp)
        try:
            c.stop_node("gw2")
            self.assertFalse(apimcluster.port_open(gw2.port))
            c.start_node("gw2")
            status, js, _ = call(gw2.url, self.path, self.token)
            self.assertEqual(status, 200, js)
            self.assertEqual(js["backend"], "cluster")
            for _ in range(4):
                self.assertEqual(call(c.gateway_url, self.path, self.token)[0], 200)
            self.assertIn("serving cached snapshot", open(gw2.error_log,
                                                          errors="replace").read())
        finally:
            for cp in c.names("control-plane"):
                c.start_node(cp)


if __name__ == "__main__":
    unittest.main()
