"""The gateway's Prometheus metrics (apim_metrics, ngx_http_apim_metrics.c).

ModuleMetricsTest: nginx with the module (two workers, a snapshot file,
the balancer): the counters a user reads at the metrics location move with
what the gateway did (a proxied call, a failover, an unreachable backend,
each fault code), summed over both workers; allow/deny protect the page.

ClusterMetricsTest: the real pieces: NATS, a control plane with an API
deployed and subscribed, a Traffic Manager and apimd --profile gateway,
which renders /_apim/metrics on the gateway's listener for 127.0.0.1 only
(gateway.metrics_allow): the data feed's numbers, usage events, and the
Traffic Manager fallback gauge that goes to 1 when the Traffic Manager is
killed and back to 0 when one runs again. A gateway whose
gateway.metrics_allow leaves 127.0.0.1 out answers it 403, and a value that
is not addresses or CIDR ranges stops apimd at start.

Needs APIM_NGINX_MODULE (or the module next to apimd), nginx and, for the
cluster, nats-server.
"""

import base64
import http.client
import json
import os
import re
import shutil
import tempfile
import unittest

import apimtest
import gwtest
import test_publisher as pt

CRED = "gw-metrics-" + base64.b32encode(os.urandom(10)).decode().lower()
SUB_POLICIES = "/api/am/admin/v4/throttling/policies/subscription"


def scrape(port, path="/_apim/metrics"):
    """(status, {series: value}, body) of a metrics page."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        ctype = r.getheader("Content-Type", "")
    finally:
        c.close()
    series = {}
    if r.status == 200:
        assert ctype.startswith("text/plain"), ctype
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    return r.status, series, body


def fault(code):
    return 'apim_gateway_requests_total{outcome="fault",code="%s"}' % code


PROXIED = 'apim_gateway_requests_total{outcome="proxied"}'
UPSTREAM_FAILED = 'apim_gateway_requests_total{outcome="upstream_failed"}'


def api(n, context, ec, auth="None"):
    return gwtest.simple_api(n, context, ec, auth, prefix="44444444", name="MApi")


class ModuleMetricsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_module()
        cls.tmp = tempfile.mkdtemp(prefix="apim-gw-metrics-")
        os.chmod(cls.tmp, 0o755)
        cls.backend = gwtest.start_backend("live")
        closed = gwtest.free_port()     # nothing listens there
        live = "http://127.0.0.1:%d/svc" % cls.backend.server_port
        dead = "http://127.0.0.1:%d/svc" % closed
        apis = [
            api(1, "/open", {"endpoint_type": "http",
                             "production_endpoints": {"url": live}}),
            api(2, "/fo", {"endpoint_type": "failover",
                           "production_endpoints": {"url": dead},
                           "production_failovers": [{"url": live}]}),
            api(3, "/down", {"endpoint_type": "http",
                             "production_endpoints": {"url": dead}}),
            api(4, "/secured", {"endpoint_type": "http",
                                "production_endpoints": {"url": live}},
                auth="Application & Application User"),
        ]
        with open(os.path.join(cls.tmp, "snapshot.json"), "w") as f:
            json.dump({"seq": 7, "apis": apis, "applications": [], "keyMappings": [],
                       "subscriptions": [], "revokedJwts": [], "keyManagers": []}, f)
        cls.port = gwtest.free_port()
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(cls.tmp, """
    apim_snapshot_file %(dir)s/snapshot.json;
    upstream apim_backend {
        apim_balancer;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location = /_apim/metrics {
            apim_metrics;
            allow 127.0.0.1;
            deny all;
        }
        location = /_apim/denied {
            apim_metrics;
            allow 10.9.8.0/24;
            deny all;
        }
        location / {
            apim_gateway on;
            proxy_pass $apim_upstream_scheme://apim_backend$apim_upstream_uri$is_args$args;
            proxy_set_header Host $apim_upstream_host;
            proxy_next_upstream error timeout;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }""" % {"dir": cls.tmp, "port": cls.port}, workers=2))
        # both workers reported (their slots are claimed at start)
        ok = gwtest.wait_for(lambda: scrape(cls.port)[1].get("apim_gateway_workers") == 2, 10)
        assert ok, scrape(cls.port)[2]

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) is not None and cls.nginx.poll() is None:
            gwtest.stop_nginx(cls.nginx)
        gwtest.stop_backend(getattr(cls, "backend", None))
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def call(self, path, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def moved(self, before, name):
        after = scrape(self.port)[1]
        return after[name] - before[name]

    def test_proxied_calls_are_counted_over_both_workers(self):
        before = scrape(self.port)[1]
        for _ in range(6):
            self.assertEqual(self.call("/open/v1/menu"), 200)
        self.assertEqual(self.moved(before, PROXIED), 6)
        self.assertEqual(self.moved(before, fault("900901")), 0)

    def test_fault_codes(self):
        before = scrape(self.port)[1]
        self.assertEqual(self.call("/secured/v1/x", {"Authorization": "Bearer not-a-jwt"}), 401)
        self.assertEqual(self.call("/secured/v1/x", {"Authorization": "Bearer not-a-jwt"}), 401)
        self.assertEqual(self.call("/secured/v1/x"), 401)
        self.assertEqual(self.call("/nowhere/v1/x"), 403)
        after = scrape(self.port)[1]
        self.assertEqual(after[fault("900901")] - before[fault("900901")], 2)
        self.assertEqual(after[fault("900902")] - before[fault("900902")], 1)
        self.assertEqual(after[fault("900906")] - before[fault("900906")], 1)
        self.assertEqual(after[PROXIED] - before[PROXIED], 0)

    def test_failover_and_unreachable_backend(self):
        before = scrape(self.port)[1]
        self.assertEqual(self.call("/fo/v1/a"), 200)
        self.assertEqual(self.call("/down/v1/a"), 502)
        after = scrape(self.port)[1]
        self.assertEqual(after["apim_gateway_upstream_failovers_total"] -
                         before["apim_gateway_upstream_failovers_total"], 1)
        self.assertEqual(after[PROXIED] - before[PROXIED], 1)
        self.assertEqual(after[UPSTREAM_FAILED] - before[UPSTREAM_FAILED], 1)

    def test_data_and_fallback_gauges(self):
        s = scrape(self.port)[1]
        # the snapshot file's seq, in both workers
        self.assertEqual(s["apim_gateway_snapshot_seq_min"], 7)
        self.assertEqual(s["apim_gateway_snapshot_seq_max"], 7)
        # no event hub: no Traffic Manager, local limits in both workers
        self.assertEqual(s["apim_gateway_throttle_fallback"], 1)
        self.assertEqual(s["apim_gateway_throttle_fallback_workers"], 2)
        self.assertNotIn("apim_gateway_event_hub_connected", s)

    def test_page_is_protected_and_read_only(self):
        status, _, body = scrape(self.port, "/_apim/denied")
        self.assertEqual(status, 403)
        self.assertNotIn("apim_gateway", body)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("POST", "/_apim/metrics", body=b"x")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 405)
        finally:
            c.close()
        # metrics requests are not API requests
        before = scrape(self.port)[1]
        scrape(self.port)
        after = scrape(self.port)[1]
        self.assertEqual(after[fault("900906")], before[fault("900906")])
        self.assertEqual(after['apim_gateway_requests_total{outcome="other"}'],
                         before['apim_gateway_requests_total{outcome="other"}'])


class ClusterMetricsTest(unittest.TestCase):
    """In order: test_2 kills the Traffic Manager."""

    @classmethod
    def setUpClass(cls):
        gwtest.skip_without_gateway()
        if not gwtest.HAVE_NATS:
            raise unittest.SkipTest("nats-server not installed")
        gwtest.avoid_window_end()
        cls.gws = []
        cls.nats = gwtest.NatsServer().start()
        cls.cp = apimtest.ApimServer(profile="control-plane", conf={
            "event_hub": {"url": cls.nats.url}, "gateway": {"credential": CRED}})
        cls.cp.start()
        c = cls.cp.client()
        r = c.post(SUB_POLICIES, json={
            "policyName": "Met1000PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 1000, "timeUnit": "hour", "unitTime": 1}}})
        assert r.status == 201, r.text
        cls.backend = gwtest.start_backend("production")
        cls.name = pt.uniq("MetApi")
        a = pt.create_api(unittest.TestCase(), c, name=cls.name,
                          policies=["Met1000PerHour"],
                          endpointConfig={"endpoint_type": "http", "production_endpoints": {
                              "url": "http://127.0.0.1:%d/be" % cls.backend.server_port}})
        cls.api_id = a["id"]
        gwtest.deploy_publish(c, a["id"])
        cls.api_id = a["id"]
        _, cls.token = gwtest.subscribed_app(cls.cp, c, cls.api_id, "Met1000PerHour")
        cls.tm = gwtest.start_tm(cls.nats.url, cls.cp.base_url, CRED)
        extra = {"event_hub": {"url": cls.nats.url},
                 "gateway": {"control_plane_url": cls.cp.base_url, "credential": CRED}}
        cls.gw = gwtest.GatewayProc(extra).start()
        cls.gws.append(cls.gw)
        cls.path = "/%s/1.0.0/items" % cls.name.lower()
        ok = gwtest.wait_for(lambda: gwtest.call(cls.gw.port, cls.path, "not-a-token")[0] == 401,
                         20, 0.1)
        assert ok, "the gateway does not serve the API"

    @classmethod
    def tearDownClass(cls):
        for g in getattr(cls, "gws", []):
            g.close()
        tm = getattr(cls, "tm", None)
        if tm is not None and tm.running():
            tm.stop()
        if getattr(cls, "cp", None) is not None:
            cls.cp.stop()
        if getattr(cls, "nats", None) is not None:
            cls.nats.stop()
        gwtest.stop_backend(getattr(cls, "backend", None))

    def metrics(self):
        status, s, body = scrape(self.gw.port)
        self.assertEqual(status, 200, body)
        return s

    def test_0_rendered_location_allows_loopback_only(self):
        with open(os.path.join(self.gw.home, "gateway", "nginx.conf")) as f:
            conf = f.read()
        m = re.search(r"location = /_apim/metrics \{(.*?)\}", conf, re.S)
        self.assertTrue(m, conf)
        self.assertEqual(re.findall(r"(allow|deny) ([^;]+);", m.group(1)),
                         [("allow", "127.0.0.1"), ("allow", "::1"), ("deny", "all")])

    def test_1_calls_and_feed(self):
        before = self.metrics()
        status, js, _ = gwtest.call(self.gw.port, self.path, "not-a-token")
        self.assertEqual((status, js["code"]), (401, "900901"))
        for _ in range(3):
            self.assertEqual(gwtest.call(self.gw.port, self.path, self.token)[0], 200)
        after = self.metrics()
        self.assertEqual(after[fault("900901")] - before[fault("900901")], 1)
        self.assertEqual(after[PROXIED] - before[PROXIED], 3)
        # the data feed: a full snapshot from the control plane, NATS followed,
        # the control plane heard from within its sequence poll
        self.assertGreaterEqual(after["apim_gateway_full_syncs_total"], 1)
        # (each worker copies its sequence a few times a second)
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics()["apim_gateway_snapshot_seq_min"] > 0, 5), self.metrics())
        after = self.metrics()
        self.assertEqual(after["apim_gateway_event_hub_connected"], 1)
        self.assertLess(after["apim_gateway_control_plane_sync_age_seconds"], 10)
        # the calls went out in usage events
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics()['apim_gateway_usage_windows_total{result="published"}']
            > before['apim_gateway_usage_windows_total{result="published"}'], 5))
        # a change on the control plane arrives as a delta
        c = self.cp.client()
        r = c.post(gwtest.DP + "/applications", json={"name": pt.uniq("MetApp"),
                                                  "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r.text)
        self.assertTrue(gwtest.wait_for(lambda: self.metrics()["apim_gateway_deltas_applied_total"]
                                    > after["apim_gateway_deltas_applied_total"], 10),
                        self.metrics())
        self.assertTrue(gwtest.wait_for(lambda: self.metrics()["apim_gateway_snapshot_seq_min"]
                                    > after["apim_gateway_snapshot_seq_min"], 5),
                        self.metrics())

    def test_2_fallback_gauge_follows_the_traffic_manager(self):
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics()["apim_gateway_throttle_fallback"] == 0, 10),
            self.metrics())
        before = self.metrics()["apim_gateway_throttle_fallbacks_total"]
        type(self).tm._kill()   # SIGKILL: no clean shutdown
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics()["apim_gateway_throttle_fallback"] == 1, 10),
            self.metrics())
        self.assertEqual(self.metrics()["apim_gateway_throttle_fallbacks_total"], before + 1)
        # the fallback is logged too
        with open(os.path.join(self.gw.home, "gateway", "error.log"), errors="replace") as f:
            self.assertIn("no Traffic Manager heard", f.read())
        # a Traffic Manager again: back to 0
        type(self).tm = gwtest.start_tm(self.nats.url, self.cp.base_url, CRED)
        self.assertTrue(gwtest.wait_for(
            lambda: self.metrics()["apim_gateway_throttle_fallback"] == 0, 10),
            self.metrics())
        self.assertEqual(self.metrics()["apim_gateway_throttle_fallbacks_total"], before + 1)

    def test_3_metrics_allow_without_loopback_is_403(self):
        extra = {"event_hub": {"url": self.nats.url},
                 "gateway": {"control_plane_url": self.cp.base_url, "credential": CRED,
                             "metrics_allow": "10.9.8.0/24"}}
        g = gwtest.GatewayProc(extra).start()
        self.gws.append(g)
        with open(os.path.join(g.home, "gateway", "nginx.conf")) as f:
            self.assertIn("allow 10.9.8.0/24;", f.read())
        status, _, body = scrape(g.port)
        self.assertEqual(status, 403)
        self.assertNotIn("apim_gateway", body)


class MetricsAllowConfigTest(unittest.TestCase):

    def test_bad_address_is_refused_at_start(self):
        tmp = tempfile.mkdtemp(prefix="apimtest-metrics-conf-")
        try:
            path = apimtest.write_conf(os.path.join(tmp, "apim.conf"), {
                "server": {"home": os.path.join(tmp, "home")}})
            for bad in ("10.0.0.0/33", "127.0.0.1; allow all", "localhost"):
                r = apimtest.run_apimd(["--profile", "gateway", "--config", path],
                                       env={"APIM_GATEWAY_METRICS_ALLOW": bad}, timeout=20)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("APIM_GATEWAY_METRICS_ALLOW", r.stderr)
                self.assertIn("CIDR", r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
