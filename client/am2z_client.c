/*  am2z_client.c — see am2z_client.h.

    One DEALER socket (CZMQ, so the shared context makes inproc:// reach an
    embedded broker); raw libzmq calls on zsock_resolve() for polling and
    multipart sends. The broker's ROUTER adds and strips our identity, so
    every message is exactly [signature, command, body].

    Correlation
      - Every request carries a fresh `req` number. A call awaits a window
        of consecutive req numbers [await_lo, await_lo + await_n): one for
        an ordinary request, n for execute_many's pipelined SUBMITs. An
        ACCEPTED / REPLY / ERROR inside the window is kept in answers[];
        one outside it answers a request that already timed out and is
        dropped.
      - RESULTs are keyed by job id, whoever asked: each goes into the
        jobs table (job id -> entry). An entry is created pending when a
        SUBMIT is accepted (or a FETCH says "pending") and becomes finished
        when its RESULT arrives; wait/poll hand the result over and drop
        the entry. At most S_MAX_KEPT finished results are kept: beyond
        that the oldest is dropped, and a later wait fetches it again from
        the broker's store (FETCH), so nothing is lost.
      - A RESULT that carries a req inside the window (the answer to a
        FETCH) also counts as that request's answer.
      - EVENTs are dispatched to the subscriptions as they are read, so
        callbacks see them in arrival order, before the job's RESULT.

    Everything runs on the caller's thread; nothing happens between calls.
*/
#include "am2z_client.h"

#include "am2z_codec.h"
#include "am2z_idmap.h"
#include "am2z_reply.h"

#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_SUBS       16
#define S_MAX_KEPT       4096
#define S_MAX_BODY       (64u * 1024 * 1024)   /* largest body we accept */
#define S_MAX_FRAMES     8
#define S_BATCH_BYTES    (1024u * 1024)        /* bodies per BATCH (about) */
#define S_DEFAULT_TIMEOUT 30000
#define S_FOREVER        UINT64_MAX

/*  One job this client knows about. */
typedef struct {
    char job_id[AM2Z_JOB_ID_MAX + 1];
    am2z_result_t *result;        /* owned; NULL while pending */
    uint64_t finished_seq;        /* order results arrived (eviction) */
} s_entry_t;

typedef struct {
    char prefix[AM2Z_NAME_MAX + 1];
    am2z_event_fn *fn;
    void *arg;
} s_sub_t;

struct am2z_client_t {
    zsock_t *sock;                /* DEALER, owned */
    void *handle;                 /* libzmq socket behind sock, borrowed */
    char endpoint[512];
    uint64_t timeout_ms;          /* default wait; 0 = forever */
    uint64_t next_req;            /* last req number used */
    char last_error[512];
    am2z_idmap_t *jobs;           /* job id -> s_entry_t*, owned */
    size_t finished;              /* entries with a result */
    uint64_t finished_seq;        /* counter for s_entry_t.finished_seq */
    s_sub_t subs[S_MAX_SUBS];
    size_t nsubs;
    /* window of requests being awaited (see top of file) */
    uint64_t await_lo;            /* first req awaited; 0 = none */
    size_t await_n;
    am2z_msg_t *answers;          /* await_n slots, borrowed from the caller */
    bool *answered;               /* await_n flags, borrowed */
    size_t nanswered;
};

/* ---------------------------------------------------------------------------
   Small helpers
   ------------------------------------------------------------------------ */

static void
s_set_error(am2z_client_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
s_set_error(am2z_client_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->last_error, sizeof self->last_error, fmt, ap);
    va_end(ap);
}

/*  Absolute monotonic deadline (µs) for a timeout in ms; 0 = forever. */
static uint64_t
s_deadline(uint64_t timeout_ms)
{
    if (timeout_ms == 0 || timeout_ms > UINT64_MAX / 2000)
        return S_FOREVER;
    return am2z_clock_mono_us() + timeout_ms * 1000;
}

/*  Milliseconds left until deadline, as zmq_poll wants them (-1 forever). */
static long
s_remaining_ms(uint64_t deadline)
{
    if (deadline == S_FOREVER)
        return -1;
    uint64_t now = am2z_clock_mono_us();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (long)ms;
}

/*  Copies src into dst, cut to fit, always terminated (as snprintf "%s"
    would, without its format parsing: this runs per job). */
static void
s_copy(char *dst, size_t dst_size, const char *src)
{
    if (dst_size == 0)
        return;
    size_t n = src ? strnlen(src, dst_size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/*  A failed result carrying `error` (taken). NULL when out of memory. */
static am2z_result_t *
s_result_failed(const char *job_id, const char *processor, const char *session_id,
                am2z_error_t **error_p)
{
    am2z_result_t *r = calloc(1, sizeof *r);
    if (!r) {
        am2z_error_destroy(error_p);
        return NULL;
    }
    s_copy(r->job_id, sizeof r->job_id, job_id);
    s_copy(r->processor, sizeof r->processor, processor);
    s_copy(r->session_id, sizeof r->session_id, session_id);
    r->error = *error_p;
    *error_p = NULL;
    return r;
}

/*  Builds a result from a decoded RESULT; takes msg->error. NULL when out
    of memory. A success whose state does not decode becomes a failure
    (protocol, INVALID_STATE): a caller never gets a state we cannot read. */
static am2z_result_t *
s_result_from_msg(am2z_msg_t *msg)
{
    am2z_result_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    s_copy(r->job_id, sizeof r->job_id, msg->job);
    s_copy(r->processor, sizeof r->processor, msg->processor);
    s_copy(r->session_id, sizeof r->session_id, msg->session);
    r->success = msg->success;
    r->attempt = msg->attempt;
    r->exec_us = msg->exec_us;
    r->started_at_ms = msg->started_at_ms;
    r->dispatched_ms = msg->dispatched_ms;
    if (r->success && msg->state) {
        int rc = am2z_state_decode(msg->state, msg->state_size, &r->state);
        if (rc != AM2Z_OK) {
            r->success = false;
            r->error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                                      "the result state of job %s does not decode: %s",
                                      r->job_id, am2z_strerror(rc));
            if (!r->error) {
                am2z_result_destroy(&r);
                return NULL;
            }
        }
    } else if (!r->success) {
        r->error = msg->error;
        msg->error = NULL;
        if (!r->error) {
            r->error = am2z_error_new(AM2Z_CAT_PROTOCOL, "MISSING_ERROR",
                                      "job %s failed without an error value", r->job_id);
            if (!r->error) {
                am2z_result_destroy(&r);
                return NULL;
            }
        }
    }
    return r;
}

/* ---------------------------------------------------------------------------
   Jobs table
   ------------------------------------------------------------------------ */

static void
s_entry_destroy(void **item)
{
    s_entry_t *e = *item;
    if (e) {
        am2z_result_destroy(&e->result);
        free(e);
    }
    *item = NULL;
}

static s_entry_t *
s_entry_find(am2z_client_t *self, const char *job_id)
{
    return am2z_idmap_lookup(self->jobs, job_id);
}

/*  The entry for job_id, created pending when absent. NULL when out of
    memory. */
static s_entry_t *
s_entry_get(am2z_client_t *self, const char *job_id)
{
    s_entry_t *e = s_entry_find(self, job_id);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    s_copy(e->job_id, sizeof e->job_id, job_id);
    if (am2z_idmap_insert(self->jobs, e->job_id, e) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

/*  Removes the entry and returns its result (caller owns). */
static am2z_result_t *
s_entry_take(am2z_client_t *self, s_entry_t *e)
{
    am2z_result_t *r = e->result;
    e->result = NULL;
    if (r)
        self->finished--;
    am2z_idmap_delete(self->jobs, e->job_id);
    return r;
}

/*  Keeps at most S_MAX_KEPT finished results: drops the oldest. Rare (a
    client that never collects), so a linear scan is fine. */
static void
s_evict(am2z_client_t *self)
{
    while (self->finished > S_MAX_KEPT) {
        s_entry_t *oldest = NULL;
        for (s_entry_t *e = am2z_idmap_first(self->jobs); e; e = am2z_idmap_next(self->jobs))
            if (e->result && (!oldest || e->finished_seq < oldest->finished_seq))
                oldest = e;
        if (!oldest)
            return;
        am2z_result_t *r = s_entry_take(self, oldest);
        am2z_result_destroy(&r);
    }
}

/* ---------------------------------------------------------------------------
   Receiving
   ------------------------------------------------------------------------ */

static void
s_dispatch_event(am2z_client_t *self, const am2z_msg_t *msg)
{
    am2z_event_t ev = {
        .name = msg->name ? msg->name : "",
        .job_id = msg->job ? msg->job : "",
        .session_id = msg->session ? msg->session : "",
        .processor = msg->processor ? msg->processor : "",
        .attempt = msg->attempt,
        .ts_ms = msg->ts_ms,
        .seq = msg->seq,
        .data = msg->data,
        .data_size = msg->data ? msg->data_size : 0,
    };
    for (size_t i = 0; i < self->nsubs; i++) {
        const s_sub_t *sub = &self->subs[i];
        if (strncmp(ev.name, sub->prefix, strlen(sub->prefix)) == 0)
            sub->fn(&ev, sub->arg);
    }
}

/*  Slot of req in the awaited window, or -1. */
static long
s_await_slot(const am2z_client_t *self, uint64_t req)
{
    if (!self->await_lo || req < self->await_lo || req - self->await_lo >= self->await_n)
        return -1;
    return (long)(req - self->await_lo);
}

/*  Acts on one decoded message; takes what it keeps out of msg. */
static void
s_handle(am2z_client_t *self, am2z_msg_t *msg)
{
    switch (msg->cmd) {
    case AM2Z_CMD_EVENT:
        s_dispatch_event(self, msg);
        break;
    case AM2Z_CMD_RESULT: {
        s_entry_t *e = msg->job ? s_entry_get(self, msg->job) : NULL;
        if (!e) {
            s_set_error(self, "dropped a RESULT: out of memory");
            break;
        }
        if (!e->result) {
            e->result = s_result_from_msg(msg);
            if (e->result) {
                e->finished_seq = ++self->finished_seq;
                self->finished++;
            } else {
                s_set_error(self, "dropped the RESULT of %s: out of memory", e->job_id);
            }
        }
        long slot = s_await_slot(self, msg->req);
        if (slot >= 0 && !self->answered[slot]) {
            /* the answer to a FETCH: keep cmd and job id only */
            am2z_msg_t *a = &self->answers[slot];
            am2z_msg_init(a, AM2Z_CMD_RESULT);
            a->job = msg->job;
            msg->job = NULL;
            self->answered[slot] = true;
            self->nanswered++;
        }
        s_evict(self);
        break;
    }
    case AM2Z_CMD_ACCEPTED:
    case AM2Z_CMD_REPLY:
    case AM2Z_CMD_ERROR: {
        long slot = s_await_slot(self, msg->req);
        if (slot >= 0 && !self->answered[slot]) {
            self->answers[slot] = *msg;            /* moved */
            am2z_msg_init(msg, AM2Z_CMD_INVALID);
            self->answered[slot] = true;
            self->nanswered++;
        } else if (msg->cmd == AM2Z_CMD_ERROR && msg->req == 0 && msg->error) {
            s_set_error(self, "broker: %s", msg->error->message);
        }
        break;
    }
    default:
        break;   /* HEARTBEAT, DISCONNECT, anything else: nothing to do */
    }
}

/*  Decodes one (signature, command, body) from the broker and acts on it. */
static void
s_handle_frames(am2z_client_t *self, zmq_msg_t *sig, zmq_msg_t *cmd, zmq_msg_t *body)
{
    am2z_msg_t msg;
    char err[256];
    int drc = am2z_frames_decode(zmq_msg_data(sig), zmq_msg_size(sig), zmq_msg_data(cmd),
                                 zmq_msg_size(cmd), zmq_msg_data(body), zmq_msg_size(body),
                                 S_MAX_BODY, &msg, err, sizeof err);
    if (drc == AM2Z_OK) {
        s_handle(self, &msg);
        am2z_msg_clear(&msg);
    } else {
        s_set_error(self, "dropped a malformed message from the broker: %s", err);
    }
}

/*  Reads and handles the (command, body) pairs of a BATCH whose signature
    is *sig (the marker frame was read). A message arrives whole, so the
    reads never wait. */
static int
s_recv_batch(am2z_client_t *self, zmq_msg_t *sig)
{
    int more = 1;
    while (more) {
        zmq_msg_t cmd, body;
        zmq_msg_init(&cmd);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&cmd, self->handle, 0) < 0) {
            s_set_error(self, "zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
            return AM2Z_ENETWORK;
        }
        if (!zmq_msg_more(&cmd)) {
            s_set_error(self, "dropped the end of a BATCH from the broker: a command without a body");
            zmq_msg_close(&cmd);
            return AM2Z_OK;
        }
        if (zmq_msg_recv(&body, self->handle, 0) < 0) {
            zmq_msg_close(&cmd);
            s_set_error(self, "zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
            return AM2Z_ENETWORK;
        }
        more = zmq_msg_more(&body);
        s_handle_frames(self, sig, &cmd, &body);
        zmq_msg_close(&cmd);
        zmq_msg_close(&body);
    }
    return AM2Z_OK;
}

/*  Waits until deadline for one message and handles it. Returns AM2Z_OK
    (a message was read, maybe dropped), AM2Z_ETIMEOUT, AM2Z_ENETWORK. */
static int
s_recv_one(am2z_client_t *self, uint64_t deadline)
{
    zmq_pollitem_t item = { .socket = self->handle, .events = ZMQ_POLLIN };
    zmq_msg_t frames[S_MAX_FRAMES];
    /* a message already queued is read at once: libzmq takes it from the
       pipe without a syscall, where zmq_poll (or ZMQ_EVENTS) always costs
       a poll(2) on the socket's mailbox */
    zmq_msg_init(&frames[0]);
    bool ready = zmq_msg_recv(&frames[0], self->handle, ZMQ_DONTWAIT) >= 0;
    if (!ready)
        zmq_msg_close(&frames[0]);
    while (!ready) {
        int n = zmq_poll(&item, 1, s_remaining_ms(deadline));
        if (n > 0)
            break;
        if (n == 0)
            return AM2Z_ETIMEOUT;
        if (zmq_errno() == EINTR && !zsys_interrupted) {
            if (s_remaining_ms(deadline) == 0)
                return AM2Z_ETIMEOUT;
            continue;
        }
        s_set_error(self, "%s: %s", zmq_errno() == EINTR ? "interrupted" : "zmq_poll",
                    zmq_strerror(zmq_errno()));
        return AM2Z_ENETWORK;
    }
    size_t nframes = 0;
    int more = 1;
    int rc = AM2Z_OK;
    if (ready) {
        more = zmq_msg_more(&frames[0]);
        nframes = 1;
    }
    bool batch = false;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *f = nframes < S_MAX_FRAMES ? &frames[nframes] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, self->handle, 0) < 0) {
            int err = zmq_errno();
            zmq_msg_close(f);
            if (err == EINTR && nframes == 0)
                return AM2Z_OK;   /* nothing consumed; caller loops */
            s_set_error(self, "zmq_msg_recv: %s", zmq_strerror(err));
            rc = AM2Z_ENETWORK;
            break;
        }
        more = zmq_msg_more(f);
        if (f == &scratch)
            zmq_msg_close(f);
        nframes++;
        if (more && nframes == 2 && am2z_is_batch(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]))) {
            batch = true;         /* the pairs are read one by one below */
            break;
        }
    }
    if (rc == AM2Z_OK && batch) {
        rc = s_recv_batch(self, &frames[0]);
    } else if (rc == AM2Z_OK) {
        size_t first = 0;
        /* tolerate an empty delimiter frame (REQ-style envelope) */
        if (nframes == 4 && zmq_msg_size(&frames[0]) == 0)
            first = 1;
        if (nframes - first != 3) {
            s_set_error(self, "dropped a message of %zu frames from the broker", nframes);
        } else {
            s_handle_frames(self, &frames[first], &frames[first + 1], &frames[first + 2]);
        }
    }
    for (size_t i = 0; i < nframes && i < S_MAX_FRAMES; i++)
        zmq_msg_close(&frames[i]);
    return rc;
}

/*  Reads whatever is already queued, without blocking. */
static int
s_drain(am2z_client_t *self)
{
    for (;;) {
        int rc = s_recv_one(self, am2z_clock_mono_us());
        if (rc == AM2Z_ETIMEOUT)
            return AM2Z_OK;
        if (rc != AM2Z_OK)
            return rc;
    }
}

/* ---------------------------------------------------------------------------
   Sending and requests
   ------------------------------------------------------------------------ */

/*  Queues the signature frame (more follows), waiting until deadline for
    a connection when the pipe is full or not there yet. */
static int
s_send_signature(am2z_client_t *self, uint64_t deadline)
{
    zmq_pollitem_t item = { .socket = self->handle, .events = ZMQ_POLLOUT };
    for (;;) {
        if (zmq_send(self->handle, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL),
                     ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
            return AM2Z_OK;
        int err = zmq_errno();
        if (err != EAGAIN && err != EINTR) {
            s_set_error(self, "zmq_send to %s: %s", self->endpoint, zmq_strerror(err));
            return AM2Z_ENETWORK;
        }
        if (s_remaining_ms(deadline) == 0) {
            s_set_error(self, "cannot send to %s: no connection within the timeout",
                        self->endpoint);
            return AM2Z_ETIMEOUT;
        }
        zmq_poll(&item, 1, s_remaining_ms(deadline));
    }
}

/*  Encodes msg and sends [signature, command, body]. */
static int
s_send(am2z_client_t *self, const am2z_msg_t *msg, uint64_t deadline)
{
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(msg, &body, &size);
    if (rc != AM2Z_OK) {
        s_set_error(self, "cannot encode %s: %s", am2z_cmd_name(msg->cmd),
                    am2z_strerror(rc));
        return rc;
    }
    const char *cmd = am2z_cmd_name(msg->cmd);
    rc = s_send_signature(self, deadline);
    /* once the first part is queued, the rest of the message is too */
    if (rc == AM2Z_OK
        && (zmq_send(self->handle, cmd, strlen(cmd), ZMQ_SNDMORE) < 0
            || zmq_send(self->handle, body, size, 0) < 0)) {
        s_set_error(self, "zmq_send to %s: %s", self->endpoint, zmq_strerror(zmq_errno()));
        rc = AM2Z_ENETWORK;
    }
    free(body);
    return rc;
}

/*  Sends msgs as BATCH messages of at most AM2Z_BATCH_MAX commands and
    about S_BATCH_BYTES of bodies each (docs/PROTOCOL.md "Batches"): one
    ZeroMQ message for many requests. A chunk is encoded whole before any
    of it is sent (a multipart message cannot be taken back). */
static int
s_send_batch(am2z_client_t *self, const am2z_msg_t *msgs, size_t n, uint64_t deadline)
{
    size_t cap = n < AM2Z_BATCH_MAX ? n : AM2Z_BATCH_MAX;
    uint8_t **bodies = calloc(cap, sizeof *bodies);
    size_t *sizes = calloc(cap, sizeof *sizes);
    int rc = bodies && sizes ? AM2Z_OK : AM2Z_ENOMEM;
    size_t i = 0;
    while (rc == AM2Z_OK && i < n) {
        size_t k = 0, bytes = 0;
        while (rc == AM2Z_OK && k < cap && i + k < n && (k == 0 || bytes < S_BATCH_BYTES)) {
            rc = am2z_msg_encode(&msgs[i + k], &bodies[k], &sizes[k]);
            if (rc != AM2Z_OK) {
                s_set_error(self, "cannot encode %s: %s", am2z_cmd_name(msgs[i + k].cmd),
                            am2z_strerror(rc));
                break;
            }
            bytes += sizes[k++];
        }
        if (rc == AM2Z_OK)
            rc = s_send_signature(self, deadline);
        if (rc == AM2Z_OK && zmq_send(self->handle, AM2Z_BATCH, strlen(AM2Z_BATCH), ZMQ_SNDMORE) < 0)
            rc = AM2Z_ENETWORK;
        for (size_t j = 0; rc == AM2Z_OK && j < k; j++) {
            const char *cmd = am2z_cmd_name(msgs[i + j].cmd);
            if (zmq_send(self->handle, cmd, strlen(cmd), ZMQ_SNDMORE) < 0
                || zmq_send(self->handle, bodies[j], sizes[j], j + 1 < k ? ZMQ_SNDMORE : 0) < 0)
                rc = AM2Z_ENETWORK;
        }
        if (rc == AM2Z_ENETWORK)
            s_set_error(self, "zmq_send to %s: %s", self->endpoint, zmq_strerror(zmq_errno()));
        for (size_t j = 0; j < k; j++) {
            free(bodies[j]);
            bodies[j] = NULL;
        }
        i += k;
    }
    if (rc == AM2Z_ENOMEM)
        s_set_error(self, "out of memory");
    free(bodies);
    free(sizes);
    return rc;
}

/*  Sends n requests with consecutive req numbers (each msg's req is set
    here) and reads until all are answered or deadline passes. answers[i]
    is valid when answered[i]; the caller clears them. Returns AM2Z_OK
    (all answered), AM2Z_ETIMEOUT (some not), or a send error. */
static int
s_request_many(am2z_client_t *self, am2z_msg_t *reqs, size_t n, bool batch, uint64_t deadline,
               am2z_msg_t *answers, bool *answered)
{
    for (size_t i = 0; i < n; i++) {
        am2z_msg_init(&answers[i], AM2Z_CMD_INVALID);
        answered[i] = false;
    }
    long budget_ms = s_remaining_ms(deadline);   /* for the message */
    uint64_t lo = self->next_req + 1;
    self->next_req += n;
    self->await_lo = lo;
    self->await_n = n;
    self->answers = answers;
    self->answered = answered;
    self->nanswered = 0;
    int rc = AM2Z_OK;
    for (size_t i = 0; i < n; i++)
        reqs[i].req = lo + i;
    if (batch && n > 1)
        rc = s_send_batch(self, reqs, n, deadline);
    for (size_t i = 0; i < n && rc == AM2Z_OK && !(batch && n > 1); i++)
        rc = s_send(self, &reqs[i], deadline);
    while (rc == AM2Z_OK && self->nanswered < n) {
        rc = s_recv_one(self, deadline);
        if (rc == AM2Z_ETIMEOUT)
            s_set_error(self, "no answer from the broker at %s within %ld ms",
                        self->endpoint, budget_ms);
    }
    self->await_lo = 0;
    self->await_n = 0;
    self->answers = NULL;
    self->answered = NULL;
    return rc;
}

static int
s_request(am2z_client_t *self, am2z_msg_t *req, uint64_t deadline, am2z_msg_t *answer)
{
    bool answered = false;
    int rc = s_request_many(self, req, 1, false, deadline, answer, &answered);
    if (rc == AM2Z_OK && !answered)
        rc = AM2Z_ETIMEOUT;
    return rc;
}

/*  Return code for an ERROR answer; sets last_error. */
static int
s_refused(am2z_client_t *self, const am2z_msg_t *answer, const char *what)
{
    const am2z_error_t *e = answer->error;
    s_set_error(self, "%s refused: %s", what, e && e->message ? e->message : "no reason given");
    if (e && e->category == AM2Z_CAT_NOT_FOUND)
        return AM2Z_ENOTFOUND;
    return AM2Z_EPROTO;
}

/* ---------------------------------------------------------------------------
   Connection
   ------------------------------------------------------------------------ */

int
am2z_client_connect(const char *endpoint, am2z_client_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (!endpoint)
        endpoint = AM2Z_DEFAULT_FRONTEND;
    am2z_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return AM2Z_ENOMEM;
    if (strlen(endpoint) >= sizeof self->endpoint || !*endpoint) {
        free(self);
        return AM2Z_EINVAL;
    }
    s_copy(self->endpoint, sizeof self->endpoint, endpoint);
    self->timeout_ms = S_DEFAULT_TIMEOUT;
    /* keyed by each entry's own job id (borrowed: an entry leaves the table
       as it is freed) */
    self->jobs = am2z_idmap_new(s_entry_destroy);
    if (!self->jobs) {
        free(self);
        return AM2Z_ENOMEM;
    }
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->sock) {
        am2z_client_destroy(&self);
        return AM2Z_ENETWORK;
    }
    zsock_set_maxmsgsize(self->sock, (int)(S_MAX_BODY + 1024));
    zsock_set_linger(self->sock, 0);
    if (zsock_connect(self->sock, "%s", endpoint) != 0) {
        am2z_client_destroy(&self);
        return AM2Z_EINVAL;
    }
    self->handle = zsock_resolve(self->sock);
    *out = self;
    return AM2Z_OK;
}

void
am2z_client_destroy(am2z_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_client_t *self = *self_p;
    zsock_destroy(&self->sock);
    am2z_idmap_destroy(&self->jobs);
    free(self);
    *self_p = NULL;
}

void
am2z_client_set_timeout(am2z_client_t *self, uint64_t timeout_ms)
{
    if (self)
        self->timeout_ms = timeout_ms;
}

const char *
am2z_client_last_error(const am2z_client_t *self)
{
    return self ? self->last_error : "";
}

/* ---------------------------------------------------------------------------
   Executing
   ------------------------------------------------------------------------ */

/*  Validates arguments and fills a SUBMIT (borrowing strings and bytes:
    never am2z_msg_clear it). Returns AM2Z_OK or AM2Z_EINVAL. */
static int
s_submit_msg(am2z_client_t *self, const char *processor, const am2z_state_t *state,
             const char *session_id, const am2z_submit_opts_t *opts, am2z_msg_t *msg)
{
    if (!session_id && state)
        session_id = am2z_state_session_id(state);
    if (!processor || !am2z_name_valid(processor, strlen(processor))) {
        s_set_error(self, "invalid processor name '%s'", processor ? processor : "(null)");
        return AM2Z_EINVAL;
    }
    if (!session_id || !am2z_session_id_valid(session_id, strlen(session_id))) {
        s_set_error(self, "invalid or missing session id '%s'",
                    session_id ? session_id : "(null)");
        return AM2Z_EINVAL;
    }
    if (opts && opts->idempotency_key
        && (!*opts->idempotency_key || strlen(opts->idempotency_key) > AM2Z_NAME_MAX)) {
        s_set_error(self, "idempotency key must be 1..%d bytes", AM2Z_NAME_MAX);
        return AM2Z_EINVAL;
    }
    am2z_msg_init(msg, AM2Z_CMD_SUBMIT);
    msg->events = self->nsubs > 0;      /* the broker sends events only when asked */
    msg->processor = (char *)processor;
    msg->session = (char *)session_id;
    if (state) {
        msg->state = (uint8_t *)am2z_state_data(state);
        msg->state_size = am2z_state_size(state);
    }
    if (opts) {
        if (opts->has_priority)
            msg->priority = opts->priority;
        msg->timeout_ms = opts->timeout_ms;
        msg->delay_ms = opts->delay_ms;
        msg->idem_key = (char *)opts->idempotency_key;
        msg->every_ms = opts->repeat_every_ms;      /* issue 6: repeatable jobs */
        if (opts->repeat_every_ms) {
            msg->limit = opts->repeat_limit;
            msg->start_ms = opts->repeat_start_ms;
        }
    }
    return AM2Z_OK;
}

/*  Outcome of one SUBMIT answer: records the accepted job, or takes the
    refusal. Returns AM2Z_OK (job_id set), AM2Z_EFAILED (*refusal set,
    caller owns it), AM2Z_EPROTO, AM2Z_ENOMEM. */
static int
s_submit_outcome(am2z_client_t *self, am2z_msg_t *answer, const char *processor,
                 char job_id[AM2Z_JOB_ID_MAX + 1], am2z_error_t **refusal)
{
    if (answer->cmd == AM2Z_CMD_RESULT && answer->job) {
        /* a SUBMIT with noack: the RESULT answered it (s_handle keeps it) */
        s_copy(job_id, AM2Z_JOB_ID_MAX + 1, answer->job);
        return AM2Z_OK;
    }
    if (answer->cmd == AM2Z_CMD_ACCEPTED && answer->job) {
        s_copy(job_id, AM2Z_JOB_ID_MAX + 1, answer->job);
        if (answer->repeat)
            return AM2Z_OK;       /* a schedule's id: no result will come */
        if (!s_entry_get(self, job_id)) {
            s_set_error(self, "out of memory tracking job %s", job_id);
            return AM2Z_ENOMEM;
        }
        return AM2Z_OK;
    }
    if (answer->cmd == AM2Z_CMD_ERROR) {
        s_set_error(self, "submit of '%s' refused: %s", processor,
                    answer->error && answer->error->message ? answer->error->message
                                                            : "no reason given");
        *refusal = answer->error;
        answer->error = NULL;
        if (!*refusal)
            *refusal = am2z_error_new(AM2Z_CAT_PROTOCOL, "REFUSED", "%s", self->last_error);
        return *refusal ? AM2Z_EFAILED : AM2Z_ENOMEM;
    }
    s_set_error(self, "unexpected %s in answer to SUBMIT", am2z_cmd_name(answer->cmd));
    return AM2Z_EPROTO;
}

/*  submit with the refusal handed back (execute turns it into a result).
    chosen: the job id the SUBMIT asks for (its `job`), or NULL for one the
    broker makes. Waits for the answer until deadline. */
static int
s_submit(am2z_client_t *self, const char *processor, const am2z_state_t *state,
         const char *session_id, const am2z_submit_opts_t *opts, bool noack,
         const char *chosen, uint64_t deadline,
         char job_id[AM2Z_JOB_ID_MAX + 1], am2z_error_t **refusal)
{
    am2z_msg_t req;
    int rc = s_submit_msg(self, processor, state, session_id, opts, &req);
    if (rc != AM2Z_OK)
        return rc;
    req.noack = noack;
    req.job = (char *)chosen;             /* borrowed, as every pointer here */
    am2z_msg_t answer;
    rc = s_request(self, &req, deadline, &answer);
    if (rc == AM2Z_OK)
        rc = s_submit_outcome(self, &answer, processor, job_id, refusal);
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_submit(am2z_client_t *self, const char *processor, const am2z_state_t *state,
                   const char *session_id, const am2z_submit_opts_t *opts,
                   char job_id[AM2Z_JOB_ID_MAX + 1])
{
    if (!self || !job_id)
        return AM2Z_EINVAL;
    am2z_error_t *refusal = NULL;
    int rc = s_submit(self, processor, state, session_id, opts, false, NULL,
                      s_deadline(self->timeout_ms), job_id, &refusal);
    am2z_error_destroy(&refusal);
    return rc;
}

int
am2z_client_submit_many(am2z_client_t *self, const char *processor,
                        const am2z_state_t *const *states,
                        const char *const *session_ids, size_t count,
                        char (*job_ids)[AM2Z_JOB_ID_MAX + 1])
{
    if (!self || !job_ids || (count && !states))
        return AM2Z_EINVAL;
    if (count == 0)
        return AM2Z_OK;
    am2z_msg_t *reqs = calloc(count, sizeof *reqs);
    am2z_msg_t *answers = calloc(count, sizeof *answers);
    bool *answered = calloc(count, sizeof *answered);
    int rc = AM2Z_OK;
    if (!reqs || !answers || !answered) {
        rc = AM2Z_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < count && rc == AM2Z_OK; i++) {
        job_ids[i][0] = '\0';
        rc = s_submit_msg(self, processor, states[i], session_ids ? session_ids[i] : NULL,
                          NULL, &reqs[i]);
    }
    if (rc != AM2Z_OK)
        goto done;
    rc = s_request_many(self, reqs, count, true, s_deadline(self->timeout_ms), answers, answered);
    for (size_t i = 0; i < count; i++) {
        if (!answered[i])
            continue;
        am2z_error_t *refusal = NULL;
        int orc = s_submit_outcome(self, &answers[i], processor, job_ids[i], &refusal);
        if (orc != AM2Z_OK)
            job_ids[i][0] = '\0';
        am2z_error_destroy(&refusal);
        if (orc != AM2Z_OK && orc != AM2Z_EFAILED && rc == AM2Z_OK)
            rc = orc;
    }
done:
    if (answers)
        for (size_t i = 0; i < count; i++)
            am2z_msg_clear(&answers[i]);
    free(reqs);
    free(answers);
    free(answered);
    return rc;
}

/*  Asks the broker for job_id (FETCH): its RESULT when it has finished
    (from the store), else "pending" and the broker sends the RESULT here
    when it comes. AM2Z_OK (the entry exists, or holds the result), or the
    refusal / transport error. */
static int
s_fetch(am2z_client_t *self, const char *job_id, uint64_t deadline)
{
    am2z_msg_t req, answer;
    am2z_msg_init(&req, AM2Z_CMD_FETCH);
    req.job = (char *)job_id;
    int rc = s_request(self, &req, deadline, &answer);
    if (rc == AM2Z_OK) {
        if (answer.cmd == AM2Z_CMD_ERROR)
            rc = s_refused(self, &answer, "fetch");
        else if (answer.cmd == AM2Z_CMD_REPLY && !s_entry_get(self, job_id))
            rc = AM2Z_ENOMEM;   /* pending: the RESULT follows */
    }
    am2z_msg_clear(&answer);
    return rc;
}

/*  Waits for job_id until deadline (see am2z_client_wait).

    A RESULT goes to the connection that asked for the job. If that
    connection was replaced meanwhile (the broker restarted, or ZeroMQ
    reconnected after the link dropped: the broker then knows this socket
    by a new identity), it went nowhere. So a wait that has heard nothing of
    its job for S_REFETCH_MS asks again (FETCH, which also tells the broker
    where this socket is now), every S_REFETCH_MS after that: a finished
    job's RESULT comes from the store, a pending one is sent here too. */
#define S_REFETCH_MS 2000
static int
s_wait(am2z_client_t *self, const char *job_id, uint64_t deadline, am2z_result_t **out)
{
    s_entry_t *e = s_entry_find(self, job_id);
    uint64_t refetch = am2z_clock_mono_us() + S_REFETCH_MS * 1000;
    if (!e) {
        /* not ours, or its result was handed on: ask the broker's store,
           again every S_REFETCH_MS while it does not answer (the FETCH may
           have gone into a connection that is gone) */
        int rc = s_fetch(self, job_id, refetch < deadline ? refetch : deadline);
        if (rc != AM2Z_OK && rc != AM2Z_ETIMEOUT)
            return rc;
        if (rc == AM2Z_ETIMEOUT)
            refetch = am2z_clock_mono_us();
    }
    for (;;) {
        e = s_entry_find(self, job_id);
        if (e && e->result) {
            *out = s_entry_take(self, e);
            return AM2Z_OK;
        }
        int rc = s_recv_one(self, refetch < deadline ? refetch : deadline);
        if (rc == AM2Z_ETIMEOUT && refetch < deadline) {
            /* the FETCH itself may go into a connection that is gone (the
               broker is still restarting): give it one interval, then ask
               again, until the caller's deadline */
            uint64_t now = am2z_clock_mono_us();
            uint64_t until = now + S_REFETCH_MS * 1000;
            rc = s_fetch(self, job_id, until < deadline ? until : deadline);
            if (rc != AM2Z_OK && rc != AM2Z_ETIMEOUT)
                return rc;
            refetch = rc == AM2Z_ETIMEOUT ? am2z_clock_mono_us()
                                           : am2z_clock_mono_us() + S_REFETCH_MS * 1000;
            continue;
        }
        if (rc == AM2Z_ETIMEOUT)
            break;
        if (rc != AM2Z_OK)
            return rc;
    }
    s_set_error(self, "no result for job %s within the timeout", job_id);
    return AM2Z_ETIMEOUT;
}

int
am2z_client_wait(am2z_client_t *self, const char *job_id, uint64_t timeout_ms,
                 am2z_result_t **out)
{
    if (!self || !out || !job_id || !am2z_job_id_valid(job_id, strlen(job_id)))
        return AM2Z_EINVAL;
    *out = NULL;
    return s_wait(self, job_id, s_deadline(timeout_ms ? timeout_ms : self->timeout_ms), out);
}

int
am2z_client_poll(am2z_client_t *self, const char *job_id, am2z_result_t **out)
{
    if (!self || !out || !job_id || !am2z_job_id_valid(job_id, strlen(job_id)))
        return AM2Z_EINVAL;
    *out = NULL;
    int rc = s_drain(self);
    if (rc != AM2Z_OK)
        return rc;
    s_entry_t *e = s_entry_find(self, job_id);
    if (e && e->result) {
        *out = s_entry_take(self, e);
        return AM2Z_OK;
    }
    return AM2Z_ETIMEOUT;
}

int
am2z_client_execute(am2z_client_t *self, const char *processor, const am2z_state_t *state,
                    const char *session_id, const am2z_submit_opts_t *opts,
                    am2z_result_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (opts && opts->repeat_every_ms) {
        s_set_error(self, "execute: a repeatable job (repeat_every_ms) has no result to "
                    "wait for; use am2z_client_submit");
        return AM2Z_EINVAL;
    }
    char job_id[AM2Z_JOB_ID_MAX + 1];
    am2z_error_t *refusal = NULL;
    /* noack: the broker answers with the RESULT alone (one message and one
       wake-up of this process fewer per execute); an idempotent SUBMIT is
       still ACCEPTED (the broker says which job answers it). A noack
       SUBMIT names its job id, so that when S_REFETCH_MS pass without an
       answer (a long job, or a connection the broker lost: a restart)
       the wait goes on by FETCH, which finds the job wherever this socket
       now is. */
    bool noack = !(opts && opts->idempotency_key);
    char chosen[AM2Z_ID_LEN + 1];
    if (noack && am2z_id_new(chosen) != AM2Z_OK) {
        s_set_error(self, "execute: cannot read random bytes for a job id");
        return AM2Z_EIO;
    }
    uint64_t deadline = s_deadline(self->timeout_ms);
    uint64_t first = noack ? am2z_clock_mono_us() + S_REFETCH_MS * 1000 : deadline;
    int rc = s_submit(self, processor, state, session_id, opts, noack, noack ? chosen : NULL,
                      first < deadline ? first : deadline, job_id, &refusal);
    if (rc == AM2Z_ETIMEOUT && noack) {
        rc = s_wait(self, chosen, deadline, out);
        if (rc == AM2Z_ETIMEOUT)
            s_set_error(self, "no result for '%s' (job %s) in session '%s' within %llu ms",
                        processor, chosen,
                        session_id ? session_id : state ? am2z_state_session_id(state) : "?",
                        (unsigned long long)self->timeout_ms);
        else if (rc == AM2Z_ENOTFOUND)
            s_set_error(self, "job %s of '%s' is unknown to the broker: it was lost before "
                        "it was stored (the broker stopped before its commit) or its result "
                        "is no longer kept; it may or may not have run", chosen, processor);
        return rc;
    }
    if (rc == AM2Z_EFAILED) {
        /* refused (e.g. ProcessorNotFoundError): a failed result, not an error */
        if (!session_id && state)
            session_id = am2z_state_session_id(state);
        *out = s_result_failed("", processor, session_id, &refusal);
        return *out ? AM2Z_OK : AM2Z_ENOMEM;
    }
    if (rc != AM2Z_OK)
        return rc;
    return s_wait(self, job_id, deadline, out);
}

int
am2z_client_execute_in_session(am2z_client_t *self, const char *session_id,
                               const char *processor, const am2z_state_t *state,
                               am2z_result_t **out)
{
    return am2z_client_execute(self, processor, state, session_id, NULL, out);
}

int
am2z_client_execute_many(am2z_client_t *self, const char *processor,
                         const am2z_state_t *const *states, size_t count,
                         const char *session_id, am2z_result_t **results)
{
    if (!self || !results || (count && !states))
        return AM2Z_EINVAL;
    for (size_t i = 0; i < count; i++)
        results[i] = NULL;
    if (count == 0)
        return AM2Z_OK;
    am2z_msg_t *reqs = calloc(count, sizeof *reqs);
    am2z_msg_t *answers = calloc(count, sizeof *answers);
    bool *answered = calloc(count, sizeof *answered);
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc(count, sizeof *ids);
    bool *accepted = calloc(count, sizeof *accepted);
    int rc = AM2Z_OK;
    if (!reqs || !answers || !answered || !ids || !accepted) {
        rc = AM2Z_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < count && rc == AM2Z_OK; i++)
        rc = s_submit_msg(self, processor, states[i], session_id, NULL, &reqs[i]);
    if (rc != AM2Z_OK)
        goto done;

    /* all SUBMITs go out before any answer is read (pipelined) */
    uint64_t deadline = s_deadline(self->timeout_ms);
    rc = s_request_many(self, reqs, count, true, deadline, answers, answered);
    int first_error = rc;
    for (size_t i = 0; i < count; i++) {
        if (!answered[i])
            continue;
        am2z_error_t *refusal = NULL;
        int orc = s_submit_outcome(self, &answers[i], processor, ids[i], &refusal);
        if (orc == AM2Z_OK) {
            accepted[i] = true;
        } else if (orc == AM2Z_EFAILED) {
            const char *sid = session_id ? session_id : am2z_state_session_id(states[i]);
            results[i] = s_result_failed("", processor, sid, &refusal);
            if (!results[i] && first_error == AM2Z_OK)
                first_error = AM2Z_ENOMEM;
        } else if (first_error == AM2Z_OK) {
            first_error = orc;
        }
    }

    /* then the results, in input order; after the first transport failure
       only what has already arrived is collected */
    for (size_t i = 0; i < count; i++) {
        if (!accepted[i])
            continue;
        if (first_error == AM2Z_OK) {
            int wrc = s_wait(self, ids[i], s_deadline(self->timeout_ms), &results[i]);
            if (wrc != AM2Z_OK)
                first_error = wrc;
        } else {
            s_entry_t *e = s_entry_find(self, ids[i]);
            if (e && e->result)
                results[i] = s_entry_take(self, e);
        }
    }
    rc = first_error;
done:
    if (answers)
        for (size_t i = 0; i < count; i++)
            am2z_msg_clear(&answers[i]);
    free(reqs);
    free(answers);
    free(answered);
    free(ids);
    free(accepted);
    return rc;
}

/* ---------------------------------------------------------------------------
   Sessions and introspection
   ------------------------------------------------------------------------ */

/*  A list REPLY's data: its bytes, or an empty msgpack array when it has
    none (the broker omits empty data). */
static const uint8_t *
s_list_data(const am2z_msg_t *answer, size_t *size)
{
    static const uint8_t empty[] = { 0x90 };
    *size = answer->data ? answer->data_size : sizeof empty;
    return answer->data ? answer->data : empty;
}

/*  Records a list decoder's failure (err, else the code's text). */
static int
s_decode_failed(am2z_client_t *self, int rc, const char *err)
{
    if (rc != AM2Z_OK)
        s_set_error(self, "%s", err[0] ? err : am2z_strerror(rc));
    return rc;
}

/*  QUERY what; on AM2Z_OK *answer is the REPLY (caller clears it). */
static int
s_query(am2z_client_t *self, const char *what, const char *session_id, const char *job_id,
        am2z_msg_t *answer)
{
    am2z_msg_t req;
    am2z_msg_init(&req, AM2Z_CMD_QUERY);
    req.what = (char *)what;
    req.session = (char *)session_id;
    req.job = (char *)job_id;
    int rc = s_request(self, &req, s_deadline(self->timeout_ms), answer);
    if (rc == AM2Z_OK && answer->cmd != AM2Z_CMD_REPLY) {
        if (answer->cmd == AM2Z_CMD_ERROR) {
            char what_text[64];
            snprintf(what_text, sizeof what_text, "query '%s'", what);
            rc = s_refused(self, answer, what_text);
        } else {
            s_set_error(self, "unexpected %s in answer to QUERY", am2z_cmd_name(answer->cmd));
            rc = AM2Z_EPROTO;
        }
    }
    if (rc != AM2Z_OK)
        am2z_msg_clear(answer);
    return rc;
}

int
am2z_client_query(am2z_client_t *self, const char *what, const char *session_id,
                  uint8_t **data, size_t *size)
{
    if (!self || !what || !*what || !data || !size)
        return AM2Z_EINVAL;
    /* for what == "job" the id argument names the job */
    bool is_job = strcmp(what, "job") == 0;
    am2z_msg_t answer;
    int rc = s_query(self, what, is_job ? NULL : session_id, is_job ? session_id : NULL,
                     &answer);
    if (rc != AM2Z_OK)
        return rc;
    if (answer.data && answer.data_size) {
        *data = answer.data;
        *size = answer.data_size;
        answer.data = NULL;
    } else {
        /* no data: nil, so callers always get one msgpack object */
        *data = malloc(1);
        if (!*data) {
            am2z_msg_clear(&answer);
            return AM2Z_ENOMEM;
        }
        (*data)[0] = 0xc0;
        *size = 1;
    }
    am2z_msg_clear(&answer);
    return AM2Z_OK;
}

int
am2z_client_stop_session(am2z_client_t *self, const char *session_id, bool keep_state)
{
    return am2z_client_stop_session_report(self, session_id, keep_state, NULL);
}

int
am2z_client_stop_session_report(am2z_client_t *self, const char *session_id,
                                bool keep_state, am2z_stop_report_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!self || !session_id || !am2z_session_id_valid(session_id, strlen(session_id)))
        return AM2Z_EINVAL;
    am2z_msg_t req, answer;
    am2z_msg_init(&req, AM2Z_CMD_STOP_SESSION);
    req.session = (char *)session_id;
    req.keep_state = keep_state;
    /* the broker answers once the session's running job ended (or its
       stop-grace ran out): this client's timeout is the bound */
    int rc = s_request(self, &req, s_deadline(self->timeout_ms), &answer);
    if (rc == AM2Z_OK && answer.cmd == AM2Z_CMD_ERROR)
        rc = s_refused(self, &answer, "stop-session");
    else if (rc == AM2Z_OK && answer.cmd != AM2Z_CMD_REPLY)
        rc = AM2Z_EPROTO;
    if (rc == AM2Z_OK && out && answer.data) {
        char err[256] = "";
        rc = am2z_reply_decode_stop(answer.data, answer.data_size, out, err, sizeof err);
        if (rc != AM2Z_OK)
            s_set_error(self, "%s", err[0] ? err : am2z_strerror(rc));
    }
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_get_state(am2z_client_t *self, const char *session_id, am2z_state_t **out)
{
    if (!self || !out || !session_id || !am2z_session_id_valid(session_id, strlen(session_id)))
        return AM2Z_EINVAL;
    *out = NULL;
    am2z_msg_t answer;
    int rc = s_query(self, "state", session_id, NULL, &answer);
    if (rc != AM2Z_OK)
        return rc;
    if (!answer.data) {
        s_set_error(self, "no state for session %s", session_id);
        rc = AM2Z_ENOTFOUND;
    } else {
        rc = am2z_state_decode(answer.data, answer.data_size, out);
        if (rc != AM2Z_OK) {
            s_set_error(self, "state of session %s does not decode: %s", session_id,
                        am2z_strerror(rc));
            if (rc != AM2Z_ENOMEM)
                rc = AM2Z_EPROTO;
        }
    }
    am2z_msg_clear(&answer);
    return rc;
}

/*  Runs a query and hands its data to a reply decoder. */
typedef enum { S_STATS, S_QUEUES, S_STRLIST } s_shape_t;

static int
s_typed_query(am2z_client_t *self, const char *what, const char *session_id,
              s_shape_t shape, void *out)
{
    am2z_msg_t answer;
    int rc = s_query(self, what, session_id, NULL, &answer);
    if (rc != AM2Z_OK)
        return rc;
    char err[256] = "";
    const uint8_t nil = 0xc0;
    const uint8_t *data = answer.data ? answer.data : &nil;
    size_t size = answer.data ? answer.data_size : 1;
    switch (shape) {
    case S_STATS:
        rc = am2z_reply_decode_stats(data, size, out, err, sizeof err);
        break;
    case S_QUEUES:
        rc = am2z_reply_decode_queues(data, size, out, err, sizeof err);
        break;
    case S_STRLIST:
        rc = am2z_reply_decode_strlist(data, size, out, err, sizeof err);
        break;
    }
    if (rc != AM2Z_OK)
        s_set_error(self, "%s", err[0] ? err : am2z_strerror(rc));
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_get_stats(am2z_client_t *self, am2z_stats_t *out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    return s_typed_query(self, "stats", NULL, S_STATS, out);
}

int
am2z_client_get_queue_stats(am2z_client_t *self, am2z_queue_list_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    return s_typed_query(self, "queues", NULL, S_QUEUES, out);
}

int
am2z_client_get_session_stats(am2z_client_t *self, const char *session_id,
                              am2z_queue_list_t **out)
{
    if (!self || !out || !session_id || !am2z_session_id_valid(session_id, strlen(session_id)))
        return AM2Z_EINVAL;
    *out = NULL;
    return s_typed_query(self, "session-stats", session_id, S_QUEUES, out);
}

int
am2z_client_get_active_sessions(am2z_client_t *self, am2z_strlist_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    return s_typed_query(self, "sessions", NULL, S_STRLIST, out);
}

int
am2z_client_list_processors(am2z_client_t *self, am2z_strlist_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    return s_typed_query(self, "processors", NULL, S_STRLIST, out);
}

int
am2z_client_is_processor_registered(am2z_client_t *self, const char *name,
                                    bool *registered)
{
    if (!self || !name || !registered)
        return AM2Z_EINVAL;
    am2z_strlist_t *list = NULL;
    int rc = am2z_client_list_processors(self, &list);
    if (rc != AM2Z_OK)
        return rc;
    *registered = false;
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i], name) == 0)
            *registered = true;
    am2z_strlist_destroy(&list);
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Session lifecycle (issue 6)
   ------------------------------------------------------------------------ */

static int
s_session_query(am2z_client_t *self, const char *session_id, am2z_session_list_t **out)
{
    am2z_msg_t answer;
    int rc = s_query(self, "session-info", session_id, NULL, &answer);
    if (rc != AM2Z_OK)
        return rc;
    char err[256] = "";
    size_t size;
    const uint8_t *data = s_list_data(&answer, &size);
    rc = s_decode_failed(self, am2z_reply_decode_sessions(data, size, out, err, sizeof err), err);
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_session_list(am2z_client_t *self, am2z_session_list_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    return s_session_query(self, NULL, out);
}

int
am2z_client_session_info(am2z_client_t *self, const char *session_id,
                         am2z_session_info_t *out)
{
    if (!self || !out || !session_id || !am2z_session_id_valid(session_id, strlen(session_id)))
        return AM2Z_EINVAL;
    memset(out, 0, sizeof *out);
    am2z_session_list_t *list = NULL;
    int rc = s_session_query(self, session_id, &list);
    if (rc == AM2Z_OK && list->count != 1) {
        s_set_error(self, "REPLY session-info: expected one session, got %zu", list->count);
        rc = AM2Z_EPROTO;
    }
    if (rc == AM2Z_OK)
        *out = list->items[0];
    am2z_session_list_destroy(&list);
    return rc;
}

/* ---------------------------------------------------------------------------
   Dead letters
   ------------------------------------------------------------------------ */

static int
s_dlq_query(am2z_client_t *self, const char *processor, const char *session_id,
            const char *job_id, am2z_dlq_list_t **out)
{
    am2z_msg_t req, answer;
    am2z_msg_init(&req, AM2Z_CMD_QUERY);
    req.what = "dlq";
    req.processor = (char *)processor;
    req.session = (char *)session_id;
    req.job = (char *)job_id;
    int rc = s_request(self, &req, s_deadline(self->timeout_ms), &answer);
    if (rc != AM2Z_OK)
        return rc;
    if (answer.cmd == AM2Z_CMD_ERROR) {
        rc = s_refused(self, &answer, "dlq");
    } else if (answer.cmd != AM2Z_CMD_REPLY) {
        s_set_error(self, "unexpected %s in answer to QUERY dlq", am2z_cmd_name(answer.cmd));
        rc = AM2Z_EPROTO;
    } else {
        char err[256] = "";
        size_t size;
        const uint8_t *data = s_list_data(&answer, &size);
        rc = s_decode_failed(self, am2z_reply_decode_dlq(data, size, out, err, sizeof err), err);
    }
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_dlq_list(am2z_client_t *self, const char *processor, const char *session_id,
                     am2z_dlq_list_t **out)
{
    if (!self || !out || (processor && !am2z_name_valid(processor, strlen(processor)))
        || (session_id && !am2z_session_id_valid(session_id, strlen(session_id))))
        return AM2Z_EINVAL;
    *out = NULL;
    return s_dlq_query(self, processor, session_id, NULL, out);
}

int
am2z_client_dlq_get(am2z_client_t *self, const char *job_id, am2z_dlq_list_t **out)
{
    if (!self || !out || !job_id || !am2z_job_id_valid(job_id, strlen(job_id)))
        return AM2Z_EINVAL;
    *out = NULL;
    return s_dlq_query(self, NULL, NULL, job_id, out);
}

static int
s_dlq_op(am2z_client_t *self, const char *op, const char *job_id)
{
    if (!self || !job_id || !am2z_job_id_valid(job_id, strlen(job_id)))
        return AM2Z_EINVAL;
    am2z_msg_t req, answer;
    am2z_msg_init(&req, AM2Z_CMD_DLQ);
    req.op = (char *)op;
    req.job = (char *)job_id;
    int rc = s_request(self, &req, s_deadline(self->timeout_ms), &answer);
    if (rc != AM2Z_OK)
        return rc;
    if (answer.cmd == AM2Z_CMD_ERROR) {
        char what[32];
        snprintf(what, sizeof what, "dlq %s", op);
        rc = s_refused(self, &answer, what);
        if (rc != AM2Z_ENOTFOUND)
            rc = AM2Z_EFAILED;
    } else if (answer.cmd != AM2Z_CMD_REPLY) {
        s_set_error(self, "unexpected %s in answer to DLQ", am2z_cmd_name(answer.cmd));
        rc = AM2Z_EPROTO;
    }
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_dlq_retry(am2z_client_t *self, const char *job_id)
{
    return s_dlq_op(self, "retry", job_id);
}

int
am2z_client_dlq_discard(am2z_client_t *self, const char *job_id)
{
    return s_dlq_op(self, "discard", job_id);
}

/* ---------------------------------------------------------------------------
   Repeatable jobs (issue 6)
   ------------------------------------------------------------------------ */

int
am2z_client_repeat_list(am2z_client_t *self, const char *session_id,
                        am2z_repeat_list_t **out)
{
    if (!self || !out
        || (session_id && !am2z_session_id_valid(session_id, strlen(session_id))))
        return AM2Z_EINVAL;
    *out = NULL;
    am2z_msg_t answer;
    int rc = s_query(self, "repeats", session_id, NULL, &answer);
    if (rc != AM2Z_OK)
        return rc;
    char err[256] = "";
    size_t size;
    const uint8_t *data = s_list_data(&answer, &size);
    rc = s_decode_failed(self, am2z_reply_decode_repeats(data, size, out, err, sizeof err), err);
    am2z_msg_clear(&answer);
    return rc;
}

int
am2z_client_repeat_cancel(am2z_client_t *self, const char *repeat_id)
{
    if (!self || !repeat_id || !am2z_job_id_valid(repeat_id, strlen(repeat_id)))
        return AM2Z_EINVAL;
    am2z_msg_t req, answer;
    am2z_msg_init(&req, AM2Z_CMD_REPEAT);
    req.op = "cancel";
    req.job = (char *)repeat_id;
    int rc = s_request(self, &req, s_deadline(self->timeout_ms), &answer);
    if (rc != AM2Z_OK)
        return rc;
    if (answer.cmd == AM2Z_CMD_ERROR) {
        rc = s_refused(self, &answer, "repeat cancel");
        if (rc != AM2Z_ENOTFOUND)
            rc = AM2Z_EFAILED;
    } else if (answer.cmd != AM2Z_CMD_REPLY) {
        s_set_error(self, "unexpected %s in answer to REPEAT", am2z_cmd_name(answer.cmd));
        rc = AM2Z_EPROTO;
    }
    am2z_msg_clear(&answer);
    return rc;
}

/* ---------------------------------------------------------------------------
   Events
   ------------------------------------------------------------------------ */

int
am2z_client_on_event(am2z_client_t *self, const char *prefix, am2z_event_fn *fn, void *arg)
{
    if (!self || !fn)
        return AM2Z_EINVAL;
    if (!prefix)
        prefix = "";
    if (strlen(prefix) > AM2Z_NAME_MAX)
        return AM2Z_EINVAL;
    if (self->nsubs >= S_MAX_SUBS)
        return AM2Z_ERESOURCE;
    s_sub_t *sub = &self->subs[self->nsubs++];
    s_copy(sub->prefix, sizeof sub->prefix, prefix);
    sub->fn = fn;
    sub->arg = arg;
    return AM2Z_OK;
}

struct am2z_events_t {
    zsock_t *sub;                 /* SUB, owned */
    void *handle;                 /* libzmq socket behind sub, borrowed */
    char session[AM2Z_SESSION_ID_MAX + 1];   /* "" = all sessions */
};

int
am2z_events_subscribe(const char *endpoint, const char *prefix, const char *session_id,
                      am2z_events_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (!endpoint)
        endpoint = AM2Z_DEFAULT_EVENTS;
    if (!prefix)
        prefix = "";
    if (!*endpoint || strlen(prefix) > AM2Z_NAME_MAX
        || (session_id && !am2z_session_id_valid(session_id, strlen(session_id))))
        return AM2Z_EINVAL;
    am2z_events_t *self = calloc(1, sizeof *self);
    if (!self)
        return AM2Z_ENOMEM;
    s_copy(self->session, sizeof self->session, session_id);
    self->sub = zsock_new(ZMQ_SUB);
    if (!self->sub) {
        free(self);
        return AM2Z_ENETWORK;
    }
    zsock_set_maxmsgsize(self->sub, (int)(S_MAX_BODY + 1024));
    zsock_set_subscribe(self->sub, prefix);
    if (zsock_connect(self->sub, "%s", endpoint) != 0) {
        am2z_events_destroy(&self);
        return AM2Z_EINVAL;
    }
    self->handle = zsock_resolve(self->sub);
    *out = self;
    return AM2Z_OK;
}

/*  Reads one multipart message. Returns 1 when it is a well-formed EVENT
    (decoded into *msg), 0 when it was dropped, -1 on socket error. */
static int
s_events_read(am2z_events_t *self, am2z_msg_t *msg)
{
    zmq_msg_t frames[S_MAX_FRAMES];
    size_t nframes = 0;
    int more = 1;
    int rc = 0;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *f = nframes < S_MAX_FRAMES ? &frames[nframes] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, self->handle, 0) < 0) {
            zmq_msg_close(f);
            rc = -1;
            break;
        }
        more = zmq_msg_more(f);
        if (f == &scratch)
            zmq_msg_close(f);
        nframes++;
    }
    if (rc == 0 && nframes == 4) {
        char err[256];
        if (am2z_frames_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]),
                               zmq_msg_data(&frames[2]), zmq_msg_size(&frames[2]),
                               zmq_msg_data(&frames[3]), zmq_msg_size(&frames[3]),
                               S_MAX_BODY, msg, err, sizeof err) == AM2Z_OK) {
            if (msg->cmd == AM2Z_CMD_EVENT)
                rc = 1;
            else
                am2z_msg_clear(msg);
        }
    }
    for (size_t i = 0; i < nframes && i < S_MAX_FRAMES; i++)
        zmq_msg_close(&frames[i]);
    return rc;
}

int
am2z_events_next(am2z_events_t *self, uint64_t timeout_ms, am2z_event_fn *fn, void *arg)
{
    if (!self || !fn)
        return AM2Z_EINVAL;
    uint64_t deadline = s_deadline(timeout_ms);
    zmq_pollitem_t item = { .socket = self->handle, .events = ZMQ_POLLIN };
    for (;;) {
        int n = zmq_poll(&item, 1, s_remaining_ms(deadline));
        if (n == 0)
            return AM2Z_ETIMEOUT;
        if (n < 0) {
            /* a signal: hand control back so the caller can look at its flags */
            return zmq_errno() == EINTR ? AM2Z_ETIMEOUT : AM2Z_ENETWORK;
        }
        am2z_msg_t msg;
        int rc = s_events_read(self, &msg);
        if (rc < 0)
            return zmq_errno() == EINTR ? AM2Z_ETIMEOUT : AM2Z_ENETWORK;
        if (rc == 0)
            continue;
        bool wanted = !self->session[0]
                      || (msg.session && strcmp(msg.session, self->session) == 0);
        if (wanted) {
            am2z_event_t ev = {
                .name = msg.name ? msg.name : "",
                .job_id = msg.job ? msg.job : "",
                .session_id = msg.session ? msg.session : "",
                .processor = msg.processor ? msg.processor : "",
                .attempt = msg.attempt,
                .ts_ms = msg.ts_ms,
                .seq = msg.seq,
                .data = msg.data,
                .data_size = msg.data ? msg.data_size : 0,
            };
            fn(&ev, arg);
        }
        am2z_msg_clear(&msg);
        if (wanted)
            return AM2Z_OK;
        if (s_remaining_ms(deadline) == 0)
            return AM2Z_ETIMEOUT;
    }
}

void
am2z_events_destroy(am2z_events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_events_t *self = *self_p;
    zsock_destroy(&self->sub);
    free(self);
    *self_p = NULL;
}
