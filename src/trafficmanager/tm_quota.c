/*
 * tm_quota.c: the Traffic Manager's quota allocator (see tm_quota.h).
 */
#include "trafficmanager/tm_quota.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	char *name;
	int64_t last_seen;
	uint32_t gen; /* bumped when the slot is given to another party */
} tm_party;

typedef struct {
	uint32_t party;
	uint32_t gen;
	int64_t count;
	int64_t allowance;
	int64_t demand;     /* count + what the party refused at its cap */
	int64_t prev_count; /* the demand at prev_ms */
	int64_t prev_ms;
	double rate; /* demand per ms, smoothed */
	int64_t up_ms; /* when the count last grew (or was first > 0) */
	int64_t want; /* scratch of tm_key_allocate() */
	int explicit_grant; /* the party holds a grant: implicit no more */
} tm_share;

typedef struct {
	char *key;
	int64_t limit;
	int64_t window_ms;
	int64_t window_start;
	tm_share *shares;
	size_t nshares;
	size_t cap;
	int announced; /* tm_quota_exhausted() told of this window */
} tm_key;

/* string -> pointer, open addressing, never deletes (rebuilt instead) */
typedef struct {
	const char **keys;
	void **values;
	size_t cap; /* power of two */
	size_t n;
} tm_map;

struct tm_quota {
	tm_party *parties;
	size_t nparties;
	tm_map party_ix; /* name -> index + 1 */
	tm_map keys;     /* key -> tm_key */
	int64_t born;    /* first time this allocator heard anything, or -1 */
};

static uint64_t tm_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static void *tm_map_get(const tm_map *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	for (size_t i = tm_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == NULL)
			return NULL;
		if (strcmp(m->keys[i], key) == 0)
			return m->values[i];
	}
}

/* key is borrowed: it must live as long as the entry */
static apim_rc tm_map_put(tm_map *m, const char *key, void *value)
{
	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		const char **keys = calloc(cap, sizeof(*keys));
		void **values = calloc(cap, sizeof(*values));
		if (keys == NULL || values == NULL) {
			free(keys);
			free(values);
			return APIM_ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (m->keys[i] == NULL)
				continue;
			size_t j = tm_hash(m->keys[i]) & (cap - 1);
			while (keys[j] != NULL)
				j = (j + 1) & (cap - 1);
			keys[j] = m->keys[i];
			values[j] = m->values[i];
		}
		free(m->keys);
		free(m->values);
		m->keys = keys;
		m->values = values;
		m->cap = cap;
	}
	size_t i = tm_hash(key) & (m->cap - 1);
	while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	if (m->keys[i] == NULL)
		m->n++;
	m->keys[i] = key;
	m->values[i] = value;
	return APIM_OK;
}

static void tm_map_free(tm_map *m)
{
	free(m->keys);
	free(m->values);
	memset(m, 0, sizeof(*m));
}

static void tm_key_free(tm_key *k)
{
	if (k == NULL)
		return;
	free(k->key);
	free(k->shares);
	free(k);
}

tm_quota *tm_quota_create(void)
{
	tm_quota *q = calloc(1, sizeof(tm_quota));
	if (q != NULL)
		q->born = -1;
	return q;
}

void tm_quota_destroy(tm_quota *q)
{
	if (q == NULL)
		return;
	for (size_t i = 0; i < q->keys.cap; i++)
		if (q->keys.keys[i] != NULL)
			tm_key_free(q->keys.values[i]);
	tm_map_free(&q->keys);
	tm_map_free(&q->party_ix);
	for (size_t i = 0; i < q->nparties; i++)
		free(q->parties[i].name);
	free(q->parties);
	free(q);
}

int64_t tm_quota_implicit(int64_t limit, size_t parties)
{
	if (parties < 1)
		parties = 1;
	return limit / (2 * (int64_t)parties);
}

static int tm_live(const tm_party *p, int64_t now_ms)
{
	return now_ms - p->last_seen <= TM_QUOTA_PARTY_TTL_MS;
}

/* index of party (created, or a dead slot reused, when unknown) */
static apim_rc tm_party_find(tm_quota *q, const char *name, int64_t now_ms, uint32_t *ix)
{
	if (q->born < 0)
		q->born = now_ms;
	uintptr_t v = (uintptr_t)tm_map_get(&q->party_ix, name);
	if (v != 0) {
		*ix = (uint32_t)(v - 1);
		q->parties[*ix].last_seen = now_ms;
		return APIM_OK;
	}
	char *copy = strdup(name);
	if (copy == NULL)
		return APIM_ENOMEM;
	size_t slot = q->nparties;
	if (q->nparties >= TM_QUOTA_MAX_PARTIES) {
		/* a worker that restarted is a new party: reuse a dead one's slot
		 * (its shares see the new generation and count as dead) */
		for (slot = 0; slot < q->nparties; slot++)
			if (!tm_live(&q->parties[slot], now_ms))
				break;
		if (slot == q->nparties) {
			free(copy);
			return APIM_ETOOLARGE;
		}
	} else {
		tm_party *p = realloc(q->parties, (q->nparties + 1) * sizeof(*p));
		if (p == NULL) {
			free(copy);
			return APIM_ENOMEM;
		}
		q->parties = p;
		memset(&p[slot], 0, sizeof(*p));
		q->nparties++;
	}
	tm_party *p = &q->parties[slot];
	if (p->name != NULL) {
		/* the old name keeps pointing at this slot in party_ix: rebuild */
		tm_map_free(&q->party_ix);
		free(p->name);
		p->name = NULL;
		for (size_t i = 0; i < q->nparties; i++) {
			if (i == slot || q->parties[i].name == NULL)
				continue;
			if (tm_map_put(&q->party_ix, q->parties[i].name, (void *)(uintptr_t)(i + 1)) !=
			    APIM_OK) {
				free(copy);
				return APIM_ENOMEM;
			}
		}
		p->gen++;
	}
	p->name = copy;
	p->last_seen = now_ms;
	if (tm_map_put(&q->party_ix, copy, (void *)(uintptr_t)(slot + 1)) != APIM_OK)
		return APIM_ENOMEM; /* the slot stays, nameless to lookups */
	*ix = (uint32_t)slot;
	return APIM_OK;
}

apim_rc tm_quota_party_seen(tm_quota *q, const char *party, int64_t now_ms)
{
	uint32_t ix;
	return tm_party_find(q, party, now_ms, &ix);
}

size_t tm_quota_live_parties(tm_quota *q, int64_t now_ms)
{
	size_t n = 0;
	for (size_t i = 0; i < q->nparties; i++)
		if (q->parties[i].name != NULL && tm_live(&q->parties[i], now_ms))
			n++;
	return n ? n : 1;
}

size_t tm_quota_keys(const tm_quota *q)
{
	return q->keys.n;
}

static int tm_share_live(const tm_quota *q, const tm_share *s, int64_t now_ms)
{
	const tm_party *p = &q->parties[s->party];
	return p->gen == s->gen && tm_live(p, now_ms);
}

static tm_share *tm_share_add(tm_key *k, uint32_t party, uint32_t gen, int64_t now_ms)
{
	if (k->nshares == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 4;
		tm_share *n = realloc(k->shares, cap * sizeof(*n));
		if (n == NULL)
			return NULL;
		k->shares = n;
		k->cap = cap;
	}
	tm_share *s = &k->shares[k->nshares++];
	memset(s, 0, sizeof(*s));
	s->party = party;
	s->gen = gen;
	s->prev_ms = now_ms;
	return s;
}

apim_rc tm_quota_report(tm_quota *q, const char *party, const char *key, int64_t limit,
			int64_t window_ms, int64_t window_start, int64_t count, int64_t allowance,
			int64_t now_ms)
{
	return tm_quota_report_demand(q, party, key, limit, window_ms, window_start, count, 0,
				      allowance, now_ms);
}

apim_rc tm_quota_report_demand(tm_quota *q, const char *party, const char *key, int64_t limit,
			       int64_t window_ms, int64_t window_start, int64_t count,
			       int64_t denied, int64_t allowance, int64_t now_ms)
{
	if (limit < 1 || window_ms < 1 || window_start < 0 || window_start % window_ms != 0 ||
	    count < 0 || denied < 0 || allowance < 0 || strlen(key) > TM_QUOTA_MAX_KEY ||
	    count > INT64_MAX - denied)
		return APIM_EINVAL;
	int64_t demand = count + denied;
	uint32_t ix;
	apim_rc rc = tm_party_find(q, party, now_ms, &ix);
	if (rc != APIM_OK)
		return rc;

	tm_key *k = tm_map_get(&q->keys, key);
	if (k != NULL && window_start < k->window_start)
		return APIM_OK; /* late news of a window that is over */
	if (k == NULL) {
		k = calloc(1, sizeof(*k));
		if (k == NULL || (k->key = strdup(key)) == NULL) {
			free(k);
			return APIM_ENOMEM;
		}
		rc = tm_map_put(&q->keys, k->key, k);
		if (rc != APIM_OK) {
			tm_key_free(k);
			return rc;
		}
		k->window_start = window_start;
	}
	if (window_start > k->window_start || window_ms != k->window_ms) {
		/* a new window (or the policy changed its unit): start over */
		k->window_start = window_start;
		k->nshares = 0;
		k->announced = 0;
	}
	k->limit = limit;
	k->window_ms = window_ms;

	tm_share *s = NULL;
	for (size_t i = 0; i < k->nshares; i++) {
		if (k->shares[i].party == ix) {
			s = &k->shares[i];
			break;
		}
	}
	uint32_t gen = q->parties[ix].gen;
	if (s != NULL && s->gen != gen) {
		memset(s, 0, sizeof(*s)); /* the slot belongs to another party now */
		s->party = ix;
	}
	if (s == NULL) {
		/* first news of this party for the key: its rate starts now */
		if ((s = tm_share_add(k, ix, gen, now_ms)) == NULL)
			return APIM_ENOMEM;
		s->count = count;
		s->prev_count = s->demand = demand;
		if (count > 0)
			s->up_ms = now_ms;
	}
	s->gen = gen;
	if (allowance > 0) {
		/* the party holds a grant (maybe from a Traffic Manager before
		 * this one) */
		s->explicit_grant = 1;
		if (allowance > s->allowance)
			s->allowance = allowance;
	}
	if (count > s->count) {
		s->count = count;
		s->up_ms = now_ms;
	}
	if (demand > s->demand) {
		/* the rate is the demand's: a party stuck at its allowance
		 * still says how much it would admit */
		int64_t dt = now_ms - s->prev_ms;
		if (dt > 0) {
			double inst = (double)(demand - s->prev_count) / (double)dt;
			s->rate = s->rate == 0 ? inst : 0.5 * s->rate + 0.5 * inst;
			s->prev_count = demand;
			s->prev_ms = now_ms;
		}
		s->demand = demand;
	} else if (now_ms - s->prev_ms >= TM_QUOTA_HORIZON_MS) {
		/* nothing admitted for a while: the party's demand fades */
		s->rate *= 0.5;
		s->prev_ms = now_ms;
	}
	return APIM_OK;
}

/* what a live party may admit in the window: its grant, else the implicit
 * allowance */
static int64_t tm_cap(const tm_share *s, int64_t implicit)
{
	return s->explicit_grant ? s->allowance : implicit;
}

static void tm_emit(tm_quota *q, const tm_key *k, const tm_share *s, int64_t used,
		    tm_quota_emit_fn emit, void *arg)
{
	if (emit == NULL)
		return;
	tm_grant grant = {.key = k->key,
			  .party = q->parties[s->party].name,
			  .window_start = k->window_start,
			  .window_ms = k->window_ms,
			  .allowance = s->allowance,
			  .used = used,
			  .limit = k->limit};
	emit(&grant, arg);
}

/*
 * The key's quota is scarce: takes back the implicit allowances that live
 * parties do not use (those that never reported the key in this window,
 * and those whose rate faded) by granting them explicitly what they have
 * admitted. A party whose count grew within the last horizon is not idle
 * even when its rate is not known yet (its first report): it may well
 * have admitted more since, up to its implicit allowance. Returns how much
 * quota that frees.
 */
static int64_t tm_reclaim(tm_quota *q, tm_key *k, int64_t implicit, int64_t now_ms, double horizon,
			  int64_t used, tm_quota_emit_fn emit, void *arg)
{
	int64_t freed = 0;
	size_t known = k->nshares;

	for (size_t i = 0; i < known; i++) {
		tm_share *s = &k->shares[i];
		if (s->explicit_grant || !tm_share_live(q, s, now_ms) || s->rate * horizon >= 0.5 ||
		    (s->count > 0 && now_ms - s->up_ms < TM_QUOTA_HORIZON_MS))
			continue;
		if (implicit > s->count)
			freed += implicit - s->count;
		s->allowance = s->count;
		s->explicit_grant = 1;
		tm_emit(q, k, s, used, emit, arg);
	}
	for (uint32_t p = 0; p < q->nparties; p++) {
		if (q->parties[p].name == NULL || !tm_live(&q->parties[p], now_ms))
			continue;
		size_t i;
		for (i = 0; i < known; i++)
			if (k->shares[i].party == p && k->shares[i].gen == q->parties[p].gen)
				break;
		if (i < known)
			continue;
		tm_share *s = tm_share_add(k, p, q->parties[p].gen, now_ms);
		if (s == NULL)
			break;
		s->explicit_grant = 1;
		freed += implicit;
		tm_emit(q, k, s, used, emit, arg);
	}
	return freed;
}

static void tm_key_allocate(tm_quota *q, tm_key *k, size_t live, int64_t now_ms,
			    tm_quota_emit_fn emit, void *arg)
{
	int64_t implicit = tm_quota_implicit(k->limit, live);
	int64_t committed = 0, used = 0;
	size_t live_shares = 0;

	for (size_t i = 0; i < k->nshares; i++) {
		tm_share *s = &k->shares[i];
		used += s->count;
		if (tm_share_live(q, s, now_ms)) {
			int64_t cap = tm_cap(s, implicit);
			committed += cap > s->count ? cap : s->count;
			live_shares++;
		} else {
			committed += s->count; /* a dead party admits no more */
		}
	}
	if (live > live_shares)
		committed += (int64_t)(live - live_shares) * implicit;
	int64_t pool = k->limit - committed;

	/* what each party needs for the next horizon (less near the end) */
	int64_t left_ms = k->window_start + k->window_ms - now_ms;
	double horizon = left_ms < TM_QUOTA_HORIZON_MS ? (double)left_ms : TM_QUOTA_HORIZON_MS;
	if (horizon <= 0)
		return;
	int64_t total_want = 0;
	for (size_t i = 0; i < k->nshares; i++) {
		tm_share *s = &k->shares[i];
		s->want = 0;
		if (!tm_share_live(q, s, now_ms) || s->rate <= 0)
			continue;
		int64_t have = tm_cap(s, implicit) - s->count;
		int64_t need = (int64_t)ceil(s->rate * horizon) + 1;
		if (need > have) {
			s->want = need - have;
			total_want += s->want;
		}
	}
	if (total_want == 0)
		return;
	if (total_want > pool)
		pool += tm_reclaim(q, k, implicit, now_ms, horizon, used, emit, arg);
	if (pool <= 0)
		return;

	int64_t left = pool;
	for (size_t i = 0; i < k->nshares && left > 0; i++) {
		tm_share *s = &k->shares[i];
		if (s->want == 0)
			continue;
		int64_t g = s->want;
		if (total_want > pool) {
			/* scarce: in proportion to the wants, at least one */
			g = (int64_t)((double)s->want * (double)pool / (double)total_want);
			if (g < 1)
				g = 1;
		}
		if (g > left)
			g = left;
		left -= g;
		s->allowance = tm_cap(s, implicit) + g;
		s->explicit_grant = 1;
		tm_emit(q, k, s, used, emit, arg);
	}
}

void tm_quota_allocate(tm_quota *q, int64_t now_ms, tm_quota_emit_fn emit, void *arg)
{
	size_t live = tm_quota_live_parties(q, now_ms);
	size_t ended = 0;

	/* a new (or restarted) allocator first listens long enough to know
	 * every live party and what it holds, or it would grant too much */
	if (q->born < 0 || now_ms - q->born < TM_QUOTA_WARMUP_MS)
		return;

	for (size_t i = 0; i < q->keys.cap; i++) {
		if (q->keys.keys[i] == NULL)
			continue;
		tm_key *k = q->keys.values[i];
		if (k->window_start + k->window_ms <= now_ms) {
			ended++;
			continue;
		}
		tm_key_allocate(q, k, live, now_ms, emit, arg);
	}
	if (ended == 0)
		return;

	/* drop the keys whose window is over: rebuild the map without them */
	tm_map old = q->keys;
	memset(&q->keys, 0, sizeof(q->keys));
	for (size_t i = 0; i < old.cap; i++) {
		if (old.keys[i] == NULL)
			continue;
		tm_key *k = old.values[i];
		if (k->window_start + k->window_ms <= now_ms || tm_map_put(&q->keys, k->key, k) != APIM_OK)
			tm_key_free(k);
	}
	tm_map_free(&old);
}

int64_t tm_quota_used(tm_quota *q, const char *key, int64_t now_ms, int64_t *limit)
{
	tm_key *k = tm_map_get(&q->keys, key);
	if (k == NULL || now_ms < k->window_start || now_ms >= k->window_start + k->window_ms)
		return 0;
	if (limit != NULL)
		*limit = k->limit;
	int64_t used = 0;
	for (size_t i = 0; i < k->nshares; i++)
		used += k->shares[i].count;
	return used;
}

void tm_quota_exhausted(tm_quota *q, int64_t now_ms,
			void (*cb)(const char *key, int64_t until_ms, void *arg), void *arg)
{
	for (size_t i = 0; i < q->keys.cap; i++) {
		if (q->keys.keys[i] == NULL)
			continue;
		tm_key *k = q->keys.values[i];
		int64_t end = k->window_start + k->window_ms;
		if (k->announced || end <= now_ms)
			continue;
		int64_t used = 0;
		for (size_t j = 0; j < k->nshares; j++)
			used += k->shares[j].count;
		if (used >= k->limit) {
			k->announced = 1;
			cb(k->key, end, arg);
		}
	}
}
