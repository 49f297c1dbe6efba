/*  broker_test.c — Check suite "broker": a broker actor on 127.0.0.1
    ephemeral ports and a temporary LMDB directory, driven by a hand-played
    worker (DEALER: READY / JOB / DONE) and client (DEALER: SUBMIT / RESULT)
    speaking the codec directly. Every wait is a bounded poll for the
    message needed; "nothing arrives" checks wait a fixed short window.
*/
#include "am2z_broker.h"
#include "am2z_clock.h"
#include "am2z_cluster.h"
#include "am2z_codec.h"
#include "am2z_compose.h"
#include "am2z_envelope.h"
#include "am2z_log.h"
#include "am2z_state.h"
#include "am2z_store.h"
#include "am2z_jobrec.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <czmq.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_WAIT 3000               /* ms: for a message that must come */
#define S_QUIET 300               /* ms: window in which nothing may come */
#define S_MAXBODY (4u << 20)

typedef struct {
    char dir[512];
    am2z_broker_config_t cfg;
    zactor_t *actor;
    char ep[3][AM2Z_ENDPOINT_MAX];
} fixture_t;

static void
s_broker_start(fixture_t *fx, bool fresh)
{
    if (fresh) {
        am2z_test_tmpdir("broker", fx->dir, sizeof fx->dir);
        am2z_broker_config_defaults(&fx->cfg);
        snprintf(fx->cfg.common.data_dir, sizeof fx->cfg.common.data_dir, "%s", fx->dir);
        snprintf(fx->cfg.frontend, sizeof fx->cfg.frontend, "tcp://127.0.0.1:*");
        snprintf(fx->cfg.backend, sizeof fx->cfg.backend, "tcp://127.0.0.1:*");
        snprintf(fx->cfg.events, sizeof fx->cfg.events, "tcp://127.0.0.1:*");
        fx->cfg.common.map_size = 64u << 20;
        fx->cfg.common.log_level = AM2Z_LOG_ERROR;
        fx->cfg.heartbeat_ms = 1000;   /* test workers are silent: 5 s grace */
        fx->cfg.liveness = 5;
    }
    fx->actor = zactor_new(am2z_broker_actor, &fx->cfg);
    ck_assert_ptr_nonnull(fx->actor);
    zsock_set_rcvtimeo(fx->actor, S_WAIT);
    ck_assert_int_eq(zstr_send(fx->actor, "ENDPOINTS"), 0);
    zmsg_t *reply = zmsg_recv(fx->actor);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(zmsg_size(reply), 3);
    for (int i = 0; i < 3; i++) {
        char *s = zmsg_popstr(reply);
        snprintf(fx->ep[i], AM2Z_ENDPOINT_MAX, "%s", s);
        free(s);
    }
    zmsg_destroy(&reply);
    ck_assert_msg(strncmp(fx->ep[0], "tcp://127.0.0.1:", 16) == 0, "frontend %s", fx->ep[0]);
}

static void
s_broker_stop(fixture_t *fx)
{
    zactor_destroy(&fx->actor);
}

/* ---------------------------------------------------------------------------
   Wire helpers
   ------------------------------------------------------------------------ */

static void
s_send(zsock_t *sock, const am2z_msg_t *msg)
{
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(msg, &body, &size), AM2Z_OK);
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, AM2Z_PROTOCOL);
    zmsg_addstr(zm, am2z_cmd_name(msg->cmd));
    zmsg_addmem(zm, body, size);
    ck_assert_int_eq(zmsg_send(&zm, sock), 0);
    free(body);
}

/*  Receives until a message of command `want` (AM2Z_CMD_INVALID: any but
    an EVENT) arrives or timeout_ms pass. Names of EVENTs skipped on the
    way are appended to trace (comma separated) when given. Returns true
    with *out filled (caller clears). */
static bool
s_recv(zsock_t *sock, am2z_cmd_t want, int timeout_ms, am2z_msg_t *out, char *trace,
       size_t trace_size)
{
    int64_t deadline = zclock_mono() + timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            return false;
        zsock_set_rcvtimeo(sock, (int)left);
        zmsg_t *zm = zmsg_recv(sock);
        if (!zm)
            return false;
        if (zmsg_size(zm) != 3) {
            zmsg_destroy(&zm);
            continue;
        }
        zframe_t *sig = zmsg_first(zm), *cmd = zmsg_next(zm), *body = zmsg_next(zm);
        am2z_msg_t m;
        int rc = am2z_frames_decode(zframe_data(sig), zframe_size(sig), zframe_data(cmd),
                                    zframe_size(cmd), zframe_data(body), zframe_size(body),
                                    S_MAXBODY, &m, NULL, 0);
        zmsg_destroy(&zm);
        if (rc != AM2Z_OK)
            continue;
        if (m.cmd == want || (want == AM2Z_CMD_INVALID && m.cmd != AM2Z_CMD_EVENT)) {
            *out = m;
            return true;
        }
        if (m.cmd == AM2Z_CMD_EVENT && trace && m.name) {
            size_t len = strlen(trace);
            snprintf(trace + len, trace_size - len, "%s%s", len ? "," : "", m.name);
        }
        am2z_msg_clear(&m);
    }
}

static void
s_expect(zsock_t *sock, am2z_cmd_t want, am2z_msg_t *out)
{
    ck_assert_msg(s_recv(sock, want, S_WAIT, out, NULL, 0), "no %s within %d ms",
                  am2z_cmd_name(want), S_WAIT);
}

static void
s_expect_none(zsock_t *sock, am2z_cmd_t cmd)
{
    am2z_msg_t m;
    bool got = s_recv(sock, cmd, S_QUIET, &m, NULL, 0);
    if (got)
        am2z_msg_clear(&m);
    ck_assert_msg(!got, "unexpected %s", am2z_cmd_name(cmd));
}

static zsock_t *
s_worker(const fixture_t *fx, const char *id, const char *proc, uint32_t conc)
{
    zsock_t *w = zsock_new_dealer(fx->ep[1]);
    ck_assert_ptr_nonnull(w);
    am2z_proc_desc_t desc;
    memset(&desc, 0, sizeof desc);
    desc.name = (char *)proc;
    desc.description = (char *)"test processor";
    desc.concurrency = conc;
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_READY);
    m.worker = (char *)id;
    m.procs = &desc;
    m.nprocs = 1;
    s_send(w, &m);
    return w;
}

static zsock_t *
s_client(const fixture_t *fx)
{
    zsock_t *c = zsock_new_dealer(fx->ep[0]);
    ck_assert_ptr_nonnull(c);
    return c;
}

static uint64_t s_req = 100;

/*  QUERY and return its REPLY data (caller frees), or NULL on ERROR. */
static uint8_t *
s_query(zsock_t *client, const char *what, const char *session, const char *job,
        size_t *size)
{
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_QUERY);
    m.req = ++s_req;
    m.what = (char *)what;
    m.session = (char *)session;
    m.job = (char *)job;
    s_send(client, &m);
    int64_t deadline = zclock_mono() + S_WAIT;
    while (zclock_mono() < deadline) {
        zsock_set_rcvtimeo(client, S_WAIT);
        zmsg_t *zm = zmsg_recv(client);
        ck_assert_ptr_nonnull(zm);
        zframe_t *sig = zmsg_first(zm), *cmd = zmsg_next(zm), *body = zmsg_next(zm);
        am2z_msg_t r;
        int rc = am2z_frames_decode(zframe_data(sig), zframe_size(sig), zframe_data(cmd),
                                    zframe_size(cmd), zframe_data(body), zframe_size(body),
                                    S_MAXBODY, &r, NULL, 0);
        zmsg_destroy(&zm);
        if (rc != AM2Z_OK)
            continue;
        if ((r.cmd == AM2Z_CMD_REPLY || r.cmd == AM2Z_CMD_ERROR) && r.req == s_req) {
            uint8_t *data = r.cmd == AM2Z_CMD_REPLY ? r.data : NULL;
            *size = r.data_size;
            r.data = NULL;
            am2z_msg_clear(&r);
            return data;
        }
        am2z_msg_clear(&r);
    }
    ck_abort_msg("no reply to QUERY %s", what);
    return NULL;
}

/*  Waits until QUERY processors lists `proc` (READY was processed). */
static void
s_wait_known(zsock_t *client, const char *proc)
{
    for (int i = 0; i < 300; i++) {
        size_t size = 0;
        uint8_t *data = s_query(client, "processors", NULL, NULL, &size);
        bool found = data && memmem(data, size, proc, strlen(proc)) != NULL;
        free(data);
        if (found)
            return;
        zclock_sleep(10);
    }
    ck_abort_msg("processor %s never registered", proc);
}

/*  SUBMIT asking for the job's events on this connection (as a client
    library with event subscriptions does). */
static uint64_t
s_submit_ev(zsock_t *client, const char *proc, const char *session, bool events)
{
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = ++s_req;
    m.processor = (char *)proc;
    m.session = (char *)session;
    m.events = events;
    s_send(client, &m);
    return m.req;
}

static uint64_t
s_submit(zsock_t *client, const char *proc, const char *session)
{
    return s_submit_ev(client, proc, session, true);
}

/*  Submits and waits for ACCEPTED; copies the job id out. */
static void
s_submit_ok(zsock_t *client, const char *proc, const char *session, char *job_id)
{
    uint64_t req = s_submit(client, proc, session);
    am2z_msg_t acc;
    s_expect(client, AM2Z_CMD_ACCEPTED, &acc);
    ck_assert_uint_eq(acc.req, req);
    ck_assert_uint_eq(strlen(acc.job), AM2Z_ID_LEN);
    strcpy(job_id, acc.job);
    am2z_msg_clear(&acc);
}

/*  Plays the processor: count = count + 1, and answers DONE. */
static void
s_done_inc(zsock_t *worker, const am2z_msg_t *job, uint32_t attempt)
{
    am2z_state_t *in = NULL, *out = NULL;
    ck_assert_int_eq(am2z_state_decode(job->state, job->state_size, &in), AM2Z_OK);
    int64_t n = 0;
    am2z_state_get_int(in, "count", &n);
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "count", n + 1);
    ck_assert_int_eq(am2z_state_apply(in, ch, zclock_time(), 0, &out), AM2Z_OK);
    am2z_msg_t d;
    am2z_msg_init(&d, AM2Z_CMD_DONE);
    d.job = job->job;
    d.attempt = attempt;
    d.success = true;
    d.state = (uint8_t *)am2z_state_data(out);
    d.state_size = am2z_state_size(out);
    d.exec_us = 7;
    d.started_at_ms = (uint64_t)zclock_time();
    s_send(worker, &d);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&in);
    am2z_state_destroy(&out);
}

/*  Takes the worker's next JOB and answers it with s_done_inc; its id goes
    to job_id (AM2Z_JOB_ID_MAX + 1 bytes) when given. */
static void
s_serve_inc(zsock_t *worker, char *job_id)
{
    am2z_msg_t j;
    s_expect(worker, AM2Z_CMD_JOB, &j);
    s_done_inc(worker, &j, j.attempt);
    if (job_id)
        snprintf(job_id, AM2Z_JOB_ID_MAX + 1, "%s", j.job);
    am2z_msg_clear(&j);
}

/*  A plain SUBMIT in `session` is ACCEPTED, runs and its RESULT succeeds
    (the broker still serves after whatever a test threw at it). */
static void
s_still_serves(zsock_t *client, zsock_t *worker, const char *session)
{
    char job[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(client, "inc", session, job);
    s_serve_inc(worker, NULL);
    am2z_msg_t r;
    s_expect(client, AM2Z_CMD_RESULT, &r);
    ck_assert(r.success);
    am2z_msg_clear(&r);
}

static uint64_t
s_state_version(const uint8_t *data, size_t size)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_decode(data, size, &st), AM2Z_OK);
    uint64_t v = am2z_state_version(st);
    am2z_state_destroy(&st);
    return v;
}

static int64_t
s_state_count(const uint8_t *data, size_t size)
{
    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_state_decode(data, size, &st), AM2Z_OK);
    int64_t n = -1;
    am2z_state_get_int(st, "count", &n);
    am2z_state_destroy(&st);
    return n;
}

/*  Reads map[k1][k2] (k2 may be NULL) as an unsigned integer. */
static bool
s_map_uint(const uint8_t *data, size_t size, const char *k1, const char *k2, uint64_t *out)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool found = false;
    if (msgpack_unpack_next(&up, (const char *)data, size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *o = &up.data;
        const char *keys[2] = { k1, k2 };
        for (int level = 0; level < 2 && keys[level] && o; level++) {
            const msgpack_object *next = NULL;
            if (o->type == MSGPACK_OBJECT_MAP)
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                    const msgpack_object *k = &o->via.map.ptr[i].key;
                    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(keys[level])
                        && memcmp(k->via.str.ptr, keys[level], k->via.str.size) == 0)
                        next = &o->via.map.ptr[i].val;
                }
            o = next;
        }
        if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            *out = o->via.u64;
            found = true;
        }
    }
    msgpack_unpacked_destroy(&up);
    return found;
}

/* ---------------------------------------------------------------------------
   Tests
   ------------------------------------------------------------------------ */

START_TEST(test_broker_submit_is_accepted_and_dispatched)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char job[64];
    s_submit_ok(c, "inc", "s1", job);
    am2z_msg_t j;
    s_expect(w, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, job);
    ck_assert_uint_eq(j.attempt, 1);
    ck_assert_str_eq(j.processor, "inc");
    ck_assert_str_eq(j.session, "s1");
    ck_assert_uint_eq(s_state_version(j.state, j.state_size), 1);
    am2z_msg_clear(&j);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  A job keeps its submitter's routing id compactly (inline up to 22
    bytes, on the heap beyond): clients whose ids are at, just past and far
    past that edge, up to ZeroMQ's 255, get their ACCEPTED, events and
    RESULT. */
START_TEST(test_broker_answers_clients_with_long_routing_ids)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    static const size_t lens[] = { 1, 22, 23, 255 };
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        uint8_t id[255];
        for (size_t k = 0; k < lens[i]; k++)
            id[k] = (uint8_t)('A' + (k + i) % 26);
        zsock_t *c = zsock_new(ZMQ_DEALER);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(zmq_setsockopt(zsock_resolve(c), ZMQ_ROUTING_ID, id, lens[i]), 0);
        ck_assert_int_eq(zsock_connect(c, "%s", fx.ep[0]), 0);
        s_wait_known(c, "inc");
        char session[16];
        snprintf(session, sizeof session, "long-%zu", lens[i]);
        uint64_t req = s_submit(c, "inc", session);
        am2z_msg_t j, r, acc;
        char trace[512] = "";
        ck_assert_msg(s_recv(c, AM2Z_CMD_ACCEPTED, S_WAIT, &acc, trace, sizeof trace),
                      "no ACCEPTED for a %zu-byte routing id", lens[i]);
        s_expect(w, AM2Z_CMD_JOB, &j);
        s_done_inc(w, &j, j.attempt);
        ck_assert_msg(s_recv(c, AM2Z_CMD_RESULT, S_WAIT, &r, trace, sizeof trace),
                      "no RESULT for a %zu-byte routing id", lens[i]);
        ck_assert_uint_eq(r.req, req);
        ck_assert_str_eq(r.job, acc.job);
        ck_assert_str_eq(trace, "session:created,processor:active,processor:job:completed");
        am2z_msg_clear(&acc);
        am2z_msg_clear(&j);
        am2z_msg_clear(&r);
        zsock_destroy(&c);
    }
    zsock_destroy(&w);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_result_reaches_submitter_with_version_bump)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    zsock_t *sub = zsock_new_sub(fx.ep[2], "");
    s_wait_known(c, "inc");
    uint64_t req = s_submit(c, "inc", "s1");
    am2z_msg_t j, r, acc;
    char trace[512] = "";
    ck_assert(s_recv(c, AM2Z_CMD_ACCEPTED, S_WAIT, &acc, trace, sizeof trace));
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, j.attempt);
    ck_assert(s_recv(c, AM2Z_CMD_RESULT, S_WAIT, &r, trace, sizeof trace));
    ck_assert_uint_eq(r.req, req);
    ck_assert_str_eq(r.job, acc.job);
    ck_assert(r.success);
    ck_assert_uint_eq(r.attempt, 1);
    ck_assert_str_eq(r.worker, "w1");
    ck_assert_uint_eq(s_state_version(r.state, r.state_size), 2);
    ck_assert_int_eq(s_state_count(r.state, r.state_size), 1);
    /* events of the job, in order, before its RESULT */
    ck_assert_str_eq(trace, "session:created,processor:active,processor:job:completed");
    /* and on PUB, with the name as first frame */
    zsock_set_rcvtimeo(sub, S_WAIT);
    char *name = zstr_recv(sub);
    ck_assert_ptr_nonnull(name);
    ck_assert_str_eq(name, "session:created");
    zstr_free(&name);
    am2z_msg_clear(&acc);
    am2z_msg_clear(&j);
    am2z_msg_clear(&r);

    /* a client that did not ask for events gets none on its connection
       (PUB still has them) — just ACCEPTED and RESULT */
    trace[0] = '\0';
    req = s_submit_ev(c, "inc", "s1", false);
    ck_assert(s_recv(c, AM2Z_CMD_ACCEPTED, S_WAIT, &acc, trace, sizeof trace));
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, j.attempt);
    ck_assert(s_recv(c, AM2Z_CMD_RESULT, S_WAIT, &r, trace, sizeof trace));
    ck_assert_uint_eq(r.req, req);
    ck_assert_str_eq(trace, "");
    am2z_msg_clear(&acc);
    am2z_msg_clear(&j);
    am2z_msg_clear(&r);
    zsock_destroy(&sub);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  The next message on sock, whatever it is (false after S_QUIET). */
static bool
s_recv_any(zsock_t *sock, am2z_msg_t *out)
{
    zsock_set_rcvtimeo(sock, S_QUIET);
    zmsg_t *zm = zmsg_recv(sock);
    if (!zm)
        return false;
    ck_assert_uint_eq(zmsg_size(zm), 3);
    zframe_t *sig = zmsg_first(zm), *cmd = zmsg_next(zm), *body = zmsg_next(zm);
    ck_assert_int_eq(am2z_frames_decode(zframe_data(sig), zframe_size(sig), zframe_data(cmd),
                                        zframe_size(cmd), zframe_data(body), zframe_size(body),
                                        S_MAXBODY, out, NULL, 0),
                     AM2Z_OK);
    zmsg_destroy(&zm);
    return true;
}

/*  SUBMIT.noack: the RESULT (req echoed) is the only answer; an idempotent
    SUBMIT is ACCEPTED all the same. */
START_TEST(test_broker_noack_submit_is_answered_by_its_result)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = ++s_req;
    m.processor = (char *)"inc";
    m.session = (char *)"noack-1";
    m.noack = true;
    s_send(c, &m);
    char ran[AM2Z_JOB_ID_MAX + 1];
    s_serve_inc(w, ran);
    am2z_msg_t r;
    ck_assert(s_recv_any(c, &r));
    ck_assert_int_eq(r.cmd, AM2Z_CMD_RESULT);     /* no ACCEPTED before it */
    ck_assert_uint_eq(r.req, m.req);
    ck_assert_str_eq(r.job, ran);
    ck_assert(r.success);
    am2z_msg_clear(&r);
    ck_assert(!s_recv_any(c, &r));                /* and nothing after it */

    /* refused: ERROR as always */
    m.req = ++s_req;
    m.processor = (char *)"nope";
    s_send(c, &m);
    ck_assert(s_recv_any(c, &r));
    ck_assert_int_eq(r.cmd, AM2Z_CMD_ERROR);
    ck_assert_uint_eq(r.req, m.req);
    am2z_msg_clear(&r);

    /* with an idempotency key: ACCEPTED (it names the job that answers) */
    m.req = ++s_req;
    m.processor = (char *)"inc";
    m.idem_key = (char *)"noack-key";
    s_send(c, &m);
    am2z_msg_t acc;
    s_expect(c, AM2Z_CMD_ACCEPTED, &acc);
    ck_assert_uint_eq(acc.req, m.req);
    s_serve_inc(w, ran);
    ck_assert_str_eq(ran, acc.job);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, acc.job);
    am2z_msg_clear(&acc);
    am2z_msg_clear(&r);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  SUBMIT.job: the client's own job id is the job's id (its RESULT and a
    FETCH use it); an id of another form, one already in use (live or
    finished), or one on a repeatable job is refused by name. */
START_TEST(test_broker_submit_takes_the_clients_job_id)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char chosen[AM2Z_ID_LEN + 1];
    ck_assert_int_eq(am2z_id_new(chosen), AM2Z_OK);
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = ++s_req;
    m.processor = (char *)"inc";
    m.session = (char *)"chosen-1";
    m.noack = true;
    m.job = chosen;
    s_send(c, &m);
    char ran[AM2Z_JOB_ID_MAX + 1];
    s_serve_inc(w, ran);
    ck_assert_str_eq(ran, chosen);                /* the worker ran it by that id */
    am2z_msg_t r;
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_uint_eq(r.req, m.req);
    ck_assert_str_eq(r.job, chosen);
    ck_assert(r.success);
    am2z_msg_clear(&r);

    /* the same id again: in use (its result is kept) */
    const struct { const char *id; uint64_t every_ms; const char *why; } bad[] = {
        { chosen, 0, "already in use" },
        { "0123456789ABCDEF0123456789abcdef", 0, "32 lowercase hex" },
        { "0123456789abcdef", 0, "32 lowercase hex" },
        { "0123456789abcdef0123456789abcde.", 0, "32 lowercase hex" },
        { NULL, 60000, "repeatable" },
    };
    char fresh[AM2Z_ID_LEN + 1];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(am2z_id_new(fresh), AM2Z_OK);
        m.req = ++s_req;
        m.job = (char *)(bad[i].id ? bad[i].id : fresh);
        m.every_ms = bad[i].every_ms;
        m.noack = bad[i].every_ms == 0;
        s_send(c, &m);
        s_expect(c, AM2Z_CMD_ERROR, &r);
        ck_assert_uint_eq(r.req, m.req);
        ck_assert_ptr_nonnull(r.error);
        ck_assert_msg(strstr(r.error->message, bad[i].why), "case %zu: %s", i,
                      r.error->message);
        am2z_msg_clear(&r);
    }
    m.every_ms = 0;

    /* a live job's id is in use too */
    char live[AM2Z_ID_LEN + 1];
    ck_assert_int_eq(am2z_id_new(live), AM2Z_OK);
    m.req = ++s_req;
    m.job = live;
    m.noack = false;
    s_send(c, &m);
    am2z_msg_t acc;
    s_expect(c, AM2Z_CMD_ACCEPTED, &acc);
    ck_assert_str_eq(acc.job, live);
    am2z_msg_clear(&acc);
    m.req = ++s_req;
    s_send(c, &m);
    s_expect(c, AM2Z_CMD_ERROR, &r);
    ck_assert_ptr_nonnull(strstr(r.error->message, "already in use"));
    am2z_msg_clear(&r);
    s_serve_inc(w, ran);
    ck_assert_str_eq(ran, live);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, live);
    am2z_msg_clear(&r);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_state_persists_across_jobs_in_session)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    for (int i = 1; i <= 3; i++) {
        char job[64];
        s_submit_ok(c, "inc", "s1", job);
        am2z_msg_t j, r;
        s_expect(w, AM2Z_CMD_JOB, &j);
        ck_assert_uint_eq(s_state_version(j.state, j.state_size), (uint64_t)i);
        ck_assert_int_eq(s_state_count(j.state, j.state_size), i == 1 ? -1 : i - 1);
        s_done_inc(w, &j, j.attempt);
        s_expect(c, AM2Z_CMD_RESULT, &r);
        ck_assert(r.success);
        ck_assert_uint_eq(s_state_version(r.state, r.state_size), (uint64_t)i + 1);
        am2z_msg_clear(&j);
        am2z_msg_clear(&r);
    }
    size_t size = 0;
    uint8_t *state = s_query(c, "state", "s1", NULL, &size);
    ck_assert_ptr_nonnull(state);
    ck_assert_uint_eq(s_state_version(state, size), 4);
    ck_assert_int_eq(s_state_count(state, size), 3);
    free(state);
    /* another session starts from scratch */
    ck_assert_ptr_null(s_query(c, "state", "s2", NULL, &size));
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_unknown_processor_lists_available)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    uint64_t req = s_submit(c, "nope", "s1");
    am2z_msg_t e;
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_uint_eq(e.req, req);
    ck_assert_int_eq(e.error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    ck_assert_ptr_nonnull(e.error->details);
    ck_assert_ptr_nonnull(memmem(e.error->details, e.error->details_size, "inc", 3));
    am2z_msg_clear(&e);
    s_expect_none(w, AM2Z_CMD_JOB);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_one_active_job_per_session)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 4);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char a1[64], a2[64], b1[64];
    s_submit_ok(c, "inc", "A", a1);
    s_submit_ok(c, "inc", "A", a2);
    am2z_msg_t j1, j2, jb, r;
    s_expect(w, AM2Z_CMD_JOB, &j1);
    ck_assert_str_eq(j1.job, a1);
    s_expect_none(w, AM2Z_CMD_JOB);          /* A's second job waits */
    s_submit_ok(c, "inc", "B", b1);           /* another session runs meanwhile */
    s_expect(w, AM2Z_CMD_JOB, &jb);
    ck_assert_str_eq(jb.job, b1);
    s_done_inc(w, &j1, 1);
    s_expect(w, AM2Z_CMD_JOB, &j2);
    ck_assert_str_eq(j2.job, a2);
    ck_assert_uint_eq(s_state_version(j2.state, j2.state_size), 2);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, a1);
    am2z_msg_clear(&r);
    am2z_msg_clear(&j1);
    am2z_msg_clear(&j2);
    am2z_msg_clear(&jb);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_dispatch_only_against_credit)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char a[64], b[64], d[64];
    s_submit_ok(c, "inc", "A", a);
    s_submit_ok(c, "inc", "B", b);
    s_submit_ok(c, "inc", "C", d);
    am2z_msg_t j1, j2, j3;
    s_expect(w, AM2Z_CMD_JOB, &j1);
    s_expect_none(w, AM2Z_CMD_JOB);          /* one slot, one lease */
    am2z_msg_t cr;
    am2z_msg_init(&cr, AM2Z_CMD_CREDIT);
    cr.processor = (char *)"inc";
    cr.credit = 1;
    s_send(w, &cr);                           /* an explicit slot */
    s_expect(w, AM2Z_CMD_JOB, &j2);
    s_expect_none(w, AM2Z_CMD_JOB);
    s_done_inc(w, &j1, 1);                    /* DONE returns its slot */
    s_expect(w, AM2Z_CMD_JOB, &j3);
    ck_assert_str_ne(j1.job, j2.job);
    ck_assert_str_ne(j2.job, j3.job);
    am2z_msg_clear(&j1);
    am2z_msg_clear(&j2);
    am2z_msg_clear(&j3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_stale_done_is_dropped)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char job[64];
    s_submit_ok(c, "inc", "s1", job);
    am2z_msg_t j, r, disc;
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, 2);                     /* wrong attempt */
    s_expect_none(c, AM2Z_CMD_RESULT);
    zsock_t *intruder = zsock_new_dealer(fx.ep[1]);
    s_done_inc(intruder, &j, 1);              /* not the lease holder */
    s_expect(intruder, AM2Z_CMD_DISCONNECT, &disc);
    am2z_msg_clear(&disc);
    s_expect_none(c, AM2Z_CMD_RESULT);
    s_done_inc(w, &j, 1);                     /* the real lease */
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert(r.success);
    ck_assert_uint_eq(s_state_version(r.state, r.state_size), 2);
    am2z_msg_clear(&r);
    s_done_inc(w, &j, 1);                     /* a duplicate */
    s_expect_none(c, AM2Z_CMD_RESULT);
    am2z_msg_clear(&j);
    zsock_destroy(&intruder);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  Sends (signature, cmd, the bytes packed in sb) as one message. */
static void
s_send_packed(zsock_t *sock, const char *cmd, const msgpack_sbuffer *sb)
{
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, "AM2Z/1");
    zmsg_addstr(zm, cmd);
    zmsg_addmem(zm, sb->data, sb->size);
    zmsg_send(&zm, sock);
}

START_TEST(test_broker_rejects_malformed_frames_and_keeps_serving)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    am2z_msg_t e;
    /* too few frames */
    zstr_sendx(c, "AM2Z/1", "SUBMIT", NULL);
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_int_eq(e.error->category, AM2Z_CAT_PROTOCOL);
    am2z_msg_clear(&e);
    /* wrong signature, unknown command, garbage body */
    zstr_sendx(c, "AM2Z/9", "SUBMIT", "x", NULL);
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_ptr_nonnull(strstr(e.error->message, "protocol"));
    am2z_msg_clear(&e);
    zstr_sendx(c, "AM2Z/1", "FROB", "x", NULL);
    s_expect(c, AM2Z_CMD_ERROR, &e);
    am2z_msg_clear(&e);
    uint64_t seed = 42;
    uint8_t junk[300];
    for (int i = 0; i < 20; i++) {
        am2z_test_random_bytes(&seed, junk, sizeof junk);
        zmsg_t *zm = zmsg_new();
        zmsg_addstr(zm, "AM2Z/1");
        zmsg_addstr(zm, i % 2 ? "SUBMIT" : "QUERY");
        zmsg_addmem(zm, junk, (size_t)(i * 13 % 300) + 1);
        zmsg_send(&zm, c);
        s_expect(c, AM2Z_CMD_ERROR, &e);
        am2z_msg_clear(&e);
    }
    /* a well-formed map with a wrong type: the ERROR still carries req */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "req", 3);
        msgpack_pack_uint64(&pk, 4242);
        msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "proc", 4);
        msgpack_pack_int(&pk, 5);
        msgpack_pack_str(&pk, 7); msgpack_pack_str_body(&pk, "session", 7);
        msgpack_pack_str(&pk, 1); msgpack_pack_str_body(&pk, "s", 1);
        s_send_packed(c, "SUBMIT", &sb);
        s_expect(c, AM2Z_CMD_ERROR, &e);
        ck_assert_uint_eq(e.req, 4242);
        am2z_msg_clear(&e);
        /* same junk from the worker: logged and dropped */
        s_send_packed(w, "DONE", &sb);
        msgpack_sbuffer_destroy(&sb);
    }
    zstr_sendx(w, "garbage", NULL);
    zstr_sendx(w, "AM2Z/1", "DONE", "\xc1", NULL);
    /* a worker-only command on the frontend */
    am2z_msg_t ready;
    am2z_msg_init(&ready, AM2Z_CMD_HEARTBEAT);
    s_send(c, &ready);
    am2z_msg_t cr;
    am2z_msg_init(&cr, AM2Z_CMD_CREDIT);
    cr.processor = (char *)"inc";
    cr.credit = 1;
    s_send(c, &cr);
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_ptr_nonnull(strstr(e.error->message, "CREDIT is not accepted on the frontend"));
    am2z_msg_clear(&e);
    /* a worker's command with a partial body: named as out of place, not
       as a missing field, and the ERROR still carries req */
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "req", 3);
        msgpack_pack_uint64(&pk, 77);
        s_send_packed(c, "JOB", &sb);
        msgpack_sbuffer_destroy(&sb);
        s_expect(c, AM2Z_CMD_ERROR, &e);
        ck_assert_msg(strstr(e.error->message, "JOB is not accepted on the frontend"), "%s",
                      e.error->message);
        ck_assert_uint_eq(e.req, 77);
        am2z_msg_clear(&e);
    }
    /* and it still serves */
    s_still_serves(c, w, "s1");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  Appends (command, encoded body) to a BATCH being built. */
static void
s_batch_add(zmsg_t *zm, const am2z_msg_t *msg)
{
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(msg, &body, &size), AM2Z_OK);
    zmsg_addstr(zm, am2z_cmd_name(msg->cmd));
    zmsg_addmem(zm, body, size);
    free(body);
}

/*  A new BATCH: [signature][BATCH]. */
static zmsg_t *
s_batch_new(const char *sig)
{
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, sig);
    zmsg_addstr(zm, AM2Z_BATCH);
    return zm;
}

/*  Reads until n commands arrived (each pair of a BATCH counts) or S_WAIT
    passes; decodes them into out (caller clears). *batches counts the
    BATCH messages among them, s_largest the most commands one message
    carried. Returns how many arrived. */
static size_t s_largest;

static size_t
s_collect(zsock_t *sock, size_t n, am2z_msg_t *out, size_t *batches)
{
    s_largest = 0;
    size_t got = 0;
    *batches = 0;
    int64_t deadline = zclock_mono() + S_WAIT;
    while (got < n) {
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            break;
        zsock_set_rcvtimeo(sock, (int)left);
        zmsg_t *zm = zmsg_recv(sock);
        if (!zm)
            break;
        zframe_t *sig = zmsg_pop(zm);
        zframe_t *cmd = zmsg_pop(zm);
        if (cmd && zframe_streq(cmd, AM2Z_BATCH)) {
            (*batches)++;
            zframe_destroy(&cmd);
            cmd = zmsg_pop(zm);
        }
        size_t pairs = 0;
        while (cmd) {
            if (++pairs > s_largest)
                s_largest = pairs;
            zframe_t *body = zmsg_pop(zm);
            ck_assert_ptr_nonnull(body);
            ck_assert_uint_lt(got, n);
            ck_assert_int_eq(am2z_frames_decode(zframe_data(sig), zframe_size(sig),
                                                zframe_data(cmd), zframe_size(cmd),
                                                zframe_data(body), zframe_size(body),
                                                S_MAXBODY, &out[got], NULL, 0),
                             AM2Z_OK);
            got++;
            zframe_destroy(&cmd);
            zframe_destroy(&body);
            cmd = zmsg_pop(zm);
        }
        zframe_destroy(&sig);
        zmsg_destroy(&zm);
    }
    return got;
}

/*  The answer to req among msgs[0..n), or NULL. */
static am2z_msg_t *
s_answer(am2z_msg_t *msgs, size_t n, uint64_t req)
{
    for (size_t i = 0; i < n; i++)
        if (msgs[i].req == req)
            return &msgs[i];
    return NULL;
}

START_TEST(test_broker_batch_is_answered_in_batches_and_refuses_bad_pairs)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 4);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");

    /* two good SUBMITs, a body with a wrong type, a nested BATCH */
    zmsg_t *zm = s_batch_new(AM2Z_PROTOCOL);
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.processor = (char *)"inc";
    m.req = 1;
    m.session = (char *)"b-1";
    s_batch_add(zm, &m);
    m.req = 2;
    m.session = (char *)"b-2";
    s_batch_add(zm, &m);
    static const char wrong_type[] = "\x83\xa3req\x03\xa4proc\x05\xa7session\xa1s";
    zmsg_addstr(zm, "SUBMIT");
    zmsg_addmem(zm, wrong_type, sizeof wrong_type - 1);
    m.req = 4;
    zmsg_addstr(zm, AM2Z_BATCH);
    {
        uint8_t *body = NULL;
        size_t size = 0;
        ck_assert_int_eq(am2z_msg_encode(&m, &body, &size), AM2Z_OK);
        zmsg_addmem(zm, body, size);
        free(body);
    }
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    am2z_msg_t got[8];
    size_t batches = 0;
    ck_assert_uint_eq(s_collect(c, 4, got, &batches), 4);
    ck_assert_uint_ge(batches, 1);    /* answers to a BATCH come in BATCHes */
    ck_assert_int_eq(s_answer(got, 4, 1)->cmd, AM2Z_CMD_ACCEPTED);
    ck_assert_int_eq(s_answer(got, 4, 2)->cmd, AM2Z_CMD_ACCEPTED);
    am2z_msg_t *bad = s_answer(got, 4, 3);
    ck_assert_int_eq(bad->cmd, AM2Z_CMD_ERROR);
    ck_assert_ptr_nonnull(strstr(bad->error->message, "'proc'"));
    am2z_msg_t *nested = s_answer(got, 4, 4);
    ck_assert_int_eq(nested->cmd, AM2Z_CMD_ERROR);
    ck_assert_ptr_nonnull(strstr(nested->error->message, "do not nest"));
    for (size_t i = 0; i < 4; i++)
        am2z_msg_clear(&got[i]);

    /* the accepted ones run and their RESULTs reach the client */
    for (int i = 0; i < 2; i++)
        s_serve_inc(w, NULL);
    ck_assert_uint_eq(s_collect(c, 2, got, &batches), 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(got[i].cmd, AM2Z_CMD_RESULT);
        ck_assert(got[i].success);
        am2z_msg_clear(&got[i]);
    }

    /* a command without its body ends the batch; what came before runs */
    zm = s_batch_new(AM2Z_PROTOCOL);
    m.req = 5;
    m.session = (char *)"b-5";
    s_batch_add(zm, &m);
    zmsg_addstr(zm, "SUBMIT");
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    ck_assert_uint_eq(s_collect(c, 2, got, &batches), 2);
    ck_assert_int_eq(s_answer(got, 2, 5)->cmd, AM2Z_CMD_ACCEPTED);
    am2z_msg_t *nobody = s_answer(got, 2, 0);
    ck_assert_int_eq(nobody->cmd, AM2Z_CMD_ERROR);
    ck_assert_ptr_nonnull(strstr(nobody->error->message, "no body"));
    am2z_msg_clear(&got[0]);
    am2z_msg_clear(&got[1]);
    s_serve_inc(w, NULL);
    ck_assert_uint_eq(s_collect(c, 1, got, &batches), 1);
    ck_assert_int_eq(got[0].cmd, AM2Z_CMD_RESULT);
    am2z_msg_clear(&got[0]);

    /* more than AM2Z_BATCH_MAX commands: the first ones are answered (in
       BATCHes of at most AM2Z_BATCH_MAX), the rest refused once */
    zm = s_batch_new(AM2Z_PROTOCOL);
    am2z_msg_t q;
    am2z_msg_init(&q, AM2Z_CMD_QUERY);
    q.what = (char *)"stats";
    for (int i = 0; i < AM2Z_BATCH_MAX + 3; i++) {
        q.req = 1000 + (uint64_t)i;
        s_batch_add(zm, &q);
    }
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    size_t want = AM2Z_BATCH_MAX + 1;
    am2z_msg_t *many = calloc(want, sizeof *many);
    ck_assert_uint_eq(s_collect(c, want, many, &batches), want);
    ck_assert_uint_ge(batches, 1);
    ck_assert_uint_eq(s_largest, AM2Z_BATCH_MAX);
    size_t replies = 0, errors = 0;
    for (size_t i = 0; i < want; i++) {
        if (many[i].cmd == AM2Z_CMD_REPLY)
            replies++;
        if (many[i].cmd == AM2Z_CMD_ERROR) {
            errors++;
            ck_assert_uint_eq(many[i].req, 1000 + AM2Z_BATCH_MAX);
            ck_assert_ptr_nonnull(strstr(many[i].error->message, "more than 1024"));
        }
        am2z_msg_clear(&many[i]);
    }
    free(many);
    ck_assert_uint_eq(replies, AM2Z_BATCH_MAX);
    ck_assert_uint_eq(errors, 1);

    /* a BATCH under a foreign signature: refused once, naming it */
    zm = s_batch_new("AM2Z/9");
    s_batch_add(zm, &q);
    s_batch_add(zm, &q);
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    am2z_msg_t e;
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_ptr_nonnull(strstr(e.error->message, "unsupported protocol 'AM2Z/9'"));
    am2z_msg_clear(&e);
    s_expect_none(c, AM2Z_CMD_ERROR);

    /* and a plain client is still served with plain messages */
    s_still_serves(c, w, "plain");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_invalid_done_state_fails_job_and_keeps_state)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char job[64];
    s_submit_ok(c, "inc", "s1", job);
    am2z_msg_t j, r;
    s_expect(w, AM2Z_CMD_JOB, &j);
    /* echo the input state: version not bumped */
    am2z_msg_t d;
    am2z_msg_init(&d, AM2Z_CMD_DONE);
    d.job = j.job;
    d.attempt = 1;
    d.success = true;
    d.state = j.state;
    d.state_size = j.state_size;
    s_send(w, &d);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert(!r.success);
    ck_assert_str_eq(r.error->code, "INVALID_STATE");
    am2z_msg_clear(&r);
    am2z_msg_clear(&j);
    size_t size = 0;
    ck_assert_ptr_null(s_query(c, "state", "s1", NULL, &size));
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_queries_report_counts)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char j1[64], j2[64], j3[64];
    s_submit_ok(c, "inc", "A", j1);
    am2z_msg_t j, r;
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, 1);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    am2z_msg_clear(&r);
    am2z_msg_clear(&j);
    s_submit_ok(c, "inc", "A", j2);           /* leased */
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_submit_ok(c, "inc", "B", j3);           /* waits: no credit */

    size_t size = 0;
    uint64_t v = 0;
    uint8_t *data = s_query(c, "stats", NULL, NULL, &size);
    ck_assert_ptr_nonnull(data);
    ck_assert(s_map_uint(data, size, "completed", NULL, &v)); ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "running", NULL, &v));   ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "waiting", NULL, &v));   ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "workers", NULL, &v));   ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "sessions", NULL, &v));  ck_assert_uint_eq(v, 2);
    ck_assert(s_map_uint(data, size, "processors", NULL, &v)); ck_assert_uint_eq(v, 1);
    free(data);
    data = s_query(c, "queues", NULL, NULL, &size);
    ck_assert(s_map_uint(data, size, "inc", "completed", &v)); ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "inc", "active", &v));    ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "inc", "waiting", &v));   ck_assert_uint_eq(v, 1);
    ck_assert(s_map_uint(data, size, "inc", "failed", &v));    ck_assert_uint_eq(v, 0);
    free(data);
    data = s_query(c, "session-stats", "B", NULL, &size);
    ck_assert(s_map_uint(data, size, "inc", "completed", &v)); ck_assert_uint_eq(v, 0);
    ck_assert(s_map_uint(data, size, "inc", "waiting", &v));   ck_assert_uint_eq(v, 1);
    free(data);
    data = s_query(c, "job", NULL, j1, &size);
    ck_assert_ptr_nonnull(memmem(data, size, "completed", 9));
    free(data);
    data = s_query(c, "job", NULL, j3, &size);
    ck_assert_ptr_nonnull(memmem(data, size, "waiting", 7));
    free(data);
    data = s_query(c, "sessions", NULL, NULL, &size);
    ck_assert_ptr_nonnull(memmem(data, size, "A", 1));
    ck_assert_ptr_nonnull(memmem(data, size, "B", 1));
    free(data);
    data = s_query(c, "processors", NULL, NULL, &size);
    ck_assert_ptr_nonnull(memmem(data, size, "test processor", 14));
    free(data);
    am2z_msg_clear(&j);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_stop_session_cancels_and_deletes_state)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char j1[64], j2[64], j3[64];
    s_submit_ok(c, "inc", "S", j1);
    am2z_msg_t j, r;
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, 1);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    am2z_msg_clear(&r);
    am2z_msg_clear(&j);
    s_submit_ok(c, "inc", "S", j2);            /* running */
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_submit_ok(c, "inc", "S", j3);            /* queued */

    am2z_msg_t stop;
    am2z_msg_init(&stop, AM2Z_CMD_STOP_SESSION);
    stop.req = ++s_req;
    stop.session = (char *)"S";
    s_send(c, &stop);
    /* both jobs fail at once; the REPLY waits for the running one to
       answer its CANCEL (or for stop-grace) */
    int failed = 0;
    int64_t deadline = zclock_mono() + S_WAIT;
    while (failed < 2 && zclock_mono() < deadline) {
        am2z_msg_t m;
        if (!s_recv(c, AM2Z_CMD_INVALID, 50, &m, NULL, 0))
            continue;
        if (m.cmd == AM2Z_CMD_RESULT) {
            ck_assert(!m.success);
            ck_assert_str_eq(m.error->code, "SESSION_STOPPED");
            failed++;
        } else {
            /* the REPLY waits for the running job (stop-grace is 5 s) */
            ck_assert_msg(m.cmd != AM2Z_CMD_REPLY, "REPLY before the running job stopped");
        }
        am2z_msg_clear(&m);
    }
    ck_assert_int_eq(failed, 2);
    am2z_msg_t cancel;
    s_expect(w, AM2Z_CMD_CANCEL, &cancel);
    ck_assert_str_eq(cancel.job, j2);
    am2z_msg_clear(&cancel);
    /* the cancelled job's outcome is discarded; it ends the stop */
    s_done_inc(w, &j, 1);
    bool replied = false;
    deadline = zclock_mono() + S_WAIT;
    while (!replied && zclock_mono() < deadline) {
        am2z_msg_t m;
        if (!s_recv(c, AM2Z_CMD_INVALID, 50, &m, NULL, 0))
            continue;
        ck_assert_msg(m.cmd == AM2Z_CMD_REPLY, "unexpected %s", am2z_cmd_name(m.cmd));
        ck_assert_uint_eq(m.req, stop.req);
        ck_assert(m.success);
        uint64_t n = UINT64_MAX;
        ck_assert(s_map_uint(m.data, m.data_size, "abandoned", NULL, &n));
        ck_assert_uint_eq(n, 0);          /* the running job answered in time */
        replied = true;
        am2z_msg_clear(&m);
    }
    ck_assert_msg(replied, "no REPLY to STOP_SESSION within %d ms", S_WAIT);
    s_expect_none(c, AM2Z_CMD_RESULT);
    size_t size = 0;
    ck_assert_ptr_null(s_query(c, "state", "S", NULL, &size));
    /* the session starts afresh */
    char j4[64];
    am2z_msg_clear(&j);
    s_submit_ok(c, "inc", "S", j4);
    s_expect(w, AM2Z_CMD_JOB, &j);
    ck_assert_uint_eq(s_state_version(j.state, j.state_size), 1);
    am2z_msg_clear(&j);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_fetch_returns_stored_result)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char j1[64];
    s_submit_ok(c, "inc", "s1", j1);
    am2z_msg_t j, r;
    s_expect(w, AM2Z_CMD_JOB, &j);
    /* a second client fetches while the job runs: status, then the RESULT */
    zsock_t *c2 = s_client(&fx);
    am2z_msg_t f;
    am2z_msg_init(&f, AM2Z_CMD_FETCH);
    f.req = 77;
    f.job = j1;
    s_send(c2, &f);
    am2z_msg_t reply;
    s_expect(c2, AM2Z_CMD_REPLY, &reply);
    ck_assert_uint_eq(reply.req, 77);
    ck_assert_ptr_nonnull(memmem(reply.data, reply.data_size, "active", 6));
    am2z_msg_clear(&reply);
    s_done_inc(w, &j, 1);
    s_expect(c2, AM2Z_CMD_RESULT, &r);
    ck_assert_uint_eq(r.req, 77);
    ck_assert(r.success);
    am2z_msg_clear(&r);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    am2z_msg_clear(&r);
    /* after the fact, from a new connection */
    zsock_t *c3 = s_client(&fx);
    f.req = 78;
    s_send(c3, &f);
    s_expect(c3, AM2Z_CMD_RESULT, &r);
    ck_assert_uint_eq(r.req, 78);
    ck_assert_str_eq(r.job, j1);
    ck_assert(r.success);
    ck_assert_uint_eq(s_state_version(r.state, r.state_size), 2);
    am2z_msg_clear(&r);
    /* unknown id */
    f.req = 79;
    f.job = (char *)"00000000000000000000000000000000";
    s_send(c3, &f);
    am2z_msg_t e;
    s_expect(c3, AM2Z_CMD_ERROR, &e);
    ck_assert_uint_eq(e.req, 79);
    ck_assert_int_eq(e.error->category, AM2Z_CAT_NOT_FOUND);
    am2z_msg_clear(&e);
    am2z_msg_clear(&j);
    zsock_destroy(&c2);
    zsock_destroy(&c3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  Stops the broker once a turn after what c sent has run (its queue is
    on disk), closes w and c, starts it again on the same data and returns
    a new client, having checked that `waiting` jobs were reloaded. */
static zsock_t *
s_restart_expecting_waiting(fixture_t *fx, zsock_t **w, zsock_t **c, uint64_t waiting)
{
    size_t size = 0;
    free(s_query(*c, "stats", NULL, NULL, &size));   /* a later turn has run */
    zsock_destroy(w);
    zsock_destroy(c);
    s_broker_stop(fx);
    s_broker_start(fx, false);
    zsock_t *client = s_client(fx);
    uint8_t *data = s_query(client, "stats", NULL, NULL, &size);
    uint64_t v = 0;
    ck_assert(s_map_uint(data, size, "waiting", NULL, &v));
    ck_assert_uint_eq(v, waiting);
    free(data);
    return client;
}

START_TEST(test_broker_restart_reloads_pending_jobs)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char a[64], b[64];
    s_submit_ok(c, "inc", "A", a);
    s_submit_ok(c, "inc", "B", b);
    am2z_msg_t j;
    s_expect(w, AM2Z_CMD_JOB, &j);            /* A leased, B waits */
    ck_assert_str_eq(j.job, a);
    am2z_msg_clear(&j);
    c = s_restart_expecting_waiting(&fx, &w, &c, 2);
    w = s_worker(&fx, "w2", "inc", 2);
    am2z_msg_t ja, jb, r;
    s_expect(w, AM2Z_CMD_JOB, &ja);
    s_expect(w, AM2Z_CMD_JOB, &jb);
    if (strcmp(ja.job, a) != 0) {
        am2z_msg_t t = ja;
        ja = jb;
        jb = t;
    }
    ck_assert_str_eq(ja.job, a);
    ck_assert_uint_eq(ja.attempt, 2);        /* the lost lease counted */
    ck_assert_str_eq(jb.job, b);
    ck_assert_uint_eq(jb.attempt, 1);
    s_done_inc(w, &ja, ja.attempt);
    am2z_msg_t f;
    am2z_msg_init(&f, AM2Z_CMD_FETCH);
    f.req = 5;
    f.job = a;
    /* FETCH until the stored result is there */
    bool done = false;
    for (int i = 0; i < 100 && !done; i++) {
        s_send(c, &f);
        if (s_recv(c, AM2Z_CMD_RESULT, 50, &r, NULL, 0)) {
            done = true;
            ck_assert(r.success);
            ck_assert_uint_eq(r.attempt, 2);
            am2z_msg_clear(&r);
        }
    }
    ck_assert(done);
    am2z_msg_clear(&ja);
    am2z_msg_clear(&jb);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_dead_worker_lease_returns)
{
    fixture_t fx;
    am2z_test_tmpdir("broker", fx.dir, sizeof fx.dir);
    am2z_broker_config_defaults(&fx.cfg);
    snprintf(fx.cfg.common.data_dir, sizeof fx.cfg.common.data_dir, "%s", fx.dir);
    snprintf(fx.cfg.frontend, sizeof fx.cfg.frontend, "tcp://127.0.0.1:*");
    snprintf(fx.cfg.backend, sizeof fx.cfg.backend, "tcp://127.0.0.1:*");
    snprintf(fx.cfg.events, sizeof fx.cfg.events, "tcp://127.0.0.1:*");
    fx.cfg.common.map_size = 64u << 20;
    fx.cfg.common.log_level = AM2Z_LOG_ERROR;
    fx.cfg.heartbeat_ms = 100;
    fx.cfg.liveness = 3;
    s_broker_start(&fx, false);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char a[64];
    s_submit_ok(c, "inc", "A", a);
    am2z_msg_t j;
    s_expect(w, AM2Z_CMD_JOB, &j);
    am2z_msg_clear(&j);
    zsock_destroy(&w);                        /* silent from now on */
    zsock_t *w2 = s_worker(&fx, "w2", "inc", 1);
    /* w2 heartbeats while w1's liveness (3 x 100 ms) runs out */
    am2z_msg_t hb;
    am2z_msg_init(&hb, AM2Z_CMD_HEARTBEAT);
    bool got = false;
    for (int i = 0; i < 40 && !got; i++) {
        s_send(w2, &hb);
        got = s_recv(w2, AM2Z_CMD_JOB, 50, &j, NULL, 0);
    }
    ck_assert(got);
    ck_assert_str_eq(j.job, a);
    ck_assert_uint_eq(j.attempt, 2);
    s_done_inc(w2, &j, 2);
    am2z_msg_t r;
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert(r.success);
    ck_assert_uint_eq(r.attempt, 2);
    am2z_msg_clear(&r);
    am2z_msg_clear(&j);
    zsock_destroy(&w2);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_map_full_refuses_submits_and_keeps_serving)
{
    fixture_t fx;
    am2z_test_tmpdir("broker", fx.dir, sizeof fx.dir);
    am2z_broker_config_defaults(&fx.cfg);
    snprintf(fx.cfg.common.data_dir, sizeof fx.cfg.common.data_dir, "%s", fx.dir);
    snprintf(fx.cfg.frontend, sizeof fx.cfg.frontend, "tcp://127.0.0.1:*");
    snprintf(fx.cfg.backend, sizeof fx.cfg.backend, "tcp://127.0.0.1:*");
    snprintf(fx.cfg.events, sizeof fx.cfg.events, "tcp://127.0.0.1:*");
    fx.cfg.common.map_size = 256u << 10;       /* 256 KiB: fills fast */
    fx.cfg.common.log_level = AM2Z_LOG_OFF;
    fx.cfg.heartbeat_ms = 1000;
    fx.cfg.liveness = 5;
    s_broker_start(&fx, false);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    /* a 32 KiB user state per job */
    static char big[32 * 1024];
    memset(big, 'x', sizeof big - 1);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "blob", 4);
    msgpack_pack_str(&pk, sizeof big); msgpack_pack_str_body(&pk, big, sizeof big);
    bool refused = false;
    for (int i = 0; i < 64 && !refused; i++) {
        am2z_msg_t m, r;
        am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
        m.req = ++s_req;
        m.processor = (char *)"inc";
        m.session = (char *)"full";
        m.state = (uint8_t *)sb.data;
        m.state_size = sb.size;
        s_send(c, &m);
        int64_t deadline = zclock_mono() + S_WAIT;
        bool answered = false;
        while (!answered && zclock_mono() < deadline) {
            zsock_set_rcvtimeo(c, S_WAIT);
            zmsg_t *zm = zmsg_recv(c);
            ck_assert_ptr_nonnull(zm);
            zframe_t *f1 = zmsg_first(zm), *f2 = zmsg_next(zm), *f3 = zmsg_next(zm);
            ck_assert_int_eq(am2z_frames_decode(zframe_data(f1), zframe_size(f1),
                                                zframe_data(f2), zframe_size(f2),
                                                zframe_data(f3), zframe_size(f3),
                                                S_MAXBODY, &r, NULL, 0), AM2Z_OK);
            zmsg_destroy(&zm);
            if (r.cmd == AM2Z_CMD_ACCEPTED && r.req == m.req) {
                answered = true;
            } else if (r.cmd == AM2Z_CMD_ERROR && r.req == m.req) {
                answered = refused = true;
                ck_assert_int_eq(r.error->category, AM2Z_CAT_RESOURCE);
            }
            am2z_msg_clear(&r);
        }
        ck_assert(answered);
    }
    msgpack_sbuffer_destroy(&sb);
    ck_assert_msg(refused, "the map never filled");
    /* still alive: queries answer, the first job runs, its result arrives */
    size_t size = 0;
    uint8_t *data = s_query(c, "stats", NULL, NULL, &size);
    ck_assert_ptr_nonnull(data);
    free(data);
    am2z_msg_t j, r;
    s_expect(w, AM2Z_CMD_JOB, &j);
    s_done_inc(w, &j, j.attempt);
    s_expect(c, AM2Z_CMD_RESULT, &r);          /* ok, or a ResourceError */
    if (!r.success)
        ck_assert_int_eq(r.error->category, AM2Z_CAT_RESOURCE);
    am2z_msg_clear(&r);
    am2z_msg_clear(&j);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_jobrec_round_trips_and_refuses_garbage)
{
    uint8_t state[] = { 0x81, 0xa1, 'a', 0x01 };   /* {"a": 1} */
    am2z_jobrec_t in = {
        .proc = (char *)"inc", .session = (char *)"s-1", .state = state,
        .state_size = sizeof state, .prio = -3, .timeout_ms = 500, .delay_ms = 20,
        .depth = 2, .created_ms = 1700000000000ull, .seq = 9, .attempt = 4,
    };
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_jobrec_encode(&in, &data, &size), AM2Z_OK);
    am2z_jobrec_t out;
    ck_assert_int_eq(am2z_jobrec_decode(data, size, &out), AM2Z_OK);
    ck_assert_str_eq(out.proc, "inc");
    ck_assert_str_eq(out.session, "s-1");
    ck_assert_uint_eq(out.state_size, sizeof state);
    ck_assert_mem_eq(out.state, state, sizeof state);
    ck_assert_int_eq(out.prio, -3);
    ck_assert_uint_eq(out.timeout_ms, 500);
    ck_assert_uint_eq(out.delay_ms, 20);
    ck_assert_uint_eq(out.depth, 2);
    ck_assert_uint_eq(out.created_ms, 1700000000000ull);
    ck_assert_uint_eq(out.seq, 9);
    ck_assert_uint_eq(out.attempt, 4);
    am2z_jobrec_clear(&out);
    /* every truncation and random garbage is refused, never crashes */
    for (size_t n = 0; n < size; n++)
        ck_assert_int_ne(am2z_jobrec_decode(data, n, &out), AM2Z_OK);
    free(data);
    uint64_t seed = 7;
    uint8_t junk[200];
    for (int i = 0; i < 2000; i++) {
        am2z_test_random_bytes(&seed, junk, sizeof junk);
        if (am2z_jobrec_decode(junk, (size_t)(i % 200) + 1, &out) == AM2Z_OK)
            am2z_jobrec_clear(&out);
    }
    /* a map with a bad session id */
    in.session = (char *)"bad session";
    ck_assert_int_eq(am2z_jobrec_encode(&in, &data, &size), AM2Z_OK);
    ck_assert_int_eq(am2z_jobrec_decode(data, size, &out), AM2Z_EPROTO);
    free(data);
}
END_TEST

START_TEST(test_broker_daemon_reports_ready_and_stops_on_sigterm)
{
    static const char *const flags[] = { "--log-level", "warn", NULL };
    am2z_cluster_t cl = { .flags = flags };
    am2z_cluster_start_broker(&cl, "broker-daemon", NULL);
    const char *fe = cl.frontend;
    ck_assert(strncmp(fe, "tcp://127.0.0.1:", 16) == 0);
    zsock_t *c = zsock_new_dealer(fe);
    size_t size = 0;
    uint8_t *data = s_query(c, "stats", NULL, NULL, &size);
    ck_assert_ptr_nonnull(data);
    free(data);
    zsock_destroy(&c);
    am2z_cluster_halt(&cl);                     /* SIGTERM: exit 0 */

    static char out[16384];
    char *bad[] = { AM2Z_BROKER_BIN, "--map-size", "lots", NULL };
    ck_assert_int_eq(am2z_testproc_run(bad, out, sizeof out, 10000), 2);
    char *help[] = { AM2Z_BROKER_BIN, "--help", NULL };
    ck_assert_int_eq(am2z_testproc_run(help, out, sizeof out, 10000), 0);
    ck_assert_ptr_nonnull(strstr(out, "frontend"));
    am2z_test_rmtree(cl.dir);
}
END_TEST

/* ---------------------------------------------------------------------------
   Scheduling (issue 6): the concurrency cap's slot accounting
   ------------------------------------------------------------------------ */

/*  A worker announcing the given processor descriptions. */
static zsock_t *
s_worker_descs(const fixture_t *fx, const char *id, am2z_proc_desc_t *descs, size_t n)
{
    zsock_t *w = zsock_new_dealer(fx->ep[1]);
    ck_assert_ptr_nonnull(w);
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_READY);
    m.worker = (char *)id;
    m.procs = descs;
    m.nprocs = n;
    s_send(w, &m);
    return w;
}

START_TEST(test_broker_cap_slot_returns_on_expiry_stop_loss_and_done)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    am2z_proc_desc_t d;
    memset(&d, 0, sizeof d);
    d.name = (char *)"capx";
    d.concurrency = 4;              /* credit would allow 4 at once ... */
    d.max_active = 1;               /* ... the cap only 1 */
    d.retry.max_attempts = 1;       /* no timeout: only A has one (below) */
    zsock_t *w1 = s_worker_descs(&fx, "w1", &d, 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "capx");
    char a[64], b[64], cc[64], e[64];
    am2z_msg_t sub, acc;
    am2z_msg_init(&sub, AM2Z_CMD_SUBMIT);
    sub.req = ++s_req;
    sub.processor = (char *)"capx";
    sub.session = (char *)"A";
    sub.timeout_ms = 1000;          /* longer than the quiet window below */
    s_send(c, &sub);
    s_expect(c, AM2Z_CMD_ACCEPTED, &acc);
    snprintf(a, sizeof a, "%s", acc.job);
    am2z_msg_clear(&acc);
    s_submit_ok(c, "capx", "B", b);
    s_submit_ok(c, "capx", "C", cc);
    am2z_msg_t j, r;
    s_expect(w1, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, a);
    am2z_msg_clear(&j);
    s_expect_none(w1, AM2Z_CMD_JOB);           /* the cap holds */
    /* expiry: A times out (one attempt), its slot goes to B */
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, a);
    ck_assert(!r.success);
    am2z_msg_clear(&r);
    s_expect(w1, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, b);
    am2z_msg_clear(&j);
    s_expect_none(w1, AM2Z_CMD_JOB);
    /* stop: B's session stops, its slot goes to C */
    am2z_msg_t stop;
    am2z_msg_init(&stop, AM2Z_CMD_STOP_SESSION);
    stop.req = ++s_req;
    stop.session = (char *)"B";
    s_send(c, &stop);
    s_expect(w1, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, cc);
    am2z_msg_clear(&j);
    /* loss: w1 leaves holding C; C goes to w2, whose READY changes nothing
       (first registration wins: the cap stays 1) */
    am2z_msg_t bye;
    am2z_msg_init(&bye, AM2Z_CMD_DISCONNECT);
    bye.worker = (char *)"w1";
    s_send(w1, &bye);
    d.max_active = 0;
    zsock_t *w2 = s_worker_descs(&fx, "w2", &d, 1);
    s_expect(w2, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, cc);
    ck_assert_uint_eq(j.attempt, 2);
    s_submit_ok(c, "capx", "E", e);
    s_expect_none(w2, AM2Z_CMD_JOB);           /* still capped at 1 */
    /* DONE: C's slot goes to E */
    s_done_inc(w2, &j, 2);
    am2z_msg_clear(&j);
    s_expect(w2, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, e);
    s_done_inc(w2, &j, 1);
    am2z_msg_clear(&j);
    bool c_done = false, e_done = false;
    for (int i = 0; i < 4 && !(c_done && e_done); i++) {
        s_expect(c, AM2Z_CMD_RESULT, &r);
        if (strcmp(r.job, cc) == 0) {
            ck_assert(r.success);
            ck_assert_uint_gt(r.dispatched_ms, 0);
            c_done = true;
        } else if (strcmp(r.job, e) == 0) {
            ck_assert(r.success);
            e_done = true;
        }
        am2z_msg_clear(&r);
    }
    ck_assert(c_done && e_done);
    zsock_destroy(&w1);
    zsock_destroy(&w2);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

START_TEST(test_broker_refuses_a_rate_window_too_large_to_keep)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    am2z_proc_desc_t d[2];
    memset(d, 0, sizeof d);
    d[0].name = (char *)"toofast";
    d[0].concurrency = 1;
    d[0].rate_max = 2000000;
    d[0].rate_per_ms = 1000;
    d[1].name = (char *)"fine";
    d[1].concurrency = 1;
    zsock_t *w = s_worker_descs(&fx, "w1", d, 2);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "fine");
    uint64_t req = s_submit(c, "toofast", "s1");
    am2z_msg_t e;
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_uint_eq(e.req, req);
    ck_assert_int_eq(e.error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    am2z_msg_clear(&e);
    s_expect_none(w, AM2Z_CMD_JOB);
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  SUBMIT with a state the lease could not use is refused at once, by
    name (it used to be ACCEPTED and then fail as a STORE_ERROR); a
    message with too many frames is counted right; a processor with a rate
    and no window is refused (it used to be served without a limit); and a
    body over max-frame-size but within twice it gets an ERROR naming its
    size (past that, ZeroMQ drops the connection). */
static void
s_submit_state(zsock_t *client, uint64_t req, const char *session, const uint8_t *state,
               size_t size)
{
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_SUBMIT);
    m.req = req;
    m.processor = (char *)"inc";
    m.session = (char *)session;
    m.state = (uint8_t *)state;
    m.state_size = size;
    s_send(client, &m);
}

static void
s_expect_refusal(zsock_t *client, uint64_t req, int kind, const char *text)
{
    am2z_msg_t e;
    s_expect(client, AM2Z_CMD_ERROR, &e);
    ck_assert_uint_eq(e.req, req);
    ck_assert_int_eq(e.error->kind, kind);
    ck_assert_msg(strstr(e.error->message, text), "'%s' lacks '%s'", e.error->message, text);
    am2z_msg_clear(&e);
}

START_TEST(test_broker_refuses_unusable_submits_by_name)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    s_broker_stop(&fx);
    fx.cfg.common.max_frame_size = 64 * 1024;
    s_broker_start(&fx, false);
    am2z_proc_desc_t d[2];
    memset(d, 0, sizeof d);
    d[0].name = (char *)"inc";
    d[0].concurrency = 4;
    d[1].name = (char *)"unwindowed";
    d[1].concurrency = 1;
    d[1].rate_max = 5;                  /* no rate_per_ms */
    zsock_t *w = s_worker_descs(&fx, "w1", d, 2);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");

    /* 33 nested maps (the state's top map counts): refused; 32: runs */
    uint8_t deep[33 * 3 + 1];
    am2z_test_nested_maps(deep, 33);
    s_submit_state(c, 901, "deep-33", deep, sizeof deep);
    s_expect_refusal(c, 901, AM2Z_KIND_VALIDATION, "state nests deeper than 32 levels");
    s_submit_state(c, 902, "deep-32", deep + 3, sizeof deep - 3);
    am2z_msg_t ok;
    s_expect(c, AM2Z_CMD_ACCEPTED, &ok);
    ck_assert_uint_eq(ok.req, 902);
    am2z_msg_clear(&ok);
    am2z_msg_t job;
    s_expect(w, AM2Z_CMD_JOB, &job);
    ck_assert_str_eq(job.session, "deep-32");
    am2z_msg_clear(&job);

    /* metadata.version past 2^53 - 1: refused, naming the version */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "metadata", 8);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_uint64(&pk, AM2Z_STATE_VERSION_MAX + 1);
    msgpack_pack_str_with_body(&pk, "sessionId", 9);
    msgpack_pack_str_with_body(&pk, "ver-1", 5);
    msgpack_pack_str_with_body(&pk, "createdAt", 9);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_str_with_body(&pk, "lastUpdated", 11);
    msgpack_pack_uint64(&pk, 0);
    s_submit_state(c, 903, "ver-1", (const uint8_t *)sb.data, sb.size);
    s_expect_refusal(c, 903, AM2Z_KIND_VALIDATION, "metadata.version 9007199254740992 is above");
    msgpack_sbuffer_destroy(&sb);

    /* seven frames: the count is the real one */
    zmsg_t *zm = zmsg_new();
    for (int i = 0; i < 7; i++)
        zmsg_addstr(zm, "x");
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    am2z_msg_t e;
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_msg(strstr(e.error->message, "expected 3 frames (signature, command, body), got 7"),
                  "%s", e.error->message);
    am2z_msg_clear(&e);

    /* rate without a window: that processor is not served */
    s_submit(c, "unwindowed", "s-u");
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_int_eq(e.error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    am2z_msg_clear(&e);

    /* 100 KiB: over the 64 KiB limit, within twice it: an ERROR, and the
       connection stays (the next request is answered) */
    size_t big = 100 * 1024;
    uint8_t *body = calloc(1, big);
    ck_assert_ptr_nonnull(body);
    body[0] = 0x80;                     /* a map; the size is refused first */
    zm = zmsg_new();
    zmsg_addstr(zm, AM2Z_PROTOCOL);
    zmsg_addstr(zm, "SUBMIT");
    zmsg_addmem(zm, body, big);
    ck_assert_int_eq(zmsg_send(&zm, c), 0);
    free(body);
    s_expect(c, AM2Z_CMD_ERROR, &e);
    ck_assert_msg(strstr(e.error->message, "body of 102400 bytes exceeds limit 65536"),
                  "%s", e.error->message);
    am2z_msg_clear(&e);
    s_submit_state(c, 904, "deep-33", deep, sizeof deep);
    s_expect_refusal(c, 904, AM2Z_KIND_VALIDATION, "deeper than 32");

    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  A connection gets one RESULT per job however often it FETCHes while
    the job runs (a waiting client asks again every few seconds): the
    submitter's own FETCHes add nothing, another connection's count once. */
static void
s_fetch_pending(zsock_t *client, const char *job)
{
    am2z_msg_t f;
    am2z_msg_init(&f, AM2Z_CMD_FETCH);
    f.req = ++s_req;
    f.job = (char *)job;
    s_send(client, &f);
    am2z_msg_t reply;
    s_expect(client, AM2Z_CMD_REPLY, &reply);
    ck_assert_uint_eq(reply.req, f.req);
    am2z_msg_clear(&reply);
}

START_TEST(test_broker_fetching_again_yields_one_result_per_connection)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    zsock_t *other = s_client(&fx);
    s_wait_known(c, "inc");
    char id[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(c, "inc", "fetch-1", id);
    am2z_msg_t job;
    s_expect(w, AM2Z_CMD_JOB, &job);
    for (int i = 0; i < 3; i++) {
        s_fetch_pending(c, id);
        s_fetch_pending(other, id);
    }
    s_done_inc(w, &job, job.attempt);
    am2z_msg_clear(&job);
    zsock_t *both[] = { c, other };
    for (int k = 0; k < 2; k++) {
        am2z_msg_t r;
        s_expect(both[k], AM2Z_CMD_RESULT, &r);
        ck_assert_str_eq(r.job, id);
        ck_assert(r.success);
        am2z_msg_clear(&r);
        s_expect_none(both[k], AM2Z_CMD_RESULT);
    }
    zsock_destroy(&w);
    zsock_destroy(&c);
    zsock_destroy(&other);
    s_broker_stop(&fx);
}
END_TEST

/* ---------------------------------------------------------------------------
   Composites that lead back to themselves: refused at READY (logged with
   the cycle, as the broker reports every refused definition), and a run
   never nests without bound (they once recursed until the stack ran out,
   and a stored one crashed every restart)
   ------------------------------------------------------------------------ */

/*  The broker's log (stderr, written by its thread) goes to dir/stderr.log
    while a test needs to read it; returns the saved stderr. */
static int
s_log_begin(const fixture_t *fx, char *path, size_t size)
{
    snprintf(path, size, "%s/stderr.log", fx->dir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
    return saved;
}

static void
s_log_end(int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

/*  Waits (bounded) until the log holds a line with both a and b. */
static void
s_log_wait(const char *path, const char *a, const char *b)
{
    static char text[1 << 16];
    int64_t deadline = zclock_mono() + S_WAIT;
    while (true) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f)
            fclose(f);
        text[n] = '\0';
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
            if (strstr(line, a) && strstr(line, b))
                return;
        if (zclock_mono() >= deadline)
            break;
        zclock_sleep(10);
    }
    ck_abort_msg("no log line with [%s] and [%s]", a, b);
}

/*  A worker serving proc (concurrency 1) that announces comps. */
static zsock_t *
s_worker_comps(const fixture_t *fx, const char *id, const char *proc, am2z_comp_desc_t *comps,
               size_t n)
{
    zsock_t *w = zsock_new_dealer(fx->ep[1]);
    ck_assert_ptr_nonnull(w);
    am2z_proc_desc_t desc;
    memset(&desc, 0, sizeof desc);
    desc.name = (char *)proc;
    desc.concurrency = 1;
    am2z_msg_t m;
    am2z_msg_init(&m, AM2Z_CMD_READY);
    m.worker = (char *)id;
    m.procs = &desc;
    m.nprocs = 1;
    m.comps = comps;
    m.ncomps = n;
    s_send(w, &m);
    return w;
}

static am2z_comp_desc_t
s_steps(uint32_t kind, const char *name, char **steps, size_t n)
{
    am2z_comp_desc_t d;
    memset(&d, 0, sizeof d);
    d.name = (char *)name;
    d.kind = kind;
    d.steps = steps;
    d.nsteps = n;
    return d;
}

/*  A route on state key "k": key "a" goes to target; others to fallback. */
static am2z_comp_desc_t
s_route(const char *name, am2z_route_desc_t *route, const char *target, const char *fallback)
{
    am2z_comp_desc_t d;
    memset(&d, 0, sizeof d);
    d.name = (char *)name;
    d.kind = 2;
    d.selector_path = (char *)"k";
    route->key = (char *)"a";
    route->target = (char *)target;
    d.routes = route;
    d.nroutes = 1;
    d.fallback = (char *)fallback;
    return d;
}

/*  SUBMIT of a refused composite: not found (it was never registered). */
static void
s_expect_unknown(zsock_t *client, const char *name)
{
    uint64_t req = s_submit(client, name, "cyc");
    am2z_msg_t e;
    s_expect(client, AM2Z_CMD_ERROR, &e);
    ck_assert_uint_eq(e.req, req);
    ck_assert_int_eq(e.error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(e.error->message, name));
    am2z_msg_clear(&e);
}

/*  The accepted composite `name` (a chain of n "inc" steps, nested or not)
    runs: n JOBs served, then its RESULT succeeds with count == n. */
static void
s_expect_runs(zsock_t *client, zsock_t *worker, const char *name, const char *session,
              int n)
{
    char job[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(client, name, session, job);
    for (int i = 0; i < n; i++)
        s_serve_inc(worker, NULL);
    am2z_msg_t r;
    s_expect(client, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, job);
    ck_assert_msg(r.success, "%s: %s", name, r.error ? r.error->message : "?");
    ck_assert_int_eq(s_state_count(r.state, r.state_size), n);
    am2z_msg_clear(&r);
}

START_TEST(test_broker_refuses_a_chain_that_runs_itself)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    char log[600];
    int saved = s_log_begin(&fx, log, sizeof log);
    char *self_steps[] = { "inc", "loop1" };
    char *twice_steps[] = { "inc", "inc" };
    am2z_comp_desc_t comps[] = {
        s_steps(0, "loop1", self_steps, 2),
        s_steps(0, "twice", twice_steps, 2),
    };
    zsock_t *w = s_worker_comps(&fx, "w1", "inc", comps, 2);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "twice");
    s_log_wait(log, "composite=loop1", "cycle=\"loop1 -> loop1\"");
    s_expect_unknown(c, "loop1");
    s_expect_none(w, AM2Z_CMD_JOB);
    s_expect_runs(c, w, "twice", "ok-1", 2);  /* the same READY's sound one runs */
    s_still_serves(c, w, "ok-2");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
    s_log_end(saved);
}
END_TEST

START_TEST(test_broker_refuses_composites_that_call_each_other)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    char log[600];
    int saved = s_log_begin(&fx, log, sizeof log);
    /* a chain and a parallel branch calling each other; a shared, acyclic
       sub-composite ("twice" under both branches of "both") is fine */
    char *a_steps[] = { "loopb" };
    char *b_steps[] = { "inc", "loopa" };
    char *twice_steps[] = { "inc", "inc" };
    char *both_steps[] = { "twice", "outer" };
    char *outer_steps[] = { "twice" };
    am2z_comp_desc_t comps[] = {
        s_steps(0, "loopa", a_steps, 1),
        s_steps(1, "loopb", b_steps, 2),
        s_steps(0, "twice", twice_steps, 2),
        s_steps(1, "both", both_steps, 2),
        s_steps(0, "outer", outer_steps, 1),
    };
    zsock_t *w = s_worker_comps(&fx, "w1", "inc", comps, 5);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "outer");
    s_log_wait(log, "composite=loopa", "cycle=\"loopa -> loopb -> loopa\"");
    s_log_wait(log, "composite=loopb", "cycle=\"loopb -> loopa -> loopb\"");
    s_expect_unknown(c, "loopa");
    s_expect_unknown(c, "loopb");
    size_t size = 0;
    uint8_t *procs = s_query(c, "processors", NULL, NULL, &size);
    ck_assert_ptr_nonnull(procs);
    ck_assert_ptr_nonnull(memmem(procs, size, "both", 4));
    ck_assert_ptr_null(memmem(procs, size, "loopa", 5));
    ck_assert_ptr_null(memmem(procs, size, "loopb", 5));
    free(procs);

    /* across workers (serving another processor, so that no "inc" job goes
       to them): "pre" names "post", a processor nobody serves yet; another
       worker's "post" would close the cycle */
    char *pre_steps[] = { "inc", "post" };
    char *post_steps[] = { "pre" };
    am2z_comp_desc_t first[] = { s_steps(0, "pre", pre_steps, 2) };
    am2z_comp_desc_t second[] = { s_steps(0, "post", post_steps, 1) };
    zsock_t *w2 = s_worker_comps(&fx, "w2", "idle", first, 1);
    s_wait_known(c, "pre");
    zsock_t *w3 = s_worker_comps(&fx, "w3", "idle", second, 1);
    s_log_wait(log, "composite=post", "cycle=\"post -> pre -> post\"");
    s_expect_unknown(c, "post");
    zsock_destroy(&w2);
    zsock_destroy(&w3);

    s_expect_runs(c, w, "outer", "ok-1", 2);
    s_still_serves(c, w, "ok-2");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
    s_log_end(saved);
}
END_TEST

START_TEST(test_broker_refuses_a_route_or_batch_that_runs_itself)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    char log[600];
    int saved = s_log_begin(&fx, log, sizeof log);
    am2z_route_desc_t r1, r2, r3, r4;
    am2z_comp_desc_t batch;
    memset(&batch, 0, sizeof batch);
    batch.name = (char *)"bl";
    batch.kind = 3;
    batch.processor = (char *)"bl";
    batch.payloads_path = (char *)"items";
    am2z_comp_desc_t comps[] = {
        s_route("rboth", &r1, "rboth", "rboth"),   /* the repro's */
        s_route("rt", &r2, "rt", "inc"),           /* target only */
        s_route("rf", &r3, "inc", "rf"),           /* fallback only */
        s_route("rok", &r4, "inc", "inc"),
        batch,
    };
    zsock_t *w = s_worker_comps(&fx, "w1", "inc", comps, 5);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "rok");
    s_log_wait(log, "composite=rboth", "cycle=\"rboth -> rboth\"");
    s_log_wait(log, "composite=rt", "cycle=\"rt -> rt\"");
    s_log_wait(log, "composite=rf", "cycle=\"rf -> rf\"");
    s_log_wait(log, "composite=bl", "cycle=\"bl -> bl\"");
    s_expect_unknown(c, "rboth");
    s_expect_unknown(c, "rt");
    s_expect_unknown(c, "rf");
    s_expect_unknown(c, "bl");
    s_expect_none(w, AM2Z_CMD_JOB);
    s_expect_runs(c, w, "rok", "ok-1", 1);   /* no key: the fallback, "inc" */
    s_still_serves(c, w, "ok-2");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
    s_log_end(saved);
}
END_TEST

/*  Chains name[0] -> name[1] -> ... -> name[levels - 1] -> "inc". */
static void
s_nest_chain(am2z_comp_desc_t *comps, char names[][16], char *steps[][1], const char *prefix,
             int levels)
{
    for (int i = 0; i < levels; i++)
        snprintf(names[i], 16, "%s%d", prefix, i);
    for (int i = 0; i < levels; i++) {
        steps[i][0] = i + 1 < levels ? names[i + 1] : (char *)"inc";
        comps[i] = s_steps(0, names[i], steps[i], 1);
    }
}

START_TEST(test_broker_bounds_how_deep_composites_nest)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    /* 17 levels (the root and 16 nested) run; 18 fail at once, before any
       step, with an error naming the limit */
    enum { OK_LEVELS = 17, DEEP_LEVELS = 18 };
    static am2z_comp_desc_t comps[OK_LEVELS + DEEP_LEVELS];
    static char names[OK_LEVELS + DEEP_LEVELS][16];
    static char *steps[OK_LEVELS + DEEP_LEVELS][1];
    s_nest_chain(comps, names, steps, "ok", OK_LEVELS);
    s_nest_chain(comps + OK_LEVELS, names + OK_LEVELS, steps + OK_LEVELS, "deep", DEEP_LEVELS);
    zsock_t *w = s_worker_comps(&fx, "w1", "inc", comps, OK_LEVELS + DEEP_LEVELS);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "deep17");
    s_expect_runs(c, w, "ok0", "nest-1", 1);

    char job[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(c, "deep0", "nest-2", job);
    am2z_msg_t r;
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, job);
    ck_assert(!r.success);
    ck_assert_int_eq(r.error->kind, AM2Z_KIND_CONFIGURATION);
    ck_assert_msg(strstr(r.error->message, "'deep17'")
                  && strstr(r.error->message, "nested more than 16 deep"),
                  "%s", r.error->message);
    am2z_msg_clear(&r);
    s_expect_none(w, AM2Z_CMD_JOB);
    s_still_serves(c, w, "nest-3");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
}
END_TEST

/*  Writes a composite definition into a stopped broker's store, as a broker
    from before cycles were refused would have stored it. */
static void
s_store_comp(fixture_t *fx, const am2z_comp_desc_t *d)
{
    am2z_store_t *store = NULL;
    char err[256] = "";
    ck_assert_msg(am2z_store_open(&fx->cfg.common, &store, err, sizeof err) == AM2Z_OK, "%s",
                  err);
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_comp_desc_encode(d, &data, &size), AM2Z_OK);
    char key[64];
    snprintf(key, sizeof key, "comp:%s", d->name);
    am2z_store_batch_t *batch = NULL;
    ck_assert_int_eq(am2z_store_begin(store, &batch), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(batch, AM2Z_DB_RUNS, key, strlen(key), 1, data, size,
                                           (uint64_t)zclock_time()),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&batch), AM2Z_OK);
    free(data);
    am2z_store_destroy(&store);
}

/*  FETCH job until its stored RESULT is there (into *r). */
static void
s_fetch(zsock_t *client, const char *job, am2z_msg_t *r)
{
    am2z_msg_t f;
    am2z_msg_init(&f, AM2Z_CMD_FETCH);
    f.req = ++s_req;
    f.job = (char *)job;
    int64_t deadline = zclock_mono() + S_WAIT;
    while (zclock_mono() < deadline) {
        s_send(client, &f);
        if (s_recv(client, AM2Z_CMD_RESULT, 50, r, NULL, 0))
            return;
    }
    ck_abort_msg("no stored result for %s", job);
}

START_TEST(test_broker_restarts_on_a_stored_cycle_and_fails_its_job)
{
    fixture_t fx;
    s_broker_start(&fx, true);
    s_broker_stop(&fx);
    char *self_steps[] = { "loop1" };
    am2z_comp_desc_t loop1 = s_steps(0, "loop1", self_steps, 1);
    s_store_comp(&fx, &loop1);

    /* a broker that reloads it: a loop1 job accepted behind a leased one */
    char log[600];
    int saved = s_log_begin(&fx, log, sizeof log);
    s_broker_start(&fx, false);
    s_log_wait(log, "composite=loop1", "cycle=\"loop1 -> loop1\"");
    zsock_t *w = s_worker(&fx, "w1", "inc", 1);
    zsock_t *c = s_client(&fx);
    s_wait_known(c, "inc");
    char first[AM2Z_JOB_ID_MAX + 1], looped[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(c, "inc", "L", first);
    am2z_msg_t j;
    s_expect(w, AM2Z_CMD_JOB, &j);
    ck_assert_str_eq(j.job, first);
    am2z_msg_clear(&j);
    s_submit_ok(c, "loop1", "L", looped);

    /* restart: it serves, and the stored job fails with the cycle */
    c = s_restart_expecting_waiting(&fx, &w, &c, 2);
    w = s_worker(&fx, "w2", "inc", 1);
    s_serve_inc(w, NULL);                     /* the lease lost in the restart */
    am2z_msg_t r;
    s_fetch(c, looped, &r);
    ck_assert(!r.success);
    ck_assert_int_eq(r.error->kind, AM2Z_KIND_CONFIGURATION);
    ck_assert_msg(strstr(r.error->message, "loop1 -> loop1"), "%s", r.error->message);
    am2z_msg_clear(&r);
    /* and a new SUBMIT of it fails the same way, at once */
    char again[AM2Z_JOB_ID_MAX + 1];
    s_submit_ok(c, "loop1", "L2", again);
    s_expect(c, AM2Z_CMD_RESULT, &r);
    ck_assert_str_eq(r.job, again);
    ck_assert(!r.success);
    ck_assert_msg(strstr(r.error->message, "loop1 -> loop1"), "%s", r.error->message);
    am2z_msg_clear(&r);
    s_expect_none(w, AM2Z_CMD_JOB);
    s_still_serves(c, w, "ok-1");
    zsock_destroy(&w);
    zsock_destroy(&c);
    s_broker_stop(&fx);
    s_log_end(saved);
}
END_TEST

/*  The worker-side checks refuse what the broker would: a composite naming
    itself, and one closing a cycle with those declared before it. */
START_TEST(test_broker_worker_side_checks_refuse_cycles_too)
{
    char err[256] = "";
    const char *self_steps[] = { "inc", "me" };
    am2z_composite_def_t me = { .name = "me", .kind = AM2Z_COMPOSITE_CHAIN,
                                .steps = self_steps, .nsteps = 2 };
    ck_assert_int_eq(am2z_composite_validate(&me, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_msg(strstr(err, "me -> me"), "%s", err);
    am2z_route_t to_inc = { "a", "inc" };
    am2z_composite_def_t route = { .name = "rf", .kind = AM2Z_COMPOSITE_ROUTE,
                                   .selector_path = "k", .routes = &to_inc, .nroutes = 1,
                                   .fallback = "rf" };
    ck_assert_int_eq(am2z_composite_validate(&route, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_msg(strstr(err, "rf -> rf"), "%s", err);
    am2z_composite_def_t batch = { .name = "bl", .kind = AM2Z_COMPOSITE_BATCH,
                                   .processor = "bl", .payloads_path = "items" };
    ck_assert_int_eq(am2z_composite_validate(&batch, err, sizeof err), AM2Z_ECONFIG);

    const char *a_steps[] = { "b" }, *b_steps[] = { "inc", "c" }, *c_steps[] = { "a" };
    am2z_composite_def_t a = { .name = "a", .kind = AM2Z_COMPOSITE_CHAIN,
                               .steps = a_steps, .nsteps = 1 };
    am2z_composite_def_t b = { .name = "b", .kind = AM2Z_COMPOSITE_PARALLEL,
                               .steps = b_steps, .nsteps = 2 };
    am2z_composite_def_t cc = { .name = "c", .kind = AM2Z_COMPOSITE_CHAIN,
                                .steps = c_steps, .nsteps = 1 };
    const am2z_composite_def_t *known[] = { &a, &b };
    ck_assert_int_eq(am2z_composite_validate(&cc, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_composite_check_cycles(&a, NULL, 0, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_composite_check_cycles(&b, known, 1, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_composite_check_cycles(&cc, known, 2, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_msg(strstr(err, "chain 'c'") && strstr(err, "c -> a -> b -> c"), "%s", err);
    /* shared, acyclic: no cycle */
    const char *d_steps[] = { "b", "b" };
    am2z_composite_def_t d = { .name = "d", .kind = AM2Z_COMPOSITE_PARALLEL,
                               .steps = d_steps, .nsteps = 2 };
    const am2z_composite_def_t *known_b[] = { &b };
    ck_assert_int_eq(am2z_composite_check_cycles(&d, known_b, 1, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_composite_check_cycles(NULL, NULL, 0, err, sizeof err), AM2Z_EINVAL);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_broker_submit_is_accepted_and_dispatched);
    tcase_add_test(tc, test_broker_result_reaches_submitter_with_version_bump);
    tcase_add_test(tc, test_broker_answers_clients_with_long_routing_ids);
    tcase_add_test(tc, test_broker_noack_submit_is_answered_by_its_result);
    tcase_add_test(tc, test_broker_submit_takes_the_clients_job_id);
    tcase_add_test(tc, test_broker_state_persists_across_jobs_in_session);
    tcase_add_test(tc, test_broker_unknown_processor_lists_available);
    tcase_add_test(tc, test_broker_one_active_job_per_session);
    tcase_add_test(tc, test_broker_dispatch_only_against_credit);
    tcase_add_test(tc, test_broker_stale_done_is_dropped);
    tcase_add_test(tc, test_broker_rejects_malformed_frames_and_keeps_serving);
    tcase_add_test(tc, test_broker_batch_is_answered_in_batches_and_refuses_bad_pairs);
    tcase_add_test(tc, test_broker_invalid_done_state_fails_job_and_keeps_state);
    tcase_add_test(tc, test_broker_queries_report_counts);
    tcase_add_test(tc, test_broker_stop_session_cancels_and_deletes_state);
    tcase_add_test(tc, test_broker_fetch_returns_stored_result);
    tcase_add_test(tc, test_broker_restart_reloads_pending_jobs);
    tcase_add_test(tc, test_broker_dead_worker_lease_returns);
    tcase_add_test(tc, test_broker_map_full_refuses_submits_and_keeps_serving);
    tcase_add_test(tc, test_broker_jobrec_round_trips_and_refuses_garbage);
    tcase_add_test(tc, test_broker_daemon_reports_ready_and_stops_on_sigterm);
    tcase_add_test(tc, test_broker_cap_slot_returns_on_expiry_stop_loss_and_done);
    tcase_add_test(tc, test_broker_refuses_a_rate_window_too_large_to_keep);
    tcase_add_test(tc, test_broker_refuses_unusable_submits_by_name);
    tcase_add_test(tc, test_broker_fetching_again_yields_one_result_per_connection);
    tcase_add_test(tc, test_broker_refuses_a_chain_that_runs_itself);
    tcase_add_test(tc, test_broker_refuses_composites_that_call_each_other);
    tcase_add_test(tc, test_broker_refuses_a_route_or_batch_that_runs_itself);
    tcase_add_test(tc, test_broker_bounds_how_deep_composites_nest);
    tcase_add_test(tc, test_broker_restarts_on_a_stored_cycle_and_fails_its_job);
    tcase_add_test(tc, test_broker_worker_side_checks_refuse_cycles_too);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    zsys_handler_set(NULL);
    /* OpenSSL initialised first on the broker thread keeps per-thread state
       that a TLS destructor frees, racing the process exit (LSan noise):
       initialise it here, on the main thread, once. */
    uint8_t digest[AM2Z_SHA256_LEN];
    am2z_sha256((const uint8_t *)"", 0, digest);
    return am2z_test_run(s_suite());
}
