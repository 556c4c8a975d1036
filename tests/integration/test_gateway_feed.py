"""The gateway module fed by the control plane: nginx with
ngx_http_apim_module pointed at a real apimd (apim_control_plane_url,
apim_gateway_credential, apim_event_hub_url, apim_cache_file), a NATS
server and a backend. Changes made through the Publisher and Developer
Portal REST APIs (deploy, undeploy, revoke, block) reach the gateway within
a second over NATS, within a few seconds with NATS down (sequence polling),
and a gateway restarted with the control plane down serves from its cache.

Prints the deploy-to-callable time (median of a few deploys), one of the
gateway benchmark numbers.

Needs APIM_NGINX_MODULE, /usr/sbin/nginx and nats-server; skipped otherwise.
"""

import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import unittest
import urllib.parse

import apimtest
import gwtest
import test_publisher as pt
from gwtest import HAVE_ALL, basic

APIS = pt.APIS
PUB = pt.PUB
DP = "/api/am/devportal/v3"
FORM = "application/x-www-form-urlencoded"
CRED = "gw-feed-" + base64.b32encode(os.urandom(10)).decode().lower()
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]

_env = {}


def setUpModule():
    if not HAVE_ALL:
        return
    nats = gwtest.NatsServer().start()
    _env["nats"] = nats
    srv = apimtest.ApimServer(conf={"event_hub": {"url": nats.url},
                                    "gateway": {"credential": CRED}})
    srv.start()
    _env["srv"] = srv
    _env["backend"] = gwtest.start_backend("production")


def tearDownModule():
    gwy = _env.get("nginx")
    if gwy is not None:
        gwy.stop()
        shutil.rmtree(gwy.tmp, ignore_errors=True)
    if "srv" in _env:
        _env["srv"].stop()
    if "nats" in _env:
        _env["nats"].stop()
    if "backend" in _env:
        _env["backend"].shutdown()


@unittest.skipUnless(HAVE_ALL, "needs APIM_NGINX_MODULE, nginx and nats-server")
class GatewayFeedTest(unittest.TestCase):
    """Ordered steps (test_1 .. test_7) sharing one API, application and
    gateway."""

    @classmethod
    def setUpClass(cls):
        cls.srv = _env["srv"]
        cls.nats = _env["nats"]
        cls.c = cls.srv.client()
        cls.gw = gwtest.FeedNginx(cls.srv.base_url, cls.nats.url, CRED).start()
        _env["nginx"] = cls.gw
        backend = _env["backend"]
        name = pt.uniq("FeedApi")
        r = cls.c.post(APIS, json=pt.api_body(
            name=name, policies=["Gold", "Unlimited"],
            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                "url": "http://127.0.0.1:%d/be" % backend.server_port}}))
        if r.status != 201:
            raise RuntimeError("cannot create the API: %r" % r)
        cls.api = r.json
        cls.path = "/%s/1.0.0/items" % name.lower()

    # -- helpers

    def wait_for(self, token, status, code=None, timeout=1.0):
        """Polls the gateway until it answers status (and fault code) three
        times in a row; returns the seconds until the first of them."""
        t0 = time.monotonic()
        last = None
        first = None
        streak = 0
        while True:
            last = self.gw.call(self.path, token)
            if last[0] == status and (code is None or last[1] == code):
                # each call is a new connection, which may reach the other
                # worker: both follow the hub on their own, a few ms apart,
                # so the answer counts once three calls in a row agree
                if first is None:
                    first = time.monotonic() - t0
                streak += 1
                if streak >= 3:
                    return first
                continue
            first, streak = None, 0
            if time.monotonic() - t0 > timeout:
                self.fail("gateway still answers %s %s (%r) after %.2f s, wanted %s %s\n%s"
                          % (last[0], last[1], last[2][:300], timeout, status, code,
                             self.gw.log()[-3000:]))
            time.sleep(0.005)

    def deploy(self):
        r = self.c.post(APIS + "/%s/deploy-revision" % self.api["id"],
                        query={"revisionId": self.rev["id"]}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)

    def undeploy(self):
        r = self.c.post(APIS + "/%s/undeploy-revision" % self.api["id"],
                        query={"revisionId": self.rev["id"]}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)

    def token(self):
        keys = type(self).keys
        r = self.srv.client(None).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        return r.json["access_token"]

    def block(self, state):
        path = "block-subscription" if state != "UNBLOCKED" else "unblock-subscription"
        q = {"subscriptionId": type(self).sub["subscriptionId"]}
        if state != "UNBLOCKED":
            q["blockState"] = state
        r = self.c.post(PUB + "/subscriptions/" + path, query=q)
        self.assertEqual(r.status, 200, r)

    # -- steps

    def test_1_publish_subscribe_call(self):
        cls = type(self)
        r = self.c.post(APIS + "/%s/revisions" % self.api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        cls.rev = r.json
        self.deploy()
        r = self.c.post(PUB + "/apis/change-lifecycle",
                        query={"apiId": self.api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        r = self.c.post(DP + "/applications", json={"name": pt.uniq("FeedApp"),
                                                    "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        cls.app = r.json
        r = self.c.post(DP + "/subscriptions", json={"applicationId": cls.app["applicationId"],
                                                     "apiId": self.api["id"],
                                                     "throttlingPolicy": "Gold"})
        self.assertEqual(r.status, 201, r)
        cls.sub = r.json
        r = self.c.post(DP + "/applications/%s/generate-keys" % cls.app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        cls.keys = r.json
        cls.tok = self.token()
        self.wait_for(cls.tok, 200)
        status, _, body = self.gw.call(self.path, cls.tok)
        rec = json.loads(body)
        self.assertEqual(rec["path"], "/be/items")
        self.assertNotIn("authorization", rec["headers"])
        # without a token: 900902
        self.assertEqual(self.gw.call(self.path)[:2], (401, "900902"))

    def test_2_undeploy_and_deploy_take_effect_within_a_second(self):
        tok = type(self).tok
        up, down = [], []
        fulls = self.gw.log().count("apim: snapshot seq")
        for _ in range(5):
            t0 = time.monotonic()
            self.undeploy()
            self.wait_for(tok, 403, "900906")
            down.append(time.monotonic() - t0)
            t0 = time.monotonic()
            self.deploy()
            self.wait_for(tok, 200)
            up.append(time.monotonic() - t0)
        self.assertLess(statistics.median(up), 1.0)
        # each change came as a delta (/changes), not as a full snapshot
        self.assertEqual(self.gw.log().count("apim: snapshot seq"), fulls)
        self.assertIn("apim: delta seq", self.gw.log())
        sys.stderr.write("\n[gateway feed] deploy-to-callable: median %.0f ms, max %.0f ms "
                         "(n=%d); undeploy-to-900906: median %.0f ms\n"
                         % (1000 * statistics.median(up), 1000 * max(up), len(up),
                            1000 * statistics.median(down)))

    def test_3_revoke_token_900901(self):
        cls = type(self)
        keys = cls.keys
        r = self.srv.client(None).post(
            "/oauth2/revoke", data=urllib.parse.urlencode({"token": cls.tok}),
            content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        self.wait_for(cls.tok, 401, "900901")
        cls.tok = self.token()
        self.wait_for(cls.tok, 200)

    def test_4_block_subscription_900907(self):
        tok = type(self).tok
        self.block("BLOCKED")
        self.wait_for(tok, 401, "900907")
        self.block("UNBLOCKED")
        self.wait_for(tok, 200)

    def test_5_nats_down_changes_arrive_by_polling(self):
        tok = type(self).tok
        self.nats.stop()
        try:
            time.sleep(0.3)
            self.block("BLOCKED")
            took = self.wait_for(tok, 401, "900907", timeout=3.5)
            self.block("UNBLOCKED")
            self.wait_for(tok, 200, timeout=3.5)
        finally:
            self.nats.start()
        sys.stderr.write("\n[gateway feed] change with NATS down seen after %.0f ms\n"
                         % (1000 * took))

    def test_6_nats_back_changes_arrive_fast_again(self):
        """Once NATS is back (libnats reconnects within half a second), changes
        arrive by event again: six in a row each under 0.8 s, which the 2 s
        sequence poll alone would manage with a chance of about 0.4 ** 6."""
        tok = type(self).tok
        time.sleep(1.5)
        for _ in range(3):
            self.undeploy()
            self.wait_for(tok, 403, "900906", timeout=0.8)
            self.deploy()
            self.wait_for(tok, 200, timeout=0.8)

    def test_6b_reload_replaces_workers_and_keeps_following(self):
        tok = type(self).tok

        def workers():
            out = subprocess.run(["pgrep", "-P", str(self.gw.proc.pid)],
                                 capture_output=True, text=True).stdout
            return set(out.split())

        old = workers()
        self.assertEqual(len(old), 2, old)
        self.gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            now = workers()
            if len(now) == 2 and not (now & old):
                break
            if time.monotonic() > deadline:
                self.fail("old workers %s still there (now %s)\n%s"
                          % (old, now, self.gw.log()[-2000:]))
            time.sleep(0.05)
        self.wait_for(tok, 200)
        # the new workers may still be connecting to NATS: an event they miss
        # comes by the sequence poll (2 s)
        self.undeploy()
        self.wait_for(tok, 403, "900906", timeout=3.5)
        self.deploy()
        self.wait_for(tok, 200, timeout=3.5)

    def test_7_cache_serves_with_control_plane_down(self):
        tok = type(self).tok
        self.assertTrue(os.path.exists(self.gw.cache))
        with open(self.gw.cache) as f:
            snap = json.load(f)
        self.assertIn(self.api["id"], [a["id"] for a in snap["apis"]])
        self.assertEqual(oct(os.stat(self.gw.cache).st_mode & 0o777), "0o644")
        self.srv.stop()
        try:
            # workers stop their feed threads (NATS, curl) and exit cleanly
            self.assertEqual(self.gw.stop(), 0, self.gw.log()[-2000:])
            self.gw.start()
            self.wait_for(tok, 200, timeout=2.0)
            self.assertIn("serving cached snapshot", self.gw.log())
            # and keeps serving while the control plane stays down
            time.sleep(2.5)
            self.assertEqual(self.gw.call(self.path, tok)[0], 200)
        finally:
            self.gw.stop()


if __name__ == "__main__":
    unittest.main()
