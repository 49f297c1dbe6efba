/*  lifecycle_test.c — Check suite "lifecycle": session info, stop_session
    (grace wait, cleanup, keep_state, prefix-named sessions, reuse), idle
    session expiry (session-ttl), result retention by count and age, the
    dead-letter bound (dlq-max) and a create -> execute -> stop leak check,
    with the real am2z-broker and am2z-example-worker on 127.0.0.1
    ephemeral ports and a real LMDB directory.

    Each case starts its own broker (its own data dir and settings) and one
    worker, and stops them with SIGTERM at the end. Every wait is bounded
    and waits for the event it needs.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_json.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <endian.h>
#include <inttypes.h>
#include <jansson.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*  Runs `increment` in session and returns its job id; count is the
    resulting count. */
static void
s_increment(am2z_client_t *c, const char *session, char job[AM2Z_JOB_ID_MAX + 1],
            int64_t *count)
{
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, session, NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "increment in %s failed", session);
    if (job)
        snprintf(job, AM2Z_JOB_ID_MAX + 1, "%s", r->job_id);
    if (count)
        ck_assert_int_eq(am2z_state_get_int(r->state, "count", count), AM2Z_OK);
    am2z_result_destroy(&r);
}

/*  Runs `fail` (a business error: not retried, dead-lettered). */
static void
s_fail_job(am2z_client_t *c, const char *session, char job[AM2Z_JOB_ID_MAX + 1])
{
    am2z_state_t *st = am2z_cluster_state(session, "category", 0, "business");
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "fail", st, session, NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    if (job)
        snprintf(job, AM2Z_JOB_ID_MAX + 1, "%s", r->job_id);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
}

/*  Submits `proc` with state {key: value} without waiting. */
static void
s_submit(am2z_client_t *c, const char *proc, const char *session, const char *key,
         int64_t value, char job[AM2Z_JOB_ID_MAX + 1])
{
    am2z_state_t *st = key ? am2z_cluster_state(session, key, value, NULL) : NULL;
    ck_assert_int_eq(am2z_client_submit(c, proc, st, session, NULL, job), AM2Z_OK);
    am2z_state_destroy(&st);
}

/*  Is the job's result stored? Fetched by a fresh client (nothing cached). */
static int
s_fetch(const am2z_cluster_t *env, const char *job)
{
    am2z_client_t *c = am2z_cluster_client(env, 5000);
    am2z_result_t *r = NULL;
    int rc = am2z_client_wait(c, job, 5000, &r);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    return rc;
}

/*  Polls session-info until queued/running match (bounded). */
static void
s_wait_counts(am2z_client_t *c, const char *session, uint64_t queued, uint64_t running)
{
    am2z_session_info_t si;
    memset(&si, 0, sizeof si);
    uint64_t deadline = am2z_test_deadline(10000);
    while (am2z_test_before(deadline)) {
        if (am2z_client_session_info(c, session, &si) == AM2Z_OK && si.queued == queued
            && si.running == running)
            return;
        usleep(10 * 1000);
    }
    ck_abort_msg("session %s: queued %" PRIu64 " running %" PRIu64 ", expected %" PRIu64
                 " and %" PRIu64, session, si.queued, si.running, queued, running);
}

/*  QUERY stats as JSON (caller decrefs). */
static json_t *
s_stats(am2z_client_t *c)
{
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    ck_assert(json_is_object(json_object_get(j, "store")));
    /* the data file: disk blocks allocated ahead of what is used, within the map */
    json_t *b = json_object_get(j, "storeBytes");
    ck_assert(json_is_object(b));
    json_int_t used = json_integer_value(json_object_get(b, "used"));
    json_int_t alloc = json_integer_value(json_object_get(b, "allocated"));
    json_int_t map = json_integer_value(json_object_get(b, "map"));
    ck_assert_msg(used > 0 && used <= alloc && alloc <= map,
                  "storeBytes used %lld, allocated %lld, map %lld",
                  (long long)used, (long long)alloc, (long long)map);
    return j;
}

static json_int_t
s_store_count(am2z_client_t *c, const char *db)
{
    json_t *j = s_stats(c);
    json_t *v = json_object_get(json_object_get(j, "store"), db);
    ck_assert_msg(json_is_integer(v), "stats.store has no %s", db);
    json_int_t n = json_integer_value(v);
    json_decref(j);
    return n;
}

/*  The broker's retention index in memory (stats resultsRetained): one
    entry per stored result, so it must match `done` and `results`. */
static json_int_t
s_retained(am2z_client_t *c)
{
    json_t *j = s_stats(c);
    json_t *v = json_object_get(j, "resultsRetained");
    ck_assert_msg(json_is_integer(v), "stats has no resultsRetained");
    json_int_t n = json_integer_value(v);
    json_decref(j);
    return n;
}

static void
s_assert_stored(const am2z_cluster_t *env, am2z_client_t *c, const char *session, const char *job,
                int64_t count)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, session, &st), AM2Z_OK);
    int64_t n = -1;
    ck_assert_int_eq(am2z_state_get_int(st, "count", &n), AM2Z_OK);
    ck_assert_int_eq(n, count);
    am2z_state_destroy(&st);
    ck_assert_int_eq(s_fetch(env, job), AM2Z_OK);
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, session, &si), AM2Z_OK);
    ck_assert_str_eq(si.id, session);
}

static void
s_assert_gone(const am2z_cluster_t *env, am2z_client_t *c, const char *session, const char *job)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, session, &st), AM2Z_ENOTFOUND);
    if (job)
        ck_assert_int_eq(s_fetch(env, job), AM2Z_ENOTFOUND);
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, session, &si), AM2Z_ENOTFOUND);
}

/* ---------------------------------------------------------------------------
   Session info
   ------------------------------------------------------------------------ */

START_TEST(test_session_info_counts_and_survives_restart)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-info", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    uint64_t before = am2z_clock_wall_ms();
    s_increment(c, "info-1", NULL, NULL);
    s_increment(c, "info-1", NULL, NULL);
    s_fail_job(c, "info-1", NULL);
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, "info-1", &si), AM2Z_OK);
    ck_assert_str_eq(si.id, "info-1");
    ck_assert_uint_eq(si.completed, 2);
    ck_assert_uint_eq(si.failed, 1);
    ck_assert_uint_eq(si.queued, 0);
    ck_assert_uint_eq(si.running, 0);
    ck_assert_uint_ge(si.created_ms, before);
    ck_assert_uint_ge(si.last_activity_ms, si.created_ms);
    ck_assert_uint_le(si.last_activity_ms, am2z_clock_wall_ms());
    uint64_t created = si.created_ms, last = si.last_activity_ms;

    /* queued and running: a long sleep with an increment behind it */
    char sleeper[AM2Z_JOB_ID_MAX + 1], behind[AM2Z_JOB_ID_MAX + 1];
    s_submit(c, "sleep", "info-2", "ms", 600000, sleeper);
    s_submit(c, "increment", "info-2", NULL, 0, behind);
    s_wait_counts(c, "info-2", 1, 1);

    am2z_session_list_t *list = NULL;
    ck_assert_int_eq(am2z_client_session_list(c, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0].id, "info-1");      /* id order */
    ck_assert_str_eq(list->items[1].id, "info-2");
    ck_assert_uint_eq(list->items[1].running, 1);
    ck_assert_uint_eq(list->items[1].queued, 1);
    am2z_session_list_destroy(&list);
    ck_assert_int_eq(am2z_client_session_info(c, "no-such", &si), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_session_info(c, "bad id!", &si), AM2Z_EINVAL);
    /* the old query still answers ids */
    am2z_strlist_t *ids = NULL;
    ck_assert_int_eq(am2z_client_get_active_sessions(c, &ids), AM2Z_OK);
    ck_assert_uint_eq(ids->count, 2);
    am2z_strlist_destroy(&ids);
    ck_assert_int_eq(am2z_client_stop_session(c, "info-2", false), AM2Z_OK);
    am2z_client_destroy(&c);

    /* created, last activity and counts come back from the store */
    am2z_cluster_halt(&env);
    am2z_cluster_start(&env, "lc-info", NULL);
    c = am2z_cluster_client(&env, 15000);
    ck_assert_int_eq(am2z_client_session_info(c, "info-1", &si), AM2Z_OK);
    ck_assert_uint_eq(si.created_ms, created);
    ck_assert_uint_eq(si.last_activity_ms, last);
    ck_assert_uint_eq(si.completed, 2);
    ck_assert_uint_eq(si.failed, 1);
    ck_assert_int_eq(am2z_client_session_info(c, "info-2", &si), AM2Z_ENOTFOUND);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   stop_session
   ------------------------------------------------------------------------ */

static void
s_assert_stopped(am2z_client_t *c, const char *job)
{
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, job, 10000, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_str_eq(r->error->code, "SESSION_STOPPED");
    am2z_result_destroy(&r);
}

START_TEST(test_stop_session_waits_for_running_job_and_cleans_up)
{
    /* a grace far beyond the client's timeout: the reply can only come in
       time if the running job saw its cancellation flag and ended */
    const char *extra[] = { "--stop-grace", "120s", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-stop", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char done[AM2Z_JOB_ID_MAX + 1], sleeper[AM2Z_JOB_ID_MAX + 1];
    char q1[AM2Z_JOB_ID_MAX + 1], q2[AM2Z_JOB_ID_MAX + 1];
    int64_t count = 0;
    s_increment(c, "stop-1", done, &count);
    ck_assert_int_eq(count, 1);
    s_submit(c, "sleep", "stop-1", "ms", 600000, sleeper);
    s_submit(c, "increment", "stop-1", NULL, 0, q1);
    s_submit(c, "increment", "stop-1", NULL, 0, q2);
    s_wait_counts(c, "stop-1", 2, 1);

    am2z_stop_report_t rep;
    ck_assert_int_eq(am2z_client_stop_session_report(c, "stop-1", false, &rep), AM2Z_OK);
    ck_assert_uint_eq(rep.cancelled, 3);
    ck_assert_uint_eq(rep.abandoned, 0);       /* the sleeper ended before the reply */
    s_assert_stopped(c, sleeper);
    s_assert_stopped(c, q1);
    s_assert_stopped(c, q2);
    /* state, results (the earlier one and the stopped ones) and info: gone */
    s_assert_gone(&env, c, "stop-1", done);
    ck_assert_int_eq(s_fetch(&env, sleeper), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, q1), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_store_count(c, "jobs"), 0);
    ck_assert_int_eq(s_store_count(c, "results"), 0);
    ck_assert_int_eq(s_store_count(c, "done"), 0);
    ck_assert_int_eq(s_retained(c), 0);
    ck_assert_int_eq(s_store_count(c, "sessinfo"), 0);

    /* the same id again: a new session from scratch */
    s_increment(c, "stop-1", done, &count);
    ck_assert_int_eq(count, 1);
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, "stop-1", &si), AM2Z_OK);
    ck_assert_uint_eq(si.completed, 1);
    ck_assert_uint_eq(si.failed, 0);

    /* a processor that ignores cancellation: the reply still waits for its end */
    char stubborn[AM2Z_JOB_ID_MAX + 1];
    s_submit(c, "sleep-stubborn", "stub-1", "ms", 1500, stubborn);
    s_wait_counts(c, "stub-1", 0, 1);
    ck_assert_int_eq(am2z_client_stop_session_report(c, "stub-1", false, &rep), AM2Z_OK);
    ck_assert_uint_eq(rep.cancelled, 1);
    ck_assert_uint_eq(rep.abandoned, 0);

    /* stopping an unknown session succeeds */
    ck_assert_int_eq(am2z_client_stop_session_report(c, "never-seen", false, &rep), AM2Z_OK);
    ck_assert_uint_eq(rep.cancelled, 0);
    ck_assert_int_eq(am2z_client_stop_session(c, "bad id!", false), AM2Z_EINVAL);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_stop_grace_expiry_and_late_done_never_touch_new_incarnation)
{
    const char *extra[] = { "--stop-grace", "100ms", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-grace", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char stubborn[AM2Z_JOB_ID_MAX + 1];
    s_submit(c, "sleep-stubborn", "late-1", "ms", 2000, stubborn);
    s_wait_counts(c, "late-1", 0, 1);
    am2z_stop_report_t rep;
    ck_assert_int_eq(am2z_client_stop_session_report(c, "late-1", false, &rep), AM2Z_OK);
    ck_assert_uint_eq(rep.cancelled, 1);
    ck_assert_uint_eq(rep.abandoned, 1);       /* still running when the grace ran out */
    s_assert_stopped(c, stubborn);

    /* the new incarnation runs while the old job still sleeps */
    char job[AM2Z_JOB_ID_MAX + 1];
    int64_t count = 0;
    s_increment(c, "late-1", job, &count);
    ck_assert_int_eq(count, 1);
    /* sleep-stubborn has one slot: this job runs once the old one's DONE
       reached the broker */
    char after[AM2Z_JOB_ID_MAX + 1];
    s_submit(c, "sleep-stubborn", "late-2", "ms", 0, after);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, after, 15000, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "late-1", &st), AM2Z_OK);
    int64_t slept = 0;
    ck_assert_int_eq(am2z_state_get_int(st, "slept", &slept), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_state_get_int(st, "count", &count), AM2Z_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_uint_eq(am2z_state_version(st), 2);
    am2z_state_destroy(&st);
    ck_assert_int_eq(s_fetch(&env, job), AM2Z_OK);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_stop_keep_state_keeps_state_and_results)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-keep", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char a[AM2Z_JOB_ID_MAX + 1], b[AM2Z_JOB_ID_MAX + 1];
    s_increment(c, "keep-1", a, NULL);
    s_increment(c, "keep-1", b, NULL);
    char sleeper[AM2Z_JOB_ID_MAX + 1];
    s_submit(c, "sleep", "keep-1", "ms", 600000, sleeper);
    s_wait_counts(c, "keep-1", 0, 1);
    ck_assert_int_eq(am2z_client_stop_session(c, "keep-1", true), AM2Z_OK);
    s_assert_stopped(c, sleeper);
    s_assert_stored(&env, c, "keep-1", a, 2);
    ck_assert_int_eq(s_fetch(&env, b), AM2Z_OK);
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, "keep-1", &si), AM2Z_OK);
    ck_assert_uint_eq(si.completed, 2);
    ck_assert_uint_eq(si.failed, 1);           /* the stopped sleeper */
    ck_assert_uint_eq(si.queued + si.running, 0);
    /* it goes on from the kept state */
    int64_t count = 0;
    s_increment(c, "keep-1", NULL, &count);
    ck_assert_int_eq(count, 3);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_stop_never_touches_prefix_named_sessions)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-prefix", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    const char *ids[] = { "s1", "s10", "s1:x", "s" };
    char jobs[4][AM2Z_JOB_ID_MAX + 1];
    for (int i = 0; i < 4; i++)
        s_increment(c, ids[i], jobs[i], NULL);
    ck_assert_int_eq(am2z_client_stop_session(c, "s1", false), AM2Z_OK);
    s_assert_gone(&env, c, "s1", jobs[0]);
    for (int i = 1; i < 4; i++)
        s_assert_stored(&env, c, ids[i], jobs[i], 1);
    ck_assert_int_eq(s_store_count(c, "results"), 3);
    ck_assert_int_eq(s_retained(c), 3);
    ck_assert_int_eq(s_store_count(c, "done"), 3);
    ck_assert_int_eq(s_store_count(c, "sessinfo"), 3);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   TTL
   ------------------------------------------------------------------------ */

typedef struct {
    const char *session;          /* wanted session:cleanup */
    bool any;                     /* some event arrived */
    bool cleaned;
    char reason[32];
    uint64_t ts_ms;               /* the broker's time of the cleanup */
} s_feed_t;

static void
s_on_event(const am2z_event_t *ev, void *arg)
{
    s_feed_t *f = arg;
    f->any = true;
    if (strcmp(ev->name, "session:cleanup") != 0 || strcmp(ev->session_id, f->session) != 0)
        return;
    json_t *j = NULL;
    if (ev->data && am2z_json_from_msgpack(ev->data, ev->data_size, &j) == AM2Z_OK) {
        const char *reason = json_string_value(json_object_get(j, "reason"));
        snprintf(f->reason, sizeof f->reason, "%s", reason ? reason : "");
        json_decref(j);
    }
    f->ts_ms = ev->ts_ms;
    f->cleaned = true;
}

START_TEST(test_idle_sessions_expire_after_ttl)
{
    const char *extra[] = { "--session-ttl", "700ms", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-ttl", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_events_t *feed = NULL;
    ck_assert_int_eq(am2z_events_subscribe(env.events, "", NULL, &feed), AM2Z_OK);
    s_feed_t f = { .session = "ttl-1" };
    /* PUB/SUB joins asynchronously: run jobs until the feed shows one */
    uint64_t deadline = am2z_test_deadline(10000);
    while (!f.any && am2z_test_before(deadline)) {
        s_increment(c, "ttl-warm", NULL, NULL);
        am2z_events_next(feed, 50, s_on_event, &f);
    }
    ck_assert(f.any);

    /* a busy session does not expire: this job outlives the TTL */
    am2z_state_t *st = am2z_cluster_state("ttl-1", "ms", 1500, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "sleep", st, "ttl-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    char job[AM2Z_JOB_ID_MAX + 1];
    snprintf(job, sizeof job, "%s", r->job_id);
    uint64_t started = r->started_at_ms;
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    /* then, idle, it does: session:cleanup with reason "expired" */
    deadline = am2z_test_deadline(20000);
    while (!f.cleaned && am2z_test_before(deadline))
        am2z_events_next(feed, 50, s_on_event, &f);
    ck_assert_msg(f.cleaned, "no session:cleanup for ttl-1");
    ck_assert_str_eq(f.reason, "expired");
    /* not while it ran: the job slept 1500 ms from its start */
    ck_assert_uint_ge(f.ts_ms, started + 1500);
    s_assert_gone(&env, c, "ttl-1", job);
    am2z_events_destroy(&feed);
    am2z_client_destroy(&c);

    /* a session known only from the store expires after a restart */
    am2z_cluster_halt(&env);
    const char *none[] = { "--session-ttl", "0", NULL };
    am2z_cluster_start(&env, "lc-ttl", none);
    c = am2z_cluster_client(&env, 15000);
    s_increment(c, "ttl-2", job, NULL);
    am2z_client_destroy(&c);
    am2z_cluster_halt(&env);
    am2z_cluster_start(&env, "lc-ttl", extra);
    c = am2z_cluster_client(&env, 15000);
    am2z_session_info_t si;
    int rc = AM2Z_OK;
    deadline = am2z_test_deadline(15000);
    while (rc == AM2Z_OK && am2z_test_before(deadline)) {
        rc = am2z_client_session_info(c, "ttl-2", &si);
        if (rc == AM2Z_OK)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(rc, AM2Z_ENOTFOUND);
    s_assert_gone(&env, c, "ttl-2", job);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Retention and the dead-letter bound
   ------------------------------------------------------------------------ */

START_TEST(test_retention_by_count_keeps_the_newest)
{
    const char *extra[] = { "--retain-completed", "3", "--retain-failed", "2", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-retain", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char ok[6][AM2Z_JOB_ID_MAX + 1], bad[3][AM2Z_JOB_ID_MAX + 1];
    for (int i = 0; i < 6; i++)
        s_increment(c, i % 2 ? "ret-a" : "ret-b", ok[i], NULL);
    for (int i = 0; i < 3; i++)
        s_fail_job(c, "ret-a", bad[i]);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(s_fetch(&env, ok[i]), AM2Z_ENOTFOUND);
    for (int i = 3; i < 6; i++)
        ck_assert_int_eq(s_fetch(&env, ok[i]), AM2Z_OK);
    ck_assert_int_eq(s_fetch(&env, bad[0]), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, bad[1]), AM2Z_OK);
    ck_assert_int_eq(s_fetch(&env, bad[2]), AM2Z_OK);
    ck_assert_int_eq(s_store_count(c, "results"), 5);
    ck_assert_int_eq(s_store_count(c, "done"), 5);
    ck_assert_int_eq(s_retained(c), 5);
    /* counts are recounted at start: the bound holds after a restart */
    am2z_client_destroy(&c);
    am2z_cluster_halt(&env);
    am2z_cluster_start(&env, "lc-retain", extra);
    c = am2z_cluster_client(&env, 15000);
    char more[AM2Z_JOB_ID_MAX + 1];
    s_increment(c, "ret-b", more, NULL);
    ck_assert_int_eq(s_fetch(&env, ok[3]), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, more), AM2Z_OK);
    ck_assert_int_eq(s_store_count(c, "results"), 5);
    ck_assert_int_eq(s_retained(c), 5);     /* the index is rebuilt from `done` */
    /* a stop removes the session's remaining results and their entries:
       ret-a's ok[5], bad[1] and bad[2] go; ret-b's ok[4] and more stay */
    ck_assert_int_eq(am2z_client_stop_session(c, "ret-a", false), AM2Z_OK);
    ck_assert_int_eq(s_store_count(c, "results"), 2);
    ck_assert_int_eq(s_store_count(c, "done"), 2);
    ck_assert_int_eq(s_retained(c), 2);
    ck_assert_int_eq(s_fetch(&env, ok[5]), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, bad[1]), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, bad[2]), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, ok[4]), AM2Z_OK);
    ck_assert_int_eq(s_fetch(&env, more), AM2Z_OK);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  `done` key of a completed `increment` (am2z_lifecycle.c). */
static MDB_val
s_done_key(uint8_t *buf, uint64_t ms, const char *job)
{
    memcpy(buf, "increment\0c", 11);
    uint64_t be = htobe64(ms);
    memcpy(buf + 11, &be, 8);
    memcpy(buf + 19, job, strlen(job));
    return (MDB_val){ 19 + strlen(job), buf };
}

/*  A session known only by its results (its info record lost: a data dir
    from an older version, or edited by hand) is found through its `done`
    entries at start: it is listed, and a stop deletes its results. The
    info record and the state are taken out with LMDB directly while the
    broker is down. And a job with two `done` entries keeps the newer:
    the other is deleted in the first turn. */
START_TEST(test_results_without_session_info_are_found_at_start)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-orphan", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    uint64_t before = am2z_clock_wall_ms();
    char ok[AM2Z_JOB_ID_MAX + 1], bad[AM2Z_JOB_ID_MAX + 1], other[AM2Z_JOB_ID_MAX + 1];
    s_increment(c, "orph-1", ok, NULL);
    s_fail_job(c, "orph-1", bad);
    s_increment(c, "orph-2", other, NULL);
    uint64_t after = am2z_clock_wall_ms();
    am2z_client_destroy(&c);
    am2z_cluster_halt(&env);

    MDB_env *mdb = NULL;
    MDB_txn *txn = am2z_test_lmdb_begin(env.dir, &mdb);
    MDB_dbi info, states;
    ck_assert_int_eq(mdb_dbi_open(txn, "sessinfo", 0, &info), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "sessions", 0, &states), 0);
    MDB_val key = { 6, "orph-1" };
    ck_assert_int_eq(mdb_del(txn, info, &key, NULL), 0);
    ck_assert_int_eq(mdb_del(txn, states, &key, NULL), 0);
    MDB_dbi done;
    ck_assert_int_eq(mdb_dbi_open(txn, "done", 0, &done), 0);
    uint8_t k1[64], k2[64];
    MDB_val older = s_done_key(k1, before - 60000, other), v2 = { 6, "orph-2" };
    MDB_val newer = s_done_key(k2, after + 60000, ok), v1 = { 6, "orph-1" };
    ck_assert_int_eq(mdb_put(txn, done, &older, &v2, 0), 0);
    ck_assert_int_eq(mdb_put(txn, done, &newer, &v1, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(mdb);

    am2z_cluster_start(&env, "lc-orphan", NULL);
    c = am2z_cluster_client(&env, 15000);
    ck_assert_int_eq(am2z_cluster_check_retention(c), 3);   /* 5 entries: 2 went */
    am2z_session_info_t si;
    ck_assert_int_eq(am2z_client_session_info(c, "orph-1", &si), AM2Z_OK);
    ck_assert_uint_ge(si.created_ms, before);           /* its results' finish times */
    ck_assert_uint_eq(si.last_activity_ms, after + 60000);
    ck_assert_uint_le(si.created_ms, si.last_activity_ms);
    ck_assert_int_eq(am2z_client_stop_session(c, "orph-1", false), AM2Z_OK);
    ck_assert_int_eq(s_fetch(&env, ok), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, bad), AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_fetch(&env, other), AM2Z_OK);
    ck_assert_int_eq(am2z_cluster_check_retention(c), 1);
    ck_assert_int_eq(am2z_client_session_info(c, "orph-1", &si), AM2Z_ENOTFOUND);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_retention_by_age)
{
    const char *extra[] = { "--retain-completed-age", "1s", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-age", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char job[AM2Z_JOB_ID_MAX + 1];
    s_increment(c, "age-1", job, NULL);
    int rc = AM2Z_OK;
    uint64_t deadline = am2z_test_deadline(15000);
    while (rc == AM2Z_OK && am2z_test_before(deadline)) {
        rc = s_fetch(&env, job);
        if (rc == AM2Z_OK)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(rc, AM2Z_ENOTFOUND);
    ck_assert_int_eq(s_store_count(c, "done"), 0);
    ck_assert_int_eq(s_retained(c), 0);
    /* the state is not a result: it stays */
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "age-1", &st), AM2Z_OK);
    am2z_state_destroy(&st);
    json_t *j = s_stats(c);
    ck_assert_int_ge(json_integer_value(json_object_get(j, "resultsTrimmed")), 1);
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Fails n jobs in `session`, one millisecond apart: ids start with their
    millisecond, so age order is id order. */
static void
s_fail_jobs_apart(am2z_client_t *c, const char *session, char (*jobs)[AM2Z_JOB_ID_MAX + 1],
                  int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t t = am2z_clock_wall_ms();
        for (int k = 0; k < 1000 && am2z_clock_wall_ms() == t; k++)
            usleep(500);
        s_fail_job(c, session, jobs[i]);
    }
}

/*  The DLQ holds exactly these two, in this order. */
static void
s_expect_dlq(am2z_client_t *c, const char *first, const char *second)
{
    am2z_dlq_list_t *list = NULL;
    ck_assert_int_eq(am2z_client_dlq_list(c, NULL, NULL, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0].job_id, first);
    ck_assert_str_eq(list->items[1].job_id, second);
    am2z_dlq_list_destroy(&list);
}

START_TEST(test_dlq_bound_drops_the_oldest)
{
    const char *extra[] = { "--dlq-max", "2", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-dlq", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char jobs[4][AM2Z_JOB_ID_MAX + 1];
    s_fail_jobs_apart(c, "dlq-1", jobs, 4);
    s_expect_dlq(c, jobs[2], jobs[3]);
    am2z_dlq_list_t *list = NULL;
    json_t *j = s_stats(c);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dlqDropped")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "store"), "dlq")), 2);
    json_decref(j);
    /* a discard makes room: the next dead letter drops nothing */
    ck_assert_int_eq(am2z_client_dlq_discard(c, jobs[2]), AM2Z_OK);
    char next[AM2Z_JOB_ID_MAX + 1];
    s_fail_job(c, "dlq-1", next);
    ck_assert_int_eq(am2z_client_dlq_list(c, NULL, NULL, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0].job_id, jobs[3]);
    am2z_dlq_list_destroy(&list);
    j = s_stats(c);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dlqDropped")), 2);
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  A drop walks from the key the last drop deleted. A dead letter that
    sorts before it (submitted earlier, failed later) is the oldest, and
    the next drop must find it. */
START_TEST(test_dlq_bound_finds_an_older_late_failure)
{
    const char *extra[] = { "--dlq-max", "2", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-dlq-late", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    /* the oldest id, failing after the others */
    char late[AM2Z_JOB_ID_MAX + 1];
    am2z_state_t *st = am2z_cluster_state("dlq-late", "category", 0, "business");
    am2z_submit_opts_t opts = { .delay_ms = 4000 };
    ck_assert_int_eq(am2z_client_submit(c, "fail", st, "dlq-late", &opts, late), AM2Z_OK);
    am2z_state_destroy(&st);
    char jobs[3][AM2Z_JOB_ID_MAX + 1];
    s_fail_jobs_apart(c, "dlq-1", jobs, 3);
    /* jobs[0] was dropped: the next walk starts at its key */
    s_expect_dlq(c, jobs[1], jobs[2]);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, late, 15000, &r), AM2Z_OK);
    ck_assert(!r->success);
    am2z_result_destroy(&r);
    /* the late one sorts first: it is the one dropped */
    s_expect_dlq(c, jobs[1], jobs[2]);
    json_t *j = s_stats(c);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dlqDropped")), 2);
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Leak check
   ------------------------------------------------------------------------ */

static void
s_cycles(am2z_client_t *c, int from, int to)
{
    for (int i = from; i < to; i++) {
        char session[32];
        snprintf(session, sizeof session, "leak-%d", i);
        s_increment(c, session, NULL, NULL);
        ck_assert_int_eq(am2z_client_stop_session(c, session, false), AM2Z_OK);
    }
}

#ifdef AM2Z_SANITIZED
#define S_CYCLES 300             /* ASan/UBSan slow every cycle down */
#else
#define S_CYCLES 1000
#endif

/*  The long run (docs/RELIABILITY.md "Session lifecycle"):
        CK_RUN_CASE=leak AM2Z_LEAK_CYCLES=10000 build/tests/lifecycle_test */
static int
s_cycle_count(void)
{
    const char *env = getenv("AM2Z_LEAK_CYCLES");
    long n = env ? strtol(env, NULL, 10) : 0;
    return n > 0 && n <= 10000000 ? (int)n : S_CYCLES;
}
#define S_WARMUP 200
#define S_RSS_TOLERANCE_KIB 1024

START_TEST(test_create_execute_stop_cycles_leave_nothing_behind)
{
    const char *extra[] = { "--durability", "periodic", NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "lc-leak", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    json_t *j = s_stats(c);
    json_t *baseline = json_deep_copy(json_object_get(j, "store"));
    json_decref(j);

    int cycles = s_cycle_count();
    s_cycles(c, 0, S_WARMUP);
    long rss0 = am2z_cluster_broker_rss_kib(&env);
    s_cycles(c, S_WARMUP, S_WARMUP + cycles);
    long rss1 = am2z_cluster_broker_rss_kib(&env);

    j = s_stats(c);
    json_t *store = json_object_get(j, "store");
    const char *db;
    json_t *v;
    json_object_foreach(baseline, db, v) {
        ck_assert_msg(json_integer_value(json_object_get(store, db)) == json_integer_value(v),
                      "store.%s: %lld after %d cycles, %lld before", db,
                      (long long)json_integer_value(json_object_get(store, db)),
                      S_WARMUP + cycles, (long long)json_integer_value(v));
    }
    ck_assert_int_eq(json_integer_value(json_object_get(j, "running")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "waiting")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "sessions")), 0);
    json_decref(j);
    json_decref(baseline);
    am2z_session_list_t *list = NULL;
    ck_assert_int_eq(am2z_client_session_list(c, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 0);
    am2z_session_list_destroy(&list);

    fprintf(stderr, "lifecycle: broker VmRSS %ld KiB after %d warm-up cycles, %ld KiB after "
            "%d more (tolerance %d KiB)\n", rss0, S_WARMUP, rss1, cycles,
            S_RSS_TOLERANCE_KIB);
    ck_assert_int_gt(rss0, 0);
#ifndef AM2Z_SANITIZED
    /* ASan's quarantine holds freed memory on purpose: RSS only without it */
    ck_assert_msg(rss1 <= rss0 + S_RSS_TOLERANCE_KIB,
                  "broker RSS grew from %ld to %ld KiB over %d cycles", rss0, rss1, cycles);
#endif
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("lifecycle");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_session_info_counts_and_survives_restart);
    tcase_add_test(tc, test_stop_session_waits_for_running_job_and_cleans_up);
    tcase_add_test(tc, test_stop_grace_expiry_and_late_done_never_touch_new_incarnation);
    tcase_add_test(tc, test_stop_keep_state_keeps_state_and_results);
    tcase_add_test(tc, test_stop_never_touches_prefix_named_sessions);
    tcase_add_test(tc, test_idle_sessions_expire_after_ttl);
    tcase_add_test(tc, test_retention_by_count_keeps_the_newest);
    tcase_add_test(tc, test_retention_by_age);
    tcase_add_test(tc, test_results_without_session_info_are_found_at_start);
    tcase_add_test(tc, test_dlq_bound_drops_the_oldest);
    tcase_add_test(tc, test_dlq_bound_finds_an_older_late_failure);
    suite_add_tcase(s, tc);
    TCase *leak = tcase_create("leak");
    tcase_set_timeout(leak, 150);
    tcase_add_test(leak, test_create_execute_stop_cycles_leave_nothing_behind);
    suite_add_tcase(s, leak);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
