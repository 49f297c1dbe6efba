/*  reliability_test.c — Check suite "reliability": retries, dead letters,
    lease timeouts, limits, graceful shutdown and restart, with the real
    am2z-broker, am2z-example-worker and am2z processes on 127.0.0.1
    ephemeral ports.

    Each case starts its own broker (its own data dir and settings) and
    worker inside the case's forked child, and stops them at the end. Every
    wait is bounded and waits for the event it needs.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*  Events of one client's own jobs: name, attempt, broker timestamp. */
typedef struct {
    struct {
        char name[64];
        uint32_t attempt;
        uint64_t ts;
    } ev[64];
    int count;
} s_log_t;

static void
s_record(const am2z_event_t *ev, void *arg)
{
    s_log_t *log = arg;
    if (log->count < 64) {
        snprintf(log->ev[log->count].name, sizeof log->ev[0].name, "%s", ev->name);
        log->ev[log->count].attempt = ev->attempt;
        log->ev[log->count].ts = ev->ts_ms;
        log->count++;
    }
}

static int
s_count_named(const s_log_t *log, const char *name)
{
    int n = 0;
    for (int i = 0; i < log->count; i++)
        if (strcmp(log->ev[i].name, name) == 0)
            n++;
    return n;
}

/*  The timestamp of the first event `name` with `attempt`; fails if none. */
static uint64_t
s_ts_of(const s_log_t *log, const char *name, uint32_t attempt)
{
    for (int i = 0; i < log->count; i++)
        if (strcmp(log->ev[i].name, name) == 0 && log->ev[i].attempt == attempt)
            return log->ev[i].ts;
    ck_abort_msg("no %s event for attempt %u", name, attempt);
    return 0;
}

static bool
s_in_dlq(am2z_client_t *c, const char *proc, const char *job_id, uint32_t *attempt)
{
    am2z_dlq_list_t *dl = NULL;
    ck_assert_int_eq(am2z_client_dlq_list(c, proc, NULL, &dl), AM2Z_OK);
    bool found = false;
    for (size_t i = 0; i < dl->count; i++) {
        if (strcmp(dl->items[i].job_id, job_id) == 0) {
            found = true;
            if (attempt)
                *attempt = dl->items[i].attempt;
            ck_assert_ptr_nonnull(dl->items[i].error);
            ck_assert_str_eq(dl->items[i].processor, proc);
        }
    }
    am2z_dlq_list_destroy(&dl);
    return found;
}

/* ---------------------------------------------------------------------------
   Retries
   ------------------------------------------------------------------------ */

START_TEST(test_rel_flaky_succeeds_on_third_attempt_with_failed_events)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-flaky", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);
    am2z_state_t *st = am2z_cluster_state("flaky-1", "failures", 2, NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "flaky", st, "flaky-1", NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "flaky failed: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 3);
    int64_t attempts = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "attempts", &attempts), AM2Z_OK);
    ck_assert_int_eq(attempts, 3);
    ck_assert_int_eq(s_count_named(&log, "processor:job:failed"), 2);
    s_ts_of(&log, "processor:job:failed", 1);
    s_ts_of(&log, "processor:job:failed", 2);
    ck_assert_int_eq(s_count_named(&log, "processor:job:completed"), 1);
    ck_assert(!s_in_dlq(c, "flaky", r->job_id, NULL));
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_rel_exhausted_job_fails_with_attempts_and_is_dead_lettered)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-exhaust", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);
    am2z_state_t *st = am2z_cluster_state("exh-1", "category", 0, "execution");
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "fail-retry", st, "exh-1", NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_uint_eq(r->attempt, 2);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_EXECUTION);
    ck_assert_int_eq(s_count_named(&log, "processor:job:failed"), 2);
    s_ts_of(&log, "processor:job:failed", 1);
    s_ts_of(&log, "processor:job:failed", 2);
    uint32_t attempt = 0;
    ck_assert(s_in_dlq(c, "fail-retry", r->job_id, &attempt));
    ck_assert_uint_eq(attempt, 2);
    /* one dead letter, with its input state and last error */
    am2z_dlq_list_t *one = NULL;
    ck_assert_int_eq(am2z_client_dlq_get(c, r->job_id, &one), AM2Z_OK);
    ck_assert_uint_eq(one->count, 1);
    ck_assert_ptr_nonnull(one->items[0].state);
    ck_assert_str_eq(one->items[0].session_id, "exh-1");
    ck_assert_int_eq(one->items[0].error->category, AM2Z_CAT_EXECUTION);
    ck_assert_uint_ge(one->items[0].failed_at_ms, one->items[0].created_ms);
    am2z_dlq_list_destroy(&one);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_rel_non_retryable_validation_failure_runs_once)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-valid", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);
    am2z_state_t *st = am2z_cluster_state("val-1", "category", 0, "validation");
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "fail-retry", st, "val-1", NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_uint_eq(r->attempt, 1);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_VALIDATION);
    ck_assert_int_eq(s_count_named(&log, "processor:active"), 1);
    ck_assert_int_eq(s_count_named(&log, "processor:job:failed"), 1);
    ck_assert(s_in_dlq(c, "fail-retry", r->job_id, NULL));
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_rel_exponential_backoff_spaces_attempts)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-backoff", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "backoff", NULL, "bo-1", NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_uint_eq(r->attempt, 4);
    ck_assert_int_eq(s_count_named(&log, "processor:job:failed"), 4);
    /* the broker stamps both events: failed(k) -> active(k+1) >= 100 * 2^(k-1) */
    const uint64_t want[] = { 100, 200, 400 };
    for (uint32_t k = 1; k <= 3; k++) {
        uint64_t failed = s_ts_of(&log, "processor:job:failed", k);
        uint64_t next = s_ts_of(&log, "processor:active", k + 1);
        ck_assert_msg(next >= failed + want[k - 1], "attempt %u -> %u: gap %lld ms < %llu",
                      k, k + 1, (long long)(next - failed), (unsigned long long)want[k - 1]);
    }
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Dead letters
   ------------------------------------------------------------------------ */

/*  A dead letter of fail-retry in `session`; returns its job id. */
static void
s_make_dead_letter(am2z_client_t *c, const char *session, char id[AM2Z_JOB_ID_MAX + 1])
{
    am2z_state_t *st = am2z_cluster_state(session, "category", 0, "execution");
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "fail-retry", st, session, NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    snprintf(id, AM2Z_JOB_ID_MAX + 1, "%s", r->job_id);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
}

START_TEST(test_rel_dlq_retry_and_discard_through_the_client)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-dlq", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char id[AM2Z_JOB_ID_MAX + 1];
    s_make_dead_letter(c, "dlq-1", id);
    ck_assert(s_in_dlq(c, "fail-retry", id, NULL));

    /* retry: same id, fresh attempts; another client waits by that id */
    ck_assert_int_eq(am2z_client_dlq_retry(c, id), AM2Z_OK);
    ck_assert(!s_in_dlq(c, "fail-retry", id, NULL));
    am2z_client_t *other = am2z_cluster_client(&env, 15000);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(other, id, 10000, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_str_eq(r->job_id, id);
    ck_assert_uint_eq(r->attempt, 2);          /* 2 fresh attempts, not 4 */
    am2z_result_destroy(&r);
    uint32_t attempt = 0;
    ck_assert(s_in_dlq(c, "fail-retry", id, &attempt));
    ck_assert_uint_eq(attempt, 2);
    /* the retry dropped the first failed result with its index entry;
       the second is stored and indexed once */
    ck_assert_int_eq(am2z_cluster_check_retention(c), 1);

    /* discard: gone; its failed result stays fetchable */
    ck_assert_int_eq(am2z_client_dlq_discard(c, id), AM2Z_OK);
    ck_assert(!s_in_dlq(c, "fail-retry", id, NULL));
    ck_assert_int_eq(am2z_client_dlq_discard(c, id), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_dlq_retry(c, id), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_wait(other, id, 10000, &r), AM2Z_OK);
    ck_assert(!r->success);
    am2z_result_destroy(&r);
    am2z_dlq_list_t *one = NULL;
    ck_assert_int_eq(am2z_client_dlq_get(c, id, &one), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_dlq_retry(c, "bad/id"), AM2Z_EINVAL);
    am2z_client_destroy(&other);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

static char s_out[65536];

static int
s_cli(const am2z_cluster_t *env, const char *a0, const char *a1, const char *a2)
{
    const char *const args[] = { a0, a1, a2, NULL };
    return am2z_cluster_cli(env, args, s_out, sizeof s_out);
}

static json_t *
s_json(void)
{
    json_error_t jerr;
    json_t *j = json_loads(s_out, JSON_DISABLE_EOF_CHECK, &jerr);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", jerr.text, s_out);
    return j;
}

static bool
s_cli_lists(const am2z_cluster_t *env, const char *id)
{
    ck_assert_int_eq(s_cli(env, "dlq", "list", NULL), 0);
    json_t *j = s_json();
    ck_assert(json_is_array(j));
    bool found = false;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *e = json_array_get(j, i);
        if (strcmp(json_string_value(json_object_get(e, "jobId")), id) == 0) {
            found = true;
            ck_assert_int_eq(json_integer_value(json_object_get(e, "attempts")), 2);
            ck_assert_str_eq(json_string_value(json_object_get(e, "processor")), "fail-retry");
            ck_assert(json_is_object(json_object_get(e, "error")));
        }
    }
    json_decref(j);
    return found;
}

START_TEST(test_rel_dlq_cli_lists_retries_and_discards)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-dlqcli", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char id[AM2Z_JOB_ID_MAX + 1];
    s_make_dead_letter(c, "dlqcli-1", id);
    ck_assert(s_cli_lists(&env, id));

    ck_assert_int_eq(s_cli(&env, "dlq", "retry", id), 0);
    json_t *j = s_json();
    ck_assert(json_is_true(json_object_get(j, "requeued")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "jobId")), id);
    json_decref(j);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 10000, &r), AM2Z_OK);   /* failed again */
    ck_assert(!r->success);
    am2z_result_destroy(&r);
    ck_assert(s_cli_lists(&env, id));

    ck_assert_int_eq(s_cli(&env, "dlq", "discard", id), 0);
    j = s_json();
    ck_assert(json_is_true(json_object_get(j, "discarded")));
    json_decref(j);
    ck_assert(!s_cli_lists(&env, id));
    ck_assert_int_eq(s_cli(&env, "dlq", "discard", id), 1);        /* not found */
    ck_assert_int_eq(s_cli(&env, "dlq", "bogus", NULL), 2);
    ck_assert_int_eq(s_cli(&env, "dlq", "retry", NULL), 2);
    ck_assert_int_eq(s_cli(&env, "dlq", "--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(s_out, "retry JOB"));
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Timeouts and leases
   ------------------------------------------------------------------------ */

/*  Runs increment once in `session` so it has stored state (version 2). */
static void
s_seed(am2z_client_t *c, const char *session)
{
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, session, NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
}

static void
s_assert_unchanged(am2z_client_t *c, const char *session)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, session, &st), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(st), 2);
    ck_assert(!am2z_state_has(st, "slept"));
    am2z_state_destroy(&st);
}

START_TEST(test_rel_timeout_fails_attempt_with_timeout_error)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start_broker(&env, "rel-timeout", NULL);
    /* one slot per processor: sleep's comes back only with the worker's
       DONE for the timed-out attempt */
    const char *one_slot[] = { "--concurrency", "1", NULL };
    am2z_cluster_start_worker(&env, one_slot);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_seed(c, "to-1");
    am2z_state_t *st = am2z_cluster_state("to-1", "ms", 500, NULL);
    am2z_submit_opts_t opts = { .timeout_ms = 100 };
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "sleep", st, "to-1", &opts, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_TIMEOUT);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_TIMEOUT);
    ck_assert_msg(strstr(r->error->message, "timed out after 100 ms"), "message: %s",
                  r->error->message);
    ck_assert_uint_eq(r->attempt, 1);
    am2z_result_destroy(&r);
    /* the worker answers the cancelled attempt later: this sleep can run
       on the one slot only after that DONE reached the broker (the slot's
       credit comes back with it, and one actor answers in order) */
    am2z_state_t *zero = am2z_cluster_state("to-2", "ms", 0, NULL);
    ck_assert_int_eq(am2z_client_execute(c, "sleep", zero, "to-2", NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "sleep after the timeout: %s",
                  r->error ? r->error->message : "?");
    am2z_result_destroy(&r);
    am2z_state_destroy(&zero);
    /* the late DONE changed nothing; the session goes on from its stored
       state (version 2, count 1) */
    s_assert_unchanged(c, "to-1");
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "to-1", NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "increment after the timeout: %s",
                  r->error ? r->error->message : "?");
    ck_assert_uint_eq(am2z_state_version(r->state), 3);
    int64_t count = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "count", &count), AM2Z_OK);
    ck_assert_int_eq(count, 2);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_rel_late_done_after_lease_expiry_is_rejected)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-late", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_seed(c, "late-1");
    /* sleep-stubborn ignores CANCEL and succeeds 500 ms after its 100 ms lease */
    am2z_state_t *st = am2z_cluster_state("late-1", "ms", 600, NULL);
    am2z_submit_opts_t opts = { .timeout_ms = 100 };
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "sleep-stubborn", st, "late-1", &opts, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_TIMEOUT);
    ck_assert_msg(strstr(r->error->message, "timed out after 100 ms"), "message: %s",
                  r->error->message);
    am2z_result_destroy(&r);
    /* sleep-stubborn has one slot: it comes back only with the late DONE,
       so this job completing proves the late DONE arrived */
    am2z_state_t *zero = am2z_cluster_state("late-2", "ms", 0, NULL);
    ck_assert_int_eq(am2z_client_execute(c, "sleep-stubborn", zero, "late-2", NULL, &r),
                     AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    s_assert_unchanged(c, "late-1");
    am2z_state_destroy(&zero);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Limits
   ------------------------------------------------------------------------ */

START_TEST(test_rel_bounded_queues_refuse_with_resource_error)
{
    am2z_cluster_t env = { 0 };
    const char *extra[] = { "--max-queued-per-processor", "3", "--max-queued-per-session", "2",
                            NULL };
    am2z_cluster_start(&env, "rel-limits", extra);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_state_t *slow_a = am2z_cluster_state("lim-a", "ms", 20000, NULL);
    am2z_state_t *slow_b = am2z_cluster_state("lim-b", "ms", 20000, NULL);
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "sleep", slow_a, "lim-a", NULL, id), AM2Z_OK);
    ck_assert_int_eq(am2z_client_submit(c, "sleep", NULL, "lim-a", NULL, id), AM2Z_OK);
    /* the session's third */
    ck_assert_int_eq(am2z_client_submit(c, "sleep", NULL, "lim-a", NULL, id), AM2Z_EFAILED);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "session:lim-a"));
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "max-queued-per-session"));
    ck_assert_int_eq(am2z_client_submit(c, "sleep", slow_b, "lim-b", NULL, id), AM2Z_OK);
    /* the processor's fourth, as a failed result with the ResourceError */
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "sleep", NULL, "lim-c", NULL, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_RESOURCE);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_RESOURCE);
    ck_assert_msg(strstr(r->error->message, "queue:sleep (max-queued-per-processor)"),
                  "message: %s", r->error->message);
    am2z_result_destroy(&r);
    /* a flood of refused submits costs the broker no memory: refusals keep
       nothing (resident size after 20,000 of them stays within 4 MiB of
       what it was after the first 2,000, which warmed the allocator) */
    enum { FLOOD = 20000, WARM = 2000, CHUNK = 500 };
    const am2z_state_t *same[CHUNK];
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc(CHUNK, sizeof *ids);
    for (int i = 0; i < CHUNK; i++)
        same[i] = slow_a;
    long rss_warm = 0;
    for (int sent = 0; sent < FLOOD; sent += CHUNK) {
        ck_assert_int_eq(am2z_client_submit_many(c, "sleep", same, NULL, CHUNK, ids), AM2Z_OK);
        for (int i = 0; i < CHUNK; i++)
            ck_assert_str_eq(ids[i], "");          /* every one refused */
        if (sent + CHUNK == WARM)
            rss_warm = am2z_cluster_broker_rss_kib(&env);
    }
    long rss_after = am2z_cluster_broker_rss_kib(&env);
    ck_assert_int_gt(rss_warm, 0);
#ifndef AM2Z_SANITIZED
    /* (AddressSanitizer's quarantine keeps freed memory on purpose, so the
       sanitized build can only check that every submit was refused) */
    ck_assert_msg(rss_after - rss_warm < 4096, "broker RSS grew from %ld KiB to %ld KiB",
                  rss_warm, rss_after);
#else
    (void)rss_after;
#endif
    free(ids);
    /* other processors are not affected */
    s_seed(c, "lim-d");
    ck_assert_int_eq(am2z_client_stop_session(c, "lim-a", false), AM2Z_OK);
    ck_assert_int_eq(am2z_client_stop_session(c, "lim-b", false), AM2Z_OK);
    /* room again */
    am2z_state_t *quick = am2z_cluster_state("lim-c", "ms", 1, NULL);
    ck_assert_int_eq(am2z_client_execute(c, "sleep", quick, "lim-c", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    am2z_state_destroy(&quick);
    am2z_state_destroy(&slow_a);
    am2z_state_destroy(&slow_b);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Shutdown and restart
   ------------------------------------------------------------------------ */

typedef struct {
    char job[AM2Z_JOB_ID_MAX + 1];
    bool seen;
} s_wanted_t;

static void
s_on_active(const am2z_event_t *ev, void *arg)
{
    s_wanted_t *w = arg;
    if (strcmp(ev->job_id, w->job) == 0)
        w->seen = true;
}

/*  Waits (bounded) for processor:active of job on the PUB feed. */
static void
s_wait_active(am2z_events_t *feed, const char *job)
{
    s_wanted_t w = { .seen = false };
    snprintf(w.job, sizeof w.job, "%s", job);
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (!w.seen && am2z_clock_mono_us() < deadline)
        am2z_events_next(feed, 100, s_on_active, &w);
    ck_assert_msg(w.seen, "job %s never became active", job);
}

/*  A SUB socket joins late (ZeroMQ's slow joiner): submit quick jobs until
    one's processor:active is seen, so the feed is known to be live. */
static void
s_warm_feed(am2z_client_t *c, am2z_events_t *feed)
{
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (am2z_clock_mono_us() < deadline) {
        s_wanted_t w = { .seen = false };
        ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "warm", NULL, w.job), AM2Z_OK);
        for (int k = 0; k < 4 && !w.seen; k++)
            am2z_events_next(feed, 50, s_on_active, &w);
        if (w.seen)
            return;
    }
    ck_abort_msg("the event feed never delivered");
}

/*  Submits `sleep` for ms in session and returns (its id in id) once the
    job is leased and the broker has committed the lease's attempt (a
    QUERY is answered after that turn). */
static void
s_leased_sleep(const am2z_cluster_t *env, am2z_client_t *c, const char *session, int64_t ms,
               char *id)
{
    am2z_events_t *feed = NULL;
    ck_assert_int_eq(am2z_events_subscribe(env->events, "processor:active", NULL, &feed),
                     AM2Z_OK);
    s_warm_feed(c, feed);
    am2z_state_t *st = am2z_cluster_state(session, "ms", ms, NULL);
    ck_assert_int_eq(am2z_client_submit(c, "sleep", st, session, NULL, id), AM2Z_OK);
    s_wait_active(feed, id);
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_client_query(c, "job", id, &data, &size), AM2Z_OK);
    free(data);
    am2z_state_destroy(&st);
    am2z_events_destroy(&feed);
}

START_TEST(test_rel_sigterm_drains_running_job_and_pending_resume_after_restart)
{
    am2z_cluster_t env = { 0 };
    const char *extra[] = { "--grace", "10s", NULL };
    am2z_cluster_start(&env, "rel-drain", extra);
    am2z_events_t *feed = NULL;
    ck_assert_int_eq(am2z_events_subscribe(env.events, "processor:active", NULL, &feed),
                     AM2Z_OK);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_warm_feed(c, feed);
    am2z_state_t *st = am2z_cluster_state("drain-1", "ms", 800, NULL);
    char running[AM2Z_JOB_ID_MAX + 1], pending[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "sleep", st, "drain-1", NULL, running), AM2Z_OK);
    ck_assert_int_eq(am2z_client_submit(c, "increment", NULL, "drain-1", NULL, pending),
                     AM2Z_OK);
    s_wait_active(feed, running);

    ck_assert_int_eq(kill(env.broker.pid, SIGTERM), 0);
    /* new work is refused once the broker has seen the signal; anything
       accepted before that simply waits for the restart */
    char late[8][AM2Z_JOB_ID_MAX + 1];
    int accepted = 0, refused = 0;
    for (int i = 0; i < 200 && !refused; i++) {
        char id[AM2Z_JOB_ID_MAX + 1];
        int rc = am2z_client_submit(c, "increment", NULL, "drain-2", NULL, id);
        if (rc == AM2Z_OK && accepted < 8)
            snprintf(late[accepted++], sizeof late[0], "%s", id);
        else if (rc == AM2Z_EFAILED)
            refused = 1;
        else
            ck_assert_int_eq(rc, AM2Z_OK);
    }
    ck_assert_int_eq(refused, 1);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(c), "broker is shutting down"));
    am2z_client_destroy(&c);
    am2z_events_destroy(&feed);

    /* the running job finishes, then the broker exits 0 on its own */
    int status = am2z_testproc_stop(&env.broker, 0, 15000);
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "broker did not drain and exit 0");
    am2z_cluster_stop_workers(&env);

    /* restart on the same data dir: the finished job is not re-run, the
       pending ones run */
    am2z_cluster_start(&env, "rel-drain", extra);
    c = am2z_cluster_client(&env, 15000);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, running, 10000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "running job: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 1);
    am2z_result_destroy(&r);
    ck_assert_int_eq(am2z_client_wait(c, pending, 10000, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_uint_eq(am2z_state_version(r->state), 3);   /* after sleep's version 2 */
    am2z_result_destroy(&r);
    for (int i = 0; i < accepted; i++) {
        ck_assert_int_eq(am2z_client_wait(c, late[i], 10000, &r), AM2Z_OK);
        ck_assert(r->success);
        am2z_result_destroy(&r);
    }
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_rel_sigkill_restart_reruns_leased_job_once_with_attempt_counted)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_start(&env, "rel-kill", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    /* a finished job: never re-run */
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "kill-0", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    char done_id[AM2Z_JOB_ID_MAX + 1];
    snprintf(done_id, sizeof done_id, "%s", r->job_id);
    am2z_result_destroy(&r);
    /* a leased job, killed mid-run */
    char id[AM2Z_JOB_ID_MAX + 1];
    s_leased_sleep(&env, c, "kill-1", 1500, id);
    am2z_client_destroy(&c);
    am2z_cluster_kill_broker(&env);
    am2z_cluster_stop_workers(&env);

    am2z_cluster_start(&env, "rel-kill", NULL);
    c = am2z_cluster_client(&env, 15000);
    ck_assert_int_eq(am2z_client_wait(c, id, 15000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "re-run failed: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 2);
    am2z_result_destroy(&r);
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "kill-0", &stored), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(stored), 2);
    am2z_state_destroy(&stored);
    ck_assert_int_eq(am2z_client_wait(c, done_id, 5000, &r), AM2Z_OK);
    ck_assert(r->success);
    ck_assert_uint_eq(r->attempt, 1);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  A client that waits across a broker restart gets its result. The
    broker that comes back (same data dir, same ports) knows the client's
    socket by a new identity, so the RESULT of the re-run job would go
    nowhere; the wait asks again (FETCH) when it has heard nothing for a
    while, which tells the broker where to send it. */
START_TEST(test_rel_client_waiting_across_a_broker_restart_gets_its_result)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_pick_ports(&env);
    am2z_cluster_start(&env, "rel-rewait", NULL);
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char id[AM2Z_JOB_ID_MAX + 1];
    s_leased_sleep(&env, c, "rewait-1", 1500, id);
    am2z_cluster_kill_broker(&env);
    am2z_cluster_stop_workers(&env);

    am2z_cluster_start(&env, "rel-rewait", NULL);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 20000, &r), AM2Z_OK);   /* the same client */
    ck_assert_msg(r->success, "re-run failed: %s", r->error ? r->error->message : "?");
    ck_assert_uint_eq(r->attempt, 2);
    am2z_result_destroy(&r);
    /* and it goes on working on its new connection */
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, "rewait-2", NULL, &r), AM2Z_OK);
    ck_assert(r->success);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  A plain execute (no idempotency key: SUBMIT noack, no ACCEPTED) whose
    broker is killed while the job runs still gets the result of the
    re-run: it named its job id in the SUBMIT, and FETCHes it when it has
    heard nothing for a while. */
typedef struct {
    am2z_client_t *c;             /* used only by the thread */
    am2z_result_t *r;
    int rc;
} s_exec_t;

static void *
s_execute_sleep(void *arg)
{
    s_exec_t *x = arg;
    am2z_state_t *st = am2z_cluster_state("rexec-1", "ms", 1500, NULL);
    x->rc = st ? am2z_client_execute(x->c, "sleep", st, "rexec-1", NULL, &x->r) : AM2Z_ENOMEM;
    am2z_state_destroy(&st);
    return NULL;
}

static void
s_on_session_active(const am2z_event_t *ev, void *arg)
{
    s_wanted_t *w = arg;
    if (strcmp(ev->session_id, "rexec-1") == 0) {
        snprintf(w->job, sizeof w->job, "%s", ev->job_id);
        w->seen = true;
    }
}

START_TEST(test_rel_plain_execute_across_a_broker_restart_gets_its_result)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_pick_ports(&env);
    am2z_cluster_start(&env, "rel-rexec", NULL);
    am2z_client_t *c0 = am2z_cluster_client(&env, 15000);
    am2z_events_t *feed = NULL;
    ck_assert_int_eq(am2z_events_subscribe(env.events, "processor:active", NULL, &feed),
                     AM2Z_OK);
    s_warm_feed(c0, feed);
    s_exec_t x = { .c = am2z_cluster_client(&env, 20000) };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_execute_sleep, &x), 0);
    /* leased: its SUBMIT was committed (sync leases a job only after the
       turn that accepted it is on disk); its id comes from the event */
    s_wanted_t w = { .seen = false };
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (!w.seen && am2z_clock_mono_us() < deadline)
        am2z_events_next(feed, 100, s_on_session_active, &w);
    ck_assert_msg(w.seen, "the execute's job never became active");
    /* a QUERY is answered after the turn that committed the lease's attempt */
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_client_query(c0, "job", w.job, &data, &size), AM2Z_OK);
    free(data);
    am2z_events_destroy(&feed);
    am2z_cluster_kill_broker(&env);
    am2z_cluster_stop_workers(&env);

    am2z_cluster_start(&env, "rel-rexec", NULL);
    pthread_join(t, NULL);
    ck_assert_msg(x.rc == AM2Z_OK, "execute: %s: %s", am2z_strerror(x.rc),
                  am2z_client_last_error(x.c));
    ck_assert_msg(x.r->success, "re-run failed: %s", x.r->error ? x.r->error->message : "?");
    ck_assert_str_eq(x.r->job_id, w.job);
    ck_assert_uint_eq(x.r->attempt, 2);
    am2z_result_destroy(&x.r);
    am2z_client_destroy(&x.c);
    am2z_client_destroy(&c0);
    am2z_cluster_stop(&env);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("reliability");
    TCase *tc = tcase_create("broker+worker per case");
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, test_rel_flaky_succeeds_on_third_attempt_with_failed_events);
    tcase_add_test(tc, test_rel_exhausted_job_fails_with_attempts_and_is_dead_lettered);
    tcase_add_test(tc, test_rel_non_retryable_validation_failure_runs_once);
    tcase_add_test(tc, test_rel_exponential_backoff_spaces_attempts);
    tcase_add_test(tc, test_rel_dlq_retry_and_discard_through_the_client);
    tcase_add_test(tc, test_rel_dlq_cli_lists_retries_and_discards);
    tcase_add_test(tc, test_rel_timeout_fails_attempt_with_timeout_error);
    tcase_add_test(tc, test_rel_late_done_after_lease_expiry_is_rejected);
    tcase_add_test(tc, test_rel_bounded_queues_refuse_with_resource_error);
    tcase_add_test(tc, test_rel_sigterm_drains_running_job_and_pending_resume_after_restart);
    tcase_add_test(tc, test_rel_sigkill_restart_reruns_leased_job_once_with_attempt_counted);
    tcase_add_test(tc, test_rel_client_waiting_across_a_broker_restart_gets_its_result);
    tcase_add_test(tc, test_rel_plain_execute_across_a_broker_restart_gets_its_result);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
