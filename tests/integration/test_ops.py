"""Operational surface of apimd: command line, configuration errors,
environment overrides, health, metrics, error bodies, the generated admin
password and graceful shutdown."""

import json
import os
import re
import signal
import socket
import stat
import tempfile
import time
import unittest

import apimtest

ADMIN_PATH = "/api/am/admin/v4/environments"


def line_of(text, needle):
    """1-based number of the first line of text that contains needle."""
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise AssertionError("%r not in config text" % needle)


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


def metric_value(text, name, labels=None):
    """Value of the sample name{labels} in Prometheus text (None: absent).
    labels: dict that must match exactly the sample's label set."""
    for ln in text.splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', ln)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == (labels or {}):
            return float(m.group(4))
    return None


class CommandLineTest(unittest.TestCase):
    """apimd's command line, without a running server."""

    def test_help_exits_0_with_usage(self):
        r = apimtest.run_apimd(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("usage: apimd", r.stdout)
        for opt in ("--profile", "--config", "--version", "--help"):
            self.assertIn(opt, r.stdout)

    def test_version_exits_0(self):
        r = apimtest.run_apimd(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"^apimd \d+\.\d+\.\d+")

    def test_config_docs_list_every_section(self):
        r = apimtest.run_apimd(["--config-docs"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for s in ("[server]", "[database]", "[security]", "[log]"):
            self.assertIn("## " + s, r.stdout)
        self.assertIn("APIM_SERVER_PORT_OFFSET", r.stdout)

    def test_unknown_option_exits_2_with_usage(self):
        r = apimtest.run_apimd(["--no-such-option"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: apimd", r.stderr)

    def test_unexpected_argument_exits_2(self):
        r = apimtest.run_apimd(["extra"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unexpected argument 'extra'", r.stderr)

    def test_unknown_profile_exits_2(self):
        r = apimtest.run_apimd(["--profile", "mediator"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown profile 'mediator'", r.stderr)

    def test_traffic_manager_without_event_hub_exits_2(self):
        # every profile is built; a Traffic Manager without NATS is useless
        r = apimtest.run_apimd(["--profile", "traffic-manager"], timeout=15,
                               env={"APIM_EVENT_HUB_URL": None})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("event_hub.url", r.stderr)
        self.assertNotIn("ready in", r.stdout)


class ConfigErrorTest(unittest.TestCase):
    """Bad configuration stops apimd with status 2 and "<file>:<line>:"."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="apimtest-conf-")
        self.path = os.path.join(self.dir.name, "apim.conf")

    def tearDown(self):
        self.dir.cleanup()

    def conf(self, extra):
        """A config that would start fine, plus extra lines at the end."""
        off = apimtest.free_port_offset()
        return ('[server]\nhome = "%s"\nhost = "127.0.0.1"\nport_offset = %d\n'
                '[log]\nformat = "text"\n%s' % (os.path.join(self.dir.name, "home"), off, extra))

    def assert_rejected(self, text, needle, *fragments):
        apimtest.write_conf(self.path, text)
        r = apimtest.run_apimd(["--config", self.path], timeout=20)
        self.assertEqual(r.returncode, 2, "accepted: %s\n%s" % (text, r.stderr))
        where = "%s:%d:" % (self.path, line_of(text, needle))
        self.assertIn(where, r.stderr)
        for f in fragments:
            self.assertIn(f, r.stderr)
        self.assertNotIn("ready in", r.stdout)
        return r

    def test_unknown_key(self):
        self.assert_rejected(self.conf("[security]\nlockout_tries = 3\n"), "lockout_tries",
                             "unknown key 'lockout_tries'", "[security]")

    def test_bad_integer(self):
        self.assert_rejected(self.conf("[security]\nlockout_attempts = five\n"), "five",
                             "security.lockout_attempts", "must be an integer")

    def test_integer_out_of_range(self):
        self.assert_rejected(self.conf("[server]\nthreads = 0\n"), "threads",
                             "server.threads", "between 1 and 256")

    def test_unknown_section(self):
        self.assert_rejected(self.conf("[mediation]\nport = 8243\n"), "[mediation]",
                             "unknown section [mediation]")

    def test_unquoted_string(self):
        self.assert_rejected(self.conf("[admin]\nusername = root\n"), "username",
                             "admin.username", "must be quoted")

    def test_bad_database_url(self):
        self.assert_rejected(self.conf('[database]\napimgtdb_url = "mysql://db/apim"\n'),
                             "mysql", "database.apimgtdb_url")

    def test_missing_config_file(self):
        path = os.path.join(self.dir.name, "nope.conf")
        r = apimtest.run_apimd(["--config", path], timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)
        self.assertIn("cannot read", r.stderr)

    def test_env_override_is_validated(self):
        apimtest.write_conf(self.path, self.conf(""))
        r = apimtest.run_apimd(["--config", self.path],
                               env={"APIM_SERVER_PORT_OFFSET": "abc"}, timeout=20)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("APIM_SERVER_PORT_OFFSET", r.stderr)
        self.assertIn("must be an integer", r.stderr)

    def test_tls_cert_without_key(self):
        # A check across two keys: the message names both, not one line.
        apimtest.write_conf(self.path, self.conf('[http]\ntls_cert = "/tmp/cert.pem"\n'))
        r = apimtest.run_apimd(["--config", self.path], timeout=20)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tls_cert", r.stderr)
        self.assertIn("tls_key", r.stderr)


class EnvOverrideTest(unittest.TestCase):

    def test_env_port_offset_moves_the_port(self):
        conf_off = apimtest.free_port_offset()
        env_off = apimtest.free_port_offset()
        srv = apimtest.ApimServer(conf={"server": {"port_offset": conf_off}},
                                  env={"APIM_SERVER_PORT_OFFSET": str(env_off)})
        with srv:
            self.assertEqual(srv.port, 9443 + env_off)
            r = srv.client(None).get("/health/live")
            self.assertEqual(r.status, 200)
            self.assertTrue(connection_refused(9443 + conf_off),
                            "something listens on the port of the file's offset")
            self.assertIn(":%d" % (9443 + env_off), srv.stdout_this_run())

    def test_env_log_format_wins_over_the_file(self):
        # The harness writes log.format = "text"; the environment says json.
        srv = apimtest.ApimServer(env={"APIM_LOG_FORMAT": "json"})
        with srv:
            self.assertEqual(srv.client(None).get("/health/live").status, 200)
            lines = [ln for ln in srv.stderr_this_run().splitlines() if ln.strip()]
            self.assertTrue(lines)
            for ln in lines:
                rec = json.loads(ln)
                self.assertEqual(set(rec), {"ts", "level", "component", "msg"}, ln)
                self.assertIn(rec["level"], ("debug", "info", "warn", "error"))
            self.assertTrue(any("listening on 127.0.0.1:%d" % srv.port in json.loads(ln)["msg"]
                                for ln in lines))
        srv.cleanup()


class HealthAndErrorsTest(unittest.TestCase):
    """On the module's shared server."""

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()
        cls.anon = cls.srv.client(None)

    def test_live(self):
        r = self.anon.get("/health/live")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json.get("status"), "UP")

    def test_ready_with_both_databases(self):
        r = self.anon.get("/health/ready")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["status"], "UP")
        self.assertEqual(r.json["checks"], {"apimgtdb": "UP", "shareddb": "UP"})

    def test_unknown_path_is_404_with_error_body(self):
        r = self.anon.get("/no/such/thing")
        self.assertEqual(r.status, 404, r)
        self.assertIn("application/json", r.headers.get("content-type", ""))
        body = r.json
        self.assertIsInstance(body, dict, r)
        self.assertEqual(body["code"], 404)
        self.assertEqual(body["message"], "Not Found")
        self.assertIn("/no/such/thing", body["description"])
        self.assertIn("moreInfo", body)
        self.assertEqual(body.get("error"), [])

    def test_wrong_method_is_405_with_error_body(self):
        r = self.anon.post("/health/live", json={})
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.json["code"], 405)
        self.assertIn("POST", r.json["description"])

    def test_metrics_prometheus_text(self):
        self.anon.get("/health/live")
        self.anon.get("/no/such/metric-path")
        r = self.anon.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        text = r.text
        # Every sample line is well formed; every metric has a TYPE.
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        for ln in text.splitlines():
            if not ln or ln.startswith("#"):
                continue
            self.assertRegex(ln, r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? '
                                 r'(-?[0-9.]+([eE][-+]?[0-9]+)?|NaN|[-+]Inf)$')
            name = re.match(r"[a-zA-Z0-9_:]+", ln).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertTrue(name in types or base in types, "no # TYPE for " + ln)
        self.assertEqual(types.get("apim_http_requests_total"), "counter")
        self.assertEqual(types.get("apim_http_request_duration_seconds"), "histogram")
        # Requests by route and status.
        live = metric_value(text, "apim_http_requests_total",
                            {"method": "GET", "route": "/health/live", "status": "200"})
        self.assertIsNotNone(live, text)
        self.assertGreaterEqual(live, 1)
        unmatched = metric_value(text, "apim_http_requests_total",
                                 {"method": "", "route": "unmatched", "status": "404"})
        self.assertIsNotNone(unmatched, text)
        self.assertGreaterEqual(unmatched, 1)
        # Latency histogram: cumulative buckets ending in +Inf == count.
        buckets = re.findall(r'^apim_http_request_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$',
                             text, re.M)
        self.assertGreater(len(buckets), 3, text)
        self.assertEqual(buckets[-1][0], "+Inf")
        values = [float(v) for _, v in buckets]
        self.assertEqual(values, sorted(values), "buckets are not cumulative")
        bounds = [float(le) for le, _ in buckets[:-1]]
        self.assertEqual(bounds, sorted(bounds))
        count = metric_value(text, "apim_http_request_duration_seconds_count")
        self.assertEqual(values[-1], count)
        self.assertIsNotNone(metric_value(text, "apim_http_request_duration_seconds_sum"))
        # Database pool gauges, one per database.
        self.assertEqual(types.get("apim_db_connections_open"), "gauge")
        for db in ("apimgtdb", "shareddb"):
            for m in ("apim_db_connections_open", "apim_db_connections_in_tx",
                      "apim_db_reconnects_total"):
                self.assertIsNotNone(metric_value(text, m, {"db": db}), "%s{db=%s}" % (m, db))
        self.assertGreaterEqual(metric_value(text, "apim_db_connections_open",
                                             {"db": "apimgtdb"}), 1)

    def test_metrics_count_requests(self):
        labels = {"method": "GET", "route": "/health/ready", "status": "200"}
        before = metric_value(self.anon.get("/metrics").text, "apim_http_requests_total",
                              labels) or 0
        for _ in range(3):
            self.assertEqual(self.anon.get("/health/ready").status, 200)
        after = metric_value(self.anon.get("/metrics").text, "apim_http_requests_total", labels)
        self.assertEqual(after, before + 3)


class AdminPasswordTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.srv = apimtest.shared()

    def test_password_file_is_private_and_matches_banner(self):
        path = os.path.join(self.srv.home, "admin-password")
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(path) as f:
            stored = f.read().strip()
        m = re.search(r"^\s*admin password (\S+)\s+\(generated", self.srv.stdout(), re.M)
        self.assertIsNotNone(m, "no generated password in the banner:\n" + self.srv.stdout())
        self.assertEqual(m.group(1), stored)
        self.assertGreaterEqual(len(stored), 12)
        self.assertIn(path, self.srv.stdout())
        # Never in the logs.
        self.assertNotIn(stored, self.srv.stderr())

    def test_generated_password_works(self):
        r = self.srv.client().get(ADMIN_PATH)
        self.assertEqual(r.status, 200, r)

    def test_wrong_password_is_401(self):
        r = self.srv.client("admin", "not-the-password").get(ADMIN_PATH)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["code"], 401)
        self.assertEqual(r.json["message"], "Unauthorized")
        self.assertTrue(r.json["description"])
        self.assertIn("Basic", r.headers.get("www-authenticate", ""))
        # The right password still works afterwards.
        self.assertEqual(self.srv.client().get(ADMIN_PATH).status, 200)

    def test_no_credentials_is_401(self):
        r = self.srv.client(None).get(ADMIN_PATH)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["code"], 401)
        self.assertIn("Basic", r.headers.get("www-authenticate", ""))


class LifecycleTest(unittest.TestCase):
    """Servers of their own: shutdown, restart, profiles, broken databases."""

    def test_sigterm_is_graceful_and_restart_keeps_the_password(self):
        srv = apimtest.ApimServer()
        try:
            srv.start()
            pw = srv.admin_password
            self.assertEqual(srv.client().get(ADMIN_PATH).status, 200)
            srv.stop()  # asserts exit status 0 and no sanitizer report
            err = srv.stderr_this_run()
            self.assertIn("shutting down", err)
            self.assertIn("stopped", err)
            self.assertTrue(connection_refused(srv.port))
            srv.start()
            # Not generated again: the banner points at the file instead.
            out = srv.stdout_this_run()
            self.assertNotIn("(generated", out)
            self.assertIn("admin-password", out)
            self.assertEqual(srv.admin_password, pw)
            self.assertEqual(srv.client().get(ADMIN_PATH).status, 200)
        finally:
            srv.stop()
            srv.cleanup()

    def test_sigint_exits_0(self):
        srv = apimtest.ApimServer()
        try:
            srv.start()
            srv.signal(signal.SIGINT)
            self.assertEqual(srv.wait_exit(10), 0, srv.stderr_tail())
        finally:
            srv.stop()
            srv.cleanup()

    def test_sighup_keeps_running(self):
        srv = apimtest.ApimServer()
        try:
            srv.start()
            srv.signal(signal.SIGHUP)
            time.sleep(0.3)
            self.assertTrue(srv.running())
            self.assertEqual(srv.client(None).get("/health/live").status, 200)
        finally:
            srv.stop()
            srv.cleanup()

    def test_available_profiles_start(self):
        """Each profile serves its own components' routes and no others."""
        serves = {
            "control-plane": {"/api/am/publisher/v4/apis": True, "/oauth2/jwks": True,
                              "/api/am/admin/v4/environments": True},
            "publisher": {"/api/am/publisher/v4/apis": True, "/oauth2/jwks": False,
                          "/api/am/admin/v4/environments": True},
            "key-manager": {"/api/am/publisher/v4/apis": False, "/oauth2/jwks": True,
                            "/api/am/admin/v4/environments": False},
        }
        for prof, paths in serves.items():
            with self.subTest(profile=prof):
                with apimtest.ApimServer(profile=prof) as srv:
                    self.assertIn("(%s) ready in" % prof, srv.stdout_this_run())
                    self.assertEqual(srv.client(None).get("/health/ready").status, 200)
                    for path, served in paths.items():
                        st = srv.client().get(path).status
                        if served:
                            self.assertEqual(st, 200, "%s on %s" % (path, prof))
                        else:
                            self.assertEqual(st, 404, "%s on %s" % (path, prof))
                srv.cleanup()

    def test_port_in_use_fails_start(self):
        """A second apimd on a port that is already served must not start
        (and must not share the port with the first one)."""
        first = apimtest.shared()
        srv = apimtest.ApimServer(conf={"server": {"port_offset": first.port - 9443}})
        try:
            srv.start(wait=False)
            rc = srv.wait_exit(5)
            self.assertEqual(rc, 1, srv.stderr_tail())
            self.assertIn("cannot listen on 127.0.0.1:%d" % first.port, srv.stderr_this_run())
            self.assertEqual(first.client(None).get("/health/live").status, 200)
        finally:
            srv.cleanup()

    def test_unusable_database_fails_start(self):
        """A database that cannot be reached or created stops apimd at
        start-up with status 1 and a message, and nothing listens."""
        blocker = tempfile.NamedTemporaryFile(prefix="apimtest-notadir-")
        if apimtest.is_postgresql():
            url = "postgresql://apim:S3cretPW@127.0.0.1:%d/apimgt" % apimtest.unused_port()
        else:
            # Below a regular file: no directory can be made there, even by root.
            url = "sqlite://%s/apimgt.db" % blocker.name
        srv = apimtest.ApimServer(conf={"database": {"apimgtdb_url": url,
                                                     "busy_timeout_ms": 500}})
        self.addCleanup(blocker.close)
        try:
            srv.start(wait=False)
            rc = srv.wait_exit(20)
            self.assertEqual(rc, 1, srv.stderr_tail())
            err = srv.stderr_this_run()
            self.assertIn("apimgtdb", err)  # names the database that failed
            self.assertIn("database set-up failed", err)
            self.assertNotIn("S3cretPW", err + srv.stdout_this_run())
            self.assertNotIn("ready in", srv.stdout_this_run())
            self.assertTrue(connection_refused(srv.port))
        finally:
            srv.cleanup()

    @unittest.skipUnless(apimtest.is_postgresql(), "PostgreSQL only: a SQLite file cannot "
                                                   "go away under an open connection")
    def test_ready_503_when_a_database_goes_away(self):
        srv = apimtest.ApimServer(conf={"database": {"busy_timeout_ms": 500}})
        try:
            srv.start()
            anon = srv.client(None)
            self.assertEqual(anon.get("/health/ready").status, 200)
            name = srv.apimgtdb_url.rsplit("/", 1)[1]
            apimtest.psql('DROP DATABASE "%s" WITH (FORCE)' % name)
            r = anon.get("/health/ready")
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.json["status"], "DOWN")
            self.assertEqual(r.json["checks"], {"apimgtdb": "DOWN", "shareddb": "UP"})
            self.assertEqual(anon.get("/health/live").status, 200)
            # It comes back when the database does (same name, empty).
            apimtest.psql('CREATE DATABASE "%s"' % name)
            deadline = time.monotonic() + 10
            while anon.get("/health/ready").status != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertEqual(anon.get("/health/ready").status, 200)
        finally:
            srv.stop()
            srv.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
