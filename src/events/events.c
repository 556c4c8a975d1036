#include "events/events.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nats/nats.h>

#include "common/log.h"
#include "common/util.h"
#include "store/db.h"

#define EV_COMP "events"
#define EV_POLL_MS 50
#define EV_BATCH "500"
#define EV_HEARTBEAT_MS 1000
#define EV_FLUSH_MS 2000
#define EV_BACKOFF_MAX_MS 5000

/* rows one DELETE of the change-log purge removes at most */
#define EV_PURGE_BATCH 5000
#define EV_PURGE_BATCH_SQL "5000"
/* DELETEs of one purge round at most (the rest waits for the next round) */
#define EV_PURGE_ROUNDS 100

/* The one publisher of this process (one control plane per apimd). */
static struct {
	apim_ctx *ctx;
	pthread_t thread;
	int running;
	atomic_int stop;
	char url[1024];
	pid_t child;
	/* the change-log purge (its own thread: it runs without an event hub) */
	pthread_t purge_thread;
	int purge_running;
	atomic_llong log_rows, log_oldest, log_purged, purge_runs;
} ev = {.child = -1};

/* Sleeps ms in small steps; returns 1 when asked to stop. */
static int ev_sleep(int64_t ms)
{
	while (ms > 0 && !atomic_load(&ev.stop)) {
		int64_t step = ms < 50 ? ms : 50;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return atomic_load(&ev.stop);
}

/* Subject of a change row by its entity type. */
static void ev_subject(const char *type, char *out, size_t len)
{
	if (strcmp(type, "revoked_jwt") == 0)
		snprintf(out, len, "apim.revoke");
	else if (strcmp(type, "block") == 0)
		snprintf(out, len, "apim.block");
	else
		snprintf(out, len, "apim.notify.%s", type);
}

natsConnection *events_nats_connect(const char *urls, const char *name)
{
	natsOptions *o = NULL;
	natsConnection *nc = NULL;
	if (natsOptions_Create(&o) != NATS_OK)
		return NULL;
	/* a comma-separated list: every server of the cluster */
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", urls);
	const char *srv[16];
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t != NULL && n < 16; t = strtok_r(NULL, ",", &save))
		srv[n++] = t;
	natsStatus s = natsOptions_SetServers(o, srv, n);
	if (s == NATS_OK)
		s = natsOptions_SetName(o, name);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(o, true);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 250);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		natsConnection_Destroy(nc);
		return NULL;
	}
	return nc;
}

/* Publishes one JSON body on subject; NATS_OK or the error. */
static natsStatus ev_publish(natsConnection *nc, const char *subject, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);
	if (text == NULL)
		return NATS_NO_MEMORY;
	natsStatus s = natsConnection_Publish(nc, subject, text, (int)strlen(text));
	free(text);
	return s;
}

/*
 * Publishes the committed rows after *last (one batch) and waits for the
 * server's acknowledgement; advances *last only then. Returns the number
 * of rows published, or -1 on a NATS error (nothing advanced).
 */
static int ev_publish_batch(natsConnection *nc, int64_t *last)
{
	db *d = ev.ctx->apimgt;
	db_res *r = NULL;
	char from[32];
	snprintf(from, sizeof(from), "%lld", (long long)*last);
	apim_rc rc = db_exec(d, &r,
			     "SELECT seq, entity_type, entity_id, action, payload, created_ms"
			     " FROM am_change_log WHERE seq > ? ORDER BY seq LIMIT " EV_BATCH,
			     DB_ARGS(from));
	if (rc != APIM_OK)
		return 0; /* the database is away: try again at the next poll */
	size_t n = db_res_rows(r);
	int64_t upto = *last;
	natsStatus s = NATS_OK;
	for (size_t i = 0; i < n && s == NATS_OK; i++) {
		const char *type = db_res_get(r, i, 1);
		const char *payload = db_res_get(r, i, 4);
		json_t *pl = payload != NULL ? json_loads(payload, 0, NULL) : NULL;
		json_t *body = json_pack("{sI ss ss ss so sI}", "seq", (json_int_t)db_res_int(r, i, 0),
					 "type", type ? type : "", "id",
					 db_res_get(r, i, 2) ? db_res_get(r, i, 2) : "", "action",
					 db_res_get(r, i, 3) ? db_res_get(r, i, 3) : "", "payload",
					 pl != NULL ? pl : json_null(), "ts",
					 (json_int_t)db_res_int(r, i, 5));
		if (body == NULL) {
			s = NATS_NO_MEMORY;
			break;
		}
		char subject[128];
		ev_subject(type ? type : "unknown", subject, sizeof(subject));
		s = ev_publish(nc, subject, body);
		json_decref(body);
		upto = db_res_int(r, i, 0);
	}
	db_res_free(r);
	if (n == 0)
		return 0;
	if (s == NATS_OK)
		s = natsConnection_FlushTimeout(nc, EV_FLUSH_MS);
	if (s != NATS_OK) {
		log_warn(EV_COMP, "publishing changes after seq %lld failed (%s); will retry",
			 (long long)*last, natsStatus_GetText(s));
		return -1;
	}
	*last = upto;
	return (int)n;
}

static void *ev_main(void *arg)
{
	(void)arg;
	natsConnection *nc = NULL;
	int64_t last = -1, backoff = 100, next_beat = 0;
	int was_connected = 0;
	while (!atomic_load(&ev.stop)) {
		if (last < 0 && db_change_current(ev.ctx->apimgt, &last) != APIM_OK) {
			last = -1;
			ev_sleep(500);
			continue;
		}
		if (nc == NULL) {
			nc = events_nats_connect(ev.url, "apim-control-plane");
			if (nc == NULL) {
				if (was_connected || backoff == 100)
					log_warn(EV_COMP, "event hub %s unreachable; retrying", ev.url);
				was_connected = 0;
				ev_sleep(backoff);
				backoff = backoff * 2 > EV_BACKOFF_MAX_MS ? EV_BACKOFF_MAX_MS : backoff * 2;
				continue;
			}
			log_info(EV_COMP, "connected to the event hub %s; publishing from seq %lld",
				 ev.url, (long long)last);
			was_connected = 1;
			backoff = 100;
		}
		natsConnStatus st = natsConnection_Status(nc);
		if (st == NATS_CONN_STATUS_CLOSED) {
			natsConnection_Destroy(nc);
			nc = NULL;
			continue;
		}
		if (st != NATS_CONN_STATUS_CONNECTED) {
			if (was_connected)
				log_warn(EV_COMP, "lost the event hub %s; reconnecting (changes after "
						  "seq %lld wait)", ev.url, (long long)last);
			was_connected = 0;
			ev_sleep(EV_POLL_MS);
			continue; /* the library is reconnecting: keep our position */
		}
		if (!was_connected) {
			log_info(EV_COMP, "event hub %s is back; publishing from seq %lld", ev.url,
				 (long long)last);
			was_connected = 1;
		}
		int n = ev_publish_batch(nc, &last);
		if (n < 0) {
			ev_sleep(200);
			continue;
		}
		int64_t now = apim_mono_ms();
		if (now >= next_beat) {
			json_t *beat = json_pack("{sI sI}", "seq", (json_int_t)last, "ts",
						 (json_int_t)apim_now_ms());
			if (beat != NULL) {
				ev_publish(nc, "apim.notify.heartbeat", beat);
				json_decref(beat);
			}
			next_beat = now + EV_HEARTBEAT_MS;
		}
		if (n < 500)
			ev_sleep(EV_POLL_MS);
	}
	if (nc != NULL) {
		natsConnection_FlushTimeout(nc, 500);
		natsConnection_Close(nc);
		natsConnection_Destroy(nc);
	}
	return NULL;
}

/*
 * Spawns nats-server on 127.0.0.1:port; its output goes to /dev/null.
 * fork+exec rather than posix_spawn: the child asks the kernel for SIGTERM
 * when apimd dies (PR_SET_PDEATHSIG, tied to this thread, which is main's
 * and lives until exit), so that a killed apimd leaves no nats-server
 * behind. A CLOEXEC pipe reports an exec failure (missing binary).
 */
static apim_rc ev_spawn_local(int port)
{
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	char *const argv[] = {"nats-server", "-a", "127.0.0.1", "-p", portbuf, NULL};
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return APIM_EIO;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		log_error(EV_COMP, "cannot start the local event hub: fork: %s", strerror(errno));
		return APIM_EUNAVAIL;
	}
	if (pid == 0) {
		/* child: only async-signal-safe calls until exec */
		close(fds[0]);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
		}
		execvp(argv[0], argv);
		int e = errno;
		ssize_t w = write(fds[1], &e, sizeof(e));
		(void)w;
		_exit(127);
	}
	close(fds[1]);
	int child_errno = 0;
	ssize_t got = read(fds[0], &child_errno, sizeof(child_errno));
	close(fds[0]);
	if (got == (ssize_t)sizeof(child_errno)) {
		waitpid(pid, NULL, 0);
		log_error(EV_COMP, "cannot start the local event hub (nats-server: %s); "
				   "continuing without events: install nats-server or set event_hub.url",
			  strerror(child_errno));
		return APIM_EUNAVAIL;
	}
	/* a nats-server that cannot bind exits at once */
	for (int i = 0; i < 5; i++) {
		int status = 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			log_error(EV_COMP, "the local nats-server on 127.0.0.1:%d exited at start "
					   "(port in use?); continuing without events", port);
			return APIM_EUNAVAIL;
		}
		ev_sleep(20);
	}
	ev.child = pid;
	log_info(EV_COMP, "started the local event hub nats-server (pid %ld) on 127.0.0.1:%d",
		 (long)pid, port);
	return APIM_OK;
}

/*
 * One purge round: deletes the rows of am_change_log that are both beyond
 * the newest event_hub.change_log_keep_rows and older than
 * event_hub.change_log_keep_days, EV_PURGE_BATCH per DELETE (short
 * transactions, short locks). Several control-plane nodes may run it at
 * once: each DELETE names the rows by a bound on seq and age only, so a
 * row the other node took first is simply not deleted twice. Then counts
 * what is left, for /metrics.
 */
static void ev_purge_once(void)
{
	const apim_config *cfg = ev.ctx->cfg;
	db *d = ev.ctx->apimgt;
	int64_t seq = 0;
	if (db_change_current(d, &seq) != APIM_OK)
		return;
	char upto[32], before[32];
	snprintf(upto, sizeof(upto), "%lld", (long long)(seq - cfg->event_hub_change_log_keep_rows));
	snprintf(before, sizeof(before), "%lld",
		 (long long)(apim_now_ms() - cfg->event_hub_change_log_keep_days * 86400000LL));
	int64_t purged = 0;
	for (int i = 0; i < EV_PURGE_ROUNDS && !atomic_load(&ev.stop); i++) {
		db_res *r = NULL;
		apim_rc rc = db_exec(d, &r,
				     "DELETE FROM am_change_log WHERE seq IN (SELECT seq FROM"
				     " am_change_log WHERE seq <= ? AND created_ms < ? ORDER BY seq"
				     " LIMIT " EV_PURGE_BATCH_SQL ")",
				     DB_ARGS(upto, before));
		int64_t n = rc == APIM_OK ? db_res_changes(r) : 0;
		db_res_free(r);
		if (rc != APIM_OK) {
			log_warn(EV_COMP, "purging the change log failed; will retry");
			break;
		}
		purged += n;
		if (n < EV_PURGE_BATCH)
			break;
	}
	if (purged > 0)
		log_info(EV_COMP, "change log: purged %lld rows up to seq %s", (long long)purged, upto);
	atomic_fetch_add(&ev.log_purged, purged);
	db_res *r = NULL;
	if (db_exec(d, &r, "SELECT COUNT(*), MIN(seq) FROM am_change_log", DB_NOARGS) == APIM_OK &&
	    db_res_rows(r) == 1) {
		atomic_store(&ev.log_rows, db_res_int(r, 0, 0));
		atomic_store(&ev.log_oldest, db_res_int(r, 0, 1));
	}
	db_res_free(r);
	atomic_fetch_add(&ev.purge_runs, 1);
}

static void *ev_purge_main(void *arg)
{
	(void)arg;
	/* the first round soon after the start, then every purge_seconds */
	int64_t wait = 1000;
	while (!ev_sleep(wait)) {
		ev_purge_once();
		wait = ev.ctx->cfg->event_hub_change_log_purge_seconds * 1000;
	}
	return NULL;
}

void events_change_log_stats(int64_t *rows, int64_t *oldest_seq, int64_t *purged, int64_t *runs)
{
	*rows = atomic_load(&ev.log_rows);
	*oldest_seq = atomic_load(&ev.log_oldest);
	*purged = atomic_load(&ev.log_purged);
	*runs = atomic_load(&ev.purge_runs);
}

apim_rc events_start(apim_ctx *ctx, int local)
{
	const apim_config *cfg = ctx->cfg;
	ev.ctx = ctx;
	atomic_store(&ev.stop, 0);
	if (ctx->apimgt == NULL)
		return APIM_OK;
	/* the purge runs whether or not there is an event hub; its thread
	 * takes no signals (main waits for them) */
	sigset_t all_sigs, prev;
	sigfillset(&all_sigs);
	pthread_sigmask(SIG_BLOCK, &all_sigs, &prev);
	if (pthread_create(&ev.purge_thread, NULL, ev_purge_main, NULL) == 0)
		ev.purge_running = 1;
	else
		log_error(EV_COMP, "cannot start the change-log purge thread");
	pthread_sigmask(SIG_SETMASK, &prev, NULL);
	if (*cfg->event_hub_url) {
		snprintf(ev.url, sizeof(ev.url), "%s", cfg->event_hub_url);
	} else if (local && cfg->event_hub_start_local) {
		int port = APIM_EVENT_HUB_PORT + (int)cfg->server_port_offset;
		if (ev_spawn_local(port) != APIM_OK)
			return APIM_OK;
		snprintf(ev.url, sizeof(ev.url), "nats://127.0.0.1:%d", port);
	} else {
		log_info(EV_COMP, "no event hub configured (event_hub.url): gateways poll the "
				  "internal data API");
		return APIM_OK;
	}
	/* the thread (and the library threads it starts) takes no signals:
	 * main waits for them with sigwait */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int err = pthread_create(&ev.thread, NULL, ev_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		log_error(EV_COMP, "cannot start the event publisher thread");
		return APIM_EINTERNAL;
	}
	ev.running = 1;
	return APIM_OK;
}

void events_stop(void)
{
	atomic_store(&ev.stop, 1);
	if (ev.purge_running) {
		pthread_join(ev.purge_thread, NULL);
		ev.purge_running = 0;
	}
	if (ev.running) {
		pthread_join(ev.thread, NULL);
		ev.running = 0;
		nats_Close(); /* the library's own threads and memory */
	}
	if (ev.child > 0) {
		kill(ev.child, SIGTERM);
		int status = 0;
		int reaped = 0;
		for (int i = 0; i < 100 && !reaped; i++) {
			if (waitpid(ev.child, &status, WNOHANG) == ev.child)
				reaped = 1;
			else
				usleep(20000);
		}
		if (!reaped) {
			kill(ev.child, SIGKILL);
			waitpid(ev.child, &status, 0);
		}
		ev.child = -1;
	}
}
