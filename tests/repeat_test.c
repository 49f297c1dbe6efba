/*  repeat_test.c — Check suite "repeat": idempotency keys, repeatable jobs
    and job progress (issue 6), with the real am2z-broker and
    am2z-example-worker processes on 127.0.0.1 ephemeral ports and real
    LMDB directories.

    Each case starts its own broker and worker inside the case's forked
    child and stops them at the end. Every wait is bounded and polls the
    condition it needs; nothing asserts on how fast anything is.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_codec.h"
#include "am2z_json.h"
#include "am2z_store.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <czmq.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*  The session's stored count (0 when no state yet) and version. */
static int64_t
s_count(am2z_client_t *c, const char *session, uint64_t *version)
{
    am2z_state_t *st = NULL;
    int64_t n = 0;
    if (version)
        *version = 0;
    if (am2z_client_get_state(c, session, &st) == AM2Z_OK) {
        am2z_state_get_int(st, "count", &n);
        if (version)
            *version = am2z_state_version(st);
    }
    am2z_state_destroy(&st);
    return n;
}

/*  Polls until the session's count reaches want (bounded); returns it. */
static int64_t
s_wait_count(am2z_client_t *c, const char *session, int64_t want, uint64_t timeout_ms)
{
    uint64_t deadline = am2z_test_deadline(timeout_ms);
    int64_t n = s_count(c, session, NULL);
    while (n < want && am2z_test_before(deadline)) {
        usleep(20 * 1000);
        n = s_count(c, session, NULL);
    }
    return n;
}

/*  The schedules of a session (count), and the first one's runs. */
static size_t
s_repeats(am2z_client_t *c, const char *session, uint64_t *runs)
{
    am2z_repeat_list_t *list = NULL;
    ck_assert_int_eq(am2z_client_repeat_list(c, session, &list), AM2Z_OK);
    size_t n = list->count;
    if (runs)
        *runs = n ? list->items[0].runs : 0;
    am2z_repeat_list_destroy(&list);
    return n;
}

/*  Polls (bounded) until the session has no schedule left, then until it
    is idle (nothing queued, nothing running): every job its schedules
    created has ended. Fails the test otherwise. */
static void
s_wait_schedules_done(am2z_client_t *c, const char *session, uint64_t timeout_ms)
{
    uint64_t deadline = am2z_test_deadline(timeout_ms);
    while (s_repeats(c, session, NULL) > 0 && am2z_test_before(deadline))
        usleep(20 * 1000);
    ck_assert_uint_eq(s_repeats(c, session, NULL), 0);
    am2z_session_info_t si;
    memset(&si, 0, sizeof si);
    for (;;) {
        ck_assert_int_eq(am2z_client_session_info(c, session, &si), AM2Z_OK);
        if ((si.queued == 0 && si.running == 0) || !am2z_test_before(deadline))
            break;
        usleep(20 * 1000);
    }
    ck_assert_msg(si.queued == 0 && si.running == 0,
                  "session %s: %" PRIu64 " queued, %" PRIu64 " running", session, si.queued,
                  si.running);
}

/*  The "completed" counter of proc in a session's stats. */
static uint64_t
s_completed(am2z_client_t *c, const char *session, const char *proc)
{
    am2z_queue_list_t *q = NULL;
    uint64_t n = 0;
    ck_assert_int_eq(am2z_client_get_session_stats(c, session, &q), AM2Z_OK);
    for (size_t i = 0; i < q->count; i++)
        if (strcmp(q->names[i], proc) == 0)
            n = q->stats[i].completed;
    am2z_queue_list_destroy(&q);
    return n;
}

/* ---------------------------------------------------------------------------
   Idempotency
   ------------------------------------------------------------------------ */

START_TEST(test_idem_duplicate_returns_first_job_and_its_result)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "idem-dup", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .idempotency_key = "order-17" };

    am2z_result_t *r1 = NULL, *r2 = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "idem-1", &opts, &r1), AM2Z_OK);
    ck_assert_msg(r1->success, "%s", r1->error ? r1->error->message : "?");
    /* the same key again, from another connection: the first job's result */
    am2z_client_t *c2 = am2z_cluster_client(&env, 15000);
    ck_assert_int_eq(am2z_client_execute(c2, "increment", NULL, "idem-1", &opts, &r2), AM2Z_OK);
    ck_assert(r2->success);
    ck_assert_str_eq(r2->job_id, r1->job_id);
    int64_t n1 = 0, n2 = 0;
    ck_assert_int_eq(am2z_state_get_int(r1->state, "count", &n1), AM2Z_OK);
    ck_assert_int_eq(am2z_state_get_int(r2->state, "count", &n2), AM2Z_OK);
    ck_assert_int_eq(n1, 1);
    ck_assert_int_eq(n2, 1);
    ck_assert_uint_eq(am2z_state_version(r2->state), am2z_state_version(r1->state));
    /* submit (async) with the key: the same id; wait gives the same result */
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "idem-1", &opts, id), AM2Z_OK);
    ck_assert_str_eq(id, r1->job_id);
    am2z_result_t *r3 = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 10000, &r3), AM2Z_OK);
    ck_assert_str_eq(r3->job_id, r1->job_id);
    am2z_result_destroy(&r3);

    /* the processor ran once: the stored state is the first job's */
    uint64_t version = 0;
    ck_assert_int_eq(s_count(c, "idem-1", &version), 1);
    ck_assert_uint_eq(version, am2z_state_version(r1->state));
    ck_assert_uint_eq(s_completed(c, "idem-1", "increment"), 1);
    /* without the key the same submit is a new job */
    am2z_result_t *r4 = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "idem-1", NULL, &r4), AM2Z_OK);
    ck_assert_str_ne(r4->job_id, r1->job_id);
    ck_assert_int_eq(s_count(c, "idem-1", NULL), 2);
    am2z_result_destroy(&r4);
    am2z_result_destroy(&r1);
    am2z_result_destroy(&r2);
    am2z_client_destroy(&c2);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_idem_conflicting_reuse_is_refused)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "idem-conflict", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .idempotency_key = "key-A" };
    char first[AM2Z_JOB_ID_MAX + 1], id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "conf-1", &opts, first), AM2Z_OK);
    /* another session */
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "conf-2", &opts, id), AM2Z_EFAILED);
    const char *why = am2z_client_last_error(c);
    ck_assert_msg(strstr(why, "key-A") && strstr(why, first), "error: %s", why);
    /* another processor */
    ck_assert_int_eq(am2z_client_submit(c, "append", NULL, "conf-1", &opts, id), AM2Z_EFAILED);
    why = am2z_client_last_error(c);
    ck_assert_msg(strstr(why, "key-A") && strstr(why, first), "error: %s", why);
    /* execute turns the refusal into a failed ValidationError result */
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "append", NULL, "conf-1", &opts, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_VALIDATION);
    am2z_result_destroy(&r);
    /* the first job is untouched and ran once */
    ck_assert_int_eq(am2z_client_wait(c, first, 10000, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count(c, "conf-1", NULL), 1);
    ck_assert_int_eq(s_count(c, "conf-2", NULL), 0);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Sends a SUBMIT with an idempotency key on a raw DEALER (no waiting). */
static void
s_raw_submit(zsock_t *sock, uint64_t req, const char *session, const char *key)
{
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = req;
    m.processor = "increment";
    m.session = (char *)session;
    m.idem_key = (char *)key;
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, AM2Z_PROTOCOL);
    zmsg_addstr(zm, "SUBMIT");
    zmsg_addmem(zm, body, size);
    ck_assert_int_eq(zmsg_send(&zm, sock), 0);
    free(body);
}

/*  Reads one message (bounded) and decodes it into *m. */
static void
s_raw_recv(zsock_t *sock, am2z_msg_t *m)
{
    zpoller_t *p = zpoller_new(sock, NULL);
    ck_assert_ptr_eq(zpoller_wait(p, 10000), sock);
    zpoller_destroy(&p);
    zmsg_t *zm = zmsg_recv(sock);
    ck_assert_ptr_nonnull(zm);
    ck_assert_uint_eq(zmsg_size(zm), 3);
    zframe_t *f1 = zmsg_first(zm), *f2 = zmsg_next(zm), *f3 = zmsg_next(zm);
    char err[256] = "";
    ck_assert_msg(am2z_frames_decode(zframe_data(f1), zframe_size(f1), zframe_data(f2),
                                     zframe_size(f2), zframe_data(f3), zframe_size(f3),
                                     1 << 24, m, err, sizeof err) == AM2Z_OK, "%s", err);
    zmsg_destroy(&zm);
}

START_TEST(test_idem_two_submits_at_once_run_once)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "idem-turn", NULL);
    zsock_t *sock = zsock_new_dealer(env.frontend);
    ck_assert_ptr_nonnull(sock);
    /* back to back on one connection: the broker reads both in one turn
       (or in two: either way the second is the first's duplicate) */
    s_raw_submit(sock, 1, "turn-1", "same-turn");
    s_raw_submit(sock, 2, "turn-1", "same-turn");
    char ids[2][AM2Z_JOB_ID_MAX + 1] = { "", "" };
    bool dup[2] = { false, false };
    int results = 0;
    int64_t counts[2] = { -1, -1 };
    while (!ids[0][0] || !ids[1][0] || results < 2) {
        am2z_msg_t m;
        s_raw_recv(sock, &m);
        ck_assert_msg(m.cmd == AM2Z_CMD_ACCEPTED || m.cmd == AM2Z_CMD_RESULT,
                      "unexpected %s", am2z_cmd_name(m.cmd));
        ck_assert(m.req == 1 || m.req == 2);
        if (m.cmd == AM2Z_CMD_ACCEPTED) {
            snprintf(ids[m.req - 1], sizeof ids[0], "%s", m.job);
            dup[m.req - 1] = m.dup;
        } else {
            ck_assert(m.success);
            am2z_state_t *st = NULL;
            ck_assert_int_eq(am2z_state_decode(m.state, m.state_size, &st), AM2Z_OK);
            am2z_state_get_int(st, "count", &counts[results]);
            am2z_state_destroy(&st);
            results++;
        }
        am2z_msg_clear(&m);
    }
    ck_assert_str_eq(ids[0], ids[1]);
    ck_assert(!dup[0]);
    ck_assert(dup[1]);
    ck_assert_int_eq(counts[0], 1);
    ck_assert_int_eq(counts[1], 1);
    zsock_destroy(&sock);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    ck_assert_int_eq(s_count(c, "turn-1", NULL), 1);
    ck_assert_uint_eq(s_completed(c, "turn-1", "increment"), 1);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_idem_key_past_its_window_starts_a_new_job)
{
    am2z_cluster_t env = { 0 };
    const char *extra[] = { "--idempotency-window", "1s", NULL };
    am2z_cluster_start(&env, "idem-window", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .idempotency_key = "short-lived" };
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "win-1", &opts, &r), AM2Z_OK);
    ck_assert(r->success);
    char first[AM2Z_JOB_ID_MAX + 1];
    snprintf(first, sizeof first, "%s", r->job_id);
    am2z_result_destroy(&r);
    /* until the window passes the key names the first job; then a new one */
    char id[AM2Z_JOB_ID_MAX + 1] = "";
    uint64_t deadline = am2z_test_deadline(10000);
    for (;;) {
        ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "win-1", &opts, id), AM2Z_OK);
        if (strcmp(id, first) != 0 || !am2z_test_before(deadline))
            break;
        usleep(20 * 1000);
    }
    ck_assert_str_ne(id, first);
    ck_assert_int_eq(am2z_client_wait(c, id, 10000, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count(c, "win-1", NULL), 2);      /* ran twice in all */
    /* the new first use is what the key names now */
    char again[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "win-1", &opts, again), AM2Z_OK);
    ck_assert_str_eq(again, id);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  A state of `session` with gate = path (the progress processor waits
    for that file). */
static am2z_state_t *
s_gated_state(const char *session, const char *gate)
{
    am2z_state_t *st = NULL, *out = NULL;
    ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &st), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_str(ch, "gate", gate), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_set_int(ch, "waitMs", 60000), AM2Z_OK);
    ck_assert_int_eq(am2z_state_apply(st, ch, am2z_clock_wall_ms(), 0, &out), AM2Z_OK);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st);
    return out;
}

static void
s_open_gate(const char *gate)
{
    FILE *f = fopen(gate, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
}

/*  QUERY job as JSON (caller decrefs). */
static json_t *
s_job_status(am2z_client_t *c, const char *id)
{
    return am2z_cluster_query(c, "job", id);
}

/*  Polls QUERY job (bounded) until the job is active and has reported
    progress 50: the progress processor is running, held at its gate. */
static void
s_wait_held_at_gate(am2z_client_t *c, const char *id)
{
    uint64_t deadline = am2z_test_deadline(15000);
    int64_t seen = -1;
    char status[32] = "";
    for (;;) {
        json_t *j = s_job_status(c, id);
        json_t *p = json_object_get(j, "progress");
        seen = p ? json_integer_value(p) : -1;
        snprintf(status, sizeof status, "%s", json_string_value(json_object_get(j, "status")));
        json_decref(j);
        if ((seen == 50 && strcmp(status, "active") == 0) || !am2z_test_before(deadline))
            break;
        usleep(10 * 1000);
    }
    ck_assert_msg(seen == 50 && strcmp(status, "active") == 0,
                  "job %s: status %s, progress %lld", id, status, (long long)seen);
}

START_TEST(test_idem_duplicate_of_a_running_job_gets_its_result)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "idem-running", NULL);
    char gate[600];
    snprintf(gate, sizeof gate, "%s/gate", env.dir);
    am2z_state_t *st = s_gated_state("run-1", gate);
    am2z_submit_opts_t opts = { .idempotency_key = "while-running" };
    am2z_client_t *a = am2z_cluster_client(&env, 15000), *b = am2z_cluster_client(&env, 15000);
    char first[AM2Z_JOB_ID_MAX + 1], dup[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(a, "progress", st, "run-1", &opts, first), AM2Z_OK);
    /* the first job runs and is held at its gate (progress 50) ... */
    s_wait_held_at_gate(b, first);
    /* ... when a duplicate comes from another client */
    ck_assert_int_eq(am2z_client_submit(b, "progress", st, "run-1", &opts, dup), AM2Z_OK);
    ck_assert_str_eq(dup, first);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_poll(b, dup, &r), AM2Z_ETIMEOUT);   /* not before it ends */
    s_open_gate(gate);
    am2z_result_t *ra = NULL, *rb = NULL;
    ck_assert_int_eq(am2z_client_wait(a, first, 20000, &ra), AM2Z_OK);
    ck_assert_int_eq(am2z_client_wait(b, dup, 20000, &rb), AM2Z_OK);
    ck_assert(ra->success);
    ck_assert(rb->success);
    ck_assert_uint_eq(am2z_state_version(rb->state), am2z_state_version(ra->state));
    ck_assert_uint_eq(s_completed(a, "run-1", "progress"), 1);
    am2z_result_destroy(&ra);
    am2z_result_destroy(&rb);
    am2z_state_destroy(&st);
    am2z_client_destroy(&a);
    am2z_client_destroy(&b);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Entries in the broker's idempotency database, read from another
    process (LMDB allows that) while the broker runs. */
static am2z_store_t *
s_open_store(const char *dir)
{
    am2z_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.map_size = (uint64_t)1 << 30;            /* the broker's default */
    cfg.durability = AM2Z_DURABILITY_SYNC;
    cfg.max_state_size = 1u << 20;
    cfg.max_sessions = 1000000;
    cfg.max_frame_size = 4u << 20;
    am2z_store_t *store = NULL;
    char err[256] = "";
    ck_assert_msg(am2z_store_open(&cfg, &store, err, sizeof err) == AM2Z_OK, "%s", err);
    return store;
}

static uint64_t
s_idem_entries(const char *dir)
{
    am2z_store_t *store = s_open_store(dir);
    am2z_store_stats_t st;
    memset(&st, 0, sizeof st);
    ck_assert_int_eq(am2z_store_stats(store, &st), AM2Z_OK);
    am2z_store_destroy(&store);
    return st.entries[AM2Z_DB_IDEM];
}

START_TEST(test_idem_expired_keys_are_swept)
{
    am2z_cluster_t env = { 0 };
    /* long enough that the keys are surely still there when first read */
    const char *extra[] = { "--idempotency-window", "5s", NULL };
    am2z_cluster_start(&env, "idem-sweep", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    const char *keys[] = { "sweep-a", "sweep-b", "sweep-c" };
    for (int i = 0; i < 3; i++) {
        am2z_submit_opts_t opts = { .idempotency_key = keys[i] };
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "sweep-1", &opts, &r),
                         AM2Z_OK);
        ck_assert(r->success);
        am2z_result_destroy(&r);
    }
    /* each key is an entry and a time index entry until its window ends;
       then the sweep deletes both */
    uint64_t n = s_idem_entries(env.dir);
    ck_assert_msg(n == 6, "%" PRIu64 " entries for 3 keys, expected 6", n);
    uint64_t deadline = am2z_test_deadline(30000);
    while (n > 0 && am2z_test_before(deadline)) {
        usleep(10 * 1000);
        n = s_idem_entries(env.dir);
    }
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(s_count(c, "sweep-1", NULL), 3);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_idem_duplicate_of_a_job_without_result_is_refused)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "idem-gone", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .idempotency_key = "gone" };
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "gone-1", &opts, &r), AM2Z_OK);
    char first[AM2Z_JOB_ID_MAX + 1];
    snprintf(first, sizeof first, "%s", r->job_id);
    am2z_result_destroy(&r);
    /* the result goes (as retention would delete it), written by another
       process into the broker's LMDB */
    am2z_store_t *store = s_open_store(env.dir);
    am2z_store_batch_t *batch = NULL;
    ck_assert_int_eq(am2z_store_begin(store, &batch), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del(batch, AM2Z_DB_RESULTS, first, strlen(first)), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&batch), AM2Z_OK);
    am2z_store_destroy(&store);
    /* a duplicate cannot be promised a result: refused, naming the job */
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "gone-1", &opts, id),
                     AM2Z_EFAILED);
    ck_assert_msg(strstr(am2z_client_last_error(c), first) != NULL, "%s",
                  am2z_client_last_error(c));
    ck_assert_int_eq(s_count(c, "gone-1", NULL), 1);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Repeatable jobs
   ------------------------------------------------------------------------ */

START_TEST(test_repeat_runs_limit_times_then_stops)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "repeat-limit", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .repeat_every_ms = 100, .repeat_limit = 3 };
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "rep-1", &opts, id), AM2Z_OK);
    ck_assert(am2z_job_id_valid(id, strlen(id)));
    /* the schedule is deleted when its last job is created; once the
       jobs it created have ended, exactly `limit` of them ran (a fourth
       would have been queued before the schedule went) */
    s_wait_schedules_done(c, "rep-1", 20000);
    ck_assert_uint_eq(s_completed(c, "rep-1", "increment"), 3);
    ck_assert_int_eq(s_count(c, "rep-1", NULL), 3);
    /* the id is a schedule's, not a job's: nothing to wait for */
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 2000, &r), AM2Z_ENOTFOUND);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_repeat_list_and_cancel)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "repeat-list", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    uint64_t start = am2z_clock_wall_ms() + 3600 * 1000;
    am2z_submit_opts_t opts = { .repeat_every_ms = 60000, .repeat_limit = 5,
                                .repeat_start_ms = start };
    char id[AM2Z_JOB_ID_MAX + 1], other[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "list-1", &opts, id), AM2Z_OK);
    ck_assert_int_eq(am2z_client_submit(c, "append", NULL, "list-2", &opts, other), AM2Z_OK);
    ck_assert_str_ne(id, other);

    am2z_repeat_list_t *list = NULL;
    ck_assert_int_eq(am2z_client_repeat_list(c, "list-1", &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 1);
    am2z_repeat_t *r = &list->items[0];
    ck_assert_str_eq(r->id, id);
    ck_assert_str_eq(r->processor, "increment");
    ck_assert_str_eq(r->session_id, "list-1");
    ck_assert_uint_eq(r->every_ms, 60000);
    ck_assert_uint_eq(r->limit, 5);
    ck_assert_uint_eq(r->runs, 0);
    ck_assert_uint_eq(r->next_ms, start);
    ck_assert_str_eq(r->last_job_id, "");
    am2z_repeat_list_destroy(&list);
    ck_assert_int_eq(am2z_client_repeat_list(c, NULL, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 2);
    am2z_repeat_list_destroy(&list);
    ck_assert_uint_eq(s_repeats(c, "nobody", NULL), 0);

    ck_assert_int_eq(am2z_client_repeat_cancel(c, id), AM2Z_OK);
    ck_assert_uint_eq(s_repeats(c, "list-1", NULL), 0);
    ck_assert_uint_eq(s_repeats(c, "list-2", NULL), 1);
    ck_assert_int_eq(am2z_client_repeat_cancel(c, id), AM2Z_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), id));
    ck_assert_int_eq(am2z_client_repeat_cancel(c, "no-such-repeat"), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_repeat_cancel(c, "bad id!"), AM2Z_EINVAL);

    /* execute cannot wait for a schedule */
    am2z_result_t *res = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "list-1", &opts, &res),
                     AM2Z_EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "submit"));
    ck_assert_uint_eq(s_repeats(c, "list-1", NULL), 0);

    /* an idempotency key names the schedule on a second submit */
    am2z_submit_opts_t keyed = opts;
    keyed.idempotency_key = "nightly";
    char k1[AM2Z_JOB_ID_MAX + 1], k2[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "list-3", &keyed, k1), AM2Z_OK);
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "list-3", &keyed, k2), AM2Z_OK);
    ck_assert_str_eq(k1, k2);
    ck_assert_uint_eq(s_repeats(c, "list-3", NULL), 1);

    /* stopping a session cancels its schedules */
    ck_assert_int_eq(am2z_client_stop_session(c, "list-2", false), AM2Z_OK);
    ck_assert_uint_eq(s_repeats(c, "list-2", NULL), 0);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_repeat_survives_broker_kill_and_restart)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "repeat-kill", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_submit_opts_t opts = { .repeat_every_ms = 1500, .repeat_limit = 3 };
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "kill-1", &opts, id), AM2Z_OK);
    /* the first run is due at once; the others 1.5 s apart */
    ck_assert_int_ge(s_wait_count(c, "kill-1", 1, 15000), 1);
    uint64_t runs = 0;
    ck_assert_msg(s_repeats(c, "kill-1", &runs) == 1 && runs < 3,
                  "the schedule ended before the broker could be killed");
    am2z_client_destroy(&c);
    am2z_cluster_kill_broker(&env);
    am2z_cluster_stop_workers(&env);

    am2z_cluster_start(&env, "repeat-kill", NULL);
    c = am2z_cluster_client(&env, 15000);
    /* the stored schedule goes on: its remaining runs happen, no more */
    s_wait_schedules_done(c, "kill-1", 20000);
    ck_assert_int_eq(s_count(c, "kill-1", NULL), 3);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_repeat_refuses_bad_schedules)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "repeat-bad", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char id[AM2Z_JOB_ID_MAX + 1];
    am2z_submit_opts_t opts = { .repeat_every_ms = (uint64_t)3651 * 86400000 };
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "bad-1", &opts, id), AM2Z_EFAILED);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "every"));
    opts.repeat_every_ms = 1000;
    opts.repeat_start_ms = UINT64_MAX / 2;
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "bad-1", &opts, id), AM2Z_EFAILED);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "start"));
    ck_assert_int_eq(am2z_client_submit(c, "no-such-proc", NULL, "bad-1", &opts, id),
                     AM2Z_EFAILED);
    ck_assert_uint_eq(s_repeats(c, NULL, NULL), 0);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Progress
   ------------------------------------------------------------------------ */

typedef struct {
    char names[32][64];
    int64_t progress[32];         /* job:progress value, else -1 */
    int count;
} s_events_t;

static void
s_on_event(const am2z_event_t *ev, void *arg)
{
    s_events_t *log = arg;
    if (log->count >= 32)
        return;
    snprintf(log->names[log->count], sizeof log->names[0], "%s", ev->name);
    log->progress[log->count] = -1;
    json_t *j = NULL;
    if (strcmp(ev->name, "job:progress") == 0 && ev->data
        && am2z_json_from_msgpack(ev->data, ev->data_size, &j) == AM2Z_OK) {
        log->progress[log->count] = json_integer_value(json_object_get(j, "progress"));
        json_decref(j);
    }
    log->count++;
}

START_TEST(test_progress_events_in_order_and_in_job_status)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "progress", NULL);
    char gate[600];
    snprintf(gate, sizeof gate, "%s/gate", env.dir);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_events_t log = { .count = 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_on_event, &log), AM2Z_OK);

    am2z_state_t *with_gate = s_gated_state("prog-1", gate);
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "progress", with_gate, "prog-1", NULL, id), AM2Z_OK);

    /* the job waits at the gate after 50: its status shows it */
    am2z_client_t *q = am2z_cluster_client(&env, 15000);
    int64_t seen = -1;
    const char *status = "";
    json_t *j = NULL;
    uint64_t deadline = am2z_test_deadline(15000);
    while (seen != 50 && am2z_test_before(deadline)) {
        json_decref(j);
        j = s_job_status(q, id);
        json_t *p = json_object_get(j, "progress");
        seen = p ? json_integer_value(p) : -1;
        status = json_string_value(json_object_get(j, "status"));
        if (seen != 50)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(seen, 50);
    ck_assert_str_eq(status, "active");
    json_decref(j);

    s_open_gate(gate);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 20000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "%s", r->error ? r->error->message : "?");
    int64_t final = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "progress", &final), AM2Z_OK);
    ck_assert_int_eq(final, 100);
    am2z_result_destroy(&r);

    /* every event arrived before the result, progress in order */
    const int64_t want[] = { 25, 50, 75, 100 };
    int k = 0, completed_at = -1, last_progress_at = -1;
    for (int i = 0; i < log.count; i++) {
        if (strcmp(log.names[i], "job:progress") == 0) {
            ck_assert_int_lt(k, 4);
            ck_assert_int_eq(log.progress[i], want[k]);
            k++;
            last_progress_at = i;
        } else if (strcmp(log.names[i], "processor:job:completed") == 0) {
            completed_at = i;
        }
    }
    ck_assert_int_eq(k, 4);
    ck_assert_int_gt(completed_at, last_progress_at);

    /* finished: the status is the stored result's */
    j = s_job_status(q, id);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "completed");
    json_decref(j);
    am2z_state_destroy(&with_gate);
    am2z_client_destroy(&q);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("repeat");
    TCase *idem = tcase_create("idempotency");
    tcase_set_timeout(idem, 90);
    tcase_add_test(idem, test_idem_duplicate_returns_first_job_and_its_result);
    tcase_add_test(idem, test_idem_conflicting_reuse_is_refused);
    tcase_add_test(idem, test_idem_two_submits_at_once_run_once);
    tcase_add_test(idem, test_idem_key_past_its_window_starts_a_new_job);
    tcase_add_test(idem, test_idem_expired_keys_are_swept);
    tcase_add_test(idem, test_idem_duplicate_of_a_running_job_gets_its_result);
    tcase_add_test(idem, test_idem_duplicate_of_a_job_without_result_is_refused);
    suite_add_tcase(s, idem);
    TCase *rep = tcase_create("repeat");
    tcase_set_timeout(rep, 90);
    tcase_add_test(rep, test_repeat_runs_limit_times_then_stops);
    tcase_add_test(rep, test_repeat_list_and_cancel);
    tcase_add_test(rep, test_repeat_survives_broker_kill_and_restart);
    tcase_add_test(rep, test_repeat_refuses_bad_schedules);
    suite_add_tcase(s, rep);
    TCase *prog = tcase_create("progress");
    tcase_set_timeout(prog, 90);
    tcase_add_test(prog, test_progress_events_in_order_and_in_job_status);
    suite_add_tcase(s, prog);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
