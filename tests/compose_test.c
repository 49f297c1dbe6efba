/*  compose_test.c — Check suite "compose": composites (chain, parallel,
    route, batch, nesting) run by the broker as durable workflow runs, with
    the real am2z-broker and am2z-example-worker on 127.0.0.1 ephemeral
    ports.

    am2z-example-worker announces the example composites
    (am2z_example_composites) in its READY; the broker runs them and leases
    their steps back to it. Every wait is bounded and waits for what it
    needs.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_codec.h"
#include "am2z_examples.h"
#include "am2z_json.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <czmq.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*  Starts the broker alone (on env->dir; on the fixed endpoints when set). */
static void
s_start_broker(am2z_cluster_t *env, const char *tag, const char *depth)
{
    const char *extra[] = { "--max-call-depth", depth, NULL };
    am2z_cluster_start_broker(env, tag, extra);
}

/*  The broker, then one worker, waited for until its processors and the
    composites it announces in its READY are known. */
static void
s_start_with(am2z_cluster_t *env, const char *tag, const char *depth)
{
    s_start_broker(env, tag, depth);
    am2z_cluster_add_worker(env, NULL);
    am2z_cluster_wait_processor(env, "tick");
    am2z_cluster_wait_processor(env, "calc");   /* announced in the worker's READY */
}

static void
s_start(am2z_cluster_t *env, const char *tag)
{
    s_start_with(env, tag, "10");
}

/*  A version-1 state of `session` with the user keys of a JSON object. */
static am2z_state_t *
s_state(const char *session, const char *json)
{
    uint8_t *map = NULL;
    size_t size = 0;
    char err[256];
    ck_assert_int_eq(am2z_json_parse_to_msgpack(json, &map, &size, err, sizeof err), AM2Z_OK);
    am2z_state_t *st = NULL, *v1 = NULL;
    ck_assert_int_eq(am2z_state_from_map(session, map, size, am2z_clock_wall_ms(), &st), AM2Z_OK);
    ck_assert_int_eq(am2z_state_with_metadata(st, session, 1, am2z_state_created_at(st),
                                              am2z_state_last_updated(st), &v1), AM2Z_OK);
    am2z_state_destroy(&st);
    free(map);
    return v1;
}

/*  The value at path as JSON text (caller frees). */
static char *
s_json_at(const am2z_state_t *st, const char *path)
{
    uint8_t *raw = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_state_get_raw(st, path, &raw, &size), AM2Z_OK);
    char *text = NULL;
    ck_assert_int_eq(am2z_json_dumps_msgpack(raw, size, JSON_COMPACT, &text), AM2Z_OK);
    free(raw);
    return text;
}

static int64_t
s_int_at(const am2z_state_t *st, const char *path)
{
    int64_t v = 0;
    ck_assert_int_eq(am2z_state_get_int(st, path, &v), AM2Z_OK);
    return v;
}

/*  A failed result's error details as JSON (caller decrefs). */
static json_t *
s_details(const am2z_result_t *r)
{
    ck_assert(!r->success);
    ck_assert_ptr_nonnull(r->error);
    ck_assert_ptr_nonnull(r->error->details);
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(r->error->details, r->error->details_size, &j),
                     AM2Z_OK);
    return j;
}

/*  Events of this client's jobs. */
typedef struct {
    struct {
        char name[64];
        char data[256];
    } ev[128];
    int count;
} s_log_t;

static void
s_record(const am2z_event_t *ev, void *arg)
{
    s_log_t *log = arg;
    if (log->count >= 128)
        return;
    snprintf(log->ev[log->count].name, sizeof log->ev[0].name, "%s", ev->name);
    char *text = NULL;
    if (ev->data && am2z_json_dumps_msgpack(ev->data, ev->data_size, JSON_COMPACT, &text)
        == AM2Z_OK)
        snprintf(log->ev[log->count].data, sizeof log->ev[0].data, "%s", text);
    free(text);
    log->count++;
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

static const char *
s_data_of(const s_log_t *log, const char *name, int nth)
{
    for (int i = 0; i < log->count; i++)
        if (strcmp(log->ev[i].name, name) == 0 && nth-- == 0)
            return log->ev[i].data;
    ck_abort_msg("no event %s", name);
    return NULL;
}

static am2z_result_t *
s_exec(am2z_client_t *c, const char *name, const char *session, const char *json)
{
    am2z_state_t *st = json ? s_state(session, json) : NULL;
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, name, st, session, NULL, &r), AM2Z_OK);
    ck_assert_ptr_nonnull(r);
    am2z_state_destroy(&st);
    return r;
}

/* ---------------------------------------------------------------------------
   Chain
   ------------------------------------------------------------------------ */

START_TEST(test_compose_chain_runs_steps_in_order_one_version_each)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-chain");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);
    am2z_result_t *r = s_exec(c, "calc", "chain-1", "{\"count\": 5}");
    ck_assert_msg(r->success, "calc failed: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "count"), 22);          /* (5 + 1) * 2 + 10 */
    ck_assert_uint_eq(am2z_state_version(r->state), 1 + 3);
    ck_assert_str_eq(r->processor, "calc");
    am2z_result_destroy(&r);
    /* the session's state was written once, by the run */
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "chain-1", &stored), AM2Z_OK);
    ck_assert_int_eq(s_int_at(stored, "count"), 22);
    ck_assert_uint_eq(am2z_state_version(stored), 4);
    am2z_state_destroy(&stored);
    ck_assert_int_eq(s_count_named(&log, "workflow:started"), 1);
    ck_assert_int_eq(s_count_named(&log, "workflow:completed"), 1);
    ck_assert_int_eq(s_count_named(&log, "processor:completed"), 3);
    ck_assert_str_eq(s_data_of(&log, "processor:completed", 1),
                     "{\"composite\":\"calc\",\"step\":\"double\",\"position\":2,\"total\":3,"
                     "\"stepCompleted\":true}");
    /* the steps' own events reach the caller too */
    ck_assert_int_ge(s_count_named(&log, "processor:active"), 3);
    /* a composite continues from the stored state like any processor */
    r = s_exec(c, "calc", "chain-1", NULL);
    ck_assert(r->success);
    ck_assert_int_eq(s_int_at(r->state, "count"), 56);
    ck_assert_uint_eq(am2z_state_version(r->state), 7);
    am2z_result_destroy(&r);

    /* execute_many: one result per state, in order */
    am2z_state_t *many[2] = { s_state("chain-m", "{\"count\": 0}"), NULL };
    am2z_result_t *rs[2] = { NULL, NULL };
    ck_assert_int_eq(am2z_client_execute_many(c, "calc", (const am2z_state_t *const *)many, 2,
                                              "chain-m", rs), AM2Z_OK);
    ck_assert(rs[0]->success && rs[1]->success);
    ck_assert_int_eq(s_int_at(rs[0]->state, "count"), 12);
    ck_assert_int_eq(s_int_at(rs[1]->state, "count"), 36);
    am2z_result_destroy(&rs[0]);
    am2z_result_destroy(&rs[1]);
    am2z_state_destroy(&many[0]);

    /* the CLI executes a composite like a processor */
    static char out[65536];
    char *argv[] = { AM2Z_BIN, "execute", "calc", "--session", "chain-cli", "--state",
                     "{\"count\": 1}", "--broker", env.frontend, NULL };
    ck_assert_int_eq(am2z_testproc_run(argv, out, sizeof out, 20000), 0);
    json_error_t jerr;
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, &jerr);
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    ck_assert(json_is_true(json_object_get(j, "success")));
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "state"), "count")),
                     14);
    json_decref(j);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_compose_chain_failure_names_step_position_and_partial_state)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-chain-fail");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "workflow:", s_record, &log), AM2Z_OK);
    am2z_result_t *r = s_exec(c, "calc-fail", "chain-2", "{\"count\": 5}");
    ck_assert(!r->success);
    ck_assert_ptr_nonnull(strstr(r->error->message, "chain 'calc-fail' failed at step 2 (fail)"));
    json_t *d = s_details(r);
    ck_assert_str_eq(json_string_value(json_object_get(d, "step")), "fail");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "position")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "completedSteps")), 1);
    json_t *partial = json_object_get(d, "partialState");
    ck_assert_int_eq(json_integer_value(json_object_get(partial, "count")), 6);
    json_decref(d);
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count_named(&log, "workflow:failed"), 1);
    /* failed for good: a dead letter, like any job */
    am2z_dlq_list_t *dl = NULL;
    ck_assert_int_eq(am2z_client_dlq_list(c, "calc-fail", NULL, &dl), AM2Z_OK);
    ck_assert_uint_eq(dl->count, 1);
    am2z_dlq_list_destroy(&dl);
    /* nothing was written: the session has no state */
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(c, "chain-2", &stored), AM2Z_ENOTFOUND);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Parallel
   ------------------------------------------------------------------------ */

START_TEST(test_compose_parallel_merges_branches_conflicts_strict_and_merge_processor)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-par");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "", s_record, &log), AM2Z_OK);

    am2z_result_t *r = s_exec(c, "abc", "par-1", "{\"items\": [\"x\"]}");
    ck_assert_msg(r->success, "abc: %s", r->error ? r->error->message : "?");
    char *items = s_json_at(r->state, "items");
    ck_assert_str_eq(items, "[\"x\",\"A\",\"B\",\"C\"]");       /* branch order */
    free(items);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);           /* one step */
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count_named(&log, "processor:completed"), 3);

    /* a scalar conflict: the later branch wins, one merge:conflict */
    log.count = 0;
    r = s_exec(c, "status-race", "par-2", "{\"status\": \"new\"}");
    ck_assert(r->success);
    char status[16];
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "status", status, sizeof status), AM2Z_OK);
    ck_assert_str_eq(status, "b");
    am2z_result_destroy(&r);
    ck_assert_int_eq(s_count_named(&log, "merge:conflict"), 1);
    ck_assert_str_eq(s_data_of(&log, "merge:conflict", 0),
                     "{\"path\":\"status\",\"winner\":1,\"strict\":false}");

    /* strict: the conflict fails the run */
    r = s_exec(c, "status-strict", "par-3", "{\"status\": \"new\"}");
    ck_assert(!r->success);
    ck_assert_str_eq(r->error->code, "MERGE_CONFLICT");
    am2z_result_destroy(&r);

    /* a merge processor replaces the three-way merge; $branches is gone */
    r = s_exec(c, "ab-merged", "par-4", "{\"items\": []}");
    ck_assert_msg(r->success, "ab-merged: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "mergedBranches"), 2);
    am2z_vtype_t type;
    ck_assert_int_eq(am2z_state_type(r->state, "$branches", &type), AM2Z_ENOTFOUND);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Route
   ------------------------------------------------------------------------ */

START_TEST(test_compose_route_by_path_selector_fallback_and_no_route)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-route");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    char by[32];

    am2z_result_t *r = s_exec(c, "tier-route", "route-1", "{\"tier\": \"premium\"}");
    ck_assert_msg(r->success, "tier-route: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "handledBy", by, sizeof by), AM2Z_OK);
    ck_assert_str_eq(by, "premium");
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);

    r = s_exec(c, "tier-route", "route-2", "{\"tier\": \"gold\"}");
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_VALIDATION);
    ck_assert_ptr_nonnull(strstr(r->error->message, "no route for gold"));
    am2z_result_destroy(&r);

    /* the selector processor picks the key (DONE.select) */
    r = s_exec(c, "tier-select", "route-3", "{\"tier\": \"premium\"}");
    ck_assert_msg(r->success, "tier-select: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "handledBy", by, sizeof by), AM2Z_OK);
    ck_assert_str_eq(by, "premium");
    am2z_result_destroy(&r);

    /* an unknown key goes to the fallback */
    r = s_exec(c, "tier-select", "route-4", "{\"tier\": \"gold\"}");
    ck_assert(r->success);
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "handledBy", by, sizeof by), AM2Z_OK);
    ck_assert_str_eq(by, "basic");
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Batch
   ------------------------------------------------------------------------ */

START_TEST(test_compose_batch_runs_payloads_in_their_sessions_in_order)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-batch");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    /* b-2 already has state: its payload runs on it */
    am2z_result_t *r = s_exec(c, "increment", "b-2", "{\"count\": 40}");
    ck_assert(r->success);
    am2z_result_destroy(&r);

    r = s_exec(c, "bump-all", "batch-1",
               "{\"payloads\": [{\"sessionId\": \"b-1\"}, {\"sessionId\": \"b-2\"},"
               " {\"sessionId\": \"b-3\", \"count\": 7}]}");
    ck_assert_msg(r->success, "bump-all: %s", r->error ? r->error->message : "?");
    char *summary = s_json_at(r->state, "$batch");
    ck_assert_str_eq(summary,
                     "[{\"index\":0,\"sessionId\":\"b-1\",\"success\":true,\"version\":2},"
                     "{\"index\":1,\"sessionId\":\"b-2\",\"success\":true,\"version\":3},"
                     "{\"index\":2,\"sessionId\":\"b-3\",\"success\":true,\"version\":2}]");
    free(summary);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    const char *sessions[] = { "b-1", "b-2", "b-3" };
    const int64_t counts[] = { 1, 42, 8 };
    for (int i = 0; i < 3; i++) {
        am2z_state_t *st = NULL;
        ck_assert_int_eq(am2z_client_get_state(c, sessions[i], &st), AM2Z_OK);
        ck_assert_int_eq(s_int_at(st, "count"), counts[i]);
        am2z_state_destroy(&st);
    }

    /* a failing payload fails the run; its index is named */
    r = s_exec(c, "bump-all", "batch-2",
               "{\"payloads\": [{\"sessionId\": \"b-4\"}, {\"sessionId\": \"b-5\", \"bad\": true},"
               " {\"sessionId\": \"b-6\"}]}");
    ck_assert(!r->success);
    json_t *d = s_details(r);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "position")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(d, "step")), "bump");
    json_decref(d);
    ck_assert_ptr_nonnull(strstr(r->error->message, "batch 'bump-all' failed at payload 1"));
    am2z_result_destroy(&r);

    /* payloads of the caller's own session are merged into its result */
    r = s_exec(c, "bump-all", "batch-3", "{\"count\": 1, \"payloads\": [{}, {\"x\": 1}]}");
    ck_assert_msg(r->success, "own payloads: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "count"), 2);
    ck_assert_int_eq(s_int_at(r->state, "x"), 1);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Nesting
   ------------------------------------------------------------------------ */

#define S_ORDER "{\"kind\": \"order\", \"order\": {\"id\": \"o-1\", \"items\": " \
    "[{\"sku\": \"a\", \"qty\": 2, \"price\": 5}], \"customer\": {\"email\": \"a@b.io\"}}}"

START_TEST(test_compose_nested_parallel_in_chain_in_route)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-nest");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "workflow:", s_record, &log), AM2Z_OK);
    am2z_result_t *r = s_exec(c, "kind-route", "nest-1", S_ORDER);
    ck_assert_msg(r->success, "kind-route: %s", r->error ? r->error->message : "?");
    char buf[64];
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "payment.status", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "paid");
    ck_assert_int_eq(am2z_state_get_strcpy(r->state, "shipment.trackingNumber", buf, sizeof buf),
                     AM2Z_OK);
    bool yes = false;
    ck_assert_int_eq(am2z_state_get_bool(r->state, "confirmation.sent", &yes), AM2Z_OK);
    ck_assert(yes);
    ck_assert_int_eq(am2z_state_get_bool(r->state, "inventory.updated", &yes), AM2Z_OK);
    ck_assert(yes);
    /* 3 chain steps + 1 for the parallel step */
    ck_assert_uint_eq(am2z_state_version(r->state), 1 + 4);
    am2z_result_destroy(&r);
    /* route, chain and parallel each started and completed */
    ck_assert_int_eq(s_count_named(&log, "workflow:started"), 3);
    ck_assert_int_eq(s_count_named(&log, "workflow:completed"), 3);

    /* the order example directly */
    r = s_exec(c, "process-order", "nest-2", S_ORDER);
    ck_assert(r->success);
    ck_assert_uint_eq(am2z_state_version(r->state), 5);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Durability
   ------------------------------------------------------------------------ */

/*  Lets the client take in the events of its jobs (they are handed over
    while it waits: here on `id`, which must not finish meanwhile) until
    *n reaches want; bounded by a monotonic deadline. */
static void
s_events_until(am2z_client_t *c, const char *id, const int *n, int want, uint64_t timeout_ms)
{
    uint64_t deadline = am2z_clock_mono_us() + timeout_ms * 1000;
    while (*n < want && am2z_clock_mono_us() < deadline) {
        am2z_result_t *r = NULL;
        int rc = am2z_client_wait(c, id, 50, &r);
        ck_assert_msg(rc == AM2Z_ETIMEOUT, "job %s ended while waiting for its events (%s)",
                      id, am2z_strerror(rc));
    }
    ck_assert_msg(*n >= want, "job %s: %d of %d events", id, *n, want);
}

/*  What the broker-wide feed shows of one run's session after a restart:
    step leases, the positions of the steps that finished, the end of the
    run; and whether the warm-up stop's session:cleanup arrived. */
typedef struct {
    const char *session;          /* the run's */
    const char *warm;             /* the warm-up stop's */
    bool warmed;
    int leases;                   /* processor:active */
    int positions[16];            /* processor:completed position, in order */
    int done;
    bool over;                    /* workflow:completed */
} s_feed_t;

static void
s_on_feed(const am2z_event_t *ev, void *arg)
{
    s_feed_t *f = arg;
    if (strcmp(ev->name, "session:cleanup") == 0 && strcmp(ev->session_id, f->warm) == 0)
        f->warmed = true;
    if (strcmp(ev->session_id, f->session) != 0)
        return;
    if (strcmp(ev->name, "processor:active") == 0) {
        f->leases++;
    } else if (strcmp(ev->name, "processor:completed") == 0) {
        ck_assert_int_lt(f->done, 16);
        json_t *j = NULL;
        ck_assert_ptr_nonnull(ev->data);
        ck_assert_int_eq(am2z_json_from_msgpack(ev->data, ev->data_size, &j), AM2Z_OK);
        json_t *pos = json_object_get(j, "position");
        ck_assert_msg(json_is_integer(pos), "processor:completed without a position");
        f->positions[f->done++] = (int)json_integer_value(pos);
        json_decref(j);
    } else if (strcmp(ev->name, "workflow:completed") == 0) {
        f->over = true;
    }
}

/*  A SUB socket joins late (ZeroMQ's slow joiner): stop an unknown session
    (that needs no worker, and publishes session:cleanup) until the feed
    shows it, so the feed is known to be live. Bounded. */
static void
s_warm_feed(am2z_client_t *c, am2z_events_t *feed, s_feed_t *f)
{
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000 * 1000;
    while (!f->warmed && am2z_clock_mono_us() < deadline) {
        ck_assert_int_eq(am2z_client_stop_session(c, f->warm, false), AM2Z_OK);
        for (int k = 0; k < 4 && !f->warmed; k++)
            am2z_events_next(feed, 50, s_on_feed, f);
    }
    ck_assert_msg(f->warmed, "the event feed never delivered");
}

START_TEST(test_compose_broker_sigkill_mid_chain_resumes_from_last_step)
{
    am2z_cluster_t env = { 0 };
    am2z_cluster_pick_ports(&env);          /* a restart binds the same ports */
    s_start(&env, "cmp-kill");
    pid_t worker = env.worker[0].pid;
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    s_log_t log = { 0 };
    ck_assert_int_eq(am2z_client_on_event(c, "processor:completed", s_record, &log), AM2Z_OK);
    am2z_state_t *st = s_state("kill-1", "{\"ms\": 500, \"steps\": 0}");
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "ticks", st, "kill-1", NULL, id), AM2Z_OK);
    /* two steps done; then the worker is frozen (SIGSTOP), so the chain
       cannot finish, nor the worker reconnect before the feed below is
       live */
    s_events_until(c, id, &log.count, 2, 15000);
    ck_assert_int_eq(kill(worker, SIGSTOP), 0);
    /* a QUERY is answered after the commit of every turn before it: the
       record of the steps whose events arrived is stored by now */
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_client_query(c, "job", id, &data, &size), AM2Z_OK);
    free(data);
    ck_assert_int_lt(log.count, 5);         /* mid-chain */
    am2z_client_destroy(&c);
    am2z_cluster_kill_broker(&env);

    /* same data dir, same ports: the composite is known again before the
       worker reconnects, and the run resumes from its record once the
       worker serves its steps again */
    s_start_broker(&env, "cmp-kill", "10");
    s_feed_t f = { .session = "kill-1", .warm = "warm-up" };
    am2z_events_t *feed = NULL;
    ck_assert_int_eq(am2z_events_subscribe(env.events, "", NULL, &feed), AM2Z_OK);
    c = am2z_cluster_client(&env, 15000);
    s_warm_feed(c, feed, &f);
    ck_assert_int_eq(f.leases, 0);          /* nothing could run without the worker */
    ck_assert_int_eq(kill(worker, SIGCONT), 0);
    /* every event of the resumed run, up to its end (PUB keeps their order) */
    uint64_t deadline = am2z_clock_mono_us() + 20 * 1000 * 1000;
    while (!f.over && am2z_clock_mono_us() < deadline)
        am2z_events_next(feed, 100, s_on_feed, &f);
    ck_assert_msg(f.over, "the resumed run never completed");
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_wait(c, id, 15000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "resumed run failed: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "steps"), 5);          /* as if each ran once */
    ck_assert_uint_eq(am2z_state_version(r->state), 1 + 5);
    am2z_result_destroy(&r);
    /* resumed, not restarted: the two finished steps did not run again;
       only the rest ran, each once, in order, up to the last */
    ck_assert_int_ge(f.leases, 1);
    ck_assert_int_le(f.leases, 3);
    ck_assert_int_eq(f.done, f.leases);
    for (int i = 0; i < f.done; i++)
        ck_assert_int_eq(f.positions[i], 5 - f.done + 1 + i);
    am2z_events_destroy(&feed);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/*  Counts (arg: int) the processor:active events of session "stop-1". */
static void
s_on_stop1_active(const am2z_event_t *ev, void *arg)
{
    if (strcmp(ev->name, "processor:active") == 0 && strcmp(ev->session_id, "stop-1") == 0)
        (*(int *)arg)++;
}

START_TEST(test_compose_timeout_bounds_the_run_and_stop_session_ends_it)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-stop");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    /* the SUBMIT's timeout bounds the whole run (5 x 200 ms), not each step */
    am2z_state_t *st = s_state("to-1", "{\"ms\": 200, \"steps\": 0}");
    am2z_submit_opts_t opts = { .timeout_ms = 500 };
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "ticks", st, "to-1", &opts, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_TIMEOUT);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);

    /* stopping the session ends a running run; the session is free again */
    int active = 0;
    ck_assert_int_eq(am2z_client_on_event(c, "processor:active", s_on_stop1_active, &active),
                     AM2Z_OK);
    st = s_state("stop-1", "{\"ms\": 300, \"steps\": 0}");
    char id[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(c, "ticks", st, "stop-1", NULL, id), AM2Z_OK);
    s_events_until(c, id, &active, 1, 15000);      /* its first step is leased */
    ck_assert_int_eq(am2z_client_stop_session(c, "stop-1", false), AM2Z_OK);
    ck_assert_int_eq(am2z_client_wait(c, id, 5000, &r), AM2Z_OK);
    ck_assert(!r->success);
    ck_assert_str_eq(r->error->code, "SESSION_STOPPED");
    am2z_result_destroy(&r);
    r = s_exec(c, "calc", "stop-1", "{\"count\": 1}");
    ck_assert_msg(r->success, "after stop: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "count"), 14);
    am2z_result_destroy(&r);
    am2z_state_destroy(&st);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

/* ---------------------------------------------------------------------------
   Nested calls (am2z_ctx_call through the broker)
   ------------------------------------------------------------------------ */

START_TEST(test_compose_ctx_call_runs_callee_in_the_callers_session)
{
    am2z_cluster_t env = { 0 };
    s_start(&env, "cmp-call");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    am2z_result_t *r = s_exec(c, "call-double-twice", "call-1", "{\"count\": 5}");
    ck_assert_msg(r->success, "call-double-twice: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "count"), 20);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);   /* the callees write nothing */
    am2z_result_destroy(&r);
    /* a composite can be called too: a run of its own, answered to the caller */
    r = s_exec(c, "call-calc", "call-4", "{\"count\": 5}");
    ck_assert_msg(r->success, "call-calc: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "count"), 22);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);
    /* beyond max-call-depth (10) a call fails at once: CallDepthExceeded */
    r = s_exec(c, "recurse", "call-2", "{\"n\": 15}");
    ck_assert(!r->success);
    ck_assert_int_eq(r->error->kind, AM2Z_KIND_CALL_DEPTH_EXCEEDED);
    am2z_result_destroy(&r);
    r = s_exec(c, "recurse", "call-3", "{\"n\": 10}");
    ck_assert_msg(r->success, "recurse 10: %s", r->error ? r->error->message : "?");
    ck_assert_int_eq(s_int_at(r->state, "depth"), 10);
    am2z_result_destroy(&r);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

START_TEST(test_compose_ctx_call_recursion_20_deep_with_concurrency_2)
{
    am2z_cluster_t env = { 0 };
    s_start_with(&env, "cmp-deep", "25");
    am2z_client_t *c = am2z_cluster_client(&env, 15000);
    /* two at once: 42 callers waiting, each callee on an extra actor. Both
       are sent together (submit_many batches them), so the broker has both
       when it leases to the two slots of recurse */
    am2z_state_t *a = s_state("deep-1", "{\"n\": 20}");
    am2z_state_t *b = s_state("deep-2", "{\"n\": 20}");
    const am2z_state_t *states[2] = { a, b };
    const char *sessions[2] = { "deep-1", "deep-2" };
    char ids[2][AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit_many(c, "recurse", states, sessions, 2, ids), AM2Z_OK);
    ck_assert_msg(ids[0][0] && ids[1][0], "refused: %s", am2z_client_last_error(c));
    uint64_t start[2], end[2];
    for (int i = 0; i < 2; i++) {
        am2z_result_t *r = NULL;
        ck_assert_int_eq(am2z_client_wait(c, ids[i], 15000, &r), AM2Z_OK);
        ck_assert_msg(r->success, "recurse 20: %s", r->error ? r->error->message : "?");
        ck_assert_int_eq(s_int_at(r->state, "depth"), 20);
        /* the top-level run on the worker's clock, [start, start + exec]
           rounded inwards to whole ms (start is a floor already) */
        start[i] = r->started_at_ms;
        end[i] = r->started_at_ms + r->exec_us / 1000;
        am2z_result_destroy(&r);
    }
    /* they ran at the same time: each started before the other ended */
    ck_assert_msg(start[0] < end[1] && start[1] < end[0],
                  "not concurrent: [%llu, %llu] and [%llu, %llu]",
                  (unsigned long long)start[0], (unsigned long long)end[0],
                  (unsigned long long)start[1], (unsigned long long)end[1]);
    am2z_state_destroy(&a);
    am2z_state_destroy(&b);
    am2z_client_destroy(&c);
    am2z_cluster_stop(&env);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("compose");
    TCase *tc = tcase_create("broker+worker per case");
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, test_compose_chain_runs_steps_in_order_one_version_each);
    tcase_add_test(tc, test_compose_chain_failure_names_step_position_and_partial_state);
    tcase_add_test(tc, test_compose_parallel_merges_branches_conflicts_strict_and_merge_processor);
    tcase_add_test(tc, test_compose_route_by_path_selector_fallback_and_no_route);
    tcase_add_test(tc, test_compose_batch_runs_payloads_in_their_sessions_in_order);
    tcase_add_test(tc, test_compose_nested_parallel_in_chain_in_route);
    tcase_add_test(tc, test_compose_broker_sigkill_mid_chain_resumes_from_last_step);
    tcase_add_test(tc, test_compose_timeout_bounds_the_run_and_stop_session_ends_it);
    tcase_add_test(tc, test_compose_ctx_call_runs_callee_in_the_callers_session);
    tcase_add_test(tc, test_compose_ctx_call_recursion_20_deep_with_concurrency_2);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
