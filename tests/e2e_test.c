/*  e2e_test.c — Check suite "e2e": the real am2z-broker and two real
    am2z-example-worker processes on 127.0.0.1 ephemeral ports, driven
    through libam2z.

    The processes are started once per test case group (unchecked fixture,
    in the parent); each test runs in its own forked child with its own
    client, so no socket crosses a fork.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_json.h"
#include "am2z_sys.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

static am2z_cluster_t s_cl;

/*  No heartbeat flag here: broker and workers run on their defaults. */
static const char *const s_flags[] = { "--log-level", "warn", NULL };

static void
s_setup(void)
{
    s_cl.flags = s_flags;
    const char *const periodic[] = { "--durability", "periodic", NULL };
    const char *const a[] = { "--id", "worker-a", NULL };
    const char *const b[] = { "--id", "worker-b", NULL };
    am2z_cluster_start_broker(&s_cl, "e2e", periodic);
    am2z_cluster_add_worker(&s_cl, a);
    am2z_cluster_add_worker(&s_cl, b);
    am2z_cluster_wait_workers_cli(&s_cl, 2);   /* unchecked fixture: no ZeroMQ in Check's parent */
}

static void
s_teardown(void)
{
    am2z_cluster_stop(&s_cl);
}

static am2z_client_t *
s_client(void)
{
    return am2z_cluster_client(&s_cl, 10000);
}

static int64_t
s_count(const am2z_state_t *st)
{
    int64_t n = -1;
    ck_assert_int_eq(am2z_state_get_int(st, "count", &n), AM2Z_OK);
    return n;
}

START_TEST(test_e2e_increment_returns_count_plus_one_and_version_plus_one)
{
    am2z_client_t *c = s_client();
    am2z_state_t *st = am2z_cluster_state("inc-1", "count", 5, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", st, "inc-1", NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "increment failed: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_count(r->state), 6);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    char msg[64];
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "message", msg, sizeof msg), AM2Z_OK);
    ck_assert_str_eq(msg, "Count is now 6");
    ck_assert_str_eq(r->processor, "increment");
    ck_assert_str_eq(r->session_id, "inc-1");
    ck_assert_uint_eq(r->attempt, 1);
    ck_assert_uint_ge(r->exec_us, 1);
    ck_assert_uint_gt(r->started_at_ms, 0);
    ck_assert_uint_eq(strlen(r->job_id), AM2Z_ID_LEN);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
}
END_TEST

START_TEST(test_e2e_state_persists_in_session_and_get_state_sees_it)
{
    am2z_client_t *c = s_client();
    am2z_state_t *st = am2z_cluster_state("persist-1", "count", 0, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", st, "persist-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(am2z_client_execute_in_session(c, "persist-1", "increment", NULL, &r),
                         AM2Z_OK);
        ck_assert(r->success);
        ck_assert_int_eq(s_count(r->state), i + 2);
        ck_assert_uint_eq(am2z_state_version(r->state), (uint64_t)i + 3);
        am2z_result_destroy(&r);
    }
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "persist-1", &stored), AM2Z_OK);
    ck_assert_int_eq(s_count(stored), 5);
    ck_assert_uint_eq(am2z_state_version(stored), 6);
    ck_assert_str_eq(am2z_state_session_id(stored), "persist-1");
    am2z_state_destroy(&stored);

    /* submitting an explicit state again rebases it: version keeps growing */
    ck_assert_int_eq(am2z_client_execute(c, "increment", st, "persist-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_int_eq(s_count(r->state), 1);
    ck_assert_uint_eq(am2z_state_version(r->state), 7);
    am2z_result_destroy(&r);

    ck_assert_int_eq(am2z_client_get_state(c, "no-such-session", &stored), AM2Z_ENOTFOUND);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
}
END_TEST

/*  Counts events per session seen by one client's own-job feed. */
typedef struct {
    char session[64];
    int foreign;                  /* events naming another session */
    int seen;
} s_iso_t;

static void
s_iso_event(const am2z_event_t *ev, void *arg)
{
    s_iso_t *iso = arg;
    iso->seen++;
    if (ev->session_id && ev->session_id[0] && strcmp(ev->session_id, iso->session) != 0)
        iso->foreign++;
}

START_TEST(test_e2e_sessions_are_isolated)
{
    /* 10 sessions, each in its own process with its own client, all at once */
    pid_t kids[10];
    for (int k = 0; k < 10; k++) {
        kids[k] = fork();
        ck_assert_int_ge(kids[k], 0);
        if (kids[k] == 0) {
            int bad = 0;
            s_iso_t iso = { 0 };
            snprintf(iso.session, sizeof iso.session, "iso-%d", k);
            am2z_client_t *c = NULL;
            if (am2z_client_connect(s_cl.frontend, &c) != AM2Z_OK)
                _exit(10);
            am2z_client_set_timeout(c, 10000);
            am2z_client_on_event(c, "", s_iso_event, &iso);
            am2z_state_t *st = am2z_cluster_state(iso.session, "count", k * 100, NULL);
            for (int i = 0; i < 10; i++) {
                am2z_result_t *r = NULL;
                if (am2z_client_execute(c, "increment", i == 0 ? st : NULL, iso.session,
                                        NULL, &r) != AM2Z_OK || !r->success)
                    bad++;
                else if (strcmp(r->session_id, iso.session) != 0
                         || strcmp(am2z_state_session_id(r->state), iso.session) != 0
                         || s_count(r->state) != k * 100 + i + 1)
                    bad++;
                am2z_result_destroy(&r);
            }
            am2z_state_destroy(&st);
            am2z_client_destroy(&c);
            _exit(bad ? 1 : iso.foreign ? 2 : iso.seen == 0 ? 3 : 0);
        }
    }
    for (int k = 0; k < 10; k++) {
        int status = 0;
        ck_assert_int_eq(waitpid(kids[k], &status, 0), kids[k]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "session iso-%d: exit %d (1 wrong result, 2 foreign event, 3 no events)",
                      k, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
}
END_TEST

/*  Which worker ran each job: the "worker" of its processor:active events. */
typedef struct {
    int a, b, other;              /* events naming worker-a, worker-b, anything else */
} s_served_t;

static void
s_served_event(const am2z_event_t *ev, void *arg)
{
    s_served_t *served = arg;
    json_t *j = NULL;
    const char *worker = NULL;
    if (ev->data && am2z_json_from_msgpack(ev->data, ev->data_size, &j) == AM2Z_OK)
        worker = json_string_value(json_object_get(j, "worker"));
    if (worker && strcmp(worker, "worker-a") == 0)
        served->a++;
    else if (worker && strcmp(worker, "worker-b") == 0)
        served->b++;
    else
        served->other++;
    json_decref(j);
}

START_TEST(test_e2e_two_workers_serve_one_processor)
{
    am2z_client_t *c = s_client();
    s_served_t served = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "processor:active", s_served_event, &served),
                     AM2Z_OK);
    enum { N = 100 };
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    /* one session per job so both workers get work at once */
    for (int i = 0; i < N; i++) {
        char session[32];
        snprintf(session, sizeof session, "pair-%d", i);
        am2z_state_t *st = am2z_cluster_state(session, "count", i, NULL);
        ck_assert_int_eq(am2z_client_submit(c, "increment", st, session, NULL, ids[i]), AM2Z_OK);
        am2z_state_destroy(&st);
    }
    for (int i = 0; i < N; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 10000, &r), AM2Z_OK);
        ck_assert(r->success);
        ck_assert_str_eq(r->job_id, ids[i]);
        ck_assert_int_eq(s_count(r->state), i + 1);
        am2z_result_destroy(&r);
    }
    /* each job's lease was announced (before its RESULT) naming the
       worker that ran it: both served some */
    ck_assert_msg(served.a + served.b == N && served.other == 0,
                  "processor:active: %d worker-a, %d worker-b, %d other, for %d jobs",
                  served.a, served.b, served.other, N);
    ck_assert_int_ge(served.a, 1);
    ck_assert_int_ge(served.b, 1);
    am2z_client_destroy(&c);
}
END_TEST

START_TEST(test_e2e_submit_many_pipelines_across_sessions)
{
    am2z_client_t *c = s_client();
    enum { N = 40 };
    am2z_state_t *states[N];
    const char *sessions[N];
    for (int i = 0; i < N; i++) {
        char session[32];
        snprintf(session, sizeof session, "bulk-%d", i % 8);
        states[i] = am2z_cluster_state(session, "count", 100 * i, NULL);
        sessions[i] = am2z_state_session_id(states[i]);
    }
    char ids[N][AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", (const am2z_state_t *const *)states,
                                             sessions, N, ids), AM2Z_OK);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(strlen(ids[i]), AM2Z_ID_LEN);
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 10000, &r), AM2Z_OK);
        ck_assert(r->success);
        ck_assert_str_eq(r->session_id, sessions[i]);
        ck_assert_int_eq(s_count(r->state), 100 * i + 1);
        am2z_result_destroy(&r);
    }
    /* a refused submit leaves its id empty and the others go through */
    char two[2][AM2Z_JOB_ID_MAX + 1];
    const am2z_state_t *pair[2] = { states[0], states[1] };
    ck_assert_int_eq(am2z_client_submit_many(c, "no-such-processor", pair, NULL, 2, two),
                     AM2Z_OK);
    ck_assert_str_eq(two[0], "");
    ck_assert_str_eq(two[1], "");
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "no-such-processor"));
    for (int i = 0; i < N; i++)
        am2z_state_destroy(&states[i]);
    am2z_client_destroy(&c);
}
END_TEST

/*  The broker's BATCH counters (QUERY stats, "batches"). */
static void
s_batches(am2z_client_t *c, json_int_t out[8])
{
    static const char *const keys[8] = {
        "fromClients", "fromClientsCommands", "toClients", "toClientsCommands",
        "fromWorkers", "fromWorkersCommands", "toWorkers", "toWorkersCommands",
    };
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    json_t *b = json_object_get(j, "batches");
    ck_assert(json_is_object(b));
    for (int i = 0; i < 8; i++) {
        json_t *v = json_object_get(b, keys[i]);
        ck_assert_msg(json_is_integer(v), "stats.batches.%s missing", keys[i]);
        out[i] = json_integer_value(v);
    }
    json_decref(j);
}

/*  submit_many goes as BATCHes; the broker answers it, feeds the workers
    and hears from them in BATCHes too (docs/PROTOCOL.md "Batches"). */
START_TEST(test_e2e_submit_many_travels_in_batches_both_ways)
{
    am2z_client_t *c = s_client();
    json_int_t before[8], after[8];
    s_batches(c, before);
    enum { N = 1000 };
    am2z_state_t **states = calloc(N, sizeof *states);
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc(N, sizeof *ids);
    ck_assert(states && ids);
    for (int i = 0; i < N; i++) {
        char session[32];
        snprintf(session, sizeof session, "batch-%d", i);
        states[i] = am2z_cluster_state(session, "count", i, NULL);
    }
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", (const am2z_state_t *const *)states,
                                             NULL, N, ids), AM2Z_OK);
    for (int i = 0; i < N; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 20000, &r), AM2Z_OK);
        ck_assert(r->success);
        ck_assert_int_eq(s_count(r->state), i + 1);
        am2z_result_destroy(&r);
        am2z_state_destroy(&states[i]);
    }
    s_batches(c, after);
    ck_assert_int_eq(after[0] - before[0], 1);        /* one BATCH of N SUBMITs */
    ck_assert_int_eq(after[1] - before[1], N);
    ck_assert_int_ge(after[2] - before[2], 1);        /* ACCEPTEDs, RESULTs */
    ck_assert_int_ge(after[3] - before[3], N);
    ck_assert_int_ge(after[6] - before[6], 1);        /* JOBs to the workers */
    ck_assert_int_ge(after[4] - before[4], 1);        /* DONEs from them */
    ck_assert_int_ge(after[5] - before[5], 2 * (after[4] - before[4]));
    free(states);
    free(ids);
    am2z_client_destroy(&c);
}
END_TEST

START_TEST(test_e2e_unknown_processor_fails_with_available_list)
{
    am2z_client_t *c = s_client();
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "no-such-processor", NULL, "unknown-1", NULL, &r),
                     AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_ptr_nonnull(r->error);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(r->error->message, "no-such-processor"));
    ck_assert_ptr_nonnull(r->error->details);
    /* the details list the available processors */
    ck_assert_ptr_nonnull(memmem(r->error->details, r->error->details_size, "increment", 9));
    am2z_result_destroy(&r);
    bool known = true;
    ck_assert_int_eq(am2z_client_is_processor_registered(c, "no-such-processor", &known), AM2Z_OK);
    ck_assert(!known);
    ck_assert_int_eq(am2z_client_is_processor_registered(c, "increment", &known), AM2Z_OK);
    ck_assert(known);
    am2z_client_destroy(&c);
}
END_TEST

/*  A state of `session` with key = text (when text is not NULL) and
    index = i. Caller owns it. */
static am2z_state_t *
s_indexed_state(const char *session, const char *key, const char *text, int i)
{
    am2z_state_t *st = NULL, *next = NULL;
    ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &st), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    if (text)
        am2z_changes_set_str(ch, key, text);
    am2z_changes_set_int(ch, "index", i);
    ck_assert_int_eq(am2z_state_apply(st, ch, am2z_clock_wall_ms(), 0, &next), AM2Z_OK);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st);
    return next;
}

enum { M_JOBS = 5 };

/*  Opens the gate (creates the file) once the gate jobs of sessions
    order-1 .. order-4 have all completed (their session stats say so),
    or at the deadline; `ok` says which. On its own client. */
typedef struct {
    const char *frontend;
    const char *gate;
    bool ok;
} s_opener_t;

static const am2z_queue_stats_t *s_find(const am2z_queue_list_t *list, const char *name);

static void *
s_open_gate_after_others(void *arg)
{
    s_opener_t *o = arg;
    uint64_t deadline = am2z_clock_mono_us() + 20000000;
    am2z_client_t *c = NULL;
    if (am2z_client_connect(o->frontend, &c) == AM2Z_OK) {
        am2z_client_set_timeout(c, 2000);
        while (!o->ok && am2z_clock_mono_us() < deadline) {
            int done = 0;
            for (int i = 1; i < M_JOBS; i++) {
                char session[32];
                snprintf(session, sizeof session, "order-%d", i);
                am2z_queue_list_t *list = NULL;
                if (am2z_client_get_session_stats(c, session, &list) == AM2Z_OK) {
                    const am2z_queue_stats_t *g = s_find(list, "gate");
                    done += g && g->completed == 1;
                    am2z_queue_list_destroy(&list);
                }
            }
            o->ok = done == M_JOBS - 1;
            if (!o->ok)
                usleep(10 * 1000);
        }
        am2z_client_destroy(&c);
    }
    FILE *f = fopen(o->gate, "w");
    if (f)
        fclose(f);
    return NULL;
}

START_TEST(test_e2e_execute_many_keeps_order_and_reports_failures)
{
    am2z_client_t *c = s_client();
    const char *emails[] = { "a@example.com", "not-an-email", "c@example.org", "", "e@x.io" };
    am2z_state_t *states[M_JOBS];
    /* one session per job: they run at once, on both workers */
    for (int i = 0; i < M_JOBS; i++) {
        char session[32];
        snprintf(session, sizeof session, "many-1-%d", i);
        states[i] = s_indexed_state(session, "email", emails[i], i);
    }
    am2z_result_t *results[M_JOBS] = { 0 };
    ck_assert_int_eq(am2z_client_execute_many(c, "validate-email",
                                              (const am2z_state_t *const *)states, M_JOBS,
                                              NULL, results), AM2Z_OK);
    const bool ok[M_JOBS] = { true, false, true, false, true };
    for (int i = 0; i < M_JOBS; i++) {
        ck_assert_ptr_nonnull(results[i]);
        ck_assert_msg(results[i]->success == ok[i], "result %d success=%d", i,
                      results[i]->success);
        ck_assert_str_eq(results[i]->session_id, am2z_state_session_id(states[i]));
        if (ok[i]) {
            int64_t index = -1;
            ck_assert_int_eq(am2z_state_get_int(results[i]->state, "index", &index), AM2Z_OK);
            ck_assert_int_eq(index, i);
        } else {
            ck_assert_int_eq(results[i]->error->category, AM2Z_CAT_VALIDATION);
        }
        am2z_result_destroy(&results[i]);
        am2z_state_destroy(&states[i]);
    }

    /* out of order for sure: job 0 waits at a gate ("gate" has one slot
       per worker, so it holds one worker's) that opens only once jobs
       1 .. 4 have completed on the other worker; its RESULT comes last */
    char gate_dir[512], gate[600];
    am2z_test_tmpdir("e2e-order-gate", gate_dir, sizeof gate_dir);
    snprintf(gate, sizeof gate, "%s/open", gate_dir);
    for (int i = 0; i < M_JOBS; i++) {
        char session[32];
        snprintf(session, sizeof session, "order-%d", i);
        states[i] = s_indexed_state(session, "file", i == 0 ? gate : NULL, i);
    }
    s_opener_t opener = { .frontend = s_cl.frontend, .gate = gate };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_open_gate_after_others, &opener), 0);
    int rc = am2z_client_execute_many(c, "gate", (const am2z_state_t *const *)states, M_JOBS,
                                      NULL, results);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(rc, AM2Z_OK);
    ck_assert_msg(opener.ok, "jobs 1..4 did not complete while job 0 waited at its gate");
    for (int i = 0; i < M_JOBS; i++) {
        ck_assert_ptr_nonnull(results[i]);
        ck_assert_msg(results[i]->success, "gate job %d failed", i);
        ck_assert_str_eq(results[i]->session_id, am2z_state_session_id(states[i]));
        int64_t index = -1;
        ck_assert_int_eq(am2z_state_get_int(results[i]->state, "index", &index), AM2Z_OK);
        ck_assert_int_eq(index, i);
        am2z_result_destroy(&results[i]);
        am2z_state_destroy(&states[i]);
    }
    unlink(gate);
    rmdir(gate_dir);
    am2z_client_destroy(&c);
}
END_TEST

static const am2z_queue_stats_t *
s_find(const am2z_queue_list_t *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->names[i], name) == 0)
            return &list->stats[i];
    return NULL;
}

START_TEST(test_e2e_stats_count_jobs)
{
    am2z_client_t *c = s_client();
    am2z_stats_t before = { 0 }, after = { 0 };
    ck_assert_int_eq(am2z_client_get_stats(c, &before), AM2Z_OK);
    am2z_queue_list_t *q0 = NULL;
    ck_assert_int_eq(am2z_client_get_queue_stats(c, &q0), AM2Z_OK);
    const am2z_queue_stats_t *f0 = s_find(q0, "fail");
    uint64_t fail_failed0 = f0 ? f0->failed : 0;

    am2z_state_t *st = am2z_cluster_state("stats-1", "count", 0, NULL);
    for (int i = 0; i < 7; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_execute(c, "increment", i ? NULL : st, "stats-1", NULL, &r),
                         AM2Z_OK);
        ck_assert(r->success);
        am2z_result_destroy(&r);
    }
    for (int i = 0; i < 3; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_execute(c, "fail", NULL, "stats-1", NULL, &r), AM2Z_OK);
        ck_assert(!r->success);
        am2z_result_destroy(&r);
    }
    ck_assert_int_eq(am2z_client_get_stats(c, &after), AM2Z_OK);
    ck_assert_uint_ge(after.completed, before.completed + 7);
    ck_assert_uint_ge(after.failed, before.failed + 3);
    ck_assert_uint_ge(after.processors, 10);
    ck_assert_uint_eq(after.workers, 2);

    am2z_queue_list_t *q = NULL;
    ck_assert_int_eq(am2z_client_get_queue_stats(c, &q), AM2Z_OK);
    const am2z_queue_stats_t *f = s_find(q, "fail");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(f->failed, fail_failed0 + 3);
    ck_assert_ptr_nonnull(s_find(q, "increment"));

    am2z_queue_list_t *s = NULL;
    ck_assert_int_eq(am2z_client_get_session_stats(c, "stats-1", &s), AM2Z_OK);
    const am2z_queue_stats_t *si = s_find(s, "increment");
    const am2z_queue_stats_t *sf = s_find(s, "fail");
    ck_assert_ptr_nonnull(si);
    ck_assert_ptr_nonnull(sf);
    ck_assert_uint_eq(si->completed, 7);
    ck_assert_uint_eq(si->failed, 0);
    ck_assert_uint_eq(sf->failed, 3);
    ck_assert_uint_eq(si->waiting + si->active, 0);

    am2z_strlist_t *sessions = NULL;
    ck_assert_int_eq(am2z_client_get_active_sessions(c, &sessions), AM2Z_OK);
    bool listed = false;
    for (size_t i = 0; i < sessions->count; i++)
        listed |= strcmp(sessions->items[i], "stats-1") == 0;
    ck_assert(listed);
    am2z_strlist_t *procs = NULL;
    ck_assert_int_eq(am2z_client_list_processors(c, &procs), AM2Z_OK);
    ck_assert_uint_ge(procs->count, 10);

    am2z_strlist_destroy(&procs);
    am2z_strlist_destroy(&sessions);
    am2z_queue_list_destroy(&s);
    am2z_queue_list_destroy(&q);
    am2z_queue_list_destroy(&q0);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
}
END_TEST

/*  Records event names in order. */
typedef struct {
    char names[32][64];
    int count;
} s_seen_t;

static void
s_record_event(const am2z_event_t *ev, void *arg)
{
    s_seen_t *seen = arg;
    if (seen->count < 32)
        snprintf(seen->names[seen->count++], 64, "%s", ev->name);
}

static int
s_index_of(const s_seen_t *seen, const char *name)
{
    for (int i = 0; i < seen->count; i++)
        if (strcmp(seen->names[i], name) == 0)
            return i;
    return -1;
}

START_TEST(test_e2e_events_arrive_in_order_before_result)
{
    am2z_client_t *c = s_client();
    s_seen_t seen = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record_event, &seen), AM2Z_OK);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "emit", NULL, "events-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    /* every event of this job was delivered before execute returned */
    int active = s_index_of(&seen, "processor:active");
    int one = s_index_of(&seen, "custom:one");
    int progress = s_index_of(&seen, "job:progress");
    int two = s_index_of(&seen, "custom:two");
    int done = s_index_of(&seen, "processor:job:completed");
    ck_assert_int_ge(active, 0);
    ck_assert_int_gt(one, active);
    ck_assert_int_gt(progress, active);
    ck_assert_int_gt(two, one);
    ck_assert_int_gt(done, two);
    ck_assert_int_gt(done, progress);
    am2z_result_destroy(&r);

    /* a failed attempt publishes processor:job:failed before the result */
    seen.count = 0;
    ck_assert_int_eq(am2z_client_execute(c, "fail", NULL, "events-1", NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_ge(s_index_of(&seen, "processor:job:failed"), 0);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
}
END_TEST

START_TEST(test_e2e_stop_session_deletes_state)
{
    am2z_client_t *c = s_client();
    am2z_state_t *st = am2z_cluster_state("stop-1", "count", 41, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", st, "stop-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    ck_assert_int_eq(am2z_client_stop_session(c, "stop-1", false), AM2Z_OK);
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "stop-1", &stored), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_stop_session(c, "never-existed", false), AM2Z_OK);
    /* the id can be used again and starts from scratch */
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "stop-1", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
}
END_TEST

/*  stats.pollSpin: spins started, spins that caught input. */
static void
s_spins(am2z_client_t *c, json_int_t *spins, json_int_t *caught)
{
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    json_t *p = json_object_get(j, "pollSpin");
    ck_assert_msg(json_is_object(p), "stats.pollSpin missing");
    ck_assert(json_is_integer(json_object_get(p, "us")));
    *spins = json_integer_value(json_object_get(p, "spins"));
    *caught = json_integer_value(json_object_get(p, "caught"));
    json_decref(j);
}

/*  A broker of the test's own (no workers) started with `args`, and a
    client of it. */
static am2z_client_t *
s_own_broker(am2z_cluster_t *cl, const char *name, const char *const *args)
{
    memset(cl, 0, sizeof *cl);
    cl->flags = s_flags;
    am2z_cluster_start_broker(cl, name, args);
    return am2z_cluster_client(cl, 10000);
}

/*  One broker per data dir (am2z.lock): a second am2z-broker on a running
    broker's data dir exits 1 and names the first one's pid, and the first
    goes on serving. */
START_TEST(test_e2e_second_broker_on_one_data_dir_exits_naming_the_first)
{
    am2z_cluster_t cl;
    am2z_client_t *c = s_own_broker(&cl, "e2e-lock", NULL);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec '%s' --data-dir '%s' --frontend 'tcp://127.0.0.1:*' "
             "--backend 'tcp://127.0.0.1:*' --events '' 2>&1", AM2Z_BROKER_BIN, cl.dir);
    char *const argv[] = { "/bin/sh", "-c", cmd, NULL };
    char out[4096] = "";
    ck_assert_int_eq(am2z_testproc_run(argv, out, sizeof out, 10000), 1);
    char pid[32];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)cl.broker.pid);
    ck_assert_msg(strstr(out, "in use by another broker") && strstr(out, pid),
                  "unexpected output: %s", out);
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "lock-none", &st), AM2Z_ENOTFOUND);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&cl);
}
END_TEST

/*  Poll spin: requests that follow each other closely are caught by the
    loop's spin; once the broker is idle it sleeps without spinning (each
    wake-up after a long wait skips the spin), so an idle broker burns no
    CPU on it.  The broker here spins for the longest allowed time (10ms),
    and of 200 back-to-back requests the test asks only that one landed in
    a spin: how many do depends on how fast this machine turns a request
    around, which the test does not assert. */
START_TEST(test_e2e_broker_spins_only_while_requests_come_close)
{
    am2z_cluster_t cl;
    const char *const spin[] = { "--poll-spin", "10ms", NULL };
    am2z_client_t *c = s_own_broker(&cl, "e2e-spin", spin);
    json_int_t s0, c0, s1, c1, s2, c2;
    s_spins(c, &s0, &c0);
    for (int i = 0; i < 200; i++) {      /* back to back: the broker waits ~a round trip */
        am2z_state_t *st = NULL;
        ck_assert_int_eq(am2z_client_get_state(c, "spin-none", &st), AM2Z_ENOTFOUND);
    }
    s_spins(c, &s1, &c1);
    ck_assert_int_ge(s1 - s0, c1 - c0);
    if (am2z_sys_cpus_allowed() > 1)      /* one CPU: the broker turns spinning off */
        ck_assert_int_ge(c1 - c0, 1);     /* spins do catch requests */
    /* idle: nothing but the loop's own timer wake-ups (at least one every
       100 ms, each after a wait longer than the spin) for half a second;
       spinning after each of them would count 5 or more */
    usleep(500 * 1000);
    s_spins(c, &s2, &c2);
    ck_assert_int_le(s2 - s1, 2);         /* the stats request's own turn, at most */
    am2z_client_destroy(&c);
    am2z_cluster_stop(&cl);
}
END_TEST

/*  A broker that may run on one CPU only does not spin: its loop would
    hold the CPU that ZeroMQ's I/O thread needs to deliver its input. */
START_TEST(test_e2e_broker_on_one_cpu_does_not_spin)
{
    am2z_cluster_t cl;
    const char *const one[] = { "--cpus", "0", NULL };
    am2z_client_t *c = s_own_broker(&cl, "e2e-onecpu", one);
    for (int i = 0; i < 100; i++) {
        am2z_state_t *st = NULL;
        ck_assert_int_eq(am2z_client_get_state(c, "spin-none", &st), AM2Z_ENOTFOUND);
    }
    json_int_t spins, caught;
    s_spins(c, &spins, &caught);
    ck_assert_int_eq(spins, 0);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&cl);
}
END_TEST

/*  The broker skips the host's OpenSSL configuration unless told
    (--openssl-config). With a configuration that loads only OpenSSL's
    "base" provider (no SHA-256): a default broker seals and serves jobs;
    one told to read it refuses to start, exit 1, naming the setting. */
START_TEST(test_e2e_broker_openssl_config)
{
    const char *tmp = getenv("AM2Z_TEST_TMP");
    char conf[512], dir[512];
    snprintf(dir, sizeof dir, "%s/e2e-openssl-%d.data", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    am2z_test_openssl_base_only("e2e", conf, sizeof conf);
    ck_assert_int_eq(setenv("OPENSSL_CONF", conf, 1), 0);   /* the children inherit it */

    am2z_cluster_t cl;
    am2z_client_t *c = s_own_broker(&cl, "e2e-openssl", NULL);
    const char *const w[] = { "--concurrency", "1", NULL };
    am2z_cluster_start_worker(&cl, w);
    am2z_state_t *st = am2z_cluster_state("ossl", "count", 1, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", st, "ossl", NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "%s", r->error ? r->error->message : "?");
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&cl);

    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec '%s' --openssl-config --data-dir '%s' --frontend 'tcp://127.0.0.1:*' "
             "--backend 'tcp://127.0.0.1:*' --events '' 2>&1", AM2Z_BROKER_BIN, dir);
    char *const argv[] = { "/bin/sh", "-c", cmd, NULL };
    char out[4096] = "";
    ck_assert_int_eq(am2z_testproc_run(argv, out, sizeof out, 10000), 1);
    ck_assert_msg(strstr(out, "cannot compute SHA-256") && strstr(out, "--openssl-config"),
                  "%s", out);
    unsetenv("OPENSSL_CONF");
    unlink(conf);
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(rm), 0);
}
END_TEST

/*  --malloc-arenas: a worker whose threads share one malloc arena serves
    jobs from several slots at once; a value out of range is refused at
    start with the usage (exit 2). */
START_TEST(test_e2e_worker_malloc_arenas)
{
    char out[8192];
    char *const bad[] = { AM2Z_EXAMPLE_WORKER_BIN, "--malloc-arenas", "5000", NULL };
    ck_assert_int_eq(am2z_testproc_run(bad, out, sizeof out, 10000), 2);
    am2z_cluster_t cl;
    am2z_client_t *c = s_own_broker(&cl, "e2e-arenas", NULL);
    const char *const w[] = { "--malloc-arenas", "1", "--concurrency", "8", NULL };
    am2z_cluster_start_worker(&cl, w);
    const am2z_state_t *states[40];
    am2z_state_t *owned[40];
    for (int i = 0; i < 40; i++) {
        char session[32];
        snprintf(session, sizeof session, "arena-%d", i % 8);
        owned[i] = am2z_cluster_state(session, "count", i, NULL);
        states[i] = owned[i];
    }
    char ids[40][AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", states, NULL, 40, ids), AM2Z_OK);
    for (int i = 0; i < 40; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 15000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "job %d: %s", i, r->error ? r->error->message : "?");
        am2z_result_destroy(&r);
        am2z_state_destroy(&owned[i]);
    }
    am2z_client_destroy(&c);
    am2z_cluster_stop(&cl);
}
END_TEST

/*  A broker on its default durability (sync) and one worker with 4 slots;
    poll spin off. */
static void
s_setup_sync(void)
{
    memset(&s_cl, 0, sizeof s_cl);
    s_cl.flags = s_flags;
    const char *const w[] = { "--id", "worker-s", "--concurrency", "4", NULL };
    const char *const b[] = { "--poll-spin", "0", NULL };
    am2z_cluster_start_broker(&s_cl, "e2e-sync", b);
    am2z_cluster_add_worker(&s_cl, w);
    am2z_cluster_wait_workers_cli(&s_cl, 1);
}

/*  Pipelines K jobs into each of S sessions (prefix-0 ..), every job
    continuing from the stored state, and checks that each session counted
    1..K in order with versions one apart, and that nothing failed. */
static void
s_pipeline_sessions(am2z_client_t *c, const char *prefix, int S, int K)
{
    const char **sessions = calloc((size_t)(S * K), sizeof *sessions);
    const am2z_state_t **states = calloc((size_t)(S * K), sizeof *states);
    char (*names)[32] = calloc((size_t)S, sizeof *names);
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc((size_t)(S * K), sizeof *ids);
    ck_assert(sessions && states && names && ids);
    for (int s = 0; s < S; s++)
        snprintf(names[s], sizeof names[s], "%s-%d", prefix, s);
    for (int k = 0; k < K; k++)
        for (int s = 0; s < S; s++)
            sessions[k * S + s] = names[s];     /* states[] NULL: the stored state */
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", states, sessions,
                                             (size_t)(S * K), ids), AM2Z_OK);
    for (int k = 0; k < K; k++)
        for (int s = 0; s < S; s++) {
            am2z_result_t *r = NULL;
            ck_assert_int_eq(am2z_client_wait(c, ids[k * S + s], 20000, &r), AM2Z_OK);
            ck_assert_msg(r->success, "job %d of %s failed: %s", k, names[s],
                          r->error ? r->error->message : "?");
            ck_assert_str_eq(r->session_id, names[s]);
            ck_assert_int_eq(s_count(r->state), k + 1);
            ck_assert_uint_eq(am2z_state_version(r->state), (uint64_t)k + 2);
            am2z_result_destroy(&r);
        }
    free(sessions);
    free(states);
    free(names);
    free(ids);
}

static json_int_t
s_leased_before_commit(am2z_client_t *c)
{
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    json_t *v = json_object_get(j, "leasedBeforeCommit");
    ck_assert_msg(json_is_integer(v), "stats.leasedBeforeCommit missing");
    json_int_t n = json_integer_value(v);
    json_decref(j);
    return n;
}

/*  Sync durability leases jobs whose input is already committed before a
    turn's commit, so workers run while the disk flushes; a session whose
    state that turn changed waits for the commit (a job given the state
    from before that turn's DONE would come back with a version that no
    longer fits, and fail). Many sessions: the early leases happen. Fewer
    sessions than slots, deep queues: every session that can go next has
    just finished a job, the case the rule is for. */
START_TEST(test_e2e_sync_leases_early_but_never_on_stale_state)
{
    am2z_client_t *c = s_client();
    json_int_t early0 = s_leased_before_commit(c);
    s_pipeline_sessions(c, "sync-wide", 40, 6);
    ck_assert_int_gt(s_leased_before_commit(c), early0);   /* the early path ran */
    s_pipeline_sessions(c, "sync-deep", 3, 40);
    /* the turns went through the store's writer thread (the default) */
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    json_t *sw = json_object_get(j, "storeWriter");
    json_int_t commits = json_integer_value(json_object_get(sw, "commits"));
    json_int_t turns = json_integer_value(json_object_get(sw, "turns"));
    ck_assert_msg(json_is_object(sw) && commits > 0 && turns >= commits,
                  "stats.storeWriter: commits %lld, turns %lld", (long long)commits,
                  (long long)turns);
    json_decref(j);
    json_int_t spins, caught;
    s_spins(c, &spins, &caught);
    ck_assert_int_eq(spins, 0);           /* --poll-spin 0: never */
    ck_assert_int_eq(caught, 0);
    am2z_client_destroy(&c);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("e2e");
    TCase *tc = tcase_create("broker+2 workers");
    tcase_add_unchecked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_increment_returns_count_plus_one_and_version_plus_one);
    tcase_add_test(tc, test_e2e_state_persists_in_session_and_get_state_sees_it);
    tcase_add_test(tc, test_e2e_sessions_are_isolated);
    tcase_add_test(tc, test_e2e_two_workers_serve_one_processor);
    tcase_add_test(tc, test_e2e_submit_many_pipelines_across_sessions);
    tcase_add_test(tc, test_e2e_submit_many_travels_in_batches_both_ways);
    tcase_add_test(tc, test_e2e_unknown_processor_fails_with_available_list);
    tcase_add_test(tc, test_e2e_execute_many_keeps_order_and_reports_failures);
    tcase_add_test(tc, test_e2e_stats_count_jobs);
    tcase_add_test(tc, test_e2e_events_arrive_in_order_before_result);
    tcase_add_test(tc, test_e2e_stop_session_deletes_state);
    tcase_add_test(tc, test_e2e_broker_spins_only_while_requests_come_close);
    tcase_add_test(tc, test_e2e_second_broker_on_one_data_dir_exits_naming_the_first);
    tcase_add_test(tc, test_e2e_broker_on_one_cpu_does_not_spin);
    tcase_add_test(tc, test_e2e_worker_malloc_arenas);
    tcase_add_test(tc, test_e2e_broker_openssl_config);
    suite_add_tcase(s, tc);
    tc = tcase_create("sync broker+1 worker");
    tcase_add_unchecked_fixture(tc, s_setup_sync, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_e2e_sync_leases_early_but_never_on_stale_state);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
