"""The distributed deployment end to end, through the load balancer.

scripts/apimcluster.py starts what `make cluster` starts, from the files in
deploy/: PostgreSQL with apimgtdb and shareddb (least-privilege roles), two
clustered NATS servers, two control-plane nodes, the nginx load balancer,
two Traffic Managers and two gateways, each its own process. An API
published and deployed on one control-plane node is consumed with a
subscription and a token made on the other; both gateways serve it behind
the load balancer; a subscription tier's limit holds across both; a token
revoked on one node is refused by both gateways.

The cluster runs its own PostgreSQL (it needs the roles and databases of
deploy/postgresql/setup.sql), so the test runs in the PostgreSQL pass of
run.py only, in the normal and the ASan build.
"""

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import apimtest
import gwtest
import test_publisher as pt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import apimcluster  # noqa: E402 - after sys.path

DP = "/api/am/devportal/v3"
SUB_POLICIES = "/api/am/admin/v4/throttling/policies/subscription"
SIGNUP = "/api/identity/user/v1.0/me"
FORM = "application/x-www-form-urlencoded"
LIMIT = 20
PG_CTL = os.path.join(apimcluster.PG_BIN, "pg_ctl")


def skip_reason():
    if not apimtest.is_postgresql():
        return ("the cluster runs its own PostgreSQL (deploy/postgresql): "
                "run in the PostgreSQL pass only")
    if not os.path.exists(gwtest.NGINX):
        return "nginx not installed"
    if gwtest.module_path() is None:
        return "ngx_http_apim_module.so not built"
    if shutil.which("nats-server") is None:
        return "nats-server not installed"
    if not os.path.exists(PG_CTL):
        return "PostgreSQL 15 not installed"
    return None


def wait_for(cond, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def call(url, path, token=None, method="GET"):
    """One request on a new connection: (status, JSON body or None, headers)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=10,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": "Bearer " + token} if token else {})
        r = conn.getresponse()
        body = r.read()
        try:
            js = json.loads(body)
        except ValueError:
            js = None
        return r.status, js, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def access_log(node):
    """The gateway's access log (JSON lines), parsed."""
    out = []
    try:
        with open(node.access_log, errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


class ClusterCase(unittest.TestCase):
    """Starts a cluster for the class (start_cluster) and stops it after:
    every apimd must exit with 0 and without a sanitizer report."""

    cluster = None

    @classmethod
    def start_cluster(cls, **kw):
        # hour-long rate-limit windows: no test straddles two
        if time.time() % 3600 > 3600 - 150:
            time.sleep(3600 - time.time() % 3600 + 1)
        cls.root = tempfile.mkdtemp(prefix="apimcluster-")
        cls.failed = False
        cls.cluster = apimcluster.Cluster(
            cls.root, apimd=apimtest.apimd_path(), module=gwtest.module_path(),
            extra_conf={"control-plane": {"security": {"argon2_memlimit_kb": 8192,
                                                       "argon2_opslimit": 1}}}, **kw)
        try:
            cls.cluster.start()
        except Exception:
            cls.failed = True
            cls._stop()
            raise
        sys.stderr.write("\n[cluster] %d nodes ready in %.1f s\n" % (
            len(cls.cluster.nodes), cls.cluster.started_in))
        cls.backend = gwtest.start_backend("cluster")
        return cls.cluster

    @classmethod
    def _stop(cls):
        rcs = cls.cluster.stop()
        problems = ["%s exited with %d" % (n, rc) for n, rc in rcs.items() if rc != 0]
        reports = cls.cluster.sanitizer_reports()
        problems += ["sanitizer report from %s:\n%s" % kv for kv in reports.items()]
        if problems or cls.failed:
            sys.stderr.write("\n[cluster] kept %s\n" % cls.root)
        else:
            shutil.rmtree(cls.root, ignore_errors=True)
        return problems

    @classmethod
    def tearDownClass(cls):
        if cls.cluster is None:
            return
        gwtest.stop_backend(getattr(cls, "backend", None))
        problems = cls._stop()
        if problems:
            raise AssertionError("; ".join(problems))

    def run(self, result=None):
        res = super().run(result)
        if result is not None and (result.failures or result.errors):
            type(self).failed = True
        return res

    def publish_api(self, pub, policies):
        """An API on the backend, revision deployed to Default, published,
        made with the Publisher client pub. Returns its id; sets self.path."""
        cls = type(self)
        cls.name = pt.uniq("ClusterApi")
        api = pt.create_api(self, pub, name=cls.name, policies=policies,
                            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                                "url": "http://127.0.0.1:%d/be" % self.backend.server_port}})
        cls.api_id = api["id"]
        gwtest.deploy_publish(pub, api["id"])
        cls.path = "/%s/1.0.0/items" % cls.name.lower()
        return api["id"]

    def sign_up(self, client):
        """A new consumer signed up through client; its (name, password)."""
        user, pw = pt.uniq("carol"), "Subscr1ber-pass"
        r = client.post(SIGNUP, json={"user": {
            "username": user, "password": pw,
            "claims": [{"uri": "http://wso2.org/claims/emailaddress",
                        "value": user + "@example.com"}]}})
        self.assertEqual(r.status, 201, r)
        return user, pw

    def subscribed_app(self, consumer, token_client, tier):
        """An application of consumer, subscribed with tier, with production
        keys and a client-credentials token from token_client."""
        r = consumer.post(DP + "/applications", json={"name": pt.uniq("ClusterApp"),
                                                      "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app = r.json
        r = consumer.post(DP + "/subscriptions", json={
            "applicationId": app["applicationId"], "apiId": self.api_id,
            "throttlingPolicy": tier})
        self.assertEqual(r.status, 201, r)
        r = consumer.post(DP + "/applications/%s/generate-keys" % app["applicationId"], json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        keys = r.json
        r = token_client.post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": gwtest.basic(keys["consumerKey"], keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        return app, keys, r.json["access_token"]

    def wait_served(self, token):
        """Until each gateway (called directly) serves the API with token."""
        for g in self.cluster.by_kind("gateway"):
            self.assertTrue(wait_for(lambda: call(g.url, self.path, token)[0] == 200),
                            (g.name, call(g.url, self.path, token)))


@unittest.skipIf(skip_reason(), skip_reason())
class ClusterEndToEndTest(ClusterCase):
    """Tests run in order; each builds on the one before."""

    @classmethod
    def setUpClass(cls):
        c = cls.start_cluster()
        cls.cp1, cls.cp2 = c.by_kind("control-plane")
        cls.gws = c.by_kind("gateway")

    def admin(self, node):
        return apimtest.Client(node.url, "admin", self.cluster.admin_password)

    # -- 1: wiring ----------------------------------------------------------

    def test_1_wiring_databases_and_shared_secrets(self):
        c = self.cluster
        # the gateways and Traffic Managers have no database settings and
        # make no database files
        for n in c.by_kind("gateway") + c.by_kind("traffic-manager"):
            conf = open(n.conf).read()
            self.assertNotRegex(conf, r"(?m)^\[database\]", n.name)
            self.assertNotIn("postgresql://", conf, n.name)
            self.assertNotIn("settings are ignored", open(n.log).read(), n.name)
            self.assertEqual([f for f in os.listdir(n.home) if f.endswith(".db")], [], n.name)
            self.assertTrue(n.running(), n.name)
        # both control-plane nodes on the same PostgreSQL databases
        for n in (self.cp1, self.cp2):
            self.assertIn("postgresql://apim_apimgt:", open(n.conf).read())
            r = apimtest.Client(n.url).get("/health/ready")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["checks"], {"apimgtdb": "UP", "shareddb": "UP"})
        # the admin password was generated once, by the first node, and
        # works on both
        self.assertTrue(os.path.exists(os.path.join(self.cp1.home, "admin-password")))
        self.assertFalse(os.path.exists(os.path.join(self.cp2.home, "admin-password")))
        self.assertIn("admin password", open(self.cp1.out).read())
        self.assertNotIn(c.admin_password, open(self.cp2.out).read())
        for n in (self.cp1, self.cp2):
            r = self.admin(n).get(pt.APIS)
            self.assertEqual(r.status, 200, (n.name, r))
        # the same signing keys (from shareddb, under the one master key)
        jwks = [apimtest.Client(n.url).get("/oauth2/jwks").json for n in (self.cp1, self.cp2)]
        self.assertTrue(jwks[0]["keys"])
        self.assertEqual(jwks[0], jwks[1])
        # the same gateway credential on every node; a wrong one is refused
        for n in (self.cp1, self.cp2):
            r = apimtest.Client(n.url).get("/internal/data/v1/sequence", headers={
                "X-APIM-Gateway-Credential": c.gateway_credential})
            self.assertEqual(r.status, 200, r)
            r = apimtest.Client(n.url).get("/internal/data/v1/sequence", headers={
                "X-APIM-Gateway-Credential": "not-" + c.gateway_credential})
            self.assertEqual(r.status, 401, r)
        # one change sequence (apimgtdb's) whichever node makes the change
        def seq(node):
            r = apimtest.Client(node.url).get("/internal/data/v1/sequence", headers={
                "X-APIM-Gateway-Credential": c.gateway_credential})
            self.assertEqual(r.status, 200, r)
            return r.json["seq"]
        before = seq(self.cp1)
        self.assertEqual(seq(self.cp2), before)
        r = self.admin(self.cp2).post(SUB_POLICIES, json={
            "policyName": pt.uniq("SeqProbe"), "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": 5, "timeUnit": "min", "unitTime": 1}}})
        self.assertEqual(r.status, 201, r)
        after = seq(self.cp1)
        self.assertGreater(after, before)
        self.assertEqual(seq(self.cp2), after)
        # least privilege in PostgreSQL: each role reaches its own database only
        pg = c.postgres
        ok = subprocess.run(["psql", "-X", "-A", "-t", "-d", pg.url_for("apimgtdb"), "-c",
                             "SELECT current_user"], capture_output=True, text=True, timeout=30)
        self.assertEqual(ok.stdout.strip(), "apim_apimgt", ok.stderr)
        cross = pg.url_for("apimgtdb").rsplit("/", 1)[0] + "/shareddb"
        bad = subprocess.run(["psql", "-X", "-d", cross, "-c", "SELECT 1"],
                             capture_output=True, text=True, timeout=30)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn('no pg_hba.conf entry for host "127.0.0.1", user "apim_apimgt", '
                      'database "shareddb"', bad.stderr)
        privs = pg.psql("SELECT has_database_privilege('apim_apimgt', 'shareddb', 'CONNECT'), "
                        "has_database_privilege('apim_shared', 'apimgtdb', 'CONNECT'), "
                        "has_database_privilege('apim_apimgt', 'apimgtdb', 'CONNECT');")
        self.assertEqual(privs.strip(), "f|f|t")
        rows = pg.psql("SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                       "WHERE rolname LIKE 'apim_%' ORDER BY 1;")
        self.assertEqual(rows.split(), ["apim_apimgt|f|f|f", "apim_shared|f|f|f"])
        # the control plane answers through the load balancer over TLS too
        r = apimtest.Client(c.control_plane_https_url, "admin", c.admin_password).get(pt.APIS)
        self.assertEqual(r.status, 200, r)

    # -- 2: publish on one node, consume from the other, both gateways -------

    def test_2_published_on_cp1_consumed_via_cp2_served_by_both_gateways(self):
        cls = type(self)
        c = self.cluster
        pub = self.admin(self.cp1)
        # a subscription tier, made on cp1 through the Admin API
        r = pub.post(SUB_POLICIES, json={
            "policyName": "Cluster20PerHour", "defaultLimit": {
                "type": "REQUESTCOUNTLIMIT",
                "requestCount": {"requestCount": LIMIT, "timeUnit": "hour", "unitTime": 1}}})
        self.assertEqual(r.status, 201, r)
        self.publish_api(pub, ["Cluster20PerHour", "Unlimited"])

        # a consumer signs up on cp2, subscribes and gets a token there
        user, pw = self.sign_up(apimtest.Client(self.cp2.url))
        cls.consumer = apimtest.Client(self.cp2.url, user, pw)
        cls.app, cls.keys, cls.token = self.subscribed_app(
            cls.consumer, apimtest.Client(self.cp2.url), "Unlimited")

        # through the load balancer: served, by both gateways
        self.wait_served(cls.token)
        marker = pt.uniq("probe")
        gwtest.Backend.seen.clear()
        for i in range(10):
            status, js, _ = call(c.gateway_url, "%s?m=%s-%d" % (cls.path, marker, i), cls.token)
            self.assertEqual(status, 200, js)
            self.assertEqual(js["backend"], "cluster")
            self.assertEqual(js["path"], "/be/items?m=%s-%d" % (marker, i))
            self.assertNotIn("authorization", js["headers"])
        self.assertEqual(len([s for s in gwtest.Backend.seen if marker in s["path"]]), 10)
        served = {}
        for g in self.gws:
            self.assertTrue(wait_for(lambda: any(marker in e["uri"] for e in access_log(g)), 5))
            served[g.name] = sum(1 for e in access_log(g)
                                 if marker in e["uri"] and e["status"] == 200)
        self.assertEqual(sum(served.values()), 10, served)
        self.assertTrue(all(v >= 3 for v in served.values()), served)   # round-robin
        # and over TLS
        status, js, _ = call(c.gateway_https_url, cls.path, cls.token)
        self.assertEqual(status, 200, js)
        # no token: the gateway's fault, through the load balancer
        status, js, _ = call(c.gateway_url, cls.path)
        self.assertEqual((status, js["code"]), (401, "900902"))

    # -- 3: a subscription tier's limit across both gateways -----------------

    def test_3_subscription_limit_counted_across_gateways(self):
        c = self.cluster
        _, _, token = self.subscribed_app(self.consumer, apimtest.Client(self.cp2.url),
                                          "Cluster20PerHour")
        self.wait_served(token)
        admitted, refused = len(self.gws), []
        marker = pt.uniq("limit")
        for i in range(2 * LIMIT):
            status, js, headers = call(c.gateway_url, "%s?m=%s-%d" % (self.path, marker, i),
                                       token)
            if status == 200:
                admitted += 1
            else:
                refused.append((status, js, headers.get("retry-after")))
            time.sleep(0.02)
        # never more than the tier allows in all, though each gateway alone
        # would have admitted LIMIT
        self.assertLessEqual(admitted, LIMIT, refused)
        self.assertGreaterEqual(admitted, LIMIT // 2, refused)
        self.assertTrue(refused)
        for status, js, retry in refused:
            self.assertEqual((status, js["code"]), (429, "900804"), js)
            self.assertGreaterEqual(int(retry), 1)
        # both gateways admitted some and refused some
        for g in self.gws:
            self.assertTrue(wait_for(lambda: sum(1 for e in access_log(g)
                                                 if marker in e["uri"]) > 0, 5))
            st = [e["status"] for e in access_log(g) if marker in e["uri"]]
            self.assertIn(200, st, g.name)
            self.assertIn(429, st, g.name)

    # -- 4: revoked on one node, refused by both gateways ---------------------

    def test_4_token_revoked_on_cp1_refused_by_both_gateways(self):
        cls = type(self)
        for g in self.gws:
            self.assertEqual(call(g.url, self.path, cls.token)[0], 200, g.name)
        r = apimtest.Client(self.cp1.url).post(
            "/oauth2/revoke", data=urllib.parse.urlencode({"token": cls.token}),
            content_type=FORM,
            headers={"Authorization": gwtest.basic(cls.keys["consumerKey"],
                                               cls.keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        for g in self.gws:
            self.assertTrue(wait_for(lambda: call(g.url, self.path, cls.token)[0] == 401, 10),
                            (g.name, call(g.url, self.path, cls.token)))
            status, js, _ = call(g.url, self.path, cls.token)
            self.assertEqual((status, js["code"]), (401, "900901"))
        for _ in range(4):
            status, js, _ = call(self.cluster.gateway_url, self.path, cls.token)
            self.assertEqual((status, js["code"]), (401, "900901"))
        # a new token works again
        r = apimtest.Client(self.cp1.url).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": gwtest.basic(cls.keys["consumerKey"],
                                               cls.keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        fresh = r.json["access_token"]
        self.assertTrue(wait_for(lambda: call(self.cluster.gateway_url, self.path,
                                              fresh)[0] == 200, 10))

    # -- 5: the client's address behind the load balancer ---------------------

    def test_5_ip_blocking_condition_on_the_client_behind_the_load_balancer(self):
        c = self.cluster
        r = apimtest.Client(self.cp1.url).post(
            "/oauth2/token", data="grant_type=client_credentials", content_type=FORM,
            headers={"Authorization": gwtest.basic(self.keys["consumerKey"],
                                               self.keys["consumerSecret"])})
        self.assertEqual(r.status, 200, r)
        token = r.json["access_token"]
        lb = urllib.parse.urlsplit(c.gateway_url)

        def call_from(source, url_port, path, xff=None):
            h = {"Authorization": "Bearer " + token}
            if xff:
                h["X-Forwarded-For"] = xff
            conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10,
                                              source_address=(source, 0))
            try:
                conn.request("GET", path, headers=h)
                resp = conn.getresponse()
                try:
                    return resp.status, json.loads(resp.read())
                except ValueError:
                    return resp.status, None
            finally:
                conn.close()

        r = self.admin(self.cp1).post("/api/am/admin/v4/throttling/deny-policies", json={
            "conditionType": "IP", "conditionValue": {"fixedIp": "127.0.0.5", "invert": False},
            "conditionStatus": True})
        self.assertEqual(r.status, 201, r)
        cid = r.json["conditionId"]
        try:
            # each gateway has the condition (asked by the trusted address)
            for g in self.gws:
                port = urllib.parse.urlsplit(g.url).port
                self.assertTrue(wait_for(lambda: call_from("127.0.0.1", port, self.path,
                                                           "127.0.0.5")[0] == 429, 10), g.name)
            marker = pt.uniq("realip")
            seen = {}
            for source in ("127.0.0.5", "127.0.0.6"):
                for i in range(6):
                    # a forged X-Forwarded-For changes nothing at the load balancer
                    status, js = call_from(source, lb.port, "%s?m=%s-%s-%d" % (
                        self.path, marker, source, i), "127.0.0.9")
                    seen.setdefault(source, []).append(
                        (status, (js or {}).get("code") if status != 200 else None))
            self.assertEqual(seen["127.0.0.5"], [(429, "900805")] * 6, seen)
            self.assertEqual(seen["127.0.0.6"], [(200, None)] * 6, seen)
            # both gateways refused 127.0.0.5 and served 127.0.0.6, and log
            # them by their own addresses
            for g in self.gws:
                self.assertTrue(wait_for(lambda: sum(1 for e in access_log(g)
                                                     if marker in e["uri"]) >= 4, 5), g.name)
                got = {(e["remote_addr"], e["status"]) for e in access_log(g)
                       if marker in e["uri"]}
                self.assertEqual(got, {("127.0.0.5", 429), ("127.0.0.6", 200)}, g.name)
        finally:
            self.admin(self.cp1).delete("/api/am/admin/v4/throttling/deny-policy/" + cid)


@unittest.skipIf(skip_reason(), skip_reason())
class SplitClusterTest(ClusterCase):
    """`make cluster CLUSTER_ARGS=--split`: the Publisher, Developer Portal
    and Key Manager each on its own node (one gateway, one Traffic Manager
    and one NATS server here). Every REST call goes to the load balancer
    over TLS, which routes it by path to the node that serves it."""

    @classmethod
    def setUpClass(cls):
        cls.start_cluster(split=True, gateways=1, traffic_managers=1, nats=1)

    def test_walkthrough_routed_by_path(self):
        c = self.cluster
        pubnode, dpnode, kmnode = (c.node(n) for n in ("publisher", "devportal", "km"))
        self.assertEqual((pubnode.profile, dpnode.profile, kmnode.profile),
                         ("publisher", "devportal", "key-manager"))
        # each node serves its own component only
        for node, path in ((dpnode, pt.APIS), (kmnode, DP + "/apis"),
                           (pubnode, "/oauth2/token")):
            r = apimtest.Client(node.url, "admin", c.admin_password).get(path)
            self.assertEqual(r.status, 404, (node.name, path, r))
        lb = c.control_plane_https_url
        admin = apimtest.Client(lb, "admin", c.admin_password)
        self.publish_api(admin, ["Unlimited"])
        user, pw = self.sign_up(apimtest.Client(lb))
        _, _, token = self.subscribed_app(apimtest.Client(lb, user, pw), apimtest.Client(lb),
                                          "Unlimited")
        # the token names the load balancer's token endpoint as its issuer
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        self.assertEqual(claims["iss"], lb.replace("127.0.0.1", "localhost") + "/oauth2/token")
        self.wait_served(token)
        status, js, _ = call(c.gateway_https_url, self.path, token)
        self.assertEqual(status, 200, js)
        self.assertEqual(js["path"], "/be/items")
        # the load balancer sent each call to the node of its component
        lines = [json.loads(ln) for ln in open(os.path.join(c.log_dir, "lb-access.log"))]
        by_prefix = {"/api/am/publisher/": pubnode, "/api/am/devportal/": dpnode,
                     "/api/identity/": dpnode, "/oauth2/": kmnode}
        seen = set()
        for e in lines:
            for prefix, node in by_prefix.items():
                if e["uri"].startswith(prefix):
                    self.assertEqual(e["upstream_addr"], "127.0.0.1:%d" % node.port, e)
                    seen.add(prefix)
        self.assertEqual(seen, set(by_prefix))

    def test_z_cluster_stop_from_another_process(self):
        """What `make cluster-stop` does: stop every node from the pids in
        cluster.json (here, of the cluster this test started); twice is fine."""
        c = self.cluster
        ports = [n.port for n in c.nodes.values() if n.port]
        self.assertTrue(all(apimcluster.port_open(p) for p in ports))
        cli = [sys.executable, os.path.join(HERE, "..", "..", "scripts", "apimcluster.py")]
        r = subprocess.run(cli + ["status", "--root", c.root], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count(" running "), len(c.nodes), r.stdout)
        r = subprocess.run(cli + ["stop", "--root", c.root], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "cluster: stopped"), r.stderr)
        self.assertEqual([n.name for n in c.nodes.values() if n.running()], [])
        self.assertEqual([p for p in ports if apimcluster.port_open(p)], [])
        r = subprocess.run(cli + ["stop", "--root", c.root], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "cluster: stopped"), r.stderr)


if __name__ == "__main__":
    unittest.main()
