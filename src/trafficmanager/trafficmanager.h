/*
 * trafficmanager.h: the Traffic Manager daemon (apimd --profile
 * traffic-manager, and inside all-in-one).
 *
 * It listens on the event hub (NATS) to the gateways' usage reports
 * (apim.throttle.usage), keeps the cluster-wide count of every throttle
 * key in its current window, hands each gateway worker an allowance out of
 * each key's quota (tm_quota.h) and publishes the allowances, and the keys
 * that ran out ("throttled until"), on apim.throttle.decisions. Rate
 * limits come from the control plane's internal data API
 * (/internal/data/v1/throttling-policies), fetched at start, when an
 * apim.notify.policy event says they changed, and every 60 s.
 *
 * Several Traffic Managers may run at once: each announces itself every
 * 200 ms on apim.throttle.tm, all of them count, and the oldest one alive
 * (smallest start time, then id) is the leader, the only one that
 * publishes decisions. A standby holds the same state (reports carry
 * cumulative counts and allowances) and takes over within a second of the
 * leader's last heartbeat. Gateways that hear no Traffic Manager fall back
 * to local limits.
 *
 * The wire formats are in docs/ARCHITECTURE.md ("Rate limiting").
 */
#ifndef APIM_TRAFFICMANAGER_H
#define APIM_TRAFFICMANAGER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct {
	const char *hub_url;           /* nats://host:port[,nats://...] */
	const char *control_plane_url; /* http(s)://host:port of a control plane */
	const char *credential;        /* the gateway credential of the data API */
	const char *ca_file;           /* CAs for an https control plane, or NULL */
	const char *id;                /* this Traffic Manager's name, or NULL */
} trafficmanager_opts;

/* Starts the Traffic Manager's thread; the strings are copied. */
apim_rc trafficmanager_start(const trafficmanager_opts *o);

/* Stops the thread and frees everything. Safe when not started. Leaves
 * the NATS library initialised (the caller's nats_Close() ends it). */
void trafficmanager_stop(void);

/* What /health/ready and /metrics report (trafficmanager_stats). */
typedef struct {
	int running;         /* started and not stopped */
	int connected;       /* connected to the event hub now */
	int policies_loaded; /* read the rate-limit policies at least once */
	int leader;          /* publishes the decisions */
	uint64_t usage_messages, usage_entries, usage_rejected;
	int64_t usage_dropped; /* by the NATS library: too slow */
	uint64_t decisions_published, grants_published, throttled_published;
	size_t peers;    /* other Traffic Managers heard within a second */
	size_t policies; /* rate limits known */
	size_t keys;     /* throttle keys tracked in their current windows */
	size_t parties;  /* live gateway workers */
} trafficmanager_stats;

/* A consistent copy of the counters (zeros when not started). Takes the
 * Traffic Manager's lock briefly; never blocks on the network. */
void trafficmanager_get_stats(trafficmanager_stats *out);

#endif
