/*  worker_test.c — Check suite "worker": the test plays the broker (a real
    ROUTER socket and the codec, am2z_fakebroker) against a real worker
    running in its background thread. Every wait is bounded. */
#include "am2z_clock.h"
#include "am2z_codec.h"
#include "am2z_fakebroker.h"
#include "am2z_testutil.h"
#include "am2z_compose.h"
#include "am2z_worker.h"

#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 5000

/* ---------------------------------------------------------------------------
   Test processors
   ------------------------------------------------------------------------ */

static int
p_incr(am2z_ctx_t *ctx)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "count", &n);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n + 1);
}

static int
p_invalid(am2z_ctx_t *ctx)
{
    am2z_error_t *e = am2z_error_validation("email", "nope", "not an email");
    return am2z_ctx_fail(ctx, &e);
}

static int
p_untyped(am2z_ctx_t *ctx)
{
    (void)ctx;
    return AM2Z_EIO;
}

/*  Fails without an error value (as after an allocation failure). */
static int
p_fail_null(am2z_ctx_t *ctx)
{
    return am2z_ctx_fail(ctx, NULL);
}

/*  "a" becomes an int, then "a.b" runs through it: the apply fails. */
static int
p_bad_apply(am2z_ctx_t *ctx)
{
    am2z_changes_set_int(am2z_ctx_changes(ctx), "a", 1);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "a.b", 2);
}

static int
p_emitter(am2z_ctx_t *ctx)
{
    static const uint8_t one[] = { 0x81, 0xa1, 'n', 0x01 };
    ck_assert_int_eq(am2z_ctx_emit(ctx, "custom:one", one, sizeof one), AM2Z_OK);
    ck_assert_int_eq(am2z_ctx_emit(ctx, "custom:two", NULL, 0), AM2Z_OK);
    ck_assert_int_eq(am2z_ctx_progress(ctx, 300), AM2Z_OK);
    /*  refused: bad name, data not one object */
    ck_assert_int_eq(am2z_ctx_emit(ctx, "bad name", NULL, 0), AM2Z_EINVAL);
    static const uint8_t two_objects[] = { 0x01, 0x02 };
    ck_assert_int_eq(am2z_ctx_emit(ctx, "x", two_objects, 2), AM2Z_EPROTO);
    return am2z_changes_set_bool(am2z_ctx_changes(ctx), "done", true);
}

/*  Blockers that returned because they saw their cancellation flag. */
static atomic_int s_blockers_cancelled;

/*  Emits "started", then sleeps in 5 ms steps until cancelled (at most 20 s). */
static int
p_blocker(am2z_ctx_t *ctx)
{
    am2z_ctx_emit(ctx, "started", NULL, 0);
    for (int i = 0; i < 4000 && !am2z_ctx_cancelled(ctx); i++)
        nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
    if (!am2z_ctx_cancelled(ctx))
        return am2z_changes_set_bool(am2z_ctx_changes(ctx), "cancelled", false);
    atomic_fetch_add(&s_blockers_cancelled, 1);
    am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED", "cancelled");
    return am2z_ctx_fail(ctx, &e);
}

/*  Succeeds only when `arg` (an atomic counter) reaches 2 while it waits:
    i.e. two of these run at the same time. */
static int
p_rendezvous(am2z_ctx_t *ctx)
{
    atomic_int *arrived = am2z_ctx_arg(ctx);
    atomic_fetch_add(arrived, 1);
    for (int i = 0; i < 1000 && atomic_load(arrived) < 2; i++)
        nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
    if (atomic_load(arrived) < 2) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "ALONE",
                                         "the other job never ran alongside");
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "met", 2);
}

/*  Jobs of "crowd" that have started. */
static atomic_int s_crowd;
#define S_CROWD 16

/*  Succeeds only when S_CROWD of these run at the same time (it waits, at
    most 5 s, for the others): every blocking job got a thread. */
static int
p_crowd(am2z_ctx_t *ctx)
{
    atomic_fetch_add(&s_crowd, 1);
    for (int i = 0; i < 1000 && atomic_load(&s_crowd) < S_CROWD; i++)
        nanosleep(&(struct timespec){ .tv_nsec = 5000000L }, NULL);
    if (atomic_load(&s_crowd) < S_CROWD) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "ALONE",
                                         "only %d of %d ran at once",
                                         atomic_load(&s_crowd), S_CROWD);
        return am2z_ctx_fail(ctx, &e);
    }
    return p_incr(ctx);
}

/*  Numbers the threads that run "whoami" (1, 2, ...) and reports which
    one ran the job as "thread". */
static atomic_int s_thread_numbers;
static _Thread_local int s_my_number;

static int
p_whoami(am2z_ctx_t *ctx)
{
    if (!s_my_number)
        s_my_number = atomic_fetch_add(&s_thread_numbers, 1) + 1;
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "thread", s_my_number);
}

/*  Runs of "probe" (count + 1) so far: a JOB the worker held never ran. */
static atomic_int s_probe_runs;

static int
p_probe(am2z_ctx_t *ctx)
{
    atomic_fetch_add(&s_probe_runs, 1);
    return p_incr(ctx);
}

/*  "gate" waits (1 ms steps, honouring cancellation) until the test sets
    this, then count + 1. */
static atomic_bool s_gate_open;

static int
p_gate(am2z_ctx_t *ctx)
{
    am2z_ctx_emit(ctx, "started", NULL, 0);
    while (!atomic_load(&s_gate_open) && !am2z_ctx_cancelled(ctx))
        nanosleep(&(struct timespec){ .tv_nsec = 1000000L }, NULL);
    if (!atomic_load(&s_gate_open)) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED", "cancelled");
        return am2z_ctx_fail(ctx, &e);
    }
    return p_incr(ctx);
}

/*  Records what the ctx reports, so the test can check it. */
static int
p_introspect(am2z_ctx_t *ctx)
{
    am2z_changes_t *c = am2z_ctx_changes(ctx);
    am2z_changes_set_str(c, "proc", am2z_ctx_processor(ctx));
    am2z_changes_set_str(c, "session", am2z_ctx_session_id(ctx));
    am2z_changes_set_str(c, "job", am2z_ctx_execution_id(ctx));
    am2z_changes_set_int(c, "attempt", am2z_ctx_attempt(ctx));
    am2z_changes_set_bool(c, "started", am2z_ctx_started_at(ctx) > 0);
    am2z_changes_set_bool(c, "log", am2z_ctx_log(ctx) != NULL);
    return am2z_changes_set_bool(c, "cancelled", am2z_ctx_cancelled(ctx));
}

/* ---------------------------------------------------------------------------
   Helpers
   ------------------------------------------------------------------------ */

static atomic_int s_arrived;
/*  Grace period of the workers s_worker makes (short: stops stay quick). */
static uint64_t s_grace_ms = 300;

static am2z_worker_t *
s_worker(const char *endpoint, uint64_t heartbeat_ms, uint32_t liveness)
{
    am2z_worker_config_t cfg;
    am2z_worker_config_defaults(&cfg);
    snprintf(cfg.broker, sizeof cfg.broker, "%s", endpoint);
    snprintf(cfg.id, sizeof cfg.id, "test-worker");
    cfg.heartbeat_ms = heartbeat_ms;
    cfg.liveness = liveness;
    cfg.log_level = AM2Z_LOG_WARN;
    cfg.grace_ms = s_grace_ms;
    am2z_worker_t *w = am2z_worker_new(&cfg);
    ck_assert_ptr_nonnull(w);
    const am2z_processor_def_t defs[] = {
        { .name = "incr", .fn = p_incr, .concurrency = 3, .description = "count+1",
          .timeout_ms = 1234 },
        { .name = "invalid", .fn = p_invalid },
        { .name = "untyped", .fn = p_untyped },
        { .name = "bad-apply", .fn = p_bad_apply },
        { .name = "emitter", .fn = p_emitter },
        { .name = "blocker", .fn = p_blocker },
        { .name = "rendezvous", .fn = p_rendezvous, .concurrency = 2,
          .arg = &s_arrived },
        { .name = "introspect", .fn = p_introspect },
        { .name = "fail-null", .fn = p_fail_null },
        { .name = "probe", .fn = p_probe },
        { .name = "gate", .fn = p_gate },
        { .name = "crowd", .fn = p_crowd, .concurrency = S_CROWD },
        { .name = "whoami", .fn = p_whoami, .concurrency = S_CROWD },
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        ck_assert_int_eq(am2z_worker_register(w, &defs[i]), AM2Z_OK);
    return w;
}

/*  Fake broker + started worker + its READY consumed. */
typedef struct {
    am2z_fakebroker_t *fb;
    am2z_worker_t *w;
} s_rig_t;

static s_rig_t
s_rig(uint64_t heartbeat_ms, uint32_t liveness)
{
    s_rig_t r;
    r.fb = am2z_fakebroker_new();
    r.w = s_worker(am2z_fakebroker_endpoint(r.fb), heartbeat_ms, liveness);
    ck_assert_int_eq(am2z_worker_start(r.w), AM2Z_OK);
    am2z_msg_t ready;
    am2z_fakebroker_expect(r.fb, AM2Z_CMD_READY, &ready, WAIT_MS);
    am2z_msg_clear(&ready);
    return r;
}

static void
s_unrig(s_rig_t *r)
{
    am2z_worker_destroy(&r->w);
    ck_assert_ptr_null(r->w);
    am2z_fakebroker_destroy(&r->fb);
}

static am2z_state_t *
s_state_count(int64_t count)
{
    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_int(c, "count", count);
    return am2z_fakebroker_state("sess-1", &c);
}

/*  Runs one job of `proc` on a fresh state; returns its DONE. */
static void
s_run_job(s_rig_t *r, const char *proc, am2z_msg_t *done)
{
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r->fb, proc, st, 1, 0, id);
    am2z_fakebroker_wait_done(r->fb, id, done, NULL, 0, NULL, WAIT_MS);
    am2z_state_destroy(&st);
}

/* ---------------------------------------------------------------------------
   Cases
   ------------------------------------------------------------------------ */

START_TEST(test_worker_ready_announces_processors_and_credit)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 1000, 100);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);         /* no-op */
    /*  registering while running is refused */
    am2z_processor_def_t late = { .name = "late", .fn = p_incr };
    ck_assert_int_eq(am2z_worker_register(w, &late), AM2Z_ESTATE);

    am2z_msg_t ready;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &ready, WAIT_MS);
    ck_assert_str_eq(ready.worker, "test-worker");
    ck_assert_uint_eq(ready.nprocs, 13);
    ck_assert_str_eq(ready.procs[0].name, "incr");
    ck_assert_uint_eq(ready.procs[0].concurrency, 3);
    ck_assert_str_eq(ready.procs[0].description, "count+1");
    ck_assert_uint_eq(ready.procs[0].timeout_ms, 1234);
    ck_assert_str_eq(ready.procs[1].name, "invalid");
    ck_assert_uint_eq(ready.procs[1].concurrency, 1);        /* 0 means 1 */
    ck_assert_str_eq(ready.procs[6].name, "rendezvous");
    ck_assert_uint_eq(ready.procs[6].concurrency, 2);
    ck_assert(ready.batch);                                  /* it reads BATCHes */
    am2z_msg_clear(&ready);

    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

START_TEST(test_worker_ready_announces_composites)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 1000, 100);
    static const char *const steps[] = { "incr", "incr" };
    static const am2z_route_t routes[] = { { "a", "incr" } };
    am2z_composite_def_t chain = { .name = "twice", .kind = AM2Z_COMPOSITE_CHAIN,
                                   .steps = steps, .nsteps = 2, .timeout_ms = 900 };
    am2z_composite_def_t route = { .name = "pick", .kind = AM2Z_COMPOSITE_ROUTE,
                                   .selector_path = "k", .routes = routes, .nroutes = 1,
                                   .fallback = "twice" };
    ck_assert_int_eq(am2z_worker_register_composite(w, &chain), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_register_composite(w, &route), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_register_composite(w, &chain), AM2Z_EINVAL);  /* twice */
    am2z_composite_def_t bad = { .name = "empty", .kind = AM2Z_COMPOSITE_CHAIN };
    ck_assert_int_eq(am2z_worker_register_composite(w, &bad), AM2Z_EINVAL);
    bad.name = "incr";                                    /* a processor's name */
    bad.steps = steps;
    bad.nsteps = 1;
    ck_assert_int_eq(am2z_worker_register_composite(w, &bad), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_worker_register_composite(w, NULL), AM2Z_EINVAL);
    /* a composite that would lead back to itself through registered ones:
       "loop" runs "back", which would run "loop" */
    static const char *const back_steps[] = { "incr", "loop" };
    static const char *const loop_steps[] = { "back" };
    am2z_composite_def_t back = { .name = "back", .kind = AM2Z_COMPOSITE_CHAIN,
                                  .steps = back_steps, .nsteps = 2 };
    am2z_composite_def_t loop = { .name = "loop", .kind = AM2Z_COMPOSITE_PARALLEL,
                                  .steps = loop_steps, .nsteps = 1 };
    ck_assert_int_eq(am2z_worker_register_composite(w, &back), AM2Z_OK);   /* "loop" unknown yet */
    ck_assert_int_eq(am2z_worker_register_composite(w, &loop), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_register_composite(w, &chain), AM2Z_ESTATE);

    am2z_msg_t ready;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &ready, WAIT_MS);
    ck_assert_uint_eq(ready.ncomps, 3);                  /* twice, pick, back: not loop */
    ck_assert_str_eq(ready.comps[2].name, "back");
    ck_assert_str_eq(ready.comps[0].name, "twice");
    ck_assert_uint_eq(ready.comps[0].kind, AM2Z_COMPOSITE_CHAIN);
    ck_assert_uint_eq(ready.comps[0].nsteps, 2);
    ck_assert_str_eq(ready.comps[0].steps[1], "incr");
    ck_assert_uint_eq(ready.comps[0].timeout_ms, 900);
    ck_assert_str_eq(ready.comps[1].name, "pick");
    ck_assert_str_eq(ready.comps[1].selector_path, "k");
    ck_assert_str_eq(ready.comps[1].routes[0].key, "a");
    ck_assert_str_eq(ready.comps[1].fallback, "twice");
    am2z_msg_clear(&ready);
    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

START_TEST(test_worker_register_validates)
{
    am2z_worker_config_t cfg;
    am2z_worker_config_defaults(&cfg);
    ck_assert_str_eq(cfg.broker, AM2Z_DEFAULT_BACKEND);
    ck_assert_uint_eq(cfg.heartbeat_ms, 1000);
    ck_assert_uint_eq(cfg.liveness, 5);
    ck_assert_uint_eq(cfg.grace_ms, AM2Z_WORKER_GRACE_DEFAULT_MS);
    cfg.log_level = AM2Z_LOG_OFF;
    am2z_worker_t *w = am2z_worker_new(&cfg);
    ck_assert_ptr_nonnull(w);
    /*  nothing registered */
    ck_assert_int_eq(am2z_worker_run(w, NULL), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_EINVAL);
    am2z_processor_def_t def = { .name = "ok", .fn = p_incr };
    ck_assert_int_eq(am2z_worker_register(w, &def), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_register(w, &def), AM2Z_EINVAL);   /* duplicate */
    def.name = "bad name";
    ck_assert_int_eq(am2z_worker_register(w, &def), AM2Z_EINVAL);
    def.name = NULL;
    ck_assert_int_eq(am2z_worker_register(w, &def), AM2Z_EINVAL);
    def.name = "nofn";
    def.fn = NULL;
    ck_assert_int_eq(am2z_worker_register(w, &def), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_worker_register(w, NULL), AM2Z_EINVAL);
    /*  a rate limit needs both numbers, and at most 1,000,000 per window */
    am2z_processor_def_t rated = { .name = "rated", .fn = p_incr, .rate_max = 5 };
    ck_assert_int_eq(am2z_worker_register(w, &rated), AM2Z_EINVAL);
    rated.rate_max = 0;
    rated.rate_interval_ms = 1000;
    ck_assert_int_eq(am2z_worker_register(w, &rated), AM2Z_EINVAL);
    rated.rate_max = 1000001;
    ck_assert_int_eq(am2z_worker_register(w, &rated), AM2Z_EINVAL);
    rated.rate_max = 20;
    ck_assert_int_eq(am2z_worker_register(w, &rated), AM2Z_OK);
    /* durations stop at 10 years (AM2Z_CODEC_MAX_DURATION_MS): the broker
       would refuse the READY that carried a longer one */
    am2z_processor_def_t slow = { .name = "slow-def", .fn = p_incr,
                                  .timeout_ms = AM2Z_CODEC_MAX_DURATION_MS + 1 };
    ck_assert_int_eq(am2z_worker_register(w, &slow), AM2Z_EINVAL);
    slow.timeout_ms = 0;
    slow.retry.max_delay_ms = UINT64_MAX;
    ck_assert_int_eq(am2z_worker_register(w, &slow), AM2Z_EINVAL);
    slow.retry.max_delay_ms = AM2Z_CODEC_MAX_DURATION_MS;
    slow.delay_ms = AM2Z_CODEC_MAX_DURATION_MS;
    ck_assert_int_eq(am2z_worker_register(w, &slow), AM2Z_OK);
    am2z_worker_destroy(&w);
    am2z_worker_destroy(&w);                                       /* idempotent */
    am2z_worker_destroy(NULL);
}
END_TEST

START_TEST(test_worker_unusable_endpoint_is_a_network_error)
{
    am2z_worker_t *w = s_worker("bogus://nowhere", 1000, 5);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_ENETWORK);
    ck_assert_int_eq(am2z_worker_run(w, NULL), AM2Z_ENETWORK);
    am2z_worker_destroy(&w);
}
END_TEST

START_TEST(test_worker_runs_job_and_returns_next_state)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(41);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "incr", st, 3, 0, id);
    am2z_msg_t done;
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(done.success);
    ck_assert_str_eq(done.job, id);
    ck_assert_uint_eq(done.attempt, 3);
    ck_assert_uint_ge(done.exec_us, 1);
    ck_assert_uint_gt(done.started_at_ms, 1600000000000ull);
    ck_assert_ptr_null(done.error);
    ck_assert_ptr_nonnull(done.state);
    ck_assert_ptr_nonnull(done.data);                        /* the changes */
    am2z_state_t *next = NULL;
    ck_assert_int_eq(am2z_state_decode(done.state, done.state_size, &next), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(next), am2z_state_version(st) + 1);
    ck_assert_str_eq(am2z_state_session_id(next), "sess-1");
    ck_assert_uint_eq(am2z_state_created_at(next), am2z_state_created_at(st));
    int64_t n = 0;
    ck_assert_int_eq(am2z_state_get_int(next, "count", &n), AM2Z_OK);
    ck_assert_int_eq(n, 42);
    am2z_changes_t *changes = NULL;
    ck_assert_int_eq(am2z_changes_decode(done.data, done.data_size, &changes), AM2Z_OK);
    ck_assert_uint_eq(am2z_changes_count(changes), 1);
    am2z_changes_destroy(&changes);
    am2z_state_destroy(&next);
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_ctx_reports_job_metadata)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "introspect", st, 2, 0, id);
    am2z_msg_t done;
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(done.success);
    am2z_state_t *next = NULL;
    ck_assert_int_eq(am2z_state_decode(done.state, done.state_size, &next), AM2Z_OK);
    char buf[128];
    ck_assert_int_eq(am2z_state_get_strcpy(next, "proc", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "introspect");
    ck_assert_int_eq(am2z_state_get_strcpy(next, "session", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "sess-1");
    ck_assert_int_eq(am2z_state_get_strcpy(next, "job", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, id);
    int64_t attempt = 0;
    ck_assert_int_eq(am2z_state_get_int(next, "attempt", &attempt), AM2Z_OK);
    ck_assert_int_eq(attempt, 2);
    bool b = false;
    ck_assert_int_eq(am2z_state_get_bool(next, "started", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_bool(next, "log", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_bool(next, "cancelled", &b), AM2Z_OK);
    ck_assert(!b);
    am2z_state_destroy(&next);
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_typed_failure_is_reported)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_msg_t done;
    s_run_job(&r, "invalid", &done);
    ck_assert(!done.success);
    ck_assert_ptr_null(done.state);
    ck_assert_ptr_nonnull(done.error);
    ck_assert_int_eq(done.error->kind, AM2Z_KIND_VALIDATION);
    ck_assert_int_eq(done.error->category, AM2Z_CAT_VALIDATION);
    ck_assert(!done.error->retryable);
    ck_assert_uint_ge(done.exec_us, 1);
    am2z_msg_clear(&done);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_untyped_and_apply_failures_are_execution_errors)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_msg_t done;
    s_run_job(&r, "untyped", &done);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->kind, AM2Z_KIND_PROCESSOR_EXECUTION);
    ck_assert_int_eq(done.error->category, AM2Z_CAT_EXECUTION);
    ck_assert_msg(strstr(done.error->message, "-9") || strstr(done.error->message, "I/O")
                  || (done.error->details && done.error->details_size > 0),
                  "message: %s", done.error->message);
    am2z_msg_clear(&done);

    s_run_job(&r, "fail-null", &done);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->kind, AM2Z_KIND_PROCESSOR_EXECUTION);
    am2z_msg_clear(&done);

    s_run_job(&r, "bad-apply", &done);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->kind, AM2Z_KIND_PROCESSOR_EXECUTION);
    ck_assert(!done.error->retryable);             /* deterministic */
    am2z_msg_clear(&done);

    /*  an undecodable input state */
    const uint8_t not_a_state[] = { 0x81, 0xa1, 'x', 0x01 };   /* no metadata */
    am2z_msg_t job;
    am2z_msg_init(&job, AM2Z_CMD_JOB);
    char id[AM2Z_ID_LEN + 1];
    am2z_id_new(id);
    job.job = id;
    job.attempt = 1;
    job.processor = (char *)"incr";
    job.session = (char *)"sess-1";
    job.state = (uint8_t *)not_a_state;
    job.state_size = sizeof not_a_state;
    am2z_fakebroker_send(r.fb, &job);
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->category, AM2Z_CAT_PROTOCOL);
    ck_assert_str_eq(done.error->code, "INVALID_STATE");
    am2z_msg_clear(&done);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_events_precede_done)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "emitter", st, 1, 0, id);
    am2z_msg_t events[8], done;
    size_t n = 0;
    am2z_fakebroker_wait_done(r.fb, id, &done, events, 8, &n, WAIT_MS);
    ck_assert(done.success);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(events[0].name, "custom:one");
    ck_assert_str_eq(events[1].name, "custom:two");
    ck_assert_str_eq(events[2].name, "job:progress");
    const uint8_t progress[] = { 0x81, 0xa8, 'p', 'r', 'o', 'g', 'r', 'e', 's', 's',
                                 0xcd, 0x01, 0x2c };            /* {progress: 300} */
    ck_assert_uint_eq(events[2].data_size, sizeof progress);
    ck_assert_mem_eq(events[2].data, progress, sizeof progress);
    ck_assert_uint_eq(events[0].data_size, 4);
    ck_assert_ptr_null(events[1].data);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(events[i].seq, i + 1);
        ck_assert_str_eq(events[i].job, id);
        ck_assert_str_eq(events[i].session, "sess-1");
        ck_assert_str_eq(events[i].processor, "emitter");
        ck_assert_uint_eq(events[i].attempt, 1);
        ck_assert_uint_gt(events[i].ts_ms, 0);
        am2z_msg_clear(&events[i]);
    }
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

/*  Waits for the "started" event of job id. */
static void
s_wait_started(am2z_fakebroker_t *fb, const char *id)
{
    am2z_msg_t ev;
    uint64_t deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (true) {
        ck_assert_msg(am2z_clock_mono_us() < deadline, "job %s never started", id);
        if (am2z_fakebroker_recv(fb, &ev, 100) != 0)
            continue;
        bool started = ev.cmd == AM2Z_CMD_EVENT && streq(ev.name, "started")
                       && ev.job && streq(ev.job, id);
        am2z_msg_clear(&ev);
        if (started)
            return;
    }
}

START_TEST(test_worker_cancel_sets_flag)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "blocker", st, 1, 0, id);
    s_wait_started(r.fb, id);
    am2z_msg_t cancel;
    am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
    cancel.job = id;
    am2z_fakebroker_send(r.fb, &cancel);
    /*  within WAIT_MS, and CANCELLED: the blocker saw the flag (on its
        own it runs 20 s and succeeds) */
    am2z_msg_t done;
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_str_eq(done.error->code, "CANCELLED");
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_lease_deadline_cancels_job)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "blocker", st, 1, 200, id);      /* 200 ms lease */
    am2z_msg_t done;
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_str_eq(done.error->code, "CANCELLED");
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_runs_concurrency_jobs_in_parallel)
{
    atomic_store(&s_arrived, 0);
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char a[AM2Z_ID_LEN + 1], b[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "rendezvous", st, 1, 0, a);
    am2z_fakebroker_job(r.fb, "rendezvous", st, 1, 0, b);
    am2z_msg_t done;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(am2z_fakebroker_recv(r.fb, &done, WAIT_MS), 0);
        ck_assert_int_eq(done.cmd, AM2Z_CMD_DONE);
        ck_assert_msg(done.success, "%s", done.error ? done.error->message : "?");
        ck_assert(streq(done.job, a) || streq(done.job, b));
        am2z_msg_clear(&done);
    }
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

/*  A processor's jobs that block each get a thread, up to its
    concurrency: S_CROWD of them sent at once all run at the same time. */
START_TEST(test_worker_blocking_jobs_each_get_a_thread)
{
    atomic_store(&s_crowd, 0);
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char ids[S_CROWD][AM2Z_ID_LEN + 1];
    for (int i = 0; i < S_CROWD; i++)
        am2z_fakebroker_job(r.fb, "crowd", st, 1, 0, ids[i]);
    for (int i = 0; i < S_CROWD; i++) {
        am2z_msg_t done;
        ck_assert_int_eq(am2z_fakebroker_recv(r.fb, &done, 10000), 0);
        ck_assert_int_eq(done.cmd, AM2Z_CMD_DONE);
        ck_assert_msg(done.success, "%s", done.error ? done.error->message : "?");
        am2z_msg_clear(&done);
    }
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

/*  One job at a time, however many slots: the thread that ran the last
    job runs the next (no thread per slot, no new thread per job). */
START_TEST(test_worker_sequential_jobs_reuse_one_thread)
{
    atomic_store(&s_thread_numbers, 0);
    s_rig_t r = s_rig(1000, 100);
    int64_t first = 0;
    for (int i = 0; i < 20; i++) {
        am2z_msg_t done;
        s_run_job(&r, "whoami", &done);
        ck_assert(done.success);
        am2z_state_t *next = NULL;
        ck_assert_int_eq(am2z_state_decode(done.state, done.state_size, &next), AM2Z_OK);
        int64_t thread = 0;
        ck_assert_int_eq(am2z_state_get_int(next, "thread", &thread), AM2Z_OK);
        if (i == 0)
            first = thread;
        ck_assert_int_eq(thread, first);
        am2z_state_destroy(&next);
        am2z_msg_clear(&done);
    }
    ck_assert_int_eq(atomic_load(&s_thread_numbers), 1);
    s_unrig(&r);
}
END_TEST

/*  JOBs in one BATCH run like separate messages; a BATCH with a command
    but no body is dropped and the worker goes on. */
START_TEST(test_worker_reads_jobs_from_a_batch)
{
    atomic_store(&s_arrived, 0);
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char a[AM2Z_ID_LEN + 1], b[AM2Z_ID_LEN + 1];
    ck_assert_int_eq(am2z_id_new(a), AM2Z_OK);
    ck_assert_int_eq(am2z_id_new(b), AM2Z_OK);
    am2z_msg_t jobs[2];
    for (int i = 0; i < 2; i++) {
        am2z_msg_init(&jobs[i], AM2Z_CMD_JOB);    /* borrowed pointers, never cleared */
        jobs[i].job = i ? b : a;
        jobs[i].attempt = 1;
        jobs[i].processor = (char *)"rendezvous";
        jobs[i].session = (char *)am2z_state_session_id(st);
        jobs[i].state = (uint8_t *)am2z_state_data(st);
        jobs[i].state_size = am2z_state_size(st);
    }
    am2z_fakebroker_send_batch(r.fb, jobs, 2);
    am2z_msg_t done;
    bool seen[2] = { false, false };
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(am2z_fakebroker_recv(r.fb, &done, WAIT_MS), 0);
        ck_assert_int_eq(done.cmd, AM2Z_CMD_DONE);
        ck_assert_msg(done.success, "%s", done.error ? done.error->message : "?");
        seen[streq(done.job, b)] = true;
        am2z_msg_clear(&done);
    }
    ck_assert(seen[0] && seen[1]);
    /* a command without its body: dropped, the worker still serves */
    const void *frames[3] = { AM2Z_PROTOCOL, AM2Z_BATCH, "JOB" };
    const size_t sizes[3] = { strlen(AM2Z_PROTOCOL), strlen(AM2Z_BATCH), 3 };
    am2z_fakebroker_send_raw(r.fb, 3, frames, sizes);
    s_run_job(&r, "incr", &done);
    ck_assert(done.success);
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_refuses_job_beyond_credit)
{
    s_rig_t r = s_rig(1000, 100);
    am2z_state_t *st = s_state_count(0);
    char a[AM2Z_ID_LEN + 1], b[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "blocker", st, 1, 0, a);         /* concurrency 1 */
    s_wait_started(r.fb, a);
    am2z_fakebroker_job(r.fb, "blocker", st, 1, 0, b);
    am2z_msg_t done;
    am2z_fakebroker_wait_done(r.fb, b, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->category, AM2Z_CAT_RESOURCE);
    ck_assert(done.error->retryable);
    am2z_msg_clear(&done);
    /*  unknown processor */
    am2z_fakebroker_job(r.fb, "nope", st, 1, 0, b);
    am2z_fakebroker_wait_done(r.fb, b, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_int_eq(done.error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    am2z_msg_clear(&done);
    /*  stop: past the grace period the running one is handed back
        (DISCONNECT), cancelled, and its outcome not reported */
    am2z_worker_stop(r.w);
    am2z_msg_t msg;
    bool saw_disconnect = false, saw_done = false;
    while (am2z_fakebroker_recv(r.fb, &msg, 1000) == 0) {
        saw_disconnect |= msg.cmd == AM2Z_CMD_DISCONNECT;
        saw_done |= msg.cmd == AM2Z_CMD_DONE && streq(msg.job, a);
        am2z_msg_clear(&msg);
    }
    ck_assert(saw_disconnect);
    ck_assert(!saw_done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_heartbeats)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_fakebroker_keep_heartbeats(fb, true);
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 50, 100);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    am2z_msg_t msg;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    for (int i = 0; i < 3; i++) {
        am2z_fakebroker_expect(fb, AM2Z_CMD_HEARTBEAT, &msg, 1000);
        ck_assert_str_eq(msg.worker, "test-worker");
        am2z_msg_clear(&msg);
    }
    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

START_TEST(test_worker_reregisters_after_disconnect)
{
    s_rig_t r = s_rig(200, 100);
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_DISCONNECT);
    /*  right after a READY, a DISCONNECT answers something older: ignored */
    am2z_fakebroker_send(r.fb, &msg);
    ck_assert_int_eq(am2z_fakebroker_recv(r.fb, &msg, 100), -1);
    /*  later, it makes the worker register again */
    bool ready = false;
    for (int i = 0; i < 60 && !ready; i++) {
        am2z_msg_init(&msg, AM2Z_CMD_DISCONNECT);
        am2z_fakebroker_send(r.fb, &msg);
        if (am2z_fakebroker_recv(r.fb, &msg, 50) == 0) {
            ck_assert_int_eq(msg.cmd, AM2Z_CMD_READY);
            ck_assert_str_eq(msg.worker, "test-worker");
            ready = true;
            am2z_msg_clear(&msg);
        }
    }
    ck_assert(ready);
    /*  and still serves */
    am2z_msg_t done;
    s_run_job(&r, "incr", &done);
    ck_assert(done.success);
    am2z_msg_clear(&done);
    s_unrig(&r);
}
END_TEST

/*  After a re-registration the broker grants full credit while jobs of the
    old registration may still run: a JOB that finds no idle slot waits for
    one instead of being refused, and the old job's outcome is dropped. */
START_TEST(test_worker_job_after_reregistration_waits_for_stale_slot)
{
    s_rig_t r = s_rig(100, 100);
    am2z_state_t *st = s_state_count(0);
    char old[AM2Z_ID_LEN + 1], fresh[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "blocker", st, 1, 0, old);       /* concurrency 1 */
    s_wait_started(r.fb, old);
    am2z_msg_t msg;
    bool ready = false;
    for (int i = 0; i < 60 && !ready; i++) {
        am2z_msg_init(&msg, AM2Z_CMD_DISCONNECT);
        am2z_fakebroker_send(r.fb, &msg);
        if (am2z_fakebroker_recv(r.fb, &msg, 50) == 0) {
            ready = msg.cmd == AM2Z_CMD_READY;
            am2z_msg_clear(&msg);
        }
    }
    ck_assert(ready);
    /*  the new registration's JOB: the old blocker is cancelled, and this
        one runs in its slot */
    am2z_fakebroker_job(r.fb, "blocker", st, 2, 300, fresh);
    bool saw_old = false, saw_fresh = false;
    uint64_t deadline = am2z_clock_mono_us() + 5000000;
    while (!saw_fresh && am2z_clock_mono_us() < deadline) {
        if (am2z_fakebroker_recv(r.fb, &msg, 100) != 0)
            continue;
        if (msg.cmd == AM2Z_CMD_DONE) {
            saw_old |= streq(msg.job, old);
            if (streq(msg.job, fresh)) {
                saw_fresh = true;
                /*  it ran (and was cancelled by its own 300 ms lease), not
                    refused for lack of a slot */
                ck_assert_str_eq(msg.error->code, "CANCELLED");
                ck_assert_uint_eq(msg.attempt, 2);
            }
        }
        am2z_msg_clear(&msg);
    }
    ck_assert(saw_fresh);
    ck_assert_msg(!saw_old, "the old registration's outcome was forwarded");
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_worker_reconnects_after_broker_silence)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 50, 3);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    am2z_msg_t msg;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    char first[64], second[64];
    am2z_fakebroker_peer(fb, first, sizeof first);
    /*  silent broker: after 3 x 50 ms the worker comes back on a new socket */
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, 3000);
    am2z_msg_clear(&msg);
    am2z_fakebroker_peer(fb, second, sizeof second);
    ck_assert_str_ne(first, second);
    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

START_TEST(test_worker_bad_job_frame_does_not_crash)
{
    s_rig_t r = s_rig(1000, 100);
    const uint8_t garbage[] = { 0xc1, 0xff, 0x00, 0x93 };
    const uint8_t empty_map[] = { 0x80 };
    const void *d[3];
    size_t z[3];
    /*  wrong signature */
    d[0] = "AM2Z/9"; z[0] = 6; d[1] = "JOB"; z[1] = 3; d[2] = empty_map; z[2] = 1;
    am2z_fakebroker_send_raw(r.fb, 3, d, z);
    /*  unknown command */
    d[0] = AM2Z_PROTOCOL; d[1] = "FROB"; z[1] = 4;
    am2z_fakebroker_send_raw(r.fb, 3, d, z);
    /*  garbage body */
    d[1] = "JOB"; z[1] = 3; d[2] = garbage; z[2] = sizeof garbage;
    am2z_fakebroker_send_raw(r.fb, 3, d, z);
    /*  missing required fields */
    d[2] = empty_map; z[2] = 1;
    am2z_fakebroker_send_raw(r.fb, 3, d, z);
    /*  too few frames, too many frames, empty frames */
    am2z_fakebroker_send_raw(r.fb, 2, d, z);
    am2z_fakebroker_send_raw(r.fb, 1, d, z);
    z[0] = z[1] = z[2] = 0;
    am2z_fakebroker_send_raw(r.fb, 3, d, z);
    /*  a command meant for clients */
    am2z_msg_t odd;
    am2z_msg_init(&odd, AM2Z_CMD_ACCEPTED);
    odd.req = 1;
    odd.job = (char *)"abc";
    am2z_fakebroker_send(r.fb, &odd);
    /*  random bodies */
    uint64_t seed = 42;
    for (int i = 0; i < 50; i++) {
        uint8_t buf[64];
        am2z_test_random_bytes(&seed, buf, sizeof buf);
        d[0] = AM2Z_PROTOCOL; z[0] = strlen(AM2Z_PROTOCOL);
        d[1] = i % 2 ? "JOB" : "CANCEL"; z[1] = strlen(d[1]);
        d[2] = buf; z[2] = (size_t)(i + 1);
        am2z_fakebroker_send_raw(r.fb, 3, d, z);
    }
    /*  the worker still works, and nothing came back for any of that:
        the first thing it sent since (heartbeats aside) is this job's DONE */
    am2z_state_t *st = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "incr", st, 1, 0, id);
    am2z_msg_t done;
    am2z_fakebroker_expect_done(r.fb, id, &done, WAIT_MS);
    ck_assert(done.success);
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

/*  am2z_worker_run on a thread, stopped by its flag, then by am2z_worker_stop. */
typedef struct {
    am2z_worker_t *w;
    volatile int *flag;
    int rc;
} s_runner_t;

static void *
s_runner(void *arg)
{
    s_runner_t *r = arg;
    r->rc = am2z_worker_run(r->w, r->flag);
    return NULL;
}

static void
s_join_bounded(pthread_t t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    ck_assert_int_eq(pthread_timedjoin_np(t, NULL, &ts), 0);
}

START_TEST(test_worker_run_returns_on_stop_flag_and_stop)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 1000, 100);
    volatile int flag = 0;
    s_runner_t r = { .w = w, .flag = &flag, .rc = -99 };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_runner, &r), 0);
    am2z_msg_t msg;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    flag = 1;
    am2z_fakebroker_expect(fb, AM2Z_CMD_DISCONNECT, &msg, WAIT_MS);
    ck_assert_str_eq(msg.worker, "test-worker");
    am2z_msg_clear(&msg);
    s_join_bounded(t);
    ck_assert_int_eq(r.rc, AM2Z_OK);

    /*  again, stopped by am2z_worker_stop from this thread */
    r.flag = NULL;
    r.rc = -99;
    ck_assert_int_eq(pthread_create(&t, NULL, s_runner, &r), 0);
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    am2z_worker_stop(w);
    am2z_fakebroker_expect(fb, AM2Z_CMD_DISCONNECT, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    s_join_bounded(t);
    ck_assert_int_eq(r.rc, AM2Z_OK);
    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

START_TEST(test_worker_works_over_inproc)
{
    zsock_t *router = zsock_new(ZMQ_ROUTER);
    ck_assert_ptr_nonnull(router);
    ck_assert_int_eq(zsock_bind(router, "inproc://worker-test-backend"), 0);
    am2z_worker_t *w = s_worker("inproc://worker-test-backend", 1000, 100);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    zsock_set_rcvtimeo(router, WAIT_MS);
    zmsg_t *raw = zmsg_recv(router);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_eq(zmsg_size(raw), 4);
    zframe_t *id = zmsg_pop(raw);
    char *sig = zmsg_popstr(raw);
    char *cmd = zmsg_popstr(raw);
    ck_assert_str_eq(sig, AM2Z_PROTOCOL);
    ck_assert_str_eq(cmd, "READY");
    free(sig);
    free(cmd);
    zframe_destroy(&id);
    zmsg_destroy(&raw);
    am2z_worker_destroy(&w);
    zsock_destroy(&router);
}
END_TEST


/*  am2z_worker_stop on a helper thread (it blocks while the worker drains). */
typedef struct {
    am2z_worker_t *w;
    atomic_bool returned;
} s_stopper_t;

static void *
s_stopper(void *arg)
{
    s_stopper_t *st = arg;
    am2z_worker_stop(st->w);
    atomic_store(&st->returned, true);
    return NULL;
}

START_TEST(test_worker_stop_drains_running_jobs_within_grace)
{
    /*  A grace far beyond the bounded join below: the stop returns
        because the drain ended, not because the grace ran out. */
    s_grace_ms = 120000;
    atomic_store(&s_gate_open, false);
    atomic_store(&s_probe_runs, 0);
    s_rig_t r = s_rig(100, 100);
    am2z_state_t *gated = s_state_count(7);
    am2z_state_t *quick = s_state_count(0);
    char running[AM2Z_ID_LEN + 1], held[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "gate", gated, 1, 0, running);
    s_wait_started(r.fb, running);

    s_stopper_t st = { .w = r.w };
    atomic_init(&st.returned, false);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, s_stopper, &st), 0);

    /*  Until the drain begins, JOBs still run; once it has, a JOB is held:
        no DONE. Probe, one JOB at a time, until a probe's DONE does not
        come within a second; that probe is taken as held, which the run
        count confirms after the DISCONNECT (a held JOB never ran). The
        gate keeps the running job, and so the drain, going meanwhile. */
    bool candidate = false;
    int probes_done = 0;
    am2z_msg_t msg;
    for (int i = 0; i < 50 && !candidate; i++) {
        am2z_fakebroker_job(r.fb, "probe", quick, 1, 0, held);
        candidate = true;
        uint64_t until = am2z_clock_mono_us() + 1000000, now;
        while (candidate && (now = am2z_clock_mono_us()) < until) {
            if (am2z_fakebroker_recv(r.fb, &msg, (int)((until - now) / 1000) + 1) != 0)
                continue;
            ck_assert_msg(!(msg.cmd == AM2Z_CMD_DONE && streq(msg.job, running)),
                          "the gated job ended with its gate shut");
            ck_assert(msg.cmd != AM2Z_CMD_DISCONNECT);
            if (msg.cmd == AM2Z_CMD_DONE && streq(msg.job, held)) {
                ck_assert(msg.success);
                probes_done++;
                candidate = false;
            }
            am2z_msg_clear(&msg);
        }
    }
    ck_assert_msg(candidate, "the worker never started draining");
    ck_assert(!atomic_load(&st.returned));

    /*  Heartbeats go on while draining (the broker keeps our leases). */
    size_t hb0 = am2z_fakebroker_heartbeats(r.fb);
    bool saw_held = false;
    uint64_t deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (am2z_fakebroker_heartbeats(r.fb) == hb0) {
        ck_assert_msg(am2z_clock_mono_us() < deadline, "no heartbeat while draining");
        if (am2z_fakebroker_recv(r.fb, &msg, 100) != 0)
            continue;
        ck_assert(msg.cmd != AM2Z_CMD_DISCONNECT);
        ck_assert(!(msg.cmd == AM2Z_CMD_DONE && streq(msg.job, running)));
        saw_held |= msg.cmd == AM2Z_CMD_DONE && streq(msg.job, held);
        am2z_msg_clear(&msg);
    }
    ck_assert(!atomic_load(&st.returned));

    /*  The gate opens: the running job finishes and is reported (attempt
        1, success), then DISCONNECT hands back the held one; its outcome
        never comes. */
    atomic_store(&s_gate_open, true);
    bool saw_done = false, saw_disconnect = false;
    deadline = am2z_clock_mono_us() + WAIT_MS * 1000ull;
    while (!saw_disconnect && am2z_clock_mono_us() < deadline) {
        if (am2z_fakebroker_recv(r.fb, &msg, 100) != 0)
            continue;
        if (msg.cmd == AM2Z_CMD_DONE && streq(msg.job, running)) {
            ck_assert(msg.success);
            ck_assert_uint_eq(msg.attempt, 1);
            saw_done = true;
        }
        saw_held |= msg.cmd == AM2Z_CMD_DONE && streq(msg.job, held);
        if (msg.cmd == AM2Z_CMD_DISCONNECT) {
            ck_assert_msg(saw_done, "DISCONNECT before the running job's DONE");
            saw_disconnect = true;
        }
        am2z_msg_clear(&msg);
    }
    ck_assert(saw_done);
    ck_assert(saw_disconnect);
    s_join_bounded(t);                      /* 10 s: not the 120 s grace */
    /*  the held probe never ran, and its outcome never came */
    ck_assert_msg(atomic_load(&s_probe_runs) == probes_done,
                  "the probe taken as held ran (%d runs, %d DONEs): its DONE was only late",
                  atomic_load(&s_probe_runs), probes_done);
    ck_assert(!saw_held);
    while (am2z_fakebroker_recv(r.fb, &msg, 200) == 0) {
        ck_assert(!(msg.cmd == AM2Z_CMD_DONE && streq(msg.job, held)));
        am2z_msg_clear(&msg);
    }
    am2z_state_destroy(&gated);
    am2z_state_destroy(&quick);
    s_unrig(&r);
    s_grace_ms = 300;
}
END_TEST

START_TEST(test_worker_stop_hands_back_jobs_past_grace)
{
    s_grace_ms = 400;
    atomic_store(&s_blockers_cancelled, 0);
    s_rig_t r = s_rig(100, 100);
    am2z_state_t *st0 = s_state_count(0);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "blocker", st0, 3, 0, id);       /* runs until cancelled */
    s_wait_started(r.fb, id);
    s_stopper_t st = { .w = r.w };
    atomic_init(&st.returned, false);
    pthread_t t;
    uint64_t t0 = am2z_clock_mono_us();
    ck_assert_int_eq(pthread_create(&t, NULL, s_stopper, &st), 0);
    am2z_msg_t msg;
    bool saw_disconnect = false, saw_done = false;
    uint64_t disconnect_after_us = 0;
    while (am2z_fakebroker_recv(r.fb, &msg, 1000) == 0) {
        if (msg.cmd == AM2Z_CMD_DISCONNECT && !saw_disconnect) {
            saw_disconnect = true;
            disconnect_after_us = am2z_clock_mono_us() - t0;
        }
        saw_done |= msg.cmd == AM2Z_CMD_DONE && streq(msg.job, id);
        am2z_msg_clear(&msg);
    }
    ck_assert(saw_disconnect);
    ck_assert_uint_ge(disconnect_after_us, 350000);           /* the grace ran */
    ck_assert_msg(!saw_done, "a handed-back job's outcome was reported");
    s_join_bounded(t);
    /*  the blocker returned because it was cancelled (on its own it runs
        20 s and succeeds) */
    ck_assert_int_eq(atomic_load(&s_blockers_cancelled), 1);
    am2z_state_destroy(&st0);
    s_unrig(&r);
    s_grace_ms = 300;
}
END_TEST

START_TEST(test_worker_reconnect_backs_off_and_resets_when_heard)
{
    am2z_fakebroker_t *fb = am2z_fakebroker_new();
    am2z_worker_t *w = s_worker(am2z_fakebroker_endpoint(fb), 20, 2);
    ck_assert_int_eq(am2z_worker_start(w), AM2Z_OK);
    am2z_msg_t msg;
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, WAIT_MS);
    am2z_msg_clear(&msg);
    /*  silent broker: READY again and again, each on a new socket, the
        gaps growing (backoff 100 ms doubling, jittered to 50..100%) */
    enum { N = 5 };
    uint64_t at[N];
    char peers[N][64];
    for (int i = 0; i < N; i++) {
        am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, 5000);
        ck_assert_str_eq(msg.worker, "test-worker");
        am2z_msg_clear(&msg);
        at[i] = am2z_clock_mono_us();
        am2z_fakebroker_peer(fb, peers[i], sizeof peers[i]);
        if (i > 0)
            ck_assert_str_ne(peers[i], peers[i - 1]);
    }
    /*  the fourth gap (backoff 800 ms, jittered to 400..800) is at least
        twice the first (100 ms, jittered to 50..100) */
    uint64_t first = at[1] - at[0], last = at[N - 1] - at[N - 2];
    ck_assert_msg(last >= 2 * first, "no backoff: %llu then %llu us",
                  (unsigned long long)first, (unsigned long long)last);
    /*  the (new) broker answers: the worker serves on this connection, and
        the backoff starts from the bottom again */
    am2z_msg_t hb;
    am2z_msg_init(&hb, AM2Z_CMD_HEARTBEAT);
    am2z_fakebroker_send(fb, &hb);
    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_int(c, "count", 1);
    am2z_state_t *st = am2z_fakebroker_state("sess-1", &c);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(fb, "incr", st, 1, 0, id);
    am2z_msg_t done;
    am2z_fakebroker_wait_done(fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(done.success);
    am2z_msg_clear(&done);
    uint64_t heard = am2z_clock_mono_us();
    am2z_fakebroker_expect(fb, AM2Z_CMD_READY, &msg, 5000);
    am2z_msg_clear(&msg);
    /*  the backoff started from the bottom again: shorter than the last
        (800 ms, jittered) gap of the silent spell */
    uint64_t again = am2z_clock_mono_us() - heard;
    ck_assert_msg(again < last, "after being heard, reconnected only after %llu us "
                  "(the last silent gap was %llu us)", (unsigned long long)again,
                  (unsigned long long)last);
    am2z_state_destroy(&st);
    am2z_worker_destroy(&w);
    am2z_fakebroker_destroy(&fb);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_worker_ready_announces_processors_and_credit);
    tcase_add_test(tc, test_worker_register_validates);
    tcase_add_test(tc, test_worker_ready_announces_composites);
    tcase_add_test(tc, test_worker_unusable_endpoint_is_a_network_error);
    tcase_add_test(tc, test_worker_runs_job_and_returns_next_state);
    tcase_add_test(tc, test_worker_ctx_reports_job_metadata);
    tcase_add_test(tc, test_worker_typed_failure_is_reported);
    tcase_add_test(tc, test_worker_untyped_and_apply_failures_are_execution_errors);
    tcase_add_test(tc, test_worker_events_precede_done);
    tcase_add_test(tc, test_worker_cancel_sets_flag);
    tcase_add_test(tc, test_worker_lease_deadline_cancels_job);
    tcase_add_test(tc, test_worker_runs_concurrency_jobs_in_parallel);
    tcase_add_test(tc, test_worker_blocking_jobs_each_get_a_thread);
    tcase_add_test(tc, test_worker_sequential_jobs_reuse_one_thread);
    tcase_add_test(tc, test_worker_reads_jobs_from_a_batch);
    tcase_add_test(tc, test_worker_refuses_job_beyond_credit);
    tcase_add_test(tc, test_worker_heartbeats);
    tcase_add_test(tc, test_worker_reregisters_after_disconnect);
    tcase_add_test(tc, test_worker_job_after_reregistration_waits_for_stale_slot);
    tcase_add_test(tc, test_worker_reconnects_after_broker_silence);
    tcase_add_test(tc, test_worker_bad_job_frame_does_not_crash);
    tcase_add_test(tc, test_worker_run_returns_on_stop_flag_and_stop);
    tcase_add_test(tc, test_worker_works_over_inproc);
    tcase_add_test(tc, test_worker_stop_drains_running_jobs_within_grace);
    tcase_add_test(tc, test_worker_stop_hands_back_jobs_past_grace);
    tcase_add_test(tc, test_worker_reconnect_backs_off_and_resets_when_heard);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
