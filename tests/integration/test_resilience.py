"""Resilience of apimd (issue 2): HTTPS on the control plane, two nodes
starting at the same instant on the same PostgreSQL databases, and the
PostgreSQL server restarting or going away under a running apimd.

The database-restart tests run on a PostgreSQL cluster of their own,
started here with run.py's ThrowawayPostgres: the cluster of run.py is
shared by the test modules running side by side, and restarting it would
break them."""

import base64
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import unittest
import urllib.request

import apimtest
import gwtest
import run  # tests/integration/run.py: ThrowawayPostgres, start_watchdog
import test_publisher as pt

LIVE = "/health/live"
CRED = "resil-" + base64.b32encode(os.urandom(10)).decode().lower()
READY = "/health/ready"
APIS = pt.APIS
USERS = "/scim2/Users"
# A request while the database is away answers within this many seconds
# (database.busy_timeout_ms is 1000 here): never a hang.
MAX_ANSWER_S = 10.0
PG_ONLY_NODES = ("PostgreSQL only: nodes of one deployment share a database server "
                 "(SQLite files are local to one node)")
PG_ONLY_RESTART = ("PostgreSQL only: restarts the database server under apimd "
                   "(SQLite has no server)")


def assert_unavailable(tc, r, what=""):
    """r is the reference error body of a 503."""
    tc.assertEqual(r.status, 503, "%s %r" % (what, r))
    body = r.json
    tc.assertIsInstance(body, dict, r)
    tc.assertEqual(body.get("code"), 503, r)
    tc.assertEqual(body.get("message"), "Service Unavailable", r)
    tc.assertIn("unavailable", body.get("description", ""), r)
    tc.assertEqual(body.get("moreInfo"), "", r)
    tc.assertEqual(body.get("error"), [], r)


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    r = fn(*args, **kwargs)
    return r, time.monotonic() - t0


def sql_rows(url, sql):
    """Rows of one query as lists of text (psql unaligned, tab-separated)."""
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                        "-d", url, "-c", sql], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("psql failed on %r: %s" % (sql, r.stderr.strip()))
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln]


def count_by_name(client, name):
    r = client.get(APIS, query={"query": 'name:"%s"' % name})
    if r.status != 200:
        raise AssertionError("listing APIs named %s: %r" % (name, r))
    return r.json["count"]


def make_cert(folder):
    """A self-signed EC certificate for 127.0.0.1 made with the openssl
    CLI: (cert path, key path)."""
    os.makedirs(folder, exist_ok=True)
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl req failed: %s" % r.stdout)
    return cert, key


def connection_refused(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


# -- HTTPS ----------------------------------------------------------------------

class TlsTest(unittest.TestCase):
    """http.tls_cert/http.tls_key: the control plane speaks HTTPS only."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.ApimServer().prepare()
        cls.cert, cls.key = make_cert(os.path.join(cls.srv.home, "tls"))
        cls.srv.update_conf({"http": {"tls_cert": cls.cert, "tls_key": cls.key}})
        try:
            cls.srv.start()
        except BaseException:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop()
        finally:
            cls.srv.cleanup()

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.srv.port, path)

    def test_banner_announces_https(self):
        self.assertTrue(self.srv.base_url.startswith("https://"))
        self.assertIn("control plane  https://", self.srv.stdout_this_run())

    def test_live_over_https_with_the_certificate_verified(self):
        # Full verification (chain and host name) against the generated
        # certificate: the server presents exactly that certificate.
        ctx = ssl.create_default_context(cafile=self.cert)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=ctx))
        with opener.open(self.url(LIVE), timeout=10) as resp:
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.read(), b'{"status":"UP"}')
        with socket.create_connection(("127.0.0.1", self.srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                with open(self.cert) as f:
                    self.assertEqual(tls.getpeercert(binary_form=True),
                                     ssl.PEM_cert_to_DER_cert(f.read()))

    def test_api_calls_with_bodies_over_https(self):
        c = self.srv.client()
        self.assertEqual(c.get(READY).status, 200)
        name = pt.uniq("Tls")
        r = c.post(APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)
        r = c.get(APIS + "/" + r.json["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["name"], name)
        self.assertEqual(self.srv.client(None).get(APIS).status, 401)

    def test_plain_http_to_the_https_port_gets_no_http_answer(self):
        with socket.create_connection(("127.0.0.1", self.srv.port), timeout=10) as s:
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            t0 = time.monotonic()
            try:
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("plain HTTP to the HTTPS port: no answer and no close in 10 s")
            self.assertLess(time.monotonic() - t0, MAX_ANSWER_S)
        self.assertFalse(data.startswith(b"HTTP/"), data[:200])
        self.assertNotIn(b'"status"', data)
        # The harness client over plain http fails too ...
        with self.assertRaises(OSError):
            apimtest.Client("http://127.0.0.1:%d" % self.srv.port, timeout=10).get(LIVE)
        # ... and the server is unharmed.
        self.assertEqual(self.srv.client(None).get(LIVE).status, 200)


class TlsConfigErrorTest(unittest.TestCase):
    """Unusable TLS files stop apimd at start-up with a message."""

    def assert_refused(self, choose, *needles, third_party_leaks=False):
        """choose(home, good_cert, good_key) -> (tls_cert, tls_key); the
        start must fail and stderr name every needle(home)."""
        srv = apimtest.ApimServer().prepare()
        try:
            if third_party_leaks:
                # libmicrohttpd 0.9.75 with GnuTLS 3.7.9 leaks the parsed
                # certificate when MHD_start_daemon fails on a malformed
                # one (reproduced with MHD alone); LeakSanitizer reports it
                # at apimd's exit. Ignore leaks inside GnuTLS only.
                supp = os.path.join(srv.home, "lsan.supp")
                with open(supp, "w") as f:
                    f.write("leak:libgnutls.so\nleak:libtasn1.so\n")
                old = os.environ.get("LSAN_OPTIONS")
                srv.env["LSAN_OPTIONS"] = (old + ":" if old else "") + "suppressions=" + supp
            cert, key = make_cert(os.path.join(srv.home, "tls"))
            tls_cert, tls_key = choose(srv.home, cert, key)
            srv.update_conf({"http": {"tls_cert": tls_cert, "tls_key": tls_key}})
            srv.start(wait=False)
            rc = srv.wait_exit(30)
            self.assertNotEqual(rc, 0, srv.stderr_tail())
            err = srv.stderr_this_run()
            self.assertIn("TLS", err)
            for n in needles:
                self.assertIn(n(srv.home), err)
            self.assertNotIn("ready in", srv.stdout_this_run())
            self.assertTrue(connection_refused(srv.port))
        finally:
            srv.cleanup()

    def test_missing_certificate_file(self):
        missing = lambda home: os.path.join(home, "tls", "missing-cert.pem")  # noqa: E731
        self.assert_refused(lambda home, cert, key: (missing(home), key), missing)

    def test_missing_key_file(self):
        missing = lambda home: os.path.join(home, "tls", "missing-key.pem")  # noqa: E731
        self.assert_refused(lambda home, cert, key: (cert, missing(home)), missing)

    def test_certificate_file_that_is_not_a_certificate(self):
        def garbage(home, cert, key):
            with open(cert, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
            return cert, key
        self.assert_refused(garbage, third_party_leaks=True)

    def test_key_of_another_certificate(self):
        def mismatch(home, cert, key):
            _, other_key = make_cert(os.path.join(home, "other"))
            return cert, other_key
        self.assert_refused(mismatch)


# -- two nodes at once ------------------------------------------------------------

SCHEMA_LINE = re.compile(r"\[db\] (\w+): (\S+) schema now at version (\d+)$", re.M)
GENERATED = re.compile(r"^\s*admin password (\S+)\s+\(generated", re.M)


@unittest.skipUnless(apimtest.is_postgresql(), PG_ONLY_NODES)
class TwoNodesTest(unittest.TestCase):
    """Two apimd started at the same instant on the same two databases."""

    ROUNDS = 2  # the race is not the same every time: a few fresh pairs

    @classmethod
    def setUpClass(cls):
        # With a Key Manager, the nodes of one deployment share its master
        # key (it encrypts the signing keys in shareddb).
        docs = apimtest.run_apimd(["--config-docs"]).stdout
        cls.key_manager = "APIM_KEYMANAGER_MASTER_KEY" in docs

    def start_pair(self):
        conf = {}
        if self.key_manager:
            conf = {"keymanager": {"master_key": base64.b64encode(os.urandom(32)).decode()}}
        a = apimtest.ApimServer(conf=conf)
        b = apimtest.ApimServer(conf=conf, databases_from=a)
        a.prepare()
        b.prepare()
        for srv in (a, b):
            self.addCleanup(srv.cleanup)
            self.addCleanup(srv.stop)
        self.assertEqual((b.apimgtdb_url, b.shareddb_url), (a.apimgtdb_url, a.shareddb_url))
        a.start(wait=False)
        b.start(wait=False)
        a.wait_live()
        b.wait_live()
        return a, b

    def test_two_nodes_starting_at_once(self):
        for rnd in range(self.ROUNDS):
            with self.subTest(round=rnd):
                a, b = self.start_pair()
                try:
                    self.check_pair(a, b)
                finally:
                    try:
                        a.stop()
                    finally:
                        b.stop()

    def check_pair(self, a, b):
        for srv in (a, b):
            self.assertEqual(srv.client(None).get(READY).status, 200, srv.stderr_tail())

        # One admin account, created by exactly one node.
        self.assertEqual(sql_rows(a.shareddb_url, "SELECT username FROM um_user"), [["admin"]])
        printed = [GENERATED.search(s.stdout_this_run()) for s in (a, b)]
        self.assertEqual(sum(1 for m in printed if m), 1,
                         "generated password printed by %d nodes:\n%s\n---\n%s" % (
                             sum(1 for m in printed if m), a.stdout_this_run(),
                             b.stdout_this_run()))
        maker, other = (a, b) if printed[0] else (b, a)
        password = (printed[0] or printed[1]).group(1)
        with open(os.path.join(maker.home, "admin-password")) as f:
            self.assertEqual(f.read().strip(), password)
        self.assertFalse(os.path.exists(os.path.join(other.home, "admin-password")))
        self.assertNotIn("generated;", other.stdout_this_run())
        self.assertIn("admin user     admin", other.stdout_this_run())
        # The other node uses the same account with that password.
        for srv in (a, b):
            self.assertEqual(srv.client("admin", password).get(APIS).status, 200)
            self.assertEqual(srv.client("admin", password + "x").get(APIS).status, 401)

        # Every migration step ran once, on one node, and is recorded once.
        logged = {}
        for srv in (a, b):
            for db, module, version in SCHEMA_LINE.findall(srv.stderr_this_run()):
                logged.setdefault((db, module), []).append(int(version))
        recorded = {}
        for db, url in (("apimgtdb", a.apimgtdb_url), ("shareddb", a.shareddb_url)):
            rows = sql_rows(url, "SELECT module, version FROM apim_schema ORDER BY module")
            modules = [m for m, _ in rows]
            self.assertEqual(len(modules), len(set(modules)), rows)
            for module, version in rows:
                recorded[(db, module)] = int(version)
        self.assertTrue(recorded)
        self.assertEqual(set(logged), set(recorded))
        for key, version in recorded.items():
            self.assertEqual(sorted(logged[key]), list(range(1, version + 1)),
                             "%s %s: steps applied %s" % (key[0], key[1], logged[key]))

        if self.key_manager:
            # One set of signing keys for the deployment, not one per node.
            jwks = [srv.client(None).get("/oauth2/jwks") for srv in (a, b)]
            for r in jwks:
                self.assertEqual(r.status, 200, r)
            self.assertTrue(jwks[0].json["keys"], jwks[0])
            self.assertEqual(jwks[0].json, jwks[1].json)

        # What one node writes, the other reads.
        for writer, reader in ((a, b), (b, a)):
            name = pt.uniq("Node")
            r = writer.client("admin", password).post(APIS, json=pt.api_body(name))
            self.assertEqual(r.status, 201, r)
            got = reader.client("admin", password).get(APIS + "/" + r.json["id"])
            self.assertEqual(got.status, 200, got)
            self.assertEqual(got.json["name"], name)
            self.assertEqual(count_by_name(reader.client("admin", password), name), 1)


# -- the database server going away -------------------------------------------------

@unittest.skipUnless(apimtest.is_postgresql(), PG_ONLY_RESTART)
class DatabaseRestartTest(unittest.TestCase):
    """PostgreSQL restarts or stops under a running apimd (a private
    cluster: see the module docstring)."""

    THREADS = 4

    @classmethod
    def setUpClass(cls):
        cls.pg = run.ThrowawayPostgres()
        cls.pg.prepare()
        # Stops the cluster and removes its folder should this process be
        # killed before tearDownClass.
        cls.watchdog = run.start_watchdog(cls.pg.dir, cls.pg)
        cls.srv = None
        try:
            base = cls.pg.start()
            cls.pg_down = False
            urls = {}
            for db in ("apimgt", "shared"):
                apimtest.psql('CREATE DATABASE "%s"' % db, url=base)
                urls[db] = apimtest.pg_url(db, base)
            cls.apimgt_url = urls["apimgt"]
            cls.shared_url = urls["shared"]
            cls.base_url = base
            cls.srv = apimtest.ApimServer(conf={
                "server": {"threads": cls.THREADS},
                "database": {"apimgtdb_url": urls["apimgt"], "shareddb_url": urls["shared"],
                             "busy_timeout_ms": 1000}})
            cls.srv.start()
            cls.bob_password = "Bob-Passw0rd!" + secrets.token_hex(2)
            cls.srv.create_user("bob", cls.bob_password, ["Internal/creator"])
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    @classmethod
    def _teardown(cls):
        try:
            if cls.srv is not None:
                try:
                    cls.srv.stop()
                finally:
                    cls.srv.cleanup()
        finally:
            cls.pg.stop()
            cls.watchdog.kill()
            cls.watchdog.wait()

    def setUp(self):
        self.ensure_pg_up()
        self.c = self.srv.client(timeout=30)
        # Warm: the admin's credentials are in apimd's auth cache, so the
        # requests below reach the Publisher even without a user store.
        self.assertEqual(self.c.get(APIS).status, 200)

    def tearDown(self):
        self.ensure_pg_up()

    @classmethod
    def ensure_pg_up(cls):
        """Whatever a test did: the cluster runs again afterwards."""
        if cls.pg_down:
            cls.pg.ctl("start")
            cls.pg_down = False

    def pg_stop(self):
        self.__class__.pg_down = True
        self.pg.ctl("stop", mode="fast")

    def pg_start(self):
        self.pg.ctl("start")
        self.__class__.pg_down = False

    def wait_ready(self, within):
        anon = self.srv.client(None, timeout=10)
        t0 = time.monotonic()
        r = None
        while time.monotonic() - t0 < within:
            r = anon.get(READY)
            if r.status == 200:
                return time.monotonic() - t0
            time.sleep(0.1)
        self.fail("/health/ready not 200 within %.0f s of the database coming back: %r"
                  % (within, r))

    def assert_no_api(self, name):
        self.assertEqual(count_by_name(self.c, name), 0)
        self.assertEqual(sql_rows(self.apimgt_url,
                                  "SELECT count(*) FROM am_api WHERE name = '%s'" % name),
                         [["0"]])

    def metric(self, name, db):
        m = re.search(r'^%s\{db="%s"\} (\d+)$' % (name, db), self.srv.metrics(), re.M)
        self.assertIsNotNone(m, "%s{db=%s} not in /metrics" % (name, db))
        return int(m.group(1))

    def warm_every_thread(self):
        """Requests until every pool thread holds an open connection to
        both databases (the main thread keeps its own from start-up)."""
        anon = self.srv.client(None)
        for i in range(50 * self.THREADS):
            if all(self.metric("apim_db_connections_open", db) >= self.THREADS + 1
                   for db in ("apimgtdb", "shareddb")):
                return
            self.assertEqual(anon.get(READY).status, 200)  # pings both databases
        self.fail("the pool threads did not all connect: %s" % self.srv.metrics())

    def test_a1_fast_restart_is_transparent(self):
        """Every connection apimd holds dies with the restart; the next
        request on each thread reconnects and succeeds, no 503."""
        self.warm_every_thread()
        before = {db: self.metric("apim_db_reconnects_total", db)
                  for db in ("apimgtdb", "shareddb")}
        old_pid = self.pg.pid
        self.pg.ctl("restart", mode="fast")
        self.assertNotEqual(self.pg.pid, old_pid, "the postmaster did not restart")
        for i in range(3 * self.THREADS):
            r, secs = timed(self.c.get, APIS, query={"limit": 1})
            self.assertEqual(r.status, 200, r)
            self.assertLess(secs, MAX_ANSWER_S)
        name = pt.uniq("AfterRestart")
        r = self.c.post(APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.c.get(APIS + "/" + r.json["id"]).status, 200)
        self.assertEqual(count_by_name(self.c, name), 1)
        for i in range(3 * self.THREADS):
            r = self.c.get(USERS, query={"filter": 'userName eq "bob"'})  # shareddb
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["totalResults"], 1, r)
        self.assertEqual(self.srv.client(None).get(READY).status, 200)
        for db in ("apimgtdb", "shareddb"):
            self.assertGreater(self.metric("apim_db_reconnects_total", db), before[db], db)
        self.assertTrue(self.srv.running())

    def test_a3_idle_connections_ended_by_the_server_then_single_writes(self):
        """The server ends every idle session of apimd (as a restart or an
        idle timeout does); then writes that are one statement each (a
        document: one INSERT, no transaction) on every thread: each
        succeeds once, the dead connection noticed before the statement
        was sent."""
        self.warm_every_thread()
        r = self.c.post(APIS, json=pt.api_body(pt.uniq("IdleCut")))
        self.assertEqual(r.status, 201, r)
        api_id = r.json["id"]
        before = self.metric("apim_db_reconnects_total", "shareddb")
        ended = sql_rows(self.base_url, "SELECT pid, pg_terminate_backend(pid) FROM "
                                        "pg_stat_activity WHERE datname = 'shared' "
                                        "AND pid <> pg_backend_pid()")
        self.assertGreaterEqual(len(ended), 1)
        # pg_terminate_backend only signals: wait until those sessions are
        # gone (their sockets closed), as after a restart; a write sent
        # before a session ends is lost with it and rightly answers 503
        pids = ",".join(row[0] for row in ended)
        deadline = time.monotonic() + 10
        while sql_rows(self.base_url, "SELECT pid FROM pg_stat_activity WHERE pid IN (%s)"
                                      % pids):
            self.assertLess(time.monotonic(), deadline, "sessions %s still there" % pids)
            time.sleep(0.02)
        names = ["Doc%d" % i for i in range(3 * self.THREADS)]
        for name in names:
            r = self.c.post(APIS + "/%s/documents" % api_id,
                            json={"name": name, "type": "HOWTO", "sourceType": "INLINE",
                                  "inlineContent": "x"})
            self.assertEqual(r.status, 201, r)
        # the writes met the ended connections and replaced them
        self.assertGreater(self.metric("apim_db_reconnects_total", "shareddb"), before)
        rows = sql_rows(self.shared_url, "SELECT name FROM am_api_document WHERE api_id = '%s' "
                                         "ORDER BY name" % api_id)
        self.assertEqual([r[0] for r in rows], sorted(names))

    def test_a2_requests_during_a_restart_get_clean_answers(self):
        """Requests keep coming while the server restarts: each gets an
        answer (2xx, or the 503 error body while it is down) within
        seconds, never a 500 or a hang."""
        seen, stop = [], threading.Event()

        def probe(path, query):
            c = self.srv.client(timeout=30)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.get(path, query=query)
                except Exception as e:  # noqa: BLE001 - reported below
                    seen.append((None, repr(e), time.monotonic() - t0))
                    continue
                seen.append((r.status, r, time.monotonic() - t0))

        probes = [threading.Thread(target=probe, args=args, daemon=True)
                  for args in ((APIS, {"limit": 1}), (USERS, {"count": 1}),
                               (READY, None))]
        for t in probes:
            t.start()
        try:
            time.sleep(0.2)
            self.pg.ctl("restart", mode="fast")
            time.sleep(0.5)
        finally:
            stop.set()
            for t in probes:
                t.join(MAX_ANSWER_S + 30)
        self.assertFalse(any(t.is_alive() for t in probes), "a request hung through the restart")
        self.assertTrue(seen)
        for status, r, secs in seen:
            self.assertIn(status, (200, 503), r)
            if status == 503 and r.url.endswith(READY):
                self.assertEqual(r.json["status"], "DOWN", r)
            elif status == 503:
                assert_unavailable(self, r, "during the restart")
            self.assertLess(secs, MAX_ANSWER_S, r)
        # the last answers came after the restart
        self.assertEqual([st for st, r, sec in seen[-3:]], [200, 200, 200], seen[-3:])
        self.assertTrue(self.srv.running())

    def test_b_database_down_answers_503_then_recovers(self):
        name = pt.uniq("WhileDown")
        self.pg_stop()
        r, secs = timed(self.c.post, APIS, json=pt.api_body(name))
        assert_unavailable(self, r, "POST while the database is down")
        self.assertLess(secs, MAX_ANSWER_S)
        r, secs = timed(self.c.get, APIS)
        assert_unavailable(self, r, "GET while the database is down")
        self.assertLess(secs, MAX_ANSWER_S)
        # A login that needs the user store: 503, not "invalid credentials".
        r, secs = timed(self.srv.client("bob", self.bob_password, timeout=30).get, APIS)
        assert_unavailable(self, r, "login while the database is down")
        self.assertLess(secs, MAX_ANSWER_S)
        anon = self.srv.client(None, timeout=30)
        r, secs = timed(anon.get, READY)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json, {"status": "DOWN",
                                  "checks": {"apimgtdb": "DOWN", "shareddb": "DOWN"}})
        self.assertLess(secs, MAX_ANSWER_S)
        self.assertEqual(anon.get(LIVE).status, 200)

        self.pg_start()
        self.assertLess(self.wait_ready(within=10), 5.0)
        self.assert_no_api(name)  # the failed POST left nothing behind
        r = self.c.post(APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(count_by_name(self.c, name), 1)
        r = self.srv.client("bob", self.bob_password).get(APIS)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(self.srv.running())

    def test_c1_database_stopping_inside_a_transaction(self):
        """The database stops while a create is half done (its am_api row
        written, its tag being inserted): 503, and no trace of it."""
        self.cut_off_a_create(self.pg_stop, self.pg_start)

    def test_c2_database_restarting_inside_a_transaction(self):
        """Same with a fast restart: the database is back at once, but the
        transaction died with the connection. The reconnect must not carry
        on with the rest of it (that would answer 201 for an API that is
        not there): 503, and no trace of it."""
        self.cut_off_a_create(lambda: self.pg.ctl("restart", mode="fast"), None)

    def stall_tag(self, tag):
        """The first insert of tag into am_api_tag sleeps (inside the
        inserting transaction) until the database server stops it; later
        ones do not (a sequence is not rolled back)."""
        self.stall_insert("am_api_tag", "NEW.tag = '%s'" % tag)

    def stall_insert(self, table, condition, event="INSERT"):
        """The first insert (or event: DELETE, condition on OLD) into table
        whose row meets condition sleeps, as stall_tag."""
        row = "OLD" if event == "DELETE" else "NEW"
        apimtest.psql("CREATE SEQUENCE apimtest_stall_seq", url=self.apimgt_url)
        apimtest.psql("CREATE FUNCTION apimtest_stall() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$BEGIN IF %s AND nextval('apimtest_stall_seq') = 1 "
                      "THEN PERFORM pg_sleep(30); END IF; RETURN %s; END$$" % (condition, row),
                      url=self.apimgt_url)
        apimtest.psql("CREATE TRIGGER apimtest_stall BEFORE %s ON %s FOR EACH ROW "
                      "EXECUTE FUNCTION apimtest_stall()" % (event, table), url=self.apimgt_url)
        self.stalled = table
        self.addCleanup(self.unstall_tag)

    def unstall_tag(self):
        self.ensure_pg_up()
        apimtest.psql("DROP TRIGGER IF EXISTS apimtest_stall ON %s; "
                      "DROP FUNCTION IF EXISTS apimtest_stall(); "
                      "DROP SEQUENCE IF EXISTS apimtest_stall_seq" % self.stalled,
                      url=self.apimgt_url)

    def test_c4_database_stopping_while_an_application_is_deleted(self):
        """Deleting an application removes its subscriptions, key mappings
        and the OAuth clients made for it: the database stops while the
        client is being deleted. 503, and the application is whole
        afterwards (no usable client left behind by a half delete); then
        the delete removes everything."""
        self.cut_off_client_delete(lambda app_id, mapping: ("DELETE", ""), [0, 0, 0])

    def test_c5_database_stopping_while_keys_are_cleaned_up(self):
        """The same for .../oauth-keys/{id}/clean-up: the mapping and its
        OAuth client go together or not at all."""
        self.cut_off_client_delete(
            lambda app_id, mapping: ("POST", "/oauth-keys/%s/clean-up" % mapping), [1, 0, 0])

    def cut_off_client_delete(self, request, after):
        """request(app id, key mapping id) -> (method, path under the
        application): a write that deletes the application's OAuth client,
        cut off there by the database stopping; after: the rows of
        (application, key mapping, OAuth client) once it is redone."""
        dp = "/api/am/devportal/v3"
        r = self.c.post(dp + "/applications", json={"name": pt.uniq("HalfDelete"),
                                                    "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app_id = r.json["applicationId"]
        r = self.c.post(dp + "/applications/%s/generate-keys" % app_id, json={
            "keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "", "scopes": [], "validityTime": 3600})
        self.assertEqual(r.status, 200, r)
        method, sub = request(app_id, r.json["keyMappingId"])
        path = dp + "/applications/" + app_id + sub
        send = (lambda: self.c.delete(path)) if method == "DELETE" else (
            lambda: self.c.post(path))

        def stored():
            return [int(sql_rows(self.apimgt_url, "SELECT count(*) FROM %s WHERE %s = '%s'"
                                 % (table, col, app_id))[0][0])
                    for table, col in (("am_application", "id"),
                                       ("am_application_key_mapping", "application_id"),
                                       ("km_oauth_client", "app_id"))]
        self.assertEqual(stored(), [1, 1, 1])
        self.stall_insert("km_oauth_client", "OLD.app_id = '%s'" % app_id, event="DELETE")
        result = {}

        def cut_off():
            result["r"] = send()

        t = threading.Thread(target=cut_off, daemon=True)
        t.start()
        try:
            self.wait_for(lambda: sql_rows(self.apimgt_url, (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND query LIKE 'DELETE FROM km_oauth_client%'")) == [["1"]],
                "apimd's write to reach the OAuth client")
            self.pg_stop()
        finally:
            t.join(MAX_ANSWER_S + 30)
        self.assertFalse(t.is_alive(), "the write hung after the database went away")
        assert_unavailable(self, result["r"], "%s %s cut off" % (method, path))
        self.pg_start()
        self.wait_ready(within=10)
        self.assertEqual(stored(), [1, 1, 1])
        r = self.c.get(dp + "/applications/%s/oauth-keys" % app_id)
        self.assertEqual((r.status, r.json["count"]), (200, 1), r)
        self.unstall_tag()
        r = send()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stored(), after)

    def test_c3_database_stopping_between_client_and_keys_mapping(self):
        """Generating keys stores an OAuth client and the application's key
        mapping: the database stops after the client row, while the mapping
        is being inserted. 503, and neither is there afterwards (no OAuth
        client without its mapping); then the keys are generated."""
        dp = "/api/am/devportal/v3"
        r = self.c.post(dp + "/applications", json={"name": pt.uniq("HalfKeys"),
                                                    "throttlingPolicy": "Unlimited"})
        self.assertEqual(r.status, 201, r)
        app_id = r.json["applicationId"]
        self.stall_insert("am_application_key_mapping", "NEW.application_id = '%s'" % app_id)
        body = {"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"],
                "callbackUrl": "", "scopes": [], "validityTime": 3600}
        result = {}

        def generate():
            result["r"] = self.c.post(dp + "/applications/%s/generate-keys" % app_id, json=body)

        t = threading.Thread(target=generate, daemon=True)
        t.start()
        try:
            self.wait_for(lambda: sql_rows(self.apimgt_url, (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND query LIKE 'INSERT INTO am_application_key_mapping%'")) == [["1"]],
                "apimd's key generation to reach the mapping")
            self.pg_stop()
        finally:
            t.join(MAX_ANSWER_S + 30)
        self.assertFalse(t.is_alive(), "key generation hung after the database went away")
        assert_unavailable(self, result["r"], "keys cut off by the database going away")
        self.pg_start()
        self.wait_ready(within=10)

        def stored():
            return [int(sql_rows(self.apimgt_url, "SELECT count(*) FROM %s WHERE %s = '%s'"
                                 % (table, col, app_id))[0][0])
                    for table, col in (("km_oauth_client", "app_id"),
                                       ("am_application_key_mapping", "application_id"))]
        self.assertEqual(stored(), [0, 0])
        r = self.c.get(dp + "/applications/%s/oauth-keys" % app_id)
        self.assertEqual((r.status, r.json["count"]), (200, 0), r)
        self.unstall_tag()
        r = self.c.post(dp + "/applications/%s/generate-keys" % app_id, json=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(stored(), [1, 1])

    def cut_off_a_create(self, cut, restore):
        name = pt.uniq("HalfDone")
        tag = pt.uniq("stall")
        self.stall_tag(tag)
        result = {}

        def create():
            result["r"], result["secs"] = timed(self.c.post, APIS,
                                                json=pt.api_body(name, tags=[tag]))

        t = threading.Thread(target=create, daemon=True)
        t.start()
        try:
            # apimd's transaction has inserted the am_api row and sleeps on the tag
            self.wait_for(lambda: sql_rows(self.apimgt_url, (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND query LIKE 'INSERT INTO am_api_tag%'")) == [["1"]],
                "apimd's create to reach the tag")
            t0 = time.monotonic()
            cut()
        finally:
            t.join(MAX_ANSWER_S + 30)
        self.assertFalse(t.is_alive(), "the create hung after the database went away")
        assert_unavailable(self, result["r"], "create cut off by the database going away")
        self.assertLess(time.monotonic() - t0, MAX_ANSWER_S)

        if restore is not None:
            restore()
        self.wait_ready(within=10)
        self.assert_no_api(name)
        # Every thread works again, the one that lost its transaction too.
        for i in range(3 * self.THREADS):
            r = self.c.get(APIS, query={"limit": 1})
            self.assertEqual(r.status, 200, r)
        self.unstall_tag()
        r = self.c.post(APIS, json=pt.api_body(name, tags=[tag]))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.c.get(APIS + "/" + r.json["id"]).json["tags"], [tag])
        self.assertEqual(count_by_name(self.c, name), 1)

    # -- one of the two databases away (writes that span both) ----------------

    def shareddb_away(self):
        """shareddb refuses connections and loses those it had; apimgtdb
        (same server) stays up."""
        apimtest.psql('ALTER DATABASE "shared" WITH ALLOW_CONNECTIONS false', url=self.base_url)
        self.addCleanup(self.shareddb_back)
        apimtest.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = 'shared' AND pid <> pg_backend_pid()", url=self.base_url)

    def shareddb_back(self):
        self.ensure_pg_up()
        apimtest.psql('ALTER DATABASE "shared" WITH ALLOW_CONNECTIONS true', url=self.base_url)

    def api_with_document(self, name):
        r = self.c.post(APIS, json=pt.api_body(name))
        self.assertEqual(r.status, 201, r)
        api = r.json
        r = self.c.post(APIS + "/%s/documents" % api["id"],
                        json={"name": "Guide", "type": "HOWTO", "sourceType": "INLINE",
                              "inlineContent": "hello"})
        self.assertEqual(r.status, 201, r)
        return api

    def stored(self, api_id):
        """(rows of the API in apimgtdb, rows of its documents in shareddb)."""
        return (int(sql_rows(self.apimgt_url,
                             "SELECT count(*) FROM am_api WHERE id = '%s'" % api_id)[0][0]),
                int(sql_rows(self.shared_url, "SELECT count(*) FROM am_api_document "
                                              "WHERE api_id = '%s'" % api_id)[0][0]))

    def test_d1_api_delete_with_shareddb_away_is_all_or_nothing(self):
        """Deleting an API removes its row (apimgtdb) and its documents
        (shareddb): with shareddb away the delete answers 503 and the API
        and its documents stay; once shareddb is back the delete removes
        both."""
        api = self.api_with_document(pt.uniq("DelShared"))
        self.assertEqual(self.stored(api["id"]), (1, 1))
        self.shareddb_away()
        r = self.c.delete(APIS + "/" + api["id"])
        assert_unavailable(self, r, "DELETE with shareddb away")
        self.shareddb_back()
        self.assertEqual(self.stored(api["id"]), (1, 1))
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).status, 200)
        docs = self.c.get(APIS + "/%s/documents" % api["id"])
        self.assertEqual([d["name"] for d in docs.json["list"]], ["Guide"], docs)
        r = self.c.delete(APIS + "/" + api["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.stored(api["id"]), (0, 0))
        self.assertEqual(self.c.get(APIS + "/" + api["id"]).status, 404)

    def test_d2_new_version_with_shareddb_away_is_all_or_nothing(self):
        """A new version copies the API (apimgtdb) and its documents
        (shareddb): with shareddb away it answers 503 and no new version
        exists; once shareddb is back the copy has its document."""
        name = pt.uniq("CopyShared")
        api = self.api_with_document(name)
        self.shareddb_away()
        r = self.c.post(pt.PUB + "/apis/copy-api",
                        query={"apiId": api["id"], "newVersion": "2.0.0"})
        assert_unavailable(self, r, "copy-api with shareddb away")
        self.shareddb_back()
        self.assertEqual(count_by_name(self.c, name), 1)
        self.assertEqual(sql_rows(self.apimgt_url,
                                  "SELECT version FROM am_api WHERE name = '%s'" % name),
                         [["1.0.0"]])
        r = self.c.post(pt.PUB + "/apis/copy-api",
                        query={"apiId": api["id"], "newVersion": "2.0.0"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.stored(r.json["id"]), (1, 1))
        docs = self.c.get(APIS + "/%s/documents" % r.json["id"])
        self.assertEqual([d["name"] for d in docs.json["list"]], ["Guide"], docs)

    def wait_for(self, cond, what, within=10):
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if cond():
                return
            time.sleep(0.05)
        self.fail("timed out waiting for %s" % what)


# -- a connection lost after the server committed -------------------------------------

class CuttingRelay:
    """A TCP relay to PostgreSQL that, once armed, cuts the connection
    that carries the server's next "INSERT 0 1" completion instead of
    passing it on: the server committed the INSERT, the client never
    hears of it."""

    TAG = b"C\x00\x00\x00\x0fINSERT 0 1\x00"

    def __init__(self, target_port):
        self.target = target_port
        self.armed = threading.Event()
        self.cuts = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True),
                             daemon=True).start()

    def _pipe(self, src, dst, from_server):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_server and self.TAG in data and self.armed.is_set():
                    self.armed.clear()
                    self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.lsock.close()


@unittest.skipUnless(apimtest.is_postgresql(), PG_ONLY_RESTART)
class LostAfterCommitTest(unittest.TestCase):
    """apimd reaches shareddb through a CuttingRelay on a private cluster."""

    @classmethod
    def setUpClass(cls):
        cls.pg = run.ThrowawayPostgres()
        cls.pg.prepare()
        cls.watchdog = run.start_watchdog(cls.pg.dir, cls.pg)
        cls.srv = cls.relay = None
        try:
            base = cls.pg.start()
            for db in ("apimgt", "shared"):
                apimtest.psql('CREATE DATABASE "%s"' % db, url=base)
            cls.relay = CuttingRelay(cls.pg.port)
            cls.shared_url = apimtest.pg_url("shared", base)
            relayed = cls.shared_url.replace(":%d/" % cls.pg.port, ":%d/" % cls.relay.port)
            cls.srv = apimtest.ApimServer(conf={
                "database": {"apimgtdb_url": apimtest.pg_url("apimgt", base),
                             "shareddb_url": relayed, "busy_timeout_ms": 1000}})
            cls.srv.start()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    @classmethod
    def _teardown(cls):
        try:
            if cls.srv is not None:
                try:
                    cls.srv.stop()
                finally:
                    cls.srv.cleanup()
            if cls.relay is not None:
                cls.relay.close()
        finally:
            cls.pg.stop()
            cls.watchdog.kill()
            cls.watchdog.wait()

    def test_single_statement_write_is_not_run_twice(self):
        """A document is one INSERT (no transaction). The connection dies
        after the server committed it: apimd must not run it again (that
        answered 409 "already exists" for the request's own document, and
        doubles writes without a unique key): 503, and the document is
        there once."""
        c = self.srv.client(timeout=30)
        r = c.post(APIS, json=pt.api_body(pt.uniq("Cut")))
        self.assertEqual(r.status, 201, r)
        api_id = r.json["id"]
        doc = {"name": "Guide", "type": "HOWTO", "sourceType": "INLINE", "inlineContent": "x"}
        self.relay.armed.set()
        r = c.post(APIS + "/%s/documents" % api_id, json=doc)
        self.assertEqual(self.relay.cuts, 1, "the relay cut nothing: %r" % r)
        assert_unavailable(self, r, "document whose commit was not acknowledged")
        rows = sql_rows(self.shared_url, "SELECT name FROM am_api_document WHERE api_id = '%s'"
                        % api_id)
        self.assertEqual(rows, [["Guide"]])
        # the next requests work on a fresh connection
        r = c.get(APIS + "/%s/documents" % api_id)
        self.assertEqual([d["name"] for d in r.json["list"]], ["Guide"], r)
        doc["name"] = "Second"
        r = c.post(APIS + "/%s/documents" % api_id, json=doc)
        self.assertEqual(r.status, 201, r)


# -- two NATS servers in a cluster, one killed ----------------------------------------

class NatsNode:
    """One nats-server of a two-server cluster: client port, route port,
    the other's route port; restartable on the same ports."""

    def __init__(self, name, port, cport, peer_cport):
        self.name, self.port, self.cport, self.peer_cport = name, port, cport, peer_cport
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
             "--cluster_name", "apim", "--cluster", "nats://127.0.0.1:%d" % self.cport,
             "--routes", "nats://127.0.0.1:%d" % self.peer_cport],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=apimtest._child_setup)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server %s did not start" % self.name)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def routed(a, b, within=10):
    """Waits until a message published on a reaches a subscriber on b."""
    sub = gwtest.Nats(b.port, subjects=("apimtest.route",))
    try:
        pub = gwtest.Nats(a.port, subjects=())
        try:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                pub.publish("apimtest.route", {"n": 1})
                try:
                    sub.wait_for(lambda s, body: True, timeout=0.2)
                    return
                except AssertionError:
                    pass
            raise AssertionError("no route between nats %s and %s" % (a.name, b.name))
        finally:
            pub.close()
    finally:
        sub.close()


@unittest.skipUnless(gwtest.HAVE_ALL, "needs APIM_NGINX_MODULE, nginx and nats-server")
class NatsClusterTest(unittest.TestCase):
    """Control plane, gateway and Traffic Manager all given the URLs of
    both servers of a NATS cluster (event_hub.url, apim_event_hub_url):
    killing either server leaves everything working through the other.
    Each server is killed once, so every client loses the server it was
    on at least once (libnats picks one of the list at random)."""

    @classmethod
    def setUpClass(cls):
        ports = [apimtest.unused_port() for _ in range(4)]
        cls.n1 = NatsNode("n1", ports[0], ports[1], ports[3])
        cls.n2 = NatsNode("n2", ports[2], ports[3], ports[1])
        cls.started = []
        try:
            cls.n1.start()
            cls.n2.start()
            routed(cls.n1, cls.n2)
            routed(cls.n2, cls.n1)
            urls = "%s,%s" % (cls.n1.url, cls.n2.url)
            spaced = "%s, %s" % (cls.n1.url, cls.n2.url)  # as people write lists in apim.conf
            cls.srv = apimtest.ApimServer(profile="control-plane", conf={
                "event_hub": {"url": spaced}, "gateway": {"credential": CRED}})
            cls.srv.start()
            cls.started.append(cls.srv)
            cls.tm = apimtest.ApimServer(profile="traffic-manager", conf={
                "event_hub": {"url": spaced},
                "gateway": {"control_plane_url": cls.srv.base_url, "credential": CRED}})
            cls.tm.start(wait=False)
            cls.started.append(cls.tm)
            cls.backend = gwtest.start_backend("production")
            cls.gw = gwtest.FeedNginx(cls.srv.base_url, urls, CRED).start()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    @classmethod
    def _teardown(cls):
        gw = getattr(cls, "gw", None)
        if gw is not None:
            gw.stop()
            shutil.rmtree(gw.tmp, ignore_errors=True)
        for srv in reversed(cls.started):
            try:
                srv.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        if getattr(cls, "backend", None) is not None:
            cls.backend.shutdown()
        cls.n1.kill()
        cls.n2.kill()

    def setUp(self):
        self.c = self.srv.client()

    def wait_gw(self, tok, status, code=None, within=10):
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < within:
            last = self.gw.call(self.path, tok)
            if last[0] == status and (code is None or last[1] == code):
                return
            time.sleep(0.02)
        self.fail("gateway answers %r, wanted %s %s\n%s" % (last[:2], status, code,
                                                             self.gw.log()[-3000:]))

    def deployment(self, action):
        r = self.c.post(APIS + "/%s/%s-revision" % (self.api["id"], action),
                        query={"revisionId": self.rev["id"]}, json=gwtest.DEFAULT_ENV)
        self.assertEqual(r.status, 201, r)

    def publish_api(self):
        """An API deployed and subscribed to; returns a token the gateway admits."""
        name = pt.uniq("NatsHa")
        r = self.c.post(APIS, json=pt.api_body(
            name=name, policies=["Gold", "Unlimited"],
            endpointConfig={"endpoint_type": "http", "production_endpoints": {
                "url": "http://127.0.0.1:%d/be" % self.backend.server_port}}))
        self.assertEqual(r.status, 201, r)
        self.api = r.json
        self.path = "/%s/1.0.0/items" % name.lower()
        r = self.c.post(APIS + "/%s/revisions" % self.api["id"], json={"description": "r1"})
        self.assertEqual(r.status, 201, r)
        self.rev = r.json
        self.deployment("deploy")
        r = self.c.post(pt.PUB + "/apis/change-lifecycle",
                        query={"apiId": self.api["id"], "action": "Publish"})
        self.assertEqual(r.status, 200, r)
        return gwtest.subscribed_app(self.srv, self.c, self.api["id"], "Gold",
                                     "NatsHaApp")[1]

    def check_through(self, node, tok):
        """With only node left: the control plane's change events, the
        gateway's usage reports and the Traffic Manager's heartbeats all
        reach a client of node, and the gateway follows the change."""
        bus = gwtest.Nats(node.port, subjects=("apim.notify.api", "apim.throttle.usage",
                                            "apim.throttle.tm"))
        try:
            t0 = time.monotonic()
            seq0 = self.current_seq()
            self.deployment("undeploy")
            ev = bus.wait_for(lambda s, b: s == "apim.notify.api" and b["id"] == self.api["id"]
                              and b["seq"] > seq0, timeout=15, t0=t0)
            self.assertEqual(ev["action"], "undeploy", ev)
            self.wait_gw(tok, 403, "900906")
            self.deployment("deploy")
            self.wait_gw(tok, 200)
            t1 = time.monotonic()
            self.assertEqual(self.gw.call(self.path, tok)[0], 200)
            usage = bus.wait_for(lambda s, b: s == "apim.throttle.usage" and any(
                e.get("apiId") == self.api["id"] for e in b.get("entries", [])),
                timeout=15, t0=t1)
            self.assertTrue(usage["entries"], usage)
            pid = str(self.tm.proc.pid)
            bus.wait_for(lambda s, b: s == "apim.throttle.tm" and
                         b.get("tm", "").endswith("/" + pid), timeout=15, t0=t1)
        finally:
            bus.close()

    def current_seq(self):
        r = self.srv.client(None).get("/internal/data/v1/sequence",
                                      headers={"X-APIM-Gateway-Credential": CRED})
        self.assertEqual(r.status, 200, r)
        return r.json["seq"]

    def test_either_server_killed(self):
        tok = self.publish_api()
        self.wait_gw(tok, 200)
        self.assertIn("apim: following event hub", self.gw.log())
        self.assertTrue(self.tm.running(), self.tm.stderr_tail())

        self.n1.kill()
        self.check_through(self.n2, tok)

        self.n1.start()
        routed(self.n1, self.n2)
        routed(self.n2, self.n1)
        self.n2.kill()
        self.check_through(self.n1, tok)
        self.assertNotIn("No server available", self.gw.log())
        for srv in (self.srv, self.tm):
            self.assertTrue(srv.running(), srv.stderr_tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
