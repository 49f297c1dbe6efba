/*  pool_test.c — Check suite "pool": the worker's actor mailbox and threads
    (worker/am2z_pool.c) driven directly through its internal API, as the
    worker's main thread drives it. Every wait is bounded. */
#include "am2z_clock.h"
#include "am2z_codec.h"
#include "am2z_fakebroker.h"
#include "am2z_testutil.h"
#include "am2z_worker_priv.h"

#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 5000

/*  count + 1. */
static int
p_incr(am2z_ctx_t *ctx)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "count", &n);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n + 1);
}

/*  Waits (at most 5 s) until the test opens the gate, then count + 1. */
static atomic_bool s_gate;
static atomic_int s_gated;

static int
p_gated(am2z_ctx_t *ctx)
{
    atomic_fetch_add(&s_gated, 1);
    for (int i = 0; i < 5000 && !atomic_load(&s_gate); i++)
        nanosleep(&(struct timespec){ .tv_nsec = 1000000L }, NULL);
    return p_incr(ctx);
}

/*  Waits (bounded) until n "gated" jobs run. */
static void
s_wait_gated_n(int n)
{
    uint64_t deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (atomic_load(&s_gated) < n && am2z_clock_mono_us() < deadline)
        nanosleep(&(struct timespec){ .tv_nsec = 1000000L }, NULL);
    ck_assert_int_eq(atomic_load(&s_gated), n);
}

static void
s_wait_gated(void)
{
    s_wait_gated_n(1);
}

/*  Calls "incr" (through the main thread) and keeps the callee's count. */
static int
p_caller(am2z_ctx_t *ctx)
{
    am2z_result_t *r = NULL;
    int rc = am2z_ctx_call(ctx, "incr", NULL, &r);
    if (rc != AM2Z_OK || !r || !r->success) {
        am2z_result_destroy(&r);
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CALL", "call failed");
        return am2z_ctx_fail(ctx, &e);
    }
    int64_t n = 0;
    am2z_state_get_int(r->state, "count", &n);
    am2z_result_destroy(&r);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n * 10);
}

/*  A decoded JOB for session "pool-1" with {count: 1}, owned (heap). */
static am2z_msg_t *
s_job(const char *id)
{
    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_int(c, "count", 1);
    am2z_state_t *st = am2z_fakebroker_state("pool-1", &c);
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_JOB);
    m.job = (char *)id;
    m.attempt = 1;
    m.processor = (char *)"p";
    m.session = (char *)"pool-1";
    m.state = (uint8_t *)am2z_state_data(st);
    m.state_size = am2z_state_size(st);
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);   /* borrowed: not cleared */
    am2z_msg_t *job = malloc(sizeof *job);
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_JOB, body, size, size + 1, job, NULL, 0), AM2Z_OK);
    free(body);
    am2z_state_destroy(&st);
    return job;
}

/*  The next message from the actors, waiting as the main thread does:
    sleep in poll(2) on the eventfd unless messages already wait. */
static am2zw_item_t *
s_next(am2zw_pool_t *p, am2zw_item_t **pending)
{
    uint64_t deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (!*pending && am2z_clock_mono_us() < deadline) {
        struct pollfd pfd = { .fd = am2zw_pool_fd(p), .events = POLLIN };
        bool slept = am2zw_pool_sleep(p);
        if (slept)
            ck_assert_int_ge(poll(&pfd, 1, 100), 0);
        *pending = am2zw_pool_take(p, slept && (pfd.revents & POLLIN));
    }
    am2zw_item_t *it = *pending;
    ck_assert_msg(it, "no message from the actors within %d ms", WAIT_MS);
    *pending = it->next;
    it->next = NULL;
    return it;
}

/*  count in a DONE body (the next state). */
static int64_t
s_done_count(const am2zw_item_t *it)
{
    ck_assert_int_eq(it->kind, AM2ZW_DONE);
    am2z_msg_t done;
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_DONE, it->body, it->size, it->size + 1, &done,
                                     NULL, 0), AM2Z_OK);
    ck_assert_msg(done.success, "%s", done.error ? done.error->message : "?");
    am2z_state_t *next = NULL;
    ck_assert_int_eq(am2z_state_decode(done.state, done.state_size, &next), AM2Z_OK);
    int64_t n = -1;
    am2z_state_get_int(next, "count", &n);
    am2z_state_destroy(&next);
    am2z_msg_clear(&done);
    return n;
}

static am2zw_pool_t *
s_pool(am2z_processor_fn *fn, size_t max_threads, size_t nslots)
{
    am2zw_lane_def_t lane = { .processor = "p", .fn = fn, .max_threads = max_threads };
    am2zw_pool_t *p = am2zw_pool_new(&lane, 1, nslots, NULL, 0, 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

/*  A JOB comes back as the DONE of its slot; the eventfd wakes the main
    thread only when it said it sleeps. */
START_TEST(test_pool_job_comes_back_as_done_of_its_slot)
{
    am2zw_pool_t *p = s_pool(p_incr, 4, 8);
    atomic_bool cancel = false;
    ck_assert(am2zw_pool_sleep(p));               /* nothing waits */
    ck_assert_int_eq(am2zw_pool_job(p, 0, 5, &cancel, s_job("job-a"), false), AM2Z_OK);
    am2zw_item_t *pending = NULL;
    am2zw_item_t *it = s_next(p, &pending);
    ck_assert_uint_eq(it->slot, 5);
    ck_assert_int_eq(s_done_count(it), 2);
    am2zw_item_free(it);
    ck_assert_uint_eq(am2zw_pool_threads(p), 1);
    /* out-of-range lane or slot: refused, the caller keeps the job */
    am2z_msg_t *job = s_job("job-b");
    ck_assert_int_eq(am2zw_pool_job(p, 1, 0, &cancel, job, false), AM2Z_EINVAL);
    ck_assert_int_eq(am2zw_pool_job(p, 0, 8, &cancel, job, false), AM2Z_EINVAL);
    am2z_msg_clear(job);
    free(job);
    am2zw_pool_destroy(&p);
    ck_assert_ptr_null(p);
}
END_TEST

/*  A nested call: the CALL reaches the main thread tagged with the slot,
    the RESULT handed to that slot reaches the thread that waits for it. */
START_TEST(test_pool_call_result_reaches_the_waiting_thread)
{
    am2zw_pool_t *p = s_pool(p_caller, 2, 4);
    atomic_bool cancel = false;
    ck_assert_int_eq(am2zw_pool_job(p, 0, 3, &cancel, s_job("job-c"), false), AM2Z_OK);
    am2zw_item_t *pending = NULL;
    am2zw_item_t *call = s_next(p, &pending);
    ck_assert_int_eq(call->kind, AM2ZW_CALL);
    ck_assert_uint_eq(call->slot, 3);
    uint32_t seq = call->seq;
    /* no thread runs slot 2's job: nobody to hand a RESULT to; and the
       thread of slot 3 waits for call seq, not for an earlier one */
    ck_assert_int_eq(am2zw_pool_result(p, 2, seq, "x", 1), AM2Z_ESTATE);
    ck_assert_int_eq(am2zw_pool_result(p, 3, seq - 1, "x", 1), AM2Z_ESTATE);

    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_int(c, "count", 7);
    am2z_state_t *st = am2z_fakebroker_state("pool-1", &c);
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_RESULT);
    r.req = 1;
    r.job = (char *)"callee";
    r.success = true;
    r.attempt = 1;
    r.state = (uint8_t *)am2z_state_data(st);
    r.state_size = am2z_state_size(st);
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&r, &body, &size), AM2Z_OK);   /* borrowed: not cleared */
    ck_assert_int_eq(am2zw_pool_result(p, 3, seq, body, size), AM2Z_OK);
    am2zw_item_free(call);
    free(body);
    am2z_state_destroy(&st);
    am2zw_item_t *done = s_next(p, &pending);
    ck_assert_uint_eq(done->slot, 3);
    ck_assert_int_eq(s_done_count(done), 70);
    am2zw_item_free(done);
    am2zw_pool_destroy(&p);
}
END_TEST

/*  A nested call's child must not wait for a busy thread: with the lane's
    only thread busy and no room for another it is refused at once (the
    caller keeps it); an ordinary JOB waits in line for that thread. */
START_TEST(test_pool_call_child_without_a_thread_is_refused)
{
    atomic_store(&s_gate, false);
    atomic_store(&s_gated, 0);
    am2zw_pool_t *p = s_pool(p_gated, 1, 4);
    atomic_bool cancel = false;
    ck_assert_int_eq(am2zw_pool_job(p, 0, 0, &cancel, s_job("job-d"), false), AM2Z_OK);
    s_wait_gated();                              /* the one thread is busy */

    am2z_msg_t *child = s_job("job-child");
    ck_assert_int_eq(am2zw_pool_job(p, 0, 1, &cancel, child, true), AM2Z_ENOMEM);
    am2z_msg_clear(child);                        /* still ours */
    free(child);
    ck_assert_int_eq(am2zw_pool_job(p, 0, 2, &cancel, s_job("job-e"), false), AM2Z_OK);
    atomic_store(&s_gate, true);
    am2zw_item_t *pending = NULL;
    bool seen[3] = { false };
    for (int i = 0; i < 2; i++) {
        am2zw_item_t *it = s_next(p, &pending);
        ck_assert_uint_lt(it->slot, 3);
        ck_assert_int_eq(s_done_count(it), 2);
        seen[it->slot] = true;
        am2zw_item_free(it);
    }
    ck_assert(seen[0] && seen[2] && !seen[1]);
    ck_assert_uint_eq(am2zw_pool_threads(p), 1);
    am2zw_pool_destroy(&p);
}
END_TEST

/*  Destroying the pool with JOBs still queued frees them (ASan/LSan would
    report a leak) and lets the running one finish first. */
START_TEST(test_pool_destroy_with_queued_jobs)
{
    atomic_store(&s_gate, false);
    atomic_store(&s_gated, 0);
    am2zw_pool_t *p = s_pool(p_gated, 1, 8);
    atomic_bool cancel = false;
    for (uint32_t s = 0; s < 5; s++) {
        char id[16];
        snprintf(id, sizeof id, "job-q%u", s);
        ck_assert_int_eq(am2zw_pool_job(p, 0, s, &cancel, s_job(id), false), AM2Z_OK);
    }
    s_wait_gated();
    atomic_store(&s_gate, true);
    am2zw_pool_destroy(&p);                       /* joins the thread */
    ck_assert_ptr_null(p);
}
END_TEST

/*  Threads started for a burst of blocking jobs leave once they waited
    idle_ms without a job, down to one for the lane, which still serves. */
START_TEST(test_pool_idle_threads_leave_down_to_one)
{
    atomic_store(&s_gate, false);
    atomic_store(&s_gated, 0);
    am2zw_lane_def_t lane = { .processor = "p", .fn = p_gated, .max_threads = 8 };
    am2zw_pool_t *p = am2zw_pool_new(&lane, 1, 8, NULL, 0, 50);
    ck_assert_ptr_nonnull(p);
    atomic_bool cancel = false;
    for (uint32_t s = 0; s < 4; s++) {
        char id[16];
        snprintf(id, sizeof id, "job-i%u", s);
        ck_assert_int_eq(am2zw_pool_job(p, 0, s, &cancel, s_job(id), false), AM2Z_OK);
    }
    s_wait_gated_n(4);                            /* four at once: four threads */
    ck_assert_uint_eq(am2zw_pool_threads(p), 4);
    atomic_store(&s_gate, true);
    am2zw_item_t *pending = NULL;
    for (int i = 0; i < 4; i++)
        am2zw_item_free(s_next(p, &pending));

    uint64_t deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (am2zw_pool_threads(p) > 1 && am2z_clock_mono_us() < deadline)
        nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
    ck_assert_uint_eq(am2zw_pool_threads(p), 1);

    ck_assert_int_eq(am2zw_pool_job(p, 0, 5, &cancel, s_job("job-i5"), false), AM2Z_OK);
    am2zw_item_t *it = s_next(p, &pending);
    ck_assert_uint_eq(it->slot, 5);
    ck_assert_int_eq(s_done_count(it), 2);
    am2zw_item_free(it);
    am2zw_pool_destroy(&p);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_pool_job_comes_back_as_done_of_its_slot);
    tcase_add_test(tc, test_pool_call_result_reaches_the_waiting_thread);
    tcase_add_test(tc, test_pool_call_child_without_a_thread_is_refused);
    tcase_add_test(tc, test_pool_destroy_with_queued_jobs);
    tcase_add_test(tc, test_pool_idle_threads_leave_down_to_one);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
