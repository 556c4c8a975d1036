/*
 * test_tm_quota.c: the Traffic Manager's quota allocator, alone and in a
 * simulated cluster (gateway workers that admit against their allowances,
 * report every 100 ms, and receive grants after a delivery delay).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "trafficmanager/tm_quota.h"

#define WINDOW_MS 60000
#define LIMIT 5000
#define MAX_SIM 8
#define LATENCY_MS 15
#define SLOW_LATENCY_MS 120

static void test_implicit(void **state)
{
	(void)state;
	assert_int_equal(tm_quota_implicit(5000, 3), 833);
	assert_int_equal(tm_quota_implicit(10, 3), 1);
	assert_int_equal(tm_quota_implicit(10, 0), 5);
	assert_int_equal(tm_quota_implicit(1, 2), 0);
}

static void test_bad_reports(void **state)
{
	(void)state;
	tm_quota *q = tm_quota_create();
	assert_int_equal(tm_quota_report(q, "g1", "k", 0, WINDOW_MS, 0, 1, 0, 10), APIM_EINVAL);
	assert_int_equal(tm_quota_report(q, "g1", "k", 10, 0, 0, 1, 0, 10), APIM_EINVAL);
	assert_int_equal(tm_quota_report(q, "g1", "k", 10, WINDOW_MS, 1234, 1, 0, 10), APIM_EINVAL);
	assert_int_equal(tm_quota_report(q, "g1", "k", 10, WINDOW_MS, 0, -1, 0, 10), APIM_EINVAL);
	char big[TM_QUOTA_MAX_KEY + 2];
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(tm_quota_report(q, "g1", big, 10, WINDOW_MS, 0, 1, 0, 10), APIM_EINVAL);
	tm_quota_destroy(q);
}

static void test_used_and_windows(void **state)
{
	(void)state;
	tm_quota *q = tm_quota_create();
	int64_t limit = 0;
	assert_int_equal(tm_quota_report(q, "g1", "k", 100, WINDOW_MS, 60000, 7, 0, 60010), APIM_OK);
	assert_int_equal(tm_quota_report(q, "g2", "k", 100, WINDOW_MS, 60000, 5, 0, 60020), APIM_OK);
	/* a duplicate or an older count changes nothing */
	assert_int_equal(tm_quota_report(q, "g1", "k", 100, WINDOW_MS, 60000, 6, 0, 60030), APIM_OK);
	assert_int_equal(tm_quota_used(q, "k", 60040, &limit), 12);
	assert_int_equal(limit, 100);
	/* news of the previous window is ignored */
	assert_int_equal(tm_quota_report(q, "g1", "k", 100, WINDOW_MS, 0, 50, 0, 60050), APIM_OK);
	assert_int_equal(tm_quota_used(q, "k", 60060, NULL), 12);
	/* the next window starts from zero */
	assert_int_equal(tm_quota_report(q, "g1", "k", 100, WINDOW_MS, 120000, 3, 0, 120001), APIM_OK);
	assert_int_equal(tm_quota_used(q, "k", 120002, NULL), 3);
	/* after its window the key is dropped */
	tm_quota_allocate(q, 180000, NULL, NULL);
	assert_int_equal(tm_quota_used(q, "k", 180001, NULL), 0);
	tm_quota_destroy(q);
}

typedef struct {
	int64_t allowance[MAX_SIM];
	int64_t window_start;
	int grants;
} grant_box;

static int party_index(const char *name)
{
	return name[1] - '0';
}

static void collect(const tm_grant *g, void *arg)
{
	grant_box *b = arg;
	int i = party_index(g->party);
	if (g->window_start != b->window_start)
		return;
	if (g->allowance > b->allowance[i])
		b->allowance[i] = g->allowance;
	b->grants++;
}

static void test_grants_never_exceed_the_limit(void **state)
{
	(void)state;
	tm_quota *q = tm_quota_create();
	grant_box box = {.window_start = 0};
	/* three parties at very different rates for a second */
	int64_t count[3] = {0};
	for (int64_t t = 0; t < 1000; t += 100) {
		for (int p = 0; p < 3; p++) {
			char name[4] = {'g', (char)('0' + p), 0};
			count[p] += (p + 1) * 50;
			assert_int_equal(tm_quota_report(q, name, "sub:k", LIMIT, WINDOW_MS, 0, count[p],
							 box.allowance[p], t),
					 APIM_OK);
		}
		tm_quota_allocate(q, t, collect, &box);
		int64_t sum = 0;
		for (int p = 0; p < 3; p++)
			sum += box.allowance[p] > tm_quota_implicit(LIMIT, 3)
				       ? box.allowance[p]
				       : tm_quota_implicit(LIMIT, 3);
		assert_true(sum <= LIMIT);
	}
	assert_true(box.grants > 0);
	/* the busiest party got the most */
	assert_true(box.allowance[2] > box.allowance[0]);
	tm_quota_destroy(q);
}

/*
 * A party's first report has no rate yet: it is not idle for that, since it
 * may have admitted up to its implicit allowance since. Before, the
 * allocator reclaimed it at its reported count (3) while it had admitted
 * 5, and granted the rest to the busy party: 22 of 20 admitted.
 */
static void test_first_report_is_not_idle(void **state)
{
	(void)state;
	tm_quota *q = tm_quota_create();
	grant_box box = {.window_start = 0};
	int64_t hour = 3600000, limit = 20, implicit = tm_quota_implicit(limit, 2);
	assert_int_equal(implicit, 5);
	/* g1 is busy from the start; g0 appears with 3 admitted */
	assert_int_equal(tm_quota_report(q, "g1", "k", limit, hour, 0, 1, 0, 0), APIM_OK);
	assert_int_equal(tm_quota_report(q, "g1", "k", limit, hour, 0, 5, 0, 100), APIM_OK);
	assert_int_equal(tm_quota_report(q, "g0", "k", limit, hour, 0, 3, 0, 300), APIM_OK);
	assert_int_equal(tm_quota_report(q, "g1", "k", limit, hour, 0, 5, 0, 300), APIM_OK);
	tm_quota_allocate(q, 350, collect, &box);
	assert_true(box.grants > 0);
	/* g0 keeps its implicit allowance (no grant below it) */
	assert_true(box.allowance[0] == 0 || box.allowance[0] >= implicit);
	int64_t cap0 = box.allowance[0] > 0 ? box.allowance[0] : implicit;
	assert_true(cap0 + box.allowance[1] <= limit);
	tm_quota_destroy(q);
}

/* -- the simulated cluster ---------------------------------------------- */

typedef struct {
	int64_t due;
	int party;
	int64_t window_start;
	int64_t count;
	int64_t allowance;
} report_msg;

typedef struct {
	int64_t due;
	int party;
	int64_t window_start;
	int64_t allowance;
} grant_msg;

#define QMAX 65536

typedef struct {
	int nparties;
	int ntms;
	tm_quota *tm[2];
	/* party state */
	int64_t ws[MAX_SIM], count[MAX_SIM], allowance[MAX_SIM];
	uint64_t rng;
	/* message queues (FIFO, constant latency) */
	report_msg reports[QMAX];
	size_t rhead, rtail;
	grant_msg grants[QMAX];
	size_t ghead, gtail;
	int64_t now;
	int64_t latency;
} sim;

static void sim_emit(const tm_grant *g, void *arg)
{
	sim *s = arg;
	grant_msg *m = &s->grants[s->gtail++ % QMAX];
	m->due = s->now + s->latency;
	m->party = party_index(g->party);
	m->window_start = g->window_start;
	m->allowance = g->allowance;
}

static double sim_random(sim *s)
{
	s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(s->rng >> 11) / (double)(1ull << 53);
}

static sim the_sim;

/* rate(p, t): arrival probability per ms of party p at time t */
typedef double (*rate_fn)(int p, int64_t t);

/*
 * Runs the cluster for windows windows; admitted[w] gets what the parties
 * admitted in window w. restart_at: the Traffic Manager is replaced by a
 * fresh one at that time (0: never).
 */
static void sim_run(sim *s, rate_fn rate, int windows, int64_t restart_at, int64_t *admitted)
{
	for (int t = 0; t < s->ntms; t++)
		s->tm[t] = tm_quota_create();
	for (int p = 0; p < s->nparties; p++)
		s->ws[p] = -1;
	if (s->latency == 0)
		s->latency = LATENCY_MS;
	for (s->now = 0; s->now < (int64_t)windows * WINDOW_MS; s->now++) {
		int64_t ws = s->now - s->now % WINDOW_MS;
		int w = (int)(s->now / WINDOW_MS);
		if (restart_at != 0 && s->now == restart_at) {
			tm_quota_destroy(s->tm[0]);
			s->tm[0] = tm_quota_create();
		}
		for (int p = 0; p < s->nparties; p++) {
			if (s->ws[p] != ws) {
				s->ws[p] = ws;
				s->count[p] = 0;
				s->allowance[p] = -1; /* no grant yet */
			}
			/* a grant replaces the implicit allowance */
			int64_t cap = s->allowance[p] >= 0
					      ? s->allowance[p]
					      : tm_quota_implicit(LIMIT, (size_t)s->nparties);
			if (sim_random(s) < rate(p, s->now) && s->count[p] < cap) {
				s->count[p]++;
				admitted[w]++;
			}
			/* each party reports every 100 ms, staggered */
			if ((s->now + p * 37) % 100 == 0) {
				report_msg *m = &s->reports[s->rtail++ % QMAX];
				m->due = s->now + s->latency;
				m->party = p;
				m->window_start = ws;
				m->count = s->count[p];
				m->allowance = s->allowance[p] > 0 ? s->allowance[p] : 0;
			}
		}
		while (s->rhead != s->rtail && s->reports[s->rhead % QMAX].due <= s->now) {
			report_msg *m = &s->reports[s->rhead++ % QMAX];
			char name[4] = {'g', (char)('0' + m->party), 0};
			for (int t = 0; t < s->ntms && m->count == 0; t++)
				assert_int_equal(tm_quota_party_seen(s->tm[t], name, s->now), APIM_OK);
			for (int t = 0; t < s->ntms && m->count > 0; t++)
				assert_int_equal(tm_quota_report(s->tm[t], name, "sub:app1:/pizza:1.0",
								 LIMIT, WINDOW_MS, m->window_start,
								 m->count, m->allowance, s->now),
						 APIM_OK);
		}
		if (s->now % 100 == 50)
			for (int t = 0; t < s->ntms; t++)
				tm_quota_allocate(s->tm[t], s->now, sim_emit, s);
		while (s->ghead != s->gtail && s->grants[s->ghead % QMAX].due <= s->now) {
			grant_msg *m = &s->grants[s->ghead++ % QMAX];
			/* a party keeps the largest allowance of its window */
			if (m->window_start == s->ws[m->party] &&
			    (s->allowance[m->party] < 0 || m->allowance > s->allowance[m->party]))
				s->allowance[m->party] = m->allowance;
		}
	}
	for (int t = 0; t < s->ntms; t++)
		tm_quota_destroy(s->tm[t]);
}

/* twice the limit in total, split 50/30/20 (or evenly past 3 parties) */
static double rate_uneven(int p, int64_t t)
{
	(void)t;
	static const double share[3] = {0.5, 0.3, 0.2};
	if (the_sim.nparties > 3)
		return 2.0 * LIMIT / WINDOW_MS / the_sim.nparties;
	return 2.0 * LIMIT / WINDOW_MS * share[p];
}

/* twice the limit, all on party 0 in the first half of each window, then
 * all on party 2 */
static double rate_moving(int p, int64_t t)
{
	int first_half = t % WINDOW_MS < WINDOW_MS / 2;
	if ((first_half && p == 0) || (!first_half && p == 2))
		return 2.0 * LIMIT / WINDOW_MS;
	return 0;
}

/* little demand for most of the window, then far more than the rest of
 * the quota in its last 5 s */
static double rate_late_burst(int p, int64_t t)
{
	(void)p;
	if (t % WINDOW_MS < WINDOW_MS - 5000)
		return 0.2 * LIMIT / WINDOW_MS / 3;
	return 0.5;
}

static void check_windows(const char *what, const int64_t *admitted, int windows, double min_use,
			  double max_over)
{
	for (int w = 0; w < windows; w++) {
		printf("  %s window %d: admitted %lld of %d\n", what, w, (long long)admitted[w], LIMIT);
		assert_true((double)admitted[w] <= LIMIT * (1.0 + max_over));
		assert_true((double)admitted[w] >= LIMIT * min_use);
	}
}

static void test_three_gateways_at_twice_the_rate(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 3;
	the_sim.ntms = 1;
	the_sim.rng = 42;
	int64_t admitted[3] = {0};
	sim_run(&the_sim, rate_uneven, 3, 0, admitted);
	/* the invariant: never over; and the quota is used, not wasted */
	check_windows("uneven", admitted, 3, 0.97, 0.0);
}

static void test_demand_moving_between_gateways(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 3;
	the_sim.ntms = 1;
	the_sim.rng = 7;
	int64_t admitted[2] = {0};
	sim_run(&the_sim, rate_moving, 2, 0, admitted);
	check_windows("moving", admitted, 2, 0.95, 0.0);
}

static void test_late_burst(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 3;
	the_sim.ntms = 1;
	the_sim.rng = 9;
	int64_t admitted[2] = {0};
	sim_run(&the_sim, rate_late_burst, 2, 0, admitted);
	check_windows("late burst", admitted, 2, 0.90, 0.0);
}

static void test_restarted_traffic_manager_mid_window(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 3;
	the_sim.ntms = 1;
	the_sim.rng = 11;
	int64_t admitted[2] = {0};
	/* replaced a quarter into the second window, before the limit is hit:
	 * it must neither forget what was admitted nor throttle early */
	sim_run(&the_sim, rate_uneven, 2, WINDOW_MS + WINDOW_MS / 4, admitted);
	check_windows("restart", admitted, 2, 0.97, 0.0);
}

static void test_two_traffic_managers(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 3;
	the_sim.ntms = 2;
	the_sim.rng = 13;
	int64_t admitted[2] = {0};
	sim_run(&the_sim, rate_uneven, 2, 0, admitted);
	/* both grant from the same reports: the limit is not doubled */
	check_windows("two TMs", admitted, 2, 0.97, 0.02);
}

static void test_six_workers_slow_network(void **state)
{
	(void)state;
	memset(&the_sim, 0, sizeof(the_sim));
	the_sim.nparties = 6;
	the_sim.ntms = 1;
	the_sim.rng = 17;
	the_sim.latency = SLOW_LATENCY_MS;
	int64_t admitted[2] = {0};
	sim_run(&the_sim, rate_uneven, 2, 0, admitted);
	check_windows("6 workers, 120 ms", admitted, 2, 0.95, 0.0);
}

static int64_t exhausted_until;

static void on_exhausted(const char *key, int64_t until_ms, void *arg)
{
	(void)key;
	(void)arg;
	exhausted_until = until_ms;
}

/* Bandwidth limits: quotas of bytes, far beyond 32 bits. */
static void test_byte_quota(void **state)
{
	(void)state;
	const int64_t limit = 10LL * 1024 * 1024 * 1024; /* 10 GB an hour */
	const int64_t hour = 3600000, step = 300LL * 1024 * 1024;
	tm_quota *q = tm_quota_create();
	grant_box box = {.window_start = 0};
	int64_t count[2] = {0}, t;
	exhausted_until = 0;
	for (t = 0; t < 20000 && exhausted_until == 0; t += 100) {
		for (int p = 0; p < 2; p++) {
			char name[4] = {'g', (char)('0' + p), 0};
			int64_t cap = box.allowance[p] > 0 ? box.allowance[p]
							   : tm_quota_implicit(limit, 2);
			/* g0 serves 300 MB every 100 ms while its allowance
			 * lasts (the answer that crosses it passes), g1 a tenth */
			if (count[p] < cap)
				count[p] += p == 0 ? step : step / 10;
			assert_int_equal(tm_quota_report(q, name, "app:bytes", limit, hour, 0,
							 count[p], box.allowance[p], t),
					 APIM_OK);
		}
		tm_quota_allocate(q, t, collect, &box);
		tm_quota_exhausted(q, t, on_exhausted, NULL);
		assert_true(box.allowance[0] + box.allowance[1] <= limit);
	}
	/* the grants went past 32 bits, the key was used up and announced
	 * until the end of the hour, the overshoot is at most one answer a
	 * party */
	assert_true(box.allowance[0] > INT32_MAX);
	assert_int_equal(exhausted_until, hour);
	int64_t used = tm_quota_used(q, "app:bytes", t, NULL);
	assert_true(used >= limit);
	assert_true(used <= limit + step + step / 10);
	tm_quota_destroy(q);
}

/* A party stuck at a small implicit allowance (limit 3: 1 each) gets
 * more once it reports what it refused. */
static void test_demand_of_a_stuck_party(void **state)
{
	(void)state;
	tm_quota *q = tm_quota_create();
	grant_box box = {.window_start = 0};
	assert_int_equal(tm_quota_implicit(3, 1), 1);
	assert_int_equal(tm_quota_report(q, "g0", "custom:k", 3, WINDOW_MS, 0, 1, 0, 0), APIM_OK);
	/* without the refusals the count says nothing more: no grant */
	for (int64_t t = 100; t <= 500; t += 100) {
		assert_int_equal(tm_quota_report(q, "g0", "custom:k", 3, WINDOW_MS, 0, 1, 0, t),
				 APIM_OK);
		tm_quota_allocate(q, t, collect, &box);
	}
	assert_int_equal(box.grants, 0);
	/* with them, the rest of the quota */
	for (int64_t t = 600, d = 1; t <= 1000; t += 100, d++) {
		assert_int_equal(tm_quota_report_demand(q, "g0", "custom:k", 3, WINDOW_MS, 0, 1, d,
							0, t),
				 APIM_OK);
		tm_quota_allocate(q, t, collect, &box);
	}
	assert_true(box.grants > 0);
	assert_int_equal(box.allowance[0], 3);
	assert_int_equal(tm_quota_report_demand(q, "g0", "custom:k", 3, WINDOW_MS, 0, 1, -1, 0,
						1100),
			 APIM_EINVAL);
	tm_quota_destroy(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_implicit),
		cmocka_unit_test(test_bad_reports),
		cmocka_unit_test(test_used_and_windows),
		cmocka_unit_test(test_grants_never_exceed_the_limit),
		cmocka_unit_test(test_first_report_is_not_idle),
		cmocka_unit_test(test_three_gateways_at_twice_the_rate),
		cmocka_unit_test(test_demand_moving_between_gateways),
		cmocka_unit_test(test_late_burst),
		cmocka_unit_test(test_restarted_traffic_manager_mid_window),
		cmocka_unit_test(test_two_traffic_managers),
		cmocka_unit_test(test_six_workers_slow_network),
		cmocka_unit_test(test_byte_quota),
		cmocka_unit_test(test_demand_of_a_stuck_party),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
