#!/usr/bin/env python3
"""apimcluster: a local apim cluster on 127.0.0.1, one process per node.

    python3 scripts/apimcluster.py start [--root var/cluster] [--split] [--offset N] [--fresh]
    python3 scripts/apimcluster.py stop|status [--root var/cluster]
    python3 scripts/apimcluster.py node stop|start|kill|restart NAME [--root var/cluster]

(`make cluster` / `make cluster-stop` run the first two.) The nodes, in
start order:

    postgres        PostgreSQL 15 with apimgtdb and shareddb (deploy/postgresql)
    nats1, nats2    a NATS cluster (deploy/nats/nats.conf, --routes to each other)
    cp1, cp2        apimd --profile control-plane (deploy/conf/control-plane.conf),
                    or with --split: publisher, devportal, km (one node each)
    lb              nginx: the load balancer (deploy/nginx/apim-lb.conf), TLS
    tm1, tm2        apimd --profile traffic-manager (no database)
    gw1, gw2        apimd --profile gateway: nginx + ngx_http_apim_module (no database)

Every file lives under the root folder: <root>/<node>/ (configuration,
home, data), <root>/logs/ (one log per node), <root>/cluster.json (ports,
pids, URLs) and <root>/secrets.json (mode 0600: database passwords, the
gateway credential, the Key Manager master key).

Ports from one base offset O (printed; all below 32768):

    load balancer   8280+O API (HTTP), 8243+O API (HTTPS),
                    9763+O REST (HTTP), 9443+O REST (HTTPS)
    PostgreSQL      5432+O
    NATS node i     4222+O+i clients, 6222+O+i routes, 8222+O+i monitoring
    control plane i 9443+O+i (apimd server.port_offset O+i)
    gateway i       8280+O+10+i (apimd server.port_offset O+10+i)

From Python (tests, tests/integration/test_cluster.py and the failure tests):

    import apimcluster
    c = apimcluster.Cluster(root, apimd, module=so, detach=False)
    c.start()                    # every node, each waited for until ready
    c.gateway_url, c.control_plane_url          # through the load balancer
    c.admin_password, c.gateway_credential
    c.names("gateway") -> ["gw1", "gw2"];  c.node("gw1").url / .port / .pid
    c.kill("gw1"); c.start_node("gw1"); c.stop_node("cp2"); c.restart("postgres")
    c.kill("gw1", group=True)    # apimd, nginx master and workers at once
    c.wait_ready("gw1", timeout=30)
    c.node("gw1").access_log, c.node("cp1").log   # per-node logs, all in c.log_dir
    c.stop()                     # everything, in reverse order (idempotent)

As root, PostgreSQL runs as the `postgres` user (runuser) and the nginx
workers (gateways and load balancer) as `nobody`.
"""

import argparse
import base64
import ctypes
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEPLOY = os.path.join(REPO, "deploy")
PG_BIN = os.environ.get("APIM_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")
NGINX = "/usr/sbin/nginx"
NATS = "nats-server"

# ports before the offset
LB_GATEWAY_HTTP, LB_GATEWAY_HTTPS = 8280, 8243
LB_CP_HTTP, LB_CP_HTTPS = 9763, 9443
PG_PORT = 5432
NATS_CLIENT, NATS_CLUSTER, NATS_MONITOR = 4222, 6222, 8222
CP_PORT, GW_PORT = 9443, 8280
GW_OFFSET, TM_OFFSET = 10, 20

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ClusterError(RuntimeError):
    pass


# -- small helpers ---------------------------------------------------------------

def port_is_free(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid):
    """1 when pid runs (a zombie does not count)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(step)


def http_get(url, timeout=2.0, headers=None):
    """(status, body bytes); status 0 when nothing answered."""
    ctx = ssl._create_unverified_context()
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def render(template, values):
    """The text of deploy/<template> with every @NAME@ replaced."""
    with open(os.path.join(DEPLOY, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    if "@" in text:
        left = sorted({w for w in text.split("@")[1::2] if w.isupper() and " " not in w})
        if left:
            raise ClusterError("%s: no value for %s" % (template, ", ".join(left)))
    return text


def toml_str(v):
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def merge_conf_text(text, extra):
    """Adds {"section": {"key": value}} to apim.conf text: keys of an
    existing section replace (or join) it, other sections are appended."""
    lines = text.splitlines()
    for section, keys in (extra or {}).items():
        rendered = {}
        for k, v in keys.items():
            rendered[k] = ("true" if v else "false") if isinstance(v, bool) else \
                str(v) if isinstance(v, int) else toml_str(v)
        head = "[%s]" % section
        if head in lines:
            i = lines.index(head) + 1
            j = i
            while j < len(lines) and not lines[j].startswith("["):
                j += 1
            body = [ln for ln in lines[i:j]
                    if ln.split("=")[0].strip() not in rendered]
            while body and not body[-1].strip():
                body.pop()
            body += ["%s = %s" % kv for kv in rendered.items()] + [""]
            lines[i:j] = body
        else:
            lines += ["", head] + ["%s = %s" % kv for kv in rendered.items()]
    return "\n".join(lines) + "\n"


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def clean_env():
    """This environment without APIM_<SECTION>_<KEY> overrides: every node
    runs on its own apim.conf only."""
    return {k: v for k, v in os.environ.items()
            if not (k.startswith("APIM_") and not k.startswith("APIM_TEST_"))}


def is_root():
    return os.geteuid() == 0


# -- nodes -----------------------------------------------------------------------

class Node:
    """One process of the cluster. kind: postgres, nats, control-plane,
    traffic-manager, gateway, lb."""

    kind = "?"
    stop_signal = signal.SIGTERM

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.dir = os.path.join(cluster.root, name)
        self.log = os.path.join(cluster.log_dir, name + ".log")
        self.out = os.path.join(cluster.log_dir, name + ".out")
        self.proc = None
        self.pid = None
        self.port = None
        self.url = None
        self._out_mark = 0
        self._log_mark = 0

    # what cluster.json keeps of a node
    def state(self):
        return {"kind": self.kind, "pid": self.pid, "port": self.port, "url": self.url,
                "log": self.log}

    def load_state(self, st):
        self.pid = st.get("pid")

    def argv(self):
        raise NotImplementedError

    def prepare(self):
        """Folders and configuration (every start)."""
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)

    def spawn(self):
        self.prepare()
        self._out_mark = os.path.getsize(self.out) if os.path.exists(self.out) else 0
        self._log_mark = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        with open(self.out, "ab") as o, open(self.log, "ab") as e:
            self.proc = subprocess.Popen(
                self.argv(), cwd=self.dir, env=clean_env(), stdin=subprocess.DEVNULL,
                stdout=o, stderr=e, start_new_session=True,
                preexec_fn=None if self.cluster.detach else die_with_parent)
        self.pid = self.proc.pid

    def start(self, wait=True, timeout=START_TIMEOUT):
        if self.running():
            return self
        self.spawn()
        self.cluster.save()
        if wait:
            self.wait_ready(timeout)
        return self

    def ready(self):
        raise NotImplementedError

    def wait_ready(self, timeout=START_TIMEOUT):
        ok = wait_for(lambda: not self.running() or self.ready(), timeout)
        if not self.running():
            raise ClusterError("%s exited during start-up; %s:\n%s" % (
                self.name, self.log, tail(self.log) or tail(self.out)))
        if not ok:
            raise ClusterError("%s not ready within %.0f s; %s:\n%s" % (
                self.name, timeout, self.log, tail(self.log) or tail(self.out)))
        return self

    def running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid) and self.cluster.root in pid_cmdline(self.pid)

    def _reap(self):
        if self.proc is not None:
            try:
                self.proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass

    def send_signal(self, sig):
        if self.pid and self.running():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status when
        this process started the node (None otherwise)."""
        if self.running():
            self.send_signal(self.stop_signal)
            if self.proc is not None:
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            elif not wait_for(lambda: not self.running(), timeout):
                self.send_signal(signal.SIGKILL)
                wait_for(lambda: not self.running(), 5)
        rc = self.proc.returncode if self.proc is not None else None
        self.proc = None
        self.pid = None
        self.children_gone()
        self.cluster.save()
        return rc

    def kill(self, sig=signal.SIGKILL, group=False):
        """A crash: sig (SIGKILL) to the node's main process, waited for;
        group=True: to its whole process group at once (a gateway's apimd,
        nginx master and workers, as when the machine dies)."""
        if group and self.pid and self.running():
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        else:
            self.send_signal(sig)
        wait_for(lambda: (self._reap() or True) and not self.running(), 10)
        self.proc = None
        self.pid = None
        self.children_gone()
        self.cluster.save()

    def children_gone(self, timeout=10):
        """Waits until what the node's process started is gone too."""
        return True

    def restart(self, wait=True):
        self.stop()
        return self.start(wait=wait)

    def log_this_run(self):
        try:
            with open(self.log, "rb") as f:
                f.seek(self._log_mark)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def out_this_run(self):
        try:
            with open(self.out, "rb") as f:
                f.seek(self._out_mark)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class PostgresNode(Node):
    """PostgreSQL 15 in <root>/postgres (data, socket), set up by
    deploy/postgresql/setup.sql, password (SCRAM) logins over TCP per
    deploy/postgresql/pg_hba.conf. As root it runs as `postgres`."""

    kind = "postgres"

    def __init__(self, cluster, name="postgres"):
        super().__init__(cluster, name)
        self.port = PG_PORT + cluster.offset
        self.data = os.path.join(self.dir, "data")
        self.url = "postgresql://127.0.0.1:%d" % self.port

    def _cmd(self, argv):
        return (["runuser", "-u", "postgres", "--"] + argv) if is_root() else argv

    def _run(self, argv, input=None, timeout=120):
        r = subprocess.run(self._cmd(argv), cwd=self.dir, input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, env=clean_env())
        if r.returncode != 0:
            raise ClusterError("%s failed (%d):\n%s%s" % (
                os.path.basename(argv[0]), r.returncode, r.stdout, tail(self.log)))
        return r.stdout

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not os.path.exists(self.log):
            open(self.log, "a").close()
        if is_root():
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chown(self.log, pw.pw_uid, pw.pw_gid)

    def opts(self):
        o = "-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300" % (
            self.port, self.dir)
        if self.cluster.fast:
            o += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        return o

    def initialised(self):
        return os.path.exists(os.path.join(self.data, "PG_VERSION"))

    def start(self, wait=True, timeout=START_TIMEOUT):
        if self.running():
            return self
        if not os.path.exists(os.path.join(PG_BIN, "pg_ctl")):
            raise ClusterError("PostgreSQL 15 not found in %s" % PG_BIN)
        self.prepare()
        fresh = not self.initialised()
        if fresh:
            self._run([os.path.join(PG_BIN, "initdb"), "--no-sync", "-U", "postgres",
                       "-E", "UTF8", "--locale=C", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "-D", self.data])
            # deploy/postgresql/pg_hba.conf; the local socket (in a folder
            # only the owner may enter) trusts its owner instead of peer
            # authentication, so that a non-root user can run it too
            with open(os.path.join(DEPLOY, "postgresql", "pg_hba.conf")) as f:
                hba = f.read().replace("   peer\n", "   trust\n")
            path = os.path.join(self.data, "pg_hba.conf")
            with open(path, "w") as f:
                f.write(hba)
            if is_root():
                pw = pwd.getpwnam("postgres")
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.ctl("start")
        self._watch()
        if fresh:
            sec = self.cluster.secrets
            with open(os.path.join(DEPLOY, "postgresql", "setup.sql")) as f:
                sql = f.read()
            # the passwords go in on stdin, never on a command line
            script = ("\\set apimgt_password '%s'\n\\set shared_password '%s'\n%s" % (
                sec["apimgt_password"], sec["shared_password"], sql))
            self.psql(script)
        self.cluster.save()
        return self

    def _watch(self):
        """Unless detached: a watchdog that stops this PostgreSQL (which
        pg_ctl detached) when the process that started it dies without
        stopping the cluster (a killed test run)."""
        if self.cluster.detach or getattr(self, "_watchdog", None) is not None:
            return
        stop = " ".join("'%s'" % a for a in self._cmd(
            [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]))
        self._watchdog = subprocess.Popen(
            ["sh", "-c", "while kill -0 %d 2>/dev/null; do sleep 1; done; %s" % (
                os.getpid(), stop)], cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def _unwatch(self):
        w = getattr(self, "_watchdog", None)
        if w is not None:
            w.kill()
            w.wait()
            self._watchdog = None

    def psql(self, script, db="postgres"):
        """Runs SQL as the superuser on the local socket; returns the output."""
        return self._run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                          "-d", db, "-f", "-"], input=script)

    def ctl(self, action, mode=None):
        """pg_ctl start, stop or restart (mode: smart, fast, immediate)."""
        argv = [os.path.join(PG_BIN, "pg_ctl"), "-w", "-t", "60", "-D", self.data]
        if action in ("start", "restart"):
            argv += ["-l", self.log, "-o", self.opts()]
        if mode:
            argv += ["-m", mode]
        out = self._run(argv + [action])
        self.pid = self._postmaster_pid() if action != "stop" else None
        self.cluster.save()
        return out

    def _postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self._postmaster_pid()
        # "-k <dir>" is on the command line of every start (-D is not, after
        # pg_ctl restart)
        return bool(pid) and pid_alive(pid) and self.dir in pid_cmdline(pid)

    def ready(self):
        return port_open(self.port)

    def stop(self, timeout=STOP_TIMEOUT):
        if self.running():
            try:
                self.ctl("stop", "fast")
            except ClusterError:
                self.ctl("stop", "immediate")
        self._unwatch()
        self.pid = None
        self.cluster.save()

    def kill(self, sig=signal.SIGKILL, group=False):
        """A crash: immediate shutdown (no checkpoint; recovery at the next
        start)."""
        if self.running():
            self.ctl("stop", "immediate")
        self.pid = None
        self.cluster.save()

    def restart(self, wait=True):
        if self.running():
            self.ctl("restart", "fast")
            self._watch()
            return self
        return self.start()

    def url_for(self, db):
        sec = self.cluster.secrets
        user, pw = {"apimgtdb": ("apim_apimgt", sec["apimgt_password"]),
                    "shareddb": ("apim_shared", sec["shared_password"])}[db]
        return "postgresql://%s:%s@127.0.0.1:%d/%s" % (user, pw, self.port, db)


class NatsNode(Node):
    kind = "nats"
    stop_signal = signal.SIGINT   # nats-server exits 0 on SIGINT, 1 on SIGTERM

    def __init__(self, cluster, name, index):
        super().__init__(cluster, name)
        self.index = index
        off = cluster.offset + index
        self.port = NATS_CLIENT + off
        self.cluster_port = NATS_CLUSTER + off
        self.monitor_port = NATS_MONITOR + off
        self.url = "nats://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.dir, "nats.conf")

    def prepare(self):
        super().prepare()
        peers = [n for n in self.cluster.by_kind("nats") if n is not self]
        routes = "\n".join('    "nats://127.0.0.1:%d"' % p.cluster_port for p in peers)
        with open(self.conf, "w") as f:
            f.write(render("nats/nats.conf", {
                "NAME": self.name, "HOST": "127.0.0.1", "CLIENT_PORT": self.port,
                "MONITOR_PORT": self.monitor_port, "CLUSTER_PORT": self.cluster_port,
                "ROUTES": routes, "DIR": self.dir, "LOG_FILE": self.log}))

    def argv(self):
        return [NATS, "-c", self.conf]

    def ready(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if not s.makefile("rb").readline().startswith(b"INFO "):
                    return False
        except OSError:
            return False
        return True

    def routes(self):
        """How many other NATS servers this one is connected to."""
        st, body = http_get("http://127.0.0.1:%d/routez" % self.monitor_port)
        if st != 200:
            return 0
        try:
            return int(json.loads(body).get("num_routes", 0))
        except ValueError:
            return 0


class ApimNode(Node):
    """apimd with one profile and deploy/conf/<template>."""

    def __init__(self, cluster, name, kind, profile, template, port_offset):
        super().__init__(cluster, name)
        self.kind = kind
        self.profile = profile
        self.template = template
        self.port_offset = port_offset
        self.home = os.path.join(self.dir, "home")
        self.conf = os.path.join(self.dir, "apim.conf")
        if kind in ("control-plane", "traffic-manager"):
            # a Traffic Manager serves /health/* and /metrics there
            self.port = CP_PORT + port_offset
            self.url = "http://127.0.0.1:%d" % self.port
        elif kind == "gateway":
            self.port = GW_PORT + port_offset
            self.url = "http://127.0.0.1:%d" % self.port
            self.access_log = os.path.join(self.home, "gateway", "access.log")
            self.error_log = os.path.join(self.home, "gateway", "error.log")

    def prepare(self):
        super().prepare()
        # apimd makes its home 0750; the gateway's nginx workers (nobody
        # when root) must reach <home>/gateway/cache
        os.makedirs(self.home, exist_ok=True)
        os.chmod(self.home, 0o755 if self.kind == "gateway" else 0o750)
        c = self.cluster
        pg = c.nodes.get("postgres")
        values = {
            "HOME": self.home, "HOST": "127.0.0.1", "HOSTNAME": "localhost",
            "PORT_OFFSET": self.port_offset,
            "APIMGTDB_URL": pg.url_for("apimgtdb") if pg else "",
            "SHAREDDB_URL": pg.url_for("shareddb") if pg else "",
            "MASTER_KEY": c.secrets["master_key"],
            "ISSUER": "https://localhost:%d/oauth2/token" % (LB_CP_HTTPS + c.offset),
            "EVENT_HUB_URL": c.event_hub_for(self),
            "GATEWAY_CREDENTIAL": c.secrets["gateway_credential"],
            "CONTROL_PLANE_URL": c.lb_control_plane_url,
            "GATEWAY_LABEL": "Default", "GATEWAY_WORKERS": c.gateway_workers,
            "GATEWAY_USER": "nobody" if is_root() else "",
            "MODULE_PATH": c.module or "",
            "TRUSTED_PROXIES": "127.0.0.1",     # the load balancer's address
            "LOG_FORMAT": c.log_format,
        }
        text = merge_conf_text(render(self.template, values),
                               c.extra_conf.get(self.kind) or {})
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(self.conf, 0o600)
        if self.kind == "gateway":
            link = os.path.join(c.log_dir, self.name + "-access.log")
            if not os.path.lexists(link):
                os.symlink(self.access_log, link)

    def argv(self):
        return [self.cluster.apimd, "--profile", self.profile, "--config", self.conf]

    def ready(self):
        if self.kind == "gateway":
            return "ready in" in self.out_this_run() and port_open(self.port)
        # a control plane: its databases answer; a Traffic Manager: it is
        # connected to the event hub and has read the rate-limit policies
        st, _ = http_get(self.url + "/health/ready")
        return st == 200

    def children_gone(self, timeout=10):
        """A gateway: until its nginx (which dies with apimd) let go of the
        port, so that the node can start again at once."""
        if self.kind != "gateway":
            return True

        def gone():
            pid = self.nginx_pid()
            alive = pid and pid_alive(pid) and self.home in pid_cmdline(pid)
            return not alive and not port_open(self.port)
        return wait_for(gone, timeout)

    def nginx_pid(self):
        """The gateway's nginx master (a child of apimd)."""
        try:
            with open(os.path.join(self.home, "gateway", "nginx.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


class LoadBalancerNode(Node):
    kind = "lb"

    def __init__(self, cluster, name="lb"):
        super().__init__(cluster, name)
        off = cluster.offset
        self.gateway_http = LB_GATEWAY_HTTP + off
        self.gateway_https = LB_GATEWAY_HTTPS + off
        self.cp_http = LB_CP_HTTP + off
        self.cp_https = LB_CP_HTTPS + off
        self.port = self.gateway_http
        self.url = "http://127.0.0.1:%d" % self.gateway_http
        self.log = os.path.join(cluster.log_dir, "lb-error.log")
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.cert = os.path.join(self.dir, "lb.crt")
        self.key = os.path.join(self.dir, "lb.key")

    def _tls(self):
        if os.path.exists(self.cert) and os.path.exists(self.key):
            return
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", self.key, "-out", self.cert, "-days", "365",
                            "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            raise ClusterError("openssl: %s" % r.stdout)
        os.chmod(self.key, 0o600)

    def prepare(self):
        super().prepare()
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self._tls()
        c = self.cluster

        def servers(nodes):
            return "\n".join("        server 127.0.0.1:%d max_fails=2 fail_timeout=5s;" % n.port
                             for n in nodes)
        cps = c.by_kind("control-plane")

        def role(profile):
            own = [n for n in cps if n.profile in (profile, "control-plane")]
            return servers(own or cps)
        text = render("nginx/apim-lb.conf", {
            "USER": "nobody nogroup", "WORKERS": 1, "DIR": self.dir, "LOG_DIR": c.log_dir,
            "HOST": "127.0.0.1",
            "GATEWAY_SERVERS": servers(c.by_kind("gateway")),
            "PUBLISHER_SERVERS": role("publisher"),
            "DEVPORTAL_SERVERS": role("devportal"),
            "KEYMANAGER_SERVERS": role("key-manager"),
            "CONTROL_PLANE_SERVERS": servers(cps),
            "TLS_CERT": self.cert, "TLS_KEY": self.key,
            "GATEWAY_HTTP_PORT": self.gateway_http, "GATEWAY_HTTPS_PORT": self.gateway_https,
            "CONTROL_PLANE_HTTP_PORT": self.cp_http,
            "CONTROL_PLANE_HTTPS_PORT": self.cp_https})
        if not is_root():
            # nginx ignores `user` (with a warning) unless started as root
            text = text.replace("\nuser nobody nogroup;\n",
                                "\n# user nobody nogroup;  (not root: runs as %s)\n" %
                                pwd.getpwuid(os.geteuid()).pw_name)
        with open(self.conf, "w") as f:
            f.write(text)

    def argv(self):
        return [NGINX, "-p", self.dir + "/", "-c", self.conf, "-e", self.log,
                "-g", "daemon off; master_process on;"]

    def ready(self):
        st, _ = http_get("http://127.0.0.1:%d/health/live" % self.cp_http)
        return st == 200 and port_open(self.gateway_http) and port_open(self.gateway_https)

    def reload(self):
        """Renders the configuration again and reloads nginx (SIGHUP)."""
        self.prepare()
        self.send_signal(signal.SIGHUP)


# -- the cluster -----------------------------------------------------------------

class Cluster:
    """A local cluster under root (see the module's doc).

    apimd: the apimd binary; module: ngx_http_apim_module.so (None: the
    one apimd finds next to itself). offset: the base port offset (None: a
    free one). split: separate publisher, devportal and km nodes instead of
    cp1 and cp2. detach: the nodes outlive this process (make cluster);
    otherwise they die with it (tests). fast: PostgreSQL without fsync.
    extra_conf: {kind: {"section": {"key": value}}} added to the apim.conf
    of every node of that kind (control-plane, gateway, traffic-manager).
    gateway_hub: "all" (every gateway lists every NATS server, the default)
    or "own" (each gateway on one NATS server of its own, see event_hub_for).
    """

    def __init__(self, root, apimd=None, module=None, offset=None, split=False,
                 detach=False, fast=True, gateways=2, traffic_managers=2, nats=2,
                 extra_conf=None, gateway_workers=1, log_format="text", out=None,
                 gateway_hub="all"):
        self.root = os.path.abspath(root)
        self.log_dir = os.path.join(self.root, "logs")
        self.state_path = os.path.join(self.root, "cluster.json")
        self.secrets_path = os.path.join(self.root, "secrets.json")
        self.apimd = os.path.abspath(apimd) if apimd else None
        self.module = os.path.abspath(module) if module else None
        self.split = split
        self.detach = detach
        self.fast = fast
        self.counts = {"gateway": gateways, "traffic-manager": traffic_managers, "nats": nats}
        self.extra_conf = extra_conf or {}
        self.gateway_workers = gateway_workers
        self.gateway_hub = gateway_hub
        self.log_format = log_format
        self.out = out or (lambda s: None)
        self.offset = offset
        self.secrets = None
        self.nodes = {}
        self._saving = False

    # -- layout ---------------------------------------------------------------

    def _ports(self, off):
        ports = [LB_GATEWAY_HTTP + off, LB_GATEWAY_HTTPS + off, LB_CP_HTTP + off,
                 LB_CP_HTTPS + off, PG_PORT + off]
        for i in range(1, self.counts["nats"] + 1):
            ports += [NATS_CLIENT + off + i, NATS_CLUSTER + off + i, NATS_MONITOR + off + i]
        for i in range(1, 4):
            ports.append(CP_PORT + off + i)
        for i in range(1, self.counts["gateway"] + 1):
            ports.append(GW_PORT + off + GW_OFFSET + i)
        return ports

    def pick_offset(self):
        """A base offset (a multiple of 10 in 1000..22000) whose every port
        is free now."""
        rnd = random.SystemRandom()
        for _ in range(300):
            off = rnd.randrange(100, 2200) * 10
            if all(port_is_free(p) for p in self._ports(off)):
                return off
        raise ClusterError("no free ports found for a cluster")

    def _layout(self):
        self.nodes = {}
        self.nodes["postgres"] = PostgresNode(self)
        for i in range(1, self.counts["nats"] + 1):
            self.nodes["nats%d" % i] = NatsNode(self, "nats%d" % i, i)
        off = self.offset
        if self.split:
            for i, (name, profile) in enumerate((("publisher", "publisher"),
                                                 ("devportal", "devportal"),
                                                 ("km", "key-manager")), 1):
                self.nodes[name] = ApimNode(self, name, "control-plane", profile,
                                            "conf/%s.conf" % profile, off + i)
        else:
            for i in (1, 2):
                self.nodes["cp%d" % i] = ApimNode(self, "cp%d" % i, "control-plane",
                                                  "control-plane", "conf/control-plane.conf",
                                                  off + i)
        self.nodes["lb"] = LoadBalancerNode(self)
        for i in range(1, self.counts["traffic-manager"] + 1):
            self.nodes["tm%d" % i] = ApimNode(self, "tm%d" % i, "traffic-manager",
                                              "traffic-manager", "conf/traffic-manager.conf",
                                              off + TM_OFFSET + i)
        for i in range(1, self.counts["gateway"] + 1):
            self.nodes["gw%d" % i] = ApimNode(self, "gw%d" % i, "gateway", "gateway",
                                              "conf/gateway.conf", off + GW_OFFSET + i)

    def by_kind(self, kind):
        return [n for n in self.nodes.values() if n.kind == kind]

    def names(self, kind=None):
        return [n.name for n in self.nodes.values() if kind is None or n.kind == kind]

    def node(self, name):
        try:
            return self.nodes[name]
        except KeyError:
            raise ClusterError("no node %r (nodes: %s)" % (name, ", ".join(self.nodes)))

    # -- URLs -----------------------------------------------------------------

    @property
    def lb(self):
        return self.nodes["lb"]

    @property
    def gateway_url(self):
        """API traffic through the load balancer (HTTP)."""
        return "http://127.0.0.1:%d" % (LB_GATEWAY_HTTP + self.offset)

    @property
    def gateway_https_url(self):
        return "https://127.0.0.1:%d" % (LB_GATEWAY_HTTPS + self.offset)

    @property
    def control_plane_url(self):
        """REST APIs through the load balancer (HTTP)."""
        return self.lb_control_plane_url

    @property
    def lb_control_plane_url(self):
        return "http://127.0.0.1:%d" % (LB_CP_HTTP + self.offset)

    @property
    def control_plane_https_url(self):
        return "https://127.0.0.1:%d" % (LB_CP_HTTPS + self.offset)

    @property
    def event_hub_url(self):
        return ",".join(n.url for n in self.by_kind("nats"))

    def event_hub_for(self, node):
        """event_hub.url of an apimd node: every NATS server, except for a
        gateway when gateway_hub is "own": then the one NATS server of its
        own (gw1 nats1, gw2 nats2, ...), to spread the gateways over the
        servers; the NATS cluster routes the messages between them, and a
        connected client learns the other servers and fails over to them."""
        nats = self.by_kind("nats")
        if node.kind == "gateway" and self.gateway_hub == "own" and nats:
            i = self.by_kind("gateway").index(node)
            return nats[i % len(nats)].url
        return ",".join(n.url for n in nats)

    @property
    def postgres(self):
        return self.nodes["postgres"]

    @property
    def admin_password(self):
        first = self.by_kind("control-plane")[0]
        try:
            with open(os.path.join(first.home, "admin-password")) as f:
                return f.read().strip()
        except OSError:
            return None

    @property
    def gateway_credential(self):
        return self.secrets["gateway_credential"]

    # -- state ----------------------------------------------------------------

    def save(self):
        if not self.nodes or not os.path.isdir(self.root):
            return
        st = {"root": self.root, "offset": self.offset, "split": self.split,
              "apimd": self.apimd, "module": self.module, "counts": self.counts,
              "gateway_workers": self.gateway_workers, "log_format": self.log_format,
              "gateway_hub": self.gateway_hub, "fast": self.fast,
              "urls": self.urls(), "nodes": {n.name: n.state() for n in self.nodes.values()}}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f, indent=2)
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, root, out=None):
        """The cluster whose cluster.json is under root (None: none there)."""
        path = os.path.join(os.path.abspath(root), "cluster.json")
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return None
        counts = st.get("counts") or {}
        c = cls(root, apimd=st.get("apimd"), module=st.get("module"), offset=st["offset"],
                split=st.get("split", False), detach=True,
                gateways=counts.get("gateway", 2),
                traffic_managers=counts.get("traffic-manager", 2), nats=counts.get("nats", 2),
                gateway_workers=st.get("gateway_workers", 1),
                log_format=st.get("log_format", "text"), out=out,
                gateway_hub=st.get("gateway_hub", "all"), fast=st.get("fast", False))
        c._load_secrets()
        c._layout()
        for name, ns in (st.get("nodes") or {}).items():
            if name in c.nodes:
                c.nodes[name].load_state(ns)
        return c

    def _load_secrets(self):
        try:
            with open(self.secrets_path) as f:
                self.secrets = json.load(f)
            return
        except (OSError, ValueError):
            pass
        self.secrets = {
            "gateway_credential": secrets.token_urlsafe(32),
            "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "apimgt_password": secrets.token_urlsafe(24),
            "shared_password": secrets.token_urlsafe(24),
        }
        fd = os.open(self.secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.secrets, f, indent=2)

    def urls(self):
        off = self.offset
        u = {
            "gateway (API traffic)": self.gateway_url,
            "gateway over TLS": self.gateway_https_url,
            "control plane (REST)": self.control_plane_url,
            "control plane over TLS": self.control_plane_https_url,
            "publisher": self.control_plane_https_url + "/api/am/publisher/v4",
            "admin": self.control_plane_https_url + "/api/am/admin/v4",
            "devportal": self.control_plane_https_url + "/api/am/devportal/v3",
            "token endpoint": self.control_plane_https_url + "/oauth2/token",
            "event hub": self.event_hub_url,
            "postgresql": "127.0.0.1:%d (apimgtdb, shareddb)" % (PG_PORT + off),
        }
        for n in self.nodes.values():
            if n.kind in ("control-plane", "gateway", "traffic-manager"):
                u["%s (%s)" % (n.name, n.kind if n.kind == "gateway" else n.profile)] = n.url
        return u

    # -- life cycle -----------------------------------------------------------

    def start(self, timeout=START_TIMEOUT):
        """Starts every node in order, each waited for until ready."""
        if self.apimd is None or not os.access(self.apimd, os.X_OK):
            raise ClusterError("apimd not found: %s (make build)" % self.apimd)
        for prog in (NGINX, os.path.join(PG_BIN, "pg_ctl")):
            if not os.access(prog, os.X_OK):
                raise ClusterError("%s not installed (scripts/bootstrap)" % prog)
        if shutil.which(NATS) is None:
            raise ClusterError("nats-server not installed (scripts/bootstrap)")
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)   # postgres and nobody reach their folders
        os.makedirs(self.log_dir, exist_ok=True)
        os.chmod(self.log_dir, 0o755)
        if self.offset is None:
            self.offset = self.pick_offset()
        self._load_secrets()
        self._layout()
        self.save()
        t0 = time.monotonic()
        try:
            self.out("cluster: base port offset %d, folder %s" % (self.offset, self.root))
            self.postgres.start()
            self.out("  postgres     127.0.0.1:%d  ready" % self.postgres.port)
            nats = self.by_kind("nats")
            for n in nats:
                n.start(wait=False)
            for n in nats:
                n.wait_ready(timeout)
            if len(nats) > 1 and not wait_for(
                    lambda: all(n.routes() >= len(nats) - 1 for n in nats), timeout, 0.1):
                raise ClusterError("the NATS servers did not form a cluster; %s" %
                                   tail(nats[0].log))
            self.out("  nats         %s  ready (cluster of %d)" % (self.event_hub_url, len(nats)))
            cps = self.by_kind("control-plane")
            # the first node creates the schema, the admin account and its
            # password, the signing keys; the others find them
            cps[0].start(timeout=timeout)
            for n in cps[1:]:
                n.start(wait=False)
            for n in cps[1:]:
                n.wait_ready(timeout)
            for n in cps:
                self.out("  %-12s %s  ready (%s)" % (n.name, n.url, n.profile))
            self.lb.start(timeout=timeout)
            self.out("  lb           %s (API), %s (REST)  ready" % (
                self.gateway_url, self.control_plane_url))
            rest = self.by_kind("traffic-manager") + self.by_kind("gateway")
            for n in rest:
                n.start(wait=False)
            for n in rest:
                n.wait_ready(timeout)
                self.out("  %-12s %s  ready" % (n.name, n.url or "(no port: NATS only)"))
        except BaseException:
            self.save()
            raise
        self.started_in = time.monotonic() - t0
        self.save()
        return self

    def stop(self):
        """Stops every node it finds running, in reverse order; idempotent.
        Returns {name: exit status} of the nodes this process started."""
        rcs = {}
        for n in reversed(list(self.nodes.values())):
            try:
                rc = n.stop()
            except ClusterError as e:
                self.out("cluster: stopping %s: %s" % (n.name, e))
                rc = None
            if rc is not None:
                rcs[n.name] = rc
        # a gateway's nginx outlives a killed apimd by a moment at most
        for n in self.by_kind("gateway"):
            pid = n.nginx_pid()
            if pid and pid_alive(pid) and n.home in pid_cmdline(pid):
                os.kill(pid, signal.SIGTERM)
        self.save()
        return rcs

    def start_node(self, name, wait=True, timeout=START_TIMEOUT):
        return self.node(name).start(wait=wait, timeout=timeout)

    def stop_node(self, name):
        return self.node(name).stop()

    def kill(self, name, sig=signal.SIGKILL, group=False):
        return self.node(name).kill(sig, group)

    def restart(self, name, wait=True):
        return self.node(name).restart(wait=wait)

    def wait_ready(self, name, timeout=START_TIMEOUT):
        return self.node(name).wait_ready(timeout)

    def status(self):
        """[(name, kind, pid or None, running, url)]"""
        out = []
        for n in self.nodes.values():
            r = n.running()
            pid = (n._postmaster_pid() if isinstance(n, PostgresNode) else n.pid) if r else None
            out.append((n.name, n.kind, pid, r, n.url))
        return out

    def sanitizer_reports(self):
        """{node: excerpt} of the apimd logs that hold a sanitizer report."""
        markers = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        found = {}
        for n in self.nodes.values():
            if isinstance(n, ApimNode):
                text = tail(n.log, 100000)
                lines = [ln for ln in text.splitlines() if any(m in ln for m in markers)]
                if lines:
                    found[n.name] = "\n".join(lines[:20])
        return found


# -- command line ----------------------------------------------------------------

def print_summary(c):
    print()
    print("apim cluster up (base port offset %d, folder %s)" % (c.offset, c.root))
    for k, v in c.urls().items():
        print("  %-26s %s" % (k, v))
    pw = c.admin_password
    print("  %-26s %s" % ("admin user", "admin"))
    print("  %-26s %s   (stored in %s/admin-password)" % (
        "admin password", pw, c.by_kind("control-plane")[0].home))
    print("  %-26s %s" % ("logs", c.log_dir))
    print("  %-26s %s" % ("TLS certificate (self-signed)", c.lb.cert))
    print()
    print("Try:  curl -sk -u admin:%s %s/api/am/publisher/v4/apis" % (
        pw, c.control_plane_https_url))
    print("Stop: make cluster-stop   (or python3 scripts/apimcluster.py stop --root %s)"
          % c.root)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["start", "stop", "status", "node"])
    ap.add_argument("args", nargs="*", help="node: stop|start|kill|restart NAME")
    ap.add_argument("--root", default=os.path.join(REPO, "var", "cluster"))
    ap.add_argument("--apimd", default=os.path.join(REPO, "build", "apimd"))
    ap.add_argument("--module", default=None,
                    help="ngx_http_apim_module.so (default: next to apimd)")
    ap.add_argument("--offset", type=int, default=None, help="base port offset")
    ap.add_argument("--split", action="store_true",
                    help="publisher, devportal and km nodes instead of cp1 and cp2")
    ap.add_argument("--fresh", action="store_true",
                    help="start from empty databases (removes the root folder first)")
    args = ap.parse_args(argv)
    say = lambda s: print(s, flush=True)  # noqa: E731

    existing = Cluster.load(args.root, out=say)
    if args.command == "stop":
        if existing is None:
            print("cluster: nothing to stop under %s" % args.root)
            return 0
        existing.stop()
        left = [n for n, _, _, r, _ in existing.status() if r]
        print("cluster: stopped%s" % (" (still running: %s)" % ", ".join(left) if left else ""))
        return 1 if left else 0
    if args.command == "status":
        if existing is None:
            print("cluster: none under %s" % args.root)
            return 1
        for name, kind, pid, r, url in existing.status():
            print("  %-10s %-16s %-8s %-8s %s" % (name, kind, pid or "-",
                                                 "running" if r else "stopped", url or ""))
        return 0
    if args.command == "node":
        if existing is None or len(args.args) != 2:
            ap.error("node stop|start|kill|restart NAME, on a cluster made by start")
        action, name = args.args
        n = existing.node(name)
        {"stop": n.stop, "start": n.start, "kill": n.kill, "restart": n.restart}[action]()
        print("cluster: %s %s" % (name, "running" if n.running() else "stopped"))
        return 0

    # start
    if existing is not None and any(r for _, _, _, r, _ in existing.status()):
        if not args.fresh:
            print("cluster: already running under %s (make cluster-stop first)" % args.root)
            print_summary(existing)
            return 0
        existing.stop()
    if args.fresh and os.path.isdir(args.root):
        shutil.rmtree(args.root)
        existing = None
    module = args.module
    if module is None:
        guess = os.path.join(os.path.dirname(os.path.abspath(args.apimd)),
                             "ngx_http_apim_module.so")
        module = guess if os.path.exists(guess) else None
    if existing is not None:
        # the same folder again: same ports, secrets and databases
        offset, split = existing.offset, existing.split
        if args.offset is not None and args.offset != offset:
            ap.error("%s was made with offset %d (use --fresh for another)" % (
                args.root, offset))
    else:
        offset, split = args.offset, args.split
    c = Cluster(args.root, apimd=args.apimd, module=module, offset=offset, split=split,
                detach=True, fast=False, out=say)
    try:
        c.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as e:
        print("cluster: %s" % e, file=sys.stderr)
        print("cluster: stopping what started", file=sys.stderr)
        c.stop()
        return 1
    print_summary(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
