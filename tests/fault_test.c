/*  fault_test.c — Check suite "fault": real am2z-broker and
    am2z-example-worker processes on 127.0.0.1, killed with real signals
    while they hold work; libam2z checks that every accepted job ends with
    exactly one result and that every session's state saw each job once.

    Short heartbeats (100 ms, liveness 3) keep failure detection fast. Every
    wait polls for the event it needs, bounded; nothing sleeps and hopes.
    Brokers bind explicit free ports below the ephemeral ranges, so a
    restarted broker gets the same ports back (a "*" port can be taken by
    a parallel test while the broker is down).
    am2z_testproc_start ties every child to the test's life, so a failing
    case leaves no daemon behind.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HB "100ms"
#define LIVENESS "3"

/* ---------------------------------------------------------------------------
   Processes
   ------------------------------------------------------------------------ */

/*  Broker and workers: short heartbeats, quiet logs. */
static const char *const s_flags[] = { "--heartbeat", HB, "--liveness", LIVENESS,
                                       "--log-level", "error", NULL };
static const char *const s_periodic[] = { "--durability", "periodic", NULL };

/*  A broker on a new data dir and explicit free ports, which a restart
    (am2z_cluster_start_broker) binds again. */
static void
s_broker_new(am2z_cluster_t *b, const char *tag)
{
    memset(b, 0, sizeof *b);
    b->flags = s_flags;
    for (int tries = 0; tries < 5; tries++) {
        am2z_cluster_pick_ports(b);
        if (am2z_cluster_try_broker(b, tag, s_periodic) == 0)
            return;
    }
    ck_abort_msg("broker did not start");
}

/*  Restart on the same data dir and ports. */
static void
s_broker_start(am2z_cluster_t *b)
{
    am2z_cluster_start_broker(b, NULL, s_periodic);
}

static void
s_worker_start_grace(am2z_testproc_t *w, const am2z_cluster_t *b, const char *id,
                     const char *concurrency, const char *grace)
{
    const char *const extra[] = { "--id", id, "--grace", grace,
                                  "--concurrency", concurrency, NULL };
    am2z_cluster_spawn_worker(b, w, extra);
}

static void
s_worker_start(am2z_testproc_t *w, const am2z_cluster_t *b, const char *id,
               const char *concurrency)
{
    s_worker_start_grace(w, b, id, concurrency, "10s");
}

/*  SIGTERM, and the worker must drain and exit 0 in time. */
static void
s_worker_term(am2z_testproc_t *w)
{
    int status = am2z_testproc_stop(w, SIGTERM, 15000);
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "worker did not exit 0 on SIGTERM (status %d)", status);
}

static void
s_pause_ms(long ms)
{
    nanosleep(&(struct timespec){ .tv_sec = ms / 1000,
                                  .tv_nsec = (ms % 1000) * 1000000L }, NULL);
}

/*  Polls until the broker counts exactly `n` workers, up to a deadline
    of timeout_ms (on the monotonic clock: a stats call may itself block
    for its 1 s timeout). */
static void
s_wait_workers(const am2z_cluster_t *b, uint64_t n, int timeout_ms)
{
    am2z_client_t *c = am2z_cluster_client(b, 1000);
    am2z_stats_t st = { 0 };
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    while (true) {
        if (am2z_client_get_stats(c, &st) == AM2Z_OK && st.workers == n)
            break;
        if (am2z_clock_mono_us() >= deadline)
            break;
        s_pause_ms(20);
    }
    ck_assert_msg(st.workers == n, "broker counts %llu workers, expected %llu",
                  (unsigned long long)st.workers, (unsigned long long)n);
    am2z_client_destroy(&c);
}

/*  The job's status as the broker reports it ("waiting", "active", ...),
    via QUERY job; "" when unknown. */
static void
s_job_status(am2z_client_t *c, const char *job, char *out, size_t size)
{
    static const char *const names[] = { "waiting", "active", "completed", "failed" };
    out[0] = '\0';
    uint8_t *data = NULL;
    size_t n = 0;
    if (am2z_client_query(c, "job", job, &data, &n) != AM2Z_OK)
        return;
    for (size_t i = 0; i < 4; i++) {
        /*  a msgpack fixstr: 0xa0 | length, then the bytes */
        uint8_t pat[16];
        size_t len = strlen(names[i]);
        pat[0] = (uint8_t)(0xa0 | len);
        memcpy(pat + 1, names[i], len);
        if (memmem(data, n, pat, len + 1)) {
            snprintf(out, size, "%s", names[i]);
            break;
        }
    }
    free(data);
}

/*  Polls until the job's status is `want`, up to a deadline of
    timeout_ms on the monotonic clock (each QUERY may block for the
    client's timeout). */
static void
s_wait_status(am2z_client_t *c, const char *job, const char *want, int timeout_ms)
{
    char status[32] = "";
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    while (true) {
        s_job_status(c, job, status, sizeof status);
        if (strcmp(status, want) == 0)
            return;
        if (am2z_clock_mono_us() >= deadline)
            break;
        s_pause_ms(10);
    }
    ck_abort_msg("job %s is '%s', never '%s'", job, status, want);
}

static uint64_t
s_stored_version(am2z_client_t *c, const char *session)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, session, &st), AM2Z_OK);
    uint64_t v = am2z_state_version(st);
    am2z_state_destroy(&st);
    return v;
}

/* ---------------------------------------------------------------------------
   Cases
   ------------------------------------------------------------------------ */

START_TEST(test_fault_worker_sigkill_mid_job_completes_on_another_worker)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-wkill");
    am2z_testproc_t a, w2;
    s_worker_start(&a, &b, "worker-a", "4");
    s_wait_workers(&b, 1, 5000);
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_state_t *st = am2z_cluster_state("wkill-1", "ms", 2000, NULL);
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "sleep", st, "wkill-1", NULL, id), AM2Z_OK);
    am2z_client_t *q = am2z_cluster_client(&b, 10000);
    s_wait_status(q, id, "active", 5000);       /* leased to A, the only one */
    s_worker_start(&w2, &b, "worker-b", "4");
    s_wait_workers(&b, 2, 5000);
    int status = am2z_testproc_stop(&a, SIGKILL, 5000);
    ck_assert(status != -1 && WIFSIGNALED(status));

    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 15000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "job failed: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 2);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    /*  no second RESULT reached the caller (a round trip flushes the pipe) */
    am2z_stats_t stats;
    ck_assert_int_eq(am2z_client_get_stats(c, &stats), AM2Z_OK);
    ck_assert_int_eq(am2z_client_poll(c, id, &r), AM2Z_ETIMEOUT);
    /*  one success: the state moved once, and the stored result is that one */
    ck_assert_uint_eq(s_stored_version(q, "wkill-1"), 2);
    ck_assert_int_eq(am2z_client_wait(q, id, 5000, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_uint_eq(r->attempt, 2);
    am2z_result_destroy(&r);

    am2z_state_destroy(&st);
    am2z_client_destroy(&q);
    am2z_client_destroy(&c);
    s_worker_term(&w2);
    am2z_cluster_stop(&b);
}
END_TEST

enum { K_JOBS = 1000, K_SESSIONS = 50 };

START_TEST(test_fault_broker_sigkill_with_1000_jobs_in_flight_loses_none)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-bkill");
    am2z_testproc_t w[2];
    s_worker_start(&w[0], &b, "worker-a", "4");
    s_worker_start(&w[1], &b, "worker-b", "4");
    s_wait_workers(&b, 2, 5000);

    /*  1000 increments over 50 sessions, no input state: each session
        starts at version 1 / count 0 and every job continues from the last */
    static char sessions_buf[K_JOBS][32];
    static const char *sessions[K_JOBS];
    static const am2z_state_t *states[K_JOBS];
    static char ids[K_JOBS][AM2Z_JOB_ID_MAX + 1];
    for (int i = 0; i < K_JOBS; i++) {
        snprintf(sessions_buf[i], sizeof sessions_buf[i], "bkill-%d", i % K_SESSIONS);
        sessions[i] = sessions_buf[i];
        states[i] = NULL;
    }
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_client_set_timeout(c, 30000);
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", states, sessions, K_JOBS,
                                             ids), AM2Z_OK);
    for (int i = 0; i < K_JOBS; i++)
        ck_assert_msg(strlen(ids[i]) > 0, "job %d not accepted: %s", i,
                      am2z_client_last_error(c));
    /*  all 1000 are durable: kill the broker now, mid-flight */
    int status = am2z_testproc_stop(&b.broker, SIGKILL, 5000);
    ck_assert(status != -1 && WIFSIGNALED(status));
    am2z_client_destroy(&c);

    s_broker_start(&b);                    /* same data dir, same ports */
    s_wait_workers(&b, 2, 10000);                /* the workers came back */

    /*  a new client fetches every result by id, twice */
    am2z_client_t *f = am2z_cluster_client(&b, 10000);
    static uint64_t version[K_JOBS];
    static int64_t count[K_JOBS];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < K_JOBS; i++) {
            am2z_result_t *r = NULL;
            int rc = am2z_client_wait(f, ids[i], 20000, &r);
            ck_assert_msg(rc == AM2Z_OK, "job %d (%s): %s", i, ids[i], am2z_strerror(rc));
            ck_assert_msg(r->success, "job %d failed: %s", i,
                          r->error ? r->error->message : "?");
            ck_assert_str_eq(r->session_id, sessions[i]);
            int64_t n = -1;
            ck_assert_int_eq(am2z_state_get_int(r->state, "count", &n), AM2Z_OK);
            if (pass == 0) {
                version[i] = am2z_state_version(r->state);
                count[i] = n;
            } else {
                ck_assert_msg(version[i] == am2z_state_version(r->state) && count[i] == n,
                              "job %d: two fetches differ", i);
            }
            am2z_result_destroy(&r);
        }
    }
    /*  exactly once: the k-th job of a session (submission order) saw k-1
        jobs before it, and each session moved by exactly its 20 jobs */
    for (int i = 0; i < K_JOBS; i++) {
        int k = i / K_SESSIONS + 1;
        ck_assert_msg(count[i] == k && version[i] == (uint64_t)k + 1,
                      "job %d (session %s, #%d): count %lld version %llu", i, sessions[i],
                      k, (long long)count[i], (unsigned long long)version[i]);
    }
    for (int s = 0; s < K_SESSIONS; s++)
        ck_assert_uint_eq(s_stored_version(f, sessions[s]), 1 + K_JOBS / K_SESSIONS);
    /*  the retention index, rebuilt from `done` at the restart and kept
        since, holds every stored result: the 1000 (retain-completed) */
    ck_assert_int_eq(am2z_cluster_check_retention(f), 1000);
    am2z_client_destroy(&f);
    s_worker_term(&w[0]);
    s_worker_term(&w[1]);
    am2z_cluster_stop(&b);
}
END_TEST

START_TEST(test_fault_worker_sigterm_drains_running_jobs)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-drain");
    am2z_testproc_t a, w2;
    s_worker_start(&a, &b, "worker-a", "4");
    s_wait_workers(&b, 1, 5000);
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_client_t *q = am2z_cluster_client(&b, 10000);
    enum { RUNNING = 4, EXTRA = 24 };
    char running[RUNNING][AM2Z_JOB_ID_MAX + 1], extra[EXTRA][AM2Z_JOB_ID_MAX + 1];
    for (int i = 0; i < RUNNING; i++) {
        char session[32];
        snprintf(session, sizeof session, "drain-%d", i);
        am2z_state_t *st = am2z_cluster_state(session, "ms", 800 + 300 * i, NULL);   /* staggered */
        ck_assert_int_eq(am2z_client_submit(c, "sleep", st, session, NULL, running[i]),
                         AM2Z_OK);
        am2z_state_destroy(&st);
    }
    for (int i = 0; i < RUNNING; i++)
        s_wait_status(q, running[i], "active", 5000);
    /*  a second worker, and more work than it can take at once: while A
        drains, the broker offers A some of it; A must hand those back */
    s_worker_start(&w2, &b, "worker-b", "4");
    s_wait_workers(&b, 2, 5000);
    for (int i = 0; i < EXTRA; i++) {
        char session[32];
        snprintf(session, sizeof session, "drain-x%d", i);
        am2z_state_t *st = am2z_cluster_state(session, "ms", 300, NULL);
        ck_assert_int_eq(am2z_client_submit(c, "sleep", st, session, NULL, extra[i]),
                         AM2Z_OK);
        am2z_state_destroy(&st);
    }
    /*  blocks (bounded) until A drained and exited 0; that its running
        jobs then all end as attempt 1 proves they were drained, not
        handed back */
    s_worker_term(&a);

    for (int i = 0; i < RUNNING; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, running[i], 10000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "running job %d failed: %s", i,
                      r->error ? r->error->message : "?");
        ck_assert_uint_eq(r->attempt, 1);
        ck_assert_uint_eq(am2z_state_version(r->state), 2);
        am2z_result_destroy(&r);
    }
    int handed_back = 0;
    for (int i = 0; i < EXTRA; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, extra[i], 15000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "extra job %d failed: %s", i,
                      r->error ? r->error->message : "?");
        ck_assert_uint_eq(am2z_state_version(r->state), 2);
        handed_back += r->attempt > 1;
        am2z_result_destroy(&r);
        char session[32];
        snprintf(session, sizeof session, "drain-x%d", i);
        ck_assert_uint_eq(s_stored_version(q, session), 2);
    }
    /*  A was offered extra jobs while it drained (a slot freed each time one
        of its staggered jobs ended): it handed them back, and they ran
        again elsewhere as attempt 2, once */
    ck_assert_int_ge(handed_back, 1);
    am2z_client_destroy(&q);
    am2z_client_destroy(&c);
    s_worker_term(&w2);
    am2z_cluster_stop(&b);
}
END_TEST


START_TEST(test_fault_worker_sigterm_past_grace_hands_job_back)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-handback");
    am2z_testproc_t a, w2;
    s_worker_start_grace(&a, &b, "worker-a", "2", "300ms");
    s_wait_workers(&b, 1, 5000);
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_client_t *q = am2z_cluster_client(&b, 10000);
    /*  a gate job whose gate stays shut while A runs: it cannot end on A */
    char gate_dir[512], gate[600];
    am2z_test_tmpdir("fault-handback-gate", gate_dir, sizeof gate_dir);
    snprintf(gate, sizeof gate, "%s/open", gate_dir);
    am2z_state_t *st = am2z_cluster_state("handback-1", "file", 0, gate);
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "gate", st, "handback-1", NULL, id), AM2Z_OK);
    s_wait_status(q, id, "active", 5000);
    s_worker_start(&w2, &b, "worker-b", "2");
    s_wait_workers(&b, 2, 5000);
    /*  the job outlives A's 300 ms grace: A hands it back, cancels it and
        exits 0 (s_worker_term) with the job unfinished */
    s_worker_term(&a);
    /*  only now can the job end: on B, as a second attempt */
    FILE *f = fopen(gate, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 15000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "job failed: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 2);                 /* run again, on B */
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    ck_assert_uint_eq(s_stored_version(q, "handback-1"), 2);
    unlink(gate);
    rmdir(gate_dir);
    am2z_state_destroy(&st);
    am2z_client_destroy(&q);
    am2z_client_destroy(&c);
    s_worker_term(&w2);
    am2z_cluster_stop(&b);
}
END_TEST

enum { R_JOBS = 200, R_SESSIONS = 20, R_GATES = 2 };

/*  The attempt job is leased as (QUERY job, status "active"); 0 while it
    waits, or once it is done. */
static uint64_t
s_leased_attempt(am2z_client_t *c, const char *job)
{
    json_t *j = am2z_cluster_query(c, "job", job);
    json_t *status = json_object_get(j, "status");
    uint64_t attempt = 0;
    if (json_is_string(status) && strcmp(json_string_value(status), "active") == 0)
        attempt = (uint64_t)json_integer_value(json_object_get(j, "attempt"));
    json_decref(j);
    return attempt;
}

/*  Polls (monotonic deadline) until every gate job is leased and their
    attempts add up to `sum`. */
static void
s_wait_gates(am2z_client_t *c, char ids[R_GATES][AM2Z_JOB_ID_MAX + 1], uint64_t sum,
             int timeout_ms)
{
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    uint64_t got = 0;
    bool all = false;
    while (true) {
        got = 0;
        all = true;
        for (int g = 0; g < R_GATES; g++) {
            uint64_t a = s_leased_attempt(c, ids[g]);
            all &= a > 0;
            got += a;
        }
        if ((all && got == sum) || am2z_clock_mono_us() >= deadline)
            break;
        s_pause_ms(10);
    }
    ck_assert_msg(all && got == sum, "gate jobs: %s leased, attempts add up to %llu, not %llu",
                  all ? "all" : "not all", (unsigned long long)got, (unsigned long long)sum);
}

/*  Workers at their processors' own concurrency ("--concurrency 0"):
    "sleep" has 4 slots, "gate" 1. Two gate jobs whose gate stays shut
    until the restarts are over take the one gate slot of each worker, so
    every worker swapped out holds a running job: past its 500 ms grace it
    hands that job back, and the job waits for the next new worker (the
    other worker has no gate slot free). The gate jobs' attempts, read
    before each swap, prove it. The 200 sleep jobs are drained or handed
    back meanwhile, and each must still run exactly once, in session order. */
START_TEST(test_fault_rolling_restart_of_workers_loses_nothing)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-roll");
    am2z_testproc_t w[2];
    s_worker_start_grace(&w[0], &b, "roll-0", "0", "500ms");
    s_worker_start_grace(&w[1], &b, "roll-1", "0", "500ms");
    s_wait_workers(&b, 2, 5000);
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_client_t *q = am2z_cluster_client(&b, 10000);

    char gate_dir[512], gate[600];
    am2z_test_tmpdir("fault-roll-gate", gate_dir, sizeof gate_dir);
    snprintf(gate, sizeof gate, "%s/open", gate_dir);
    char gates[R_GATES][AM2Z_JOB_ID_MAX + 1];
    for (int g = 0; g < R_GATES; g++) {
        char session[32];
        snprintf(session, sizeof session, "roll-gate-%d", g);
        am2z_state_t *st = am2z_cluster_state(session, "file", 0, gate);
        ck_assert_int_eq(am2z_client_submit(c, "gate", st, session, NULL, gates[g]), AM2Z_OK);
        am2z_state_destroy(&st);
    }

    static char sessions_buf[R_JOBS][32];
    static const char *sessions[R_JOBS];
    static am2z_state_t *states[R_JOBS];
    static char ids[R_JOBS][AM2Z_JOB_ID_MAX + 1];
    for (int i = 0; i < R_JOBS; i++) {
        snprintf(sessions_buf[i], sizeof sessions_buf[i], "roll-%d", i % R_SESSIONS);
        sessions[i] = sessions_buf[i];
        states[i] = am2z_cluster_state(sessions[i], "ms", 60, NULL);
    }
    ck_assert_int_eq(am2z_client_submit_many(c, "sleep",
                                             (const am2z_state_t *const *)states,
                                             sessions, R_JOBS, ids), AM2Z_OK);
    for (int i = 0; i < R_JOBS; i++)
        ck_assert(strlen(ids[i]) > 0);

    /*  rolling restart while the jobs run: replace the older worker with a
        new one, four times; before each swap both gate jobs are leased
        (one on each worker), the swapped one's as a new attempt each time */
    for (int round = 0; round < 4; round++) {
        s_wait_gates(q, gates, R_GATES + (uint64_t)round, 15000);
        int old = round % 2;
        char id[32];
        snprintf(id, sizeof id, "roll-%d", round + 2);
        s_worker_term(&w[old]);
        s_worker_start_grace(&w[old], &b, id, "0", "500ms");
    }
    s_wait_gates(q, gates, R_GATES + 4, 15000);
    FILE *f = fopen(gate, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);

    for (int i = 0; i < R_JOBS; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 20000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "job %d failed: %s", i, r->error ? r->error->message : "?");
        /*  each session's jobs ran once each, in order */
        ck_assert_uint_eq(am2z_state_version(r->state), (uint64_t)(i / R_SESSIONS) + 2);
        am2z_result_destroy(&r);
    }
    for (int g = 0; g < R_GATES; g++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, gates[g], 20000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "gate job %d failed: %s", g,
                      r->error ? r->error->message : "?");
        ck_assert_uint_eq(r->attempt, 3);           /* handed back twice, ran once */
        ck_assert_uint_eq(am2z_state_version(r->state), 2);
        am2z_result_destroy(&r);
    }
    for (int s = 0; s < R_SESSIONS; s++)
        ck_assert_uint_eq(s_stored_version(c, sessions[s]), 1 + R_JOBS / R_SESSIONS);
    for (int i = 0; i < R_JOBS; i++)
        am2z_state_destroy(&states[i]);
    unlink(gate);
    rmdir(gate_dir);
    am2z_client_destroy(&q);
    am2z_client_destroy(&c);
    s_worker_term(&w[0]);
    s_worker_term(&w[1]);
    am2z_cluster_stop(&b);
}
END_TEST

START_TEST(test_fault_workers_reregister_after_broker_restart)
{
    am2z_cluster_t b;
    s_broker_new(&b, "fault-brestart");
    am2z_testproc_t w;
    s_worker_start(&w, &b, "worker-a", "2");
    s_wait_workers(&b, 1, 5000);
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "brestart-1", NULL, &r),
                     AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);

    for (int round = 0; round < 2; round++) {
        int status = am2z_testproc_stop(&b.broker, SIGKILL, 5000);
        ck_assert(status != -1 && WIFSIGNALED(status));
        s_broker_start(&b);
        s_wait_workers(&b, 1, 10000);
        c = am2z_cluster_client(&b, 10000);
        ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "brestart-1", NULL, &r),
                         AM2Z_OK);
        ck_assert(r->success);
        int64_t n = 0;
        ck_assert_int_eq(am2z_state_get_int(r->state, "count", &n), AM2Z_OK);
        ck_assert_int_eq(n, round + 2);
        am2z_result_destroy(&r);
        am2z_client_destroy(&c);
    }
    s_worker_term(&w);
    am2z_cluster_stop(&b);
}
END_TEST

/*  Disk full. The broker's LMDB map is writable (MDB_WRITEMAP) and the
    file sparse up to map-size, where a page fault on a full disk would be
    SIGBUS; the store allocates blocks ahead and fails the batch with
    ENOSPC instead. The broker runs in a private mount namespace on a 3 MiB
    tmpfs under a 64 MiB map and gets 60 KB states until the disk is full:
    the refusal must name the disk, the broker must keep serving, and every
    job it accepted must end with a result once a worker comes.

    Needs unshare(1) and tmpfs mounts (root, or unprivileged user
    namespaces). These cases are Check case "diskfull" (tag "diskfull"),
    which ctest runs as an entry of its own (fault_test_diskfull,
    CK_RUN_CASE=diskfull) while the main entry excludes the tag; where the
    mounts are not allowed, main() leaves the case out and exits with
    S_EXIT_SKIPPED, which that entry reports as skipped (SKIP_RETURN_CODE). */
#define S_EXIT_SKIPPED 77

static const char *
s_unshare_flag(void)
{
    return geteuid() == 0 ? "-m" : "-Urm";
}

static bool
s_tmpfs_namespace_ok(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/unshare %s /bin/sh -c 'mount -t tmpfs -o size=1m am2z-probe /mnt' "
             ">/dev/null 2>&1", s_unshare_flag());
    return system(cmd) == 0;
}

static void
s_disk_full_case(const char *durability)
{
    const char *flag = s_unshare_flag();
    am2z_cluster_t b;
    memset(&b, 0, sizeof b);
    b.flags = s_flags;
    am2z_test_tmpdir("fault-diskfull", b.dir, sizeof b.dir);
    const char *const wrap[] = { "/usr/bin/unshare", flag, "/bin/sh", "-c",
        "mount -t tmpfs -o size=3m am2z-full \"$0\" && exec \"$@\"", b.dir, NULL };
    b.wrap = wrap;
    const char *const extra[] = { "--durability", durability, "--map-size", "64MiB", NULL };
    am2z_cluster_start_broker(&b, NULL, extra);
    am2z_cluster_add_worker(&b, NULL);
    s_wait_workers(&b, 1, 10000);
    am2z_client_t *c = am2z_cluster_client(&b, 15000);

    /*  One session: its first job waits at a gate (the "gate" processor
        waits for the file state.file, outside the tmpfs), so the others
        stay queued and their records fill the disk. */
    char gate_dir[512], gate[600];
    am2z_test_tmpdir("fault-diskfull-gate", gate_dir, sizeof gate_dir);
    snprintf(gate, sizeof gate, "%s/open", gate_dir);
    char *text = malloc(60001);
    ck_assert_ptr_nonnull(text);
    memset(text, 'x', 60000);
    text[60000] = '\0';
    am2z_state_t *st0 = NULL, *st = NULL;
    ck_assert_int_eq(am2z_state_new("full", am2z_clock_wall_ms(), &st0), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_str(ch, "file", gate), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_str(ch, "pad", text), AM2Z_OK);
    ck_assert_int_eq(am2z_state_apply(st0, ch, am2z_clock_wall_ms(), 0, &st), AM2Z_OK);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st0);
    free(text);

    enum { N = 200 };
    static char ids[N][64];
    int accepted = 0, refused = 0;
    char why[512] = "";
    for (int i = 0; i < N && !refused; i++) {
        int rc = am2z_client_submit(c, "gate", st, "full", NULL, ids[accepted]);
        if (rc == AM2Z_OK) {
            accepted++;
        } else {
            ck_assert_msg(rc == AM2Z_EFAILED, "submit %d: %s (%s)", i, am2z_strerror(rc),
                          am2z_client_last_error(c));
            snprintf(why, sizeof why, "%s", am2z_client_last_error(c));
            refused++;
        }
    }
    am2z_state_destroy(&st);
    ck_assert_msg(refused == 1, "a 3 MiB disk took %d jobs of 60 KB", accepted);
    ck_assert_msg(accepted > 1, "the first jobs were refused: %s", why);
    ck_assert_msg(strstr(why, "disk space (data-dir)") != NULL, "refusal: %s", why);
    /* still serving: alive, answers queries, and every accepted job ends */
    ck_assert_int_eq(kill(b.broker.pid, 0), 0);
    am2z_stats_t stats;
    ck_assert_int_eq(am2z_client_get_stats(c, &stats), AM2Z_OK);
    FILE *f = fopen(gate, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    for (int i = 0; i < accepted; i++) {
        am2z_result_t *r = NULL;
        ck_assert_msg(am2z_client_wait(c, ids[i], 20000, &r) == AM2Z_OK,
                      "accepted job %s got no result", ids[i]);
        am2z_result_destroy(&r);
    }
    ck_assert_int_eq(kill(b.broker.pid, 0), 0);
    /* the failed commits reloaded the retention index from the store:
       it still holds exactly what is stored */
    am2z_cluster_check_retention(c);
    unlink(gate);
    rmdir(gate_dir);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&b);
}

START_TEST(test_fault_disk_full_refuses_naming_the_disk_and_keeps_serving)
{
    s_disk_full_case(_i == 0 ? "periodic" : "sync");
}
END_TEST

/*  The suite; the "diskfull" case only when `diskfull`. */
/*  The disk stops flushing (fdatasync fails with EIO, through
    tests/failsync_preload.c) under a sync-mode broker: its store's writer
    thread fails, and the broker stops with exit status 1 rather than
    answer anything it cannot prove is on disk. A job submitted then gets
    no ACCEPTED; every job answered before is there after a restart. */
START_TEST(test_fault_failed_flush_stops_the_broker_unanswered)
{
    char dir[512], flag[600], preload[700], trigger[700];
    am2z_test_tmpdir("fault-failsync", dir, sizeof dir);
    snprintf(flag, sizeof flag, "%s/fail-now", dir);
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s", AM2Z_FAILSYNC_SO);
    snprintf(trigger, sizeof trigger, "AM2Z_FAILSYNC_FILE=%s", flag);
    /* the shim is not instrumented: a sanitized broker must not insist on
       its runtime coming first */
    const char *wrap[] = { "/usr/bin/env", preload, trigger,
                           "ASAN_OPTIONS=verify_asan_link_order=0", NULL };
    am2z_cluster_t b;
    memset(&b, 0, sizeof b);
    b.flags = s_flags;
    b.wrap = wrap;
    int started = -1;
    for (int tries = 0; tries < 5 && started != 0; tries++) {
        am2z_cluster_pick_ports(&b);
        started = am2z_cluster_try_broker(&b, "fault-failsync-data", NULL);   /* sync */
    }
    ck_assert_msg(started == 0, "broker did not start");
    am2z_testproc_t w;
    s_worker_start(&w, &b, "worker-f", "4");
    s_wait_workers(&b, 1, 5000);

    enum { N = 40 };
    static char ids[N][AM2Z_JOB_ID_MAX + 1];
    static const char *sessions[N];
    static const am2z_state_t *states[N];
    for (int i = 0; i < N; i++)
        sessions[i] = "failsync";
    am2z_client_t *c = am2z_cluster_client(&b, 10000);
    ck_assert_int_eq(am2z_client_submit_many(c, "increment", states, sessions, N, ids), AM2Z_OK);
    for (int i = 0; i < N; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 10000, &r), AM2Z_OK);
        am2z_result_destroy(&r);
    }
    am2z_client_destroy(&c);

    FILE *f = fopen(flag, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    c = am2z_cluster_client(&b, 3000);
    am2z_client_set_timeout(c, 3000);
    char late[AM2Z_JOB_ID_MAX + 1] = "";
    int rc = am2z_client_submit(c, "increment", NULL, "failsync", NULL, late);
    ck_assert_msg(rc != AM2Z_OK, "a job was accepted while no flush could succeed");
    am2z_client_destroy(&c);
    int status = am2z_testproc_stop(&b.broker, 0, 15000);    /* no signal: it stops itself */
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "the broker did not stop with status 1 (status %d)", status);

    remove(flag);
    b.wrap = NULL;
    am2z_cluster_start_broker(&b, NULL, NULL);
    s_wait_workers(&b, 1, 10000);
    c = am2z_cluster_client(&b, 10000);
    for (int i = 0; i < N; i++) {
        am2z_result_t *r = NULL;
        ck_assert_msg(am2z_client_wait(c, ids[i], 10000, &r) == AM2Z_OK, "job %d lost", i);
        int64_t n = -1;
        ck_assert_int_eq(am2z_state_get_int(r->state, "count", &n), AM2Z_OK);
        ck_assert_int_eq(n, i + 1);
        am2z_result_destroy(&r);
    }
    am2z_client_destroy(&c);
    s_worker_term(&w);
    am2z_cluster_stop(&b);
}
END_TEST

static Suite *
s_suite(bool diskfull)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("processes");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fault_worker_sigkill_mid_job_completes_on_another_worker);
    tcase_add_test(tc, test_fault_broker_sigkill_with_1000_jobs_in_flight_loses_none);
    tcase_add_test(tc, test_fault_worker_sigterm_drains_running_jobs);
    tcase_add_test(tc, test_fault_worker_sigterm_past_grace_hands_job_back);
    tcase_add_test(tc, test_fault_rolling_restart_of_workers_loses_nothing);
    tcase_add_test(tc, test_fault_workers_reregister_after_broker_restart);
    tcase_add_test(tc, test_fault_failed_flush_stops_the_broker_unanswered);
    suite_add_tcase(s, tc);
    if (diskfull) {
        TCase *full = tcase_create("diskfull");
        tcase_set_tags(full, "diskfull");
        tcase_set_timeout(full, 60);
        tcase_add_loop_test(full, test_fault_disk_full_refuses_naming_the_disk_and_keeps_serving,
                            0, 2);
        suite_add_tcase(s, full);
    }
    return s;
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    bool skip = am2z_test_case_selected("diskfull", "diskfull") && !s_tmpfs_namespace_ok();
    if (skip)
        fprintf(stderr, "fault: SKIPPED case diskfull: cannot mount a tmpfs in a private "
                        "mount namespace here (unshare %s)\n", s_unshare_flag());
    if (skip && am2z_test_only_case("diskfull"))
        return S_EXIT_SKIPPED;
    int rc = am2z_test_run(s_suite(!skip));
    return rc == EXIT_SUCCESS && skip ? S_EXIT_SKIPPED : rc;
}
