"""Control-plane side of the gateway: every committed change is published on
the NATS event hub (apim.notify.<type>, apim.revoke, apim.block) with its
change sequence number, in order, without loss across a NATS restart, with
a heartbeat; and the internal data API /internal/data/v1 (snapshot and
per-entity fetches) behind the gateway credential. Also the all-in-one
profile's local nats-server child.

The NATS subscriber is a tiny client over a raw socket (the NATS text
protocol), so that the test does not share code with the server's libnats.
"""

import base64
import os
import socket
import threading
import time
import unittest
import urllib.parse

import apimtest
import test_publisher as pt
from gwtest import HAVE_NATS, NatsServer, NatsSub, basic, claims_of

APIS = pt.APIS
PUB = pt.PUB
DP = "/api/am/devportal/v3"
DENY = "/api/am/admin/v4/throttling/deny-policies"
DATA = "/internal/data/v1"
CRED = "gw-cred-" + base64.b32encode(os.urandom(10)).decode().lower()
DEFAULT_ENV = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]
FORM = "application/x-www-form-urlencoded"



class GateProxy:
    """A TCP relay from its own port to nats-server, with a gate: while the
    gate is closed, new connections are accepted and dropped at once. apimd
    talks to NATS through it, so that after a NATS restart the test can
    subscribe first and only then let apimd reconnect (no race between the
    test's subscription and apimd's republishing)."""

    def __init__(self, target_port):
        self.target = target_port
        self.open = threading.Event()
        self.open.set()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if not self.open.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port


def gw(srv, path, cred=CRED, query=None):
    headers = {} if cred is None else {"X-APIM-Gateway-Credential": cred}
    return srv.client(None).get(path, query=query, headers=headers)


_env = {}


def setUpModule():
    if not HAVE_NATS:
        return
    nats = NatsServer().start()
    proxy = GateProxy(nats.port)
    srv = apimtest.ApimServer(conf={"event_hub": {"url": proxy.url},
                                    "gateway": {"credential": CRED}})
    _env.update(nats=nats, proxy=proxy, srv=srv)
    srv.start()


def tearDownModule():
    if "srv" in _env:
        _env["srv"].stop()
    if "nats" in _env:
        _env["nats"].stop()


@unittest.skipUnless(HAVE_NATS, "nats-server is not installed")
class EventsCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = _env["srv"]
        cls.nats = _env["nats"]
        cls.proxy = _env["proxy"]
        cls.c = cls.srv.client()

    def setUp(self):
        self.sub = NatsSub(self.nats.port, skip_throttle=True)

    def tearDown(self):
        self.sub.close()

    def seq_now(self):
        r = gw(self.srv, DATA + "/sequence")
        self.assertEqual(r.status, 200, r)
        return r.json["seq"]

    def deployed_api(self):
        api = pt.create_api(self, self.c, policies=["Gold", "Unlimited"])
        r = self.c.post(APIS + "/%s/revisions" % api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        r = self.c.post(APIS + "/%s/deploy-revision" % api["id"],
                        query={"revisionId": r.json["id"]}, json=DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)
        r = self.c.post(PUB + "/apis/change-lifecycle",
                        query={"apiId": api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        return api

    def app_with_token(self, api_id):
        """An application subscribed to api_id with production keys; returns
        (app, subscription, keys, access token)."""
        r = self.c.post(DP + "/applications", json={"name": pt.uniq("EvApp"),
                                                    "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app = r.json
        r = self.c.post(DP + "/subscriptions", json={"applicationId": app["applicationId"],
                                                     "apiId": api_id,
                                                     "throttlingPolicy": "Gold"})
        self.assertEqual(r.status, 201, r)
        sub = r.json
        r = self.c.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        keys = r.json
        r = self.srv.client(None).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        return app, sub, keys, r.json["access_token"]

    def revoke(self, keys, token):
        r = self.srv.client(None).post(
            "/oauth2/revoke", data=urllib.parse.urlencode({"token": token}), content_type=FORM,
            headers={"Authorization": basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)

    def assert_contiguous(self, first, last):
        """Every seq in first..last arrived (once deduplicated)."""
        got = [b["seq"] for _, b in self.sub.changes() if first <= b["seq"] <= last]
        self.assertEqual(got, list(range(first, last + 1)), self.sub.changes())

    # ------------------------------------------------------------ events

    def test_deploy_publishes_api_event_with_seq(self):
        before = self.seq_now()
        api = self.deployed_api()
        subj, body = self.sub.wait_for(
            lambda s, b: s == "apim.notify.api" and b["id"] == api["id"] and
            b["action"] == "deploy")
        self.assertGreater(body["seq"], before)
        self.assertEqual(body["type"], "api")
        self.assertIn("ts", body)
        self.assertIn("payload", body)
        self.assertLessEqual(body["seq"], self.seq_now())

    def test_changes_arrive_on_their_subjects_in_order_without_gaps(self):
        api = self.deployed_api()
        start = self.seq_now()
        app, sub, keys, token = self.app_with_token(api["id"])
        self.revoke(keys, token)
        jti = claims_of(token)["jti"]
        r = self.c.post(DENY, json={"conditionType": "API",
                                    "conditionValue": "/%s/1.0.0" % pt.uniq("blocked")})
        self.assertEqual(r.status, 201, r)
        cond = r.json
        end = self.seq_now()
        self.sub.wait_for(lambda s, b: b.get("seq") == end and s != "apim.notify.heartbeat")
        _, b = self.sub.wait_for(lambda s, b: s == "apim.notify.subscription" and
                                 b["id"] == sub["subscriptionId"])
        self.assertEqual(b["action"], "create")
        self.sub.wait_for(lambda s, b: s == "apim.notify.application" and
                          b["id"] == app["applicationId"])
        self.sub.wait_for(lambda s, b: s == "apim.notify.key_mapping")
        _, b = self.sub.wait_for(lambda s, b: s == "apim.revoke" and b["id"] == jti)
        self.assertEqual(b["type"], "revoked_jwt")
        self.sub.wait_for(lambda s, b: s == "apim.block" and b["id"] == cond["conditionId"])
        self.assert_contiguous(start + 1, end)
        # arrival order is seq order
        seqs = [b["seq"] for s, b in self.sub.msgs
                if s != "apim.notify.heartbeat" and start < b["seq"] <= end]
        self.assertEqual(seqs, sorted(seqs))

    def test_heartbeat_carries_current_seq(self):
        now = self.seq_now()
        _, b = self.sub.wait_for(lambda s, b: s == "apim.notify.heartbeat" and
                                 b["seq"] >= now, timeout=4)
        self.assertEqual(b["seq"], self.seq_now())

    def test_nats_restart_loses_no_change(self):
        api = self.deployed_api()
        start = self.seq_now()
        self.sub.wait_for(lambda s, b: s == "apim.notify.heartbeat" and b["seq"] >= start,
                          timeout=4)
        self.sub.close()
        self.proxy.open.clear()
        self.nats.stop()
        try:
            ids = []
            for _ in range(3):
                r = self.c.post(DP + "/applications", json={"name": pt.uniq("DownApp"),
                                                            "throttlingPolicy": "Unlimited"})
                self.assertEqual(r.status, 201, r)
                ids.append(r.json["applicationId"])
            r = self.c.post(DP + "/subscriptions", json={"applicationId": ids[0],
                                                         "apiId": api["id"],
                                                         "throttlingPolicy": "Gold"})
            self.assertEqual(r.status, 201, r)
            end = self.seq_now()
            self.assertGreaterEqual(end, start + 4)
            time.sleep(0.3)  # the publisher notices the outage meanwhile
        finally:
            self.nats.start()
            # subscribe before apimd may reconnect, then let it in
            try:
                self.sub = NatsSub(self.nats.port, skip_throttle=True)
            finally:
                self.proxy.open.set()
        self.sub.wait_for(lambda s, b: s != "apim.notify.heartbeat" and b["seq"] == end,
                          timeout=15)
        self.assert_contiguous(start + 1, end)
        got = {b["id"] for s, b in self.sub.changes() if s == "apim.notify.application"}
        self.assertTrue(set(ids) <= got, got)

    # ------------------------------------------------------------ data API

    def test_data_api_needs_the_credential(self):
        for path in ("/snapshot", "/sequence", "/apis", "/applications",
                     "/application-key-mappings", "/subscriptions", "/throttling-policies",
                     "/block", "/revokedjwt", "/keymanagers"):
            for cred in (None, "wrong", CRED + "x", ""):
                r = gw(self.srv, DATA + path, cred=cred)
                pt.assert_error(self, r, 401, "X-APIM-Gateway-Credential")
        # an administrator's Basic credential is not a gateway credential
        r = self.c.get(DATA + "/snapshot")
        self.assertEqual(r.status, 401, r)

    def test_snapshot_has_what_a_gateway_needs(self):
        api = self.deployed_api()
        hidden = pt.create_api(self, self.c)  # never deployed
        app, sub, keys, token = self.app_with_token(api["id"])
        self.revoke(keys, token)
        jti = claims_of(token)["jti"]
        r = gw(self.srv, DATA + "/snapshot", query={"gatewayLabel": "Default"})
        self.assertEqual(r.status, 200, r)
        snap = r.json
        self.assertEqual(snap["seq"], self.seq_now())
        apis = {a["id"]: a for a in snap["apis"]}
        self.assertIn(api["id"], apis)
        self.assertNotIn(hidden["id"], apis)
        a = apis[api["id"]]
        self.assertEqual(a["context"], api["context"])
        self.assertEqual(a["lifeCycleStatus"], "PUBLISHED")
        self.assertEqual([o["target"] for o in a["operations"]], ["/items", "/items/{itemId}"])
        self.assertEqual(a["endpointConfig"]["production_endpoints"]["url"],
                         "http://127.0.0.1:9/backend")
        self.assertIn("isDefaultVersion", a)
        self.assertEqual(sorted(a["policies"]), ["Gold", "Unlimited"])
        self.assertIsInstance(a["securityScheme"], list)
        self.assertIsInstance(a["corsConfiguration"], dict)
        # the snapshot carries the deployed revision, not later edits
        r = self.c.get(APIS + "/" + api["id"])
        edited = dict(r.json, description="edited after deployment")
        self.assertEqual(self.c.put(APIS + "/" + api["id"], json=edited).status, 200)
        r = gw(self.srv, DATA + "/apis", query={"gatewayLabel": "Default", "apiId": api["id"]})
        self.assertEqual(r.json["list"][0]["description"], "test API")
        subs = {s["id"]: s for s in snap["subscriptions"]}
        self.assertEqual(subs[sub["subscriptionId"]]["apiId"], api["id"])
        self.assertEqual(subs[sub["subscriptionId"]]["applicationId"], app["applicationId"])
        self.assertEqual(subs[sub["subscriptionId"]]["tier"], "Gold")
        maps = {m["consumerKey"]: m for m in snap["keyMappings"]}
        self.assertEqual(maps[keys["consumerKey"]]["applicationId"], app["applicationId"])
        self.assertEqual(maps[keys["consumerKey"]]["keyType"], "PRODUCTION")
        self.assertIn(app["applicationId"], [x["id"] for x in snap["applications"]])
        self.assertIn(jti, [x["jti"] for x in snap["revokedJwts"]])
        km = snap["keyManagers"][0]
        self.assertEqual(km["name"], "Resident Key Manager")
        self.assertGreater(len(km["jwks"]["keys"]), 0)
        self.assertTrue(km["issuer"].endswith("/oauth2/token"), km)
        self.assertIn("Unlimited", [p["name"] for p in snap["policies"]])
        self.assertIsInstance(snap["blockConditions"], list)
        # another label has none of the APIs deployed to Default
        r = gw(self.srv, DATA + "/snapshot", query={"gatewayLabel": "NoSuchEnv"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["apis"], [])

    def test_per_entity_fetches(self):
        api = self.deployed_api()
        app, sub, keys, token = self.app_with_token(api["id"])
        r = gw(self.srv, DATA + "/apis", query={"gatewayLabel": "Default", "apiId": api["id"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["count"], r.json["list"][0]["id"]), (1, api["id"]))
        r = gw(self.srv, DATA + "/applications", query={"id": app["applicationId"]})
        self.assertEqual([x["name"] for x in r.json["list"]], [app["name"]])
        r = gw(self.srv, DATA + "/application-key-mappings",
               query={"consumerKey": keys["consumerKey"]})
        self.assertEqual([x["applicationId"] for x in r.json["list"]], [app["applicationId"]])
        r = gw(self.srv, DATA + "/subscriptions",
               query={"apiId": api["id"], "appId": app["applicationId"]})
        self.assertEqual([x["id"] for x in r.json["list"]], [sub["subscriptionId"]])
        r = gw(self.srv, DATA + "/subscriptions",
               query={"apiId": api["id"], "appId": pt.UNKNOWN_ID})
        self.assertEqual(r.json, {"count": 0, "list": []})
        r = gw(self.srv, DATA + "/keymanagers")
        self.assertEqual(r.json["list"][0]["name"], "Resident Key Manager")
        r = gw(self.srv, DATA + "/throttling-policies")
        self.assertGreater(r.json["count"], 0)
        value = "/%s/1.0.0" % pt.uniq("blk")
        self.assertEqual(self.c.post(DENY, json={"conditionType": "API",
                                                 "conditionValue": value}).status, 201)
        r = gw(self.srv, DATA + "/block")
        self.assertIn(value, [b["conditionValue"] for b in r.json["list"]])
        self.revoke(keys, token)
        r = gw(self.srv, DATA + "/revokedjwt")
        self.assertIn(claims_of(token)["jti"], [x["jti"] for x in r.json["list"]])


@unittest.skipUnless(HAVE_NATS, "nats-server is not installed")
class LocalHubTest(unittest.TestCase):
    def test_all_in_one_starts_and_stops_a_local_nats_server(self):
        srv = apimtest.ApimServer()
        srv.prepare()
        port = 4222 + srv._port_offset
        if not apimtest.port_is_free(port):
            self.skipTest("port %d is taken" % port)
        srv.start()
        try:
            sub = NatsSub(port, connect_timeout=5, skip_throttle=True)
            # the control plane publishes to it: a heartbeat arrives
            _, b = sub.wait_for(lambda s, b: s == "apim.notify.heartbeat", timeout=4)
            self.assertIsInstance(b["seq"], int)
            sub.close()
            # no gateway.credential: one is generated into the home, 0600
            path = os.path.join(srv.home, "gateway-credential")
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            with open(path) as f:
                cred = f.read().strip()
            self.assertGreaterEqual(len(cred), 32)
            r = gw(srv, DATA + "/sequence", cred=cred)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["seq"], b["seq"])
            self.assertEqual(gw(srv, DATA + "/sequence", cred=cred[:-1]).status, 401)
        finally:
            srv.stop()
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_local_nats_server_dies_with_a_killed_apimd(self):
        srv = apimtest.ApimServer()
        srv.prepare()
        port = 4222 + srv._port_offset
        if not apimtest.port_is_free(port):
            self.skipTest("port %d is taken" % port)
        srv.start()
        NatsSub(port, connect_timeout=5, skip_throttle=True).close()
        srv._kill()  # SIGKILL: no clean shutdown
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                return
        self.fail("nats-server still listens on %d after apimd was killed" % port)

    def test_no_local_hub_when_disabled(self):
        srv = apimtest.ApimServer(conf={"event_hub": {"start_local": False}})
        srv.prepare()
        port = 4222 + srv._port_offset
        srv.start()
        try:
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
