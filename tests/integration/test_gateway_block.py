"""Blocking conditions at the gateway (the Admin API's deny policies).

GatewayBlockModuleTest: nginx with ngx_http_apim_module and a snapshot file
(no apimd), listening on 127.0.0.1 and [::1], for every condition type: IP
and IPRANGE (IPv4 and IPv6, inverted or not) refuse before any credential
check, API, APPLICATION and USER once the caller is known; disabled and
malformed conditions block nothing.

AllInOneBlockTest: apimd --profile all-in-one; a deny policy added through
the Admin API blocks at the gateway, disabling it (PATCH conditionStatus)
and deleting it lift the block.

TrustedProxyBlockTest: apimd --profile all-in-one with
gateway.trusted_proxies 127.0.0.1 (a load balancer there): a request from
127.0.0.1 is the client's in its X-Forwarded-For for IP and IPRANGE
conditions; a client elsewhere (127.0.0.7, loopback takes any source
address) that sends its own X-Forwarded-For is still itself; the backend
gets the header received with the peer appended.
"""

import http.client
import json
import os
import time
import unittest

import apimtest
import gwtest

DENY = "/api/am/admin/v4/throttling/deny-policies"
DENY1 = "/api/am/admin/v4/throttling/deny-policy/"
MENU = "/pizzashack/1.0.0/menu"

def cond(ctype, value, status=True):
    return {"conditionId": "c-%s-%d" % (ctype, id(value)), "conditionType": ctype,
            "conditionValue": value, "conditionStatus": status}

class GatewayBlockModuleTest(gwtest.PizzaGateway, unittest.TestCase):
    """The module test's snapshot, tokens and calls (gwtest.PizzaGateway)."""

    @classmethod
    def setUpClass(cls):
        cls.setup_pizza("apim-gw-block-")
        cls.base = cls.base_snapshot()
        # App2 (bob) is subscribed too, so that it reaches the backend
        cls.base["subscriptions"].append(
            {"id": "s2", "apiId": gwtest.API_ID, "applicationId": gwtest.APP2_ID,
             "tier": "Gold", "status": "UNBLOCKED"})
        cls.seq = 1
        cls.write(cls.base)
        cls.port = gwtest.free_port()
        cls.start_nginx()

    @classmethod
    def write(cls, snap):
        cls.seq += 1
        snap = dict(snap, seq=cls.seq)
        cls.write_snapshot(snap)

    @classmethod
    def start_nginx(cls):
        cls.nginx = gwtest.start_nginx(cls.tmp, cls.port, gwtest.nginx_conf(
            cls.tmp, gwtest.snapshot_http(cls.tmp, cls.port, hosts=("127.0.0.1", "[::1]")),
            log_format="$remote_addr $status $apim_fault_code"))

    def call(self, path=MENU, token=None, v6=False):
        h = {}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        c = http.client.HTTPConnection("::1" if v6 else "127.0.0.1", self.port,
                                       timeout=10)
        try:
            c.request("GET", path, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def blocks(self, conds, first):
        """Publishes conds; waits (generously) until first() -- a call that
        the new conditions refuse -- answers 429."""
        self.write(dict(self.base, blockConditions=conds))
        deadline = time.time() + 10
        while time.time() < deadline:
            res = first()
            if res[0] == 429:
                return res
            time.sleep(0.05)
        self.fail("the blocking conditions did not take effect: %r" % (res,))

    def setUp(self):
        # every test starts from no condition: both families pass
        self.write(dict(self.base, blockConditions=[]))
        tok = self.token()
        deadline = time.time() + 10
        while time.time() < deadline:
            if (self.call(token=tok)[0] == 200
                    and self.call(token=tok, v6=True)[0] == 200):
                return
            time.sleep(0.05)
        self.fail("no longer passes without blocking conditions")

    def assert_blocked(self, res):
        doc = self.assert_fault(res, 429, "900805")
        self.assertEqual(doc["message"], "Message blocked")

    # -- IP, IPRANGE ---------------------------------------------------------

    def test_ip_blocks_before_credentials(self):
        tok = self.token()
        self.blocks([cond("IP", {"fixedIp": "127.0.0.1", "invert": False})],
                    lambda: self.call(token=tok))
        before = len(gwtest.Backend.seen)
        self.assert_blocked(self.call(token=tok))
        # refused before the credential check: no token is 900805, not 900902
        self.assert_blocked(self.call())
        self.assert_blocked(self.call("/nosuchapi/1.0.0/x"))
        self.assert_blocked(self.call("/pizzashack/1.0.0/health"))
        self.assertEqual(len(gwtest.Backend.seen), before)
        # another address passes
        self.assert_backend(self.call(token=tok, v6=True))
        self.assert_fault(self.call(v6=True), 401, "900902")
        with open(os.path.join(self.tmp, "access.log")) as f:
            self.assertIn("127.0.0.1 429 900805", f.read())

    def test_inverted_ip_blocks_every_other_address(self):
        tok = self.token()
        self.blocks([cond("IP", {"fixedIp": "::1", "invert": True})],
                    lambda: self.call(token=tok))
        self.assert_backend(self.call(token=tok, v6=True))

    def test_ipv4_range(self):
        tok = self.token()
        self.blocks([cond("IPRANGE", {"startingIp": "10.0.0.0",
                                      "endingIp": "10.255.255.255", "invert": False}),
                     cond("IPRANGE", {"startingIp": "127.0.0.0",
                                      "endingIp": "127.0.0.255", "invert": False})],
                    lambda: self.call(token=tok))
        self.assert_backend(self.call(token=tok, v6=True))
        # a range that does not hold the client blocks nothing
        self.blocks([cond("IPRANGE", {"startingIp": "127.0.0.2",
                                      "endingIp": "127.255.255.255", "invert": False}),
                     cond("IPRANGE", {"startingIp": "::1", "endingIp": "::1",
                                      "invert": False})],
                    lambda: self.call(token=tok, v6=True))
        self.assert_backend(self.call(token=tok))

    def test_ipv6_range(self):
        tok = self.token()
        self.blocks([cond("IPRANGE", {"startingIp": "::", "endingIp": "::ff",
                                      "invert": False})],
                    lambda: self.call(token=tok, v6=True))
        # 127.0.0.1 is not in ::-::ff (nor is ::ffff:127.0.0.1)
        self.assert_backend(self.call(token=tok))
        # a range beside ::1 blocks nothing
        self.blocks([cond("IPRANGE", {"startingIp": "::2", "endingIp": "::ffff",
                                      "invert": False}),
                     cond("API", "/root/v1")],
                    lambda: self.call("/root/v1/x"))
        self.assert_backend(self.call(token=tok, v6=True))
        # an inverted range blocks ::1 and every IPv4 client
        self.blocks([cond("IPRANGE", {"startingIp": "2001:db8::",
                                      "endingIp": "2001:db8::ffff", "invert": True})],
                    lambda: self.call(token=tok))
        self.assert_blocked(self.call(token=tok, v6=True))

    def test_inverted_ipv6_range_lets_the_range_through(self):
        tok = self.token()
        self.blocks([cond("IPRANGE", {"startingIp": "::1", "endingIp": "::2",
                                      "invert": True})],
                    lambda: self.call(token=tok))
        self.assert_backend(self.call(token=tok, v6=True))

    # -- API, APPLICATION, USER ---------------------------------------------

    def test_api_context_and_version(self):
        tok = self.token()
        self.blocks([cond("API", "/pizzashack/1.0.0")], lambda: self.call(token=tok))
        # the default version's unversioned path is the same API
        self.assert_blocked(self.call("/pizzashack/menu", token=tok))
        # and so is a resource without authentication
        self.assert_blocked(self.call("/pizzashack/1.0.0/health"))
        # another version is not blocked (App1 is not subscribed to it)
        self.assert_fault(self.call("/pizzashack/2.0.0/menu", token=tok), 403, "900908")
        self.assert_backend(self.call("/root/v1/x"))
        # the caller is checked first: a missing token stays 900902
        self.assert_fault(self.call(), 401, "900902")

    def test_application(self):
        alice = self.token()
        bob = self.token(client=gwtest.OTHER_KEY)
        self.blocks([cond("APPLICATION", "alice:App1")], lambda: self.call(token=alice))
        self.assert_blocked(self.call(token=self.token(client=gwtest.SAND_KEY)))
        self.assert_backend(self.call(token=bob))
        # the owner may carry the tenant domain
        self.blocks([cond("APPLICATION", "bob@carbon.super:App2")],
                    lambda: self.call(token=bob))
        self.assert_backend(self.call(token=alice))
        # owner and name must both match
        self.write(dict(self.base, blockConditions=[cond("APPLICATION", "bob:App1"),
                                                    cond("APPLICATION", "alice:App2"),
                                                    cond("APPLICATION", "alice:App")]))
        deadline = time.time() + 10
        while time.time() < deadline and self.call(token=bob)[0] != 200:
            time.sleep(0.05)
        self.assert_backend(self.call(token=bob))
        self.assert_backend(self.call(token=alice))

    def test_user(self):
        tok = self.token()   # sub: alice
        self.blocks([cond("USER", "alice")], lambda: self.call(token=tok))
        self.assert_backend(self.call("/pizzashack/1.0.0/health"))
        self.blocks([cond("USER", "bob"), cond("USER", "alice@carbon.super")],
                    lambda: self.call(token=tok))
        self.blocks([cond("USER", "alic"), cond("USER", "bob"),
                     cond("API", "/root/v1")], lambda: self.call("/root/v1/x"))
        self.assert_backend(self.call(token=tok))

    # -- enabled ones only ---------------------------------------------------

    def test_disabled_and_bad_conditions_block_nothing(self):
        tok = self.token()
        self.blocks([cond("IP", {"fixedIp": "127.0.0.1"}, status=False),
                     cond("USER", "alice", status=False),
                     cond("API", "/pizzashack/1.0.0", status=False),
                     cond("APPLICATION", "alice:App1", status=False),
                     cond("IP", {"fixedIp": "not-an-ip"}),
                     cond("IPRANGE", {"startingIp": "::9", "endingIp": "::1"}),
                     cond("IPRANGE", {"startingIp": "127.0.0.1"}),
                     cond("USER", ""),
                     cond("NOSUCH", "x"),
                     cond("API", "/root/v1")],
                    lambda: self.call("/root/v1/x"))
        self.assert_backend(self.call(token=tok))
        self.assert_backend(self.call(token=tok, v6=True))

class AllInOneBlockTest(gwtest.AllInOne, unittest.TestCase):

    def wait_status(self, fn, status, timeout=10):
        """Waits (generously) for fn() to answer status: the seconds it took."""
        t0 = time.time()
        last = None
        while time.time() - t0 < timeout:
            last = fn()
            if last[0] == status:
                return time.time() - t0, last
            time.sleep(0.02)
        self.fail("still %r after %ss, wanted %d" % (last, timeout, status))

    def test_deny_policy_blocks_and_lifts(self):
        backend = self.start_backend()
        name, token = self.deploy_subscribe_token({
            "endpoint_type": "http",
            "production_endpoints": {"url": "http://127.0.0.1:%d/be"
                                            % backend.server_port}}, "GwBlock")
        path = "/%s/1.0.0/items" % name.lower()
        auth = {"Authorization": "Bearer " + token}

        def call():
            return gwtest.get(self.gw_port, path, auth)

        self.wait_status(call, 200, 15)
        c = self.srv.client()
        took = {}

        # the API
        r = c.post(DENY, json={"conditionType": "API",
                               "conditionValue": "/%s/1.0.0" % name.lower(),
                               "conditionStatus": True})
        self.assertEqual(r.status, 201, r.text)
        cid = r.json["conditionId"]
        took["api added"], res = self.wait_status(call, 429)
        self.assertEqual(res[1]["code"], "900805", res)
        r = c.patch(DENY1 + cid, json={"conditionStatus": False})
        self.assertEqual(r.status, 200, r.text)
        took["api disabled"], _ = self.wait_status(call, 200)
        r = c.patch(DENY1 + cid, json={"conditionStatus": True})
        self.assertEqual(r.status, 200, r.text)
        took["api enabled"], _ = self.wait_status(call, 429)
        r = c.delete(DENY1 + cid)
        self.assertIn(r.status, (200, 204), r.text)
        took["api deleted"], _ = self.wait_status(call, 200)

        # the user (a client_credentials token's sub: the application's owner)
        r = c.post(DENY, json={"conditionType": "USER", "conditionValue": "admin",
                               "conditionStatus": True})
        self.assertEqual(r.status, 201, r.text)
        cid = r.json["conditionId"]
        took["user added"], res = self.wait_status(call, 429)
        self.assertEqual(res[1]["code"], "900805", res)
        r = c.delete(DENY1 + cid)
        self.assertIn(r.status, (200, 204), r.text)
        took["user deleted"], _ = self.wait_status(call, 200)

        # the client's address
        r = c.post(DENY, json={"conditionType": "IPRANGE",
                               "conditionValue": {"startingIp": "127.0.0.1",
                                                  "endingIp": "127.0.0.9",
                                                  "invert": False},
                               "conditionStatus": True})
        self.assertEqual(r.status, 201, r.text)
        cid = r.json["conditionId"]
        took["iprange added"], res = self.wait_status(
            lambda: gwtest.get(self.gw_port, "/nope/v1/x"), 429)
        self.assertEqual(res[1]["code"], "900805", res)
        r = c.delete(DENY1 + cid)
        self.assertIn(r.status, (200, 204), r.text)
        took["iprange deleted"], _ = self.wait_status(call, 200)
        print("\n  deny policy -> gateway: " + ", ".join(
            "%s %.0f ms" % (k, v * 1000) for k, v in took.items()))


def get_from(source, port, path, headers=None):
    """gwtest.get from the local address source: (status, JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


class TrustedProxyBlockTest(gwtest.AllInOne, unittest.TestCase):

    srv_conf = {"gateway": {"trusted_proxies": "127.0.0.1"}}
    wait_status = AllInOneBlockTest.wait_status

    def deny(self, ctype, value):
        r = self.srv.client().post(DENY, json={"conditionType": ctype, "conditionValue": value,
                                               "conditionStatus": True})
        self.assertEqual(r.status, 201, r.text)
        cid = r.json["conditionId"]
        self.addCleanup(lambda: self.srv.client().delete(DENY1 + cid))
        return cid

    def test_rendered_and_checked(self):
        conf = open(os.path.join(self.srv.home, "gateway", "nginx.conf")).read()
        self.assertIn("set_real_ip_from 127.0.0.1;", conf)
        self.assertIn("real_ip_recursive on;", conf)
        # anything but addresses and CIDR ranges is refused before nginx
        # sees it (the value becomes nginx.conf text)
        for bad in ("127.0.0.1; allow all", "10.0.0.0/33", "example.com"):
            g = gwtest.GatewayProc({"gateway": {"trusted_proxies": bad}})
            self.addCleanup(g.close)
            r = apimtest.run_apimd(["--profile", "gateway", "--config", g.conf_path],
                                   timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stderr)
            self.assertIn("gateway.trusted_proxies", r.stderr)
            self.assertNotIn("ready in", r.stdout)

    def test_client_address_from_the_trusted_proxy_only(self):
        backend = self.start_backend()
        name, token = self.deploy_subscribe_token({
            "endpoint_type": "http",
            "production_endpoints": {"url": "http://127.0.0.1:%d/be"
                                            % backend.server_port}}, "GwTrust")
        path = "/%s/1.0.0/items" % name.lower()

        def call(source, xff=None):
            h = {"Authorization": "Bearer " + token}
            if xff is not None:
                h["X-Forwarded-For"] = xff
            return get_from(source, self.gw_port, path, h)

        self.wait_status(lambda: call("127.0.0.1"), 200, 15)
        # the backend: what was received, then the peer
        self.assertEqual(call("127.0.0.1")[1]["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(call("127.0.0.1", "10.1.2.3")[1]["x-forwarded-for"],
                         "10.1.2.3, 127.0.0.1")
        self.assertEqual(call("127.0.0.7", "10.1.2.3")[1]["x-forwarded-for"],
                         "10.1.2.3, 127.0.0.7")

        # IP: the address the trusted proxy names is blocked ...
        cid = self.deny("IP", {"fixedIp": "10.1.2.3", "invert": False})
        _, res = self.wait_status(lambda: call("127.0.0.1", "10.1.2.3"), 429)
        self.assertEqual(res[1]["code"], "900805", res)
        # ... also as the rightmost untrusted address of a chain (the
        # proxy's own address after it is skipped), not a forged one left
        status, js = call("127.0.0.1", "10.1.2.3, 127.0.0.1")
        self.assertEqual((status, js["code"]), (429, "900805"), js)
        self.assertEqual(call("127.0.0.1", "10.1.2.3, 10.9.9.9")[0], 200)
        # the proxy itself and other clients pass
        self.assertEqual(call("127.0.0.1")[0], 200)
        self.assertEqual(call("127.0.0.1", "10.1.2.4")[0], 200)
        # an untrusted client forging the header is not 10.1.2.3
        self.assertEqual(call("127.0.0.7", "10.1.2.3")[0], 200)
        self.srv.client().delete(DENY1 + cid)
        self.wait_status(lambda: call("127.0.0.1", "10.1.2.3"), 200)

        # IPRANGE likewise
        cid = self.deny("IPRANGE", {"startingIp": "10.1.0.0", "endingIp": "10.1.255.255",
                                    "invert": False})
        _, res = self.wait_status(lambda: call("127.0.0.1", "10.1.200.9"), 429)
        self.assertEqual(res[1]["code"], "900805", res)
        self.assertEqual(call("127.0.0.1", "10.2.0.1")[0], 200)
        self.assertEqual(call("127.0.0.7", "10.1.200.9")[0], 200)
        self.srv.client().delete(DENY1 + cid)
        self.wait_status(lambda: call("127.0.0.1", "10.1.200.9"), 200)

        # nor does a forged header get a blocked untrusted client through
        self.deny("IP", {"fixedIp": "127.0.0.7", "invert": False})
        _, res = self.wait_status(lambda: call("127.0.0.7", "10.2.0.1"), 429)
        self.assertEqual(res[1]["code"], "900805", res)
        self.assertEqual(call("127.0.0.7")[0], 429)
        self.assertEqual(call("127.0.0.1", "10.2.0.1")[0], 200)
        # and a trusted proxy forwarding for it does not launder it
        self.assertEqual(call("127.0.0.1", "127.0.0.7")[0], 429)


if __name__ == "__main__":
    unittest.main()
