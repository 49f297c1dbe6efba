/*  fuzz_test.c — Check suite "fuzz": a real am2z-broker (max-frame-size
    64 KiB) and a real am2z-example-worker; the test throws 10,000 random
    and mutated messages at both broker sockets — the frontend as a DEALER
    client, the backend as a DEALER "worker" — then checks that the broker
    is alive, that a normal client's increment still round-trips, and that a
    job accepted before the fuzzing completes.

    Messages (deterministic: am2z_test_random_bytes with a fixed seed, or
    AM2Z_FUZZ_SEED):
      random frames, random frame counts, the right signature with an
      unknown command, valid commands with mutated bodies (bit flips,
      truncation, trailing bytes, huge declared lengths), maps of known keys
      with values of the wrong types, oversize bodies, DONE for jobs the
      sender does not hold, READY with garbage processors, client commands
      on the backend and worker commands on the frontend, BATCHes of
      (mutated) commands: nested, with a missing body, a foreign signature.

    The fuzzing "worker" only ever announces processors named fz-*, so no
    real job is leased to it; the pre-fuzz job runs in a session no
    template names.
*/
#include "am2z_client.h"
#include "am2z_cluster.h"
#include "am2z_codec.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_MESSAGES 10000
#define MAX_FRAME (64 * 1024)

/* ---------------------------------------------------------------------------
   Random input
   ------------------------------------------------------------------------ */

static uint64_t s_seed = 0x5eed0fa2f00dULL;

static uint64_t
s_rand(void)
{
    uint8_t b[8];
    am2z_test_random_bytes(&s_seed, b, sizeof b);
    uint64_t x = 0;
    memcpy(&x, b, sizeof x);
    return x;
}

/*  0..n-1 */
static size_t
s_below(size_t n)
{
    return n ? (size_t)(s_rand() % n) : 0;
}

/*  A growable byte buffer with a tiny msgpack writer. */
typedef struct {
    uint8_t *data;
    size_t size;
    size_t cap;
} s_buf_t;

static void
s_put(s_buf_t *b, const void *p, size_t n)
{
    if (b->size + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->size + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        ck_assert_ptr_nonnull(b->data);
        b->cap = cap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void
s_put_u8(s_buf_t *b, uint8_t v)
{
    s_put(b, &v, 1);
}

static void
s_put_be(s_buf_t *b, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        s_put_u8(b, (uint8_t)(v >> (8 * i)));
}

static void
s_mp_str(s_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (n < 32) {
        s_put_u8(b, (uint8_t)(0xa0 | n));
    } else {
        s_put_u8(b, 0xd9);
        s_put_u8(b, (uint8_t)n);
    }
    s_put(b, s, n);
}

/*  A random msgpack value of any type, nested at most `depth` more. */
static void
s_mp_any(s_buf_t *b, int depth)
{
    switch (s_below(depth > 0 ? 12 : 9)) {
    case 0: s_put_u8(b, 0xc0); break;                            /* nil */
    case 1: s_put_u8(b, s_below(2) ? 0xc3 : 0xc2); break;        /* bool */
    case 2: s_put_u8(b, (uint8_t)s_below(128)); break;           /* fixint */
    case 3: s_put_u8(b, 0xd3); s_put_be(b, s_rand(), 8); break;  /* int64 */
    case 4: s_put_u8(b, 0xcf); s_put_be(b, s_rand(), 8); break;  /* uint64 */
    case 5: s_put_u8(b, 0xcb); s_put_be(b, s_rand(), 8); break;  /* float64 */
    case 6: {                                                     /* str */
        char s[24];
        size_t n = s_below(sizeof s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(' ' + s_below(95));
        s[n] = '\0';
        s_mp_str(b, s);
        break;
    }
    case 7: {                                                     /* bin */
        uint8_t d[16];
        size_t n = s_below(sizeof d);
        am2z_test_random_bytes(&s_seed, d, n);
        s_put_u8(b, 0xc4);
        s_put_u8(b, (uint8_t)n);
        s_put(b, d, n);
        break;
    }
    case 8: s_put_u8(b, (uint8_t)(0xe0 | s_below(32))); break;   /* negative fixint */
    case 9:
    case 10: {                                                    /* array */
        size_t n = s_below(5);
        s_put_u8(b, (uint8_t)(0x90 | n));
        for (size_t i = 0; i < n; i++)
            s_mp_any(b, depth - 1);
        break;
    }
    default: {                                                    /* map */
        size_t n = s_below(4);
        s_put_u8(b, (uint8_t)(0x80 | n));
        for (size_t i = 0; i < n; i++) {
            s_mp_any(b, depth - 1);
            s_mp_any(b, depth - 1);
        }
        break;
    }
    }
}

static const char *const s_keys[] = {
    "req", "job", "proc", "session", "worker", "what", "name", "idem", "state",
    "data", "error", "ok", "keep", "attempt", "depth", "prio", "timeout", "delay",
    "exec_us", "started", "ts", "seq", "credit", "procs", "conc", "retry",
    "category", "code", "message", "kind", "max", "jitter", "mult",
};

/*  A map of known keys with values of random (mostly wrong) types. */
static void
s_wrong_types(s_buf_t *b)
{
    size_t n = 1 + s_below(10);
    s_put_u8(b, (uint8_t)(0x80 | n));
    for (size_t i = 0; i < n; i++) {
        s_mp_str(b, s_keys[s_below(sizeof s_keys / sizeof s_keys[0])]);
        s_mp_any(b, 3);
    }
}

/*  A state map of session `session`, version 1. */
static am2z_state_t *
s_state(const char *session)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &st), AM2Z_OK);
    return st;
}

/*  Encoded valid bodies to mutate, one per command. */
typedef struct {
    const char *cmd;
    uint8_t *body;
    size_t size;
} s_template_t;

static s_template_t s_templates[32];
static size_t s_ntemplates;
static char s_pre_job[AM2Z_JOB_ID_MAX + 1];      /* the job accepted before */

static void
s_template(const am2z_msg_t *msg)
{
    ck_assert_uint_lt(s_ntemplates, sizeof s_templates / sizeof s_templates[0]);
    s_template_t *t = &s_templates[s_ntemplates];
    int rc = am2z_msg_encode(msg, &t->body, &t->size);
    ck_assert_msg(rc == AM2Z_OK, "template %s: %s", am2z_cmd_name(msg->cmd),
                  am2z_strerror(rc));
    t->cmd = am2z_cmd_name(msg->cmd);
    s_ntemplates++;
}

static void
s_make_templates(void)
{
    am2z_state_t *st = s_state("fz-session");
    size_t state_size = am2z_state_size(st);
    uint8_t *state = malloc(state_size);
    ck_assert_ptr_nonnull(state);
    memcpy(state, am2z_state_data(st), state_size);
    am2z_state_destroy(&st);
    am2z_msg_t m;

    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = 7; m.processor = "increment"; m.session = "fz-session";
    m.state = state; m.state_size = state_size; m.priority = 3; m.timeout_ms = 1000;
    m.idem_key = "fz-idem";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = 8; m.processor = "fz-nope"; m.session = "fz-session";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_FETCH);
    m.req = 9; m.job = "0123456789abcdef0123456789abcdef";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_QUERY);
    m.req = 10; m.what = "stats";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_QUERY);
    m.req = 11; m.what = "state"; m.session = "fz-session";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_STOP_SESSION);
    m.req = 12; m.session = "fz-stop"; m.keep_state = true;
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_HEARTBEAT);
    m.worker = "fzw-1";
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_CREDIT);
    m.processor = "fz-proc-1"; m.credit = 5;
    s_template(&m);
    am2z_proc_desc_t procs[2] = {
        { .name = "fz-proc-1", .description = "fuzz", .concurrency = 2,
          .timeout_ms = 100, .retry = { .max_attempts = 3, .exponential = true,
                                        .delay_ms = 5, .multiplier = 2.0,
                                        .jitter = 0.5 } },
        { .name = "fz-proc-2", .concurrency = 1 },
    };
    am2z_msg_init(&m, AM2Z_CMD_READY);
    m.worker = "fzw-1"; m.procs = procs; m.nprocs = 2;
    s_template(&m);
    am2z_error_t *err = am2z_error_new(AM2Z_CAT_EXECUTION, "FZ", "fuzzed failure");
    am2z_msg_init(&m, AM2Z_CMD_DONE);
    m.job = s_pre_job; m.attempt = 1; m.success = false; m.error = err;
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_DONE);
    m.job = s_pre_job; m.attempt = 1; m.success = true;
    m.state = state; m.state_size = state_size; m.exec_us = 5;
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_EVENT);
    m.name = "custom:fz"; m.job = s_pre_job; m.attempt = 1;
    s_template(&m);
    am2z_msg_init(&m, AM2Z_CMD_DISCONNECT);
    m.worker = "fzw-1";
    s_template(&m);
    am2z_error_destroy(&err);
    free(state);
}

/*  Mutates b in place: bit flips, truncation, trailing bytes, or a huge
    declared length spliced in. */
static void
s_mutate(s_buf_t *b)
{
    switch (s_below(5)) {
    case 0:                                       /* bit flips */
        for (size_t i = 0, n = 1 + s_below(8); i < n && b->size; i++)
            b->data[s_below(b->size)] ^= (uint8_t)(1u << s_below(8));
        break;
    case 1:                                       /* truncation */
        b->size = s_below(b->size + 1);
        break;
    case 2: {                                     /* trailing garbage */
        uint8_t g[8];
        size_t n = 1 + s_below(sizeof g);
        am2z_test_random_bytes(&s_seed, g, n);
        s_put(b, g, n);
        break;
    }
    case 3: {                                     /* huge declared length */
        static const uint8_t heads[] = { 0xdb, 0xc6, 0xdd, 0xdf, 0xc9 };
        if (!b->size)
            break;
        size_t at = s_below(b->size);
        uint8_t huge[5] = { heads[s_below(sizeof heads)], 0xff, 0xff, 0xff, 0xf0 };
        size_t keep = b->size - at;
        uint8_t *tail = malloc(keep);
        ck_assert_ptr_nonnull(tail);
        memcpy(tail, b->data + at, keep);
        b->size = at;
        s_put(b, huge, sizeof huge);
        s_put(b, tail, keep);
        free(tail);
        break;
    }
    default:                                      /* byte overwrite */
        if (b->size)
            b->data[s_below(b->size)] = (uint8_t)s_rand();
        break;
    }
}

/* ---------------------------------------------------------------------------
   Sending
   ------------------------------------------------------------------------ */

typedef struct {
    zsock_t *sock;
    size_t sent;                  /* messages handed to the socket */
    size_t replies;               /* messages received back */
    size_t errors;                /* of which ERROR */
} s_peer_t;

/*  Reads whatever the broker sent back, without waiting. */
static void
s_drain(s_peer_t *p)
{
    while (zsock_events(p->sock) & ZMQ_POLLIN) {
        zmsg_t *m = zmsg_recv(p->sock);
        if (!m)
            break;
        p->replies++;
        zframe_t *f = zmsg_first(m);
        f = f ? zmsg_next(m) : NULL;
        if (f && zframe_size(f) == 5 && memcmp(zframe_data(f), "ERROR", 5) == 0)
            p->errors++;
        zmsg_destroy(&m);
    }
}

static void
s_send_frames(s_peer_t *p, size_t n, const void *const *data, const size_t *sizes)
{
    zmsg_t *m = zmsg_new();
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < n; i++)
        zmsg_addmem(m, data[i], sizes[i]);
    if (zmsg_send(&m, p->sock) == 0)
        p->sent++;
    zmsg_destroy(&m);
    if (p->sent % 64 == 0)
        s_drain(p);
}

static void
s_send3(s_peer_t *p, const char *sig, const char *cmd, const uint8_t *body, size_t size)
{
    const void *d[3] = { sig, cmd, body };
    size_t z[3] = { strlen(sig), strlen(cmd), size };
    s_send_frames(p, 3, d, z);
}

static const char *const s_worker_cmds[] = { "READY", "CREDIT", "DONE", "EVENT",
                                             "HEARTBEAT", "DISCONNECT" };
static const char *const s_client_cmds[] = { "SUBMIT", "FETCH", "QUERY",
                                             "STOP_SESSION", "HEARTBEAT" };

/*  One fuzz message to p (backend when `backend`). */
static void
s_fuzz_one(s_peer_t *p, bool backend, size_t i)
{
    s_buf_t b = { 0 };
    switch (s_below(11)) {
    case 0: {                                     /* random frames */
        size_t n = 1 + s_below(5);
        uint8_t frames[5][64];
        const void *d[5];
        size_t z[5];
        for (size_t f = 0; f < n; f++) {
            z[f] = s_below(sizeof frames[f] + 1);
            am2z_test_random_bytes(&s_seed, frames[f], z[f]);
            d[f] = frames[f];
        }
        s_send_frames(p, n, d, z);
        break;
    }
    case 1: {                                     /* signature, random frame count */
        size_t n = 1 + s_below(8);
        const void *d[8];
        size_t z[8];
        static const uint8_t empty_map = 0x80;
        for (size_t f = 0; f < n; f++) {
            d[f] = f == 0 ? (const void *)AM2Z_PROTOCOL
                 : f == 1 ? (const void *)(backend ? "DONE" : "SUBMIT")
                          : (const void *)&empty_map;
            z[f] = f == 0 ? strlen(AM2Z_PROTOCOL) : f == 1 ? (backend ? 4 : 6) : 1;
        }
        s_send_frames(p, n, d, z);
        break;
    }
    case 2: {                                     /* unknown command, bad signature */
        char cmd[12];
        size_t n = 1 + s_below(sizeof cmd - 1);
        for (size_t c = 0; c < n; c++)
            cmd[c] = (char)('A' + s_below(26));
        cmd[n] = '\0';
        const s_template_t *t = &s_templates[s_below(s_ntemplates)];
        s_send3(p, s_below(4) ? AM2Z_PROTOCOL : "AM2Z/9", s_below(4) ? cmd : t->cmd,
                t->body, t->size);
        break;
    }
    case 3:
    case 4:
    case 5: {                                     /* valid command, mutated body */
        const s_template_t *t = &s_templates[s_below(s_ntemplates)];
        s_put(&b, t->body, t->size);
        for (size_t k = 0, n = 1 + s_below(3); k < n; k++)
            s_mutate(&b);
        s_send3(p, AM2Z_PROTOCOL, t->cmd, b.data, b.size);
        break;
    }
    case 6: {                                     /* known keys, wrong types */
        s_wrong_types(&b);
        const char *cmd = backend ? s_worker_cmds[s_below(6)] : s_client_cmds[s_below(5)];
        s_send3(p, AM2Z_PROTOCOL, cmd, b.data, b.size);
        break;
    }
    case 7: {                                     /* valid template as is */
        const s_template_t *t = &s_templates[s_below(s_ntemplates)];
        s_send3(p, AM2Z_PROTOCOL, t->cmd, t->body, t->size);
        break;
    }
    case 8: {                                     /* DONE / READY specials */
        am2z_msg_t m;
        if (s_below(2)) {
            char job[AM2Z_ID_LEN + 1];
            for (size_t c = 0; c < AM2Z_ID_LEN; c++)
                job[c] = "0123456789abcdef"[s_below(16)];
            job[AM2Z_ID_LEN] = '\0';
            am2z_error_t *err = am2z_error_new(AM2Z_CAT_RESOURCE, "FZ", "not held");
            am2z_msg_init(&m, AM2Z_CMD_DONE);
            m.job = s_below(3) ? job : s_pre_job;
            m.attempt = (uint32_t)(1 + s_below(3));
            m.success = false;
            m.error = err;
            uint8_t *body = NULL;
            size_t size = 0;
            ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
            s_send3(p, AM2Z_PROTOCOL, "DONE", body, size);
            free(body);
            am2z_error_destroy(&err);
        } else {
            /*  READY whose procs are garbage: random values, bad names */
            s_put_u8(&b, 0x82);
            s_mp_str(&b, "worker");
            char id[16];
            snprintf(id, sizeof id, "fzw-%zu", i % 7);
            s_mp_str(&b, id);
            s_mp_str(&b, "procs");
            size_t n = s_below(4);
            s_put_u8(&b, (uint8_t)(0x90 | n));
            for (size_t k = 0; k < n; k++) {
                switch (s_below(3)) {
                case 0: s_mp_any(&b, 3); break;
                case 1:
                    s_put_u8(&b, 0x82);
                    s_mp_str(&b, "name");
                    s_mp_str(&b, s_below(2) ? "fz bad name!" : "fz-proc-3");
                    s_mp_str(&b, "conc");
                    s_mp_any(&b, 1);
                    break;
                default:
                    s_wrong_types(&b);
                    break;
                }
            }
            s_send3(p, AM2Z_PROTOCOL, "READY", b.data, b.size);
        }
        break;
    }
    case 9: {                                     /* BATCH of (mutated) commands */
        enum { PAIRS = 7 };
        size_t n = 1 + s_below(2 * PAIRS);        /* frames after the marker; odd:
                                                     the last command has no body */
        const void *d[2 + 2 * PAIRS];
        size_t z[2 + 2 * PAIRS];
        s_buf_t bodies[PAIRS] = { { 0 } };
        d[0] = s_below(8) ? AM2Z_PROTOCOL : "AM2Z/9";
        z[0] = strlen(d[0]);
        d[1] = AM2Z_BATCH;
        z[1] = strlen(AM2Z_BATCH);
        for (size_t f = 0; f < n; f += 2) {
            const s_template_t *t = &s_templates[s_below(s_ntemplates)];
            d[2 + f] = s_below(10) ? t->cmd : AM2Z_BATCH;    /* sometimes nested */
            z[2 + f] = strlen(d[2 + f]);
            if (f + 1 < n) {
                s_buf_t *body = &bodies[f / 2];
                s_put(body, t->body, t->size);
                if (s_below(2))
                    s_mutate(body);
                d[3 + f] = body->data;
                z[3 + f] = body->size;
            }
        }
        s_send_frames(p, 2 + n, d, z);
        for (size_t k = 0; k < PAIRS; k++)
            free(bodies[k].data);
        break;
    }
    default: {                                    /* oversize, or the other side's commands */
        if (i % 97 == 0) {
            size_t size = MAX_FRAME + 1 + s_below(3 * MAX_FRAME);
            uint8_t *big = malloc(size);
            ck_assert_ptr_nonnull(big);
            memset(big, 0xa1, size);
            big[0] = 0x81;
            s_send3(p, AM2Z_PROTOCOL, backend ? "DONE" : "SUBMIT", big, size);
            free(big);
        } else {
            const char *cmd = backend ? s_client_cmds[s_below(5)] : s_worker_cmds[s_below(6)];
            const s_template_t *t = &s_templates[s_below(s_ntemplates)];
            s_send3(p, AM2Z_PROTOCOL, cmd, t->body, t->size);
        }
        break;
    }
    }
    free(b.data);
}

/* ---------------------------------------------------------------------------
   The case
   ------------------------------------------------------------------------ */

static bool
s_alive(pid_t pid)
{
    int status = 0;
    return waitpid(pid, &status, WNOHANG) == 0;
}

START_TEST(test_fuzz_broker_survives_10000_bad_messages_on_both_sockets)
{
    /*  broker: 64 KiB frames, silent; the real worker only logs errors */
    static const char *const flags[] = { "--heartbeat", "100ms", "--liveness", "5", NULL };
    const char *const bextra[] = { "--max-frame-size", "64KiB", "--durability", "periodic",
                                   "--log-level", "off", NULL };
    const char *const wextra[] = { "--id", "fuzz-real-worker", "--log-level", "error", NULL };
    am2z_cluster_t cl = { .flags = flags };
    am2z_cluster_start_broker(&cl, "fuzz", bextra);
    am2z_testproc_t *worker = am2z_cluster_add_worker(&cl, wextra);
    const char *fe = cl.frontend, *be = cl.backend;

    am2z_client_t *c = NULL;
    ck_assert_int_eq(am2z_client_connect(fe, &c), AM2Z_OK);
    am2z_client_set_timeout(c, 10000);
    /*  wait (bounded) for the worker's processors, then a job accepted
        before the fuzzing, long enough to run through it */
    bool known = false;
    for (int i = 0; i < 500 && !known; i++) {
        ck_assert_int_eq(am2z_client_is_processor_registered(c, "sleep", &known), AM2Z_OK);
        if (!known)
            nanosleep(&(struct timespec){ .tv_nsec = 10000000L }, NULL);
    }
    ck_assert(known);
    am2z_state_t *pre = NULL, *pre1 = NULL;
    ck_assert_int_eq(am2z_state_new("prefuzz-keep-7", am2z_clock_wall_ms(), &pre), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "ms", 1000);
    ck_assert_int_eq(am2z_state_apply(pre, ch, am2z_clock_wall_ms(), 0, &pre1), AM2Z_OK);
    am2z_changes_destroy(&ch);
    ck_assert_int_eq(am2z_client_submit(c, "sleep", pre1, "prefuzz-keep-7", NULL, s_pre_job),
                     AM2Z_OK);
    /*  AM2Z_FUZZ_SEED=N explores other inputs; the default is fixed */
    const char *seed = getenv("AM2Z_FUZZ_SEED");
    if (seed && *seed)
        s_seed = strtoull(seed, NULL, 0);
    fprintf(stderr, "fuzz: seed %llu\n", (unsigned long long)s_seed);
    s_make_templates();

    s_peer_t front = { .sock = zsock_new_dealer(fe) };
    s_peer_t back = { .sock = zsock_new_dealer(be) };
    ck_assert_ptr_nonnull(front.sock);
    ck_assert_ptr_nonnull(back.sock);
    zsock_set_sndtimeo(front.sock, 1000);
    zsock_set_sndtimeo(back.sock, 1000);
    for (size_t i = 0; i < FUZZ_MESSAGES; i++) {
        s_fuzz_one(i % 2 ? &back : &front, i % 2, i);
        if (i % 1000 == 999)
            ck_assert_msg(s_alive(cl.broker.pid), "broker died after %zu messages", i + 1);
    }
    /*  the broker answered the fuzzing client (ERRORs for refused requests)
        and is alive */
    for (int i = 0; i < 100 && front.errors == 0; i++) {
        zsock_set_rcvtimeo(front.sock, 10);
        s_drain(&front);
        nanosleep(&(struct timespec){ .tv_nsec = 10000000L }, NULL);
    }
    fprintf(stderr, "fuzz: sent frontend %zu backend %zu; replies %zu (%zu ERROR), %zu\n",
            front.sent, back.sent, front.replies, front.errors, back.replies);
    ck_assert_uint_ge(front.sent + back.sent, FUZZ_MESSAGES * 9 / 10);
    ck_assert_uint_gt(front.errors, 0);
    /*  Closed with linger, so libzmq writes out what is queued before it
        takes the connections down: closing at once while its I/O thread is
        in the middle of a multipart message has aborted this process
        inside libzmq (session_base.cpp, "Resource temporarily
        unavailable"; once in 40 runs next to four CPU-burning loops) */
    zsock_set_linger(front.sock, 2000);
    zsock_set_linger(back.sock, 2000);
    zsock_destroy(&front.sock);
    zsock_destroy(&back.sock);
    ck_assert(s_alive(cl.broker.pid));

    /*  a normal client still works: increment round trip */
    am2z_client_t *n = NULL;
    ck_assert_int_eq(am2z_client_connect(fe, &n), AM2Z_OK);
    am2z_client_set_timeout(n, 10000);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(n, "increment", NULL, "after-fuzz", NULL, &r),
                     AM2Z_OK);
    ck_assert_msg(r->success, "increment failed: %s", r->error ? r->error->message : "?");
    int64_t count = 0;
    ck_assert_int_eq(am2z_state_get_int(r->state, "count", &count), AM2Z_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_uint_eq(am2z_state_version(r->state), 2);
    am2z_result_destroy(&r);

    /*  and the job accepted before the fuzzing completed, once */
    ck_assert_int_eq(am2z_client_wait(c, s_pre_job, 15000, &r), AM2Z_OK);
    ck_assert_msg(r->success, "pre-fuzz job failed: %s", r->error ? r->error->message : "?");
    uint64_t pre_version = am2z_state_version(pre1) + 1;
    ck_assert_uint_eq(am2z_state_version(r->state), pre_version);
    am2z_result_destroy(&r);
    am2z_state_t *stored = NULL;
    ck_assert_int_eq(am2z_client_get_state(n, "prefuzz-keep-7", &stored), AM2Z_OK);
    ck_assert_uint_eq(am2z_state_version(stored), pre_version);
    am2z_state_destroy(&stored);

    am2z_client_destroy(&n);
    am2z_client_destroy(&c);
    am2z_state_destroy(&pre);
    am2z_state_destroy(&pre1);
    for (size_t i = 0; i < s_ntemplates; i++)
        free(s_templates[i].body);
    /*  the real worker, too, must drain and exit 0 */
    int status = am2z_testproc_stop(worker, SIGTERM, 15000);
    ck_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    am2z_cluster_stop(&cl);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("fuzz");
    TCase *tc = tcase_create("broker");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fuzz_broker_survives_10000_bad_messages_on_both_sockets);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return am2z_test_run(s_suite());
}
