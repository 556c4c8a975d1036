"""apimtest: integration test harness of apim (Python 3 standard library only).

Starts a real apimd on 127.0.0.1 with a fresh home and fresh databases and
talks to it over HTTP:

    import apimtest
    srv = apimtest.ApimServer(conf={"security": {"lockout_attempts": 3}}, env={})
    srv.start()
    c = srv.client()                      # admin, Basic auth
    r = c.get("/api/am/admin/v4/environments", query={"limit": 5})
    r.status, r.headers, r.body, r.json, r.text
    srv.create_user("alice", "Passw0rd!", ["Internal/creator"])
    srv.stop(); srv.restart()
    apimtest.shared()                     # one server per test module

More for tests of the daemon itself:

    apimtest.run_apimd(["--config", path], env={...})  # runs to completion
    apimtest.write_conf(path, {"server": {...}})        # or a text
    srv.start(wait=False); srv.wait_exit(20)           # expected start-up failure
    srv.stdout_this_run(), srv.stderr_this_run(), srv.signal(sig), srv.metrics()
    srv.prepare(); srv.update_conf({...})  # home and apim.conf before start
    ApimServer(databases_from=other)       # a second node on other's databases
    apimtest.is_postgresql(), apimtest.psql(sql), apimtest.unused_port()
    apimtest.free_port_offset()

Environment:
    APIMD               path of the apimd binary (required)
    APIM_TEST_DB        sqlite (default) or postgresql
    APIM_TEST_PG_URL    postgresql://postgres@127.0.0.1:PORT/postgres (postgresql only)
    APIM_TEST_KEEP=1    keep every server home (otherwise only failed ones are kept)

A server that exits with a status other than 0 when stopped, or whose
stderr holds a sanitizer report, fails: stop() raises AssertionError.
"""

import atexit
import base64
import ctypes
import json as jsonlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

BASE_PORT = 9443
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Lines that mean a sanitizer found something; any of them fails the test.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: MemorySanitizer",
)

_lock = threading.Lock()
_ports_taken = set()
_live = []          # servers started and not stopped yet
_pg_databases = []  # (base_url, name) created by this process
_kept_homes = []    # homes kept for inspection (a failure, or APIM_TEST_KEEP)
_all_servers = []   # every ApimServer that created a home


def apimd_path():
    """Path of the apimd binary under test (env APIMD)."""
    p = os.environ.get("APIMD")
    if not p:
        raise RuntimeError("APIMD is not set: run the tests through tests/integration/run.py "
                           "or export APIMD=/path/to/apimd")
    return os.path.abspath(p)


def db_engine():
    """"sqlite" or "postgresql" (env APIM_TEST_DB)."""
    e = os.environ.get("APIM_TEST_DB", "sqlite")
    if e not in ("sqlite", "postgresql"):
        raise RuntimeError("APIM_TEST_DB must be sqlite or postgresql, not %r" % e)
    return e


def is_postgresql():
    return db_engine() == "postgresql"


def pg_base_url():
    u = os.environ.get("APIM_TEST_PG_URL")
    if not u:
        raise RuntimeError("APIM_TEST_DB=postgresql needs APIM_TEST_PG_URL")
    return u


def pg_url(dbname, base=None):
    """The PostgreSQL base URL with its database replaced by dbname."""
    p = urllib.parse.urlsplit(base or pg_base_url())
    return urllib.parse.urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, ""))


def psql(sql, url=None):
    """Runs one SQL statement with psql; raises with psql's message on failure."""
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url or pg_base_url(),
                        "-c", sql], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("psql failed (%d) on %r: %s" % (r.returncode, sql, r.stderr.strip()))
    return r.stdout


def pg_create_database(prefix):
    """Creates a fresh database <prefix>_<random> and returns its URL."""
    name = "%s_%s" % (prefix, secrets.token_hex(6))
    psql('CREATE DATABASE "%s"' % name)
    with _lock:
        _pg_databases.append((pg_base_url(), name))
    return pg_url(name)


def port_is_free(port):
    """1 when 127.0.0.1:port can be bound now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# Ports apimd derives from server.port_offset: control plane, gateway HTTP and
# HTTPS, the local NATS server.
DERIVED_PORTS = (BASE_PORT, 8280, 8243, 4222)


def free_port_offset():
    """A server.port_offset such that every port apimd derives from it is
    free on 127.0.0.1 now.

    Random (rather than sequential) so that test processes running side by
    side rarely try the same ports; a port handed out once in this process
    is never handed out again. All derived ports stay below 32768, out of
    Linux's ephemeral range, so that outgoing connections and
    unused_port() never take them.
    """
    rnd = random.SystemRandom()
    for _ in range(500):
        off = rnd.randrange(10000, 32768 - BASE_PORT)
        ports = [p + off for p in DERIVED_PORTS]
        with _lock:
            if any(p in _ports_taken for p in ports):
                continue
        if all(port_is_free(p) for p in ports):
            with _lock:
                _ports_taken.update(ports)
            return off
    raise RuntimeError("no free port found for apimd")


def unused_port():
    """A TCP port on 127.0.0.1 where nothing listens (for "unreachable" tests)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def toml_value(v):
    """Renders a Python value in apim.conf syntax (the TOML subset)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_conf(conf):
    """{"section": {"key": value}} as apim.conf text; a value of None omits the key."""
    lines = ["# written by apimtest"]
    for section, keys in conf.items():
        lines.append("")
        lines.append("[%s]" % section)
        for k, v in keys.items():
            if v is None:
                continue
            lines.append("%s = %s" % (k, toml_value(v)))
    return "\n".join(lines) + "\n"


def merge_conf(base, over):
    """Deep merge of two {"section": {...}} dicts; over wins."""
    out = {s: dict(k) for s, k in base.items()}
    for s, keys in (over or {}).items():
        out.setdefault(s, {}).update(keys)
    return out


def _child_setup():
    """In the forked child before exec: ask the kernel to kill apimd when
    the test process (the thread that started it) dies, so that a killed
    test run leaves no server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def run_apimd(args, env=None, timeout=30, cwd=None):
    """Runs apimd to completion (for --help, config errors, ...).

    env is added to a copy of os.environ with every APIM_* variable removed
    first (so that the caller's environment does not leak into the test);
    a value of None removes the variable. Returns CompletedProcess with text
    stdout/stderr. Raises AssertionError when apimd is still running after
    timeout seconds (it is killed) or when stderr holds a sanitizer report.
    """
    full = clean_env(env)
    try:
        r = subprocess.run([apimd_path()] + list(args), env=full, cwd=cwd,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout,
                           preexec_fn=_child_setup)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise AssertionError("apimd %s still running after %d s (killed); stderr:\n%s" % (
            " ".join(args), timeout, err or ""))
    assert_no_sanitizer_report(r.stderr, "apimd " + " ".join(args))
    return r


def write_conf(path, conf):
    """Writes {"section": {"key": value}} (or text) as an apim.conf file."""
    with open(path, "w") as f:
        f.write(conf if isinstance(conf, str) else render_conf(conf))
    return path


def clean_env(env=None):
    """os.environ without APIM_<SECTION>_<KEY> overrides, plus env."""
    full = {k: v for k, v in os.environ.items()
            if not (k.startswith("APIM_") and not k.startswith("APIM_TEST_"))}
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = str(v)
    return full


def sanitizer_findings(text):
    """The lines of text that hold a sanitizer report (empty list: none)."""
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


def sanitizer_excerpt(text, limit=80):
    """The sanitizer report(s) in text, without the shadow-byte legend."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines)
                  if any(m in ln for m in SANITIZER_MARKERS)), None)
    if start is None:
        return ""
    out = []
    skipping = False
    for ln in lines[max(0, start - 1):]:
        if ln.startswith("Shadow bytes around") or ln.startswith("Shadow byte legend"):
            skipping = True
            continue
        if skipping and (ln.startswith("  ") or ln.startswith("=>") or not ln.strip()):
            continue
        skipping = False
        out.append(ln)
        if len(out) >= limit:
            out.append("...")
            break
    return "\n".join(out)


def assert_no_sanitizer_report(text, what="apimd"):
    report = sanitizer_excerpt(text or "")
    if report:
        raise AssertionError("sanitizer report from %s:\n%s" % (what, report))


def tail(path, n=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


class Response:
    """An HTTP response: status, headers (dict, lower-case keys), body (bytes),
    text (str), json (parsed body, or None when it is not JSON)."""

    def __init__(self, status, headers, body, method="", url=""):
        self.status = status
        self.headers = headers
        self.body = body
        self.method = method
        self.url = url
        self._json = None
        self._json_done = False

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def json(self):
        if not self._json_done:
            self._json_done = True
            try:
                self._json = jsonlib.loads(self.body.decode("utf-8")) if self.body else None
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json

    def __repr__(self):
        body = self.text
        if len(body) > 600:
            body = body[:600] + "..."
        return "<Response %s %s -> %d %s>" % (self.method, self.url, self.status, body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """3xx are returned to the test as they are, never followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# No proxies (tests talk to 127.0.0.1 only); HTTPS servers in tests use
# self-signed certificates, so certificates are not verified.
_opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), _NoRedirect(),
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))


class Client:
    """HTTP client bound to one server and one identity.

    Never raises on HTTP error statuses: every answer is a Response.
    """

    def __init__(self, base_url, username=None, password=None, timeout=60, server=None):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.server = server  # for a clearer error when apimd has died

    def auth_header(self):
        if self.username is None:
            return None
        raw = ("%s:%s" % (self.username, self.password or "")).encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def url(self, path, query=None):
        u = path if path.startswith("http://") or path.startswith("https://") \
            else self.base_url + (path if path.startswith("/") else "/" + path)
        if query:
            items = query.items() if isinstance(query, dict) else query
            qs = urllib.parse.urlencode([(k, v) for k, v in items if v is not None], doseq=True)
            u += ("&" if "?" in u else "?") + qs
        return u

    def request(self, method, path, query=None, json=None, data=None, content_type=None,
                headers=None):
        """Sends one request. json: a value sent as application/json; data:
        raw bytes/str sent with content_type. headers: extra headers (a value
        of None removes the Authorization header, e.g. {"Authorization": None})."""
        hdrs = {}
        auth = self.auth_header()
        if auth is not None:
            hdrs["Authorization"] = auth
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            hdrs["Content-Type"] = content_type or "application/json"
        elif data is not None:
            body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            if content_type is not None:
                hdrs["Content-Type"] = content_type
        for k, v in (headers or {}).items():
            # header names are case-insensitive: replace ours whatever the case
            for mine in [h for h in hdrs if h.lower() == k.lower()]:
                del hdrs[mine]
            if v is not None:
                hdrs[k] = v
        url = self.url(path, query)
        req = urllib.request.Request(url, data=body, method=method.upper())
        for k, v in hdrs.items():
            req.add_header(k, v)
        if body is not None and not any(k.lower() == "content-type" for k in hdrs):
            # urllib would invent application/x-www-form-urlencoded
            req.add_unredirected_header("Content-Type", "application/octet-stream")
        try:
            resp = _opener.open(req, timeout=self.timeout)
            status, raw_headers, payload = resp.status, resp.headers, resp.read()
            resp.close()
        except urllib.error.HTTPError as e:
            status, raw_headers = e.code, e.headers
            try:
                payload = e.read()
            except Exception:
                payload = b""
            e.close()
        except (urllib.error.URLError, OSError) as e:
            srv = self.server
            if srv is not None and srv.proc is not None and srv.proc.poll() is not None:
                raise ConnectionError("%s %s: apimd is not running any more (exit status %s); "
                                      "stderr:\n%s" % (method.upper(), url, srv.proc.returncode,
                                                       sanitizer_excerpt(srv.stderr_this_run())
                                                       or srv.stderr_tail())) from e
            raise
        out = {}
        for k, v in (raw_headers.items() if raw_headers is not None else []):
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return Response(status, out, payload, method.upper(), url)

    def get(self, path, query=None, headers=None):
        return self.request("GET", path, query=query, headers=headers)

    def head(self, path, query=None, headers=None):
        return self.request("HEAD", path, query=query, headers=headers)

    def options(self, path, query=None, headers=None):
        return self.request("OPTIONS", path, query=query, headers=headers)

    def post(self, path, json=None, data=None, content_type=None, query=None, headers=None):
        return self.request("POST", path, query=query, json=json, data=data,
                            content_type=content_type, headers=headers)

    def put(self, path, json=None, data=None, content_type=None, query=None, headers=None):
        return self.request("PUT", path, query=query, json=json, data=data,
                            content_type=content_type, headers=headers)

    def patch(self, path, json=None, data=None, content_type=None, query=None, headers=None):
        return self.request("PATCH", path, query=query, json=json, data=data,
                            content_type=content_type, headers=headers)

    def delete(self, path, query=None, json=None, headers=None):
        return self.request("DELETE", path, query=query, json=json, headers=headers)


class ApimServer:
    """One apimd process with its own home, port and databases.

    conf: {"section": {"key": value}} merged over the harness defaults (a
    value of None drops a default). env: extra environment variables for
    apimd (APIM_* overrides; None removes one). profile: --profile value.
    databases_from: another ApimServer whose databases this one uses too (a
    second node of the same deployment; prepared first when needed).
    """

    DEFAULT_CONF = {
        "server": {"host": "127.0.0.1"},
        "log": {"format": "text"},
        "security": {"argon2_memlimit_kb": 8192, "argon2_opslimit": 1},
    }

    def __init__(self, conf=None, env=None, profile=None, args=None, databases_from=None):
        self.conf = conf or {}
        self.databases_from = databases_from
        self.env = env or {}
        self.profile = profile
        self.extra_args = list(args or [])
        self.home = None
        self.conf_path = None
        self.port = None
        self.base_url = None
        self.admin_username = (self.conf.get("admin") or {}).get("username") or "admin"
        self.admin_password = None
        self.proc = None
        self.stdout_path = None
        self.stderr_path = None
        self.apimgtdb_url = None
        self.shareddb_url = None
        self.runs = 0        # how many times apimd was started in this home
        self.failed = False
        self._cleaned = False

    # -- life cycle ---------------------------------------------------------

    def _prepare(self):
        """Fresh home, databases and apim.conf (first start only)."""
        self.home = tempfile.mkdtemp(prefix="apimtest-")
        with _lock:
            _all_servers.append(self)
        self.stdout_path = os.path.join(self.home, "apimd.stdout")
        self.stderr_path = os.path.join(self.home, "apimd.stderr")
        self.conf_path = os.path.join(self.home, "apim.conf")
        self._dbconf = {}
        if self.databases_from is not None:
            self._share_databases(self.databases_from)
        elif is_postgresql():
            user_db = self.conf.get("database") or {}
            if "apimgtdb_url" not in user_db:
                self.apimgtdb_url = pg_create_database("apimgt")
                self._dbconf["apimgtdb_url"] = self.apimgtdb_url
            if "shareddb_url" not in user_db:
                self.shareddb_url = pg_create_database("shared")
                self._dbconf["shareddb_url"] = self.shareddb_url
        # The harness picks the port unless the test does (conf or env).
        self._auto_port = ("port_offset" not in (self.conf.get("server") or {})
                           and "APIM_SERVER_PORT_OFFSET" not in self.env)
        self._write_conf(free_port_offset() if self._auto_port else 0)

    def _share_databases(self, other):
        """Points this server at other's databases (those the test did not
        set in conf itself)."""
        other.prepare()
        user_db = self.conf.get("database") or {}
        theirs = other.effective_conf.get("database") or {}
        for key, default in (("apimgtdb_url", "apimgt.db"), ("shareddb_url", "shared.db")):
            if key in user_db:
                continue
            url = theirs.get(key) or "sqlite://%s/%s" % (other.home, default)
            self._dbconf[key] = url
            setattr(self, key, url)

    def prepare(self):
        """Creates the home, the databases and apim.conf without starting
        apimd (start() does it on its first call). Lets a test put files in
        the home (then update_conf()) or start several servers at once."""
        if self.home is None:
            self._prepare()
        return self

    def update_conf(self, conf):
        """Merges conf over this server's configuration and rewrites
        apim.conf (port and databases unchanged); applies at the next
        start. Only while apimd is not running."""
        if self.proc is not None:
            raise RuntimeError("update_conf() while apimd is running")
        self.prepare()
        self.conf = merge_conf(self.conf, conf)
        self._write_conf(self._port_offset)
        return self

    def _write_conf(self, offset):
        self._port_offset = offset
        base = merge_conf(self.DEFAULT_CONF, {"server": {"home": self.home,
                                                         "port_offset": offset}})
        if self._dbconf:
            base = merge_conf(base, {"database": self._dbconf})
        full = merge_conf(base, self.conf)
        self.effective_conf = full
        with open(self.conf_path, "w") as f:
            f.write(render_conf(full))
        port_off = self.env.get("APIM_SERVER_PORT_OFFSET")
        if port_off is None:
            port_off = full["server"].get("port_offset", 0)
        self.port = BASE_PORT + int(port_off)
        host = full["server"].get("host", "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "https" if (full.get("http") or {}).get("tls_cert") else "http"
        self.base_url = "%s://%s:%d" % (scheme, host, self.port)
        pw = (full.get("admin") or {}).get("password")
        if pw:
            self.admin_password = pw

    def start(self, wait=True):
        """Starts apimd (fresh home and databases on the first call) and, unless
        wait is False, waits until /health/live answers 200."""
        if self.proc is not None:
            raise RuntimeError("server already running")
        if self.home is None:
            self._prepare()
        for attempt in range(3):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_live()
                return self
            except RuntimeError:
                # Another process took the port between the check and
                # apimd's bind: on a first start, try another port.
                if not (self._auto_port and self.runs == 1 and attempt < 2 and
                        "cannot listen" in self.stderr_this_run()):
                    raise
                self.failed = False
                self.runs = 0
                self._write_conf(free_port_offset())
        return self

    def _spawn(self):
        self.runs += 1
        # Each run appends to the same files; remember where this run begins.
        self._stdout_mark = os.path.getsize(self.stdout_path) if os.path.exists(
            self.stdout_path) else 0
        self._stderr_mark = os.path.getsize(self.stderr_path) if os.path.exists(
            self.stderr_path) else 0
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        args = [apimd_path()]
        if self.profile:
            args += ["--profile", self.profile]
        args += ["--config", self.conf_path] + self.extra_args
        try:
            self.proc = subprocess.Popen(args, env=clean_env(self.env), cwd=self.home,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         preexec_fn=_child_setup)
        finally:
            out.close()
            err.close()
        with _lock:
            _live.append(self)

    def wait_live(self, timeout=START_TIMEOUT):
        """Waits for /health/live 200; on timeout or exit raises with stderr."""
        deadline = time.monotonic() + timeout
        c = Client(self.base_url, timeout=2)
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._forget()
                self.failed = True
                raise RuntimeError("apimd exited with %d during start-up (home %s); "
                                   "stderr:\n%s" % (
                                       rc, self.home,
                                       sanitizer_excerpt(self.stderr_this_run()) or
                                       self.stderr_tail()))
            try:
                r = c.get("/health/live")
                if r.status == 200:
                    self._read_admin_password()
                    return
                last = "status %d" % r.status
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.05)
        self.failed = True
        self._kill()
        raise RuntimeError("apimd did not answer /health/live within %.0f s (%s; home %s); "
                           "last lines of stderr:\n%s" % (timeout, last, self.home,
                                                          self.stderr_tail()))

    def _read_admin_password(self):
        """The generated admin password: from the line main.c prints, else the
        admin-password file. Kept from an earlier run when neither says."""
        if (self.effective_conf.get("admin") or {}).get("password"):
            return
        env_pw = self.env.get("APIM_ADMIN_PASSWORD")
        if env_pw:
            self.admin_password = env_pw
            return
        # The banner is printed just after the listener starts: give it a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.stdout_this_run()
            m = re.search(r"^\s*admin password (\S+)\s+\(generated", text, re.M)
            if m:
                self.admin_password = m.group(1)
                return
            if re.search(r"^\s*admin user\s", text, re.M):
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        path = os.path.join(self.home, "admin-password")
        if self.admin_password is None and os.path.exists(path):
            with open(path) as f:
                self.admin_password = f.read().strip()

    def stdout_this_run(self):
        return self._read_from(self.stdout_path, self._stdout_mark)

    def stderr_this_run(self):
        return self._read_from(self.stderr_path, self._stderr_mark)

    @staticmethod
    def _read_from(path, mark):
        try:
            with open(path, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stdout(self):
        return self._read_from(self.stdout_path, 0)

    def stderr(self):
        return self._read_from(self.stderr_path, 0)

    def stderr_tail(self, n=40):
        return "".join(self.stderr().splitlines(True)[-n:])

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _forget(self):
        with _lock:
            if self in _live:
                _live.remove(self)
        self.proc = None

    def _kill(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:
                pass
        self._forget()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, expect_rc=0):
        """SIGTERM, wait up to 10 s (then SIGKILL). Raises AssertionError when
        apimd did not exit with expect_rc, did not stop in time, or its
        stderr holds a sanitizer report. Returns the exit status."""
        if self.proc is None:
            return None
        proc = self.proc
        problems = []
        if proc.poll() is not None:
            problems.append("apimd had already exited with %d before stop()" % proc.returncode)
        else:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                problems.append("apimd did not exit within %.0f s of SIGTERM (killed)"
                                % STOP_TIMEOUT)
        rc = proc.returncode
        self._forget()
        if rc != expect_rc and not any("already exited" in p for p in problems):
            problems.append("apimd exited with %d, expected %d" % (rc, expect_rc))
        report = sanitizer_excerpt(self.stderr_this_run())
        if report:
            problems.append("sanitizer report in stderr")
        if problems:
            self.failed = True
            raise AssertionError("%s (home %s):\n%s" % (
                "; ".join(problems), self.home, report or self.stderr_tail()))
        return rc

    def wait_exit(self, timeout=START_TIMEOUT):
        """For a server expected to exit by itself (e.g. a start-up failure):
        waits up to timeout seconds and returns its exit status. Raises
        AssertionError when it is still running (it is killed) or stderr
        holds a sanitizer report."""
        if self.proc is None:
            raise RuntimeError("server not running")
        proc = self.proc
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            self.failed = True
            raise AssertionError("apimd still running after %.0f s (killed); stderr:\n%s" % (
                timeout, self.stderr_tail()))
        self._forget()
        report = sanitizer_excerpt(self.stderr_this_run())
        if report:
            self.failed = True
            raise AssertionError("sanitizer report in stderr (home %s):\n%s" % (
                self.home, report))
        return proc.returncode

    def restart(self):
        """Stops (checked as stop() does) and starts again on the same home,
        port and databases."""
        self.stop()
        return self.start()

    def cleanup(self):
        """Removes the home unless it should be kept (after stop)."""
        if self.home is None or self.proc is not None or self._cleaned:
            return
        self._cleaned = True
        if self.failed or os.environ.get("APIM_TEST_KEEP"):
            with _lock:
                if self.home not in _kept_homes:
                    _kept_homes.append(self.home)
            return
        shutil.rmtree(self.home, ignore_errors=True)

    # -- conveniences -------------------------------------------------------

    def client(self, username="admin", password=None, timeout=60):
        """Client with Basic auth. client() is the admin; client(None) is
        anonymous; client("alice", "pw") another user."""
        if username == "admin" and password is None:
            username, password = self.admin_username, self.admin_password
        return Client(self.base_url, username, password, timeout=timeout, server=self)

    def admin(self):
        return self.client()

    def anonymous(self):
        return self.client(None)

    def create_user(self, username, password, roles=(), **fields):
        """Creates a user through SCIM (/scim2/Users) and adds it to roles
        (SCIM groups named like the roles, e.g. "Internal/creator").
        Returns the created user's JSON (re-read when roles were set);
        raises AssertionError when SCIM refuses."""
        c = self.client()
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": username,
            "password": password,
        }
        body.update(fields)
        if roles:
            body["roles"] = [{"value": r, "display": r} for r in roles]
        r = c.post("/scim2/Users", json=body, content_type="application/scim+json")
        if r.status != 201:
            raise AssertionError("creating user %s via SCIM failed: %r" % (username, r))
        user = r.json
        have = {x.get("value") or x.get("display") for x in (user.get("roles") or [])
                if isinstance(x, dict)}
        have |= {x.get("display") for x in (user.get("groups") or []) if isinstance(x, dict)}
        missing = [role for role in roles if role not in have]
        for role in missing:
            self._add_to_group(c, role, user["id"], username)
        if missing:
            r = c.get("/scim2/Users/" + user["id"])
            if r.status == 200 and r.json:
                user = r.json
        return user

    def _add_to_group(self, c, role, user_id, username):
        r = c.get("/scim2/Groups", query={"filter": 'displayName eq "%s"' % role})
        groups = (r.json or {}).get("Resources") or [] if r.status == 200 else []
        if not groups:
            raise AssertionError("role %s not found as a SCIM group: %r" % (role, r))
        gid = groups[0]["id"]
        r = c.patch("/scim2/Groups/" + gid, json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members",
                            "value": [{"value": user_id, "display": username}]}],
        }, content_type="application/scim+json")
        if r.status not in (200, 204):
            raise AssertionError("adding %s to role %s via SCIM failed: %r" % (
                username, role, r))

    def metrics(self):
        """/metrics text (anonymous)."""
        return self.client(None).get("/metrics").text

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.cleanup()
        return False


_shared = {}


def shared(**kwargs):
    """The ApimServer of the calling test module, started on first use and
    stopped at interpreter exit (or by stop_all()). kwargs are used on the
    first call only."""
    mod = sys._getframe(1).f_globals.get("__name__", "?")
    with _lock:
        srv = _shared.get(mod)
        if srv is None:
            srv = ApimServer(**kwargs)
            _shared[mod] = srv
    if srv.proc is None:
        srv.start()
    return srv


def stop_all():
    """Stops every server still running (shared ones included) and drops the
    PostgreSQL databases of this process. Returns a list of problems (strings):
    empty when every apimd exited cleanly."""
    problems = []
    with _lock:
        servers = list(_live)
    for srv in servers:
        try:
            srv.stop()
        except Exception as e:  # noqa: BLE001 - collect every failure
            problems.append(str(e))
        srv.cleanup()
    with _lock:
        every = list(_all_servers)
    for srv in every:
        if srv.proc is None:
            srv.cleanup()
    with _lock:
        dbs = list(_pg_databases)
        _pg_databases.clear()
        _shared.clear()
    for base, name in dbs:
        try:
            psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, url=base)
        except Exception:
            pass  # the throwaway cluster goes away anyway
    return problems


def kept_homes(clear=False):
    """Homes kept for inspection; clear=True: the caller reports them, so
    the exit handler does not report them again."""
    with _lock:
        out = list(_kept_homes)
        if clear:
            _kept_homes.clear()
    return out


@atexit.register
def _at_exit():
    problems = stop_all()
    for h in _kept_homes:
        sys.stderr.write("apimtest: kept server home %s\n" % h)
    if problems:
        sys.stderr.write("apimtest: FAILED at exit: %s\n" % "\n".join(problems))
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
