/*  am2z_examples.c — see am2z_examples.h.

    Each processor reads the input state, records changes and returns
    AM2Z_OK, or fails with a typed error through am2z_ctx_fail. A failing
    am2z_changes_* call (out of memory, bad path) is returned as is and
    becomes a ProcessorExecutionError naming the code.
*/
#include "am2z_examples.h"

#include "am2z_clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
   Basics
   ------------------------------------------------------------------------ */

static int
s_increment(am2z_ctx_t *ctx)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "count", &n);   /* missing = 0 */
    char message[64];
    snprintf(message, sizeof message, "Count is now %lld", (long long)(n + 1));
    int rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n + 1);
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_str(am2z_ctx_changes(ctx), "message", message);
    return rc;
}

/*  local@domain.tld: one '@', both sides non-empty, a '.' inside the
    domain (not first or last), no whitespace. Deliberately simple. */
static bool
s_looks_like_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@') || strpbrk(s, " \t\r\n"))
        return false;
    const char *domain = at + 1;
    const char *dot = strrchr(domain, '.');
    return dot && dot != domain && dot[1] != '\0';
}

static int
s_validate_email(am2z_ctx_t *ctx)
{
    char email[320];
    int rc = am2z_state_get_strcpy(am2z_ctx_state(ctx), "email", email,
                                   sizeof email);
    const char *reason = rc == AM2Z_OK ? (s_looks_like_email(email) ? NULL
                                          : "not a valid email address")
                       : rc == AM2Z_ENOTFOUND ? "email is required"
                       : "email must be a string of at most 319 bytes";
    if (reason) {
        am2z_error_t *e = am2z_error_validation("email",
                                                rc == AM2Z_OK ? email : NULL,
                                                reason);
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_bool(am2z_ctx_changes(ctx), "emailValid", true);
}

static int
s_append(am2z_ctx_t *ctx)
{
    uint8_t *value = NULL;
    size_t size = 0;
    if (am2z_state_get_raw(am2z_ctx_state(ctx), "value", &value, &size)
        != AM2Z_OK) {
        am2z_error_t *e = am2z_error_validation("value", NULL, "value is required");
        return am2z_ctx_fail(ctx, &e);
    }
    int rc = am2z_changes_append_raw(am2z_ctx_changes(ctx), "items", value, size);
    free(value);
    return rc;
}

static int
s_sleep(am2z_ctx_t *ctx)
{
    int64_t ms = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "ms", &ms);
    int64_t slept = 0;
    while (slept < ms) {
        if (am2z_ctx_cancelled(ctx)) {
            am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED",
                                             "sleep cancelled after %lld of %lld ms",
                                             (long long)slept, (long long)ms);
            return am2z_ctx_fail(ctx, &e);
        }
        int64_t step = ms - slept < 10 ? ms - slept : 10;
        nanosleep(&(struct timespec){ .tv_nsec = (long)step * 1000000L }, NULL);
        slept += step;
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "slept", slept);
}

/*  Like sleep, but never looks at the cancellation flag: a processor that
    overruns its lease, for the broker's lease-expiry path. */
static int
s_sleep_stubborn(am2z_ctx_t *ctx)
{
    int64_t ms = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "ms", &ms);
    if (ms > 0)
        nanosleep(&(struct timespec){ .tv_sec = ms / 1000,
                                      .tv_nsec = (long)(ms % 1000) * 1000000L }, NULL);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "slept", ms);
}

/*  The error of each category, built with its AM2Z kind where there is one. */
static am2z_error_t *
s_error_for(am2z_ctx_t *ctx, am2z_category_t category)
{
    const char *why = "failure requested by the job";
    switch (category) {
    case AM2Z_CAT_VALIDATION:
        return am2z_error_validation("category", "validation", why);
    case AM2Z_CAT_BUSINESS:
        return am2z_error_business("REQUESTED_FAILURE", why, NULL, 0);
    case AM2Z_CAT_EXECUTION:
        return am2z_error_execution(am2z_ctx_processor(ctx),
                                    am2z_ctx_execution_id(ctx), why);
    case AM2Z_CAT_TIMEOUT:
        return am2z_error_timeout("fail", 0);
    case AM2Z_CAT_RESOURCE:
        return am2z_error_resource("requested", 0, 0);
    case AM2Z_CAT_NETWORK:
        return am2z_error_network("none", why);
    case AM2Z_CAT_CONFIGURATION:
        return am2z_error_configuration("category", why);
    default:
        return am2z_error_new(category, "REQUESTED_FAILURE", "%s", why);
    }
}

static int
s_fail(am2z_ctx_t *ctx)
{
    char name[32] = "";
    am2z_category_t category;
    am2z_error_t *e;
    if (am2z_state_get_strcpy(am2z_ctx_state(ctx), "category", name, sizeof name)
            != AM2Z_OK
        || am2z_category_parse(name, &category) != AM2Z_OK)
        e = am2z_error_validation("category", name[0] ? name : NULL,
                                  "category must name an error category");
    else
        e = s_error_for(ctx, category);
    return am2z_ctx_fail(ctx, &e);
}

static int
s_flaky(am2z_ctx_t *ctx)
{
    int64_t failures = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "failures", &failures);
    uint32_t attempt = am2z_ctx_attempt(ctx);
    if ((int64_t)attempt <= failures) {
        char cause[64];
        snprintf(cause, sizeof cause, "flaky failure on attempt %u", attempt);
        am2z_error_t *e = am2z_error_execution(am2z_ctx_processor(ctx),
                                               am2z_ctx_execution_id(ctx), cause);
        if (e)
            am2z_error_set_retryable(e, true);
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "attempts", attempt);
}

/*  Always fails with a retryable execution error naming the attempt. */
static int
s_backoff(am2z_ctx_t *ctx)
{
    char cause[64];
    snprintf(cause, sizeof cause, "failure on attempt %u", am2z_ctx_attempt(ctx));
    am2z_error_t *e = am2z_error_execution(am2z_ctx_processor(ctx),
                                           am2z_ctx_execution_id(ctx), cause);
    return am2z_ctx_fail(ctx, &e);
}

static int
s_emit(am2z_ctx_t *ctx)
{
    static const uint8_t one[] = { 0x81, 0xa1, 'n', 0x01 };   /* {"n": 1} */
    static const uint8_t two[] = { 0x81, 0xa1, 'n', 0x02 };   /* {"n": 2} */
    int rc = am2z_ctx_emit(ctx, "custom:one", one, sizeof one);
    if (rc == AM2Z_OK)
        rc = am2z_ctx_emit(ctx, "custom:two", two, sizeof two);
    if (rc == AM2Z_OK)
        rc = am2z_ctx_progress(ctx, 50);
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "emitted", 3);
    return rc;
}

/*  Reports progress 25 and 50; then, when state.gate names a file, waits
    (10 ms steps, cancellable, at most state.waitMs, default 10000) until
    that file exists; then reports 75 and 100 and sets progress = 100. A
    test observes the job's status mid-run by holding the gate closed. */
static int
s_progress(am2z_ctx_t *ctx)
{
    int rc = am2z_ctx_progress(ctx, 25);
    if (rc == AM2Z_OK)
        rc = am2z_ctx_progress(ctx, 50);
    char gate[512] = "";
    if (rc == AM2Z_OK
        && am2z_state_get_strcpy(am2z_ctx_state(ctx), "gate", gate, sizeof gate) == AM2Z_OK
        && gate[0]) {
        int64_t wait_ms = 10000;
        am2z_state_get_int(am2z_ctx_state(ctx), "waitMs", &wait_ms);
        int64_t waited = 0;
        while (access(gate, F_OK) != 0) {
            if (am2z_ctx_cancelled(ctx) || waited >= wait_ms) {
                am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "GATE_CLOSED",
                                                 "gate %s did not open within %lld ms",
                                                 gate, (long long)waited);
                return am2z_ctx_fail(ctx, &e);
            }
            nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000000L }, NULL);
            waited += 10;
        }
    }
    if (rc == AM2Z_OK)
        rc = am2z_ctx_progress(ctx, 75);
    if (rc == AM2Z_OK)
        rc = am2z_ctx_progress(ctx, 100);
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "progress", 100);
    return rc;
}

/* ---------------------------------------------------------------------------
   The order example
   ------------------------------------------------------------------------ */

static size_t
s_item_count(am2z_ctx_t *ctx)
{
    size_t n = 0;
    am2z_vtype_t type;
    if (am2z_state_type(am2z_ctx_state(ctx), "order.items", &type) != AM2Z_OK
        || type != AM2Z_VT_ARRAY
        || am2z_state_get_count(am2z_ctx_state(ctx), "order.items", &n) != AM2Z_OK)
        return 0;
    return n;
}

/*  order.items.<i>.<field> as a number (missing or not a number: 0). */
static double
s_item_number(am2z_ctx_t *ctx, size_t i, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "order.items.%zu.%s", i, field);
    double v = 0;
    am2z_state_get_float(am2z_ctx_state(ctx), path, &v);
    return v;
}

static int
s_validate_order(am2z_ctx_t *ctx)
{
    if (!am2z_state_has(am2z_ctx_state(ctx), "order.id")) {
        am2z_error_t *e = am2z_error_validation("order.id", NULL,
                                                "order id is required");
        return am2z_ctx_fail(ctx, &e);
    }
    if (s_item_count(ctx) == 0) {
        am2z_error_t *e = am2z_error_validation("order.items", NULL,
                                                "order needs at least one item");
        return am2z_ctx_fail(ctx, &e);
    }
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "order.status", "validated");
}

static int
s_check_inventory(am2z_ctx_t *ctx)
{
    size_t n = s_item_count(ctx);
    for (size_t i = 0; i < n; i++) {
        double qty = s_item_number(ctx, i, "qty");
        if (qty > 100) {
            char path[64], sku[64] = "?", message[160];
            snprintf(path, sizeof path, "order.items.%zu.sku", i);
            am2z_state_get_strcpy(am2z_ctx_state(ctx), path, sku, sizeof sku);
            snprintf(message, sizeof message,
                     "item %s is out of stock (%.0f requested, at most 100)",
                     sku, qty);
            am2z_error_t *e = am2z_error_business("OUT_OF_STOCK", message, NULL, 0);
            return am2z_ctx_fail(ctx, &e);
        }
    }
    return am2z_changes_set_bool(am2z_ctx_changes(ctx), "inventory.reserved", true);
}

static int
s_process_payment(am2z_ctx_t *ctx)
{
    double amount = 0;
    size_t n = s_item_count(ctx);
    for (size_t i = 0; i < n; i++)
        amount += s_item_number(ctx, i, "price") * s_item_number(ctx, i, "qty");
    am2z_changes_t *changes = am2z_ctx_changes(ctx);
    int rc = am2z_changes_set_str(changes, "payment.status", "paid");
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_float(changes, "payment.amount", amount);
    return rc;
}

static int
s_create_shipment(am2z_ctx_t *ctx)
{
    char id[64] = "";
    int64_t num = 0;
    if (am2z_state_get_strcpy(am2z_ctx_state(ctx), "order.id", id, sizeof id)
        != AM2Z_OK) {
        if (am2z_state_get_int(am2z_ctx_state(ctx), "order.id", &num) == AM2Z_OK)
            snprintf(id, sizeof id, "%lld", (long long)num);
        else
            snprintf(id, sizeof id, "%.12s", am2z_ctx_execution_id(ctx));
    }
    char tracking[96];
    snprintf(tracking, sizeof tracking, "TRK-%s", id);
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "shipment.trackingNumber",
                                tracking);
}

static int
s_send_confirmation(am2z_ctx_t *ctx)
{
    char email[320];
    am2z_changes_t *changes = am2z_ctx_changes(ctx);
    int rc = am2z_changes_set_bool(changes, "confirmation.sent", true);
    if (rc == AM2Z_OK
        && am2z_state_get_strcpy(am2z_ctx_state(ctx), "order.customer.email",
                                 email, sizeof email) == AM2Z_OK)
        rc = am2z_changes_set_str(changes, "confirmation.email", email);
    return rc;
}

static int
s_update_inventory(am2z_ctx_t *ctx)
{
    return am2z_changes_set_bool(am2z_ctx_changes(ctx), "inventory.updated", true);
}

/* ---------------------------------------------------------------------------
   Small steps for the composites
   ------------------------------------------------------------------------ */

static int
s_add_count(am2z_ctx_t *ctx, int64_t mul, int64_t add)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "count", &n);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n * mul + add);
}

static int s_double(am2z_ctx_t *ctx) { return s_add_count(ctx, 2, 0); }
static int s_add10(am2z_ctx_t *ctx) { return s_add_count(ctx, 1, 10); }

static int
s_append_text(am2z_ctx_t *ctx, const char *text)
{
    /* "A" as msgpack: fixstr of one byte */
    const uint8_t v[2] = { 0xa1, (uint8_t)text[0] };
    return am2z_changes_append_raw(am2z_ctx_changes(ctx), "items", v, sizeof v);
}

static int s_append_a(am2z_ctx_t *ctx) { return s_append_text(ctx, "A"); }
static int s_append_b(am2z_ctx_t *ctx) { return s_append_text(ctx, "B"); }
static int s_append_c(am2z_ctx_t *ctx) { return s_append_text(ctx, "C"); }

static int
s_set_status_a(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "status", "a");
}

static int
s_set_status_b(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "status", "b");
}

/*  A merge processor: $branches holds the branch states. */
static int
s_count_branches(am2z_ctx_t *ctx)
{
    size_t n = 0;
    int rc = am2z_state_get_count(am2z_ctx_state(ctx), "$branches", &n);
    if (rc != AM2Z_OK) {
        am2z_error_t *e = am2z_error_validation("$branches", NULL, "no branches to merge");
        return am2z_ctx_fail(ctx, &e);
    }
    rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "mergedBranches", (int64_t)n);
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_str(am2z_ctx_changes(ctx), "mergedBy", "count-branches");
    return rc;
}

/*  A route selector: picks state.tier (or "basic"). */
static int
s_pick_tier(am2z_ctx_t *ctx)
{
    char tier[64] = "";
    if (am2z_state_get_strcpy(am2z_ctx_state(ctx), "tier", tier, sizeof tier) != AM2Z_OK)
        snprintf(tier, sizeof tier, "basic");
    return am2z_ctx_select(ctx, tier);
}

static int
s_tag_premium(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "handledBy", "premium");
}

static int
s_tag_basic(am2z_ctx_t *ctx)
{
    return am2z_changes_set_str(am2z_ctx_changes(ctx), "handledBy", "basic");
}

/*  count += 1; a BusinessError when state.bad is true. */
static int
s_bump(am2z_ctx_t *ctx)
{
    bool bad = false;
    am2z_state_get_bool(am2z_ctx_state(ctx), "bad", &bad);
    if (bad) {
        am2z_error_t *e = am2z_error_business("BAD_PAYLOAD", "payload marked bad", NULL, 0);
        return am2z_ctx_fail(ctx, &e);
    }
    return s_add_count(ctx, 1, 1);
}

/*  Sleeps state.ms (honouring cancellation), then steps += 1. */
static int
s_tick(am2z_ctx_t *ctx)
{
    int64_t ms = 0, steps = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "ms", &ms);
    am2z_state_get_int(am2z_ctx_state(ctx), "steps", &steps);
    for (int64_t slept = 0; slept < ms; slept += 10) {
        if (am2z_ctx_cancelled(ctx)) {
            am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED", "tick cancelled");
            return am2z_ctx_fail(ctx, &e);
        }
        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000000L }, NULL);
    }
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "steps", steps + 1);
}

/*  A failed nested call fails the caller with the callee's error. */
static int
s_fail_with(am2z_ctx_t *ctx, const am2z_result_t *r, const char *name)
{
    am2z_error_t *e = r && r->error ? am2z_error_dup(r->error)
                                    : am2z_error_execution(name, NULL, "nested call failed");
    return am2z_ctx_fail(ctx, &e);
}

/*  Nested calls: double on the input, twice; then count = that + 10. */
static int
s_call_double_twice(am2z_ctx_t *ctx)
{
    am2z_result_t *r = NULL;
    int64_t n = 0;
    for (int i = 0; i < 2; i++) {
        am2z_result_destroy(&r);
        int rc = am2z_ctx_call(ctx, "double", NULL, &r);
        if (rc != AM2Z_OK)
            return rc;
        if (!r->success) {
            rc = s_fail_with(ctx, r, "double");
            am2z_result_destroy(&r);
            return rc;
        }
    }
    am2z_state_get_int(r->state, "count", &n);
    am2z_result_destroy(&r);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n + 10);
}

/*  Calls the composite calc on its input; count = its count. */
static int
s_call_calc(am2z_ctx_t *ctx)
{
    am2z_result_t *r = NULL;
    int rc = am2z_ctx_call(ctx, "calc", NULL, &r);
    if (rc != AM2Z_OK)
        return rc;
    if (!r->success) {
        rc = s_fail_with(ctx, r, "calc");
        am2z_result_destroy(&r);
        return rc;
    }
    int64_t n = 0;
    am2z_state_get_int(r->state, "count", &n);
    am2z_result_destroy(&r);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n);
}

/*  Calls itself state.n levels deep; the innermost sets depth. */
static int
s_recurse(am2z_ctx_t *ctx)
{
    int64_t n = 0;
    am2z_state_get_int(am2z_ctx_state(ctx), "n", &n);
    if (n <= 0)
        return am2z_changes_set_int(am2z_ctx_changes(ctx), "depth",
                                    (int64_t)am2z_ctx_call_depth(ctx));
    am2z_changes_t *ch = am2z_changes_new();
    am2z_state_t *next = NULL;
    int rc = ch ? am2z_changes_set_int(ch, "n", n - 1) : AM2Z_ENOMEM;
    if (rc == AM2Z_OK)
        rc = am2z_state_apply(am2z_ctx_state(ctx), ch, am2z_clock_wall_ms(), 0, &next);
    am2z_changes_destroy(&ch);
    am2z_result_t *r = NULL;
    if (rc == AM2Z_OK)
        rc = am2z_ctx_call(ctx, "recurse", next, &r);
    am2z_state_destroy(&next);
    if (rc != AM2Z_OK)
        return rc;
    if (!r->success) {
        rc = s_fail_with(ctx, r, "recurse");
        am2z_result_destroy(&r);
        return rc;
    }
    int64_t depth = 0;
    am2z_state_get_int(r->state, "depth", &depth);
    am2z_result_destroy(&r);
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "depth", depth);
}

/* ---------------------------------------------------------------------------
   Scheduling (issue 6): what the broker's priorities, delays, rate limits
   and caps do is visible in these processors' results.
   ------------------------------------------------------------------------ */

/*  Process-wide: the order in which gate jobs ran in this worker, and how
    many capped jobs run now / at most. The only mutable statics here. */
static atomic_llong s_tickets;
static atomic_int s_capped_now;
static atomic_int s_capped_max;

/*  Waits (10 ms polls, honouring cancellation) until the file named by
    state.file exists, when one is named; then ticket = this worker's next
    ticket (1, 2, ...): with one slot, the order jobs ran in. */
static int
s_gate(am2z_ctx_t *ctx)
{
    char path[1024];
    if (am2z_state_get_strcpy(am2z_ctx_state(ctx), "file", path, sizeof path) == AM2Z_OK) {
        while (access(path, F_OK) != 0) {
            if (am2z_ctx_cancelled(ctx)) {
                am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED",
                                                 "gate cancelled before %s existed", path);
                return am2z_ctx_fail(ctx, &e);
            }
            nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000000L }, NULL);
        }
    }
    long long ticket = atomic_fetch_add(&s_tickets, 1) + 1;
    return am2z_changes_set_int(am2z_ctx_changes(ctx), "ticket", (int64_t)ticket);
}

/*  Counts itself in while it sleeps state.ms (default 50, 5 ms steps,
    honouring cancellation); active = how many ran at once in this worker
    when it entered, maxActive = the most this worker has seen so far. */
static int
s_capped(am2z_ctx_t *ctx)
{
    int now = atomic_fetch_add(&s_capped_now, 1) + 1;
    int max = atomic_load(&s_capped_max);
    while (now > max && !atomic_compare_exchange_weak(&s_capped_max, &max, now))
        ;
    int64_t ms = 50;
    am2z_state_get_int(am2z_ctx_state(ctx), "ms", &ms);
    int rc = AM2Z_OK;
    for (int64_t slept = 0; slept < ms; slept += 5) {
        if (am2z_ctx_cancelled(ctx)) {
            atomic_fetch_sub(&s_capped_now, 1);
            am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED",
                                             "capped cancelled");
            return am2z_ctx_fail(ctx, &e);
        }
        nanosleep(&(struct timespec){ .tv_nsec = 5 * 1000000L }, NULL);
    }
    atomic_fetch_sub(&s_capped_now, 1);
    rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "active", now);
    if (rc == AM2Z_OK)
        rc = am2z_changes_set_int(am2z_ctx_changes(ctx), "maxActive",
                                  atomic_load(&s_capped_max));
    return rc;
}

/* ---------------------------------------------------------------------------
   The table
   ------------------------------------------------------------------------ */

static const am2z_processor_def_t s_defs[] = {
    { .name = "increment", .fn = s_increment, .concurrency = 2,
      .description = "count += 1; message = \"Count is now N\"" },
    { .name = "validate-email", .fn = s_validate_email, .concurrency = 2,
      .description = "email must look like an email address" },
    { .name = "append", .fn = s_append, .concurrency = 2,
      .description = "appends value to the array items" },
    { .name = "sleep", .fn = s_sleep, .concurrency = 4,
      .description = "sleeps ms milliseconds; honours cancellation" },
    { .name = "fail", .fn = s_fail, .concurrency = 2,
      .description = "fails with the error category named by category" },
    { .name = "flaky", .fn = s_flaky, .concurrency = 2,
      .description = "fails (retryable) the first `failures` attempts",
      .retry = { .max_attempts = 3, .delay_ms = 10 } },
    { .name = "emit", .fn = s_emit, .concurrency = 2,
      .description = "emits custom:one, custom:two and progress 50" },
    { .name = "validate-order", .fn = s_validate_order, .concurrency = 2,
      .description = "order.id and order.items required; order.status = validated" },
    { .name = "check-inventory", .fn = s_check_inventory, .concurrency = 2,
      .description = "reserves stock; OUT_OF_STOCK when a qty exceeds 100" },
    { .name = "process-payment", .fn = s_process_payment, .concurrency = 2,
      .description = "payment.status = paid, payment.amount = sum of price * qty" },
    { .name = "create-shipment", .fn = s_create_shipment, .concurrency = 2,
      .description = "shipment.trackingNumber" },
    { .name = "send-confirmation", .fn = s_send_confirmation, .concurrency = 2,
      .description = "confirmation.sent = true" },
    { .name = "update-inventory", .fn = s_update_inventory, .concurrency = 2,
      .description = "inventory.updated = true" },
    /* reliability: retry policies, backoff, leases */
    { .name = "fail-retry", .fn = s_fail, .concurrency = 2,
      .description = "as fail, with up to 2 attempts 10 ms apart",
      .retry = { .max_attempts = 2, .delay_ms = 10 } },
    { .name = "backoff", .fn = s_backoff, .concurrency = 2,
      .description = "always fails (retryable); 4 attempts, backoff 100 ms x2",
      .retry = { .max_attempts = 4, .exponential = true, .delay_ms = 100,
                 .multiplier = 2.0, .max_delay_ms = 10000 } },
    { .name = "sleep-stubborn", .fn = s_sleep_stubborn, .concurrency = 1,
      .description = "sleeps ms milliseconds; ignores cancellation" },
    /* steps of the example composites */
    { .name = "double", .fn = s_double, .concurrency = 2, .description = "count *= 2" },
    { .name = "add10", .fn = s_add10, .concurrency = 2, .description = "count += 10" },
    { .name = "append-a", .fn = s_append_a, .concurrency = 2, .description = "appends \"A\" to items" },
    { .name = "append-b", .fn = s_append_b, .concurrency = 2, .description = "appends \"B\" to items" },
    { .name = "append-c", .fn = s_append_c, .concurrency = 2, .description = "appends \"C\" to items" },
    { .name = "set-status-a", .fn = s_set_status_a, .concurrency = 2, .description = "status = \"a\"" },
    { .name = "set-status-b", .fn = s_set_status_b, .concurrency = 2, .description = "status = \"b\"" },
    { .name = "count-branches", .fn = s_count_branches, .concurrency = 2,
      .description = "merge processor: mergedBranches = number of $branches" },
    { .name = "pick-tier", .fn = s_pick_tier, .concurrency = 2,
      .description = "route selector: selects state.tier (default basic)" },
    { .name = "tag-premium", .fn = s_tag_premium, .concurrency = 2, .description = "handledBy = premium" },
    { .name = "tag-basic", .fn = s_tag_basic, .concurrency = 2, .description = "handledBy = basic" },
    { .name = "bump", .fn = s_bump, .concurrency = 4,
      .description = "count += 1; BusinessError BAD_PAYLOAD when bad is true" },
    { .name = "tick", .fn = s_tick, .concurrency = 2,
      .description = "sleeps ms milliseconds, then steps += 1" },
    /* nested calls (am2z_ctx_call) */
    { .name = "call-double-twice", .fn = s_call_double_twice, .concurrency = 2,
      .description = "calls double twice on its input; count = that + 10" },
    { .name = "call-calc", .fn = s_call_calc, .concurrency = 2,
      .description = "calls the composite calc; count = its count" },
    { .name = "recurse", .fn = s_recurse, .concurrency = 2,
      .description = "calls itself state.n levels deep; depth = innermost call depth" },
    /* progress reporting (issue 6) */
    { .name = "progress", .fn = s_progress, .concurrency = 2,
      .description = "progress 25, 50, (waits for the file state.gate), 75, 100" },
    /* scheduling (issue 6) */
    { .name = "gate", .fn = s_gate, .concurrency = 1,
      .description = "waits until the file state.file exists (if named); "
                     "ticket = this worker's run order (1, 2, ...)" },
    { .name = "gate-urgent", .fn = s_gate, .concurrency = 1, .priority = 5,
      .description = "as gate, default priority 5" },
    { .name = "rated", .fn = s_increment, .concurrency = 4,
      .rate_max = 20, .rate_interval_ms = 1000,
      .description = "count += 1; at most 20 jobs per 1000 ms across all workers" },
    { .name = "capped", .fn = s_capped, .concurrency = 4, .max_active = 2,
      .description = "sleeps state.ms (default 50); at most 2 running across all "
                     "workers; active / maxActive = concurrency this worker saw" },
    { .name = "later", .fn = s_increment, .concurrency = 2, .delay_ms = 1000,
      .description = "count += 1; jobs wait 1000 ms by default (delay)" },
};

/* ---------------------------------------------------------------------------
   Composites
   ------------------------------------------------------------------------ */

static const char *const s_order_steps[] = {
    "validate-order", "check-inventory", "process-payment", "fulfil-order" };
static const char *const s_fulfil_steps[] = {
    "create-shipment", "send-confirmation", "update-inventory" };
static const char *const s_calc_steps[] = { "increment", "double", "add10" };
static const char *const s_calc_fail_steps[] = { "increment", "fail", "add10" };
static const char *const s_abc_steps[] = { "append-a", "append-b", "append-c" };
static const char *const s_ab_steps[] = { "append-a", "append-b" };
static const char *const s_status_steps[] = { "set-status-a", "set-status-b" };
static const char *const s_ticks_steps[] = { "tick", "tick", "tick", "tick", "tick" };
static const char *const s_inc3_steps[] = { "increment", "increment", "increment" };
static const char *const s_rated_steps[] = { "rated", "rated", "rated", "rated", "rated" };
static const am2z_route_t s_tier_routes[] = {
    { "premium", "tag-premium" }, { "basic", "tag-basic" } };
static const am2z_route_t s_kind_routes[] = {
    { "order", "process-order" }, { "calc", "calc" } };

static const am2z_composite_def_t s_comps[] = {
    { .name = "process-order", .kind = AM2Z_COMPOSITE_CHAIN,
      .description = "validate, reserve, pay, then fulfil in parallel",
      .steps = s_order_steps, .nsteps = 4 },
    { .name = "fulfil-order", .kind = AM2Z_COMPOSITE_PARALLEL,
      .description = "shipment, confirmation and inventory at once",
      .steps = s_fulfil_steps, .nsteps = 3 },
    { .name = "calc", .kind = AM2Z_COMPOSITE_CHAIN, .description = "(count + 1) * 2 + 10",
      .steps = s_calc_steps, .nsteps = 3 },
    { .name = "calc-fail", .kind = AM2Z_COMPOSITE_CHAIN, .description = "fails at step 2",
      .steps = s_calc_fail_steps, .nsteps = 3 },
    { .name = "abc", .kind = AM2Z_COMPOSITE_PARALLEL, .description = "appends A, B and C",
      .steps = s_abc_steps, .nsteps = 3 },
    { .name = "ab-merged", .kind = AM2Z_COMPOSITE_PARALLEL,
      .description = "appends A and B; merged by count-branches",
      .steps = s_ab_steps, .nsteps = 2, .merge = "count-branches" },
    { .name = "status-race", .kind = AM2Z_COMPOSITE_PARALLEL,
      .description = "two branches set status: the later wins",
      .steps = s_status_steps, .nsteps = 2 },
    { .name = "status-strict", .kind = AM2Z_COMPOSITE_PARALLEL,
      .description = "two branches set status: strict merge fails",
      .steps = s_status_steps, .nsteps = 2, .strict = true },
    { .name = "tier-route", .kind = AM2Z_COMPOSITE_ROUTE, .description = "by state.tier",
      .selector_path = "tier", .routes = s_tier_routes, .nroutes = 2 },
    { .name = "tier-select", .kind = AM2Z_COMPOSITE_ROUTE,
      .description = "by the pick-tier selector; fallback tag-basic",
      .selector = "pick-tier", .routes = s_tier_routes, .nroutes = 1, .fallback = "tag-basic" },
    { .name = "kind-route", .kind = AM2Z_COMPOSITE_ROUTE,
      .description = "state.kind: order -> process-order, calc -> calc",
      .selector_path = "kind", .routes = s_kind_routes, .nroutes = 2 },
    { .name = "bump-all", .kind = AM2Z_COMPOSITE_BATCH,
      .description = "bump over state.payloads", .processor = "bump",
      .payloads_path = "payloads" },
    { .name = "ticks", .kind = AM2Z_COMPOSITE_CHAIN, .description = "five ticks",
      .steps = s_ticks_steps, .nsteps = 5 },
    /* the benchmark's workload 3 (bench/am2z_bench.c) */
    { .name = "chain3", .kind = AM2Z_COMPOSITE_CHAIN,
      .description = "increment three times in a row (count + 3)",
      .steps = s_inc3_steps, .nsteps = 3 },
    { .name = "par3", .kind = AM2Z_COMPOSITE_PARALLEL,
      .description = "increment in three parallel branches, three-way merged (count + 1)",
      .steps = s_inc3_steps, .nsteps = 3 },
    /* scheduling (issue 6) */
    { .name = "rated-chain", .kind = AM2Z_COMPOSITE_CHAIN,
      .description = "five rated steps (rate limit 20 per 1000 ms)",
      .steps = s_rated_steps, .nsteps = 5 },
};

const am2z_composite_def_t *
am2z_example_composites(size_t *count)
{
    if (count)
        *count = sizeof s_comps / sizeof s_comps[0];
    return s_comps;
}

const am2z_processor_def_t *
am2z_example_processors(size_t *count)
{
    if (count)
        *count = sizeof s_defs / sizeof s_defs[0];
    return s_defs;
}
