/*  local_test.c — Check suite "local": the local runtime (processors and
    composites in-process) with issue 5's composition cases. */
#include "am2z_json.h"
#include "am2z_local.h"
#include "am2z_testutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
   Processors used by the cases
   ------------------------------------------------------------------------ */

static int64_t
s_count_of(const am2z_state_t *st)
{
    int64_t n = 0;
    am2z_state_get_int(st, "count", &n);
    return n;
}

static int
s_add1(am2z_ctx_t *ctx)
{
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count",
                                s_count_of(am2z_ctx_state(ctx)) + 1);
}

static int
s_times2(am2z_ctx_t *ctx)
{
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count",
                                s_count_of(am2z_ctx_state(ctx)) * 2);
}

static int
s_add10(am2z_ctx_t *ctx)
{
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count",
                                s_count_of(am2z_ctx_state(ctx)) + 10);
}

static int
s_add5(am2z_ctx_t *ctx)
{
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count",
                                s_count_of(am2z_ctx_state(ctx)) + 5);
}

static int
s_boom(am2z_ctx_t *ctx)
{
    am2z_error_t *e = am2z_error_business("BOOM", "boom", NULL, 0);
    return am2z_ctx_fail(ctx, &e);
}

static int
s_append_a(am2z_ctx_t *ctx)
{
    return am2z_changes_append_str(am2z_ctx_changes(ctx), "items", "A");
}

static int
s_append_b(am2z_ctx_t *ctx)
{
    return am2z_changes_append_str(am2z_ctx_changes(ctx), "items", "B");
}

static int
s_append_c(am2z_ctx_t *ctx)
{
    return am2z_changes_append_str(am2z_ctx_changes(ctx), "items", "C");
}

static int
s_set_x(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "x", "from-x");
}

static int
s_set_y(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "y", "from-y");
}

static int
s_status_a(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "status", "a");
}

static int
s_status_b(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "status", "b");
}

/*  Merge processor: counts the branches it was given. */
static int
s_count_branches(am2z_ctx_t *ctx)
{
    size_t n = 0;
    int rc = am2z_state_get_count(am2z_ctx_state(ctx), "$branches", &n);
    if (rc != AM2Z_OK)
        return rc;
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "merged", (int64_t)n);
}

/*  Route selector: picks "big" when count >= 100. */
static int
s_pick(am2z_ctx_t *ctx)
{
    return am2z_ctx_select(ctx, s_count_of(am2z_ctx_state(ctx)) >= 100 ? "big" : "small");
}

static int
s_mark_small(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "size", "small");
}

static int
s_mark_big(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "size", "big");
}

static int
s_mark_other(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "size", "other");
}

/*  Batch item: doubles `n`, fails when n < 0. */
static int
s_double_n(am2z_ctx_t *ctx)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "n", &n);
    if (n < 0) {
        am2z_error_t *e = am2z_error_validation("n", NULL, "must not be negative");
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "doubled", n * 2);
}

/*  Parent of nested calls: calls add-five twice on its input, then +10. */
static int
s_parent(am2z_ctx_t *ctx)
{
    am2z_result_t *r1 = NULL, *r2 = NULL;
    if (am2z_ctx_call(ctx, "add-five", NULL, &r1) != AM2Z_OK || !r1->success
        || am2z_ctx_call(ctx, "add-five", NULL, &r2) != AM2Z_OK || !r2->success) {
        am2z_result_destroy(&r1);
        am2z_result_destroy(&r2);
        am2z_error_t *e = am2z_error_execution("parent", NULL, "child failed");
        return am2z_ctx_fail(ctx, &e);
    }
    int rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "count", s_count_of(r2->state) + 10);
    am2z_changes_set_int(am2z_ctx_changes(ctx), "calls", 2);
    am2z_result_destroy(&r1);
    am2z_result_destroy(&r2);
    return rc;
}

/*  Recurses while depth < state.target; the deepest call sets reached. */
static int
s_recurse(am2z_ctx_t *ctx)
{
    int64_t target = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "target", &target);
    if ((int64_t)am2z_ctx_call_depth(ctx) >= target)
        return am2z_changes_set_int(am2z_ctx_changes(ctx), "reached",
                                    am2z_ctx_call_depth(ctx));
    am2z_result_t *r = NULL;
    int rc = am2z_ctx_call(ctx, "recurse", NULL, &r);
    if (rc != AM2Z_OK)
        return rc;
    if (!r->success) {
        am2z_error_t *e = am2z_error_dup(r->error);
        am2z_result_destroy(&r);
        return am2z_ctx_fail(ctx, &e);
    }
    int64_t reached = 0;
    am2z_state_get_int(r->state, "reached", &reached);
    am2z_result_destroy(&r);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "reached", reached);
}

/*  Fails with a retryable error the first state.failures attempts. */
static int
s_flaky(am2z_ctx_t *ctx)
{
    int64_t failures = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "failures", &failures);
    if ((int64_t)am2z_ctx_attempt(ctx) <= failures) {
        am2z_error_t *e = am2z_error_execution("flaky", NULL, "not yet");
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "attempts", am2z_ctx_attempt(ctx));
}

/* ---------------------------------------------------------------------------
   Fixture
   ------------------------------------------------------------------------ */

typedef struct {
    char names[64][48];
    int n;
} s_events_t;

static void
s_on_event(const am2z_event_t *ev, void *arg)
{
    s_events_t *e = arg;
    if (e->n < 64)
        snprintf(e->names[e->n++], 48, "%s", ev->name);
}

static int
s_count_events(const s_events_t *e, const char *name)
{
    int n = 0;
    for (int i = 0; i < e->n; i++)
        n += strcmp(e->names[i], name) == 0;
    return n;
}

static am2z_local_t *s_rt;
static s_events_t s_ev;

static void
s_reg(const char *name, am2z_processor_fn *fn)
{
    ck_assert_int_eq(am2z_local_register(s_rt, &(am2z_processor_def_t){ .name = name, .fn = fn }),
                     AM2Z_OK);
}

static void
s_reg_comp(const am2z_composite_def_t *def)
{
    char err[256] = "";
    ck_assert_msg(am2z_local_register_composite(s_rt, def, err, sizeof err) == AM2Z_OK,
                  "register %s: %s", def->name, err);
}

static void
s_setup(void)
{
    s_rt = am2z_local_new();
    ck_assert_ptr_nonnull(s_rt);
    memset(&s_ev, 0, sizeof s_ev);
    am2z_local_on_event(s_rt, s_on_event, &s_ev);
    s_reg("add1", s_add1);
    s_reg("times2", s_times2);
    s_reg("add10", s_add10);
    s_reg("add-five", s_add5);
    s_reg("boom", s_boom);
    s_reg("append-a", s_append_a);
    s_reg("append-b", s_append_b);
    s_reg("append-c", s_append_c);
    s_reg("set-x", s_set_x);
    s_reg("set-y", s_set_y);
    s_reg("status-a", s_status_a);
    s_reg("status-b", s_status_b);
    s_reg("count-branches", s_count_branches);
    s_reg("pick", s_pick);
    s_reg("mark-small", s_mark_small);
    s_reg("mark-big", s_mark_big);
    s_reg("mark-other", s_mark_other);
    s_reg("double-n", s_double_n);
    s_reg("parent", s_parent);
    s_reg("recurse", s_recurse);
    ck_assert_int_eq(am2z_local_register(s_rt, &(am2z_processor_def_t){
                         .name = "flaky", .fn = s_flaky,
                         .retry = { .max_attempts = 3, .delay_ms = 1 } }), AM2Z_OK);
}

static void
s_teardown(void)
{
    am2z_local_destroy(&s_rt);
}

/*  A state of `session` whose user keys come from JSON. */
static am2z_state_t *
s_state(const char *session, const char *json)
{
    uint8_t *map = NULL;
    size_t size = 0;
    char err[128];
    ck_assert_int_eq(am2z_json_parse_to_msgpack(json, &map, &size, err, sizeof err), AM2Z_OK);
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_from_map(session, map, size, 1, &st), AM2Z_OK);
    free(map);
    return st;
}

static am2z_result_t *
s_run(const char *name, const char *session, const char *json)
{
    am2z_state_t *st = json ? s_state(session, json) : NULL;
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_local_execute(s_rt, name, st, session, &r), AM2Z_OK);
    am2z_state_destroy(&st);
    return r;
}

/*  A details field as JSON (caller decrefs). */
static json_t *
s_details(const am2z_error_t *e)
{
    json_t *j = NULL;
    ck_assert_ptr_nonnull(e->details);
    ck_assert_int_eq(am2z_json_from_msgpack(e->details, e->details_size, &j), AM2Z_OK);
    return j;
}

/* ---------------------------------------------------------------------------
   Cases
   ------------------------------------------------------------------------ */

START_TEST(test_local_processor_and_session_state)
{
    am2z_result_t *r = s_run("add1", "p1", "{\"count\": 1}");
    ck_assert(r->success);
    ck_assert_int_eq(s_count_of(r->state), 2);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    ck_assert_uint_ge(r->exec_us, 1);
    am2z_result_destroy(&r);
    r = s_run("add1", "p1", NULL);                  /* continues from the session */
    ck_assert_int_eq(s_count_of(r->state), 3);
    ck_assert_uint_eq(am2z_state_version(r->state), 3);
    am2z_result_destroy(&r);
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_local_get_state(s_rt, "p1", &st), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(st), 3);
    am2z_state_destroy(&st);
    ck_assert_int_eq(am2z_local_stop_session(s_rt, "p1"), AM2Z_OK);
    ck_assert_int_eq(am2z_local_get_state(s_rt, "p1", &st), AM2Z_ENOTFOUND);
    r = s_run("nope", "p1", "{}");
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    am2z_result_destroy(&r);
    ck_assert_int_ge(s_count_events(&s_ev, "processor:job:completed"), 2);
}
END_TEST

START_TEST(test_local_retries_follow_the_policy)
{
    am2z_result_t *r = s_run("flaky", "f1", "{\"failures\": 2}");
    ck_assert(r->success);
    ck_assert_uint_eq(r->attempt, 3);
    ck_assert_int_eq(s_count_events(&s_ev, "processor:job:failed"), 2);
    am2z_result_destroy(&r);
    r = s_run("flaky", "f2", "{\"failures\": 5}");
    ck_assert(!r->success);
    ck_assert_uint_eq(r->attempt, 3);
    am2z_result_destroy(&r);
}
END_TEST

START_TEST(test_local_chain_runs_steps_in_order)
{
    const char *steps[] = { "add1", "times2", "add10" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "calc", .kind = AM2Z_COMPOSITE_CHAIN,
                                        .steps = steps, .nsteps = 3 });
    am2z_result_t *r = s_run("calc", "c1", "{\"count\": 5}");
    ck_assert(r->success);
    ck_assert_int_eq(s_count_of(r->state), 22);
    ck_assert_uint_eq(am2z_state_version(r->state), 1 + 3);
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count_events(&s_ev, "processor:completed"), 3);

    const char *bad[] = { "add1", "boom", "add10" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "calc-bad", .kind = AM2Z_COMPOSITE_CHAIN,
                                        .steps = bad, .nsteps = 3 });
    r = s_run("calc-bad", "c2", "{\"count\": 5}");
    ck_assert(!r->success);
    ck_assert_ptr_nonnull(strstr(r->error->message, "boom"));
    ck_assert_ptr_nonnull(strstr(r->error->message, "step 2"));
    json_t *d = s_details(r->error);
    ck_assert_str_eq(json_string_value(json_object_get(d, "step")), "boom");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "position")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "completedSteps")), 1);
    json_t *partial = json_object_get(d, "partialState");
    ck_assert_int_eq(json_integer_value(json_object_get(partial, "count")), 6);
    json_decref(d);
    am2z_result_destroy(&r);
    /* a failed run leaves the session's state alone */
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_local_get_state(s_rt, "c2", &st), AM2Z_ENOTFOUND);

    char err[128];
    ck_assert_int_eq(am2z_local_register_composite(s_rt, &(am2z_composite_def_t){
                         .name = "empty", .kind = AM2Z_COMPOSITE_CHAIN }, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err, "no steps"));
    ck_assert_int_eq(am2z_local_register_composite(s_rt, &(am2z_composite_def_t){
                         .name = "empty-p", .kind = AM2Z_COMPOSITE_PARALLEL }, err, sizeof err),
                     AM2Z_ECONFIG);

    /* composites that would run each other without end are refused where
       the cycle closes (s_exec would recurse until the stack ran out) */
    char cerr[256];
    static const char *const ping_steps[] = { "pong" };
    ck_assert_int_eq(am2z_local_register_composite(s_rt, &(am2z_composite_def_t){
                         .name = "ping", .kind = AM2Z_COMPOSITE_CHAIN, .steps = ping_steps,
                         .nsteps = 1 }, cerr, sizeof cerr), AM2Z_OK);
    ck_assert_int_eq(am2z_local_register_composite(s_rt, &(am2z_composite_def_t){
                         .name = "pong", .kind = AM2Z_COMPOSITE_ROUTE, .selector_path = "k",
                         .fallback = "ping" }, cerr, sizeof cerr), AM2Z_ECONFIG);
    ck_assert_msg(strstr(cerr, "refers back to itself") && strstr(cerr, "ping"), "%s", cerr);
    static const char *const self_steps[] = { "incr", "selfish" };
    ck_assert_int_eq(am2z_local_register_composite(s_rt, &(am2z_composite_def_t){
                         .name = "selfish", .kind = AM2Z_COMPOSITE_CHAIN, .steps = self_steps,
                         .nsteps = 2 }, cerr, sizeof cerr), AM2Z_ECONFIG);
    /* "ping" stays registered and fails cleanly: "pong" is unknown */
    am2z_result_t *pr = s_run("ping", "c-ping", "{\"count\": 1}");
    ck_assert(!pr->success);
    am2z_result_destroy(&pr);
}
END_TEST

START_TEST(test_local_parallel_merges_branches)
{
    const char *abc[] = { "append-a", "append-b", "append-c" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "abc", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = abc, .nsteps = 3 });
    am2z_result_t *r = s_run("abc", "pa", "{\"items\": []}");
    ck_assert(r->success);
    char v[8];
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "items.0", v, sizeof v), AM2Z_OK);
    ck_assert_str_eq(v, "A");
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "items.1", v, sizeof v), AM2Z_OK);
    ck_assert_str_eq(v, "B");
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "items.2", v, sizeof v), AM2Z_OK);
    ck_assert_str_eq(v, "C");
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);

    const char *xy[] = { "set-x", "set-y" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "xy", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = xy, .nsteps = 2 });
    r = s_run("xy", "pb", "{}");
    ck_assert(r->success);
    ck_assert(am2z_state_has(r->state, "x") && am2z_state_has(r->state, "y"));
    am2z_result_destroy(&r);

    const char *ab[] = { "status-a", "status-b" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "clash", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = ab, .nsteps = 2 });
    s_ev.n = 0;
    r = s_run("clash", "pc", "{\"status\": \"new\"}");
    ck_assert(r->success);
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "status", v, sizeof v), AM2Z_OK);
    ck_assert_str_eq(v, "b");
    ck_assert_int_eq(s_count_events(&s_ev, "merge:conflict"), 1);
    am2z_result_destroy(&r);

    s_reg_comp(&(am2z_composite_def_t){ .name = "clash-strict", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = ab, .nsteps = 2, .strict = true });
    r = s_run("clash-strict", "pd", "{\"status\": \"new\"}");
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->category, AM2Z_CAT_CONFLICT);
    am2z_result_destroy(&r);

    s_reg_comp(&(am2z_composite_def_t){ .name = "custom", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = abc, .nsteps = 3, .merge = "count-branches" });
    r = s_run("custom", "pe", "{}");
    ck_assert(r->success);
    int64_t merged = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "merged", &merged), AM2Z_OK);
    ck_assert_int_eq(merged, 3);
    ck_assert(!am2z_state_has(r->state, "$branches"));
    am2z_result_destroy(&r);
}
END_TEST

START_TEST(test_local_route_by_path_selector_and_fallback)
{
    const am2z_route_t routes[] = { { "small", "mark-small" }, { "big", "mark-big" } };
    s_reg_comp(&(am2z_composite_def_t){ .name = "by-path", .kind = AM2Z_COMPOSITE_ROUTE,
                                        .selector_path = "kind", .routes = routes, .nroutes = 2 });
    s_reg_comp(&(am2z_composite_def_t){ .name = "by-proc", .kind = AM2Z_COMPOSITE_ROUTE,
                                        .selector = "pick", .routes = routes, .nroutes = 2 });
    s_reg_comp(&(am2z_composite_def_t){ .name = "with-fallback", .kind = AM2Z_COMPOSITE_ROUTE,
                                        .selector_path = "kind", .routes = routes, .nroutes = 2,
                                        .fallback = "mark-other" });
    char v[16];
    am2z_result_t *r = s_run("by-path", "r1", "{\"kind\": \"big\"}");
    ck_assert(r->success);
    am2z_state_get_strcpy(r->state, "size", v, sizeof v);
    ck_assert_str_eq(v, "big");
    am2z_result_destroy(&r);
    r = s_run("by-proc", "r2", "{\"count\": 7}");
    ck_assert(r->success);
    am2z_state_get_strcpy(r->state, "size", v, sizeof v);
    ck_assert_str_eq(v, "small");
    am2z_result_destroy(&r);
    r = s_run("with-fallback", "r3", "{\"kind\": \"huge\"}");
    ck_assert(r->success);
    am2z_state_get_strcpy(r->state, "size", v, sizeof v);
    ck_assert_str_eq(v, "other");
    am2z_result_destroy(&r);
    r = s_run("by-path", "r4", "{\"kind\": \"huge\"}");
    ck_assert(!r->success);
    ck_assert_ptr_nonnull(strstr(r->error->message, "no route for huge"));
    am2z_result_destroy(&r);
}
END_TEST

START_TEST(test_local_batch_runs_payloads_in_their_sessions)
{
    s_reg_comp(&(am2z_composite_def_t){ .name = "doubles", .kind = AM2Z_COMPOSITE_BATCH,
                                        .processor = "double-n", .payloads_path = "jobs" });
    am2z_result_t *r = s_run("doubles", "b0",
                             "{\"jobs\": [{\"sessionId\": \"b1\", \"n\": 1},"
                             "            {\"sessionId\": \"b2\", \"n\": 2},"
                             "            {\"sessionId\": \"b3\", \"n\": 3}]}");
    ck_assert_msg(r->success, "batch failed: %s", r->error ? r->error->message : "");
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(am2z_state_data(r->state), am2z_state_size(r->state),
                                            &j), AM2Z_OK);
    json_t *summary = json_object_get(j, "$batch");
    ck_assert_uint_eq(json_array_size(summary), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *item = json_array_get(summary, i);
        ck_assert_int_eq(json_integer_value(json_object_get(item, "index")), (json_int_t)i);
        char want[8];
        snprintf(want, sizeof want, "b%zu", i + 1);
        ck_assert_str_eq(json_string_value(json_object_get(item, "sessionId")), want);
        am2z_state_t *st = NULL;
        ck_assert_int_eq(am2z_local_get_state(s_rt, want, &st), AM2Z_OK);
        int64_t d = 0;
        ck_assert_int_eq(am2z_state_get_int(st, "doubled", &d), AM2Z_OK);
        ck_assert_int_eq(d, 2 * ((int64_t)i + 1));
        am2z_state_destroy(&st);
    }
    json_decref(j);
    am2z_result_destroy(&r);

    r = s_run("doubles", "b9", "{\"jobs\": [{\"n\": 1}, {\"n\": -1}, {\"n\": 3}]}");
    ck_assert(!r->success);
    json_t *d = s_details(r->error);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "position")), 1);
    ck_assert_ptr_nonnull(strstr(r->error->message, "payload 1"));
    json_decref(d);
    am2z_result_destroy(&r);
}
END_TEST

START_TEST(test_local_nested_composites_order_example)
{
    /* route -> chain -> parallel, with the order example's shape */
    const char *fulfil[] = { "set-x", "set-y", "append-a" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "fulfil", .kind = AM2Z_COMPOSITE_PARALLEL,
                                        .steps = fulfil, .nsteps = 3 });
    const char *order[] = { "add1", "add1", "add1", "fulfil" };
    s_reg_comp(&(am2z_composite_def_t){ .name = "order", .kind = AM2Z_COMPOSITE_CHAIN,
                                        .steps = order, .nsteps = 4 });
    const am2z_route_t routes[] = { { "web", "order" } };
    s_reg_comp(&(am2z_composite_def_t){ .name = "entry", .kind = AM2Z_COMPOSITE_ROUTE,
                                        .selector_path = "channel", .routes = routes,
                                        .nroutes = 1 });
    am2z_result_t *r = s_run("entry", "n1", "{\"channel\": \"web\", \"count\": 0}");
    ck_assert_msg(r->success, "%s", r->error ? r->error->message : "");
    ck_assert_int_eq(s_count_of(r->state), 3);
    ck_assert(am2z_state_has(r->state, "x") && am2z_state_has(r->state, "y"));
    ck_assert(am2z_state_has(r->state, "items.0"));
    ck_assert_uint_eq(am2z_state_version(r->state), 1 + 4);
    am2z_result_destroy(&r);
}
END_TEST

START_TEST(test_local_nested_calls_and_depth_limit)
{
    am2z_result_t *r = s_run("parent", "n2", "{\"count\": 5}");
    ck_assert(r->success);
    ck_assert_int_eq(s_count_of(r->state), 20);
    /* the children's results were the parent's to use: one version step */
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);

    r = s_run("recurse", "n3", "{\"target\": 50}");
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_CALL_DEPTH_EXCEEDED);
    am2z_result_destroy(&r);

    am2z_local_set_max_depth(s_rt, 25);
    r = s_run("recurse", "n4", "{\"target\": 20}");
    ck_assert_msg(r->success, "%s", r->error ? r->error->message : "");
    int64_t reached = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "reached", &reached), AM2Z_OK);
    ck_assert_int_eq(reached, 20);
    am2z_result_destroy(&r);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("local");
    TCase *tc = tcase_create("local");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_add_test(tc, test_local_processor_and_session_state);
    tcase_add_test(tc, test_local_retries_follow_the_policy);
    tcase_add_test(tc, test_local_chain_runs_steps_in_order);
    tcase_add_test(tc, test_local_parallel_merges_branches);
    tcase_add_test(tc, test_local_route_by_path_selector_and_fallback);
    tcase_add_test(tc, test_local_batch_runs_payloads_in_their_sessions);
    tcase_add_test(tc, test_local_nested_composites_order_example);
    tcase_add_test(tc, test_local_nested_calls_and_depth_limit);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
