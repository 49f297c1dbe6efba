/*  examples_test.c — Check suite "examples": every example processor run
    through a real worker, with the test playing the broker
    (am2z_fakebroker). Every wait is bounded. */
#include "am2z_clock.h"
#include "am2z_codec.h"
#include "am2z_examples.h"
#include "am2z_fakebroker.h"
#include "am2z_testutil.h"
#include "am2z_worker.h"

#include <czmq.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 5000

/* ---------------------------------------------------------------------------
   Harness
   ------------------------------------------------------------------------ */

typedef struct {
    am2z_fakebroker_t *fb;
    am2z_worker_t *w;
} s_rig_t;

static s_rig_t
s_rig(void)
{
    s_rig_t r;
    r.fb = am2z_fakebroker_new();
    am2z_worker_config_t cfg;
    am2z_worker_config_defaults(&cfg);
    snprintf(cfg.broker, sizeof cfg.broker, "%s", am2z_fakebroker_endpoint(r.fb));
    cfg.liveness = 100;
    cfg.log_level = AM2Z_LOG_WARN;
    r.w = am2z_worker_new(&cfg);
    ck_assert_ptr_nonnull(r.w);
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(am2z_worker_register(r.w, &defs[i]), AM2Z_OK);
    ck_assert_int_eq(am2z_worker_start(r.w), AM2Z_OK);
    am2z_msg_t ready;
    am2z_fakebroker_expect(r.fb, AM2Z_CMD_READY, &ready, WAIT_MS);
    ck_assert_uint_eq(ready.nprocs, n);
    am2z_msg_clear(&ready);
    return r;
}

static void
s_unrig(s_rig_t *r)
{
    am2z_worker_destroy(&r->w);
    am2z_fakebroker_destroy(&r->fb);
}

/*  Runs `proc` on `input` (attempt given) and returns its DONE (caller
    clears). Events of the job go into events when given. */
static void
s_run(s_rig_t *r, const char *proc, const am2z_state_t *input, uint32_t attempt,
      am2z_msg_t *done, am2z_msg_t *events, size_t max, size_t *nevents)
{
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r->fb, proc, input, attempt, 0, id);
    am2z_fakebroker_wait_done(r->fb, id, done, events, max, nevents, WAIT_MS);
}

/*  The DONE's next state (must be a success). Caller owns it. */
static am2z_state_t *
s_next(const am2z_msg_t *done)
{
    ck_assert_msg(done->success, "job failed: %s",
                  done->error ? done->error->message : "?");
    am2z_state_t *next = NULL;
    ck_assert_int_eq(am2z_state_decode(done->state, done->state_size, &next), AM2Z_OK);
    return next;
}

/*  Runs proc on input and returns the next state; the input is kept. */
static am2z_state_t *
s_step(s_rig_t *r, const char *proc, const am2z_state_t *input)
{
    am2z_msg_t done;
    s_run(r, proc, input, 1, &done, NULL, 0, NULL);
    am2z_state_t *next = s_next(&done);
    ck_assert_uint_eq(am2z_state_version(next), am2z_state_version(input) + 1);
    am2z_msg_clear(&done);
    return next;
}

/*  Runs proc on input; it must fail. Returns the error (caller destroys). */
static am2z_error_t *
s_failure(s_rig_t *r, const char *proc, const am2z_state_t *input, uint32_t attempt)
{
    am2z_msg_t done;
    s_run(r, proc, input, attempt, &done, NULL, 0, NULL);
    ck_assert(!done.success);
    ck_assert_ptr_nonnull(done.error);
    am2z_error_t *e = done.error;
    done.error = NULL;
    am2z_msg_clear(&done);
    return e;
}

static bool
s_details_mention(const am2z_error_t *e, const char *text)
{
    return e->details && memmem(e->details, e->details_size, text, strlen(text));
}

static am2z_state_t *
s_state_str(const char *key, const char *value)
{
    am2z_changes_t *c = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_str(c, key, value), AM2Z_OK);
    return am2z_fakebroker_state("ex-1", &c);
}

static am2z_state_t *
s_state_int(const char *key, int64_t value)
{
    am2z_changes_t *c = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_int(c, key, value), AM2Z_OK);
    return am2z_fakebroker_state("ex-1", &c);
}

/*  msgpack of {sku, qty, price}, built through a scratch state. */
static void
s_append_item(am2z_changes_t *c, const char *sku, int64_t qty, double price)
{
    am2z_changes_t *ic = am2z_changes_new();
    am2z_changes_set_str(ic, "item.sku", sku);
    am2z_changes_set_int(ic, "item.qty", qty);
    am2z_changes_set_float(ic, "item.price", price);
    am2z_state_t *scratch = am2z_fakebroker_state("scratch", &ic);
    uint8_t *raw = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_state_get_raw(scratch, "item", &raw, &size), AM2Z_OK);
    ck_assert_int_eq(am2z_changes_append_raw(c, "order.items", raw, size), AM2Z_OK);
    free(raw);
    am2z_state_destroy(&scratch);
}

/*  The README order: two items (2 x 10.5 + 1 x 4.25 = 25.25). */
static am2z_state_t *
s_order(int64_t second_qty)
{
    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_str(c, "order.id", "ord-42");
    am2z_changes_set_str(c, "order.customer.email", "ann@example.com");
    s_append_item(c, "A-1", 2, 10.5);
    s_append_item(c, "B-2", second_qty, 4.25);
    return am2z_fakebroker_state("order-1", &c);
}

/* ---------------------------------------------------------------------------
   Cases
   ------------------------------------------------------------------------ */

START_TEST(test_examples_table_is_well_formed)
{
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    const char *expected[] = {
        "increment", "validate-email", "append", "sleep", "fail", "flaky", "emit",
        "validate-order", "check-inventory", "process-payment", "create-shipment",
        "send-confirmation", "update-inventory", "fail-retry", "backoff", "sleep-stubborn",
        "double", "add10", "append-a", "append-b", "append-c", "set-status-a", "set-status-b",
        "count-branches", "pick-tier", "tag-premium", "tag-basic", "bump", "tick",
        "call-double-twice", "call-calc", "recurse", "progress",
        "gate", "gate-urgent", "rated", "capped", "later",
    };
    /* every expected one, in this order; others may follow or sit between */
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof expected / sizeof expected[0]; i++)
        if (strcmp(defs[i].name, expected[k]) == 0)
            k++;
    ck_assert_uint_eq(k, sizeof expected / sizeof expected[0]);
    for (size_t i = 0; i < n; i++) {
        ck_assert(am2z_name_valid(defs[i].name, strlen(defs[i].name)));
        ck_assert_ptr_nonnull(defs[i].fn);
        ck_assert_ptr_nonnull(defs[i].description);
    }
    ck_assert_ptr_nonnull(am2z_example_processors(NULL));
    size_t nc = 0;
    const am2z_composite_def_t *comps = am2z_example_composites(&nc);
    ck_assert_uint_eq(nc, 16);     /* 15 + rated-chain (scheduling) */
    for (size_t i = 0; i < nc; i++) {
        char err[256] = "";
        ck_assert_msg(am2z_composite_validate(&comps[i], err, sizeof err) == AM2Z_OK,
                      "%s: %s", comps[i].name, err);
    }
}
END_TEST

START_TEST(test_example_increment_counts_and_says_so)
{
    s_rig_t r = s_rig();
    am2z_state_t *s0 = am2z_fakebroker_state("ex-1", NULL);   /* no count yet */
    am2z_state_t *s1 = s_step(&r, "increment", s0);
    am2z_state_t *s2 = s_step(&r, "increment", s1);
    int64_t n = 0;
    ck_assert_int_eq(am2z_state_get_int(s2, "count", &n), AM2Z_OK);
    ck_assert_int_eq(n, 2);
    char msg[64];
    ck_assert_int_eq(am2z_state_get_strcpy(s2, "message", msg, sizeof msg), AM2Z_OK);
    ck_assert_str_eq(msg, "Count is now 2");
    ck_assert_uint_eq(am2z_state_version(s2), 3);
    am2z_state_destroy(&s0);
    am2z_state_destroy(&s1);
    am2z_state_destroy(&s2);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_validate_email)
{
    s_rig_t r = s_rig();
    am2z_state_t *good = s_state_str("email", "ann@example.com");
    am2z_state_t *next = s_step(&r, "validate-email", good);
    bool valid = false;
    ck_assert_int_eq(am2z_state_get_bool(next, "emailValid", &valid), AM2Z_OK);
    ck_assert(valid);
    const char *bad[] = { "not-an-email", "@example.com", "ann@", "ann@example",
                          "a b@example.com", "ann@@example.com", "ann@example." };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        am2z_state_t *st = s_state_str("email", bad[i]);
        am2z_error_t *e = s_failure(&r, "validate-email", st, 1);
        ck_assert_msg(e->kind == AM2Z_KIND_VALIDATION, "%s accepted?", bad[i]);
        ck_assert(s_details_mention(e, "email"));
        am2z_error_destroy(&e);
        am2z_state_destroy(&st);
    }
    am2z_state_t *missing = am2z_fakebroker_state("ex-1", NULL);
    am2z_error_t *e = s_failure(&r, "validate-email", missing, 1);
    ck_assert_int_eq(e->category, AM2Z_CAT_VALIDATION);
    am2z_error_destroy(&e);
    am2z_state_destroy(&missing);
    am2z_state_destroy(&next);
    am2z_state_destroy(&good);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_append_grows_items)
{
    s_rig_t r = s_rig();
    am2z_state_t *s0 = s_state_int("value", 7);
    am2z_state_t *s1 = s_step(&r, "append", s0);
    am2z_state_t *s2 = s_step(&r, "append", s1);
    size_t count = 0;
    ck_assert_int_eq(am2z_state_get_count(s2, "items", &count), AM2Z_OK);
    ck_assert_uint_eq(count, 2);
    int64_t v = 0;
    ck_assert_int_eq(am2z_state_get_int(s2, "items.1", &v), AM2Z_OK);
    ck_assert_int_eq(v, 7);
    am2z_state_t *none = am2z_fakebroker_state("ex-1", NULL);
    am2z_error_t *e = s_failure(&r, "append", none, 1);
    ck_assert_int_eq(e->kind, AM2Z_KIND_VALIDATION);
    am2z_error_destroy(&e);
    am2z_state_destroy(&none);
    am2z_state_destroy(&s0);
    am2z_state_destroy(&s1);
    am2z_state_destroy(&s2);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_sleep_sleeps_and_honours_cancel)
{
    s_rig_t r = s_rig();
    am2z_state_t *short_sleep = s_state_int("ms", 30);
    am2z_msg_t done;
    s_run(&r, "sleep", short_sleep, 1, &done, NULL, 0, NULL);
    ck_assert_uint_ge(done.exec_us, 30000);
    am2z_state_t *next = s_next(&done);
    int64_t slept = 0;
    ck_assert_int_eq(am2z_state_get_int(next, "slept", &slept), AM2Z_OK);
    ck_assert_int_eq(slept, 30);
    am2z_msg_clear(&done);

    /*  JOB then CANCEL: the worker handles them in order, so the flag is
        set by the time (or soon after) the processor starts. The DONE
        within WAIT_MS, and CANCELLED, says it stopped early (uncancelled
        it sleeps 20 s and succeeds). */
    am2z_state_t *long_sleep = s_state_int("ms", 20000);
    char id[AM2Z_ID_LEN + 1];
    am2z_fakebroker_job(r.fb, "sleep", long_sleep, 1, 0, id);
    am2z_msg_t cancel;
    am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
    cancel.job = id;
    am2z_fakebroker_send(r.fb, &cancel);
    am2z_fakebroker_wait_done(r.fb, id, &done, NULL, 0, NULL, WAIT_MS);
    ck_assert(!done.success);
    ck_assert_str_eq(done.error->code, "CANCELLED");
    am2z_msg_clear(&done);
    am2z_state_destroy(&next);
    am2z_state_destroy(&short_sleep);
    am2z_state_destroy(&long_sleep);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_fail_uses_the_named_category)
{
    s_rig_t r = s_rig();
    const struct { const char *name; am2z_category_t cat; am2z_kind_t kind; } cases[] = {
        { "validation", AM2Z_CAT_VALIDATION, AM2Z_KIND_VALIDATION },
        { "business", AM2Z_CAT_BUSINESS, AM2Z_KIND_BUSINESS },
        { "execution", AM2Z_CAT_EXECUTION, AM2Z_KIND_PROCESSOR_EXECUTION },
        { "timeout", AM2Z_CAT_TIMEOUT, AM2Z_KIND_TIMEOUT },
        { "resource", AM2Z_CAT_RESOURCE, AM2Z_KIND_RESOURCE },
        { "network", AM2Z_CAT_NETWORK, AM2Z_KIND_NETWORK },
        { "configuration", AM2Z_CAT_CONFIGURATION, AM2Z_KIND_CONFIGURATION },
        { "conflict", AM2Z_CAT_CONFLICT, AM2Z_KIND_GENERIC },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        am2z_state_t *st = s_state_str("category", cases[i].name);
        am2z_error_t *e = s_failure(&r, "fail", st, 1);
        ck_assert_msg(e->category == cases[i].cat, "%s: got %s", cases[i].name,
                      am2z_category_name(e->category));
        ck_assert_int_eq(e->kind, cases[i].kind);
        ck_assert_int_eq(e->retryable, am2z_category_retryable(cases[i].cat));
        am2z_error_destroy(&e);
        am2z_state_destroy(&st);
    }
    am2z_state_t *st = s_state_str("category", "no-such-category");
    am2z_error_t *e = s_failure(&r, "fail", st, 1);
    ck_assert_int_eq(e->kind, AM2Z_KIND_VALIDATION);
    am2z_error_destroy(&e);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_flaky_fails_then_succeeds)
{
    s_rig_t r = s_rig();
    am2z_state_t *st = s_state_int("failures", 2);
    for (uint32_t attempt = 1; attempt <= 2; attempt++) {
        am2z_error_t *e = s_failure(&r, "flaky", st, attempt);
        ck_assert_int_eq(e->category, AM2Z_CAT_EXECUTION);
        ck_assert(e->retryable);
        am2z_error_destroy(&e);
    }
    am2z_msg_t done;
    s_run(&r, "flaky", st, 3, &done, NULL, 0, NULL);
    am2z_state_t *next = s_next(&done);
    int64_t attempts = 0;
    ck_assert_int_eq(am2z_state_get_int(next, "attempts", &attempts), AM2Z_OK);
    ck_assert_int_eq(attempts, 3);
    am2z_msg_clear(&done);
    am2z_state_destroy(&next);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_emit_sends_events_before_done)
{
    s_rig_t r = s_rig();
    am2z_state_t *st = am2z_fakebroker_state("ex-1", NULL);
    am2z_msg_t done, events[8];
    size_t n = 0;
    s_run(&r, "emit", st, 1, &done, events, 8, &n);
    ck_assert(done.success);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(events[0].name, "custom:one");
    ck_assert_str_eq(events[1].name, "custom:two");
    ck_assert_str_eq(events[2].name, "job:progress");
    const uint8_t one[] = { 0x81, 0xa1, 'n', 0x01 };
    ck_assert_uint_eq(events[0].data_size, sizeof one);
    ck_assert_mem_eq(events[0].data, one, sizeof one);
    const uint8_t fifty[] = { 0x81, 0xa8, 'p', 'r', 'o', 'g', 'r', 'e', 's', 's', 50 };
    ck_assert_uint_eq(events[2].data_size, sizeof fifty);
    ck_assert_mem_eq(events[2].data, fifty, sizeof fifty);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(events[i].seq, i + 1);
        am2z_msg_clear(&events[i]);
    }
    am2z_msg_clear(&done);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_order_flow_end_to_end)
{
    s_rig_t r = s_rig();
    const char *steps[] = { "validate-order", "check-inventory", "process-payment",
                            "create-shipment", "send-confirmation",
                            "update-inventory" };
    am2z_state_t *st = s_order(1);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        am2z_state_t *next = s_step(&r, steps[i], st);
        am2z_state_destroy(&st);
        st = next;
    }
    ck_assert_uint_eq(am2z_state_version(st), 7);
    char buf[64];
    bool b = false;
    double amount = 0;
    ck_assert_int_eq(am2z_state_get_strcpy(st, "order.status", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "validated");
    ck_assert_int_eq(am2z_state_get_bool(st, "inventory.reserved", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_strcpy(st, "payment.status", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "paid");
    ck_assert_int_eq(am2z_state_get_float(st, "payment.amount", &amount), AM2Z_OK);
    ck_assert_double_eq_tol(amount, 25.25, 1e-9);
    ck_assert_int_eq(am2z_state_get_strcpy(st, "shipment.trackingNumber", buf,
                                           sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "TRK-ord-42");
    ck_assert_int_eq(am2z_state_get_bool(st, "confirmation.sent", &b), AM2Z_OK);
    ck_assert(b);
    ck_assert_int_eq(am2z_state_get_bool(st, "inventory.updated", &b), AM2Z_OK);
    ck_assert(b);
    /*  the order itself is untouched */
    size_t items = 0;
    ck_assert_int_eq(am2z_state_get_count(st, "order.items", &items), AM2Z_OK);
    ck_assert_uint_eq(items, 2);
    am2z_state_destroy(&st);
    s_unrig(&r);
}
END_TEST

START_TEST(test_example_order_rejects_bad_orders)
{
    s_rig_t r = s_rig();
    /*  no items */
    am2z_changes_t *c = am2z_changes_new();
    am2z_changes_set_str(c, "order.id", "ord-1");
    am2z_state_t *no_items = am2z_fakebroker_state("order-2", &c);
    am2z_error_t *e = s_failure(&r, "validate-order", no_items, 1);
    ck_assert_int_eq(e->kind, AM2Z_KIND_VALIDATION);
    ck_assert(s_details_mention(e, "order.items"));
    am2z_error_destroy(&e);
    /*  no id */
    am2z_state_t *empty = am2z_fakebroker_state("order-2", NULL);
    e = s_failure(&r, "validate-order", empty, 1);
    ck_assert(s_details_mention(e, "order.id"));
    am2z_error_destroy(&e);
    /*  out of stock */
    am2z_state_t *big = s_order(101);
    e = s_failure(&r, "check-inventory", big, 1);
    ck_assert_int_eq(e->kind, AM2Z_KIND_BUSINESS);
    ck_assert_str_eq(e->code, "OUT_OF_STOCK");
    ck_assert(!e->retryable);
    ck_assert_ptr_nonnull(strstr(e->message, "B-2"));
    am2z_error_destroy(&e);
    am2z_state_destroy(&big);
    am2z_state_destroy(&empty);
    am2z_state_destroy(&no_items);
    s_unrig(&r);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("examples");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_examples_table_is_well_formed);
    tcase_add_test(tc, test_example_increment_counts_and_says_so);
    tcase_add_test(tc, test_example_validate_email);
    tcase_add_test(tc, test_example_append_grows_items);
    tcase_add_test(tc, test_example_sleep_sleeps_and_honours_cancel);
    tcase_add_test(tc, test_example_fail_uses_the_named_category);
    tcase_add_test(tc, test_example_flaky_fails_then_succeeds);
    tcase_add_test(tc, test_example_emit_sends_events_before_done);
    tcase_add_test(tc, test_example_order_flow_end_to_end);
    tcase_add_test(tc, test_example_order_rejects_bad_orders);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
