/*  client_test.c — Check suite "client": libam2z against a scripted broker.

    The test plays the broker: an actor thread owns a real ROUTER socket on
    tcp://127.0.0.1:* and answers with the real codec. Processors it knows:
      echo     ACCEPTED, EVENTs (processor:active, echo:note,
               processor:job:completed), then a RESULT whose state is the
               input state at version + 1
      fail     ACCEPTED, processor:job:failed, a failed RESULT (attempt 3)
      slow     ACCEPTED only; the RESULT follows when the test sends
               "FINISH" to the actor
    Anything else is refused with a ProcessorNotFoundError. The actor also
    answers FETCH, QUERY and STOP_SESSION, and tells the test over its pipe
    what it saw ("STOPS" -> last stop-session as "session keep").
*/
#include "am2z_client.h"
#include "am2z_codec.h"
#include "am2z_testutil.h"

#include <czmq.h>
#include <msgpack.h>
#include <string.h>

#define S_MAX_BODY (1u << 20)

/* ---------------------------------------------------------------------------
   The fake broker
   ------------------------------------------------------------------------ */

typedef struct {
    zsock_t *router;
    zhashx_t *results;            /* job id -> zchunk_t* (encoded RESULT body) */
    zframe_t *held_peer;          /* the "slow" job waiting for FINISH */
    zframe_t *fetcher;            /* a client that FETCHed the held job */
    char held_job[AM2Z_ID_LEN + 1];
    char held_session[AM2Z_SESSION_ID_MAX + 1];
    char last_stop[256];
    zmsg_t *batch_out;            /* answers to a BATCH being handled: one BATCH back */
    zmsg_t *job_out;              /* while a BATCH is handled: one job's events and
                                     RESULT, held back (see s_on_message) */
    bool saw_noack;               /* a SUBMIT asked for no ACCEPTED */
} s_fake_t;

static void
s_chunk_destroy(void **item)
{
    zchunk_t *c = *item;
    zchunk_destroy(&c);
    *item = NULL;
}

static void
s_send(s_fake_t *self, zframe_t *peer, am2z_msg_t *msg)
{
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(msg, &body, &size);
    ck_assert_msg(rc == AM2Z_OK, "fake broker cannot encode %s", am2z_cmd_name(msg->cmd));
    zmsg_t *into = self->job_out ? self->job_out : self->batch_out;
    if (into) {
        /* like the broker: what goes to a client that sent a BATCH goes
           back in one */
        zmsg_addstr(into, am2z_cmd_name(msg->cmd));
        zmsg_addmem(into, body, size);
        free(body);
        return;
    }
    zmsg_t *out = zmsg_new();
    zmsg_append(out, &(zframe_t *){ zframe_dup(peer) });
    zmsg_addstr(out, AM2Z_PROTOCOL);
    zmsg_addstr(out, am2z_cmd_name(msg->cmd));
    zmsg_addmem(out, body, size);
    zmsg_send(&out, self->router);
    free(body);
}

static char *
s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void
s_event(s_fake_t *self, zframe_t *peer, const char *name, const char *job,
        const char *session, const char *proc, uint64_t seq)
{
    static const uint8_t data[] = { 0x81, 0xa6, 'w', 'o', 'r', 'k', 'e', 'r', 0xa2, 'w', '1' };
    am2z_msg_t ev;
    am2z_msg_init(&ev, AM2Z_CMD_EVENT);
    ev.name = s_dup(name);
    ev.job = s_dup(job);
    ev.session = s_dup(session);
    ev.processor = s_dup(proc);
    ev.attempt = 1;
    ev.ts_ms = am2z_clock_wall_ms();
    ev.seq = seq;
    ev.data = malloc(sizeof data);
    memcpy(ev.data, data, sizeof data);
    ev.data_size = sizeof data;
    s_send(self, peer, &ev);
    am2z_msg_clear(&ev);
}

/*  Builds, keeps (for FETCH) and sends the RESULT of a job. */
static void
s_result(s_fake_t *self, zframe_t *peer, uint64_t req, const char *job, const char *proc,
         const char *session, const uint8_t *state, size_t state_size, bool ok)
{
    am2z_msg_t res;
    am2z_msg_init(&res, AM2Z_CMD_RESULT);
    res.req = req;                /* the submitter's, as the broker echoes it */
    res.job = s_dup(job);
    res.processor = s_dup(proc);
    res.session = s_dup(session);
    res.worker = s_dup("w1");
    res.success = ok;
    res.exec_us = 17;
    res.started_at_ms = am2z_clock_wall_ms();
    if (ok) {
        am2z_state_t *in = NULL, *next = NULL;
        if (state)
            ck_assert_int_eq(am2z_state_decode(state, state_size, &in), AM2Z_OK);
        else
            ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &in), AM2Z_OK);
        ck_assert_int_eq(am2z_state_with_metadata(in, session, am2z_state_version(in) + 1,
                                                  am2z_state_created_at(in),
                                                  am2z_clock_wall_ms(), &next), AM2Z_OK);
        res.state_size = am2z_state_size(next);
        res.state = malloc(res.state_size);
        memcpy(res.state, am2z_state_data(next), res.state_size);
        am2z_state_destroy(&in);
        am2z_state_destroy(&next);
        res.attempt = 1;
    } else {
        res.error = am2z_error_execution(proc, job, "boom");
        res.attempt = 3;
    }
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&res, &body, &size), AM2Z_OK);
    zhashx_update(self->results, job, zchunk_new(body, size));
    free(body);
    s_send(self, peer, &res);
    am2z_msg_clear(&res);
}

static void
s_reply(s_fake_t *self, zframe_t *peer, uint64_t req, const void *data, size_t size)
{
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_REPLY);
    r.req = req;
    if (data) {
        r.data = malloc(size);
        memcpy(r.data, data, size);
        r.data_size = size;
    }
    s_send(self, peer, &r);
    am2z_msg_clear(&r);
}

static void
s_refuse(s_fake_t *self, zframe_t *peer, uint64_t req, am2z_error_t *error)
{
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_ERROR);
    r.req = req;
    r.error = error;
    s_send(self, peer, &r);
    am2z_msg_clear(&r);
}

static void
s_pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void
s_pack_counters(msgpack_packer *pk, uint64_t base)
{
    const char *keys[] = { "waiting", "active", "completed", "failed", "delayed", "paused" };
    msgpack_pack_map(pk, 6);
    for (int i = 0; i < 6; i++) {
        s_pack_str(pk, keys[i]);
        msgpack_pack_uint64(pk, base + (uint64_t)i);
    }
}

static void
s_on_query(s_fake_t *self, zframe_t *peer, const am2z_msg_t *q)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (strcmp(q->what, "stats") == 0) {
        const char *keys[] = { "uptimeMs", "processors", "workers", "sessions",
                               "running", "waiting", "completed", "failed" };
        msgpack_pack_map(&pk, 8);
        for (int i = 0; i < 8; i++) {
            s_pack_str(&pk, keys[i]);
            msgpack_pack_uint64(&pk, 100 + (uint64_t)i);
        }
    } else if (strcmp(q->what, "queues") == 0 || strcmp(q->what, "session-stats") == 0) {
        msgpack_pack_map(&pk, 2);
        s_pack_str(&pk, "echo");
        s_pack_counters(&pk, 1);
        s_pack_str(&pk, "fail");
        s_pack_counters(&pk, q->session ? 20 : 10);
    } else if (strcmp(q->what, "sessions") == 0) {
        msgpack_pack_array(&pk, 2);
        s_pack_str(&pk, "s1");
        s_pack_str(&pk, "s2");
    } else if (strcmp(q->what, "processors") == 0) {
        msgpack_pack_array(&pk, 3);
        const char *names[] = { "echo", "fail", "slow" };
        for (int i = 0; i < 3; i++) {
            msgpack_pack_map(&pk, 2);
            s_pack_str(&pk, "name");
            s_pack_str(&pk, names[i]);
            s_pack_str(&pk, "workers");
            msgpack_pack_uint64(&pk, 1);
        }
    } else if (strcmp(q->what, "state") == 0 && q->session && strcmp(q->session, "s1") == 0) {
        am2z_state_t *st = NULL;
        ck_assert_int_eq(am2z_state_new("s1", am2z_clock_wall_ms(), &st), AM2Z_OK);
        s_reply(self, peer, q->req, am2z_state_data(st), am2z_state_size(st));
        am2z_state_destroy(&st);
        msgpack_sbuffer_destroy(&sb);
        return;
    } else {
        s_refuse(self, peer, q->req,
                 am2z_error_new(AM2Z_CAT_NOT_FOUND, "NOT_FOUND", "nothing for '%s'", q->what));
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    s_reply(self, peer, q->req, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void
s_on_command(s_fake_t *self, zframe_t *peer, zframe_t *sig, zframe_t *cmd, zframe_t *body)
{
    ck_assert_ptr_nonnull(body);
    am2z_msg_t m;
    char err[256];
    int rc = am2z_frames_decode(zframe_data(sig), zframe_size(sig), zframe_data(cmd),
                                zframe_size(cmd), zframe_data(body), zframe_size(body),
                                S_MAX_BODY, &m, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "client sent a bad message: %s", err);
    switch (m.cmd) {
    case AM2Z_CMD_SUBMIT: {
        if (strcmp(m.processor, "echo") && strcmp(m.processor, "fail")
            && strcmp(m.processor, "slow")) {
            const char *avail[] = { "echo", "fail", "slow" };
            s_refuse(self, peer, m.req, am2z_error_processor_not_found(m.processor, avail, 3));
            break;
        }
        char job[AM2Z_ID_LEN + 1];
        ck_assert_int_eq(am2z_id_new(job), AM2Z_OK);
        am2z_msg_t acc;
        am2z_msg_init(&acc, AM2Z_CMD_ACCEPTED);
        acc.req = m.req;
        acc.job = strdup(job);
        acc.session = strdup(m.session);
        /* like the broker: noack means the RESULT answers (session
           "legacy" plays a broker that predates noack and ignores it) */
        self->saw_noack |= m.noack;
        if (!m.noack || strcmp(m.session, "legacy") == 0 || strcmp(m.processor, "slow") == 0)
            s_send(self, peer, &acc);
        am2z_msg_clear(&acc);
        if (strcmp(m.processor, "slow") == 0) {
            zframe_destroy(&self->held_peer);
            self->held_peer = zframe_dup(peer);
            snprintf(self->held_job, sizeof self->held_job, "%s", job);
            snprintf(self->held_session, sizeof self->held_session, "%s", m.session);
            break;
        }
        bool ok = strcmp(m.processor, "echo") == 0;
        if (self->batch_out)
            self->job_out = zmsg_new();          /* s_on_message sends it */
        s_event(self, peer, "processor:active", job, m.session, m.processor, 1);
        if (ok) {
            s_event(self, peer, "echo:note", job, m.session, m.processor, 2);
            s_event(self, peer, "processor:job:completed", job, m.session, m.processor, 3);
        } else {
            s_event(self, peer, "processor:job:failed", job, m.session, m.processor, 2);
        }
        s_result(self, peer, m.req, job, m.processor, m.session, m.state, m.state_size, ok);
        break;
    }
    case AM2Z_CMD_FETCH: {
        zchunk_t *stored = zhashx_lookup(self->results, m.job);
        if (stored) {
            am2z_msg_t res;
            ck_assert_int_eq(am2z_msg_decode(AM2Z_CMD_RESULT, zchunk_data(stored),
                                             zchunk_size(stored), S_MAX_BODY, &res, NULL, 0),
                             AM2Z_OK);
            res.req = m.req;
            s_send(self, peer, &res);
            am2z_msg_clear(&res);
        } else if (strcmp(m.job, self->held_job) == 0) {
            const uint8_t status[] = { 0x81, 0xa6, 's', 't', 'a', 't', 'u', 's',
                                       0xa6, 'a', 'c', 't', 'i', 'v', 'e' };
            s_reply(self, peer, m.req, status, sizeof status);
            zframe_destroy(&self->fetcher);
            self->fetcher = zframe_dup(peer);
        } else {
            s_refuse(self, peer, m.req,
                     am2z_error_new(AM2Z_CAT_NOT_FOUND, "JOB_NOT_FOUND", "no job %s", m.job));
        }
        break;
    }
    case AM2Z_CMD_QUERY:
        s_on_query(self, peer, &m);
        break;
    case AM2Z_CMD_STOP_SESSION: {
        snprintf(self->last_stop, sizeof self->last_stop, "%s %d", m.session, m.keep_state);
        const uint8_t ok[] = { 0x81, 0xa2, 'o', 'k', 0xc3 };
        s_reply(self, peer, m.req, ok, sizeof ok);
        break;
    }
    default:
        break;
    }
    am2z_msg_clear(&m);
}

/*  One message from the client: a command, or a BATCH of them (answered
    with one BATCH). In a BATCH's answer the ACCEPTEDs come in request
    order, then the jobs' events and RESULTs in reverse order: jobs
    finish in any order, and the client must still put each result where
    its request was. */
static void
s_on_message(s_fake_t *self, zmsg_t *in)
{
    zframe_t *peer = zmsg_pop(in);
    zframe_t *sig = zmsg_pop(in);
    zframe_t *cmd = zmsg_pop(in);
    ck_assert_ptr_nonnull(cmd);
    if (zframe_streq(cmd, AM2Z_BATCH)) {
        ck_assert_uint_eq(zmsg_size(in) % 2, 0);
        ck_assert_uint_gt(zmsg_size(in), 0);
        self->batch_out = zmsg_new();
        zmsg_append(self->batch_out, &(zframe_t *){ zframe_dup(peer) });
        zmsg_addstr(self->batch_out, AM2Z_PROTOCOL);
        zmsg_addstr(self->batch_out, AM2Z_BATCH);
        zlistx_t *finished = zlistx_new();     /* each job's events and RESULT */
        while (zmsg_size(in)) {
            zframe_t *c = zmsg_pop(in);
            zframe_t *b = zmsg_pop(in);
            s_on_command(self, peer, sig, c, b);
            if (self->job_out) {
                zlistx_add_start(finished, self->job_out);
                self->job_out = NULL;
            }
            zframe_destroy(&c);
            zframe_destroy(&b);
        }
        for (zmsg_t *job = zlistx_first(finished); job; job = zlistx_next(finished)) {
            zframe_t *f;
            while ((f = zmsg_pop(job)) != NULL)
                zmsg_append(self->batch_out, &f);
            zmsg_destroy(&job);
        }
        zlistx_destroy(&finished);
        zmsg_t *out = self->batch_out;
        self->batch_out = NULL;
        if (zmsg_size(out) > 3)
            zmsg_send(&out, self->router);
        zmsg_destroy(&out);
    } else {
        zframe_t *body = zmsg_pop(in);
        s_on_command(self, peer, sig, cmd, body);
        zframe_destroy(&body);
    }
    zframe_destroy(&peer);
    zframe_destroy(&sig);
    zframe_destroy(&cmd);
}

static void
s_fake_broker(zsock_t *pipe, void *args)
{
    (void)args;
    s_fake_t self = { 0 };
    self.router = zsock_new(ZMQ_ROUTER);
    self.results = zhashx_new();
    zhashx_set_destructor(self.results, s_chunk_destroy);
    int port = zsock_bind(self.router, "tcp://127.0.0.1:*");
    zsock_signal(pipe, 0);
    zstr_sendf(pipe, "tcp://127.0.0.1:%d", port);
    zpoller_t *poller = zpoller_new(pipe, self.router, NULL);
    bool running = true;
    while (running) {
        zsock_t *which = zpoller_wait(poller, -1);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            if (!cmd || streq(cmd, "$TERM")) {
                running = false;
            } else if (streq(cmd, "FINISH")) {
                s_event(&self, self.held_peer, "processor:job:completed", self.held_job,
                        self.held_session, "slow", 1);
                s_result(&self, self.held_peer, 0, self.held_job, "slow", self.held_session,
                         NULL, 0, true);
                if (self.fetcher)
                    s_result(&self, self.fetcher, 0, self.held_job, "slow", self.held_session,
                             NULL, 0, true);
                zframe_destroy(&self.fetcher);
                self.held_job[0] = '\0';
                zstr_send(pipe, "OK");
            } else if (streq(cmd, "STOPS")) {
                zstr_send(pipe, self.last_stop);
            } else if (streq(cmd, "NOACK")) {
                zstr_send(pipe, self.saw_noack ? "yes" : "no");
            }
            zstr_free(&cmd);
        } else if (which == self.router) {
            zmsg_t *in = zmsg_recv(self.router);
            if (in)
                s_on_message(&self, in);
            zmsg_destroy(&in);
        } else {
            running = false;
        }
    }
    zpoller_destroy(&poller);
    zframe_destroy(&self.held_peer);
    zframe_destroy(&self.fetcher);
    zhashx_destroy(&self.results);
    zsock_destroy(&self.router);
}

/* ---------------------------------------------------------------------------
   Fixture: one fake broker and one client per test
   ------------------------------------------------------------------------ */

static zactor_t *s_broker;
static am2z_client_t *s_client;
static char s_endpoint[64];

static void
s_setup(void)
{
    s_broker = zactor_new(s_fake_broker, NULL);
    ck_assert_ptr_nonnull(s_broker);
    char *ep = zstr_recv(s_broker);
    ck_assert_ptr_nonnull(ep);
    snprintf(s_endpoint, sizeof s_endpoint, "%s", ep);
    ck_assert_int_eq(am2z_client_connect(ep, &s_client), AM2Z_OK);
    am2z_client_set_timeout(s_client, 10000);   /* bounded; answers take ms */
    zstr_free(&ep);
}

static void
s_teardown(void)
{
    am2z_client_destroy(&s_client);
    zactor_destroy(&s_broker);
}

static am2z_state_t *
s_state(const char *session, int64_t count)
{
    am2z_state_t *st = NULL, *next = NULL;
    ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &st), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    ck_assert_int_eq(am2z_changes_set_int(ch, "count", count), AM2Z_OK);
    ck_assert_int_eq(am2z_state_apply(st, ch, am2z_clock_wall_ms(), 0, &next), AM2Z_OK);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st);
    return next;   /* version 2 */
}

/* ---------------------------------------------------------------------------
   Tests
   ------------------------------------------------------------------------ */

START_TEST(test_client_execute_returns_result)
{
    am2z_state_t *st = s_state("s1", 41);
    am2z_result_t *res = NULL;
    ck_assert_int_eq(am2z_client_execute(s_client, "echo", st, NULL, NULL, &res), AM2Z_OK);
    ck_assert_ptr_nonnull(res);
    ck_assert(res->success);
    ck_assert_ptr_null(res->error);
    ck_assert_str_eq(res->processor, "echo");
    ck_assert_str_eq(res->session_id, "s1");
    ck_assert_uint_eq(strlen(res->job_id), AM2Z_ID_LEN);
    ck_assert_uint_eq(res->attempt, 1);
    ck_assert_uint_eq(res->exec_us, 17);
    ck_assert_uint_gt(res->started_at_ms, 0);
    ck_assert_ptr_nonnull(res->state);
    ck_assert_uint_eq(am2z_state_version(res->state), 3);
    int64_t count = 0;
    ck_assert_int_eq(am2z_state_get_int(res->state, "count", &count), AM2Z_OK);
    ck_assert_int_eq(count, 41);
    am2z_result_destroy(&res);
    am2z_result_destroy(&res);   /* idempotent */

    /* without a state: continues from the session (here: a fresh one) */
    ck_assert_int_eq(am2z_client_execute_in_session(s_client, "s2", "echo", NULL, &res),
                     AM2Z_OK);
    ck_assert(res->success);
    ck_assert_str_eq(am2z_state_session_id(res->state), "s2");
    am2z_result_destroy(&res);

    /* execute asks for no ACCEPTED (noack): its RESULT answered it */
    zstr_send(s_broker, "NOACK");
    char *noack = zstr_recv(s_broker);
    ck_assert_str_eq(noack, "yes");
    zstr_free(&noack);

    /* a broker that ignores noack answers ACCEPTED first: the same result */
    ck_assert_int_eq(am2z_client_execute_in_session(s_client, "legacy", "echo", NULL, &res),
                     AM2Z_OK);
    ck_assert(res->success);
    ck_assert_str_eq(am2z_state_session_id(res->state), "legacy");
    ck_assert_uint_eq(strlen(res->job_id), AM2Z_ID_LEN);
    am2z_result_destroy(&res);

    /* argument checks */
    ck_assert_int_eq(am2z_client_execute(s_client, "echo", NULL, NULL, NULL, &res), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_client_execute(s_client, "bad name!", st, NULL, NULL, &res),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_client_execute(s_client, "echo", st, "bad id/", NULL, &res),
                     AM2Z_EINVAL);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(s_client), "session"));
    am2z_state_destroy(&st);
}
END_TEST

typedef struct {
    char names[16][64];
    uint64_t seqs[16];
    char jobs[16][AM2Z_JOB_ID_MAX + 1];
    size_t count;
    size_t data_bytes;
} s_seen_t;

static void
s_record(const am2z_event_t *ev, void *arg)
{
    s_seen_t *seen = arg;
    if (seen->count < 16) {
        snprintf(seen->names[seen->count], 64, "%s", ev->name);
        snprintf(seen->jobs[seen->count], sizeof seen->jobs[0], "%s", ev->job_id);
        seen->seqs[seen->count] = ev->seq;
        seen->data_bytes += ev->data_size;
        seen->count++;
    }
}

START_TEST(test_client_events_arrive_before_result)
{
    s_seen_t lifecycle = { 0 }, all = { 0 };
    ck_assert_int_eq(am2z_client_on_event(s_client, "processor:", s_record, &lifecycle),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_client_on_event(s_client, "", s_record, &all), AM2Z_OK);
    am2z_result_t *res = NULL;
    ck_assert_int_eq(am2z_client_execute_in_session(s_client, "s1", "echo", NULL, &res),
                     AM2Z_OK);
    ck_assert(res->success);
    /* every event was dispatched by the time execute returned */
    ck_assert_uint_eq(all.count, 3);
    ck_assert_str_eq(all.names[0], "processor:active");
    ck_assert_str_eq(all.names[1], "echo:note");
    ck_assert_str_eq(all.names[2], "processor:job:completed");
    for (size_t i = 0; i < all.count; i++) {
        ck_assert_uint_eq(all.seqs[i], i + 1);
        ck_assert_str_eq(all.jobs[i], res->job_id);
    }
    ck_assert_uint_gt(all.data_bytes, 0);
    /* prefix filter */
    ck_assert_uint_eq(lifecycle.count, 2);
    ck_assert_str_eq(lifecycle.names[0], "processor:active");
    ck_assert_str_eq(lifecycle.names[1], "processor:job:completed");
    am2z_result_destroy(&res);

    /* at most 16 subscriptions */
    for (int i = 2; i < 16; i++)
        ck_assert_int_eq(am2z_client_on_event(s_client, "x", s_record, &all), AM2Z_OK);
    ck_assert_int_eq(am2z_client_on_event(s_client, "x", s_record, &all), AM2Z_ERESOURCE);
}
END_TEST

START_TEST(test_client_unknown_processor_is_failed_result)
{
    am2z_result_t *res = NULL;
    ck_assert_int_eq(am2z_client_execute_in_session(s_client, "s1", "nope", NULL, &res),
                     AM2Z_OK);
    ck_assert_ptr_nonnull(res);
    ck_assert(!res->success);
    ck_assert_ptr_null(res->state);
    ck_assert_ptr_nonnull(res->error);
    ck_assert_int_eq(res->error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    ck_assert_int_eq(res->error->category, AM2Z_CAT_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(res->error->message, "echo"));
    ck_assert_str_eq(res->processor, "nope");
    ck_assert_str_eq(res->session_id, "s1");
    am2z_result_destroy(&res);

    /* submit reports the refusal as a return code */
    char job[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(s_client, "nope", NULL, "s1", NULL, job), AM2Z_EFAILED);
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(s_client), "not found"));

    /* a processor failure is a failed result too */
    ck_assert_int_eq(am2z_client_execute_in_session(s_client, "s1", "fail", NULL, &res),
                     AM2Z_OK);
    ck_assert(!res->success);
    ck_assert_uint_eq(res->attempt, 3);
    ck_assert_int_eq(res->error->kind, AM2Z_KIND_PROCESSOR_EXECUTION);
    ck_assert_ptr_nonnull(strstr(res->error->message, "boom"));
    am2z_result_destroy(&res);
}
END_TEST

/*  The scripted broker answers a BATCH's jobs in reverse order
    (s_on_message): each result must still land at its request's index. */
START_TEST(test_client_execute_many_keeps_order_and_failures)
{
    am2z_state_t *states[5];
    for (int i = 0; i < 5; i++)
        states[i] = s_state("many", 10 + i);
    s_seen_t done = { 0 };
    ck_assert_int_eq(am2z_client_on_event(s_client, "processor:job:completed", s_record,
                                          &done), AM2Z_OK);
    am2z_result_t *results[5];
    ck_assert_int_eq(am2z_client_execute_many(s_client, "echo",
                                              (const am2z_state_t *const *)states, 5, NULL,
                                              results), AM2Z_OK);
    ck_assert_uint_eq(done.count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_ptr_nonnull(results[i]);
        ck_assert(results[i]->success);
        int64_t count = 0;
        ck_assert_int_eq(am2z_state_get_int(results[i]->state, "count", &count), AM2Z_OK);
        ck_assert_int_eq(count, 10 + i);
        /* the jobs finished last to first, yet result i is request i's */
        ck_assert_str_eq(done.jobs[4 - i], results[i]->job_id);
        am2z_result_destroy(&results[i]);
    }
    /* a refused and a failing processor: failed results, not errors */
    ck_assert_int_eq(am2z_client_execute_many(s_client, "nope",
                                              (const am2z_state_t *const *)states, 2, NULL,
                                              results), AM2Z_OK);
    for (int i = 0; i < 2; i++) {
        ck_assert(!results[i]->success);
        ck_assert_int_eq(results[i]->error->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
        am2z_result_destroy(&results[i]);
    }
    ck_assert_int_eq(am2z_client_execute_many(s_client, "fail", NULL, 0, "s1", results),
                     AM2Z_OK);
    const am2z_state_t *none[3] = { NULL, NULL, NULL };
    ck_assert_int_eq(am2z_client_execute_many(s_client, "fail", none, 3, "s1", results),
                     AM2Z_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert(!results[i]->success);
        ck_assert_int_eq(results[i]->error->kind, AM2Z_KIND_PROCESSOR_EXECUTION);
        am2z_result_destroy(&results[i]);
    }
    for (int i = 0; i < 5; i++)
        am2z_state_destroy(&states[i]);
}
END_TEST

START_TEST(test_client_submit_then_wait)
{
    char job[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(s_client, "slow", NULL, "s1", NULL, job), AM2Z_OK);
    ck_assert_uint_eq(strlen(job), AM2Z_ID_LEN);
    am2z_result_t *res = NULL;
    ck_assert_int_eq(am2z_client_poll(s_client, job, &res), AM2Z_ETIMEOUT);
    ck_assert_int_eq(am2z_client_wait(s_client, job, 50, &res), AM2Z_ETIMEOUT);
    ck_assert_ptr_null(res);

    /* the broker finishes it: wait collects it */
    zstr_send(s_broker, "FINISH");
    char *ok = zstr_recv(s_broker);
    zstr_free(&ok);
    ck_assert_int_eq(am2z_client_wait(s_client, job, 5000, &res), AM2Z_OK);
    ck_assert(res->success);
    ck_assert_str_eq(res->job_id, job);
    am2z_result_destroy(&res);

    /* collected once; a second wait fetches it from the broker's store */
    ck_assert_int_eq(am2z_client_wait(s_client, job, 5000, &res), AM2Z_OK);
    ck_assert(res->success);
    ck_assert_str_eq(res->job_id, job);
    am2z_result_destroy(&res);

    /* poll after the result arrived */
    ck_assert_int_eq(am2z_client_submit(s_client, "echo", NULL, "s1", NULL, job), AM2Z_OK);
    uint64_t deadline = am2z_clock_mono_us() + 5000000;
    int rc;
    while ((rc = am2z_client_poll(s_client, job, &res)) == AM2Z_ETIMEOUT
           && am2z_clock_mono_us() < deadline)
        zclock_sleep(1);
    ck_assert_int_eq(rc, AM2Z_OK);
    ck_assert(res->success);
    am2z_result_destroy(&res);

    /* a job nobody knows */
    ck_assert_int_eq(am2z_client_wait(s_client, "0123456789abcdef0123456789abcdef", 5000, &res),
                     AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_client_wait(s_client, "bad job/", 5000, &res), AM2Z_EINVAL);
}
END_TEST

START_TEST(test_client_fetch_of_pending_job_waits_for_result)
{
    /* one client submits; another (a reconnect) collects by id */
    char job[AM2Z_JOB_ID_MAX + 1];
    ck_assert_int_eq(am2z_client_submit(s_client, "slow", NULL, "s1", NULL, job), AM2Z_OK);
    am2z_client_t *other = NULL;
    ck_assert_int_eq(am2z_client_connect(s_endpoint, &other), AM2Z_OK);
    am2z_result_t *res = NULL;
    /* FETCH says pending: the wait times out, the job stays awaited */
    ck_assert_int_eq(am2z_client_wait(other, job, 100, &res), AM2Z_ETIMEOUT);
    zstr_send(s_broker, "FINISH");
    char *ok = zstr_recv(s_broker);
    zstr_free(&ok);
    ck_assert_int_eq(am2z_client_wait(other, job, 5000, &res), AM2Z_OK);
    ck_assert(res->success);
    ck_assert_str_eq(res->job_id, job);
    am2z_result_destroy(&res);
    /* the submitter got it too */
    ck_assert_int_eq(am2z_client_wait(s_client, job, 5000, &res), AM2Z_OK);
    ck_assert_str_eq(res->job_id, job);
    am2z_result_destroy(&res);
    am2z_client_destroy(&other);
}
END_TEST

START_TEST(test_client_wait_times_out_without_broker)
{
    /* a ROUTER that never answers stands in for an absent broker */
    zsock_t *mute = zsock_new(ZMQ_ROUTER);
    int port = zsock_bind(mute, "tcp://127.0.0.1:*");
    ck_assert_int_gt(port, 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    am2z_client_t *client = NULL;
    ck_assert_int_eq(am2z_client_connect(ep, &client), AM2Z_OK);
    am2z_client_set_timeout(client, 200);
    am2z_result_t *res = NULL;
    uint64_t t0 = am2z_clock_mono_us();
    ck_assert_int_eq(am2z_client_execute_in_session(client, "s1", "echo", NULL, &res),
                     AM2Z_ETIMEOUT);
    uint64_t took_ms = (am2z_clock_mono_us() - t0) / 1000;
    ck_assert_ptr_null(res);
    ck_assert_uint_ge(took_ms, 190);
    ck_assert_uint_lt(took_ms, 60000);    /* sanity only: it did return */
    ck_assert_ptr_nonnull(strstr(am2z_client_last_error(client), "within 20"));
    am2z_stats_t stats;
    ck_assert_int_eq(am2z_client_get_stats(client, &stats), AM2Z_ETIMEOUT);
    am2z_client_destroy(&client);
    zsock_destroy(&mute);

    /* and nothing listening at all */
    ck_assert_int_eq(am2z_client_connect("tcp://127.0.0.1:1", &client), AM2Z_OK);
    am2z_client_set_timeout(client, 200);
    ck_assert_int_eq(am2z_client_execute_in_session(client, "s1", "echo", NULL, &res),
                     AM2Z_ETIMEOUT);
    am2z_client_destroy(&client);
    am2z_client_destroy(&client);   /* idempotent */

    ck_assert_int_eq(am2z_client_connect("nonsense://x", &client), AM2Z_EINVAL);
    ck_assert_ptr_null(client);
}
END_TEST

START_TEST(test_client_queries_decode_replies)
{
    am2z_stats_t stats;
    ck_assert_int_eq(am2z_client_get_stats(s_client, &stats), AM2Z_OK);
    ck_assert_uint_eq(stats.uptime_ms, 100);
    ck_assert_uint_eq(stats.processors, 101);
    ck_assert_uint_eq(stats.workers, 102);
    ck_assert_uint_eq(stats.sessions, 103);
    ck_assert_uint_eq(stats.running, 104);
    ck_assert_uint_eq(stats.waiting, 105);
    ck_assert_uint_eq(stats.completed, 106);
    ck_assert_uint_eq(stats.failed, 107);

    am2z_queue_list_t *queues = NULL;
    ck_assert_int_eq(am2z_client_get_queue_stats(s_client, &queues), AM2Z_OK);
    ck_assert_uint_eq(queues->count, 2);
    ck_assert_str_eq(queues->names[0], "echo");
    ck_assert_uint_eq(queues->stats[0].waiting, 1);
    ck_assert_uint_eq(queues->stats[0].paused, 6);
    ck_assert_str_eq(queues->names[1], "fail");
    ck_assert_uint_eq(queues->stats[1].active, 11);
    am2z_queue_list_destroy(&queues);
    am2z_queue_list_destroy(&queues);
    ck_assert_int_eq(am2z_client_get_session_stats(s_client, "s1", &queues), AM2Z_OK);
    ck_assert_uint_eq(queues->stats[1].waiting, 20);
    am2z_queue_list_destroy(&queues);

    am2z_strlist_t *list = NULL;
    ck_assert_int_eq(am2z_client_get_active_sessions(s_client, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0], "s1");
    ck_assert_str_eq(list->items[1], "s2");
    am2z_strlist_destroy(&list);
    ck_assert_int_eq(am2z_client_list_processors(s_client, &list), AM2Z_OK);
    ck_assert_uint_eq(list->count, 3);
    ck_assert_str_eq(list->items[2], "slow");
    am2z_strlist_destroy(&list);
    bool registered = false;
    ck_assert_int_eq(am2z_client_is_processor_registered(s_client, "fail", &registered),
                     AM2Z_OK);
    ck_assert(registered);
    ck_assert_int_eq(am2z_client_is_processor_registered(s_client, "nope", &registered),
                     AM2Z_OK);
    ck_assert(!registered);

    am2z_state_t *st = NULL;
    ck_assert_int_eq(am2z_client_get_state(s_client, "s1", &st), AM2Z_OK);
    ck_assert_str_eq(am2z_state_session_id(st), "s1");
    ck_assert_uint_eq(am2z_state_version(st), 1);
    am2z_state_destroy(&st);
    ck_assert_int_eq(am2z_client_get_state(s_client, "s9", &st), AM2Z_ENOTFOUND);
    ck_assert_ptr_null(st);

    /* raw: the REPLY data as msgpack */
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_client_query(s_client, "sessions", NULL, &data, &size), AM2Z_OK);
    ck_assert_uint_eq(size, 7);
    ck_assert_uint_eq(data[0], 0x92);
    free(data);
    ck_assert_int_eq(am2z_client_query(s_client, "job", "0123", &data, &size), AM2Z_ENOTFOUND);
}
END_TEST

START_TEST(test_client_stop_session)
{
    ck_assert_int_eq(am2z_client_stop_session(s_client, "s1", false), AM2Z_OK);
    zstr_send(s_broker, "STOPS");
    char *seen = zstr_recv(s_broker);
    ck_assert_str_eq(seen, "s1 0");
    zstr_free(&seen);
    ck_assert_int_eq(am2z_client_stop_session(s_client, "s2", true), AM2Z_OK);
    zstr_send(s_broker, "STOPS");
    seen = zstr_recv(s_broker);
    ck_assert_str_eq(seen, "s2 1");
    zstr_free(&seen);
    ck_assert_int_eq(am2z_client_stop_session(s_client, "bad id/", true), AM2Z_EINVAL);
}
END_TEST

static void
s_publish(zsock_t *pub, const char *name, const char *session)
{
    am2z_msg_t ev;
    am2z_msg_init(&ev, AM2Z_CMD_EVENT);
    ev.name = strdup(name);
    ev.session = strdup(session);
    ev.job = strdup("0123456789abcdef0123456789abcdef");
    ev.processor = strdup("echo");
    ev.seq = 1;
    ev.attempt = 1;
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(&ev, &body, &size), AM2Z_OK);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, name);
    zmsg_addstr(m, AM2Z_PROTOCOL);
    zmsg_addstr(m, "EVENT");
    zmsg_addmem(m, body, size);
    zmsg_send(&m, pub);
    free(body);
    am2z_msg_clear(&ev);
}

START_TEST(test_client_events_feed_filters_by_prefix_and_session)
{
    zsock_t *pub = zsock_new(ZMQ_PUB);
    int port = zsock_bind(pub, "tcp://127.0.0.1:*");
    ck_assert_int_gt(port, 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    am2z_events_t *events = NULL;
    ck_assert_int_eq(am2z_events_subscribe(ep, "processor:", "s1", &events), AM2Z_OK);
    /* SUB joins asynchronously: publish until something arrives (bounded) */
    s_seen_t seen = { 0 };
    uint64_t deadline = am2z_clock_mono_us() + 10 * 1000000;
    while (seen.count == 0 && am2z_clock_mono_us() < deadline) {
        s_publish(pub, "session:created", "s1");          /* other prefix */
        s_publish(pub, "processor:active", "s2");         /* other session */
        s_publish(pub, "processor:job:completed", "s1");  /* wanted */
        am2z_events_next(events, 50, s_record, &seen);
    }
    ck_assert_uint_ge(seen.count, 1);
    for (size_t i = 0; i < seen.count; i++)
        ck_assert_str_eq(seen.names[i], "processor:job:completed");
    am2z_events_destroy(&events);
    am2z_events_destroy(&events);
    zsock_destroy(&pub);
    ck_assert_int_eq(am2z_events_subscribe("nonsense://x", "", NULL, &events), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_events_subscribe(ep, "", "bad id/", &events), AM2Z_EINVAL);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_client_execute_returns_result);
    tcase_add_test(tc, test_client_events_arrive_before_result);
    tcase_add_test(tc, test_client_unknown_processor_is_failed_result);
    tcase_add_test(tc, test_client_execute_many_keeps_order_and_failures);
    tcase_add_test(tc, test_client_submit_then_wait);
    tcase_add_test(tc, test_client_fetch_of_pending_job_waits_for_result);
    tcase_add_test(tc, test_client_wait_times_out_without_broker);
    tcase_add_test(tc, test_client_queries_decode_replies);
    tcase_add_test(tc, test_client_stop_session);
    tcase_add_test(tc, test_client_events_feed_filters_by_prefix_and_session);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
