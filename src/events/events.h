/*
 * events.h: the control plane's event hub publisher (NATS).
 *
 * A background thread tails am_change_log by sequence number (every 50 ms:
 * rows with seq > last, in seq order, 500 at a time) and publishes each row
 * on its subject: apim.notify.<entity_type> (api, application, subscription,
 * key_mapping, policy, environment, scope, ...), apim.revoke for revoked_jwt
 * and apim.block for block. Body: {"seq","type","id","action","payload","ts"}.
 * Every second it publishes {"seq", "ts"} on apim.notify.heartbeat, seq being
 * the last change published (the current sequence once caught up), so that
 * a gateway whose own seq is lower knows it lost a message and catches up
 * (GET /internal/data/v1/changes?since=<its seq>, or the snapshot when no
 * delta can say it); a seq lower than the gateway's own means the database
 * went back (restored) and makes it resync.
 *
 * Why tail the committed log instead of publishing from each handler: a row
 * exists only once its transaction committed, so every committed change is
 * published, in seq order, and nothing rolled back ever is. The position
 * advances only after the NATS server acknowledged the batch (a flush
 * round-trip), so a NATS outage loses nothing: the thread reconnects forever
 * and republishes from the last acknowledged seq. Several control-plane
 * nodes each publish every row; gateways dedupe by seq, so duplicates
 * (from several nodes or from a republished batch) are harmless.
 *
 * Nothing here runs on the request path: handlers only insert log rows.
 */
#ifndef APIM_EVENTS_H
#define APIM_EVENTS_H

#include <stdint.h>

#include "common/ctx.h"
#include "common/error.h"

/*
 * Starts the publisher for ctx (ctx must outlive events_stop). url is the
 * NATS URL; when it is empty and local is set, spawns `nats-server -a
 * 127.0.0.1 -p <APIM_EVENT_HUB_PORT + offset>` as a child first (a missing
 * binary is logged and events are off). Empty url without local: no events.
 * Starts publishing from the current sequence (gateways take a snapshot at
 * start, so older changes need no event).
 */
apim_rc events_start(apim_ctx *ctx, int local);
/* Stops the thread, closes the connection, kills and reaps the child. Safe
 * when events_start was not called or failed. */
void events_stop(void);

/*
 * The change log (am_change_log) is purged by a thread of its own, started
 * by events_start with or without an event hub: every
 * event_hub.change_log_purge_seconds it deletes the rows beyond the newest
 * event_hub.change_log_keep_rows that are also older than
 * event_hub.change_log_keep_days. A gateway behind the oldest row kept gets
 * "full" from /internal/data/v1/changes and takes a snapshot.
 * events_change_log_stats: rows and oldest seq after the last purge round,
 * rows purged and rounds run by this process (all 0 before the first).
 */
void events_change_log_stats(int64_t *rows, int64_t *oldest_seq, int64_t *purged, int64_t *runs);

/*
 * Connects to the NATS servers of urls (comma-separated), named name. One
 * attempt for the first connection (the caller retries, so that stopping
 * stays prompt); after a drop the library reconnects forever, every
 * 250 ms. NULL when no server answered.
 */
struct __natsConnection;
struct __natsConnection *events_nats_connect(const char *urls, const char *name);

#endif
