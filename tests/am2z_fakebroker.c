/*  am2z_fakebroker.c — see am2z_fakebroker.h. */
#include "am2z_fakebroker.h"

#include "am2z_clock.h"

#include <check.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

struct am2z_fakebroker_t {
    zsock_t *router;              /* owned; bound on 127.0.0.1 */
    char endpoint[64];            /* tcp://127.0.0.1:PORT */
    zframe_t *peer;               /* owned; identity of the last sender */
    bool keep_heartbeats;         /* return HEARTBEATs from recv */
    size_t heartbeats;            /* HEARTBEATs seen */
    zmsg_t *batch;                /* owned: [sig] then the pairs of a BATCH not yet returned */
    size_t batches;               /* BATCHes received */
};

am2z_fakebroker_t *
am2z_fakebroker_new(void)
{
    am2z_fakebroker_t *self = calloc(1, sizeof *self);
    ck_assert_ptr_nonnull(self);
    self->router = zsock_new(ZMQ_ROUTER);
    ck_assert_ptr_nonnull(self->router);
    zsock_set_linger(self->router, 0);
    int port = zsock_bind(self->router, "tcp://127.0.0.1:*");
    ck_assert_int_gt(port, 0);
    snprintf(self->endpoint, sizeof self->endpoint, "tcp://127.0.0.1:%d", port);
    return self;
}

void
am2z_fakebroker_destroy(am2z_fakebroker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_fakebroker_t *self = *self_p;
    zmsg_destroy(&self->batch);
    zframe_destroy(&self->peer);
    zsock_destroy(&self->router);
    free(self);
    *self_p = NULL;
}

const char *
am2z_fakebroker_endpoint(const am2z_fakebroker_t *self)
{
    return self->endpoint;
}

void
am2z_fakebroker_keep_heartbeats(am2z_fakebroker_t *self, bool keep)
{
    self->keep_heartbeats = keep;
}

size_t
am2z_fakebroker_heartbeats(const am2z_fakebroker_t *self)
{
    return self->heartbeats;
}

void
am2z_fakebroker_peer(const am2z_fakebroker_t *self, char *out, size_t size)
{
    ck_assert_ptr_nonnull(self->peer);
    char *hex = zframe_strhex(self->peer);
    snprintf(out, size, "%s", hex);
    free(hex);
}

/*  Decodes (sig, cmd, body); asserts it is well formed. */
static void
s_decode(zframe_t *sig, zframe_t *cmd, zframe_t *body, am2z_msg_t *msg)
{
    ck_assert_ptr_nonnull(body);
    char err[256] = "";
    int rc = am2z_frames_decode(zframe_data(sig), zframe_size(sig),
                                zframe_data(cmd), zframe_size(cmd),
                                zframe_data(body), zframe_size(body),
                                (size_t)64 << 20, msg, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "worker sent an undecodable message: %s", err);
}

/*  The next message: the next pair of a BATCH being read, or a new
    message (a BATCH is kept and returned pair by pair). */
static int
s_next(am2z_fakebroker_t *self, am2z_msg_t *msg, uint64_t deadline)
{
    while (!self->batch) {
        uint64_t now = am2z_clock_mono_us();
        if (now >= deadline)
            return -1;
        zmq_pollitem_t item = { .socket = zsock_resolve(self->router),
                                .events = ZMQ_POLLIN };
        int rc = zmq_poll(&item, 1, (long)((deadline - now + 999) / 1000));
        if (rc <= 0)
            continue;
        zmsg_t *raw = zmsg_recv(self->router);
        ck_assert_ptr_nonnull(raw);
        zframe_destroy(&self->peer);
        self->peer = zmsg_pop(raw);
        zframe_t *sig = zmsg_first(raw);
        zframe_t *cmd = zmsg_next(raw);
        if (cmd && zframe_streq(cmd, AM2Z_BATCH)) {
            ck_assert_uint_ge(zmsg_size(raw), 4);
            ck_assert_uint_eq(zmsg_size(raw) % 2, 0);
            zmsg_remove(raw, cmd);
            zframe_destroy(&cmd);
            self->batch = raw;            /* [sig, cmd, body, cmd, body...] */
            self->batches++;
            break;
        }
        ck_assert_uint_eq(zmsg_size(raw), 3);
        s_decode(sig, cmd, zmsg_next(raw), msg);
        zmsg_destroy(&raw);
        return 0;
    }
    zframe_t *sig = zmsg_first(self->batch);
    zframe_t *cmd = zmsg_next(self->batch);
    zframe_t *body = zmsg_next(self->batch);
    s_decode(sig, cmd, body, msg);
    zmsg_remove(self->batch, cmd);
    zmsg_remove(self->batch, body);
    zframe_destroy(&cmd);
    zframe_destroy(&body);
    if (zmsg_size(self->batch) == 1)
        zmsg_destroy(&self->batch);
    return 0;
}

int
am2z_fakebroker_recv(am2z_fakebroker_t *self, am2z_msg_t *msg, int timeout_ms)
{
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    while (true) {
        if (s_next(self, msg, deadline) != 0)
            return -1;
        if (msg->cmd == AM2Z_CMD_HEARTBEAT) {
            self->heartbeats++;
            if (!self->keep_heartbeats) {
                am2z_msg_clear(msg);
                continue;
            }
        }
        return 0;
    }
}

size_t
am2z_fakebroker_batches(const am2z_fakebroker_t *self)
{
    return self->batches;
}

void
am2z_fakebroker_expect(am2z_fakebroker_t *self, am2z_cmd_t cmd,
                       am2z_msg_t *msg, int timeout_ms)
{
    int rc = am2z_fakebroker_recv(self, msg, timeout_ms);
    ck_assert_msg(rc == 0, "no %s within %d ms", am2z_cmd_name(cmd), timeout_ms);
    ck_assert_msg(msg->cmd == cmd, "expected %s, got %s", am2z_cmd_name(cmd),
                  am2z_cmd_name(msg->cmd));
}

void
am2z_fakebroker_send_raw(am2z_fakebroker_t *self, size_t nframes,
                         const void *const *data, const size_t *sizes)
{
    ck_assert_ptr_nonnull(self->peer);
    zmsg_t *msg = zmsg_new();
    zmsg_append(msg, &(zframe_t *){ zframe_dup(self->peer) });
    for (size_t i = 0; i < nframes; i++)
        zmsg_addmem(msg, data[i], sizes[i]);
    ck_assert_int_eq(zmsg_send(&msg, self->router), 0);
}

void
am2z_fakebroker_send(am2z_fakebroker_t *self, const am2z_msg_t *msg)
{
    uint8_t *body = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_msg_encode(msg, &body, &size), AM2Z_OK);
    const char *cmd = am2z_cmd_name(msg->cmd);
    const void *data[3] = { AM2Z_PROTOCOL, cmd, body };
    size_t sizes[3] = { strlen(AM2Z_PROTOCOL), strlen(cmd), size };
    am2z_fakebroker_send_raw(self, 3, data, sizes);
    free(body);
}

void
am2z_fakebroker_job(am2z_fakebroker_t *self, const char *proc,
                    const am2z_state_t *state, uint32_t attempt,
                    uint64_t timeout_ms, char *job_id)
{
    ck_assert_int_eq(am2z_id_new(job_id), AM2Z_OK);
    /*  Borrowed pointers: the message is never cleared. */
    am2z_msg_t job;
    am2z_msg_init(&job, AM2Z_CMD_JOB);
    job.job = job_id;
    job.attempt = attempt;
    job.processor = (char *)proc;
    job.session = (char *)am2z_state_session_id(state);
    job.state = (uint8_t *)am2z_state_data(state);
    job.state_size = am2z_state_size(state);
    job.timeout_ms = timeout_ms;
    am2z_fakebroker_send(self, &job);
}

void
am2z_fakebroker_send_batch(am2z_fakebroker_t *self, const am2z_msg_t *msgs, size_t n)
{
    ck_assert_ptr_nonnull(self->peer);
    zmsg_t *out = zmsg_new();
    zmsg_append(out, &(zframe_t *){ zframe_dup(self->peer) });
    zmsg_addstr(out, AM2Z_PROTOCOL);
    zmsg_addstr(out, AM2Z_BATCH);
    for (size_t i = 0; i < n; i++) {
        uint8_t *body = NULL;
        size_t size = 0;
        ck_assert_int_eq(am2z_msg_encode(&msgs[i], &body, &size), AM2Z_OK);
        zmsg_addstr(out, am2z_cmd_name(msgs[i].cmd));
        zmsg_addmem(out, body, size);
        free(body);
    }
    ck_assert_int_eq(zmsg_send(&out, self->router), 0);
}

am2z_state_t *
am2z_fakebroker_state(const char *session, am2z_changes_t **changes_p)
{
    uint64_t now = am2z_clock_wall_ms();
    am2z_state_t *fresh = NULL;
    ck_assert_int_eq(am2z_state_new(session, now, &fresh), AM2Z_OK);
    if (!changes_p || !*changes_p)
        return fresh;
    am2z_state_t *applied = NULL, *out = NULL;
    ck_assert_int_eq(am2z_state_apply(fresh, *changes_p, now, 0, &applied), AM2Z_OK);
    ck_assert_int_eq(am2z_state_with_metadata(applied, session, 1, now, now, &out),
                     AM2Z_OK);
    am2z_state_destroy(&fresh);
    am2z_state_destroy(&applied);
    am2z_changes_destroy(changes_p);
    return out;
}

void
am2z_fakebroker_wait_done(am2z_fakebroker_t *self, const char *job_id,
                          am2z_msg_t *done, am2z_msg_t *events,
                          size_t max, size_t *nevents, int timeout_ms)
{
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    if (nevents)
        *nevents = 0;
    while (true) {
        uint64_t now = am2z_clock_mono_us();
        ck_assert_msg(now < deadline, "no DONE for %s within %d ms", job_id,
                      timeout_ms);
        am2z_msg_t msg;
        if (am2z_fakebroker_recv(self, &msg, (int)((deadline - now) / 1000) + 1) != 0)
            continue;
        bool mine = msg.job && streq(msg.job, job_id);
        if (mine && msg.cmd == AM2Z_CMD_DONE) {
            *done = msg;
            return;
        }
        if (mine && msg.cmd == AM2Z_CMD_EVENT && events && nevents && *nevents < max) {
            events[(*nevents)++] = msg;
            continue;
        }
        am2z_msg_clear(&msg);
    }
}

void
am2z_fakebroker_expect_done(am2z_fakebroker_t *self, const char *job_id,
                            am2z_msg_t *done, int timeout_ms)
{
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)timeout_ms * 1000;
    while (true) {
        uint64_t now = am2z_clock_mono_us();
        ck_assert_msg(now < deadline, "no DONE for %s within %d ms", job_id, timeout_ms);
        am2z_msg_t msg;
        if (am2z_fakebroker_recv(self, &msg, (int)((deadline - now) / 1000) + 1) != 0)
            continue;
        if (msg.cmd == AM2Z_CMD_DONE && msg.job && streq(msg.job, job_id)) {
            *done = msg;
            return;
        }
        bool heartbeat = msg.cmd == AM2Z_CMD_HEARTBEAT;
        char what[160];
        snprintf(what, sizeof what, "%s (job %s)", am2z_cmd_name(msg.cmd),
                 msg.job ? msg.job : "-");
        am2z_msg_clear(&msg);
        ck_assert_msg(heartbeat, "expected only the DONE of %s, got %s first", job_id, what);
    }
}
