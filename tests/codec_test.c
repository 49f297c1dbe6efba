/*  codec_test.c — Check suite "codec": the wire protocol (am2z_codec).

    Round trips of every command, refusals with the field named, and
    garbage input: random buffers, bit flips, truncations and structured
    mutations of valid encodings. The fuzz cases also check that anything
    decode accepts, encode accepts and decodes back to the same message.
*/
#include "am2z_codec.h"
#include "am2z_error.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BODY (1u << 20)

/*  {"metadata": {"version": 1 as uint8 (non-minimal)}, "k": "abc" as str8}:
    non-minimal encodings prove raw fields are copied, not re-packed. */
static const uint8_t s_state[] = {
    0x82, 0xa8, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', 0x81, 0xa7, 'v', 'e', 'r',
    's', 'i', 'o', 'n', 0xcc, 0x01, 0xa1, 'k', 0xd9, 0x03, 'a', 'b', 'c',
};
/*  {"x": [1, 2.5f]} */
static const uint8_t s_data[] = { 0x81, 0xa1, 'x', 0x92, 0x01, 0xca, 0x40, 0x20, 0x00, 0x00 };
/*  [{"op": "set"}, nil] */
static const uint8_t s_changes[] = { 0x92, 0x81, 0xa2, 'o', 'p', 0xa3, 's', 'e', 't', 0xc0 };

static void *
s_dup(const void *p, size_t n)
{
    void *copy = malloc(n);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, p, n);
    return copy;
}

static char *
s_str(const char *s)
{
    char *copy = strdup(s);
    ck_assert_ptr_nonnull(copy);
    return copy;
}

static am2z_error_t *
s_sample_error(void)
{
    am2z_error_t *e = am2z_error_validation("email", "x@", "must contain a domain");
    ck_assert_ptr_nonnull(e);
    e->severity = AM2Z_SEV_CRITICAL;
    e->retryable = true;
    e->timestamp_ms = 1763802325000ull;
    return e;
}

static am2z_proc_desc_t *
s_sample_procs(size_t *n)
{
    am2z_proc_desc_t *p = calloc(2, sizeof *p);
    ck_assert_ptr_nonnull(p);
    p[0].name = s_str("resize-image");
    p[0].description = s_str("Resizes an image to the requested width");
    p[0].concurrency = 8;
    p[0].timeout_ms = 30000;
    p[0].priority = -3;
    p[0].delay_ms = 250;
    p[0].rate_max = 20;
    p[0].rate_per_ms = 1000;
    p[0].max_active = 3;
    p[0].retry = (am2z_retry_policy_t){
        .max_attempts = 5, .exponential = true, .delay_ms = 100, .multiplier = 2.5,
        .max_delay_ms = 60000, .jitter = 0.25,
        .retry_categories = (1u << AM2Z_CAT_EXECUTION) | (1u << AM2Z_CAT_NETWORK),
    };
    p[1].name = s_str("noop");
    p[1].concurrency = 1;
    *n = 2;
    return p;
}

static am2z_comp_desc_t *
s_sample_comps(size_t *n)
{
    am2z_comp_desc_t *c = calloc(3, sizeof *c);
    ck_assert_ptr_nonnull(c);
    c[0].name = s_str("checkout");
    c[0].kind = 0;
    c[0].description = s_str("order checkout");
    c[0].timeout_ms = 60000;
    c[0].steps = calloc(2, sizeof *c[0].steps);
    c[0].steps[0] = s_str("validate-order");
    c[0].steps[1] = s_str("fulfil");
    c[0].nsteps = 2;
    c[1].name = s_str("fulfil");
    c[1].kind = 1;
    c[1].steps = calloc(1, sizeof *c[1].steps);
    c[1].steps[0] = s_str("ship");
    c[1].nsteps = 1;
    c[1].merge = s_str("merge-it");
    c[1].strict = true;
    c[2].name = s_str("by-tier");
    c[2].kind = 2;
    c[2].selector_path = s_str("customer.tier");
    c[2].routes = calloc(2, sizeof *c[2].routes);
    c[2].routes[0].key = s_str("gold plus");
    c[2].routes[0].target = s_str("vip");
    c[2].routes[1].key = s_str("1");
    c[2].routes[1].target = s_str("basic");
    c[2].nroutes = 2;
    c[2].fallback = s_str("basic");
    c[2].selector = NULL;
    c[2].processor = s_str("p");
    c[2].payloads_path = s_str("items");
    *n = 3;
    return c;
}

/*  Fills every field the command carries, with non-trivial values. */
static void
s_fill(am2z_cmd_t cmd, am2z_msg_t *m)
{
    am2z_msg_init(m, cmd);
    switch (cmd) {
    case AM2Z_CMD_SUBMIT:
        m->req = 42;
        m->processor = s_str("resize-image");
        m->session = s_str("tenant@example.com:s-1");
        m->state = s_dup(s_state, sizeof s_state);
        m->state_size = sizeof s_state;
        m->priority = -7;
        m->timeout_ms = AM2Z_CODEC_MAX_DURATION_MS;   /* the longest allowed */
        m->delay_ms = 1500;
        m->call_depth = 3;
        m->idem_key = s_str("order 17 / retry ok");
        m->job = s_str("0192f3a4b5c6d7e8f90a1b2c3d4e5f60");
        m->events = true;
        m->noack = true;
        m->every_ms = 60000;
        m->limit = 12;
        m->start_ms = 1763802325000ull;
        break;
    case AM2Z_CMD_FETCH:
        m->req = UINT64_MAX;
        m->job = s_str("job-1");
        break;
    case AM2Z_CMD_QUERY:
        m->req = 7;
        m->what = s_str("session-stats");
        m->session = s_str("s1");
        m->processor = s_str("p.1");
        m->job = s_str("j1");
        break;
    case AM2Z_CMD_STOP_SESSION:
        m->req = 8;
        m->session = s_str("s1");
        m->keep_state = true;
        break;
    case AM2Z_CMD_ACCEPTED:
        m->req = 9;
        m->job = s_str("j1");
        m->session = s_str("s1");
        m->dup = true;
        m->repeat = true;
        break;
    case AM2Z_CMD_RESULT:
        m->req = 10;
        m->job = s_str("j1");
        m->success = false;
        m->state = s_dup(s_state, sizeof s_state);
        m->state_size = sizeof s_state;
        m->error = s_sample_error();
        m->attempt = 3;
        m->exec_us = 123456;
        m->started_at_ms = 1763802325123ull;
        m->dispatched_ms = 1763802325120ull;
        m->processor = s_str("p");
        m->session = s_str("s1");
        m->worker = s_str("w-01");
        break;
    case AM2Z_CMD_REPLY:
        m->req = 11;
        m->data = s_dup(s_data, sizeof s_data);
        m->data_size = sizeof s_data;
        m->success = true;
        break;
    case AM2Z_CMD_ERROR:
        m->req = 12;
        m->error = s_sample_error();
        break;
    case AM2Z_CMD_EVENT:
        m->name = s_str("processor:progress");
        m->job = s_str("j1");
        m->session = s_str("s1");
        m->processor = s_str("p");
        m->data = s_dup(s_data, sizeof s_data);
        m->data_size = sizeof s_data;
        m->ts_ms = 1763802325999ull;
        m->seq = 4;
        m->attempt = 2;
        break;
    case AM2Z_CMD_HEARTBEAT:
    case AM2Z_CMD_DISCONNECT:
        m->worker = s_str("w-01");
        break;
    case AM2Z_CMD_READY:
        m->worker = s_str("w-01");
        m->procs = s_sample_procs(&m->nprocs);
        m->comps = s_sample_comps(&m->ncomps);
        m->batch = true;
        break;
    case AM2Z_CMD_CREDIT:
        m->processor = s_str("p");
        m->credit = 1000000;
        break;
    case AM2Z_CMD_DONE:
        m->job = s_str("j1");
        m->attempt = UINT32_MAX;
        m->success = true;            /* select comes only with ok (an error may too) */
        m->data = s_dup(s_changes, sizeof s_changes);
        m->data_size = sizeof s_changes;
        m->state = s_dup(s_state, sizeof s_state);
        m->state_size = sizeof s_state;
        m->error = s_sample_error();
        m->exec_us = 5;
        m->started_at_ms = 6;
        m->select = s_str("premium");
        break;
    case AM2Z_CMD_JOB:
        m->job = s_str("j1");
        m->attempt = 1;
        m->processor = s_str("p");
        m->session = s_str("s1");
        m->state = s_dup(s_state, sizeof s_state);
        m->state_size = sizeof s_state;
        m->timeout_ms = 30000;
        m->call_depth = 10;
        m->priority = INT64_MIN;
        m->call = true;
        break;
    case AM2Z_CMD_CANCEL:
        m->job = s_str("j1");
        m->attempt = 2;
        break;
    case AM2Z_CMD_DLQ:
        m->req = 13;
        m->op = s_str("retry");
        m->job = s_str("j1");
        break;
    case AM2Z_CMD_CALL:
        m->req = 14;
        m->job = s_str("j1");
        m->processor = s_str("double");
        m->state = s_dup(s_state, sizeof s_state);
        m->state_size = sizeof s_state;
        m->call_depth = 3;
        break;
    case AM2Z_CMD_REPEAT:
        m->req = 15;
        m->op = s_str("cancel");
        m->job = s_str("r1");
        break;
    default:
        ck_abort_msg("no sample for command %d", cmd);
    }
}

static void
s_str_eq(const char *a, const char *b)
{
    if (!a || !b)
        ck_assert_ptr_eq(a, b);
    else
        ck_assert_str_eq(a, b);
}

static void
s_bytes_eq(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    ck_assert_uint_eq(an, bn);
    if (!a || !b)
        ck_assert_ptr_eq(a, b);
    else
        ck_assert_mem_eq(a, b, an);
}

static void
s_error_eq(const am2z_error_t *a, const am2z_error_t *b)
{
    if (!a || !b) {
        ck_assert_ptr_eq(a, b);
        return;
    }
    ck_assert_int_eq(a->kind, b->kind);
    ck_assert_int_eq(a->category, b->category);
    ck_assert_int_eq(a->severity, b->severity);
    ck_assert_int_eq(a->retryable, b->retryable);
    s_str_eq(a->code, b->code);
    s_str_eq(a->message, b->message);
    s_bytes_eq(a->details, a->details_size, b->details, b->details_size);
    ck_assert_uint_eq(a->timestamp_ms, b->timestamp_ms);
}

static void
s_msg_eq(const am2z_msg_t *a, const am2z_msg_t *b)
{
    ck_assert_int_eq(a->cmd, b->cmd);
    ck_assert_uint_eq(a->req, b->req);
    s_str_eq(a->job, b->job);
    s_str_eq(a->processor, b->processor);
    s_str_eq(a->session, b->session);
    s_str_eq(a->worker, b->worker);
    s_str_eq(a->what, b->what);
    s_str_eq(a->op, b->op);
    s_str_eq(a->name, b->name);
    s_str_eq(a->idem_key, b->idem_key);
    s_bytes_eq(a->state, a->state_size, b->state, b->state_size);
    s_bytes_eq(a->data, a->data_size, b->data, b->data_size);
    s_error_eq(a->error, b->error);
    ck_assert_int_eq(a->success, b->success);
    ck_assert_int_eq(a->keep_state, b->keep_state);
    ck_assert_int_eq(a->events, b->events);
    ck_assert_int_eq(a->noack, b->noack);
    ck_assert_int_eq(a->batch, b->batch);
    ck_assert_uint_eq(a->attempt, b->attempt);
    ck_assert_uint_eq(a->call_depth, b->call_depth);
    ck_assert_int_eq(a->priority, b->priority);
    ck_assert_uint_eq(a->timeout_ms, b->timeout_ms);
    ck_assert_uint_eq(a->delay_ms, b->delay_ms);
    ck_assert_uint_eq(a->exec_us, b->exec_us);
    ck_assert_uint_eq(a->started_at_ms, b->started_at_ms);
    ck_assert_uint_eq(a->dispatched_ms, b->dispatched_ms);
    ck_assert_uint_eq(a->ts_ms, b->ts_ms);
    ck_assert_uint_eq(a->seq, b->seq);
    ck_assert_uint_eq(a->credit, b->credit);
    ck_assert_uint_eq(a->every_ms, b->every_ms);
    ck_assert_uint_eq(a->limit, b->limit);
    ck_assert_uint_eq(a->start_ms, b->start_ms);
    ck_assert_int_eq(a->dup, b->dup);
    ck_assert_int_eq(a->repeat, b->repeat);
    ck_assert_uint_eq(a->nprocs, b->nprocs);
    for (size_t i = 0; i < a->nprocs; i++) {
        const am2z_proc_desc_t *p = &a->procs[i], *q = &b->procs[i];
        s_str_eq(p->name, q->name);
        s_str_eq(p->description, q->description);
        ck_assert_uint_eq(p->concurrency, q->concurrency);
        ck_assert_uint_eq(p->timeout_ms, q->timeout_ms);
        ck_assert_int_eq(p->priority, q->priority);
        ck_assert_uint_eq(p->delay_ms, q->delay_ms);
        ck_assert_uint_eq(p->rate_max, q->rate_max);
        ck_assert_uint_eq(p->rate_per_ms, q->rate_per_ms);
        ck_assert_uint_eq(p->max_active, q->max_active);
        ck_assert_uint_eq(p->retry.max_attempts, q->retry.max_attempts);
        ck_assert_int_eq(p->retry.exponential, q->retry.exponential);
        ck_assert_uint_eq(p->retry.delay_ms, q->retry.delay_ms);
        ck_assert_double_eq(p->retry.multiplier, q->retry.multiplier);
        ck_assert_uint_eq(p->retry.max_delay_ms, q->retry.max_delay_ms);
        ck_assert_double_eq(p->retry.jitter, q->retry.jitter);
        ck_assert_uint_eq(p->retry.retry_categories, q->retry.retry_categories);
    }
    s_str_eq(a->select, b->select);
    ck_assert_int_eq(a->call, b->call);
    ck_assert_uint_eq(a->ncomps, b->ncomps);
    for (size_t i = 0; i < a->ncomps; i++) {
        const am2z_comp_desc_t *p = &a->comps[i], *q = &b->comps[i];
        s_str_eq(p->name, q->name);
        ck_assert_uint_eq(p->kind, q->kind);
        s_str_eq(p->description, q->description);
        ck_assert_uint_eq(p->timeout_ms, q->timeout_ms);
        ck_assert_uint_eq(p->nsteps, q->nsteps);
        for (size_t k = 0; k < p->nsteps; k++)
            s_str_eq(p->steps[k], q->steps[k]);
        s_str_eq(p->merge, q->merge);
        ck_assert_int_eq(p->strict, q->strict);
        s_str_eq(p->selector_path, q->selector_path);
        s_str_eq(p->selector, q->selector);
        ck_assert_uint_eq(p->nroutes, q->nroutes);
        for (size_t k = 0; k < p->nroutes; k++) {
            s_str_eq(p->routes[k].key, q->routes[k].key);
            s_str_eq(p->routes[k].target, q->routes[k].target);
        }
        s_str_eq(p->fallback, q->fallback);
        s_str_eq(p->processor, q->processor);
        s_str_eq(p->payloads_path, q->payloads_path);
    }
}

/*  Encodes a full sample of cmd. Caller frees *body. */
static void
s_encode_sample(am2z_cmd_t cmd, uint8_t **body, size_t *size)
{
    am2z_msg_t m;
    s_fill(cmd, &m);
    ck_assert_int_eq(am2z_msg_encode(&m, body, size), AM2Z_OK);
    am2z_msg_clear(&m);
}

/*  Re-packs a map body with `key` removed (val NULL) or replaced by /
    added as the raw msgpack val[0..vn). Caller frees *out. */
static void
s_edit(const uint8_t *body, size_t size, const char *key, const uint8_t *val,
       size_t vn, uint8_t **out, size_t *out_size)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, (const char *)body, size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(up.data.type, MSGPACK_OBJECT_MAP);
    const msgpack_object_map *m = &up.data.via.map;
    size_t klen = strlen(key);
    uint32_t n = val ? 1 : 0;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        bool match = k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen
                     && memcmp(k->via.str.ptr, key, klen) == 0;
        n += !match;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen
            && memcmp(k->via.str.ptr, key, klen) == 0)
            continue;
        msgpack_pack_object(&pk, *k);
        msgpack_pack_object(&pk, m->ptr[i].val);
    }
    if (val) {
        msgpack_pack_str_with_body(&pk, key, klen);
        msgpack_sbuffer_write(&sb, (const char *)val, vn);
    }
    msgpack_unpacked_destroy(&up);
    *out_size = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
}

/*  Decodes body as cmd expecting failure with `expect` inside the message. */
static void
s_expect_refused(am2z_cmd_t cmd, const uint8_t *body, size_t size, const char *expect)
{
    am2z_msg_t m;
    char err[512];
    int rc = am2z_msg_decode(cmd, body, size, MAX_BODY, &m, err, sizeof err);
    ck_assert_msg(rc == AM2Z_EPROTO, "%s: expected refusal '%s', got rc %d",
                  am2z_cmd_name(cmd), expect, rc);
    ck_assert_msg(strstr(err, expect) != NULL, "error '%s' lacks '%s'", err, expect);
    ck_assert_int_eq(m.cmd, AM2Z_CMD_INVALID);
    ck_assert_ptr_null(m.job);
    ck_assert_ptr_null(m.error);
    ck_assert_ptr_null(m.procs);
}

/*  Encodes the sample of cmd with key's value replaced by val and checks
    the decode refusal. */
static void
s_expect_field_refused(am2z_cmd_t cmd, const char *key, const uint8_t *val, size_t vn,
                       const char *expect)
{
    uint8_t *body, *edited;
    size_t size, esize;
    s_encode_sample(cmd, &body, &size);
    s_edit(body, size, key, val, vn, &edited, &esize);
    s_expect_refused(cmd, edited, esize, expect);
    free(body);
    free(edited);
}

/*  Decodes and, when accepted, checks encode(decode(x)) decodes equal. */
static void
s_decode_any(am2z_cmd_t cmd, const uint8_t *body, size_t size)
{
    am2z_msg_t m, again;
    char err[256];
    int rc = am2z_msg_decode(cmd, body, size, MAX_BODY, &m, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK || rc == AM2Z_EPROTO, "rc %d", rc);
    if (rc != AM2Z_OK) {
        ck_assert_msg(err[0] != '\0', "refusal without a message");
        return;
    }
    uint8_t *re;
    size_t resize;
    ck_assert_msg(am2z_msg_encode(&m, &re, &resize) == AM2Z_OK,
                  "%s: decode accepted what encode refuses", am2z_cmd_name(cmd));
    ck_assert_int_eq(am2z_msg_decode(cmd, re, resize, MAX_BODY, &again, err, sizeof err), AM2Z_OK);
    s_msg_eq(&m, &again);
    free(re);
    am2z_msg_clear(&again);
    am2z_msg_clear(&m);
}

static uint64_t
s_rand(uint64_t *seed)
{
    uint8_t b[8];
    am2z_test_random_bytes(seed, b, sizeof b);
    uint64_t v;
    memcpy(&v, b, sizeof v);
    return v;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_cmd_names_round_trip)
{
    for (int c = 1; c < AM2Z_CMD_COUNT_; c++) {
        const char *name = am2z_cmd_name((am2z_cmd_t)c);
        ck_assert_str_ne(name, "INVALID");
        ck_assert_int_eq(am2z_cmd_parse(name, strlen(name)), c);
    }
    ck_assert_str_eq(am2z_cmd_name(AM2Z_CMD_COUNT_), "INVALID");
    ck_assert_str_eq(am2z_cmd_name((am2z_cmd_t)-1), "INVALID");
    ck_assert_int_eq(am2z_cmd_parse("INVALID", 7), AM2Z_CMD_INVALID);
    ck_assert_int_eq(am2z_cmd_parse("submit", 6), AM2Z_CMD_INVALID);
    ck_assert_int_eq(am2z_cmd_parse("SUBMITX", 7), AM2Z_CMD_INVALID);
    ck_assert_int_eq(am2z_cmd_parse("SUBMIT", 5), AM2Z_CMD_INVALID);
    ck_assert_int_eq(am2z_cmd_parse(NULL, 0), AM2Z_CMD_INVALID);
}
END_TEST

START_TEST(test_every_command_round_trips_with_all_fields)
{
    for (int c = 1; c < AM2Z_CMD_COUNT_; c++) {
        am2z_msg_t m, back;
        s_fill((am2z_cmd_t)c, &m);
        uint8_t *body;
        size_t size;
        char err[256];
        ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
        int rc = am2z_msg_decode((am2z_cmd_t)c, body, size, MAX_BODY, &back, err, sizeof err);
        ck_assert_msg(rc == AM2Z_OK, "%s: %s", am2z_cmd_name((am2z_cmd_t)c), err);
        s_msg_eq(&m, &back);
        /* and through the frames */
        am2z_msg_t framed;
        const char *name = am2z_cmd_name((am2z_cmd_t)c);
        ck_assert_int_eq(am2z_frames_decode((const uint8_t *)AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL),
                                            (const uint8_t *)name, strlen(name), body, size,
                                            MAX_BODY, &framed, err, sizeof err), AM2Z_OK);
        s_msg_eq(&m, &framed);
        free(body);
        am2z_msg_clear(&framed);
        am2z_msg_clear(&back);
        am2z_msg_clear(&m);
        ck_assert_int_eq(m.cmd, AM2Z_CMD_INVALID);
        ck_assert_ptr_null(m.state);
    }
}
END_TEST

START_TEST(test_raw_state_and_data_are_copied_byte_for_byte)
{
    am2z_msg_t m, back;
    s_fill(AM2Z_CMD_JOB, &m);
    uint8_t *body;
    size_t size;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
    /* the non-minimal uint8 and str8 survive in the body and after decode */
    ck_assert_ptr_nonnull(memmem(body, size, s_state, sizeof s_state));
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_JOB, body, size, MAX_BODY, &back, NULL, 0), AM2Z_OK);
    ck_assert_uint_eq(back.state_size, sizeof s_state);
    ck_assert_mem_eq(back.state, s_state, sizeof s_state);
    free(body);
    am2z_msg_clear(&back);
    am2z_msg_clear(&m);
}
END_TEST

START_TEST(test_absent_optional_fields_decode_as_zero)
{
    const uint8_t body[] = { 0x82, 0xa3, 'r', 'e', 'q', 0x05, 0xa3, 'j', 'o', 'b', 0xa1, 'j' };
    am2z_msg_t m;
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_ACCEPTED, body, sizeof body, MAX_BODY, &m, NULL, 0),
                     AM2Z_OK);
    ck_assert_uint_eq(m.req, 5);
    ck_assert_str_eq(m.job, "j");
    ck_assert_ptr_null(m.session);
    am2z_msg_clear(&m);
    /* HEARTBEAT has no required field: an empty map is a valid body */
    const uint8_t empty[] = { 0x80 };
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_HEARTBEAT, empty, 1, MAX_BODY, &m, NULL, 0), AM2Z_OK);
    ck_assert_ptr_null(m.worker);
    am2z_msg_clear(&m);
    am2z_msg_clear(NULL);
}
END_TEST

START_TEST(test_required_fields_missing_are_refused)
{
    static const struct {
        am2z_cmd_t cmd;
        const char *keys[6];
    } req[] = {
        { AM2Z_CMD_SUBMIT, { "req", "proc", "session" } },
        { AM2Z_CMD_FETCH, { "req", "job" } },
        { AM2Z_CMD_QUERY, { "req", "what" } },
        { AM2Z_CMD_STOP_SESSION, { "req", "session" } },
        { AM2Z_CMD_ACCEPTED, { "req", "job" } },
        { AM2Z_CMD_RESULT, { "job", "ok", "error" } },
        { AM2Z_CMD_REPLY, { "req" } },
        { AM2Z_CMD_ERROR, { "error" } },
        { AM2Z_CMD_EVENT, { "name" } },
        { AM2Z_CMD_READY, { "worker", "procs" } },
        { AM2Z_CMD_CREDIT, { "proc", "credit" } },
        { AM2Z_CMD_DONE, { "job", "attempt", "ok" } },     /* error: when not ok, below */
        { AM2Z_CMD_JOB, { "job", "attempt", "proc", "session", "state" } },
        { AM2Z_CMD_CANCEL, { "job" } },
        { AM2Z_CMD_DLQ, { "req", "op", "job" } },
        { AM2Z_CMD_CALL, { "req", "job", "proc" } },
        { AM2Z_CMD_REPEAT, { "req", "op", "job" } },
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        for (size_t k = 0; req[i].keys[k]; k++) {
            char expect[128];
            snprintf(expect, sizeof expect, "%s: missing required field '%s'",
                     am2z_cmd_name(req[i].cmd), req[i].keys[k]);
            s_expect_field_refused(req[i].cmd, req[i].keys[k], NULL, 0, expect);
        }
    }
}
END_TEST

START_TEST(test_encode_refuses_what_decode_refuses)
{
    uint8_t *body = NULL;
    size_t size = 0;
    am2z_msg_t m;

    s_fill(AM2Z_CMD_SUBMIT, &m);
    free(m.session);
    m.session = NULL;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.session = s_str("has space");
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    free(m.session);
    m.session = s_str("ok");
    m.state[0] = 0x90;                                  /* state no longer a map */
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    /*  Depth counts across the raw state: the body's map, the state's map
        and k arrays make 2 + k levels. The encoder takes exactly what the
        decoder's gate (AM2Z_CODEC_MAX_DEPTH) takes. */
    for (size_t k = AM2Z_CODEC_MAX_DEPTH - 3; k <= AM2Z_CODEC_MAX_DEPTH - 1; k++) {
        free(m.state);
        m.state_size = 3 + k + 1;
        m.state = malloc(m.state_size);
        m.state[0] = 0x81;
        m.state[1] = 0xa1;
        m.state[2] = 'x';
        memset(m.state + 3, 0x91, k);
        m.state[3 + k] = 0x01;
        bool fits = 2 + k <= AM2Z_CODEC_MAX_DEPTH;
        ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), (fits ? AM2Z_OK : AM2Z_EINVAL));
        if (fits) {
            am2z_msg_t back;
            ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, body, size, MAX_BODY, &back, NULL, 0),
                             AM2Z_OK);
            am2z_msg_clear(&back);
            free(body);
            body = NULL;
        }
    }
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_RESULT, &m);
    am2z_error_destroy(&m.error);                       /* ok is false */
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.success = true;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
    free(body);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_CREDIT, &m);
    m.credit = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.credit = 1000001;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_JOB, &m);
    m.attempt = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_DONE, &m);
    free(m.data);
    m.data = s_dup(s_data, sizeof s_data);              /* a map, not the changes array */
    m.data_size = sizeof s_data;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_READY, &m);
    m.procs[0].retry.multiplier = 0.5;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.procs[0].retry.multiplier = 2;
    free(m.procs[1].name);
    m.procs[1].name = s_str("resize-image");            /* listed twice */
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_ERROR, &m);
    m.error->category = AM2Z_CAT_COUNT_;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    s_fill(AM2Z_CMD_QUERY, &m);
    free(m.what);
    m.what = s_str("everything");
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);

    am2z_msg_init(&m, AM2Z_CMD_INVALID);
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_msg_encode(NULL, &body, &size), AM2Z_EINVAL);
}
END_TEST

#define V(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })

START_TEST(test_dlq_command_and_query_decode)
{
    /* {req: 1, op: "discard", job: "j9"} */
    const uint8_t dlq[] = { 0x83, 0xa3, 'r', 'e', 'q', 0x01, 0xa2, 'o', 'p',
                            0xa7, 'd', 'i', 's', 'c', 'a', 'r', 'd', 0xa3, 'j', 'o', 'b',
                            0xa2, 'j', '9' };
    am2z_msg_t m;
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_DLQ, dlq, sizeof dlq, MAX_BODY, &m, NULL, 0),
                     AM2Z_OK);
    ck_assert_str_eq(m.op, "discard");
    ck_assert_str_eq(m.job, "j9");
    ck_assert_uint_eq(m.req, 1);
    am2z_msg_clear(&m);
    ck_assert_ptr_null(m.op);
    /* {req: 2, what: "dlq", proc: "p"} */
    const uint8_t q[] = { 0x83, 0xa3, 'r', 'e', 'q', 0x02, 0xa4, 'w', 'h', 'a', 't',
                          0xa3, 'd', 'l', 'q', 0xa4, 'p', 'r', 'o', 'c', 0xa1, 'p' };
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_QUERY, q, sizeof q, MAX_BODY, &m, NULL, 0),
                     AM2Z_OK);
    ck_assert_str_eq(m.what, "dlq");
    ck_assert_str_eq(m.processor, "p");
    am2z_msg_clear(&m);
    ck_assert_int_eq(am2z_cmd_parse("DLQ", 3), AM2Z_CMD_DLQ);
}
END_TEST

START_TEST(test_wrong_types_are_refused_naming_the_field)
{
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", V(0x01),
        "SUBMIT: field 'session' must be a string of 1..128 valid characters");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", V(0xc4, 0x01, 'a'),     /* bin */
        "SUBMIT: field 'session' must be a string");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "req", V(0xa1, '1'),
        "SUBMIT: field 'req' must be an unsigned integer");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "req", V(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0),
        "SUBMIT: field 'req' must be an unsigned integer");              /* 1.0 */
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "req", V(0xff),
        "SUBMIT: field 'req' must be an unsigned integer");              /* -1 */
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "prio", V(0xca, 0x3f, 0x80, 0, 0),
        "SUBMIT: field 'prio' must be an integer");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "prio", V(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0),
        "SUBMIT: field 'prio' must be an integer");                      /* 2^63 */
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "state", V(0x90),
        "SUBMIT: field 'state' must be a map");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "depth", V(0xcf, 0, 0, 0, 1, 0, 0, 0, 0),
        "SUBMIT: field 'depth' must be an integer 0..4294967295");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "idem", V(0xa0),
        "SUBMIT: field 'idem' must be a string of 1..128 bytes");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "timeout", V(0x81, 0x01, 0x02),
        "SUBMIT: field 'timeout' must be a duration of 0..315360000000 ms (10 years)");
    s_expect_field_refused(AM2Z_CMD_RESULT, "ok", V(0x01),
        "RESULT: field 'ok' must be a boolean");
    s_expect_field_refused(AM2Z_CMD_RESULT, "error", V(0xa1, 'x'),
        "RESULT: field 'error' must be an error map");
    s_expect_field_refused(AM2Z_CMD_RESULT, "error", V(0x80),
        "RESULT: missing required field 'error.category'");
    s_expect_field_refused(AM2Z_CMD_DONE, "data", V(0x80),
        "DONE: field 'data' must be an array");
    s_expect_field_refused(AM2Z_CMD_CREDIT, "credit", V(0x00),
        "CREDIT: field 'credit' must be an integer 1..1000000");
    s_expect_field_refused(AM2Z_CMD_CREDIT, "credit", V(0xce, 0x00, 0x0f, 0x42, 0x41),
        "CREDIT: field 'credit' must be an integer 1..1000000");
    s_expect_field_refused(AM2Z_CMD_QUERY, "what", V(0xa3, 'f', 'o', 'o'),
        "QUERY: field 'what' must be one of stats|queues|");
    s_expect_field_refused(AM2Z_CMD_DLQ, "op", V(0xa4, 'k', 'e', 'e', 'p'),
        "DLQ: field 'op' must be one of retry|discard");
    s_expect_field_refused(AM2Z_CMD_DLQ, "op", V(0xa6, 'r', 'e', 't', 'r', 'y', 0),
        "DLQ: field 'op' must be one of retry|discard");
    s_expect_field_refused(AM2Z_CMD_DLQ, "job", V(0xa3, 'a', '/', 'b'),
        "DLQ: field 'job' must be a string of 1..64 valid characters");
    s_expect_field_refused(AM2Z_CMD_READY, "procs", V(0x90),
        "READY: field 'procs' must be an array of 1..1024 processor maps");
    s_expect_field_refused(AM2Z_CMD_READY, "procs", V(0x91, 0x01),
        "READY: field 'procs[0]' must be a processor map");
    s_expect_field_refused(AM2Z_CMD_READY, "procs", V(0x91, 0x80),
        "READY: missing required field 'procs[0].name'");
    s_expect_field_refused(AM2Z_CMD_STOP_SESSION, "keep", V(0xc0),
        "STOP_SESSION: field 'keep' must be a boolean");
    s_expect_field_refused(AM2Z_CMD_JOB, "attempt", V(0x00),
        "JOB: field 'attempt' must be an integer 1..4294967295");
    s_expect_field_refused(AM2Z_CMD_EVENT, "ts", V(0xd0, 0xfe),
        "EVENT: field 'ts' must be an unsigned integer");
}
END_TEST

/*  Scalars are read by hand (s_unpack_scalar), not by msgpack_unpack: for
    every scalar encoding — each type byte, widths, boundaries, signed
    values that are not negative, floats, str / bin / ext of each header
    width, truncations — a SUBMIT carrying it as prio (int64), timeout
    (uint, at most 10 years), noack (bool) and idem (str 1..128) must be
    accepted exactly when msgpack-c's reading of the same bytes fits the
    field, and with msgpack-c's value. */
static void
s_expect_scalar_as_msgpack_c(const uint8_t *v, size_t vn)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    bool one = msgpack_unpack_next(&up, (const char *)v, vn, &off) == MSGPACK_UNPACK_SUCCESS
               && off == vn;
    msgpack_object o = up.data;
    static const char *const keys[] = { "prio", "timeout", "noack", "idem" };
    for (size_t k = 0; k < 4; k++) {
        uint8_t *body, *edited;
        size_t size, esize;
        s_encode_sample(AM2Z_CMD_SUBMIT, &body, &size);
        s_edit(body, size, keys[k], v, vn, &edited, &esize);
        am2z_msg_t m;
        char err[256];
        int rc = am2z_msg_decode(AM2Z_CMD_SUBMIT, edited, esize, MAX_BODY, &m, err, sizeof err);
        bool fits = false;
        if (one && k == 0)
            fits = (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 <= INT64_MAX)
                   || o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        else if (one && k == 1)
            fits = o.type == MSGPACK_OBJECT_POSITIVE_INTEGER
                   && o.via.u64 <= AM2Z_CODEC_MAX_DURATION_MS;
        else if (one && k == 2)
            fits = o.type == MSGPACK_OBJECT_BOOLEAN;
        else if (one && k == 3)
            fits = o.type == MSGPACK_OBJECT_STR && o.via.str.size >= 1 && o.via.str.size <= 128;
        ck_assert_msg((rc == AM2Z_OK) == fits, "%s = 0x%02x (%zu bytes): %s", keys[k], v[0], vn,
                      rc == AM2Z_OK ? "accepted" : err);
        if (rc == AM2Z_OK) {
            if (k == 0)
                ck_assert_int_eq(m.priority, o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                                                 ? o.via.i64 : (int64_t)o.via.u64);
            else if (k == 1)
                ck_assert_uint_eq(m.timeout_ms, o.via.u64);
            else if (k == 2)
                ck_assert_int_eq(m.noack, o.via.boolean);
            else
                ck_assert(strlen(m.idem_key) == o.via.str.size
                          && memcmp(m.idem_key, o.via.str.ptr, o.via.str.size) == 0);
            am2z_msg_clear(&m);
        }
        free(body);
        free(edited);
    }
    msgpack_unpacked_destroy(&up);
}

START_TEST(test_scalars_read_as_msgpack_c_reads_them)
{
    uint8_t v[1 + 4 + 200];
    /* one-byte objects: fixints, nil, bools, 0xc1, empty fixstr */
    for (int b = 0; b < 256; b++) {
        if ((b >= 0x80 && b <= 0x9f) || b == 0xdc || b == 0xdd || b == 0xde || b == 0xdf)
            continue;                 /* containers: not scalars */
        v[0] = (uint8_t)b;
        s_expect_scalar_as_msgpack_c(v, 1);
    }
    /* ints of every width: 0, 1, 0x7f.., all ones, the sign bit alone */
    static const uint64_t pats[] = { 0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff,
                                     0x7fffffff, 0x80000000u, 0xffffffffu,
                                     0x7fffffffffffffffull, 0x8000000000000000ull,
                                     0xffffffffffffffffull, 0x0123456789abcdefull,
                                     315360000000ull, 315360000001ull };
    for (int b = 0xcc; b <= 0xd3; b++) {
        if (b == 0xd4)
            break;
        size_t w = (size_t)1 << ((b >= 0xd0 ? b - 0xd0 : b - 0xcc));
        for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
            v[0] = (uint8_t)b;
            for (size_t j = 0; j < w; j++)
                v[1 + j] = (uint8_t)(pats[i] >> (8 * (w - 1 - j)));
            s_expect_scalar_as_msgpack_c(v, 1 + w);
            s_expect_scalar_as_msgpack_c(v, w);          /* truncated */
        }
    }
    /* floats: 1.0, NaN */
    s_expect_scalar_as_msgpack_c((const uint8_t[]){ 0xca, 0x3f, 0x80, 0, 0 }, 5);
    s_expect_scalar_as_msgpack_c((const uint8_t[]){ 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0 }, 9);
    /* str, bin, ext: each header width, lengths 0, 1, 128, 129 */
    static const size_t lens[] = { 0, 1, 3, 128, 129 };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t len = lens[i];
        static const uint8_t heads[] = { 0xa0, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9 };
        for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++) {
            uint8_t b = heads[h];
            size_t n = 0;
            if (b == 0xa0) {
                if (len > 31)
                    continue;
                v[n++] = (uint8_t)(0xa0 | len);
            } else {
                size_t w = b >= 0xd9 ? (size_t)1 << (b - 0xd9)
                         : b >= 0xc7 ? (size_t)1 << (b - 0xc7) : (size_t)1 << (b - 0xc4);
                if (w == 1 && len > 255)
                    continue;
                v[n++] = b;
                for (size_t j = 0; j < w; j++)
                    v[n++] = (uint8_t)(len >> (8 * (w - 1 - j)));
                if (b >= 0xc7)
                    v[n++] = 0x05;    /* ext type */
            }
            memset(v + n, 'x', len);
            s_expect_scalar_as_msgpack_c(v, n + len);
            if (n + len > 1)
                s_expect_scalar_as_msgpack_c(v, n + len - 1);   /* truncated */
        }
    }
    /* fixext 1..16 */
    for (int b = 0xd4; b <= 0xd8; b++) {
        size_t len = (size_t)1 << (b - 0xd4);
        v[0] = (uint8_t)b;
        v[1] = 0x01;
        memset(v + 2, 0, len);
        s_expect_scalar_as_msgpack_c(v, 2 + len);
    }
}
END_TEST

/*  A duration past 10 years would wrap the broker's clock sums (a
    timeout of 2^64-1 ms expired at once, a delay of 2^64-1 ms ran at
    once): every duration field stops at AM2Z_CODEC_MAX_DURATION_MS. */
START_TEST(test_durations_are_at_most_ten_years)
{
    ck_assert_uint_eq(AM2Z_CODEC_MAX_DURATION_MS, 315360000000ull);
    const char *want = "must be a duration of 0..315360000000 ms (10 years)";
    /* 315360000001 = 0x496cebb801 */
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "timeout", V(0xcf, 0, 0, 0, 0x49, 0x6c, 0xeb, 0xb8, 0x01),
        "SUBMIT: field 'timeout' must be a duration");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "delay", V(0xcf, 0, 0, 0, 0x49, 0x6c, 0xeb, 0xb8, 0x01),
        want);
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "delay",
        V(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), want);
    /* the processor map and its retry policy, and a composite's timeout */
    const uint8_t proc_timeout[] = { 0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
        0xa4, 'c', 'o', 'n', 'c', 0x01,
        0xa7, 't', 'i', 'm', 'e', 'o', 'u', 't', 0xcf, 0, 0, 0, 0x49, 0x6c, 0xeb, 0xb8, 0x01 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", proc_timeout, sizeof proc_timeout,
        "READY: field 'procs[0].timeout' must be a duration");
    const uint8_t retry_delay[] = { 0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
        0xa4, 'c', 'o', 'n', 'c', 0x01, 0xa5, 'r', 'e', 't', 'r', 'y',
        0x81, 0xa8, 'm', 'a', 'x', 'd', 'e', 'l', 'a', 'y', 0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", retry_delay, sizeof retry_delay,
        "READY: field 'procs[0].retry.maxdelay' must be a duration");

    /* exactly 10 years is accepted, and round-trips */
    uint8_t *body, *edited;
    size_t size, esize;
    am2z_msg_t m;
    s_encode_sample(AM2Z_CMD_SUBMIT, &body, &size);
    const uint8_t ten[] = { 0xcf, 0, 0, 0, 0x49, 0x6c, 0xeb, 0xb8, 0x00 };
    s_edit(body, size, "delay", ten, sizeof ten, &edited, &esize);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, edited, esize, MAX_BODY, &m, NULL, 0), AM2Z_OK);
    ck_assert_uint_eq(m.delay_ms, AM2Z_CODEC_MAX_DURATION_MS);
    ck_assert_uint_eq(m.timeout_ms, AM2Z_CODEC_MAX_DURATION_MS);
    /* and the encoder refuses what the decoder would */
    m.timeout_ms = AM2Z_CODEC_MAX_DURATION_MS + 1;
    uint8_t *out = NULL;
    size_t nout = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &out, &nout), AM2Z_EINVAL);
    ck_assert_ptr_null(out);
    am2z_msg_clear(&m);
    free(edited);
    free(body);
}
END_TEST

START_TEST(test_invalid_ids_and_names_are_refused)
{
    char long_session[131];
    long_session[0] = (char)0xd9;          /* str8 of 129 */
    long_session[1] = (char)129;
    memset(long_session + 2, 'a', 129);
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", (const uint8_t *)long_session, 131,
        "SUBMIT: field 'session' must be a string of 1..128 valid characters");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", V(0xa3, 'a', ' ', 'b'),
        "SUBMIT: field 'session' must be a string of 1..128 valid characters");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", V(0xa3, 'a', '/', 'b'),
        "field 'session'");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "session", V(0xa3, 'a', 0, 'b'),
        "field 'session'");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "proc", V(0xa4, 'b', 'a', 'd', '!'),
        "SUBMIT: field 'proc' must be a string of 1..128 valid characters");
    s_expect_field_refused(AM2Z_CMD_SUBMIT, "proc", V(0xa0),
        "SUBMIT: field 'proc'");
    s_expect_field_refused(AM2Z_CMD_EVENT, "name", V(0xa2, 'a', '\n'),
        "EVENT: field 'name'");
    s_expect_field_refused(AM2Z_CMD_FETCH, "job", V(0xa2, 'j', '@'),
        "FETCH: field 'job' must be a string of 1..64 valid characters");
    s_expect_field_refused(AM2Z_CMD_READY, "worker", V(0xa2, 'w', ' '),
        "READY: field 'worker'");

    am2z_msg_t m;
    uint8_t *body;
    size_t size;
    s_fill(AM2Z_CMD_EVENT, &m);
    free(m.name);
    m.name = s_str("bad name");
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);
    s_fill(AM2Z_CMD_FETCH, &m);
    free(m.job);
    m.job = s_str("0123456789012345678901234567890123456789012345678901234567890123456789");
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    am2z_msg_clear(&m);
}
END_TEST

START_TEST(test_procs_are_validated)
{
    /* conc 0, bad multiplier, bad jitter, duplicate name, long description */
    const uint8_t conc0[] = { 0x91, 0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
                              0xa4, 'c', 'o', 'n', 'c', 0x00 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", conc0, sizeof conc0,
        "READY: field 'procs[0].conc' must be an integer 1..4294967295");
    const uint8_t mult[] = { 0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
                             0xa4, 'c', 'o', 'n', 'c', 0x01, 0xa5, 'r', 'e', 't', 'r', 'y',
                             0x81, 0xa4, 'm', 'u', 'l', 't', 0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", mult, sizeof mult,
        "READY: field 'procs[0].retry.mult' must be a finite number >= 1");
    const uint8_t jitter[] = { 0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
                               0xa4, 'c', 'o', 'n', 'c', 0x01, 0xa5, 'r', 'e', 't', 'r', 'y',
                               0x81, 0xa6, 'j', 'i', 't', 't', 'e', 'r', 0x02 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", jitter, sizeof jitter,
        "READY: field 'procs[0].retry.jitter' must be a number 0..1");
    const uint8_t twice[] = { 0x92,
        0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p', 0xa4, 'c', 'o', 'n', 'c', 0x01,
        0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p', 0xa4, 'c', 'o', 'n', 'c', 0x02 };
    s_expect_field_refused(AM2Z_CMD_READY, "procs", twice, sizeof twice, "listed twice");

    /* integer multiplier and jitter are accepted as numbers */
    const uint8_t ints[] = { 0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'p',
                             0xa4, 'c', 'o', 'n', 'c', 0x01, 0xa5, 'r', 'e', 't', 'r', 'y',
                             0x82, 0xa4, 'm', 'u', 'l', 't', 0x03, 0xa6, 'j', 'i', 't', 't', 'e', 'r', 0x01 };
    uint8_t *body, *edited;
    size_t size, esize;
    am2z_msg_t m;
    s_encode_sample(AM2Z_CMD_READY, &body, &size);
    s_edit(body, size, "procs", ints, sizeof ints, &edited, &esize);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_READY, edited, esize, MAX_BODY, &m, NULL, 0), AM2Z_OK);
    ck_assert_double_eq(m.procs[0].retry.multiplier, 3.0);
    ck_assert_double_eq(m.procs[0].retry.jitter, 1.0);
    am2z_msg_clear(&m);
    free(edited);
    free(body);

    /* more than AM2Z_CODEC_MAX_PROCS */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, AM2Z_CODEC_MAX_PROCS + 1);
    for (int i = 0; i < AM2Z_CODEC_MAX_PROCS + 1; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "p%d", i);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "name", 4);
        msgpack_pack_str_with_body(&pk, name, (size_t)n);
        msgpack_pack_str_with_body(&pk, "conc", 4);
        msgpack_pack_uint32(&pk, 1);
    }
    s_expect_field_refused(AM2Z_CMD_READY, "procs", (const uint8_t *)sb.data, sb.size,
        "READY: field 'procs' must be an array of 1..1024 processor maps");
    msgpack_sbuffer_destroy(&sb);

    /* a description longer than AM2Z_CODEC_MAX_TEXT */
    s_fill(AM2Z_CMD_READY, &m);
    free(m.procs[0].description);
    m.procs[0].description = calloc(AM2Z_CODEC_MAX_TEXT + 2, 1);
    memset(m.procs[0].description, 'd', AM2Z_CODEC_MAX_TEXT + 1);
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.procs[0].description[AM2Z_CODEC_MAX_TEXT] = '\0';
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
    free(body);
    am2z_msg_clear(&m);
}
END_TEST

START_TEST(test_comps_and_select_are_validated)
{
    /* comps: an array of composite maps; each named, kind by name */
    s_expect_field_refused(AM2Z_CMD_READY, "comps", V(0x90),
        "READY: field 'comps' must be an array of 1..1024 composite maps");
    s_expect_field_refused(AM2Z_CMD_READY, "comps", V(0x91, 0x01),
        "READY: field 'comps[0]' must be a composite map");
    s_expect_field_refused(AM2Z_CMD_READY, "comps", V(0x91, 0x80),
        "READY: missing required field 'comps[0].name'");
    /* {name: "c", kind: "loop"} */
    s_expect_field_refused(AM2Z_CMD_READY, "comps",
        V(0x91, 0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa4, 'l', 'o', 'o', 'p'),
        "READY: field 'comps[0].kind' must be one of chain|parallel|route|batch");
    /* {name: "c", kind: "chain", steps: [1]} */
    s_expect_field_refused(AM2Z_CMD_READY, "comps",
        V(0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa5, 'c', 'h', 'a', 'i', 'n', 0xa5, 's', 't', 'e', 'p', 's', 0x91, 0x01),
        "READY: field 'comps[0].steps[0]' must be a string of 1..128 valid characters");
    /* {name: "c", kind: "chain", steps: []} */
    s_expect_field_refused(AM2Z_CMD_READY, "comps",
        V(0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa5, 'c', 'h', 'a', 'i', 'n', 0xa5, 's', 't', 'e', 'p', 's', 0x90),
        "READY: field 'comps[0].steps' must be an array of 1..1024 names");
    /* {name: "c", kind: "route", routes: [{key: "k"}]} */
    s_expect_field_refused(AM2Z_CMD_READY, "comps",
        V(0x91, 0x83, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa5, 'r', 'o', 'u', 't', 'e', 0xa6, 'r', 'o', 'u', 't', 'e', 's',
          0x91, 0x81, 0xa3, 'k', 'e', 'y', 0xa1, 'k'),
        "READY: missing required field 'comps[0].routes[0].target'");
    /* the same composite twice */
    s_expect_field_refused(AM2Z_CMD_READY, "comps",
        V(0x92, 0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa5, 'c', 'h', 'a', 'i', 'n',
          0x82, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'c', 0xa4, 'k', 'i', 'n', 'd',
          0xa5, 'c', 'h', 'a', 'i', 'n'),
        "READY: field 'comps[1].name': composite 'c' listed twice");
    s_expect_field_refused(AM2Z_CMD_DONE, "select", V(0xa0),
        "DONE: field 'select' must be a string of 1..128 bytes without NUL");
    s_expect_field_refused(AM2Z_CMD_DONE, "select", V(0x01),
        "DONE: field 'select' must be a string of 1..128 bytes without NUL");

    /* standalone composite maps (the broker stores them) round-trip */
    size_t n = 0;
    am2z_comp_desc_t *c = s_sample_comps(&n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *data = NULL;
        size_t size = 0;
        ck_assert_int_eq(am2z_comp_desc_encode(&c[i], &data, &size), AM2Z_OK);
        am2z_comp_desc_t back, copy;
        ck_assert_int_eq(am2z_comp_desc_decode(data, size, &back, NULL, 0), AM2Z_OK);
        ck_assert_int_eq(am2z_comp_desc_copy(&back, &copy), AM2Z_OK);
        uint8_t *again = NULL;
        size_t again_size = 0;
        ck_assert_int_eq(am2z_comp_desc_encode(&copy, &again, &again_size), AM2Z_OK);
        s_bytes_eq(data, size, again, again_size);
        /* every truncation is refused, never a crash */
        for (size_t cut = 0; cut < size; cut++) {
            am2z_comp_desc_t junk;
            ck_assert_int_ne(am2z_comp_desc_decode(data, cut, &junk, NULL, 0), AM2Z_OK);
        }
        am2z_comp_desc_clear(&back);
        am2z_comp_desc_clear(&copy);
        free(data);
        free(again);
    }
    /* an unknown kind value cannot be encoded */
    c[0].kind = 9;
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_comp_desc_encode(&c[0], &data, &size), AM2Z_EINVAL);
    for (size_t i = 0; i < n; i++)
        am2z_comp_desc_clear(&c[i]);
    free(c);
    am2z_comp_desc_clear(NULL);
    ck_assert_str_eq(am2z_comp_kind_name(3), "batch");
    ck_assert_ptr_null(am2z_comp_kind_name(4));
}
END_TEST

START_TEST(test_result_failure_requires_error)
{
    const uint8_t body[] = { 0x82, 0xa3, 'j', 'o', 'b', 0xa1, 'j', 0xa2, 'o', 'k', 0xc2 };
    s_expect_refused(AM2Z_CMD_RESULT, body, sizeof body,
                     "RESULT: missing required field 'error' (ok is false)");
    const uint8_t okbody[] = { 0x82, 0xa3, 'j', 'o', 'b', 0xa1, 'j', 0xa2, 'o', 'k', 0xc3 };
    am2z_msg_t m;
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_RESULT, okbody, sizeof okbody, MAX_BODY, &m, NULL, 0),
                     AM2Z_OK);
    ck_assert(m.success);
    am2z_msg_clear(&m);
}
END_TEST

/*  A route selector's key comes only with a success: a failed DONE that
    names one is refused (and cannot be encoded). */
START_TEST(test_done_select_only_with_ok)
{
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_DONE);
    m.job = (char *)"j";
    m.attempt = 1;
    m.success = false;
    m.error = am2z_error_new(AM2Z_CAT_EXECUTION, "E", "failed");
    m.select = (char *)"left";
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_EINVAL);
    m.select = NULL;
    ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
    am2z_error_destroy(&m.error);
    /* the same body plus "select": one more pair in its fixmap header */
    ck_assert_uint_eq(body[0] & 0xf0, 0x80);
    ck_assert_uint_lt(body[0] & 0x0f, 15);
    uint8_t *bad = malloc(size + 12);
    ck_assert_ptr_nonnull(bad);
    memcpy(bad, body, size);
    bad[0] = (uint8_t)(body[0] + 1);
    memcpy(bad + size, "\xa6select\xa4left", 12);
    s_expect_refused(AM2Z_CMD_DONE, bad, size + 12,
                     "DONE: field 'select' is not allowed when ok is false");
    free(bad);
    free(body);
    /* and a failed DONE names its error */
    const uint8_t ko[] = { 0x83, 0xa3, 'j', 'o', 'b', 0xa1, 'j', 0xa7, 'a', 't', 't', 'e', 'm', 'p',
                           't', 0x01, 0xa2, 'o', 'k', 0xc2 };
    s_expect_refused(AM2Z_CMD_DONE, ko, sizeof ko,
                     "DONE: missing required field 'error' (ok is false)");
}
END_TEST

START_TEST(test_body_must_be_one_map_within_the_limit)
{
    uint8_t *body;
    size_t size;
    am2z_msg_t m;
    char err[256], expect[128];
    s_encode_sample(AM2Z_CMD_SUBMIT, &body, &size);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, body, size, size, &m, NULL, 0), AM2Z_OK);
    am2z_msg_clear(&m);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, body, size, size - 1, &m, err, sizeof err),
                     AM2Z_EPROTO);
    snprintf(expect, sizeof expect, "SUBMIT: body of %zu bytes exceeds limit %zu", size, size - 1);
    ck_assert_str_eq(err, expect);
    free(body);

    s_expect_refused(AM2Z_CMD_HEARTBEAT, V(0x90), "HEARTBEAT: body must be a msgpack map");
    s_expect_refused(AM2Z_CMD_HEARTBEAT, V(0x80, 0x80), "HEARTBEAT: body is not exactly one");
    s_expect_refused(AM2Z_CMD_HEARTBEAT, V(0x81, 0xa1), "HEARTBEAT: body is not exactly one");
    s_expect_refused(AM2Z_CMD_HEARTBEAT, NULL, 0, "HEARTBEAT: empty body");
    /* too deep: worker -> [[[[...]]]] beyond AM2Z_CODEC_MAX_DEPTH */
    uint8_t deep[200];
    deep[0] = 0x81;
    deep[1] = 0xa1;
    deep[2] = 'x';
    memset(deep + 3, 0x91, sizeof deep - 4);
    deep[sizeof deep - 1] = 0x01;
    s_expect_refused(AM2Z_CMD_HEARTBEAT, deep, sizeof deep, "HEARTBEAT: body is not exactly one");
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_HEARTBEAT, deep, sizeof deep, MAX_BODY, NULL, err,
                                     sizeof err), AM2Z_EINVAL);
    s_expect_refused(AM2Z_CMD_INVALID, V(0x80), "no such command");
}
END_TEST

START_TEST(test_unknown_keys_ignored_duplicates_refused)
{
    uint8_t *body, *edited;
    size_t size, esize;
    am2z_msg_t a, b;
    s_encode_sample(AM2Z_CMD_SUBMIT, &body, &size);
    const uint8_t extra[] = { 0x82, 0xa1, 'v', 0x02, 0xa1, 'l', 0x93, 0x01, 0x02, 0x03 };
    s_edit(body, size, "future-field", extra, sizeof extra, &edited, &esize);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, body, size, MAX_BODY, &a, NULL, 0), AM2Z_OK);
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_SUBMIT, edited, esize, MAX_BODY, &b, NULL, 0), AM2Z_OK);
    /* s_edit re-packed the state minimally; everything else must match */
    ck_assert_uint_eq(b.state_size, sizeof s_state - 2);
    free(a.state);
    free(b.state);
    a.state = b.state = NULL;
    a.state_size = b.state_size = 0;
    s_msg_eq(&a, &b);
    am2z_msg_clear(&a);
    am2z_msg_clear(&b);
    free(edited);
    free(body);

    /* a non-string key is unknown, hence ignored; a repeated unknown key too */
    const uint8_t intkey[] = { 0x84, 0x01, 0x02, 0xa3, 'j', 'o', 'b', 0xa1, 'j',
                               0xa1, 'z', 0x01, 0xa1, 'z', 0x02 };
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_CANCEL, intkey, sizeof intkey, MAX_BODY, &a, NULL, 0),
                     AM2Z_OK);
    am2z_msg_clear(&a);

    const uint8_t dup[] = { 0x83, 0xa3, 'r', 'e', 'q', 0x01, 0xa3, 'j', 'o', 'b', 0xa1, 'j',
                            0xa3, 'j', 'o', 'b', 0xa1, 'k' };
    s_expect_refused(AM2Z_CMD_FETCH, dup, sizeof dup, "FETCH: duplicate field 'job'");
}
END_TEST

/*  Keys are matched by their bytes, whatever their header and order: a
    str8 header names the same field as a fixstr; a key with NULs past a
    field's name is another key (and the match must not read past the end
    of the shorter name: ASan in CI); keys in any order decode the same. */
/*  A stored RESULT (req 0) resent with each recipient's req: the splice
    gives exactly what a fresh encode with that req gives. */
START_TEST(test_body_with_req_equals_encode_with_req)
{
    static const uint64_t reqs[] = { 1, 127, 128, 255, 256, 65535, 65536, UINT32_MAX,
                                     (uint64_t)UINT32_MAX + 1, UINT64_MAX };
    static const am2z_cmd_t cmds[] = { AM2Z_CMD_RESULT, AM2Z_CMD_ERROR };
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
        for (int ok = 0; ok < 2; ok++) {
            am2z_msg_t m;
            s_fill(cmds[c], &m);
            if (cmds[c] == AM2Z_CMD_RESULT && ok) {
                m.success = true;
                am2z_error_destroy(&m.error);
            }
            m.req = 0;
            uint8_t *base, *want, *got;
            size_t base_n, want_n, got_n;
            ck_assert_int_eq(am2z_msg_encode(&m, &base, &base_n), AM2Z_OK);
            for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
                m.req = reqs[i];
                ck_assert_int_eq(am2z_msg_encode(&m, &want, &want_n), AM2Z_OK);
                ck_assert_int_eq(am2z_body_with_req(cmds[c], base, base_n, reqs[i], &got,
                                                    &got_n), AM2Z_OK);
                ck_assert_uint_eq(got_n, want_n);
                ck_assert_mem_eq(got, want, want_n);
                /*  and a body that has its req already is refused */
                uint8_t *again = (uint8_t *)"x";
                size_t again_n = 1;
                ck_assert_int_eq(am2z_body_with_req(cmds[c], want, want_n, 5, &again, &again_n),
                                 AM2Z_EINVAL);
                ck_assert_ptr_null(again);
                ck_assert_uint_eq(again_n, 0);
                free(want);
                free(got);
            }
            free(base);
            am2z_msg_clear(&m);
        }
    }
}
END_TEST

/*  Map headers: 15 pairs grow into a map16 of 16, a map16 stays one; and
    what the function refuses. */
START_TEST(test_body_with_req_map_headers_and_refusals)
{
    const size_t counts[] = { 0, 14, 15, 20 };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        msgpack_sbuffer in, want;
        msgpack_packer pi, pw;
        msgpack_sbuffer_init(&in);
        msgpack_sbuffer_init(&want);
        msgpack_packer_init(&pi, &in, msgpack_sbuffer_write);
        msgpack_packer_init(&pw, &want, msgpack_sbuffer_write);
        if (counts[i] == 14)        /* a map16 header for a small map: kept as map16 */
            msgpack_sbuffer_write(&in, "\xde\x00\x0e", 3);
        else
            msgpack_pack_map(&pi, counts[i]);
        msgpack_pack_map(&pw, counts[i] + 1);
        msgpack_pack_str_with_body(&pw, "req", 3);
        msgpack_pack_uint64(&pw, 77);
        for (size_t k = 0; k < counts[i]; k++) {
            char key[8];
            int n = snprintf(key, sizeof key, "k%zu", k);
            msgpack_pack_str_with_body(&pi, key, (size_t)n);
            msgpack_pack_uint64(&pi, k);
            msgpack_pack_str_with_body(&pw, key, (size_t)n);
            msgpack_pack_uint64(&pw, k);
        }
        uint8_t *got;
        size_t got_n;
        ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, (uint8_t *)in.data, in.size, 77,
                                            &got, &got_n), AM2Z_OK);
        ck_assert_uint_eq(got_n, want.size);
        ck_assert_mem_eq(got, want.data, want.size);
        free(got);
        msgpack_sbuffer_destroy(&in);
        msgpack_sbuffer_destroy(&want);
    }
    const uint8_t map[] = { 0x80 };
    const uint8_t arr[] = { 0x90 };
    const uint8_t cut16[] = { 0xde, 0x00 };
    const uint8_t cut32[] = { 0xdf, 0x00, 0x00, 0x01 };
    uint8_t *out;
    size_t out_n;
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_SUBMIT, map, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_ACCEPTED, map, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_EVENT, map, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_INVALID, map, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_COUNT_, map, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, map, 1, 0, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, map, 0, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, NULL, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, arr, 1, 1, &out, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, cut16, sizeof cut16, 1, &out, &out_n),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, cut32, sizeof cut32, 1, &out, &out_n),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, map, 1, 1, NULL, &out_n), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_body_with_req(AM2Z_CMD_RESULT, map, 1, 1, &out, NULL), AM2Z_EINVAL);
}
END_TEST

START_TEST(test_keys_match_by_bytes_in_any_order)
{
    am2z_msg_t a, b;
    const uint8_t plain[] = { 0x82, 0xa7, 'a', 't', 't', 'e', 'm', 'p', 't', 0x07,
                              0xa3, 'j', 'o', 'b', 0xa1, 'j' };
    const uint8_t turned[] = { 0x82, 0xa3, 'j', 'o', 'b', 0xa1, 'j',
                               0xa7, 'a', 't', 't', 'e', 'm', 'p', 't', 0x07 };
    const uint8_t str8[] = { 0x82, 0xd9, 0x03, 'j', 'o', 'b', 0xa1, 'j', 0xda, 0x00, 0x07,
                             'a', 't', 't', 'e', 'm', 'p', 't', 0x07 };
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_CANCEL, plain, sizeof plain, MAX_BODY, &a, NULL, 0),
                     AM2Z_OK);
    const uint8_t *other[] = { turned, str8 };
    const size_t other_size[] = { sizeof turned, sizeof str8 };
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_CANCEL, other[i], other_size[i], MAX_BODY, &b,
                                         NULL, 0), AM2Z_OK);
        s_msg_eq(&a, &b);
        am2z_msg_clear(&b);
    }
    ck_assert_uint_eq(a.attempt, 7);
    am2z_msg_clear(&a);

    /* "job" then 29 NULs (str8): not the field "job", so ignored */
    uint8_t nul[64] = { 0x82, 0xd9, 32, 'j', 'o', 'b' };
    size_t at = 6 + 29;
    nul[at++] = 0xa1;
    nul[at++] = 'x';
    memcpy(nul + at, (const uint8_t[]){ 0xa3, 'j', 'o', 'b', 0xa1, 'j' }, 6);
    at += 6;
    ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_CANCEL, nul, at, MAX_BODY, &b, NULL, 0), AM2Z_OK);
    ck_assert_str_eq(b.job, "j");
    am2z_msg_clear(&b);
    /* and a key that is a field's name cut short is not that field either */
    const uint8_t cut[] = { 0x81, 0xa2, 'j', 'o', 0xa1, 'j' };
    s_expect_refused(AM2Z_CMD_CANCEL, cut, sizeof cut, "missing required field 'job'");
}
END_TEST

START_TEST(test_peek_req_reads_req_from_refused_bodies)
{
    uint64_t req = 0;
    /* {"req": 77, "proc": "bad name!"}: refused as SUBMIT, req still readable */
    const uint8_t body[] = { 0x82, 0xa3, 'r', 'e', 'q', 0x4d, 0xa4, 'p', 'r', 'o', 'c',
                             0xa9, 'b', 'a', 'd', ' ', 'n', 'a', 'm', 'e', '!' };
    s_expect_refused(AM2Z_CMD_SUBMIT, body, sizeof body, "SUBMIT: field 'proc'");
    ck_assert_int_eq(am2z_body_peek_req(body, sizeof body, MAX_BODY, &req), AM2Z_OK);
    ck_assert_uint_eq(req, 77);
    ck_assert_int_eq(am2z_body_peek_req(V(0x81, 0xa3, 'r', 'e', 'q', 0xa1, 'x'), MAX_BODY, &req),
                     AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_body_peek_req(V(0x80), MAX_BODY, &req), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_body_peek_req(V(0x81, 0xa3, 'r', 'e'), MAX_BODY, &req), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_body_peek_req(V(0x90), MAX_BODY, &req), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_body_peek_req(body, sizeof body, 4, &req), AM2Z_EPROTO);
}
END_TEST

START_TEST(test_frames_check_signature_and_command)
{
    uint8_t *body;
    size_t size;
    am2z_msg_t m;
    char err[256];
    s_encode_sample(AM2Z_CMD_CANCEL, &body, &size);

    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/2", 6, (const uint8_t *)"CANCEL", 6,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_str_eq(err, "unsupported protocol 'AM2Z/2' (expected 'AM2Z/1')");
    ck_assert_int_eq(m.cmd, AM2Z_CMD_INVALID);

    uint8_t junk[100];
    memset(junk, 0x07, sizeof junk);
    junk[0] = 'A';
    ck_assert_int_eq(am2z_frames_decode(junk, sizeof junk, (const uint8_t *)"CANCEL", 6,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_msg(strncmp(err, "unsupported protocol 'A\\x07\\x07", 30) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "...'"));
    ck_assert_uint_lt(strlen(err), 200);
    for (const char *c = err; *c; c++)
        ck_assert(*c >= 0x20 && *c < 0x7f);

    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/1", 6, (const uint8_t *)"AM2Z/1\0", 7,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_str_eq(err, "unknown command 'AM2Z/1\\x00'");
    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/1", 6, (const uint8_t *)"FOO", 3,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_str_eq(err, "unknown command 'FOO'");
    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/1", 6, (const uint8_t *)"INVALID", 7,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_frames_decode(NULL, 0, NULL, 0, NULL, 0, MAX_BODY, &m, err, sizeof err),
                     AM2Z_EPROTO);
    ck_assert_str_eq(err, "unsupported protocol '' (expected 'AM2Z/1')");

    /* a valid frame set whose body belongs to another command */
    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/1", 6, (const uint8_t *)"FETCH", 5,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_EPROTO);
    ck_assert_str_eq(err, "FETCH: missing required field 'req'");
    ck_assert_int_eq(am2z_frames_decode((const uint8_t *)"AM2Z/1", 6, (const uint8_t *)"CANCEL", 6,
                                        body, size, MAX_BODY, &m, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(m.cmd, AM2Z_CMD_CANCEL);
    am2z_msg_clear(&m);
    free(body);
}
END_TEST

START_TEST(test_huge_declared_lengths_are_refused)
{
    /* {"procs": array32 of 0xffffffff} and friends: mpcheck refuses them
       before anything is allocated */
    const uint8_t arr32[] = { 0x82, 0xa6, 'w', 'o', 'r', 'k', 'e', 'r', 0xa1, 'w',
                              0xa5, 'p', 'r', 'o', 'c', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x80 };
    s_expect_refused(AM2Z_CMD_READY, arr32, sizeof arr32, "READY: body is not exactly one");
    s_expect_refused(AM2Z_CMD_READY, V(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01), "READY: body is not");
    s_expect_refused(AM2Z_CMD_READY, V(0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01), "READY: body is not");
    s_expect_refused(AM2Z_CMD_SUBMIT, V(0x81, 0xa7, 's', 'e', 's', 's', 'i', 'o', 'n',
                                        0xdb, 0xff, 0xff, 0xff, 0xff, 'a'), "SUBMIT: body is not");
    s_expect_refused(AM2Z_CMD_REPLY, V(0x81, 0xa4, 'd', 'a', 't', 'a',
                                       0xc6, 0xff, 0xff, 0xff, 0xff, 0x00), "REPLY: body is not");
    /* a map16 of 2 in a map32 claiming 4G entries */
    s_expect_refused(AM2Z_CMD_HEARTBEAT, V(0xdf, 0x00, 0x00, 0x00, 0x02, 0x80), "HEARTBEAT: body is not");
}
END_TEST

START_TEST(test_error_round_trips_every_kind)
{
    const uint8_t details[] = { 0x81, 0xa3, 's', 'k', 'u', 0xa2, 'A', '1' };
    const char *avail[] = { "a", "b" };
    am2z_error_t *errs[] = {
        am2z_error_new(AM2Z_CAT_INTEGRITY, "SHA_MISMATCH", "sha mismatch in %s", "s1"),
        am2z_error_validation("field", NULL, "bad"),
        am2z_error_processor_not_found("x", avail, 2),
        am2z_error_execution("p", "e1", "boom"),
        am2z_error_timeout("op", 100),
        am2z_error_resource("mem", 10, 11),
        am2z_error_network("tcp://h:1", "refused"),
        am2z_error_configuration("map-size", "too small"),
        am2z_error_business("OUT_OF_STOCK", "no stock", details, sizeof details),
        am2z_error_call_depth(11, 10, "p"),
        am2z_error_business("C", "", NULL, 0),
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        ck_assert_ptr_nonnull(errs[i]);
        uint8_t *data;
        size_t size;
        am2z_error_t *back = NULL;
        char err[256];
        ck_assert_int_eq(am2z_error_encode(errs[i], &data, &size), AM2Z_OK);
        ck_assert_int_eq(am2z_error_decode(data, size, &back, err, sizeof err), AM2Z_OK);
        s_error_eq(errs[i], back);
        am2z_error_destroy(&back);
        free(data);
        am2z_error_destroy(&errs[i]);
    }
}
END_TEST

START_TEST(test_error_map_is_validated)
{
    am2z_error_t *e = NULL;
    char err[256];
    /* minimal: category, code, message; severity and retryable default */
    const uint8_t minimal[] = { 0x83, 0xa8, 'c', 'a', 't', 'e', 'g', 'o', 'r', 'y',
                                0xa7, 'n', 'e', 't', 'w', 'o', 'r', 'k', 0xa4, 'c', 'o', 'd', 'e', 0xa1, 'C',
                                0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa1, 'm' };
    ck_assert_int_eq(am2z_error_decode(minimal, sizeof minimal, &e, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(e->kind, AM2Z_KIND_GENERIC);
    ck_assert_int_eq(e->category, AM2Z_CAT_NETWORK);
    ck_assert_int_eq(e->severity, am2z_category_severity(AM2Z_CAT_NETWORK));
    ck_assert(e->retryable);
    ck_assert_ptr_null(e->details);
    am2z_error_destroy(&e);

    ck_assert_int_eq(am2z_error_decode(minimal, sizeof minimal - 9, &e, err, sizeof err), AM2Z_EPROTO);
    ck_assert_ptr_null(e);

    am2z_error_t *good = am2z_error_validation("f", "v", "r");
    uint8_t *data, *edited;
    size_t size, esize;
    ck_assert_int_eq(am2z_error_encode(good, &data, &size), AM2Z_OK);
    static const struct {
        const char *key;
        const uint8_t *val;
        size_t vn;
        const char *expect;
    } cases[] = {
        { "code", NULL, 0, "error: missing required field 'code'" },
        { "message", NULL, 0, "error: missing required field 'message'" },
        { "category", (const uint8_t *)"\xa4nope", 5, "error: field 'category' must be a category name" },
        { "kind", (const uint8_t *)"\xa5Weird", 6, "error: field 'kind' must be an error kind name" },
        { "severity", (const uint8_t *)"\x01", 1, "error: field 'severity' must be one of low|medium|high|critical" },
        { "retryable", (const uint8_t *)"\xa3yes", 4, "error: field 'retryable' must be a boolean" },
        { "details", (const uint8_t *)"\x91\x01", 2, "error: field 'details' must be a map" },
        { "code", (const uint8_t *)"\xa0", 1, "error: field 'code' must be a string of 1..4096 bytes" },
        { "ts", (const uint8_t *)"\xa1x", 2, "error: field 'ts' must be an unsigned integer" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_edit(data, size, cases[i].key, cases[i].val, cases[i].vn, &edited, &esize);
        ck_assert_int_eq(am2z_error_decode(edited, esize, &e, err, sizeof err), AM2Z_EPROTO);
        ck_assert_msg(strstr(err, cases[i].expect) != NULL, "'%s' lacks '%s'", err, cases[i].expect);
        ck_assert_ptr_null(e);
        free(edited);
    }
    free(data);

    /* a message longer than AM2Z_CODEC_MAX_TEXT is refused both ways */
    free(good->message);
    good->message = calloc(AM2Z_CODEC_MAX_TEXT + 2, 1);
    memset(good->message, 'm', AM2Z_CODEC_MAX_TEXT + 1);
    ck_assert_int_eq(am2z_error_encode(good, &data, &size), AM2Z_EINVAL);
    good->message[AM2Z_CODEC_MAX_TEXT] = '\0';
    ck_assert_int_eq(am2z_error_encode(good, &data, &size), AM2Z_OK);
    free(data);
    am2z_error_destroy(&good);
    ck_assert_int_eq(am2z_error_encode(NULL, &data, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_error_decode(minimal, sizeof minimal, NULL, err, sizeof err), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_error_decode(V(0x90), &e, err, sizeof err), AM2Z_EPROTO);
}
END_TEST

START_TEST(test_random_buffers_never_crash)
{
    uint64_t seed = 0x12345678abcdefull;
    uint8_t buf[300];
    for (int i = 0; i < 10000; i++) {
        size_t n = (size_t)(s_rand(&seed) % sizeof buf);
        am2z_test_random_bytes(&seed, buf, n);
        if (i % 2 && n > 0)
            buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f));     /* start like a fixmap */
        for (int c = 1; c < AM2Z_CMD_COUNT_; c++)
            s_decode_any((am2z_cmd_t)c, buf, n);
        /* and as frames, with a random command frame */
        am2z_msg_t m;
        char err[128];
        if (am2z_frames_decode((const uint8_t *)AM2Z_PROTOCOL, 6, buf, n > 12 ? 12 : n, buf, n,
                               MAX_BODY, &m, err, sizeof err) == AM2Z_OK)
            am2z_msg_clear(&m);
        uint64_t req;
        int prc = am2z_body_peek_req(buf, n, MAX_BODY, &req);
        ck_assert(prc == AM2Z_OK || prc == AM2Z_ENOTFOUND || prc == AM2Z_EPROTO);
        am2z_error_t *e = NULL;
        int rc = am2z_error_decode(buf, n, &e, err, sizeof err);
        ck_assert(rc == AM2Z_OK || rc == AM2Z_EPROTO);
        am2z_error_destroy(&e);
    }
}
END_TEST

START_TEST(test_mutated_encodings_never_crash)
{
    uint64_t seed = 0xfeedfacecafebeefull;
    for (int c = 1; c < AM2Z_CMD_COUNT_; c++) {
        uint8_t *body;
        size_t size;
        s_encode_sample((am2z_cmd_t)c, &body, &size);
        uint8_t *work = malloc(size);
        ck_assert_ptr_nonnull(work);
        /* every single-bit flip */
        for (size_t bit = 0; bit < size * 8; bit++) {
            memcpy(work, body, size);
            work[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            s_decode_any((am2z_cmd_t)c, work, size);
        }
        /* every truncation (into an exact-size copy, so ASan sees overreads) */
        for (size_t n = 0; n < size; n++) {
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, body, n);
            s_decode_any((am2z_cmd_t)c, cut, n);
            free(cut);
        }
        /* random multi-byte damage */
        for (int i = 0; i < 1000; i++) {
            memcpy(work, body, size);
            int hits = 1 + (int)(s_rand(&seed) % 4);
            for (int h = 0; h < hits; h++)
                work[s_rand(&seed) % size] = (uint8_t)s_rand(&seed);
            s_decode_any((am2z_cmd_t)c, work, size);
        }
        free(work);
        free(body);
    }
}
END_TEST

/*  Packs a random value: scalars of every type, plausible strings (valid
    names, enum names, invalid ones) and small nested containers. */
static void
s_rand_value(msgpack_packer *pk, uint64_t *seed, int depth)
{
    static const char *const strs[] = {
        "p", "job-1", "s@x", "stats", "execution", "ValidationError", "high",
        "a b", "", "resize-image", "x\x01", "name",
    };
    static const char *const keys[] = {
        "name", "conc", "desc", "retry", "mult", "jitter", "max", "exp", "cats",
        "category", "code", "message", "kind", "severity", "retryable", "details", "ts", "zz",
    };
    uint64_t r = s_rand(seed);
    switch (r % 12) {
    case 0: msgpack_pack_uint64(pk, (r >> 8) % 5); break;
    case 1: msgpack_pack_uint64(pk, s_rand(seed)); break;
    case 2: msgpack_pack_int64(pk, -(int64_t)((r >> 8) % 1000) - 1); break;
    case 3: {
        const char *s = strs[(r >> 8) % (sizeof strs / sizeof strs[0])];
        msgpack_pack_str_with_body(pk, s, strlen(s));
        break;
    }
    case 4: (r >> 8) & 1 ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case 5: msgpack_pack_nil(pk); break;
    case 6: msgpack_pack_double(pk, (double)((r >> 8) % 300) / 100.0); break;
    case 7:
    case 8: {
        uint32_t n = depth < 4 ? (uint32_t)((r >> 8) % 5) : 0;
        msgpack_pack_map(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            const char *k = keys[s_rand(seed) % (sizeof keys / sizeof keys[0])];
            msgpack_pack_str_with_body(pk, k, strlen(k));
            s_rand_value(pk, seed, depth + 1);
        }
        break;
    }
    case 9: {
        uint32_t n = depth < 4 ? (uint32_t)((r >> 8) % 3) : 0;
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            s_rand_value(pk, seed, depth + 1);
        break;
    }
    case 10: msgpack_pack_bin_with_body(pk, "ab", 2); break;
    default: msgpack_pack_ext_with_body(pk, "xyz", 3, 1); break;
    }
}

START_TEST(test_structured_mutations_never_crash)
{
    static const char *const keys[] = {
        "req", "job", "proc", "session", "worker", "what", "op", "name", "idem", "state",
        "data", "error", "ok", "keep", "attempt", "depth", "prio", "timeout", "delay",
        "exec_us", "started", "ts", "seq", "credit", "procs",
    };
    uint64_t seed = 42;
    int accepted = 0;
    for (int c = 1; c < AM2Z_CMD_COUNT_; c++) {
        uint8_t *body;
        size_t size;
        s_encode_sample((am2z_cmd_t)c, &body, &size);
        for (int i = 0; i < 1000; i++) {
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            s_rand_value(&pk, &seed, 0);
            const char *key = keys[s_rand(&seed) % (sizeof keys / sizeof keys[0])];
            uint8_t *edited;
            size_t esize;
            s_edit(body, size, key, s_rand(&seed) % 8 ? (const uint8_t *)sb.data : NULL,
                   sb.size, &edited, &esize);
            am2z_msg_t m;
            if (am2z_msg_decode((am2z_cmd_t)c, edited, esize, MAX_BODY, &m, NULL, 0) == AM2Z_OK) {
                accepted++;
                am2z_msg_clear(&m);
            }
            s_decode_any((am2z_cmd_t)c, edited, esize);
            free(edited);
            msgpack_sbuffer_destroy(&sb);
        }
        free(body);
    }
    ck_assert_int_gt(accepted, 100);   /* the generator does reach the accept path */
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_cmd_names_round_trip);
    tcase_add_test(tc, test_every_command_round_trips_with_all_fields);
    tcase_add_test(tc, test_raw_state_and_data_are_copied_byte_for_byte);
    tcase_add_test(tc, test_absent_optional_fields_decode_as_zero);
    tcase_add_test(tc, test_required_fields_missing_are_refused);
    tcase_add_test(tc, test_encode_refuses_what_decode_refuses);
    tcase_add_test(tc, test_wrong_types_are_refused_naming_the_field);
    tcase_add_test(tc, test_scalars_read_as_msgpack_c_reads_them);
    tcase_add_test(tc, test_durations_are_at_most_ten_years);
    tcase_add_test(tc, test_dlq_command_and_query_decode);
    tcase_add_test(tc, test_invalid_ids_and_names_are_refused);
    tcase_add_test(tc, test_procs_are_validated);
    tcase_add_test(tc, test_comps_and_select_are_validated);
    tcase_add_test(tc, test_result_failure_requires_error);
    tcase_add_test(tc, test_done_select_only_with_ok);
    tcase_add_test(tc, test_body_must_be_one_map_within_the_limit);
    tcase_add_test(tc, test_unknown_keys_ignored_duplicates_refused);
    tcase_add_test(tc, test_keys_match_by_bytes_in_any_order);
    tcase_add_test(tc, test_body_with_req_equals_encode_with_req);
    tcase_add_test(tc, test_body_with_req_map_headers_and_refusals);
    tcase_add_test(tc, test_frames_check_signature_and_command);
    tcase_add_test(tc, test_peek_req_reads_req_from_refused_bodies);
    tcase_add_test(tc, test_huge_declared_lengths_are_refused);
    tcase_add_test(tc, test_error_round_trips_every_kind);
    tcase_add_test(tc, test_error_map_is_validated);
    suite_add_tcase(s, tc);

    TCase *fuzz = tcase_create("garbage");
    tcase_set_timeout(fuzz, 100);
    tcase_add_test(fuzz, test_random_buffers_never_crash);
    tcase_add_test(fuzz, test_mutated_encodings_never_crash);
    tcase_add_test(fuzz, test_structured_mutations_never_crash);
    suite_add_tcase(s, fuzz);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
