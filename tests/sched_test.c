/*  sched_test.c — Check suite "sched": the broker's scheduling (issue 6):
    priorities (per job, per processor, equal = submission order), delays
    (per job, per processor, across a broker restart), the rate limit and
    the concurrency cap across workers, and fairness between sessions.
    Real am2z-broker and am2z-example-worker processes on 127.0.0.1, real
    LMDB data dirs.

    Orders are read from the example processor "gate": with one slot
    (--concurrency 1) its "ticket" is the order jobs ran in; a gate job
    whose state names a file holds that slot until the test creates the
    file, so jobs queue up deterministically behind it. Times are the
    broker's own records (QUERY job created/due, RESULT dispatched) and
    the worker's (RESULT started/exec_us) — never the test's clock. Every
    wait is bounded and waits for the event it needs.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_json.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*  Starts one more worker, named sched-wN (concurrency NULL = each
    processor's own), and waits until the broker counts it. */
static void
s_start_worker(am2z_cluster_t *env, const char *concurrency)
{
    char id[32];
    snprintf(id, sizeof id, "sched-w%zu", env->nworkers + 1);
    const char *extra[] = { "--id", id, concurrency ? "--concurrency" : NULL, concurrency, NULL };
    am2z_cluster_start_worker(env, extra);
}

/*  QUERY job as JSON (caller json_decref). */
static json_t *
s_query_job(am2z_client_t *c, const char *id)
{
    return am2z_cluster_query(c, "job", id);
}

static uint64_t
s_juint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "no integer '%s'", key);
    return (uint64_t)json_integer_value(v);
}

/*  Waits (bounded) until QUERY job says the job is leased. */
static void
s_wait_active(am2z_client_t *c, const char *id)
{
    bool active = false;
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (!active && am2z_clock_mono_us() < deadline) {
        json_t *j = s_query_job(c, id);
        active = strcmp(json_string_value(json_object_get(j, "status")), "active") == 0;
        json_decref(j);
        if (!active)
            usleep(10 * 1000);
    }
    ck_assert_msg(active, "job %s never became active", id);
}

/*  The gate holding the single slot: a gate job in session `session`
    waiting for a file; returns its id once it is leased. The file path
    goes to path (created by s_release). */
static void
s_hold(am2z_cluster_t *env, am2z_client_t *c, const char *session, char *path, size_t path_size,
       char id[AM2Z_JOB_ID_MAX + 1])
{
    snprintf(path, path_size, "%s/release", env->dir);
    am2z_state_t *st = am2z_cluster_state(session, "file", 0, path);
    ck_assert_int_eq(am2z_client_submit(c, "gate", st, session, NULL, id), AM2Z_OK);
    am2z_state_destroy(&st);
    s_wait_active(c, id);
}

static void
s_release(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

/*  Submits `proc` in `session` (no state), priority when has_prio. */
static void
s_submit(am2z_client_t *c, const char *proc, const char *session, bool has_prio,
         int64_t prio, char id[AM2Z_JOB_ID_MAX + 1])
{
    am2z_submit_opts_t opts = { .priority = prio, .has_priority = has_prio };
    ck_assert_msg(am2z_client_submit(c, proc, NULL, session, &opts, id) == AM2Z_OK,
                  "submit %s: %s", proc, am2z_client_last_error(c));
}

/*  A worker registers the example processors and leaves again: SUBMITs
    are accepted, nothing runs until the next worker comes. */
static void
s_register_then_leave(am2z_cluster_t *env)
{
    s_start_worker(env, NULL);
    am2z_testproc_stop(&env->worker[env->nworkers - 1], SIGTERM, 10000);
    env->nworkers--;
    am2z_client_t *c = am2z_cluster_client(env, 30000);
    am2z_stats_t st = { .workers = 1 };
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (st.workers > env->nworkers && am2z_clock_mono_us() < deadline) {
        if (am2z_client_get_stats(c, &st) != AM2Z_OK || st.workers > env->nworkers)
            usleep(10 * 1000);
    }
    ck_assert_uint_eq(st.workers, env->nworkers);
    am2z_client_destroy(&c);
}

/*  The ticket of a finished gate job. */
static int64_t
s_ticket(am2z_client_t *c, const char *id)
{
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 30000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "job %s failed: %s", id, r->error ? r->error->message : "?");
    int64_t t = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "ticket", &t), AM2Z_OK);
    am2z_result_destroy(&r);
    return t;
}

/* ---------------------------------------------------------------------------
   Priority
   ------------------------------------------------------------------------ */

START_TEST(test_sched_higher_priority_sessions_run_first_equal_in_submission_order)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-prio", NULL);
    s_start_worker(&env, "1");
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char path[600], hold[AM2Z_JOB_ID_MAX + 1];
    s_hold(&env, c, "prio-hold", path, sizeof path, hold);
    /* one job per session, queued behind the held slot */
    struct { const char *session; bool has; int64_t prio; } jobs[] = {
        { "prio-a", false, 0 }, { "prio-b", true, 5 }, { "prio-c", true, 5 },
        { "prio-d", true, -1 }, { "prio-e", true, 3 }, { "prio-f", true, 9 },
    };
    enum { N = sizeof jobs / sizeof jobs[0] };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    for (size_t i = 0; i < N; i++)
        s_submit(c, "gate", jobs[i].session, jobs[i].has, jobs[i].prio, ids[i]);
    s_release(path);
    ck_assert_int_eq(s_ticket(c, hold), 1);
    /* f(9), b(5), c(5: after b, submitted later), e(3), a(0), d(-1) */
    const size_t expected[N] = { 5, 1, 2, 4, 0, 3 };
    for (size_t k = 0; k < N; k++) {
        int64_t t = s_ticket(c, ids[expected[k]]);
        ck_assert_msg(t == (int64_t)k + 2, "%s ran as %lld, expected %zu",
                      jobs[expected[k]].session, (long long)t, k + 2);
    }
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_session_lane_orders_by_priority_and_processor_default)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-lane", NULL);
    s_start_worker(&env, "1");
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char path[600], hold[AM2Z_JOB_ID_MAX + 1];
    /* the session's own first job holds it: the rest wait in its lane */
    s_hold(&env, c, "lane", path, sizeof path, hold);
    struct { const char *proc; bool has; int64_t prio; } jobs[] = {
        { "gate", false, 0 },          /* processor default 0 */
        { "gate-urgent", false, 0 },   /* processor default 5 */
        { "gate", true, 1 },
        { "gate", true, 9 },
        { "gate", true, 1 },           /* equal: after the first prio-1 job */
    };
    enum { N = sizeof jobs / sizeof jobs[0] };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    for (size_t i = 0; i < N; i++)
        s_submit(c, jobs[i].proc, "lane", jobs[i].has, jobs[i].prio, ids[i]);
    s_release(path);
    ck_assert_int_eq(s_ticket(c, hold), 1);
    const size_t expected[N] = { 3, 1, 2, 4, 0 };
    for (size_t k = 0; k < N; k++) {
        int64_t t = s_ticket(c, ids[expected[k]]);
        ck_assert_msg(t == (int64_t)k + 2, "job %zu (%s) ran as %lld, expected %zu",
                      expected[k], jobs[expected[k]].proc, (long long)t, k + 2);
    }
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_equal_priority_runs_in_submission_order)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-fifo", NULL);
    s_start_worker(&env, "1");
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char path[600], hold[AM2Z_JOB_ID_MAX + 1];
    s_hold(&env, c, "fifo-hold", path, sizeof path, hold);
    enum { N = 8 };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    for (size_t i = 0; i < N; i++) {
        char session[32];
        snprintf(session, sizeof session, "fifo-%zu", i);
        s_submit(c, "gate", session, true, 2, ids[i]);
    }
    s_release(path);
    ck_assert_int_eq(s_ticket(c, hold), 1);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(s_ticket(c, ids[i]), (int64_t)i + 2);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_priority_order_is_rebuilt_after_broker_kill)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-prio-kill", NULL);
    s_register_then_leave(&env);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    struct { const char *session; bool has; int64_t prio; } jobs[] = {
        { "rk-a", false, 0 }, { "rk-b", true, 5 }, { "rk-lane", false, 0 },
        { "rk-c", true, 5 }, { "rk-lane", true, 7 }, { "rk-d", true, -1 },
        { "rk-lane", true, 7 }, { "rk-e", true, 9 },
    };
    enum { N = sizeof jobs / sizeof jobs[0] };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    for (size_t i = 0; i < N; i++)
        s_submit(c, "gate", jobs[i].session, jobs[i].has, jobs[i].prio, ids[i]);
    am2z_client_destroy(&c);
    am2z_cluster_kill_broker(&env);

    am2z_cluster_start_broker(&env, "sched-prio-kill", NULL);
    s_start_worker(&env, "1");
    c = am2z_cluster_client(&env, 30000);
    /* e(9); rk-lane's two 7s (its lane: 7, 7, then 0); b, c (5); then at
       0 rk-a, which re-entered its ring at the reload, before rk-lane's
       0, which re-entered after its 7s ran; d(-1) */
    const size_t expected[N] = { 7, 4, 6, 1, 3, 0, 2, 5 };
    for (size_t k = 0; k < N; k++) {
        int64_t t = s_ticket(c, ids[expected[k]]);
        ck_assert_msg(t == (int64_t)k + 1, "job %zu (%s) ran as %lld, expected %zu",
                      expected[k], jobs[expected[k]].session, (long long)t, k + 1);
    }
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Delay
   ------------------------------------------------------------------------ */

/*  Waits for a job and returns its RESULT's dispatched time. */
static uint64_t
s_dispatched(am2z_client_t *c, const char *id, uint32_t attempt)
{
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 30000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "job %s failed: %s", id, r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, attempt);
    uint64_t d = r->dispatched_ms;
    ck_assert_uint_gt(d, 0);
    am2z_result_destroy(&r);
    return d;
}

START_TEST(test_sched_delayed_job_is_not_dispatched_before_due)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-delay", NULL);
    s_start_worker(&env, NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    /* per job */
    char id[AM2Z_JOB_ID_MAX + 1];
    am2z_submit_opts_t opts = { .delay_ms = 1500 };
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "delay-1", &opts, id), AM2Z_OK);
    json_t *j = s_query_job(c, id);
    uint64_t created = s_juint(j, "created"), due = s_juint(j, "due");
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "waiting");
    json_decref(j);
    ck_assert_uint_eq(due, created + 1500);
    ck_assert_uint_ge(s_dispatched(c, id, 1), due);
    /* per processor ("later": 1000 ms), and a job's own delay overriding it */
    char id2[AM2Z_JOB_ID_MAX + 1], id3[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "later", NULL, "delay-2", NULL, id2), AM2Z_OK);
    j = s_query_job(c, id2);
    uint64_t due2 = s_juint(j, "due");
    ck_assert_uint_eq(due2, s_juint(j, "created") + 1000);
    json_decref(j);
    opts.delay_ms = 200;
    ck_assert_int_eq(am2z_client_submit(c, "later", NULL, "delay-3", &opts, id3), AM2Z_OK);
    j = s_query_job(c, id3);
    uint64_t due3 = s_juint(j, "due");
    ck_assert_uint_eq(due3, s_juint(j, "created") + 200);
    json_decref(j);
    ck_assert_uint_ge(s_dispatched(c, id2, 1), due2);
    ck_assert_uint_ge(s_dispatched(c, id3, 1), due3);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_delayed_job_survives_broker_kill_and_runs_after_due)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-delay-kill", NULL);
    s_register_then_leave(&env);      /* the job cannot run before the kill */
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char id[AM2Z_JOB_ID_MAX + 1];
    am2z_submit_opts_t opts = { .delay_ms = 3000 };
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "delay-kill", &opts, id),
                     AM2Z_OK);
    json_t *j = s_query_job(c, id);
    uint64_t created = s_juint(j, "created");
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_kill_broker(&env);

    am2z_cluster_start_broker(&env, "sched-delay-kill", NULL);
    c = am2z_cluster_client(&env, 30000);
    /* reloaded with its due time from the record */
    j = s_query_job(c, id);
    ck_assert_uint_eq(s_juint(j, "created"), created);
    ck_assert_uint_eq(s_juint(j, "due"), created + 3000);
    json_decref(j);
    s_start_worker(&env, NULL);
    ck_assert_uint_ge(s_dispatched(c, id, 1), created + 3000);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Rate limit, cap
   ------------------------------------------------------------------------ */

static int
s_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*  Submits n jobs of proc, one session each ("<prefix>-i"), pipelined. */
static void
s_submit_sessions(am2z_client_t *c, const char *proc, const char *prefix, size_t n,
                  char (*ids)[AM2Z_JOB_ID_MAX + 1])
{
    const am2z_state_t **states = calloc(n, sizeof *states);
    char (*names)[48] = calloc(n, sizeof *names);
    const char **sessions = calloc(n, sizeof *sessions);
    ck_assert(states && names && sessions);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s-%zu", prefix, i);
        sessions[i] = names[i];
    }
    ck_assert_int_eq(am2z_client_submit_many(c, proc, states, sessions, n, ids), AM2Z_OK);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i][0], "job %zu refused: %s", i, am2z_client_last_error(c));
    free(states);
    free(names);
    free(sessions);
}

START_TEST(test_sched_rate_limit_holds_across_workers)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-rate", NULL);
    s_start_worker(&env, NULL);
    s_start_worker(&env, NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    enum { N = 100, RATE = 20, PER = 1000 };   /* "rated": 20 per 1000 ms */
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    s_submit_sessions(c, "rated", "rate", N, ids);
    uint64_t d[N];
    for (size_t i = 0; i < N; i++)
        d[i] = s_dispatched(c, ids[i], 1);
    qsort(d, N, sizeof d[0], s_u64_cmp);
    /* 100 at 20 per second: the 81st dispatch waits four full windows */
    ck_assert_uint_ge(d[N - 1] - d[0], 4 * PER);
    /* no window of PER ms holds more than RATE dispatches */
    for (size_t i = 0; i + RATE < N; i++)
        ck_assert_msg(d[i + RATE] - d[i] >= PER,
                      "dispatches %zu..%zu within %llu ms", i, i + RATE,
                      (unsigned long long)(d[i + RATE] - d[i]));
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Lease times (processor:active's `dispatched`, the wall clock ms the
    rate limiter counts) of one processor; bad counts events without one. */
typedef struct {
    const char *proc;
    uint64_t ts[256];
    size_t n;
    size_t bad;
} s_actives_t;

static void
s_on_active(const am2z_event_t *ev, void *arg)
{
    s_actives_t *a = arg;
    if (strcmp(ev->name, "processor:active") != 0 || strcmp(ev->processor, a->proc) != 0
        || a->n >= sizeof a->ts / sizeof a->ts[0])
        return;
    json_t *j = NULL;
    json_t *d = ev->data && am2z_json_from_msgpack(ev->data, ev->data_size, &j) == AM2Z_OK
                ? json_object_get(j, "dispatched") : NULL;
    if (json_is_integer(d) && json_integer_value(d) > 0)
        a->ts[a->n++] = (uint64_t)json_integer_value(d);
    else
        a->bad++;
    json_decref(j);
}

START_TEST(test_sched_rate_limit_holds_for_workflow_steps)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-rate-steps", NULL);
    s_start_worker(&env, NULL);
    s_start_worker(&env, NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    s_actives_t act = { .proc = "rated" };
    ck_assert_int_eq(am2z_client_on_event(c, "processor:active", s_on_active, &act), AM2Z_OK);
    enum { RUNS = 8, STEPS = 5, RATE = 20, PER = 1000 };
    char ids[RUNS][AM2Z_JOB_ID_MAX + 1];
    s_submit_sessions(c, "rated-chain", "rchain", RUNS, ids);
    for (size_t i = 0; i < RUNS; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 30000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "run failed: %s", r->error ? r->error->message : "?");
        int64_t count = 0;
        ck_assert_int_eq(am2z_state_get_int(r->state, "count", &count), AM2Z_OK);
        ck_assert_int_eq(count, STEPS);
        am2z_result_destroy(&r);
    }
    /* every step lease was announced, with its lease time, before its
       run's result */
    ck_assert_uint_eq(act.bad, 0);
    ck_assert_uint_eq(act.n, RUNS * STEPS);
    qsort(act.ts, act.n, sizeof act.ts[0], s_u64_cmp);
    /* no window of PER ms holds more than RATE leases: lease i + RATE is
       at least PER ms after lease i, on the limiter's own clock */
    for (size_t i = 0; i + RATE < act.n; i++)
        ck_assert_msg(act.ts[i + RATE] - act.ts[i] >= PER,
                      "step leases %zu..%zu within %llu ms", i, i + RATE,
                      (unsigned long long)(act.ts[i + RATE] - act.ts[i]));
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_cap_holds_across_workers)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-cap", NULL);
    s_start_worker(&env, NULL);    /* "capped": 4 slots per worker, cap 2 */
    s_start_worker(&env, NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    enum { N = 16, CAP = 2 };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    s_submit_sessions(c, "capped", "cap", N, ids);
    /* each run as an interval on the workers' clock: [start, start + exec),
       shortened by 2 ms for the ms rounding of start; a run past the cap
       would overlap the others by tens of ms (each sleeps 50 ms) */
    struct { int64_t at; int delta; } ev[2 * N];
    size_t nev = 0;
    for (size_t i = 0; i < N; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 30000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "job failed: %s", r->error ? r->error->message : "?");
        int64_t max = 0;
        ck_assert_int_eq(am2z_state_get_int(r->state, "maxActive", &max), AM2Z_OK);
        ck_assert_int_le(max, CAP);
        int64_t start = (int64_t)r->started_at_ms;
        int64_t end = start + (int64_t)(r->exec_us / 1000) - 2;
        ck_assert_int_gt(end, start);
        ev[nev].at = start;
        ev[nev++].delta = 1;
        ev[nev].at = end;
        ev[nev++].delta = -1;
        am2z_result_destroy(&r);
    }
    /* sweep: ends before starts at the same instant */
    for (size_t i = 1; i < nev; i++)
        for (size_t k = i; k > 0 && (ev[k - 1].at > ev[k].at
                                     || (ev[k - 1].at == ev[k].at && ev[k - 1].delta > ev[k].delta)); k--) {
            __typeof__(ev[0]) t = ev[k];
            ev[k] = ev[k - 1];
            ev[k - 1] = t;
        }
    int now = 0, most = 0;
    for (size_t i = 0; i < nev; i++) {
        now += ev[i].delta;
        if (now > most)
            most = now;
    }
    ck_assert_int_le(most, CAP);
    ck_assert_int_eq(most, CAP);   /* the cap, not a lack of work, was the limit */
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_sched_processors_query_reports_scheduling_defaults)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-procs", NULL);
    s_start_worker(&env, NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_client_query(c, "processors", NULL, &data, &size), AM2Z_OK);
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(data, size, &j), AM2Z_OK);
    free(data);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *p = json_array_get(j, i);
        const char *name = json_string_value(json_object_get(p, "name"));
        if (strcmp(name, "rated") == 0) {
            ck_assert_uint_eq(s_juint(p, "rate"), 20);
            ck_assert_uint_eq(s_juint(p, "per"), 1000);
            seen++;
        } else if (strcmp(name, "capped") == 0) {
            ck_assert_uint_eq(s_juint(p, "cap"), 2);
            seen++;
        } else if (strcmp(name, "later") == 0) {
            ck_assert_uint_eq(s_juint(p, "delay"), 1000);
            seen++;
        } else if (strcmp(name, "gate-urgent") == 0) {
            ck_assert_int_eq(json_integer_value(json_object_get(p, "priority")), 5);
            seen++;
        } else if (strcmp(name, "increment") == 0) {
            ck_assert_uint_eq(s_juint(p, "rate"), 0);
            ck_assert_uint_eq(s_juint(p, "cap"), 0);
            ck_assert_uint_eq(s_juint(p, "delay"), 0);
            seen++;
        }
    }
    ck_assert_int_eq(seen, 5);
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Fairness
   ------------------------------------------------------------------------ */

START_TEST(test_sched_small_session_is_not_starved_by_a_large_backlog)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-fair", NULL);
    s_start_worker(&env, "1");
    am2z_client_t *c = am2z_cluster_client(&env, 30000);
    char path[600], hold[AM2Z_JOB_ID_MAX + 1];
    s_hold(&env, c, "fair-hold", path, sizeof path, hold);
    /* session big: 10,000 jobs queued first; session small: 10 after */
    enum { BIG = 10000, SMALL = 10, CHUNK = 1000 };
    const am2z_state_t *states[CHUNK] = { 0 };
    const char *sessions[CHUNK];
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc(CHUNK, sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    am2z_client_t *bulk = am2z_cluster_client(&env, 30000);
    for (size_t i = 0; i < CHUNK; i++)
        sessions[i] = "fair-big";
    for (size_t done = 0; done < BIG; done += CHUNK) {
        ck_assert_int_eq(am2z_client_submit_many(bulk, "gate", states, sessions, CHUNK, ids),
                         AM2Z_OK);
        for (size_t i = 0; i < CHUNK; i++)
            ck_assert_msg(ids[i][0], "big job refused: %s", am2z_client_last_error(bulk));
    }
    free(ids);
    char small[SMALL][AM2Z_JOB_ID_MAX + 1];
    for (size_t i = 0; i < SMALL; i++)
        s_submit(c, "gate", "fair-small", false, 0, small[i]);
    s_release(path);
    int64_t held = s_ticket(c, hold);
    ck_assert_int_eq(held, 1);
    /* two ready sessions of equal priority alternate: the small session's
       k-th job runs within 2k dispatches of the release, whatever the
       big backlog (the bound in BEHAVIOUR.md "Scheduling") */
    int64_t prev = held;
    for (size_t k = 0; k < SMALL; k++) {
        int64_t t = s_ticket(c, small[k]);
        ck_assert_int_gt(t, prev);
        ck_assert_msg(t - held <= 2 * ((int64_t)k + 1), "small job %zu ran as dispatch %lld",
                      k + 1, (long long)(t - held));
        prev = t;
    }
    am2z_client_destroy(&bulk);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Every thread of pid (main, ZeroMQ's I/O thread, actors) may run only
    on `cpus` (as /proc writes a list: "1", "0-1"). Returns the number of
    threads checked. */
static int
s_threads_on(pid_t pid, const char *cpus)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char status[512], line[256];
        snprintf(status, sizeof status, "%s/%s/status", path, de->d_name);
        FILE *f = fopen(status, "r");
        if (!f)
            continue;                  /* the thread ended meanwhile */
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
                char *v = line + 18;
                v += strspn(v, " \t");
                v[strcspn(v, "\n")] = '\0';
                ck_assert_msg(strcmp(v, cpus) == 0, "thread %s of %d runs on %s, not %s",
                              de->d_name, (int)pid, v, cpus);
                n++;
            }
        fclose(f);
    }
    closedir(d);
    return n;
}

/*  --cpus places the broker and the worker, all their threads, and a job
    still runs (the worker's actor threads start later and inherit it). */
START_TEST(test_sched_cpus_places_every_thread_of_broker_and_worker)
{
    cpu_set_t allowed;
    ck_assert_int_eq(sched_getaffinity(0, sizeof allowed, &allowed), 0);
    int first = -1, last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) {
            if (first < 0)
                first = c;
            last = c;
        }
    char bcpu[16], wcpu[16];
    snprintf(bcpu, sizeof bcpu, "%d", first);
    snprintf(wcpu, sizeof wcpu, "%d", last);
    const char *bextra[] = { "--cpus", bcpu, NULL };
    const char *wextra[] = { "--cpus", wcpu, NULL };
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "sched-cpus", bextra);
    am2z_testproc_t *w = am2z_cluster_add_worker(&env, wextra);
    am2z_cluster_wait_workers(&env, 1);
    am2z_client_t *c = am2z_cluster_client(&env, 10000);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "cpus-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    ck_assert_int_ge(s_threads_on(env.broker.pid, bcpu), 2);   /* loop + ZeroMQ I/O */
    ck_assert_int_ge(s_threads_on(w->pid, wcpu), 3);           /* + an actor */
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("broker+workers per case");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_sched_higher_priority_sessions_run_first_equal_in_submission_order);
    tcase_add_test(tc, test_sched_session_lane_orders_by_priority_and_processor_default);
    tcase_add_test(tc, test_sched_equal_priority_runs_in_submission_order);
    tcase_add_test(tc, test_sched_priority_order_is_rebuilt_after_broker_kill);
    tcase_add_test(tc, test_sched_delayed_job_is_not_dispatched_before_due);
    tcase_add_test(tc, test_sched_delayed_job_survives_broker_kill_and_runs_after_due);
    tcase_add_test(tc, test_sched_rate_limit_holds_across_workers);
    tcase_add_test(tc, test_sched_rate_limit_holds_for_workflow_steps);
    tcase_add_test(tc, test_sched_cap_holds_across_workers);
    tcase_add_test(tc, test_sched_processors_query_reports_scheduling_defaults);
    tcase_add_test(tc, test_sched_small_session_is_not_starved_by_a_large_backlog);
    tcase_add_test(tc, test_sched_cpus_places_every_thread_of_broker_and_worker);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
