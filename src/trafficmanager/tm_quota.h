/*
 * tm_quota.h: the Traffic Manager's quota allocator.
 *
 * A rate limit of L requests (or bytes) per window of W ms must hold across
 * every gateway worker of the cluster (a "party") without a round trip per
 * request. Each party may admit, in the current window, up to its
 * *allowance* for the key; the allocator grows the allowances out of the
 * key's unallocated quota as the parties report what they admitted, giving
 * each party about what its recent rate needs for the next
 * TM_QUOTA_HORIZON_MS. As the window fills the unallocated quota shrinks,
 * and so do the grants.
 *
 * Invariant: the allowances of the live parties never add up to more than
 * L, so parties that honour their allowances never take the cluster over
 * the limit. The only slack comes from parties appearing in the middle of
 * a window (each brings its implicit allowance, below).
 *
 * Implicit allowance: before any grant, a party may admit up to
 * tm_quota_implicit(L, N) per window, N being the number of live parties
 * the Traffic Manager last announced; the allocator counts it as committed
 * for every live party, whether or not it reported the key.
 *
 * Reports carry a party's cumulative count for the window and its current
 * allowance, never deltas: duplicates are harmless, and a restarted (or
 * standby) Traffic Manager rebuilds its state from the next reports
 * instead of forgetting a window in progress or throttling early.
 *
 * Windows are fixed and aligned to the epoch (window_start is a multiple
 * of window_ms), so every node agrees on them without talking.
 *
 * Not thread-safe: one thread owns a tm_quota.
 */
#ifndef APIM_TM_QUOTA_H
#define APIM_TM_QUOTA_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* how far ahead a grant covers a party's recent rate */
#define TM_QUOTA_HORIZON_MS 400
/* a new allocator grants nothing before it has listened this long (every
 * live party reports at least every 100 ms) */
#define TM_QUOTA_WARMUP_MS 300
/* a party not heard of for this long is gone */
#define TM_QUOTA_PARTY_TTL_MS 3000
/* bounds on what one allocator tracks */
#define TM_QUOTA_MAX_PARTIES 1024
#define TM_QUOTA_MAX_KEY 512

typedef struct tm_quota tm_quota;

/* One allowance, as published to the party (borrowed strings). */
typedef struct {
	const char *key;
	const char *party;
	int64_t window_start; /* ms since the epoch */
	int64_t window_ms;
	int64_t allowance; /* the party may admit this many in the window */
	int64_t used;      /* what the whole cluster reported so far */
	int64_t limit;
} tm_grant;

typedef void (*tm_quota_emit_fn)(const tm_grant *g, void *arg);

tm_quota *tm_quota_create(void);
void tm_quota_destroy(tm_quota *q);

/* The allowance a party may spend without a grant: floor(L / (2 N)),
 * N >= 1. */
int64_t tm_quota_implicit(int64_t limit, size_t parties);

/* Party (a gateway worker id) was heard of at now_ms. APIM_ETOOLARGE when
 * TM_QUOTA_MAX_PARTIES are live already. */
apim_rc tm_quota_party_seen(tm_quota *q, const char *party, int64_t now_ms);

/* Parties heard of within TM_QUOTA_PARTY_TTL_MS (at least 1). */
size_t tm_quota_live_parties(tm_quota *q, int64_t now_ms);

/* Keys tracked (in their current or last window). */
size_t tm_quota_keys(const tm_quota *q);

/*
 * Party's cumulative count of key in the window that starts at
 * window_start, and the allowance it holds for that window; limit per
 * window_ms. A report for an older window than the key's current one is
 * ignored; a newer window replaces the old one. Counts and allowances only
 * grow within a window (a smaller value is ignored). APIM_EINVAL on bad
 * values (limit < 1, window_ms < 1, misaligned window_start, key too long).
 */
apim_rc tm_quota_report(tm_quota *q, const char *party, const char *key, int64_t limit,
			int64_t window_ms, int64_t window_start, int64_t count, int64_t allowance,
			int64_t now_ms);

/*
 * The same, with what the party refused at its allowance in the window
 * (denied, cumulative: requests, or an estimate of the bytes): the
 * party's demand (count + denied) sets the rate its grants follow, so
 * that a party stuck at a small allowance still gets more.
 */
apim_rc tm_quota_report_demand(tm_quota *q, const char *party, const char *key, int64_t limit,
			       int64_t window_ms, int64_t window_start, int64_t count,
			       int64_t denied, int64_t allowance, int64_t now_ms);

/*
 * Grows the allowances of parties whose recent rate needs more, out of
 * each key's unallocated quota, and calls emit for each grown one. Drops
 * keys whose window ended.
 */
void tm_quota_allocate(tm_quota *q, int64_t now_ms, tm_quota_emit_fn emit, void *arg);

/* What the cluster reported for key in the window containing now_ms (0
 * when unknown); *limit gets the key's limit when not NULL. */
int64_t tm_quota_used(tm_quota *q, const char *key, int64_t now_ms, int64_t *limit);

/* Calls cb once per key and window when the cluster's count reached the
 * limit: the key is throttled until until_ms (the window's end). */
void tm_quota_exhausted(tm_quota *q, int64_t now_ms,
			void (*cb)(const char *key, int64_t until_ms, void *arg), void *arg);

#endif
