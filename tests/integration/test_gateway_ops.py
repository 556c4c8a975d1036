"""Operating the gateway and the control plane's change log.

- apimd --profile gateway answers /_apim/health/live (nginx up) and
  /_apim/health/ready (503 until the worker holds a snapshot, 200 with the
  snapshot's change seq after), for load balancers.
- The control plane purges its change log (am_change_log) down to
  event_hub.change_log_keep_rows rows (older than change_log_keep_days):
  the table stays bounded, /internal/data/v1/changes answers "full" for a
  gateway behind the oldest row kept, and such a gateway (its worker
  paused while the changes were made and purged) resyncs in full and ends
  with the right APIs.

Needs nginx, the module next to apimd (or APIM_NGINX_MODULE) and
nats-server; skipped otherwise.
"""

import base64
import os
import shutil
import signal
import time
import unittest

import apimtest
import gwtest
import test_publisher as pt

CRED = "gw-ops-" + base64.b32encode(os.urandom(10)).decode().lower()
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]
HAVE_NATS = shutil.which("nats-server") is not None


def health(g, check):
    return gwtest.get(g.port, "/_apim/health/" + check)


def metrics(srv):
    r = srv.client(None).get("/metrics")
    assert r.status == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class GatewayHealthTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()

    def start_gateway(self, extra=None):
        g = gwtest.GatewayProc(extra)
        self.addCleanup(g.close)
        return g.start()

    def test_live_but_not_ready_without_control_plane_or_cache(self):
        g = self.start_gateway()
        status, js, body = health(g, "live")
        self.assertEqual((status, js), (200, {"status": "UP"}), body)
        status, js, body = health(g, "ready")
        self.assertEqual((status, js), (503, {"status": "DOWN"}), body)
        # still not ready a while later: nothing to load from
        time.sleep(1.5)
        self.assertEqual(health(g, "ready")[0], 503)
        conf = open(os.path.join(g.home, "gateway", "nginx.conf")).read()
        self.assertIn("location = /_apim/health/ready {\n            apim_health ready;", conf)
        # only the two checks: any other /_apim/ path is an API call like any
        status, js, body = gwtest.get(g.port, "/_apim/health/nope")
        self.assertEqual(js["code"], "900906", body)

    def test_ready_once_the_first_snapshot_arrived(self):
        cp = apimtest.ApimServer(profile="control-plane",
                                 conf={"gateway": {"credential": CRED}})
        cp.prepare()
        self.addCleanup(cp.stop)
        g = self.start_gateway({"gateway": {"control_plane_url": cp.base_url,
                                            "credential": CRED}})
        self.assertEqual(health(g, "ready")[0], 503)
        cp.start()
        self.assertTrue(gwtest.wait_for(lambda: health(g, "ready")[0] == 200, 20, 0.1),
                        health(g, "ready"))
        status, js, body = health(g, "ready")
        self.assertEqual(js["status"], "UP", body)
        seq = cp.client(None).get("/internal/data/v1/sequence",
                                  headers={"X-APIM-Gateway-Credential": CRED}).json["seq"]
        self.assertEqual(js["seq"], seq, body)
        # the control plane goes away: the gateway keeps its data, still ready
        cp.stop()
        time.sleep(2.5)
        self.assertEqual(health(g, "ready")[0], 200)


@unittest.skipUnless(HAVE_NATS, "nats-server not installed")
class ChangeLogPurgeTest(unittest.TestCase):
    KEEP = 3

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()
        cls.nats = gwtest.NatsServer().start()
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url, "change_log_keep_rows": cls.KEEP,
                          "change_log_keep_days": 0, "change_log_purge_seconds": 1},
            "gateway": {"credential": CRED}})
        cls.cp.start()
        cls.c = cls.cp.client()

    @classmethod
    def tearDownClass(cls):
        cls.cp.stop()
        cls.nats.stop()

    def seq(self):
        return self.changes_since(0)["seq"]

    def changes_since(self, since):
        r = self.cp.client(None).get("/internal/data/v1/changes",
                                     query={"since": since, "gatewayLabel": "Default"},
                                     headers={"X-APIM-Gateway-Credential": CRED})
        self.assertEqual(r.status, 200, r.text)
        return r.json

    def api(self, prefix):
        """A deployed API: (its id, its revision id, a path to call)."""
        name = pt.uniq(prefix)
        api = pt.create_api(self, self.c, name=name, policies=["Unlimited"], endpointConfig={
            "endpoint_type": "http",
            "production_endpoints": {"url": "http://127.0.0.1:9/be"}})
        r = self.c.post(pt.APIS + "/%s/revisions" % api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        rev = r.json["id"]
        r = self.c.post(pt.APIS + "/%s/deploy-revision" % api["id"],
                        query={"revisionId": rev}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)
        return api["id"], rev, "/%s/1.0.0/items" % name.lower()

    def change(self):
        """One more row in the change log: an application."""
        r = self.c.post("/api/am/devportal/v3/applications", json={
            "name": pt.uniq("PurgeApp"), "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)

    def test_behind_gateway_resyncs_in_full_and_the_log_stays_bounded(self):
        g = gwtest.GatewayProc({"gateway": {"control_plane_url": self.cp.base_url,
                                         "credential": CRED},
                             "event_hub": {"url": self.nats.url}})
        self.addCleanup(g.close)
        g.start()
        a_id, a_rev, a_path = self.api("PurgeA")
        # deployed: without a token the gateway asks for credentials
        self.assertTrue(gwtest.wait_for(lambda: gwtest.get(g.port, a_path)[0] == 401, 10, 0.05),
                        gwtest.get(g.port, a_path))
        self.assertEqual(gwtest.get(g.port, a_path)[1]["code"], "900902")
        behind = health(g, "ready")[1]["seq"]
        self.assertEqual(behind, self.seq())

        # the gateway's worker stops following (paused) while A is
        # undeployed, B deployed and the log purged past its seq
        master = g.nginx_pid()
        workers = g.worker_pids(master)
        self.assertTrue(workers)
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        try:
            r = self.c.post(pt.APIS + "/%s/undeploy-revision" % a_id,
                            query={"revisionId": a_rev}, json=DEFAULT_ENV)
            self.assertEqual(r.status, 201, r)
            b_id, b_rev, b_path = self.api("PurgeB")
            while self.seq() - behind <= self.KEEP + 1:
                self.change()
            now = self.seq()
            self.assertGreater(now - behind, self.KEEP + 1)
            self.assertTrue(gwtest.wait_for(
                lambda: metrics(self.cp)["apim_change_log_oldest_seq"] > behind + 1, 10, 0.2),
                metrics(self.cp))
            m = metrics(self.cp)
            self.assertLessEqual(m["apim_change_log_rows"], self.KEEP)
            self.assertGreater(m["apim_change_log_purged_total"], 0)
            # what the gateway will be told: no delta, a full snapshot
            d = self.changes_since(behind)
            self.assertTrue(d.get("full"), d)
            self.assertIn("purged", d["reason"])
            # a gateway within the rows kept still gets a delta
            d = self.changes_since(now - 1)
            self.assertNotIn("full", d)
            self.assertEqual(d["seq"], now)
        finally:
            for w in workers:
                os.kill(w, signal.SIGCONT)

        # back: a full resync, with A gone and B there
        self.assertTrue(gwtest.wait_for(lambda: gwtest.get(g.port, b_path)[0] == 401, 10, 0.05),
                        gwtest.get(g.port, b_path))
        self.assertEqual(gwtest.get(g.port, b_path)[1]["code"], "900902")
        status, js, body = gwtest.get(g.port, a_path)
        self.assertEqual((status, js["code"]), (403, "900906"), body)
        self.assertTrue(gwtest.wait_for(lambda: health(g, "ready")[1]["seq"] == now, 5, 0.05))
        log = open(os.path.join(g.home, "gateway", "error.log"), errors="replace").read()
        self.assertIn("no delta from seq %d" % behind, log)
        self.assertIn("the change log was purged past since", log)

        # more changes: the table stays at the rows kept
        while self.seq() - now < 2 * self.KEEP:
            self.change()
        last = self.seq()
        self.assertTrue(gwtest.wait_for(
            lambda: metrics(self.cp)["apim_change_log_oldest_seq"] == last - self.KEEP + 1,
            10, 0.2), metrics(self.cp))
        self.assertEqual(metrics(self.cp)["apim_change_log_rows"], self.KEEP)


class AllInOneMetricsTest(unittest.TestCase):
    """In all-in-one the control plane's /metrics carries the Traffic
    Manager's counters and the change log's gauges; /health/ready stays
    the databases' (a control plane serves without NATS)."""

    def test_metrics_of_the_traffic_manager_and_the_change_log(self):
        if shutil.which("nats-server") is None:
            self.skipTest("nats-server not installed")
        srv = apimtest.ApimServer()
        srv.prepare()
        srv._write_conf(gwtest.gateway_offset())  # 8280+offset free too
        srv.start()
        self.addCleanup(srv.stop)
        self.assertTrue(gwtest.wait_for(
            lambda: metrics(srv).get("apim_tm_event_hub_connected") == 1 and
            metrics(srv).get("apim_tm_policies", 0) >= 1, 15, 0.1), metrics(srv))
        self.assertTrue(gwtest.wait_for(
            lambda: metrics(srv)["apim_change_log_purge_runs_total"] >= 1, 10, 0.1))
        m = metrics(srv)
        self.assertEqual(m["apim_tm_is_leader"], 1)  # the only one
        self.assertEqual(m["apim_tm_peers"], 0)
        self.assertGreaterEqual(m["apim_change_log_rows"], 0)
        r = srv.client(None).get("/health/ready")
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(sorted(r.json["checks"]), ["apimgtdb", "shareddb"])


if __name__ == "__main__":
    unittest.main()
