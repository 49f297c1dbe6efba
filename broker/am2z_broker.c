/*  am2z_broker.c — the broker: loop, sockets, handlers, queries, lifecycle.

    One loop turn:
      1. poll frontend, backend (and the actor pipe), bounded by the next timer;
      2. stage last turn's leftovers in the batch (failures found at dispatch,
         attempt counters of fresh leases, records to clean up);
      3. drain up to S_DRAIN_MAX messages; each handler changes memory and
         stages its writes in the one batch, and records an effect for what
         must wait for durability (ACCEPTED, RESULT, the STOP reply);
      4. commit once (group commit); in sync mode first lease free worker
         slots jobs whose input is already committed and send them, so
         workers run while the commit flushes (s_dispatch early);
      5. apply effects: on success send them; on failure refuse the submits
         (ERROR naming the resource) and fail the completions (ResourceError);
      6. answer queries and fetches (after the commit, so they see it);
      7. dispatch against worker credit;
      8. timers: heartbeats, worker expiry, delayed jobs, store flush.
*/
#include "am2z_broker_int.h"
#include "am2z_jobrec.h"
#include "am2z_hash.h"
#include "am2z_merge.h"
#include "am2z_retry.h"
#include "am2z_sys.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

#define S_DRAIN_MAX 512
_Static_assert(AM2Z_STATE_DEPTH_MAX == 32, "SUBMIT's depth refusal names 32 levels");
#define S_SUB_CHECK_US 100        /* no subscriber: look for one this often (s_pub_wanted) */
#define S_HOLD_BUSY 8             /* a turn with this many commands is busy (Outbox) */
#define S_MAX_FRAMES 5
#define S_POLL_MAX_MS 100
#define S_HWM 100000
#define S_BROKER_WORKER "broker"  /* RESULT.worker of jobs that never ran */

static void s_str_free(void **item);

/* ---------------------------------------------------------------------------
   Configuration
   ------------------------------------------------------------------------ */

const am2z_cfg_def_t am2z_broker_config_table[] = {
    AM2Z_CONFIG_COMMON_ENTRIES(am2z_broker_config_t, common.),
    { "frontend", AM2Z_CFG_STRING, offsetof(am2z_broker_config_t, frontend),
      AM2Z_ENDPOINT_MAX, "tcp://127.0.0.1:7770", 0, 0, NULL,
      "endpoint clients connect to (ROUTER)" },
    { "backend", AM2Z_CFG_STRING, offsetof(am2z_broker_config_t, backend),
      AM2Z_ENDPOINT_MAX, "tcp://127.0.0.1:7771", 0, 0, NULL,
      "endpoint workers connect to (ROUTER)" },
    { "events", AM2Z_CFG_STRING, offsetof(am2z_broker_config_t, events),
      AM2Z_ENDPOINT_MAX, "tcp://127.0.0.1:7772", 0, 0, NULL,
      "event feed (PUB); empty for none" },
    { "heartbeat", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, heartbeat_ms), 0,
      "1000ms", 10, 600000, NULL, "heartbeat interval to workers" },
    { "liveness", AM2Z_CFG_UINT, offsetof(am2z_broker_config_t, liveness), 0,
      "5", 1, 1000, NULL, "missed heartbeats before a worker is dead" },
    { "grace", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, grace_ms), 0,
      "10s", 0, 3600000, NULL, "on SIGTERM: how long running jobs may finish" },
    { "max-queued-per-processor", AM2Z_CFG_UINT,
      offsetof(am2z_broker_config_t, max_queued_per_proc), 0, "1000000", 1,
      (uint64_t)1 << 32, NULL, "jobs of one processor queued or running; more are refused" },
    { "max-queued-per-session", AM2Z_CFG_UINT,
      offsetof(am2z_broker_config_t, max_queued_per_session), 0, "100000", 1,
      (uint64_t)1 << 32, NULL, "jobs of one session queued or running; more are refused" },
    { "max-call-depth", AM2Z_CFG_UINT, offsetof(am2z_broker_config_t, max_call_depth), 0,
      "10", 0, 1000, NULL, "nested am2z_ctx_call depth; deeper calls fail (CallDepthExceeded)" },
    { "idempotency-window", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, idem_window_ms), 0,
      "24h", 1000, (uint64_t)366 * 86400000, NULL,
      "how long an idempotency key maps to its first job" },
    { "session-ttl", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, session_ttl_ms), 0,
      "0", 0, (uint64_t)3650 * 86400000, NULL,
      "idle sessions (nothing queued or running) expire after this; 0 = never" },
    { "stop-grace", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, stop_grace_ms), 0,
      "5s", 0, 3600000, NULL, "stop_session: how long running jobs may take to stop" },
    { "retain-completed", AM2Z_CFG_UINT, offsetof(am2z_broker_config_t, retain_completed), 0,
      "1000", 0, (uint64_t)1 << 40, NULL, "completed results kept per processor" },
    { "retain-completed-age", AM2Z_CFG_MS,
      offsetof(am2z_broker_config_t, retain_completed_ms), 0, "24h", 1000,
      (uint64_t)3650 * 86400000, NULL, "completed results older than this are deleted" },
    { "retain-failed", AM2Z_CFG_UINT, offsetof(am2z_broker_config_t, retain_failed), 0,
      "10000", 0, (uint64_t)1 << 40, NULL, "failed results kept per processor" },
    { "retain-failed-age", AM2Z_CFG_MS, offsetof(am2z_broker_config_t, retain_failed_ms), 0,
      "7d", 1000, (uint64_t)3650 * 86400000, NULL, "failed results older than this are deleted" },
    { "dlq-max", AM2Z_CFG_UINT, offsetof(am2z_broker_config_t, dlq_max), 0, "100000", 1,
      (uint64_t)1 << 40, NULL, "dead letters kept; when full the oldest is dropped (logged)" },
    { "cpus", AM2Z_CFG_STRING, offsetof(am2z_broker_config_t, cpus), 64, "", 0, 0, NULL,
      "CPUs the daemon's threads run on, e.g. 0 or 0,2-3 (empty = any); one core keeps "
      "the loop and ZeroMQ's I/O thread together (and turns poll-spin off): fewer "
      "cross-CPU wake-ups, less throughput" },
    { "poll-spin", AM2Z_CFG_US, offsetof(am2z_broker_config_t, poll_spin_us), 0, "300us", 0,
      10000, NULL,
      "while messages come closer together than this, the loop polls without sleeping "
      "for up to this long before it sleeps: lower latency for some CPU (0 = never)" },
    { "store-writer", AM2Z_CFG_BOOL, offsetof(am2z_broker_config_t, store_writer), 0, "true",
      0, 0, NULL,
      "sync durability: commit and fsync on a writer thread while the loop handles the "
      "next messages (answers still wait until their commit is on disk); "
      "--no-store-writer commits on the loop" },
    { "openssl-config", AM2Z_CFG_BOOL, offsetof(am2z_broker_config_t, openssl_config), 0,
      "false", 0, 0, NULL,
      "am2z-broker reads the host's OpenSSL configuration (openssl.cnf or $OPENSSL_CONF) "
      "at start, e.g. to seal records with a FIPS provider's SHA-256; off: the default "
      "provider, and about 0.5 MB less resident" },
    { .name = NULL }
};

void
am2z_broker_config_defaults(am2z_broker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    am2z_cfg_defaults(am2z_broker_config_table, cfg, NULL, 0);
}

/* ---------------------------------------------------------------------------
   Sending
   ------------------------------------------------------------------------ */

/*  Sends [ident?][prefix?]["AM2Z/1"][cmd][body] now. Never blocks: a ROUTER
    drops messages to vanished peers or full pipes, a PUB drops for slow
    subscribers. */
static void
s_send_now(void *sock, const uint8_t *ident, size_t ident_size,
           const char *prefix, am2z_cmd_t cmd, const uint8_t *body, size_t size)
{
    const char *name = am2z_cmd_name(cmd);
    if (ident && zmq_send(sock, ident, ident_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    if (prefix && zmq_send(sock, prefix, strlen(prefix), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    if (zmq_send(sock, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    if (zmq_send(sock, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(sock, body, size, ZMQ_DONTWAIT);
}

/* ---------------------------------------------------------------------------
   Batched messages.

   A client that sends a BATCH (am2z_client_submit_many does) shows that it
   reads them, and its requests are marked peer_t.batch; a worker says so
   in READY (`batch`). Everything the broker sends such a peer during one
   loop iteration — to a client ACCEPTEDs, ERRORs, RESULTs, EVENTs; to a
   worker JOBs, CANCELs — is then collected here, in order, and goes out as
   one BATCH (or one plain message when there is only one) when the
   iteration ends, before the loop polls again. Once a peer has messages
   here, every later message to it this iteration joins them, so its order
   is kept. One ZeroMQ message instead of dozens: the per-message costs of
   libzmq (routing, pipe writes) and of the peer's reads are paid once.
   ------------------------------------------------------------------------ */

static coalesce_t *
s_co_find(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size)
{
    for (size_t i = 0; i < self->co_n; i++) {
        coalesce_t *co = &self->co[i];
        if (co->sock == sock && co->ident_size == ident_size
            && memcmp(co->ident, ident, ident_size) == 0)
            return co;
    }
    return NULL;
}

/*  Sends what co holds: one plain message, or one BATCH. */
static void
s_co_send(am2z_broker_t *self, coalesce_t *co)
{
    const uint8_t *p = co->buf, *end = co->buf + co->len;
    void *sock = co->sock;
    if (co->n == 1) {
        size_t size;
        memcpy(&size, p + 1, sizeof size);
        s_send_now(sock, co->ident, co->ident_size, NULL, (am2z_cmd_t)p[0],
                   p + 1 + sizeof size, size);
    } else if (co->n > 1
               && zmq_send(sock, co->ident, co->ident_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0
               && zmq_send(sock, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL),
                           ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0
               && zmq_send(sock, AM2Z_BATCH, strlen(AM2Z_BATCH), ZMQ_SNDMORE | ZMQ_DONTWAIT)
                      >= 0) {
        while (p < end) {
            size_t size;
            memcpy(&size, p + 1, sizeof size);
            const char *name = am2z_cmd_name((am2z_cmd_t)p[0]);
            const uint8_t *body = p + 1 + sizeof size;
            p = body + size;
            if (zmq_send(sock, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0
                || zmq_send(sock, body, size, (p < end ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
                break;
        }
        int to = sock == self->be;
        self->batch_out[to][0]++;
        self->batch_out[to][1] += co->n;
    }
    co->len = 0;
    co->n = 0;
}

/*  Sends every collected message (end of a loop iteration). */
static void
s_co_flush(am2z_broker_t *self)
{
    for (size_t i = 0; i < self->co_n; i++)
        s_co_send(self, &self->co[i]);
    self->co_n = 0;
}

/*  Sends now what is collected for the peers of one socket. */
static void
s_co_flush_sock(am2z_broker_t *self, void *sock)
{
    for (size_t i = 0; i < self->co_n; i++)
        if (self->co[i].sock == sock)
            s_co_send(self, &self->co[i]);
}

/*  Collects a message to a peer when it takes BATCHes (batch) or already
    has messages collected. Returns false when it must go now. */
static bool
s_co_add(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size,
         am2z_cmd_t cmd, const uint8_t *body, size_t size, bool batch)
{
    coalesce_t *co = s_co_find(self, sock, ident, ident_size);
    if (!co) {
        if (!batch || ident_size > S_IDENT_MAX)
            return false;
        if (self->co_n == S_CO_MAX)
            s_co_flush(self);
        co = &self->co[self->co_n++];
        co->sock = sock;
        memcpy(co->ident, ident, ident_size);
        co->ident_size = ident_size;
        co->len = co->n = 0;
    }
    size_t need = co->len + 1 + sizeof size + size;
    if (need > co->cap) {
        size_t cap = co->cap ? co->cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *buf = realloc(co->buf, cap);
        if (!buf) {
            s_co_send(self, co);  /* what it has first: the order holds */
            return false;
        }
        co->buf = buf;
        co->cap = cap;
    }
    uint8_t *p = co->buf + co->len;
    p[0] = (uint8_t)cmd;
    memcpy(p + 1, &size, sizeof size);
    if (size)
        memcpy(p + 1 + sizeof size, body, size);
    co->len = need;
    if (++co->n == AM2Z_BATCH_MAX)
        s_co_send(self, co);
    return true;
}

/*  Sends now, or collects it for a BATCH (see above). */
static void
s_emit(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size,
       const char *prefix, am2z_cmd_t cmd, const uint8_t *body, size_t size, bool batch)
{
    if (ident && !prefix && (self->co_n || batch)
        && s_co_add(self, sock, ident, ident_size, cmd, body, size, batch))
        return;
    s_send_now(sock, ident, ident_size, prefix, cmd, body, size);
}

static void
s_co_free(am2z_broker_t *self)
{
    for (size_t i = 0; i < S_CO_MAX; i++) {
        free(self->co[i].buf);
        self->co[i].buf = NULL;
        self->co[i].cap = 0;
    }
    self->co_n = 0;
}

/* ---------------------------------------------------------------------------
   Outbox (durability sync).

   In sync mode the store commits on its writer thread by default
   (cfg.store_writer, am2z_store_pipeline): the turn's commit hands its
   writes over and returns, every read still sees them, and the writer
   applies, commits and flushes them while the loop handles the next turn.
   What speaks for a commit is held here exactly as below, and released
   when the writer reports it durable through its eventfd (s_store_event,
   polled with the sockets); the loop never calls a sync itself. A writer
   failure (an I/O error of a flush) stops the loop with nothing held sent.

   With --no-store-writer the store defers each commit's meta flush
   (am2z_store_defer_meta, LMDB MDB_NOMETASYNC): a commit fdatasyncs its
   data pages and writes its meta page unflushed, so it is consistent but
   becomes durable only at the next fdatasync of the file. That is the data
   flush of the next commit that writes (LMDB flushes the data before it
   writes the new meta, and the flush covers the earlier meta page), or an
   explicit am2z_store_sync(). Everything the broker sends to a client or
   PUB after a commit may speak for it (ACCEPTED, RESULT, a STOP reply,
   events), so while the last commit is not durable every such send is
   held here, in order, tagged with that commit's txn id, and goes out as
   soon as am2z_store_durable() reaches it. Messages to workers are not
   held (docs/RELIABILITY.md: a job may start before its acceptance is on
   disk; a power loss then undoes it and its run is discarded). At the end of a turn the broker
   either lets the next turn's commit make it durable (more input is
   already waiting, and the outbox has not waited a turn yet), or calls
   am2z_store_sync() at once. So under load one fsync per commit instead of
   two (data + meta), and an answer never leaves before its commit is on
   disk; idle, the latency is as before (two flushes before the answer).
   That variant runs everything on the loop thread.
   ------------------------------------------------------------------------ */

/*  Whether a send now must wait behind the outbox. */
static bool
s_must_hold(am2z_broker_t *self)
{
    return self->hold_sends
           && (self->out_n
               || am2z_store_durable(self->store) < am2z_store_committed(self->store));
}

/*  Queues a copy of the message. On out of memory it is sent now (a
    client may then see an answer before its commit is durable; the log
    says so) rather than lost. */
static void
s_hold(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size,
       const char *prefix, am2z_cmd_t cmd, const uint8_t *body, size_t size, bool batch)
{
    size_t np = prefix ? strlen(prefix) + 1 : 0;
    if (self->out_n == self->out_cap) {
        size_t cap = self->out_cap ? self->out_cap * 2 : 256;
        held_t **ring = malloc(cap * sizeof *ring);
        if (!ring)
            goto now;
        for (size_t i = 0; i < self->out_n; i++)
            ring[i] = self->outbox[(self->out_head + i) % self->out_cap];
        free(self->outbox);
        self->outbox = ring;
        self->out_cap = cap;
        self->out_head = 0;
    }
    held_t *h = malloc(sizeof *h + ident_size + np + size);
    if (!h)
        goto now;
    uint8_t *p = (uint8_t *)(h + 1);
    h->sock = sock;
    h->ident = ident ? p : NULL;
    h->ident_size = ident ? ident_size : 0;
    if (ident)
        memcpy(p, ident, ident_size);
    p += ident ? ident_size : 0;
    h->prefix = prefix ? (char *)p : NULL;
    if (prefix)
        memcpy(p, prefix, np);
    p += np;
    h->cmd = cmd;
    h->body = p;
    h->size = size;
    if (size)
        memcpy(p, body, size);
    h->txn = am2z_store_committed(self->store);
    h->batch = batch;
    self->outbox[(self->out_head + self->out_n) % self->out_cap] = h;
    self->out_n++;
    return;
now:
    AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
             "out of memory holding a message for durability: sent at once",
             AM2Z_KS("cmd", am2z_cmd_name(cmd)));
    s_emit(self, sock, ident, ident_size, prefix, cmd, body, size, batch);
}

/*  Sends the held messages whose commit is durable (all of them: all). */
static void
s_outbox_release(am2z_broker_t *self, bool all)
{
    uint64_t durable = am2z_store_durable(self->store);
    while (self->out_n) {
        held_t *h = self->outbox[self->out_head];
        if (!all && h->txn > durable)
            break;
        s_emit(self, h->sock, h->ident, h->ident_size, h->prefix, h->cmd, h->body, h->size,
               h->batch);
        free(h);
        self->out_head = (self->out_head + 1) % self->out_cap;
        self->out_n--;
    }
    if (!self->out_n)
        self->out_head = 0;
}

/*  Frees what is still held (the broker is destroyed; not sent). */
static void
s_outbox_free(am2z_broker_t *self)
{
    while (self->out_n) {
        free(self->outbox[self->out_head]);
        self->out_head = (self->out_head + 1) % self->out_cap;
        self->out_n--;
    }
    free(self->outbox);
    self->outbox = NULL;
    self->out_cap = self->out_head = 0;
}

/*  The store's writer thread moved durability (or failed): send what it
    made durable. A failure is fatal to the loop (see am2z_store_pipeline):
    the file is known good only up to the last durable commit, so nothing
    held is sent and the broker stops; a restart recovers from the file. */
static void
s_store_event(am2z_broker_t *self)
{
    int rc = am2z_store_poll(self->store);
    if (rc != AM2Z_OK) {
        self->store_failed = rc;
        self->stopping = true;
        return;
    }
    if (self->out_n) {
        s_outbox_release(self, false);
        if (!self->out_n)
            self->held_turn = false;
    }
}

/*  A message is waiting on the frontend or the backend. */
static bool
s_input_waiting(am2z_broker_t *self)
{
    void *socks[2] = { self->fe, self->be };
    for (int i = 0; i < 2; i++) {
        int ev = 0;
        size_t sz = sizeof ev;
        if (socks[i] && zmq_getsockopt(socks[i], ZMQ_EVENTS, &ev, &sz) == 0
            && (ev & ZMQ_POLLIN))
            return true;
    }
    return false;
}

/*  End of a turn: the held messages either wait for the next turn's
    commit (they have not waited a turn yet, and input is waiting or this
    turn was busy: S_HOLD_BUSY commands or more, so more is on its way —
    the loop then polls at most 1 ms) or are made durable now. Returns
    true while messages stay held. */
static bool
s_outbox_settle(am2z_broker_t *self)
{
    s_outbox_release(self, false);
    if (!self->out_n) {
        self->held_turn = false;
        return false;
    }
    if (!self->held_turn && (self->turn_msgs >= S_HOLD_BUSY || s_input_waiting(self))) {
        self->held_turn = true;
        return true;
    }
    if (self->store_fd >= 0)
        return true;              /* the writer flushes on its own and says when */
    int rc = am2z_store_sync(self->store);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "store sync failed: answers held",
                 AM2Z_KS("error", am2z_strerror(rc)), AM2Z_KU("held", self->out_n));
        return true;
    }
    s_outbox_release(self, false);
    self->held_turn = false;
    return self->out_n > 0;
}

/*  Sends now, or holds the message behind the outbox (sync durability). */
static void
s_send_frames(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size,
              const char *prefix, am2z_cmd_t cmd, const uint8_t *body, size_t size, bool batch)
{
    if (sock != self->be && s_must_hold(self))
        s_hold(self, sock, ident, ident_size, prefix, cmd, body, size, batch);
    else
        s_emit(self, sock, ident, ident_size, prefix, cmd, body, size, batch);
}

static void
s_send_msg(am2z_broker_t *self, void *sock, const uint8_t *ident, size_t ident_size,
           const char *prefix, const am2z_msg_t *msg, bool batch)
{
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(msg, &body, &size);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot encode message",
                 AM2Z_KS("cmd", am2z_cmd_name(msg->cmd)), AM2Z_KS("error", am2z_strerror(rc)));
        return;
    }
    s_send_frames(self, sock, ident, ident_size, prefix, msg->cmd, body, size, batch);
    free(body);
}

/*  Sends msg to a client on the frontend, answering its request req;
    nobody (size 0) gets nothing. */
static void
s_send_to(am2z_broker_t *self, const uint8_t *ident, size_t size, uint64_t req, bool batch,
          am2z_msg_t *msg)
{
    if (!size)
        return;
    msg->req = req;
    s_send_msg(self, self->fe, ident, size, NULL, msg, batch);
}

static void
s_send_client(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    s_send_to(self, peer->ident, peer->ident_size, peer->req, peer->batch, msg);
}

/*  The same to a job's submitter. */
static void
s_send_jclient(am2z_broker_t *self, const jpeer_t *peer, am2z_msg_t *msg)
{
    s_send_to(self, am2zb_jpeer_ident(peer), peer->ident_size, peer->req, peer->batch, msg);
}

void
am2zb_send_worker(am2z_broker_t *self, const worker_t *worker, am2z_msg_t *msg)
{
    s_send_msg(self, self->be, worker->ident, worker->ident_size, NULL, msg, worker->batch);
}

/*  ERROR {req, error} to a client; takes *error_p. */
static void
s_send_error(am2z_broker_t *self, const peer_t *peer, am2z_error_t **error_p)
{
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_ERROR);
    msg.error = *error_p ? *error_p : am2z_error_new(AM2Z_CAT_EXECUTION, "INTERNAL", "out of memory");
    *error_p = NULL;
    if (msg.error)
        s_send_client(self, peer, &msg);
    am2z_msg_clear(&msg);
}

static void
s_send_error_fmt(am2z_broker_t *self, const peer_t *peer, am2z_category_t cat,
                 const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
s_send_error_fmt(am2z_broker_t *self, const peer_t *peer, am2z_category_t cat,
                 const char *code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    am2z_error_t *error = am2z_error_new(cat, code, "%s", text);
    s_send_error(self, peer, &error);
}

/*  REPLY {req, data} with data taken from *data_p. */
static void
s_send_reply(am2z_broker_t *self, const peer_t *peer, uint8_t **data_p, size_t size)
{
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_REPLY);
    msg.data = *data_p;
    msg.data_size = size;
    msg.success = true;
    *data_p = NULL;
    s_send_client(self, peer, &msg);
    am2z_msg_clear(&msg);
}

/*  Reads the subscription messages the events socket (XPUB) queued and
    counts the topics subscribed. XPUB passes the first subscription of a
    topic and the last unsubscription (also when a subscriber goes away),
    so subs > 0 exactly while somebody subscribes to something. */
static void
s_pub_drain(am2z_broker_t *self)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, self->pub, ZMQ_DONTWAIT) >= 0) {
        const uint8_t *d = zmq_msg_data(&m);
        if (zmq_msg_size(&m) >= 1 && d[0] == 1)
            self->subs++;
        else if (zmq_msg_size(&m) >= 1 && d[0] == 0 && self->subs)
            self->subs--;
    }
    zmq_msg_close(&m);
}

/*  Somebody may receive what is published now. The subscriptions are
    read when the turn's poll finds the events socket readable and, while
    nobody subscribes, here at most every S_SUB_CHECK_US (reading the socket
    at every event would cost a poll(2) and a getpid(2) in libzmq each
    time). A PUB socket itself notices new subscribers with a similar delay
    (libzmq processes their commands at most about once a millisecond while
    sending), so a new subscriber sees the same events as before. */
static bool
s_pub_wanted(am2z_broker_t *self)
{
    if (!self->pub)
        return false;
    if (!self->subs) {
        uint64_t now = am2z_clock_mono_us();
        if (now - self->subs_checked_us >= S_SUB_CHECK_US) {
            self->subs_checked_us = now;
            s_pub_drain(self);
        }
    }
    return self->subs > 0;
}

/*  Would an event of job reach anybody (s_event)? */
static bool
s_event_wanted(am2z_broker_t *self, const job_t *job)
{
    return (job->client.ident_size && job->client.events) || s_pub_wanted(self);
}

/*  Publishes an EVENT on PUB and, when a job is given, to its submitter.
    An event nobody can receive (no subscriber on the events socket, no
    submitter that asked for events) is not even encoded. */
static void
s_event(am2z_broker_t *self, job_t *job, const char *name, const char *session,
        const char *proc, const uint8_t *data, size_t data_size)
{
    bool to_client = job && job->client.ident_size && job->client.events;
    bool to_pub = s_pub_wanted(self);
    if (!to_client && !to_pub) {
        if (job)
            ++job->event_seq;      /* numbering stays as if it was sent */
        return;
    }
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_EVENT);
    msg.name = (char *)name;
    msg.session = (char *)session;
    msg.processor = (char *)proc;
    msg.data = (uint8_t *)data;
    msg.data_size = data_size;
    msg.ts_ms = am2z_clock_wall_ms();
    if (job) {
        msg.job = job->id;
        msg.seq = ++job->event_seq;
        msg.attempt = job->attempt;
    }
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(&msg, &body, &size);
    if (rc == AM2Z_OK) {
        if (to_pub)
            s_send_frames(self, self->pub, NULL, 0, name, AM2Z_CMD_EVENT, body, size, false);
        if (to_client) {
            /* EVENT has no req: the job id correlates. Only clients that
               asked (SUBMIT.events) get them: the others would drop them,
               and they were 2 of the ~11 messages of every job. */
            s_send_frames(self, self->fe, am2zb_jpeer_ident(&job->client), job->client.ident_size, NULL,
                          AM2Z_CMD_EVENT, body, size, job->client.batch);
        }
        free(body);
    } else {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "cannot encode event",
                 AM2Z_KS("name", name), AM2Z_KS("error", am2z_strerror(rc)));
    }
    /* borrowed pointers: nothing to clear */
}

void
am2zb_job_event(am2z_broker_t *self, job_t *job, const char *name,
                const uint8_t *data, size_t data_size)
{
    s_event(self, job, name, job->session_id, job->proc->name, data, data_size);
}

/* session lifecycle + retention (issue 6): for am2z_lifecycle.c */
void
am2zb_event(am2z_broker_t *self, const char *name, const char *session,
            const uint8_t *data, size_t data_size)
{
    s_event(self, NULL, name, session, NULL, data, data_size);
}

void
am2zb_send_reply(am2z_broker_t *self, const peer_t *peer, uint8_t **data_p, size_t size)
{
    s_send_reply(self, peer, data_p, size);
}

void
am2zb_send_error(am2z_broker_t *self, const peer_t *peer, am2z_error_t **error_p)
{
    s_send_error(self, peer, error_p);
}

/*  Builds a one-level map {k1: v1, ...} of (key, type, value) triples:
    type 's' string, 'u' uint, 'b' bool, 'r' raw msgpack (ptr, size). */
static int
s_map(uint8_t **out, size_t *size, uint32_t n, ...)
{
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return AM2Z_ENOMEM;
    va_list ap;
    va_start(ap, n);
    am2z_bw_map(w, n);
    for (uint32_t i = 0; i < n; i++) {
        am2z_bw_str(w, va_arg(ap, const char *));
        int type = va_arg(ap, int);
        if (type == 's') {
            am2z_bw_str(w, va_arg(ap, const char *));
        } else if (type == 'u') {
            am2z_bw_uint(w, va_arg(ap, uint64_t));
        } else if (type == 'b') {
            am2z_bw_bool(w, va_arg(ap, int) != 0);
        } else {
            const uint8_t *raw = va_arg(ap, const uint8_t *);
            size_t raw_size = va_arg(ap, size_t);
            am2z_bw_raw(w, raw, raw_size);
        }
    }
    va_end(ap);
    int rc = am2z_bw_take(w, out, size);
    am2z_bw_destroy(&w);
    return rc;
}

/* ---------------------------------------------------------------------------
   Store helpers
   ------------------------------------------------------------------------ */

/*  This turn's batch, opened on first use. NULL when it cannot be opened
    (the turn then fails like a failed commit). */
static am2z_store_batch_t *
s_batch(am2z_broker_t *self)
{
    if (!self->batch && self->batch_rc == AM2Z_OK) {
        int rc = am2z_store_begin(self->store, &self->batch);
        if (rc != AM2Z_OK) {
            self->batch = NULL;
            self->batch_rc = rc;
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot begin store batch",
                     AM2Z_KS("error", am2z_strerror(rc)));
        }
    }
    return self->batch;
}

am2z_store_batch_t *
am2zb_batch(am2z_broker_t *self)
{
    return s_batch(self);
}

static int
s_put_job_record(am2z_broker_t *self, const job_t *job)
{
    am2z_store_batch_t *batch = s_batch(self);
    if (!batch)
        return self->batch_rc;
    am2z_jobrec_t rec = {
        .proc = job->proc->name, .session = job->session_id,
        .state = job->state, .state_size = job->state_size,
        .prio = job->prio, .timeout_ms = job->timeout_ms, .delay_ms = job->delay_ms,
        .depth = job->depth, .created_ms = job->created_ms, .seq = job->seq,
        .attempt = job->attempt, .overlay = job->overlay,
    };
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = am2z_jobrec_encode(&rec, &data, &size);
    if (rc == AM2Z_OK) {
        /* the record says when the job was made: the envelope's created
           time is that, with no read of the record it replaces */
        rc = am2z_batch_put_record_at(batch, AM2Z_DB_JOBS, job->id, strlen(job->id),
                                      job->attempt, data, size, job->created_ms,
                                      am2z_clock_wall_ms());
        free(data);
    }
    return rc;
}

int
am2zb_put_job_record(am2z_broker_t *self, const job_t *job)
{
    return s_put_job_record(self, job);
}

static am2z_error_t *
s_resource_error(am2z_broker_t *self)
{
    am2z_store_stats_t st;
    memset(&st, 0, sizeof st);
    am2z_store_stats(self->store, &st);
    if (st.write_errno == ENOSPC || st.write_errno == EDQUOT)   /* the disk, not the map */
        return am2z_error_resource("disk space (data-dir)", st.alloc_bytes, st.used_bytes);
    if (st.write_errno == EFBIG)
        return am2z_error_resource("file size limit (data-dir/data.mdb)", st.alloc_bytes,
                                   st.used_bytes);
    return am2z_error_resource("lmdb map (map-size)", st.map_size, st.used_bytes);
}

am2z_error_t *
am2zb_resource_error(am2z_broker_t *self)
{
    return s_resource_error(self);
}

static am2z_error_t *s_error_from_rc(int rc, const char *what);

am2z_error_t *
am2zb_error_from_rc(int rc, const char *what)
{
    return s_error_from_rc(rc, what);
}

static am2z_error_t *
s_error_from_rc(int rc, const char *what)
{
    switch (rc) {
    case AM2Z_ECONFLICT:
        return am2z_error_new(AM2Z_CAT_CONFLICT, "STATE_CONFLICT",
                              "%s: stored state changed (version conflict)", what);
    case AM2Z_ERESOURCE:
        return am2z_error_new(AM2Z_CAT_RESOURCE, "RESOURCE_LIMIT",
                              "%s: a store limit was hit (state size, sessions or map size)", what);
    case AM2Z_EINTEGRITY:
        return am2z_error_new(AM2Z_CAT_INTEGRITY, "INTEGRITY_ERROR",
                              "%s: stored record failed its SHA-256 check", what);
    default:
        return am2z_error_new(AM2Z_CAT_EXECUTION, "STORE_ERROR", "%s: %s", what,
                              am2z_strerror(rc));
    }
}

/* ---------------------------------------------------------------------------
   Finishing jobs
   ------------------------------------------------------------------------ */

static void
s_effect_free(void **item)
{
    effect_t *eff = *item;
    if (!eff)
        return;
    if (eff->result) {
        /* FINISH: the strings it borrows from the job are not its own */
        eff->result->job = NULL;
        eff->result->processor = NULL;
        eff->result->session = NULL;
        am2z_msg_clear(eff->result);
    }
    free(eff->rbody);
    free(eff->worker);
    free(eff->session);
    if (eff->kind == EFF_FINISH)
        am2zb_job_destroy(&eff->job);
    free(eff);
    *item = NULL;
}

/*  Queues eff (owned) after the turn's other effects. */
static void
s_effect_push(am2z_broker_t *self, effect_t *eff)
{
    eff->next = NULL;
    if (self->effects_tail)
        self->effects_tail->next = eff;
    else
        self->effects = eff;
    self->effects_tail = eff;
    self->neffects++;
}

/*  Takes the job out of every table (unless it is a shadow), records its
    final outcome in the batch (result put, job record delete) and queues a
    FINISH effect owning it. Takes *state_p and *error_p. */
static void s_finish_v(am2z_broker_t *self, job_t *job, bool ok, uint8_t **state_p,
                       size_t state_size, uint64_t version, am2z_error_t **error_p,
                       uint64_t exec_us, uint64_t started_ms, const char *worker_id);

static void
s_finish(am2z_broker_t *self, job_t *job, bool ok, uint8_t **state_p, size_t state_size,
         am2z_error_t **error_p, uint64_t exec_us, uint64_t started_ms,
         const char *worker_id)
{
    s_finish_v(self, job, ok, state_p, state_size, 0, error_p, exec_us, started_ms, worker_id);
}

/*  s_finish with the version of *state_p when the caller knows it (0 =
    unknown: the completed event decodes the state for it). */
static void
s_finish_v(am2z_broker_t *self, job_t *job, bool ok, uint8_t **state_p, size_t state_size,
           uint64_t version, am2z_error_t **error_p, uint64_t exec_us, uint64_t started_ms,
           const char *worker_id)
{
    am2zb_flow_job_finished(self, job, ok, state_p ? *state_p : NULL, state_size,
                            error_p ? *error_p : NULL);
    session_t *session = job->session;
    if (session) {
        am2zb_lane_remove(session, job);
        if (session->active == job)
            session->active = NULL;
    }
    am2zb_job_untrack(self, job);
    am2zb_lease_end(job);
    job->session = NULL;
    job->worker = NULL;

    /* the RESULT rides behind the effect, and names the job, processor and
       session with the job's own strings: the effect owns the job until
       it is freed (s_effect_free) */
    effect_t *eff = calloc(1, sizeof *eff + sizeof(am2z_msg_t));
    if (!eff) {
        am2zb_job_destroy(&job);
        return;
    }
    am2z_msg_t *r = (am2z_msg_t *)(eff + 1);
    eff->kind = EFF_FINISH;
    eff->job = job;
    eff->version = ok ? version : 0;
    eff->result = r;
    am2z_msg_init(r, AM2Z_CMD_RESULT);
    r->job = job->id;
    r->processor = job->proc->name;
    r->session = job->session_id;
    r->worker = strdup(worker_id ? worker_id : S_BROKER_WORKER);
    r->success = ok;
    r->attempt = job->attempt;
    r->exec_us = exec_us;
    r->started_at_ms = started_ms;
    r->dispatched_ms = job->dispatched_ms;
    if (ok && state_p && *state_p) {
        r->state = *state_p;
        r->state_size = state_size;
        *state_p = NULL;
    }
    if (!ok) {
        r->error = error_p && *error_p ? *error_p
                   : am2z_error_execution(job->proc->name, job->id, "unknown failure");
        if (error_p)
            *error_p = NULL;
    }

    am2z_store_batch_t *batch = s_batch(self);
    if (batch) {
        uint8_t *body = NULL;
        size_t size = 0;
        int rc = am2z_msg_encode(r, &body, &size);
        if (rc == AM2Z_OK) {
            uint64_t now = am2z_clock_wall_ms();
            rc = am2z_batch_put_record_at(batch, AM2Z_DB_RESULTS, job->id, strlen(job->id),
                                          job->attempt, body, size, now, now);
            eff->rbody = body;          /* its recipients get these bytes */
            eff->rbody_size = size;
        }
        if (rc != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot store result",
                     AM2Z_KS("job", job->id), AM2Z_KS("error", am2z_strerror(rc)));
        am2z_batch_del_any(batch, AM2Z_DB_JOBS, job->id, strlen(job->id));
        if (rc == AM2Z_OK)
            am2zb_lc_finished(self, job, session, ok, am2z_clock_wall_ms());
    }
    s_effect_push(self, eff);
    if (session)
        am2zb_session_kick(self, session, am2z_clock_wall_ms());
}

void
am2zb_finish(am2z_broker_t *self, job_t *job, bool ok, uint8_t **state_p, size_t state_size,
             am2z_error_t **error_p, uint64_t exec_us, uint64_t started_ms,
             const char *worker_id)
{
    s_finish(self, job, ok, state_p, state_size, error_p, exec_us, started_ms, worker_id);
}

static am2z_error_t *
s_stopped_error(const char *session)
{
    am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "SESSION_STOPPED",
                                     "session %s was stopped", session);
    if (e)
        am2z_error_set_retryable(e, false);
    return e;
}

/*  Copies what the caller side of a job needs (ids, recipients) into a new
    job that a FINISH effect can own, while the original stays leased until
    its worker answers. Fetchers move to the copy. */
static job_t *
s_job_shadow(job_t *job)
{
    job_t *shadow = am2zb_job_new();
    if (!shadow)
        return NULL;
    memcpy(shadow->id, job->id, sizeof shadow->id);
    shadow->proc = job->proc;
    shadow->session_id = strdup(job->session_id);
    if (!shadow->session_id) {
        am2zb_job_destroy(&shadow);
        return NULL;
    }
    shadow->attempt = job->attempt;
    shadow->event_seq = job->event_seq;
    shadow->accepted = job->accepted;
    shadow->client = job->client;              /* moved: the shadow owns its id */
    shadow->fetchers = job->fetchers;
    shadow->nfetchers = job->nfetchers;
    job->fetchers = NULL;
    job->nfetchers = 0;
    job->client.ident_long = NULL;
    job->client.ident_size = 0;
    return shadow;
}

/* ---------------------------------------------------------------------------
   Frontend handlers
   ------------------------------------------------------------------------ */

/*  Job ids are capabilities (FETCH, QUERY job, DLQ retry/discard take any
    id): 12 hex of wall-clock ms then 80 random bits from the kernel, so
    they cannot be guessed from another id. Submission order is job->seq
    (stored in the record), not the key order. */
static int
s_make_job_id(am2z_broker_t *self, char out[AM2Z_ID_LEN + 1])
{
    /* the same format as am2z_id_new(), with the random bytes taken from a
       pool filled by one getrandom(2) per 64 ids (rnd_pool) instead of
       one syscall per job */
    static const char hex[] = "0123456789abcdef";
    enum { RND = 10 };
    if (self->rnd_left < RND) {
        size_t got = 0;
        while (got < sizeof self->rnd_pool) {
            ssize_t n = getrandom(self->rnd_pool + got, sizeof self->rnd_pool - got, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return AM2Z_EIO;
            }
            got += (size_t)n;
        }
        self->rnd_left = sizeof self->rnd_pool;
    }
    const uint8_t *rnd = self->rnd_pool + sizeof self->rnd_pool - self->rnd_left;
    uint64_t ms = am2z_clock_wall_ms() & 0xffffffffffffull;   /* 48 bits */
    for (int i = 11; i >= 0; i--) {
        out[i] = hex[ms & 0xf];
        ms >>= 4;
    }
    for (size_t i = 0; i < RND; i++) {
        out[12 + 2 * i] = hex[rnd[i] >> 4];
        out[13 + 2 * i] = hex[rnd[i] & 0xf];
    }
    out[AM2Z_ID_LEN] = '\0';
    /* used bytes are wiped: an id is a capability, the pool must not keep
       copies of handed-out ones around for longer than needed */
    memset((void *)rnd, 0, RND);
    self->rnd_left -= RND;
    return AM2Z_OK;
}

static void
s_unknown_processor(am2z_broker_t *self, const peer_t *peer, const char *name)
{
    size_t n = zhashx_size(self->procs), k = 0;
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (names) {
        for (proc_t *p = zhashx_first(self->procs); p; p = zhashx_next(self->procs))
            if (p->registered)
                names[k++] = p->name;
    }
    am2z_error_t *error = am2z_error_processor_not_found(name, names, k);
    free(names);
    s_send_error(self, peer, &error);
}

/*  SUBMIT `job`: the id the client chose, so that it can FETCH the job
    after losing its connection before the RESULT (docs/PROTOCOL.md
    "SUBMIT"). It must have the form of the ids we make (32 lowercase hex:
    am2z_id_new), must not name a job this broker knows (live, finished
    with its result kept, or dead-lettered), and is not for a repeatable
    job (whose runs get ids of their own). False after refusing it. */
static bool
s_client_job_id_ok(am2z_broker_t *self, const peer_t *peer, const am2z_msg_t *msg)
{
    const char *id = msg->job;
    bool form = strlen(id) == AM2Z_ID_LEN;
    for (size_t i = 0; form && i < AM2Z_ID_LEN; i++)
        form = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
    const char *why = NULL;
    if (!form)
        why = "a job id chosen by the client must be 32 lowercase hex characters (am2z_id_new)";
    else if (msg->every_ms)
        why = "a repeatable job cannot take a job id: each run gets its own";
    if (!why && am2z_idmap_lookup(self->jobs, id))
        why = "job id already in use";
    am2z_store_batch_t *batch = why ? NULL : s_batch(self);
    if (!why && !batch) {
        am2z_error_t *e = s_resource_error(self);
        s_send_error(self, peer, &e);
        return false;
    }
    static const am2z_db_t dbs[] = { AM2Z_DB_JOBS, AM2Z_DB_RESULTS, AM2Z_DB_DLQ };
    for (size_t i = 0; !why && i < sizeof dbs / sizeof dbs[0]; i++) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        int rc = am2z_batch_get_record(batch, dbs[i], id, AM2Z_ID_LEN, &rec);
        am2z_record_clear(&rec);
        if (rc != AM2Z_ENOTFOUND)
            why = "job id already in use";    /* found, or unreadable: not ours to take */
    }
    if (!why)
        return true;
    am2z_error_t *e = am2z_error_validation("job", id, why);
    s_send_error(self, peer, &e);
    return false;
}

/*  The limits a SUBMIT must pass before it costs anything: queue bounds
    per processor and per session, and max-sessions for a new session.
    Returns NULL when it may go on, else the refusal (caller owns it).
    *found (may be NULL) is the session in memory, or NULL when there is
    none: the caller's next lookup of it, saved. */
static am2z_error_t *
s_submit_limits(am2z_broker_t *self, proc_t *proc, const char *session_id, session_t **found)
{
    if (found)
        *found = NULL;
    char what[AM2Z_NAME_MAX + AM2Z_SESSION_ID_MAX + 64];
    if (proc->queued >= self->cfg.max_queued_per_proc) {
        snprintf(what, sizeof what, "queue:%s (max-queued-per-processor)", proc->name);
        return am2z_error_resource(what, self->cfg.max_queued_per_proc, proc->queued);
    }
    session_t *session = am2zb_session_get(self, session_id, false);
    if (found)
        *found = session;
    if (session) {
        uint64_t n = zlistx_size(session->lane) + (session->active ? 1u : 0u);
        if (n >= self->cfg.max_queued_per_session) {
            snprintf(what, sizeof what, "session:%s (max-queued-per-session)", session_id);
            return am2z_error_resource(what, self->cfg.max_queued_per_session, n);
        }
        return NULL;
    }
    /* a new session unless it has stored state: both counts are lower
       bounds of the sessions held, so neither may reach the limit */
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    int rc = am2z_store_get_state(self->store, session_id, &rec);
    am2z_record_clear(&rec);
    if (rc != AM2Z_ENOTFOUND)
        return NULL;
    am2z_store_stats_t st;
    memset(&st, 0, sizeof st);
    am2z_store_stats(self->store, &st);
    uint64_t in_memory = am2z_idmap_size(self->sessions);
    uint64_t held = st.sessions > in_memory ? st.sessions : in_memory;
    if (held >= self->cfg.common.max_sessions)
        return am2z_error_resource("sessions (max-sessions)", self->cfg.common.max_sessions,
                                   held);
    return NULL;
}

static am2z_error_t *
s_shutting_down_error(void)
{
    am2z_error_t *e = am2z_error_new(AM2Z_CAT_RESOURCE, "UNAVAILABLE",
                                     "broker is shutting down");
    if (e)
        e->kind = AM2Z_KIND_RESOURCE;
    return e;
}

static void
s_on_submit(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    if (self->draining) {
        am2z_error_t *e = s_shutting_down_error();
        s_send_error(self, peer, &e);
        return;
    }
    const char *name = msg->processor ? msg->processor : "";
    proc_t *proc = am2zb_proc_get(self, name, false);
    if (!proc || !proc->registered) {
        s_unknown_processor(self, peer, name);
        return;
    }
    if (!msg->session || !am2z_session_id_valid(msg->session, strlen(msg->session))) {
        am2z_error_t *e = am2z_error_validation("session", msg->session, "invalid session id");
        s_send_error(self, peer, &e);
        return;
    }
    if (msg->state) {
        if (msg->state_size > self->cfg.common.max_state_size) {
            am2z_error_t *e = am2z_error_resource("max-state-size", self->cfg.common.max_state_size,
                                                  msg->state_size);
            s_send_error(self, peer, &e);
            return;
        }
        if (!am2z_bmsg_is_map(msg->state, msg->state_size)) {
            am2z_error_t *e = am2z_error_validation("state", NULL, "state must be one msgpack map");
            s_send_error(self, peer, &e);
            return;
        }
        /* what the lease will decode, checked now: refused here it is a
           clear error; accepted, it would fail the job later */
        uint64_t version = 0;
        if (am2z_state_peek(msg->state, msg->state_size, &version) != AM2Z_OK) {
            am2z_error_t *e = am2z_error_validation(
                "state", NULL, "state nests deeper than 32 levels (the top map counts as one)");
            s_send_error(self, peer, &e);
            return;
        }
        if (version > AM2Z_STATE_VERSION_MAX) {
            char why[128];
            snprintf(why, sizeof why, "state metadata.version %" PRIu64 " is above %" PRIu64,
                     version, AM2Z_STATE_VERSION_MAX);
            am2z_error_t *e = am2z_error_validation("state", NULL, why);
            s_send_error(self, peer, &e);
            return;
        }
    }
    if (msg->job && !s_client_job_id_ok(self, peer, msg))
        return;
    /* idempotency + repeat + progress (issue 6) */
    if (am2zb_repeat_on_submit(self, peer, proc, msg))
        return;                   /* a duplicate, a repeat schedule or a refusal */
    job_t *submitted = am2zb_submit_job(self, peer, proc, msg);
    if (submitted && msg->idem_key)
        am2zb_idem_put(self, msg->idem_key, submitted->id, proc->name, submitted->session_id,
                       false);
}

/*  The part of SUBMIT that creates the job (limits, record, lane, the
    ACCEPTED effect): also used for a repeatable job's runs, whose peer is
    nobody. Takes msg->state. Returns the job (borrowed: in its lane), or
    NULL after answering the peer with the refusal. */
job_t *
am2zb_submit_job(am2z_broker_t *self, const peer_t *peer, proc_t *proc, am2z_msg_t *msg)
{
    session_t *session = NULL;    /* in memory now; the lines below change no session */
    am2z_error_t *limit = s_submit_limits(self, proc, msg->session, &session);
    if (limit) {
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "submit refused",
                 AM2Z_KS("session", msg->session), AM2Z_KS("proc", proc->name),
                 AM2Z_KS("reason", limit->message));
        s_send_error(self, peer, &limit);
        return NULL;
    }
    am2z_store_batch_t *batch = s_batch(self);
    if (!batch) {
        am2z_error_t *e = s_resource_error(self);
        s_send_error(self, peer, &e);
        return NULL;
    }
    job_t *job = am2zb_job_new();
    effect_t *eff = calloc(1, sizeof *eff);
    if (!job || !(job->session_id = strdup(msg->session)) || !eff) {
        am2zb_job_destroy(&job);
        free(eff);
        s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY", "broker out of memory");
        return NULL;
    }
    uint64_t now = am2z_clock_wall_ms();
    if (msg->job)                             /* checked: s_client_job_id_ok */
        memcpy(job->id, msg->job, AM2Z_ID_LEN + 1);
    else if (s_make_job_id(self, job->id) != AM2Z_OK) {
        am2zb_job_destroy(&job);
        free(eff);
        s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "RANDOM_UNAVAILABLE",
                         "cannot read random bytes for a job id");
        return NULL;
    }
    job->proc = proc;
    job->state = msg->state;
    job->state_size = msg->state_size;
    msg->state = NULL;
    job->prio = msg->priority ? msg->priority : proc->priority;
    job->timeout_ms = msg->timeout_ms ? msg->timeout_ms : proc->timeout_ms;
    job->delay_ms = msg->delay_ms ? msg->delay_ms : proc->delay_ms;
    job->depth = msg->call_depth;
    job->created_ms = now;
    job->not_before_ms = now + job->delay_ms;
    job->seq = ++self->seq;
    if (!am2zb_jpeer_set(&job->client, peer))
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                 "out of memory keeping a submitter's id: the job runs, its answers go "
                 "to nobody (FETCH still finds its result)", AM2Z_KS("job", job->id));
    job->client.events = msg->events;
    /* noack: the RESULT is the answer (an idempotent or repeatable SUBMIT
       is always answered with ACCEPTED: its id is what the caller needs) */
    job->client.noack = msg->noack && !msg->idem_key && !msg->every_ms;

    int rc = s_put_job_record(self, job);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "cannot store job",
                 AM2Z_KS("session", job->session_id), AM2Z_KS("error", am2z_strerror(rc)));
        am2z_error_t *e = rc == AM2Z_ERESOURCE ? s_resource_error(self)
                                               : s_error_from_rc(rc, "submit");
        s_send_error(self, peer, &e);
        am2zb_job_destroy(&job);
        free(eff);
        return NULL;
    }
    bool created = false;
    if (!session) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        created = am2z_batch_get_state(batch, job->session_id, &rec) == AM2Z_ENOTFOUND;
        am2z_record_clear(&rec);
        session = am2zb_session_get(self, job->session_id, true);
    }
    if (!session) {
        am2z_batch_del(batch, AM2Z_DB_JOBS, job->id, strlen(job->id));
        am2zb_job_destroy(&job);
        free(eff);
        s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY", "broker out of memory");
        return NULL;
    }
    am2zb_job_track(self, job);
    am2zb_lane_push(session, job, false);
    am2zb_session_kick(self, session, now);
    am2zb_lc_touch(self, job->session_id, now);
    eff->kind = EFF_SUBMIT;
    eff->job = job;
    eff->created = created;
    s_effect_push(self, eff);
    AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "job submitted",
             AM2Z_KS("job", job->id), AM2Z_KS("proc", proc->name),
             AM2Z_KS("session", job->session_id));
    return job;
}

static void
s_on_stop_session(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    if (!msg->session || !am2z_session_id_valid(msg->session, strlen(msg->session))) {
        am2z_error_t *e = am2z_error_validation("session", msg->session, "invalid session id");
        s_send_error(self, peer, &e);
        return;
    }
    am2z_store_batch_t *batch = s_batch(self);
    if (!batch) {
        am2z_error_t *e = s_resource_error(self);
        s_send_error(self, peer, &e);
        return;
    }
    if (!msg->keep_state)
        am2z_batch_delete_state(batch, msg->session);   /* ENOTFOUND is fine */
    am2zb_repeat_stop_session(self, msg->session);  /* idempotency + repeat + progress (issue 6) */

    session_t *session = am2zb_session_get(self, msg->session, false);
    size_t cancelled = 0;
    char wait_id[AM2Z_ID_LEN + 1] = "";   /* the leased job the reply waits for */
    bool wait_all = false;                /* a composite: all its stopped steps */
    if (session) {
        am2zb_session_unready(self, session);
        job_t *job;
        while ((job = zlistx_first(session->lane))) {
            am2z_error_t *e = s_stopped_error(session->id);
            s_finish(self, job, false, NULL, 0, &e, 0, 0, NULL);
            cancelled++;
        }
        job_t *active = session->active;
        if (active && active->status == JOB_FAILING) {
            am2z_error_t *e = s_stopped_error(session->id);
            s_finish(self, active, false, NULL, 0, &e, 0, 0, NULL);
            cancelled++;
        } else if (active) {
            /* leased: CANCEL it; its outcome will be discarded; the caller
               gets the stop failure now, through a shadow of the job */
            am2z_msg_t cancel;
            am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
            cancel.job = active->id;
            cancel.attempt = active->attempt;
            if (active->worker)
                am2zb_send_worker(self, active->worker, &cancel);
            cancel.job = NULL;
            am2z_msg_clear(&cancel);
            job_t *shadow = s_job_shadow(active);
            am2zb_sched_release(active);          /* its cap slot: the lease is over */
            if (active->proc->comp)
                wait_all = true;
            else
                memcpy(wait_id, active->id, sizeof wait_id);
            active->stopped = true;
            active->session = NULL;
            session->active = NULL;
            if (shadow) {
                am2z_error_t *e = s_stopped_error(session->id);
                s_finish(self, shadow, false, NULL, 0, &e, 0, 0,
                         active->worker ? active->worker->id : NULL);
            }
            if (active->proc->comp)
                am2zb_flow_stop(self, active);    /* its run ends; job destroyed */
            cancelled++;
        }
        am2zb_session_remove(self, session);
    }
    /* results, info, the reply after the running jobs ended (stop-grace) */
    am2zb_lc_stop(self, peer, msg->session, msg->keep_state, wait_id[0] ? wait_id : NULL,
                  wait_all, cancelled);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "session stopped",
             AM2Z_KS("session", msg->session), AM2Z_KB("keep", msg->keep_state),
             AM2Z_KU("cancelled", cancelled));
}

static void
s_defer(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    deferred_t *d = calloc(1, sizeof *d);
    if (!d) {
        s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY", "broker out of memory");
        return;
    }
    d->peer = *peer;
    d->msg = *msg;                 /* takes ownership */
    am2z_msg_init(msg, AM2Z_CMD_INVALID);
    zlistx_add_end(self->deferred, d);
}

/* ---------------------------------------------------------------------------
   Dead letters (DLQ command, QUERY what=dlq)
   ------------------------------------------------------------------------ */

/*  DLQ {req, op: retry|discard, job}. retry re-enqueues the job under the
    SAME id with fresh attempts (its old failed result is deleted in the same
    transaction, so FETCH / wait by that id get the new outcome); discard
    deletes the dead letter. Answered with REPLY {job, op, ok} after the
    commit, or ERROR (not_found, conflict, resource). */
static void
s_on_dlq(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    bool retry = strcmp(msg->op, "retry") == 0;
    if (retry && self->draining) {
        am2z_error_t *e = s_shutting_down_error();
        s_send_error(self, peer, &e);
        return;
    }
    if (am2z_idmap_lookup(self->jobs, msg->job)) {
        s_send_error_fmt(self, peer, AM2Z_CAT_CONFLICT, "JOB_QUEUED",
                         "job %s is queued or running, not a dead letter", msg->job);
        return;
    }
    am2z_store_batch_t *batch = s_batch(self);
    if (!batch) {
        am2z_error_t *e = s_resource_error(self);
        s_send_error(self, peer, &e);
        return;
    }
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    am2z_jobrec_t jr;
    memset(&jr, 0, sizeof jr);
    int rc = am2z_batch_get_record(batch, AM2Z_DB_DLQ, msg->job, strlen(msg->job), &rec);
    if (rc == AM2Z_OK)
        rc = am2z_jobrec_decode(rec.data, rec.size, &jr);
    am2z_record_clear(&rec);
    if (rc != AM2Z_OK) {
        if (rc == AM2Z_ENOTFOUND)
            s_send_error_fmt(self, peer, AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                             "no dead letter %s", msg->job);
        else
            s_send_error_fmt(self, peer, AM2Z_CAT_INTEGRITY, "INTEGRITY_ERROR",
                             "dead letter %s is unreadable: %s", msg->job, am2z_strerror(rc));
        return;
    }
    job_t *job = NULL;
    effect_t *eff = calloc(1, sizeof *eff + sizeof(peer_t));   /* the peer rides behind it */
    if (!eff)
        goto nomem;
    eff->peer = (peer_t *)(eff + 1);
    if (retry) {
        proc_t *proc = am2zb_proc_get(self, jr.proc, true);
        if (!proc)
            goto nomem;
        am2z_error_t *limit = s_submit_limits(self, proc, jr.session, NULL);
        if (limit) {
            s_send_error(self, peer, &limit);
            free(eff);
            am2z_jobrec_clear(&jr);
            return;
        }
        if (!(job = am2zb_job_new()))
            goto nomem;
        uint64_t now = am2z_clock_wall_ms();
        snprintf(job->id, sizeof job->id, "%s", msg->job);
        job->proc = proc;
        job->session_id = jr.session;
        jr.session = NULL;
        job->state = jr.state;
        job->state_size = jr.state_size;
        jr.state = NULL;
        job->prio = jr.prio;
        job->timeout_ms = jr.timeout_ms;
        job->depth = jr.depth;
        job->created_ms = jr.created_ms;
        job->not_before_ms = now;
        job->seq = ++self->seq;
        job->attempt = 0;             /* fresh attempts */
        rc = s_put_job_record(self, job);
        if (rc == AM2Z_OK) {
            am2zb_lc_result_dropped(self, job->id);
            am2z_batch_del(batch, AM2Z_DB_RESULTS, job->id, strlen(job->id));
            rc = am2z_batch_del(batch, AM2Z_DB_DLQ, job->id, strlen(job->id));
            if (rc == AM2Z_OK)
                am2zb_lc_dlq_removed(self);
        }
        session_t *session = rc == AM2Z_OK ? am2zb_session_get(self, job->session_id, true)
                                           : NULL;
        if (!session) {
            am2z_error_t *e = rc == AM2Z_OK || rc == AM2Z_ERESOURCE ? s_resource_error(self)
                                                                   : s_error_from_rc(rc, "dlq retry");
            s_send_error(self, peer, &e);
            am2zb_job_destroy(&job);
            free(eff);
            am2z_jobrec_clear(&jr);
            return;
        }
        am2zb_job_track(self, job);
        am2zb_lane_push(session, job, false);
        am2zb_session_kick(self, session, now);
        am2zb_lc_touch(self, job->session_id, now);
    } else {
        rc = am2z_batch_del(batch, AM2Z_DB_DLQ, msg->job, strlen(msg->job));
        if (rc == AM2Z_OK)
            am2zb_lc_dlq_removed(self);
        if (rc != AM2Z_OK) {
            am2z_error_t *e = s_error_from_rc(rc, "dlq discard");
            s_send_error(self, peer, &e);
            free(eff);
            am2z_jobrec_clear(&jr);
            return;
        }
    }
    eff->kind = EFF_DLQ;
    eff->job = job;
    *eff->peer = *peer;
    eff->retry = retry;
    eff->session = strdup(msg->job);  /* the id, for the reply */
    s_effect_push(self, eff);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT,
             retry ? "dead letter re-enqueued" : "dead letter discarded",
             AM2Z_KS("job", msg->job), AM2Z_KS("proc", jr.proc));
    am2z_jobrec_clear(&jr);
    return;
nomem:
    free(eff);
    am2z_jobrec_clear(&jr);
    s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY", "broker out of memory");
}

/*  After the commit: the DLQ command's answer. */
static void
s_apply_dlq(am2z_broker_t *self, effect_t *eff, bool durable, uint64_t now)
{
    job_t *job = eff->job;
    eff->job = NULL;
    if (durable) {
        if (job)
            job->accepted = true;
        uint8_t *data = NULL;
        size_t size = 0;
        if (s_map(&data, &size, 3, "job", 's', eff->session ? eff->session : "",
                  "op", 's', eff->retry ? "retry" : "discard", "ok", 'b', 1) == AM2Z_OK)
            s_send_reply(self, eff->peer, &data, size);
        free(data);
        return;
    }
    am2z_error_t *e = s_resource_error(self);
    s_send_error(self, eff->peer, &e);
    if (job && job->lane_handle && job->session) {
        session_t *session = job->session;
        am2zb_lane_remove(session, job);
        am2zb_job_untrack(self, job);
        am2zb_job_destroy(&job);
        am2zb_session_kick(self, session, now);
    }
}

/*  One dead letter as a map; with_state adds the input state. */
static void
s_write_dead_letter(am2z_bw_t *w, const char *id, const am2z_jobrec_t *jr, bool with_state)
{
    bool state = with_state && jr->state;
    am2z_bw_map(w, 7 + (state ? 1u : 0u));
    am2z_bw_str(w, "job");      am2z_bw_str(w, id);
    am2z_bw_str(w, "proc");     am2z_bw_str(w, jr->proc);
    am2z_bw_str(w, "session");  am2z_bw_str(w, jr->session);
    am2z_bw_str(w, "attempt");  am2z_bw_uint(w, jr->attempt);
    am2z_bw_str(w, "created");  am2z_bw_uint(w, jr->created_ms);
    am2z_bw_str(w, "failed");   am2z_bw_uint(w, jr->failed_ms);
    am2z_bw_str(w, "error");    am2z_bw_raw(w, jr->error, jr->error_size);
    if (state) {
        am2z_bw_str(w, "state"); am2z_bw_raw(w, jr->state, jr->state_size);
    }
}

#define S_DLQ_LIST_MAX 1000

static int
s_collect_dlq_key(const void *key, size_t key_size, const void *value, size_t value_size,
                  void *arg)
{
    (void)value;
    (void)value_size;
    zlistx_t *keys = arg;
    if (key_size <= AM2Z_JOB_ID_MAX && am2z_job_id_valid(key, key_size)) {
        char *id = strndup(key, key_size);
        if (id)
            zlistx_add_end(keys, id);
    }
    return 0;
}

/*  QUERY what=dlq: the dead letters, in key order
    (ids start with their submission millisecond), at most S_DLQ_LIST_MAX,
    narrowed by proc / session; with job: that one, input state included. */
static void
s_query_dlq(am2z_broker_t *self, const peer_t *peer, const am2z_msg_t *msg, am2z_bw_t *w,
            bool *answered)
{
    if (msg->job) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        am2z_jobrec_t jr;
        memset(&jr, 0, sizeof jr);
        int rc = am2z_store_get_record(self->store, AM2Z_DB_DLQ, msg->job, strlen(msg->job),
                                       &rec);
        if (rc == AM2Z_OK)
            rc = am2z_jobrec_decode(rec.data, rec.size, &jr);
        am2z_record_clear(&rec);
        if (rc == AM2Z_ENOTFOUND) {
            s_send_error_fmt(self, peer, AM2Z_CAT_NOT_FOUND, "NOT_FOUND", "no dead letter %s",
                             msg->job);
            *answered = true;
        } else if (rc != AM2Z_OK) {
            s_send_error_fmt(self, peer, AM2Z_CAT_INTEGRITY, "INTEGRITY_ERROR",
                             "dead letter %s is unreadable: %s", msg->job, am2z_strerror(rc));
            *answered = true;
        } else {
            am2z_bw_array(w, 1);
            s_write_dead_letter(w, msg->job, &jr, true);
        }
        am2z_jobrec_clear(&jr);
        return;
    }
    zlistx_t *keys = zlistx_new();
    am2z_bw_t *items = am2z_bw_new();
    if (!keys || !items) {
        zlistx_destroy(&keys);
        am2z_bw_destroy(&items);
        am2z_bw_array(w, 0);
        return;
    }
    zlistx_set_destructor(keys, s_str_free);
    am2z_store_each(self->store, AM2Z_DB_DLQ, NULL, 0, s_collect_dlq_key, keys);
    uint32_t n = 0;
    for (char *id = zlistx_first(keys); id && n < S_DLQ_LIST_MAX; id = zlistx_next(keys)) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        am2z_jobrec_t jr;
        memset(&jr, 0, sizeof jr);
        int rc = am2z_store_get_record(self->store, AM2Z_DB_DLQ, id, strlen(id), &rec);
        if (rc == AM2Z_OK)
            rc = am2z_jobrec_decode(rec.data, rec.size, &jr);
        am2z_record_clear(&rec);
        if (rc == AM2Z_OK && (!msg->processor || strcmp(msg->processor, jr.proc) == 0)
            && (!msg->session || strcmp(msg->session, jr.session) == 0)) {
            s_write_dead_letter(items, id, &jr, false);
            n++;
        }
        am2z_jobrec_clear(&jr);
    }
    uint8_t *data = NULL;
    size_t size = 0;
    am2z_bw_array(w, n);
    if (am2z_bw_take(items, &data, &size) == AM2Z_OK && size)
        am2z_bw_raw(w, data, size);    /* the n maps, back to back */
    free(data);
    am2z_bw_destroy(&items);
    zlistx_destroy(&keys);
}

/*  The commands a client may send (s_on_frontend handles them). */
static bool
s_frontend_accepts(am2z_cmd_t cmd)
{
    switch (cmd) {
    case AM2Z_CMD_SUBMIT:
    case AM2Z_CMD_STOP_SESSION:
    case AM2Z_CMD_DLQ:
    case AM2Z_CMD_REPEAT:
    case AM2Z_CMD_FETCH:
    case AM2Z_CMD_QUERY:
    case AM2Z_CMD_HEARTBEAT:
    case AM2Z_CMD_DISCONNECT:
        return true;
    default:
        return false;
    }
}

static void
s_on_frontend(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    switch (msg->cmd) {
    case AM2Z_CMD_SUBMIT:       s_on_submit(self, peer, msg); break;
    case AM2Z_CMD_STOP_SESSION: s_on_stop_session(self, peer, msg); break;
    case AM2Z_CMD_DLQ:          s_on_dlq(self, peer, msg); break;
    case AM2Z_CMD_REPEAT:       am2zb_repeat_on_command(self, peer, msg); break;
    case AM2Z_CMD_FETCH:
    case AM2Z_CMD_QUERY:        s_defer(self, peer, msg); break;
    case AM2Z_CMD_HEARTBEAT:
    case AM2Z_CMD_DISCONNECT:   break;
    default:
        s_send_error_fmt(self, peer, AM2Z_CAT_PROTOCOL, "PROTOCOL_ERROR",
                         "command %s is not accepted on the frontend",
                         am2z_cmd_name(msg->cmd));
        break;
    }
}

/* ---------------------------------------------------------------------------
   Backend handlers
   ------------------------------------------------------------------------ */

static void
s_send_disconnect(am2z_broker_t *self, const uint8_t *ident, size_t size)
{
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_DISCONNECT);
    s_send_msg(self, self->be, ident, size, NULL, &msg, false);
    am2z_msg_clear(&msg);
}

static void
s_on_ready(am2z_broker_t *self, const uint8_t *ident, size_t ident_size, am2z_msg_t *msg)
{
    if (!msg->worker || !msg->nprocs) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "READY without worker id or processors");
        return;
    }
    /* re-registration replaces: same connection or same worker id */
    worker_t *old = am2zb_worker_by_ident(self, ident, ident_size);
    if (old)
        am2zb_worker_forget(self, old, "re-registered");
    for (size_t i = 0; i < self->nworkers; i++) {
        if (strcmp(self->workers[i]->id, msg->worker) == 0) {
            am2zb_worker_forget(self, self->workers[i], "re-registered on a new connection");
            break;
        }
    }
    worker_t *worker = am2zb_worker_add(self, ident, ident_size, msg->worker);
    if (!worker)
        return;
    worker->batch = msg->batch;
    worker->procs = calloc(msg->nprocs, sizeof *worker->procs);
    if (!worker->procs) {
        am2zb_worker_forget(self, worker, "out of memory");
        return;
    }
    for (size_t i = 0; i < msg->nprocs; i++) {
        const am2z_proc_desc_t *d = &msg->procs[i];
        if (!d->name)
            continue;
        proc_t *proc = am2zb_proc_get(self, d->name, true);
        if (!proc || proc->comp)
            continue;             /* a composite of that name wins */
        if (am2zb_worker_proc(worker, proc))
            continue;             /* listed twice */
        if (!proc->registered || !proc->description) {
            free(proc->description);
            proc->description = d->description ? strdup(d->description) : NULL;
        }
        if (!proc->registered) {
            const char *why = NULL;
            if (am2zb_proc_sched_set(proc, d, &why) != AM2Z_OK) {
                /* not served by this worker: its limits cannot be kept */
                AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "processor refused",
                         AM2Z_KS("worker", worker->id), AM2Z_KS("proc", d->name),
                         AM2Z_KS("reason", why));
                continue;
            }
            proc->timeout_ms = d->timeout_ms;
            proc->priority = d->priority;
            proc->retry = d->retry;
        }
        proc->registered = true;
        wproc_t *wp = &worker->procs[worker->nprocs++];
        wp->proc = proc;
        wp->concurrency = d->concurrency ? d->concurrency : 1;
        wp->credit = wp->concurrency;
    }
    size_t comps_new = msg->ncomps ? am2zb_flow_register(self, msg->comps, msg->ncomps) : 0;
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "worker ready",
             AM2Z_KS("worker", worker->id), AM2Z_KU("processors", worker->nprocs),
             AM2Z_KU("composites", msg->ncomps), AM2Z_KU("composites_new", comps_new));
}

static void
s_failed_event(am2z_broker_t *self, job_t *job, const am2z_error_t *error)
{
    uint8_t *err = NULL, *data = NULL;
    size_t err_size = 0, size = 0;
    if (error && am2z_error_encode(error, &err, &err_size) != AM2Z_OK)
        err = NULL;
    if (s_map(&data, &size, 2, "error", 'r', (const uint8_t *)err, err ? err_size : (size_t)0,
              "attempt", 'u', (uint64_t)job->attempt) == AM2Z_OK)
        am2zb_job_event(self, job, "processor:job:failed", data, size);
    free(err);
    free(data);
}

/*  Writes the job to the dead-letter store (its record with the last error
    and when it failed) in this turn's batch. */
static void
s_dead_letter(am2z_broker_t *self, const job_t *job, const am2z_error_t *error)
{
    am2z_store_batch_t *batch = s_batch(self);
    if (!batch)
        return;
    uint8_t *err = NULL, *data = NULL;
    size_t err_size = 0, size = 0;
    if (error && am2z_error_encode(error, &err, &err_size) != AM2Z_OK)
        err = NULL;
    am2z_jobrec_t rec = {
        .proc = job->proc->name, .session = job->session_id,
        .state = job->state, .state_size = job->state_size,
        .prio = job->prio, .timeout_ms = job->timeout_ms, .delay_ms = job->delay_ms,
        .depth = job->depth, .created_ms = job->created_ms, .seq = job->seq,
        .attempt = job->attempt, .error = err, .error_size = err_size,
        .failed_ms = am2z_clock_wall_ms(),
    };
    int rc = am2z_jobrec_encode(&rec, &data, &size);
    if (rc == AM2Z_OK)
        rc = am2z_batch_put_record(batch, AM2Z_DB_DLQ, job->id, strlen(job->id),
                                   job->attempt, data, size, rec.failed_ms);
    if (rc == AM2Z_OK)
        am2zb_lc_dead_lettered(self, job->id);     /* the dlq-max bound */
    if (rc != AM2Z_OK)
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot store dead letter",
                 AM2Z_KS("job", job->id), AM2Z_KS("error", am2z_strerror(rc)));
    else
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "job dead-lettered",
                 AM2Z_KS("job", job->id), AM2Z_KS("proc", job->proc->name),
                 AM2Z_KU("attempts", job->attempt),
                 AM2Z_KS("error", error ? error->message : "?"));
    free(err);
    free(data);
}

void
am2zb_dead_letter(am2z_broker_t *self, const job_t *job, const am2z_error_t *error)
{
    s_dead_letter(self, job, error);
}

/*  One attempt of a leased job failed (its DONE said so, or its lease
    expired): retry it after the backoff when the policy allows, else
    finish it as failed and dead-letter it. Takes *error_p. The job must be
    the current lease (not stopped). */
static void
s_attempt_failed(am2z_broker_t *self, job_t *job, am2z_error_t **error_p,
                 const char *worker_id, uint64_t exec_us, uint64_t started_ms)
{
    am2z_error_t *error = *error_p;
    *error_p = NULL;
    if (!error)
        error = am2z_error_execution(job->proc->name, job->id, "failed without an error");
    const am2z_retry_policy_t *policy = &job->proc->retry;
    uint32_t max = am2z_retry_max_attempts(policy);
    if (error && am2z_retry_allowed(policy, error, job->attempt)
        && (job->session || job->flow_id || job->call)) {
        /* retry: back to the front of its lane after the backoff; the
           attempt counter is already stored (dirty at lease time) */
        s_failed_event(self, job, error);
        uint32_t rnd = 0;
        if (policy->jitter > 0 && getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            rnd = (uint32_t)am2z_clock_mono_us();
        uint64_t backoff = am2z_retry_backoff_ms(policy, job->attempt, rnd);
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "attempt failed, retrying",
                 AM2Z_KS("job", job->id), AM2Z_KU("attempt", job->attempt),
                 AM2Z_KU("max", max), AM2Z_KU("backoff_ms", backoff),
                 AM2Z_KS("error", error ? error->message : "?"));
        am2z_error_destroy(&error);
        if (job->flow_id || job->call) {
            am2zb_flow_requeue(self, job, am2z_clock_wall_ms() + backoff);
            return;
        }
        session_t *session = job->session;
        session->active = NULL;
        job->worker = NULL;
        job->not_before_ms = am2z_clock_wall_ms() + backoff;
        am2zb_lane_push(session, job, true);
        am2zb_session_kick(self, session, am2z_clock_wall_ms());
        return;
    }
    if (job->flow_id || job->call) {
        s_failed_event(self, job, error);
        am2zb_flow_step_failed(self, job, &error);
        am2z_error_destroy(&error);
        return;
    }
    s_dead_letter(self, job, error);
    s_finish(self, job, false, NULL, 0, &error, exec_us, started_ms, worker_id);
    am2z_error_destroy(&error);
}

/*  The lease of an ACTIVE job ran out (or its DONE came after the
    deadline: done_arrived). The attempt fails with a TimeoutError; the
    worker gets CANCEL and, until it answers, its slot stays taken (the
    answer is then rejected as a late DONE). */
static void
s_expire(am2z_broker_t *self, job_t *job, bool done_arrived)
{
    worker_t *worker = job->worker;
    wproc_t *wp = worker ? am2zb_worker_proc(worker, job->proc) : NULL;
    am2zb_lease_end(job);
    AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "lease expired",
             AM2Z_KS("job", job->id), AM2Z_KU("attempt", job->attempt),
             AM2Z_KS("worker", worker ? worker->id : "?"),
             AM2Z_KU("timeout_ms", job->timeout_ms), AM2Z_KB("late_done", done_arrived));
    if (worker && done_arrived) {
        if (wp && !job->call)
            wp->credit++;
    } else if (worker && job->call) {
        /* ran beyond credit: nothing to give back later */
        am2z_msg_t cancel;
        am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
        cancel.job = job->id;
        cancel.attempt = job->attempt;
        am2zb_send_worker(self, worker, &cancel);
        cancel.job = NULL;
        am2z_msg_clear(&cancel);
    } else if (worker) {
        am2z_msg_t cancel;
        am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
        cancel.job = job->id;
        cancel.attempt = job->attempt;
        am2zb_send_worker(self, worker, &cancel);
        cancel.job = NULL;
        am2z_msg_clear(&cancel);
        expired_t *x = calloc(1, sizeof *x);
        if (x) {
            memcpy(x->id, job->id, sizeof x->id);
            x->attempt = job->attempt;
            x->proc = job->proc;
            zlistx_add_end(worker->expired, x);
        } else if (wp) {
            wp->credit++;         /* cannot remember it: give the slot back now */
        }
    }
    if (job->stopped) {
        am2zb_job_untrack(self, job);
        am2zb_job_destroy(&job);
        return;
    }
    char op[AM2Z_NAME_MAX + 16];
    snprintf(op, sizeof op, "%s", job->proc->name);
    am2z_error_t *error = am2z_error_timeout(op, job->timeout_ms);
    s_attempt_failed(self, job, &error, worker ? worker->id : NULL, 0, 0);
}

/*  Expires every lease past its deadline (called inside a turn's batch). */
static void
s_expire_leases(am2z_broker_t *self)
{
    uint64_t now = am2z_clock_mono_us();
    job_t *due[64];
    size_t n = 0;
    for (job_t *job = zlistx_first(self->leases); job && n < 64;
         job = zlistx_next(self->leases))
        if (job->deadline_us <= now)
            due[n++] = job;
    for (size_t i = 0; i < n; i++)
        s_expire(self, due[i], false);
}

/*  A DONE that is not the current lease: when it answers a lease we
    expired, the worker's slot is free again. Either way it is dropped. */
static void
s_on_stale_done(am2z_broker_t *self, worker_t *worker, const am2z_msg_t *msg)
{
    for (expired_t *x = zlistx_first(worker->expired); x; x = zlistx_next(worker->expired)) {
        if (msg->job && strcmp(x->id, msg->job) == 0 && x->attempt == msg->attempt) {
            wproc_t *wp = am2zb_worker_proc(worker, x->proc);
            if (wp)
                wp->credit++;
            zlistx_delete(worker->expired, zlistx_cursor(worker->expired));
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                     "late DONE rejected: lease expired before it came",
                     AM2Z_KS("job", msg->job), AM2Z_KU("attempt", msg->attempt),
                     AM2Z_KS("worker", worker->id), AM2Z_KB("ok", msg->success));
            return;
        }
    }
    AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "stale lease: DONE dropped",
             AM2Z_KS("job", msg->job), AM2Z_KU("attempt", msg->attempt),
             AM2Z_KS("worker", worker->id));
}

static void
s_on_done(am2z_broker_t *self, worker_t *worker, am2z_msg_t *msg)
{
    job_t *job = msg->job ? am2z_idmap_lookup(self->jobs, msg->job) : NULL;
    if (!job || job->status != JOB_ACTIVE || job->worker != worker
        || job->attempt != msg->attempt) {
        s_on_stale_done(self, worker, msg);
        return;
    }
    if (job->deadline_us && am2z_clock_mono_us() >= job->deadline_us) {
        /* past the deadline: the lease is over even if we had not noticed */
        s_expire(self, job, true);
        return;
    }
    wproc_t *wp = am2zb_worker_proc(worker, job->proc);
    if (wp && !job->call)
        wp->credit++;
    am2zb_lease_end(job);
    if (job->stopped) {
        am2zb_job_untrack(self, job);   /* outcome discarded */
        am2zb_job_destroy(&job);
        return;
    }
    bool ok = msg->success;
    am2z_error_t *error = NULL;
    uint64_t new_version = 0;
    if (ok && (job->flow_id || job->call)) {
        am2zb_flow_done(self, job, worker, msg);   /* a workflow step or call */
        return;
    }
    if (ok) {
        am2z_state_t *st = NULL;
        if (!msg->state || am2z_state_decode(msg->state, msg->state_size, &st) != AM2Z_OK) {
            error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                                   "DONE.state is missing or not a valid state");
        } else if (strcmp(am2z_state_session_id(st), job->session_id) != 0) {
            error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                                   "DONE.state names session '%s', expected '%s'",
                                   am2z_state_session_id(st), job->session_id);
        } else if (am2z_state_version(st) != job->input_version + 1) {
            error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                                   "DONE.state has version %" PRIu64 ", expected %" PRIu64,
                                   am2z_state_version(st), job->input_version + 1);
        } else {
            new_version = am2z_state_version(st);
        }
        am2z_state_destroy(&st);
        if (!error) {
            am2z_store_batch_t *batch = s_batch(self);
            int rc = batch ? am2z_batch_put_state(batch, job->session_id, job->expected_version,
                                                  new_version, msg->state, msg->state_size,
                                                  am2z_clock_wall_ms())
                           : self->batch_rc;
            if (rc != AM2Z_OK)
                error = s_error_from_rc(rc, "saving state");
        }
        if (error) {
            ok = false;
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "job result refused",
                     AM2Z_KS("job", job->id), AM2Z_KS("reason", error ? error->message : "?"));
        }
        s_finish_v(self, job, ok, &msg->state, msg->state_size, new_version, &error,
                   msg->exec_us, msg->started_at_ms, worker->id);
        am2z_error_destroy(&error);
        return;
    }
    error = msg->error;
    msg->error = NULL;
    s_attempt_failed(self, job, &error, worker->id, msg->exec_us, msg->started_at_ms);
}

static void
s_on_worker_event(am2z_broker_t *self, worker_t *worker, am2z_msg_t *msg)
{
    job_t *job = msg->job ? am2z_idmap_lookup(self->jobs, msg->job) : NULL;
    if (!job || job->worker != worker || job->status != JOB_ACTIVE || job->stopped
        || !msg->name || !am2z_name_valid(msg->name, strlen(msg->name))) {
        AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "worker event dropped",
                 AM2Z_KS("job", msg->job), AM2Z_KS("name", msg->name));
        return;
    }
    am2zb_progress_event(self, job, msg);   /* idempotency + repeat + progress (issue 6) */
    am2zb_job_event(self, job, msg->name, msg->data, msg->data_size);
}

static void
s_on_backend(am2z_broker_t *self, const uint8_t *ident, size_t ident_size, am2z_msg_t *msg)
{
    if (msg->cmd == AM2Z_CMD_READY) {
        s_on_ready(self, ident, ident_size, msg);
        return;
    }
    worker_t *worker = am2zb_worker_by_ident(self, ident, ident_size);
    if (!worker) {
        if (msg->cmd != AM2Z_CMD_DISCONNECT)
            s_send_disconnect(self, ident, ident_size);
        return;
    }
    worker->last_seen_us = am2z_clock_mono_us();
    switch (msg->cmd) {
    case AM2Z_CMD_HEARTBEAT:
        break;
    case AM2Z_CMD_DISCONNECT:
        am2zb_worker_forget(self, worker, "disconnected");
        break;
    case AM2Z_CMD_CREDIT: {
        proc_t *proc = msg->processor ? am2zb_proc_get(self, msg->processor, false) : NULL;
        wproc_t *wp = proc ? am2zb_worker_proc(worker, proc) : NULL;
        if (wp)
            wp->credit += msg->credit;
        else
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "CREDIT for a processor not served",
                     AM2Z_KS("worker", worker->id), AM2Z_KS("proc", msg->processor));
        break;
    }
    case AM2Z_CMD_DONE:
        s_on_done(self, worker, msg);
        break;
    case AM2Z_CMD_EVENT:
        s_on_worker_event(self, worker, msg);
        break;
    case AM2Z_CMD_CALL:
        am2zb_flow_call(self, worker, msg);
        break;
    default:
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "unexpected command from worker",
                 AM2Z_KS("worker", worker->id), AM2Z_KS("cmd", am2z_cmd_name(msg->cmd)));
        break;
    }
}

/* ---------------------------------------------------------------------------
   Receiving
   ------------------------------------------------------------------------ */

/*  Receives one whole message without blocking. Returns the number of
    frames kept (at most S_MAX_FRAMES; *total counts every frame, so more
    than that means some were dropped), or 0 when nothing was waiting. When
    the third frame (after routing id and signature) is the BATCH marker and
    more frames follow, it stops there and sets *batch: the caller reads the
    (command, body) pairs. */
static int
s_recv(void *sock, zmq_msg_t *frames, int *total, bool *batch)
{
    int n = 0;
    *total = 0;
    *batch = false;
    while (true) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return n;
        }
        int more = zmq_msg_more(&part);
        if (*total < INT_MAX)
            (*total)++;
        if (n < S_MAX_FRAMES) {
            zmq_msg_init(&frames[n]);
            zmq_msg_move(&frames[n], &part);
            n++;
        }
        zmq_msg_close(&part);
        if (!more)
            return n;
        if (n == 3 && am2z_is_batch(zmq_msg_data(&frames[2]), zmq_msg_size(&frames[2]))) {
            *batch = true;
            return n;
        }
    }
}

static void
s_close_frames(zmq_msg_t *frames, int n)
{
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

/*  A refused message: ERROR to a client (with the req its body still
    yields), a log line for a worker's. */
static void
s_refuse(am2z_broker_t *self, peer_t *peer, bool frontend, const zmq_msg_t *body,
         int rc, const char *err)
{
    if (frontend) {
        if (body)
            am2z_body_peek_req(zmq_msg_data((zmq_msg_t *)body), zmq_msg_size((zmq_msg_t *)body),
                               self->cfg.common.max_frame_size, &peer->req);
        AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "bad client message",
                 AM2Z_KS("error", err));
        s_send_error_fmt(self, peer, AM2Z_CAT_PROTOCOL, "PROTOCOL_ERROR", "%s",
                         err[0] ? err : am2z_strerror(rc));
    } else {
        /* which worker: its id once it has registered, else its routing id */
        worker_t *w = am2zb_worker_by_ident(self, peer->ident, peer->ident_size);
        char ident[2 * 16 + 4];
        size_t k = 0;
        for (size_t i = 0; i < peer->ident_size && i < 16; i++)
            k += (size_t)snprintf(ident + k, sizeof ident - k, "%02x", peer->ident[i]);
        if (peer->ident_size > 16)
            snprintf(ident + k, sizeof ident - k, "...");
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "bad worker message dropped",
                 AM2Z_KS("worker", w && w->id ? w->id : "(not registered)"),
                 AM2Z_KS("routing_id", ident),
                 AM2Z_KS("error", err[0] ? err : am2z_strerror(rc)));
    }
}

/*  Decodes one (signature, command, body) and hands it to its handler, or
    refuses it. */
static void
s_handle_frames(am2z_broker_t *self, peer_t *peer, bool frontend, zmq_msg_t *sig,
                zmq_msg_t *cmd, zmq_msg_t *body)
{
    char err[256] = "";
    if (frontend && zmq_msg_size(sig) == strlen(AM2Z_PROTOCOL)
        && memcmp(zmq_msg_data(sig), AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL)) == 0) {
        /* a command that does not belong here is named as such, whatever
           its body holds (a worker's JOB or DONE is not decoded) */
        am2z_cmd_t c = am2z_cmd_parse(zmq_msg_data(cmd), zmq_msg_size(cmd));
        if (c != AM2Z_CMD_INVALID && !s_frontend_accepts(c)) {
            snprintf(err, sizeof err, "command %s is not accepted on the frontend",
                     am2z_cmd_name(c));
            s_refuse(self, peer, frontend, body, AM2Z_EPROTO, err);
            return;
        }
    }
    am2z_msg_t msg;
    int rc = am2z_frames_decode(zmq_msg_data(sig), zmq_msg_size(sig), zmq_msg_data(cmd),
                                zmq_msg_size(cmd), zmq_msg_data(body), zmq_msg_size(body),
                                self->cfg.common.max_frame_size, &msg, err, sizeof err);
    if (rc != AM2Z_OK) {
        s_refuse(self, peer, frontend, body, rc, err);
        return;
    }
    if (frontend) {
        peer->req = msg.req;
        s_on_frontend(self, peer, &msg);
    } else {
        s_on_backend(self, peer->ident, peer->ident_size, &msg);
    }
    am2z_msg_clear(&msg);
}

/*  Reads and handles the (command, body) pairs of a BATCH whose routing
    id, signature and marker are in frames[0..2]. Each pair is handled as
    the message it stands for, in order; a pair that breaks a rule is
    refused alone (a command without a body ends the batch). A client that
    sends a BATCH may be answered with BATCHes (peer.batch). Returns the
    number of pairs read. */
static size_t
s_recv_batch(am2z_broker_t *self, void *sock, bool frontend, peer_t *peer, zmq_msg_t *frames)
{
    char err[256] = "";
    bool sig_ok = zmq_msg_size(&frames[1]) == strlen(AM2Z_PROTOCOL)
                  && memcmp(zmq_msg_data(&frames[1]), AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL)) == 0;
    peer->batch = frontend;
    size_t pairs = 0;
    bool over = false;
    int more = 1;
    while (more) {
        zmq_msg_t cmd, body;
        zmq_msg_init(&cmd);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&cmd, sock, ZMQ_DONTWAIT) < 0)
            break;                /* cannot happen: a message arrives whole */
        more = zmq_msg_more(&cmd);
        bool has_body = more && zmq_msg_recv(&body, sock, ZMQ_DONTWAIT) >= 0;
        more = has_body && zmq_msg_more(&body);
        pairs++;
        peer->req = 0;
        if (!has_body) {
            snprintf(err, sizeof err, "BATCH: command %zu has no body frame", pairs);
            s_refuse(self, peer, frontend, NULL, AM2Z_EPROTO, err);
        } else if (pairs > AM2Z_BATCH_MAX) {
            if (!over) {
                snprintf(err, sizeof err,
                         "BATCH: more than %d commands; command %zu and the rest refused",
                         AM2Z_BATCH_MAX, pairs);
                s_refuse(self, peer, frontend, &body, AM2Z_EPROTO, err);
            }
            over = true;
        } else if (!sig_ok) {
            /* the first pair's refusal names the bad signature (the
               single-message decoder's words); the rest is dropped */
            if (pairs == 1)
                s_handle_frames(self, peer, frontend, &frames[1], &cmd, &body);
        } else if (am2z_is_batch(zmq_msg_data(&cmd), zmq_msg_size(&cmd))) {
            snprintf(err, sizeof err, "BATCH: command %zu is a BATCH (batches do not nest)",
                     pairs);
            s_refuse(self, peer, frontend, &body, AM2Z_EPROTO, err);
        } else {
            s_handle_frames(self, peer, frontend, &frames[1], &cmd, &body);
        }
        zmq_msg_close(&cmd);
        zmq_msg_close(&body);
    }
    self->batch_in[!frontend][0]++;
    self->batch_in[!frontend][1] += pairs < AM2Z_BATCH_MAX ? pairs : AM2Z_BATCH_MAX;
    while (more) {                /* only after a failed read: drop the rest */
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0)
            break;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    return pairs;
}

/*  Receives and handles one message from `sock`. Returns the number of
    commands it carried (a BATCH's pairs; 1 otherwise), 0 when there was
    nothing to read. */
static size_t
s_recv_one(am2z_broker_t *self, void *sock, bool frontend)
{
    zmq_msg_t frames[S_MAX_FRAMES];
    bool batch = false;
    int total = 0;
    int n = s_recv(sock, frames, &total, &batch);
    if (n == 0)
        return 0;
    size_t cmds = 1;
    peer_t peer;
    memset(&peer, 0, sizeof peer);
    size_t ident_size = zmq_msg_size(&frames[0]);
    if (ident_size > S_IDENT_MAX)
        ident_size = S_IDENT_MAX;
    memcpy(peer.ident, zmq_msg_data(&frames[0]), ident_size);
    peer.ident_size = ident_size;

    if (batch) {
        cmds = s_recv_batch(self, sock, frontend, &peer, frames);
    } else if (total != 4) {
        char err[256];
        snprintf(err, sizeof err, "expected 3 frames (signature, command, body), got %d",
                 total - 1);
        s_refuse(self, &peer, frontend, NULL, AM2Z_EPROTO, err);
    } else {
        s_handle_frames(self, &peer, frontend, &frames[1], &frames[2], &frames[3]);
    }
    s_close_frames(frames, n);
    return cmds;
}

/* ---------------------------------------------------------------------------
   After the commit: effects, queries, fetches
   ------------------------------------------------------------------------ */

static void
s_count(am2z_broker_t *self, const job_t *job, bool ok)
{
    counts_t *global = &job->proc->counts;
    session_t *session = am2zb_session_get(self, job->session_id, false);
    counts_t *local = session ? am2zb_session_counts(session, job->proc->name) : NULL;
    if (ok) {
        self->completed++;
        global->completed++;
        if (local)
            local->completed++;
    } else {
        self->failed++;
        global->failed++;
        if (local)
            local->failed++;
    }
}

/*  A FINISH effect's RESULT to one recipient (nobody when size is 0): the
    stored bytes with its req spliced in (am2z_body_with_req), or encoded
    afresh when there are none. */
static void
s_send_result(am2z_broker_t *self, const uint8_t *ident, size_t size, uint64_t req,
              bool batch, effect_t *eff)
{
    if (!size)
        return;
    if (!eff->rbody) {
        s_send_to(self, ident, size, req, batch, eff->result);
        return;
    }
    if (!req) {
        s_send_frames(self, self->fe, ident, size, NULL, AM2Z_CMD_RESULT, eff->rbody,
                      eff->rbody_size, batch);
        return;
    }
    uint8_t *body = NULL;
    size_t body_size = 0;
    if (am2z_body_with_req(AM2Z_CMD_RESULT, eff->rbody, eff->rbody_size, req, &body,
                           &body_size) != AM2Z_OK) {
        s_send_to(self, ident, size, req, batch, eff->result);
        return;
    }
    s_send_frames(self, self->fe, ident, size, NULL, AM2Z_CMD_RESULT, body, body_size, batch);
    free(body);
}

static void
s_apply_finish(am2z_broker_t *self, effect_t *eff, bool durable)
{
    job_t *job = eff->job;
    am2z_msg_t *r = eff->result;
    if (!durable) {
        /* the outcome could not be stored: the caller gets a ResourceError
           and the job record is deleted next turn */
        free(eff->rbody);
        eff->rbody = NULL;
        r->success = false;
        free(r->state);
        r->state = NULL;
        r->state_size = 0;
        am2z_error_destroy(&r->error);
        r->error = s_resource_error(self);
        char *id = strdup(job->id);
        if (id)
            zlistx_add_end(self->cleanup, id);
    }
    if (r->success && !s_event_wanted(self, job)) {
        ++job->event_seq;
    } else if (r->success) {
        uint64_t version = r->state ? eff->version : 0;
        if (r->state && !version) {
            am2z_state_t *st = NULL;
            if (am2z_state_decode(r->state, r->state_size, &st) == AM2Z_OK)
                version = am2z_state_version(st);
            am2z_state_destroy(&st);
        }
        uint8_t *data = NULL;
        size_t size = 0;
        if (s_map(&data, &size, 2, "executionTime", 'u', r->exec_us,
                  "version", 'u', version) == AM2Z_OK)
            am2zb_job_event(self, job, "processor:job:completed", data, size);
        free(data);
    } else {
        s_failed_event(self, job, r->error);
    }
    s_send_result(self, am2zb_jpeer_ident(&job->client), job->client.ident_size,
                  job->client.req, job->client.batch, eff);
    for (size_t i = 0; i < job->nfetchers; i++)
        s_send_result(self, job->fetchers[i].ident, job->fetchers[i].ident_size,
                      job->fetchers[i].req, job->fetchers[i].batch, eff);
    s_count(self, job, r->success);
    AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "job finished",
             AM2Z_KS("job", job->id), AM2Z_KB("ok", r->success),
             AM2Z_KU("attempt", job->attempt));
}

static void
s_apply_effects(am2z_broker_t *self, bool durable)
{
    uint64_t now = am2z_clock_wall_ms();
    effect_t *eff;
    while ((eff = self->effects)) {
        self->effects = eff->next;
        if (!self->effects)
            self->effects_tail = NULL;
        self->neffects--;
        if (eff->kind == EFF_SUBMIT) {
            job_t *job = eff->job;
            if (durable) {
                job->accepted = true;
                am2z_msg_t acc;
                am2z_msg_init(&acc, AM2Z_CMD_ACCEPTED);
                acc.job = job->id;
                acc.session = job->session_id;
                if (!job->client.noack)
                    s_send_jclient(self, &job->client, &acc);
                if (eff->created) {
                    uint8_t *data = NULL;
                    size_t size = 0;
                    if (s_map(&data, &size, 1, "session", 's', job->session_id) == AM2Z_OK)
                        am2zb_job_event(self, job, "session:created", data, size);
                    free(data);
                }
                eff->job = NULL;
            } else {
                am2z_error_t *e = s_resource_error(self);
                peer_t peer;
                am2zb_jpeer_load(&job->client, &peer);
                s_send_error(self, &peer, &e);
                if (job->lane_handle && job->session) {
                    session_t *session = job->session;
                    am2zb_lane_remove(session, job);
                    am2zb_job_untrack(self, job);
                    am2zb_job_destroy(&job);
                    am2zb_session_kick(self, session, now);
                }
                /* else a STOP of the same turn owns it */
                eff->job = NULL;
            }
        } else if (eff->kind == EFF_FINISH) {
            s_apply_finish(self, eff, durable);
        } else if (eff->kind == EFF_DLQ) {
            s_apply_dlq(self, eff, durable, now);
        }
        /* STOP_SESSION is answered by am2zb_lc_committed */
        void *item = eff;
        s_effect_free(&item);
    }
}

static int
s_strcmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/*  Collects session ids that have queued, running or stored state. */
static int
s_collect_session(const char *id, void *arg)
{
    zhashx_t *set = arg;
    zhashx_insert(set, id, (void *)1);
    return 0;
}

static zhashx_t *
s_active_sessions(am2z_broker_t *self)
{
    zhashx_t *set = zhashx_new();
    if (!set)
        return NULL;
    am2z_store_list_sessions(self->store, s_collect_session, set);
    for (session_t *s = am2z_idmap_first(self->sessions); s; s = am2z_idmap_next(self->sessions))
        if (s->active || zlistx_size(s->lane))
            zhashx_insert(set, s->id, (void *)1);
    return set;
}

typedef struct {
    uint64_t waiting, active, delayed;
} qcount_t;

/*  Waiting/active/delayed of one processor, optionally one session only. */
static qcount_t
s_queue_count(am2z_broker_t *self, const proc_t *proc, const char *session, uint64_t now)
{
    qcount_t q = { 0, 0, 0 };
    for (job_t *job = am2z_idmap_first(self->jobs); job; job = am2z_idmap_next(self->jobs)) {
        if (job->proc != proc || job->stopped)
            continue;
        if (session && strcmp(job->session_id, session) != 0)
            continue;
        if (job->status == JOB_WAITING) {
            if (job->not_before_ms > now)
                q.delayed++;
            else
                q.waiting++;
        } else {
            q.active++;
        }
    }
    return q;
}

static void
s_write_queues(am2z_broker_t *self, am2z_bw_t *w, const char *session_id)
{
    uint64_t now = am2z_clock_wall_ms();
    session_t *session = session_id ? am2zb_session_get(self, session_id, false) : NULL;
    am2z_bw_map(w, (uint32_t)zhashx_size(self->procs));
    for (proc_t *p = zhashx_first(self->procs); p; p = zhashx_next(self->procs)) {
        /* zhashx cursor: s_queue_count iterates jobs, not procs */
        qcount_t q = s_queue_count(self, p, session_id, now);
        counts_t c = { 0, 0 };
        if (!session_id)
            c = p->counts;
        else if (session) {
            counts_t *sc = zhashx_lookup(session->stats, p->name);
            if (sc)
                c = *sc;
        }
        am2z_bw_str(w, p->name);
        am2z_bw_map(w, 6);
        am2z_bw_str(w, "waiting");   am2z_bw_uint(w, q.waiting);
        am2z_bw_str(w, "active");    am2z_bw_uint(w, q.active);
        am2z_bw_str(w, "completed"); am2z_bw_uint(w, c.completed);
        am2z_bw_str(w, "failed");    am2z_bw_uint(w, c.failed);
        am2z_bw_str(w, "delayed");   am2z_bw_uint(w, q.delayed);
        am2z_bw_str(w, "paused");    am2z_bw_uint(w, 0);
    }
}

static void
s_query_job(am2z_broker_t *self, const peer_t *peer, const char *id, am2z_bw_t *w)
{
    job_t *job = am2z_idmap_lookup(self->jobs, id);
    if (job && !job->stopped) {
        am2z_bw_map(w, 8 + (job->has_progress ? 1u : 0u));
        if (job->has_progress) {
            am2z_bw_str(w, "progress"); am2z_bw_uint(w, job->progress);
        }
        am2z_bw_str(w, "job");     am2z_bw_str(w, job->id);
        am2z_bw_str(w, "proc");    am2z_bw_str(w, job->proc->name);
        am2z_bw_str(w, "session"); am2z_bw_str(w, job->session_id);
        am2z_bw_str(w, "status");
        am2z_bw_str(w, job->status == JOB_WAITING ? "waiting" : "active");
        am2z_bw_str(w, "attempt"); am2z_bw_uint(w, job->attempt);
        am2z_bw_str(w, "dispatched"); am2z_bw_uint(w, job->dispatched_ms);
        am2z_bw_str(w, "created"); am2z_bw_uint(w, job->created_ms);
        am2z_bw_str(w, "due");     am2z_bw_uint(w, job->not_before_ms);
        return;
    }
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    int rc = am2z_store_get_record(self->store, AM2Z_DB_RESULTS, id, strlen(id), &rec);
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_INVALID);
    if (rc == AM2Z_OK)
        rc = am2z_msg_decode(AM2Z_CMD_RESULT, rec.data, rec.size, rec.size + 1, &r, NULL, 0);
    am2z_record_clear(&rec);
    if (rc != AM2Z_OK) {
        if (rc == AM2Z_ENOTFOUND)
            s_send_error_fmt(self, peer, AM2Z_CAT_NOT_FOUND, "NOT_FOUND", "no job %s", id);
        else
            s_send_error_fmt(self, peer, AM2Z_CAT_INTEGRITY, "INTEGRITY_ERROR",
                             "result of job %s is unreadable: %s", id, am2z_strerror(rc));
        return;
    }
    am2z_bw_map(w, 6);
    am2z_bw_str(w, "job");     am2z_bw_str(w, id);
    am2z_bw_str(w, "proc");    am2z_bw_str(w, r.processor);
    am2z_bw_str(w, "session"); am2z_bw_str(w, r.session);
    am2z_bw_str(w, "status");  am2z_bw_str(w, r.success ? "completed" : "failed");
    am2z_bw_str(w, "attempt"); am2z_bw_uint(w, r.attempt);
    am2z_bw_str(w, "dispatched"); am2z_bw_uint(w, r.dispatched_ms);
    am2z_msg_clear(&r);
}

static void
s_on_query(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    const char *what = msg->what ? msg->what : "";
    am2z_bw_t *w = am2z_bw_new();
    if (!w) {
        s_send_error_fmt(self, peer, AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY", "broker out of memory");
        return;
    }
    bool answered = false;       /* an ERROR was sent instead */
    if (strcmp(what, "stats") == 0) {
        uint64_t running = 0, waiting = 0;
        for (job_t *j = am2z_idmap_first(self->jobs); j; j = am2z_idmap_next(self->jobs)) {
            if (j->stopped)
                continue;
            if (j->status == JOB_WAITING)
                waiting++;
            else
                running++;
        }
        zhashx_t *set = s_active_sessions(self);
        am2z_bw_map(w, 11 + AM2ZB_LC_STATS_FIELDS);
        am2z_bw_str(w, "uptimeMs");   am2z_bw_uint(w, (am2z_clock_mono_us() - self->started_us) / 1000);
        am2z_bw_str(w, "processors"); am2z_bw_uint(w, zhashx_size(self->procs));
        am2z_bw_str(w, "workers");    am2z_bw_uint(w, self->nworkers);
        am2z_bw_str(w, "sessions");   am2z_bw_uint(w, set ? zhashx_size(set) : 0);
        am2z_bw_str(w, "running");    am2z_bw_uint(w, running);
        am2z_bw_str(w, "waiting");    am2z_bw_uint(w, waiting);
        am2z_bw_str(w, "completed");  am2z_bw_uint(w, self->completed);
        am2z_bw_str(w, "failed");     am2z_bw_uint(w, self->failed);
        /* BATCHes (docs/PROTOCOL.md "Batches") by direction: how many,
           and how many commands they carried */
        static const char *const names[2][2][2] = {
            { { "fromClients", "fromClientsCommands" }, { "fromWorkers", "fromWorkersCommands" } },
            { { "toClients", "toClientsCommands" }, { "toWorkers", "toWorkersCommands" } },
        };
        am2z_bw_str(w, "batches");
        am2z_bw_map(w, 8);
        for (int dir = 0; dir < 2; dir++)
            for (int side = 0; side < 2; side++)
                for (int k = 0; k < 2; k++) {
                    am2z_bw_str(w, names[dir][side][k]);
                    am2z_bw_uint(w, dir ? self->batch_out[side][k] : self->batch_in[side][k]);
                }
        am2z_bw_str(w, "leasedBeforeCommit"); am2z_bw_uint(w, self->early_leases);
        am2z_bw_str(w, "pollSpin");   /* s_poll: spins, those that caught input, µs spent */
        am2z_bw_map(w, 3);
        am2z_bw_str(w, "spins");  am2z_bw_uint(w, self->spin[0]);
        am2z_bw_str(w, "caught"); am2z_bw_uint(w, self->spin[1]);
        am2z_bw_str(w, "us");     am2z_bw_uint(w, self->spin[2]);
        am2zb_lc_write_stats(self, w);   /* store, dlqDropped, ... */
        zhashx_destroy(&set);
    } else if (strcmp(what, "queues") == 0) {
        s_write_queues(self, w, NULL);
    } else if (strcmp(what, "dlq") == 0) {
        s_query_dlq(self, peer, msg, w, &answered);
    } else if (strcmp(what, "repeats") == 0) {
        am2zb_repeat_query(self, msg, w);
    } else if (strcmp(what, "session-stats") == 0 || strcmp(what, "state") == 0) {
        if (!msg->session) {
            s_send_error_fmt(self, peer, AM2Z_CAT_VALIDATION, "VALIDATION_ERROR",
                             "QUERY %s needs a session", what);
            answered = true;
        } else if (what[1] == 'e') {
            s_write_queues(self, w, msg->session);
        } else {
            am2z_record_t rec;
            memset(&rec, 0, sizeof rec);
            int rc = am2z_store_get_state(self->store, msg->session, &rec);
            if (rc == AM2Z_OK) {
                am2z_bw_raw(w, rec.data, rec.size);
            } else if (rc == AM2Z_ENOTFOUND || rc == AM2Z_EINVAL) {
                s_send_error_fmt(self, peer, AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                                 "no state for session %s", msg->session);
                answered = true;
            } else {
                am2z_error_t *e = s_error_from_rc(rc, "reading state");
                s_send_error(self, peer, &e);
                answered = true;
            }
            am2z_record_clear(&rec);
        }
    } else if (strcmp(what, "sessions") == 0) {
        zhashx_t *set = s_active_sessions(self);
        zlistx_t *keys = set ? zhashx_keys(set) : NULL;
        if (keys)
            zlistx_set_comparator(keys, s_strcmp);
        if (keys)
            zlistx_sort(keys);
        am2z_bw_array(w, keys ? (uint32_t)zlistx_size(keys) : 0);
        for (const char *k = keys ? zlistx_first(keys) : NULL; k; k = zlistx_next(keys))
            am2z_bw_str(w, k);
        zlistx_destroy(&keys);
        zhashx_destroy(&set);
    } else if (strcmp(what, "session-info") == 0) {
        am2zb_lc_query_info(self, peer, msg, w, &answered);
    } else if (strcmp(what, "processors") == 0) {
        am2z_bw_array(w, (uint32_t)zhashx_size(self->procs));
        for (proc_t *p = zhashx_first(self->procs); p; p = zhashx_next(self->procs)) {
            uint64_t workers = 0, slots = 0;
            for (size_t i = 0; i < self->nworkers; i++) {
                wproc_t *wp = am2zb_worker_proc(self->workers[i], p);
                if (wp) {
                    workers++;
                    slots += wp->concurrency;
                }
            }
            am2z_bw_map(w, 11);
            am2z_bw_str(w, "name");        am2z_bw_str(w, p->name);
            am2z_bw_str(w, "description"); am2z_bw_str(w, p->description ? p->description : "");
            am2z_bw_str(w, "workers");     am2z_bw_uint(w, workers);
            am2z_bw_str(w, "slots");       am2z_bw_uint(w, slots);
            am2z_bw_str(w, "timeout");     am2z_bw_uint(w, p->timeout_ms);
            am2z_bw_str(w, "priority");    am2z_bw_int(w, p->priority);
            /* scheduling (issue 6) */
            am2z_bw_str(w, "delay");       am2z_bw_uint(w, p->delay_ms);
            am2z_bw_str(w, "rate");        am2z_bw_uint(w, p->rate_ring ? p->rate_max : 0);
            am2z_bw_str(w, "per");         am2z_bw_uint(w, p->rate_ring ? p->rate_per_ms : 0);
            am2z_bw_str(w, "cap");         am2z_bw_uint(w, p->max_active);
            am2z_bw_str(w, "leased");      am2z_bw_uint(w, p->leased);
        }
    } else if (strcmp(what, "job") == 0) {
        if (!msg->job) {
            s_send_error_fmt(self, peer, AM2Z_CAT_VALIDATION, "VALIDATION_ERROR",
                             "QUERY job needs a job id");
            answered = true;
        } else {
            am2z_bw_t *probe = w;
            s_query_job(self, peer, msg->job, probe);
            /* s_query_job sent an ERROR when it wrote nothing */
            uint8_t *tmp = NULL;
            size_t size = 0;
            if (am2z_bw_take(w, &tmp, &size) == AM2Z_OK && size > 0)
                s_send_reply(self, peer, &tmp, size);
            free(tmp);
            answered = true;
        }
    } else {
        s_send_error_fmt(self, peer, AM2Z_CAT_VALIDATION, "VALIDATION_ERROR",
                         "unknown query '%s' (stats, queues, session-stats, sessions, "
                         "session-info, processors, state, job, dlq)", what);
        answered = true;
    }
    if (!answered) {
        uint8_t *data = NULL;
        size_t size = 0;
        if (am2z_bw_take(w, &data, &size) == AM2Z_OK)
            s_send_reply(self, peer, &data, size);
        free(data);
    }
    am2z_bw_destroy(&w);
}

static void
s_on_fetch(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    job_t *job = msg->job ? am2z_idmap_lookup(self->jobs, msg->job) : NULL;
    if (job && !job->stopped) {
        uint8_t *data = NULL;
        size_t size = 0;
        if (s_map(&data, &size, 1, "status", 's',
                  job->status == JOB_WAITING ? "waiting" : "active") == AM2Z_OK)
            s_send_reply(self, peer, &data, size);
        free(data);
        am2zb_job_add_fetcher(job, peer, true);   /* FETCH: once per connection */
        return;
    }
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    int rc = msg->job ? am2z_store_get_record(self->store, AM2Z_DB_RESULTS, msg->job,
                                              strlen(msg->job), &rec)
                      : AM2Z_ENOTFOUND;
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_INVALID);
    if (rc == AM2Z_OK)
        rc = am2z_msg_decode(AM2Z_CMD_RESULT, rec.data, rec.size, rec.size + 1, &r, NULL, 0);
    am2z_record_clear(&rec);
    if (rc == AM2Z_OK)
        s_send_client(self, peer, &r);
    else if (rc == AM2Z_ENOTFOUND)
        s_send_error_fmt(self, peer, AM2Z_CAT_NOT_FOUND, "NOT_FOUND", "no job %s",
                         msg->job ? msg->job : "");
    else
        s_send_error_fmt(self, peer, AM2Z_CAT_INTEGRITY, "INTEGRITY_ERROR",
                         "result of job %s is unreadable: %s", msg->job, am2z_strerror(rc));
    am2z_msg_clear(&r);
}

static void
s_run_deferred(am2z_broker_t *self)
{
    deferred_t *d;
    while ((d = zlistx_first(self->deferred))) {
        zlistx_detach_cur(self->deferred);
        if (d->msg.cmd == AM2Z_CMD_FETCH)
            s_on_fetch(self, &d->peer, &d->msg);
        else
            s_on_query(self, &d->peer, &d->msg);
        am2z_msg_clear(&d->msg);
        free(d);
    }
}

/* ---------------------------------------------------------------------------
   Dispatch
   ------------------------------------------------------------------------ */

/*  The input state of a job, per BEHAVIOUR.md "Sessions, state and ordering".
    Sets job->input_version / expected_version. Caller owns *out. */
static int s_resolve_input(am2z_broker_t *self, job_t *job, am2z_state_t **out);

int
am2zb_resolve_input(am2z_broker_t *self, job_t *job, am2z_state_t **out)
{
    return s_resolve_input(self, job, out);
}

static int
s_resolve_input(am2z_broker_t *self, job_t *job, am2z_state_t **out)
{
    *out = NULL;
    uint64_t now = am2z_clock_wall_ms();
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    uint64_t stored_version = 0;
    bool have_stored = false;
    int rc = am2z_store_get_state(self->store, job->session_id, &rec);
    if (rc == AM2Z_OK) {
        stored_version = rec.version;
        have_stored = true;
    } else if (rc != AM2Z_ENOTFOUND) {
        return rc;
    }
    if (job->state && !job->overlay) {
        /* the submitted state replaces the stored one, whose metadata
           (version, createdAt) alone carry over: read, not built */
        uint64_t version = 1, created = now;
        if (have_stored) {
            rc = am2z_state_meta_read(rec.data, rec.size, &version, &created);
            am2z_record_clear(&rec);
            if (rc != AM2Z_OK)
                return AM2Z_EINTEGRITY;
        } else if (am2z_state_meta_read(job->state, job->state_size, &version, &created)
                   != AM2Z_OK) {
            /* only without a stored state does the submitted one's metadata count */
            version = 1;
            created = now;
        }
        rc = am2z_state_from_map_meta(job->session_id, job->state, job->state_size, version,
                                      created, now, out);
    } else {
        am2z_state_t *stored = NULL;
        if (have_stored) {
            rc = am2z_state_decode(rec.data, rec.size, &stored);
            am2z_record_clear(&rec);
            if (rc != AM2Z_OK)
                return AM2Z_EINTEGRITY;
        }
        if (job->state) {
            /* a batch payload in this session: set on the state it finds */
            am2z_state_t *base = stored;
            stored = NULL;
            rc = base ? AM2Z_OK : am2z_state_new(job->session_id, now, &base);
            if (rc == AM2Z_OK)
                rc = am2z_state_overlay(base, job->state, job->state_size, true,
                                        self->cfg.common.max_state_size, out);
            am2z_state_destroy(&base);
        } else if (stored) {
            *out = stored;
            rc = AM2Z_OK;
        } else {
            rc = am2z_state_new(job->session_id, now, out);
        }
    }
    if (rc != AM2Z_OK)
        return rc;
    job->input_version = am2z_state_version(*out);
    job->expected_version = stored_version;
    return AM2Z_OK;
}

/*  The dirty array keeps up to this many slots between turns (a lease
    burst past it gets an array of its own, freed after its turn). */
#define S_DIRTY_KEEP 4096

/*  Notes that job id's record needs its attempt count rewritten in this
    turn's batch (s_stage_dirty). Without memory the rewrite is skipped:
    a crash would then run the job again as the same attempt, as one
    before the next commit does (docs/RELIABILITY.md). */
static void
s_dirty_add(am2z_broker_t *self, const char *id)
{
    if (self->dirty_n == self->dirty_cap) {
        size_t cap = self->dirty_cap ? self->dirty_cap * 2 : 256;
        void *v = realloc(self->dirty, cap * sizeof *self->dirty);
        if (!v)
            return;
        self->dirty = v;
        self->dirty_cap = cap;
    }
    size_t n = strnlen(id, AM2Z_ID_LEN);
    memcpy(self->dirty[self->dirty_n], id, n);
    self->dirty[self->dirty_n++][n] = '\0';
}

static void
s_lease(am2z_broker_t *self, worker_t *worker, session_t *session, job_t *job)
{
    am2zb_lane_remove(session, job);
    session->active = job;
    am2z_state_t *input = NULL;
    int rc = s_resolve_input(self, job, &input);
    if (rc != AM2Z_OK) {
        /* fail it in the next turn's batch; the session stays blocked */
        job->status = JOB_FAILING;
        failure_t *f = calloc(1, sizeof *f);
        if (f) {
            memcpy(f->id, job->id, sizeof f->id);
            f->error = s_error_from_rc(rc, "reading session state");
            zlistx_add_end(self->failures, f);
        }
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot resolve input state",
                 AM2Z_KS("job", job->id), AM2Z_KS("session", job->session_id),
                 AM2Z_KS("error", am2z_strerror(rc)));
        return;
    }
    wproc_t *wp = am2zb_worker_proc(worker, job->proc);
    wp->credit--;
    am2zb_lease_begin(self, job, worker, am2z_clock_wall_ms());

    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_JOB);
    msg.job = job->id;
    msg.attempt = job->attempt;
    msg.processor = job->proc->name;
    msg.session = job->session_id;
    msg.state = (uint8_t *)am2z_state_data(input);
    msg.state_size = am2z_state_size(input);
    msg.timeout_ms = job->timeout_ms;
    msg.call_depth = job->depth;
    msg.priority = job->prio;
    am2zb_send_worker(self, worker, &msg);
    am2z_state_destroy(&input);        /* msg only borrowed */

    uint8_t *data = NULL;
    size_t size = 0;
    if (!s_event_wanted(self, job))
        ++job->event_seq;
    else if (s_map(&data, &size, 2, "worker", 's', worker->id,
                   "dispatched", 'u', (uint64_t)job->dispatched_ms) == AM2Z_OK)
        am2zb_job_event(self, job, "processor:active", data, size);
    free(data);
    s_dirty_add(self, job->id);
}

/*  Leases what may go now: per processor, sessions of the highest
    priority bucket first (round-robin inside it), while the rate window,
    the cap and some worker's credit allow. Sessions whose delayed head
    became due join their rings first, so a due job goes out this turn. */
static void
s_dispatch(am2z_broker_t *self, bool early)
{
    if (!early)
        am2zb_flow_dispatch(self);  /* workflow steps first: they hold sessions */
    if (!self->nworkers || self->draining)
        return;
    uint64_t now = am2z_clock_wall_ms();
    am2zb_delayed_due(self, now, NULL);
    for (size_t i = 0; i < self->proc_n; i++) {
        proc_t *proc = self->proc_v[i];
        session_t *session;
        while ((session = am2zb_ring_first(proc)) != NULL) {
            if (!am2zb_sched_admit(proc, now, false))
                break;             /* rate window full or cap reached */
            worker_t *worker = am2zb_pick_worker(self, proc);
            if (!worker)
                break;
            job_t *job = zlistx_first(session->lane);
            if (early && job && am2z_batch_state_pending(self->batch, job->session_id))
                break;             /* its state changed this turn (s_finish puts
                                      such sessions at the ring's end): after
                                      the commit */
            am2zb_session_unready(self, session);
            if (session->active || !job)
                continue;
            if (job->proc != proc || job->not_before_ms > now || !job->accepted) {
                am2zb_session_kick(self, session, now);
                if (session->ring_proc == proc)
                    break;         /* not dispatchable now: do not spin */
                continue;
            }
            s_lease(self, worker, session, job);
            if (early && job->status == JOB_ACTIVE)
                self->early_leases++;
        }
    }
}

/* ---------------------------------------------------------------------------
   Loop
   ------------------------------------------------------------------------ */

static void
s_str_free(void **item)
{
    free(*item);
    *item = NULL;
}

/*  Rewrites the records of jobs leased in earlier turns (attempt count),
    in this turn's batch. Runs after the turn's messages were handled, so a
    job whose DONE came in the same turn is gone from self->jobs and its
    record is only deleted, not first rewritten (same batch, same commit:
    what reaches the disk is unchanged). */
static void
s_stage_dirty(am2z_broker_t *self)
{
    for (size_t i = 0; i < self->dirty_n; i++) {
        job_t *job = am2z_idmap_lookup(self->jobs, self->dirty[i]);
        if (job && job->accepted && !job->stopped)
            s_put_job_record(self, job);
    }
    self->dirty_n = 0;
    if (self->dirty_cap > S_DIRTY_KEEP) {
        /* a burst's array is not kept for the turns after it */
        free(self->dirty);
        self->dirty = NULL;
        self->dirty_cap = 0;
    }
}

/*  Stages what earlier turns left for this batch. */
static void
s_stage_leftovers(am2z_broker_t *self)
{
    s_expire_leases(self);
    failure_t *f;
    while ((f = zlistx_first(self->failures))) {
        zlistx_detach_cur(self->failures);
        job_t *job = am2z_idmap_lookup(self->jobs, f->id);
        if (job && job->status == JOB_FAILING && job->session)
            s_finish(self, job, false, NULL, 0, &f->error, 0, 0, NULL);
        am2z_error_destroy(&f->error);
        free(f);
    }
    char *id;
    while ((id = zlistx_first(self->cleanup))) {
        zlistx_detach_cur(self->cleanup);
        am2z_store_batch_t *batch = s_batch(self);
        if (batch)
            am2z_batch_del(batch, AM2Z_DB_JOBS, id, strlen(id));
        free(id);
    }
    am2zb_flow_tick(self);
    am2zb_repeat_tick(self);      /* idempotency + repeat + progress (issue 6) */
    am2zb_lc_tick(self);          /* session expiry, retention */
}

static void
s_timers(am2z_broker_t *self, uint64_t *next_ms)
{
    uint64_t now_us = am2z_clock_mono_us();
    uint64_t hb_us = self->cfg.heartbeat_ms * 1000;
    if (now_us >= self->next_heartbeat_us) {
        am2z_msg_t hb;
        am2z_msg_init(&hb, AM2Z_CMD_HEARTBEAT);
        for (size_t i = 0; i < self->nworkers; i++)
            am2zb_send_worker(self, self->workers[i], &hb);
        am2z_msg_clear(&hb);
        self->next_heartbeat_us = now_us + hb_us;
    }
    uint64_t dead_us = hb_us * self->cfg.liveness;
    for (size_t i = self->nworkers; i-- > 0;) {
        worker_t *w = self->workers[i];
        if (now_us - w->last_seen_us > dead_us)
            am2zb_worker_forget(self, w, "missed heartbeats");
    }
    uint64_t wall = am2z_clock_wall_ms();
    uint64_t due = UINT64_MAX;
    am2zb_delayed_due(self, wall, &due);
    uint64_t next = (self->next_heartbeat_us - now_us) / 1000 + 1;
    if (due != UINT64_MAX)
        next = due > wall ? (due - wall < next ? due - wall : next) : 0;
    uint64_t flush_next = UINT64_MAX;
    am2z_store_flush_due(self->store, am2z_store_now_ms(), &flush_next);
    if (flush_next < next)
        next = flush_next;
    for (job_t *job = zlistx_first(self->leases); job; job = zlistx_next(self->leases)) {
        uint64_t left = job->deadline_us > now_us ? (job->deadline_us - now_us + 999) / 1000 : 0;
        if (left < next)
            next = left;
    }
    am2zb_repeat_timer(self, wall, &next);  /* idempotency + repeat + progress (issue 6) */
    /* rate limits: wake when a full window opens for a processor that has
       jobs waiting (not before: no spinning while it is full) */
    for (size_t i = 0; i < self->proc_n; i++) {
        proc_t *p = self->proc_v[i];
        if (!p->rate_ring || p->queued <= p->leased)
            continue;
        uint64_t open = am2zb_sched_rate_next(p);
        if (open > wall && open - wall < next)
            next = open - wall;
    }
    uint64_t lc_next = am2zb_lc_next_ms(self);
    if (lc_next < next)
        next = lc_next;
    *next_ms = next;
}

/*  Handles one pipe command. Returns false on $TERM. */
static bool
s_on_pipe(am2z_broker_t *self, zsock_t *pipe)
{
    char *cmd = zstr_recv(pipe);
    if (!cmd)
        return false;              /* interrupted */
    bool go_on = true;
    if (streq(cmd, "$TERM"))
        go_on = false;
    else if (streq(cmd, "ENDPOINTS"))
        zstr_sendx(pipe, self->endpoint[0], self->endpoint[1], self->endpoint[2], NULL);
    else
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "unknown pipe command",
                 AM2Z_KS("cmd", cmd));
    zstr_free(&cmd);
    return go_on;
}

/*  Waits for input, as zmq_poll. Poll spin (cfg.poll_spin_us): when the
    last wait for input was shorter than the spin (messages are coming
    close together), poll without sleeping for up to that long first, and
    sleep in zmq_poll only if nothing came. A thread that sleeps lets its
    CPU go idle, and waking it costs the sender an interprocessor wake-up
    and the sleeper an idle exit — on a VM a trip through the hypervisor —
    on every message of a request-reply exchange. An idle broker, or one
    whose input is further apart than the spin, never spins (its last
    wait was long), so the CPU spent is bounded by the traffic. Like
    Redis's I/O threads, which spin before they sleep on their mutex. */
static int
s_poll(am2z_broker_t *self, zmq_pollitem_t *items, int nitems, uint64_t timeout_ms)
{
    uint64_t spin = self->cfg.poll_spin_us;
    if (timeout_ms == 0)
        return zmq_poll(items, nitems, 0);
    uint64_t t0 = am2z_clock_mono_us();
    int rc = 0;
    if (spin && self->last_wait_us < spin) {
        if (spin > timeout_ms * 1000)
            spin = timeout_ms * 1000;
        uint64_t t;
        do {
            rc = zmq_poll(items, nitems, 0);
            t = am2z_clock_mono_us();
        } while (rc == 0 && t - t0 < spin);
        self->spin[0]++;
        self->spin[1] += rc != 0;
        self->spin[2] += t - t0;
    }
    if (rc == 0)
        rc = zmq_poll(items, nitems, (long)timeout_ms);
    self->last_wait_us = am2z_clock_mono_us() - t0;
    return rc;
}

static void
s_turn(am2z_broker_t *self, zsock_t *pipe, uint64_t timeout_ms)
{
    zmq_pollitem_t items[5] = {
        { self->fe, 0, ZMQ_POLLIN, 0 },
        { self->be, 0, ZMQ_POLLIN, 0 },
    };
    int nitems = 2, pub_i = -1, store_i = -1, pipe_i = -1;
    if (self->pub) {
        pub_i = nitems;
        items[nitems++] = (zmq_pollitem_t){ self->pub, 0, ZMQ_POLLIN, 0 };
    }
    if (self->store_fd >= 0) {
        store_i = nitems;
        items[nitems++] = (zmq_pollitem_t){ NULL, self->store_fd, ZMQ_POLLIN, 0 };
    }
    if (pipe) {
        pipe_i = nitems;
        items[nitems++] = (zmq_pollitem_t){ zsock_resolve(pipe), 0, ZMQ_POLLIN, 0 };
    }
    if (timeout_ms > S_POLL_MAX_MS)
        timeout_ms = S_POLL_MAX_MS;
    int rc = s_poll(self, items, nitems, timeout_ms);
    if (rc < 0 && zmq_errno() == ETERM) {
        self->stopping = true;
        return;
    }
    if (pub_i >= 0 && (items[pub_i].revents & ZMQ_POLLIN)) {
        s_pub_drain(self);        /* subscriptions changed */
        self->subs_checked_us = am2z_clock_mono_us();
    }
    if (store_i >= 0 && (items[store_i].revents & ZMQ_POLLIN))
        s_store_event(self);      /* the writer made commits durable */
    if (pipe_i >= 0 && (items[pipe_i].revents & ZMQ_POLLIN) && !s_on_pipe(self, pipe))
        self->stopping = true;
    if (self->store_failed)
        return;

    self->batch = NULL;
    self->batch_rc = AM2Z_OK;
    s_stage_leftovers(self);
    /* Alternate between the sockets the poll found readable; one that
       comes up empty is not read again this turn (what arrives meanwhile
       makes the next poll return at once). An empty DONTWAIT read costs
       libzmq a poll(2) and a getpid(2) on the socket's mailbox: reading
       both sockets until both were empty cost about one of each per
       message. */
    bool fe_open = rc < 0 || (items[0].revents & ZMQ_POLLIN);
    bool be_open = rc < 0 || (items[1].revents & ZMQ_POLLIN);
    size_t n = 0;                 /* commands: a BATCH counts its pairs */
    while (n < S_DRAIN_MAX && (fe_open || be_open)) {
        if (fe_open) {
            size_t k = s_recv_one(self, self->fe, true);
            n += k;
            fe_open = k > 0;
        }
        if (be_open) {
            size_t k = s_recv_one(self, self->be, false);
            n += k;
            be_open = k > 0;
        }
    }
    self->turn_msgs = n;
    s_stage_dirty(self);
    bool durable = true;
    if (self->batch && self->hold_sends) {
        /* Early dispatch (sync): the slots this turn's DONEs freed take
           jobs whose input is already committed before the commit's
           fdatasync, so workers run them while the disk flushes. */
        s_dispatch(self, true);
        s_co_flush_sock(self, self->be);
    }
    if (self->batch) {
        /* with the store's writer thread this hands the turn's writes over
           and returns at once; the outbox holds the answers until the
           writer reports them durable (s_store_event) */
        int crc = am2z_store_commit(&self->batch);
        if (crc != AM2Z_OK) {
            durable = false;
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "store commit failed",
                     AM2Z_KS("error", am2z_strerror(crc)),
                     AM2Z_KU("effects", self->neffects));
        }
    } else if (self->batch_rc != AM2Z_OK) {
        durable = false;
    }
    self->batch = NULL;
    if (self->out_n) {
        s_outbox_release(self, false);   /* what this commit's data flush made durable */
        if (!self->out_n)
            self->held_turn = false;     /* what this turn holds has not waited yet */
    }
    s_apply_effects(self, durable);
    am2zb_repeat_after_commit(self, durable);   /* idempotency + repeat + progress (issue 6) */
    am2zb_lc_committed(self, durable);   /* STOP replies, session:cleanup */
    s_run_deferred(self);
    s_dispatch(self, false);
    if (self->out_n)
        s_outbox_settle(self);
}

/*  Leases that still run (stopped ones included: their workers are busy). */
static size_t
s_running(am2z_broker_t *self)
{
    size_t n = 0;
    for (job_t *job = am2z_idmap_first(self->jobs); job; job = am2z_idmap_next(self->jobs))
        if (job->status == JOB_ACTIVE)
            n++;
    return n;
}

/*  The grace period is over: cancel what still runs. Those jobs keep their
    records (with the attempt counted) and run again after a restart. */
static void
s_cancel_running(am2z_broker_t *self)
{
    for (job_t *job = am2z_idmap_first(self->jobs); job; job = am2z_idmap_next(self->jobs)) {
        if (job->status != JOB_ACTIVE || !job->worker)
            continue;
        am2z_msg_t cancel;
        am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
        cancel.job = job->id;
        cancel.attempt = job->attempt;
        am2zb_send_worker(self, job->worker, &cancel);
        cancel.job = NULL;
        am2z_msg_clear(&cancel);
    }
}

/*  The stop flag starts a drain: no new work, running leases may finish
    within cfg.grace_ms while the loop keeps handling their DONEs. */
static void
s_drain_step(am2z_broker_t *self)
{
    uint64_t now = am2z_clock_mono_us();
    if (!self->draining) {
        self->draining = true;
        self->drain_deadline_us = now + self->cfg.grace_ms * 1000;
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "stopping: draining running jobs",
                 AM2Z_KU("running", s_running(self)), AM2Z_KU("grace_ms", self->cfg.grace_ms),
                 AM2Z_KU("pending", am2z_idmap_size(self->jobs)));
    }
    size_t running = s_running(self);
    if (running == 0 && !zlistx_size(self->failures) && !self->dirty_n
        && !zlistx_size(self->cleanup)) {
        self->stopping = true;
    } else if (now >= self->drain_deadline_us) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                 "grace period over: running jobs cancelled, they resume after a restart",
                 AM2Z_KU("running", running));
        s_cancel_running(self);
        self->stopping = true;
    }
}

static int
s_loop(am2z_broker_t *self, volatile int *stop_flag, zsock_t *pipe)
{
    uint64_t next_ms = 0;
    while (!self->stopping) {
        s_turn(self, pipe, next_ms);
        s_timers(self, &next_ms);
        /* failures and composite work have someone waiting: turn again at
           once; record rewrites (dirty, cleanup) ride on a later turn's
           commit, within 10 ms */
        uint64_t flow_ms = am2zb_flow_next_ms(self);
        if (flow_ms < next_ms)
            next_ms = flow_ms;
        if (zlistx_size(self->failures))
            next_ms = 0;
        else if (self->dirty_n || zlistx_size(self->cleanup))
            next_ms = next_ms > 10 ? 10 : next_ms;
        if (stop_flag && *stop_flag && !self->stopping) {
            s_drain_step(self);
            next_ms = next_ms > 20 ? 20 : next_ms;
        }
        if (self->out_n)
            next_ms = next_ms > (self->held_turn ? 1 : 10) ? (self->held_turn ? 1 : 10) : next_ms;
        s_co_flush(self);            /* batched answers go before the next poll */
    }
    if (self->store_failed) {
        /* what the outbox holds is not on disk: it is never sent */
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                 "stopped: the store's writer failed; a restart recovers every commit "
                 "that was answered", AM2Z_KS("error", am2z_strerror(self->store_failed)),
                 AM2Z_KU("unanswered", self->out_n));
        s_co_flush(self);
        return self->store_failed;
    }
    am2zb_lc_shutdown(self);         /* stops still waiting: answer now */
    if (am2z_store_flush(self->store) == AM2Z_OK)
        s_outbox_release(self, true);
    s_co_flush(self);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "stopped");
    return AM2Z_OK;
}

int
am2z_broker_run(am2z_broker_t *self, volatile int *stop_flag)
{
    if (!self)
        return AM2Z_EINVAL;
    return s_loop(self, stop_flag, NULL);
}

/* ---------------------------------------------------------------------------
   Lifecycle
   ------------------------------------------------------------------------ */

static int
s_bind(am2z_broker_t *self, int type, const char *endpoint, zsock_t **out, int which,
       char *err, size_t err_size)
{
    zsock_t *sock = zsock_new(type);
    if (!sock) {
        snprintf(err, err_size, "cannot create socket for %s", endpoint);
        return AM2Z_ENETWORK;
    }
    /*  libzmq drops the connection of a peer whose message is larger than
        this, without a word to either side (and what the broker owed that
        connection is lost with it). So the transport takes bodies up to
        twice max-frame-size, and the codec refuses those above the limit
        with an ERROR that names the size (am2z_frames_decode); only a body
        beyond twice the limit is cut off, which bounds what one message can
        make the broker allocate. */
    uint64_t max = 2 * self->cfg.common.max_frame_size + 1024;
    zsock_set_maxmsgsize(sock, max > INT32_MAX ? INT32_MAX : (int)max);
    zsock_set_linger(sock, 0);
    zsock_set_sndhwm(sock, S_HWM);
    zsock_set_rcvhwm(sock, S_HWM);
    if (type == ZMQ_ROUTER)
        zsock_set_router_mandatory(sock, 0);
    if (zsock_bind(sock, "%s", endpoint) < 0) {
        snprintf(err, err_size, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&sock);
        return AM2Z_ENETWORK;
    }
    const char *bound = zsock_endpoint(sock);
    snprintf(self->endpoint[which], AM2Z_ENDPOINT_MAX, "%s", bound ? bound : endpoint);
    *out = sock;
    return AM2Z_OK;
}

typedef struct {
    zlistx_t *keys;
} reload_t;

static int
s_collect_key(const void *key, size_t key_size, const void *value, size_t value_size,
              void *arg)
{
    (void)value;
    (void)value_size;
    reload_t *r = arg;
    if (key_size == AM2Z_ID_LEN && am2z_job_id_valid(key, key_size)) {
        char *id = strndup(key, key_size);
        if (id)
            zlistx_add_end(r->keys, id);
    }
    return 0;
}

static int
s_seq_cmp(const void *a, const void *b)
{
    const job_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/*  Sessions by the submission order of their lane heads (empty last). */
static int
s_head_seq_cmp(const void *a, const void *b)
{
    const job_t *x = zlistx_first(((const session_t *)a)->lane);
    const job_t *y = zlistx_first(((const session_t *)b)->lane);
    uint64_t sx = x ? x->seq : UINT64_MAX, sy = y ? y->seq : UINT64_MAX;
    return sx < sy ? -1 : sx > sy ? 1 : 0;
}

/*  Reloads pending jobs into their lanes in submission order (job->seq:
    ids are random past their millisecond prefix). A job that was leased
    when the broker stopped keeps its attempt count and is leased again. */
static int
s_reload(am2z_broker_t *self)
{
    reload_t r = { zlistx_new() };
    zlistx_t *loaded_jobs = zlistx_new();
    if (!r.keys || !loaded_jobs) {
        zlistx_destroy(&r.keys);
        zlistx_destroy(&loaded_jobs);
        return AM2Z_ENOMEM;
    }
    zlistx_set_comparator(loaded_jobs, s_seq_cmp);
    zlistx_set_destructor(r.keys, s_str_free);
    int rc = am2z_store_each(self->store, AM2Z_DB_JOBS, NULL, 0, s_collect_key, &r);
    size_t loaded = 0, bad = 0;
    uint64_t now = am2z_clock_wall_ms();
    for (char *id = zlistx_first(r.keys); id && rc == AM2Z_OK; id = zlistx_next(r.keys)) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        am2z_jobrec_t jr;
        memset(&jr, 0, sizeof jr);
        int grc = am2z_store_get_record(self->store, AM2Z_DB_JOBS, id, strlen(id), &rec);
        if (grc == AM2Z_OK)
            grc = am2z_jobrec_decode(rec.data, rec.size, &jr);
        am2z_record_clear(&rec);
        if (grc != AM2Z_OK) {
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "unreadable job record skipped",
                     AM2Z_KS("job", id), AM2Z_KS("error", am2z_strerror(grc)));
            bad++;
            continue;
        }
        job_t *job = am2zb_job_new();
        proc_t *proc = am2zb_proc_get(self, jr.proc, true);
        if (!job || !proc) {
            am2zb_job_destroy(&job);
            am2z_jobrec_clear(&jr);
            rc = AM2Z_ENOMEM;
            break;
        }
        snprintf(job->id, sizeof job->id, "%s", id);
        job->proc = proc;
        job->session_id = jr.session;
        jr.session = NULL;
        job->state = jr.state;
        job->state_size = jr.state_size;
        jr.state = NULL;
        job->prio = jr.prio;
        job->timeout_ms = jr.timeout_ms;
        job->delay_ms = jr.delay_ms;
        job->depth = jr.depth;
        job->created_ms = jr.created_ms;
        job->not_before_ms = jr.created_ms + jr.delay_ms;
        job->seq = jr.seq;
        job->attempt = jr.attempt;
        job->overlay = jr.overlay;
        job->accepted = true;
        if (jr.seq > self->seq)
            self->seq = jr.seq;
        am2z_jobrec_clear(&jr);
        zlistx_add_end(loaded_jobs, job);
        loaded++;
    }
    zlistx_sort(loaded_jobs);
    job_t *job;
    while ((job = zlistx_first(loaded_jobs))) {
        zlistx_detach_cur(loaded_jobs);
        session_t *session = rc == AM2Z_OK ? am2zb_session_get(self, job->session_id, true)
                                           : NULL;
        if (!session) {
            am2zb_job_destroy(&job);
            rc = AM2Z_ENOMEM;
            continue;
        }
        am2zb_job_track(self, job);
        am2zb_lane_push(session, job, false);
    }
    zlistx_destroy(&loaded_jobs);
    /* rings in the order the sessions' head jobs were submitted: the same
       round-robin order as before the restart, as near as it can be told */
    zlistx_t *order = zlistx_new();
    if (order) {
        zlistx_set_comparator(order, s_head_seq_cmp);
        for (session_t *s = am2z_idmap_first(self->sessions); s; s = am2z_idmap_next(self->sessions))
            zlistx_add_end(order, s);
        zlistx_sort(order);
        for (session_t *s = zlistx_first(order); s; s = zlistx_next(order))
            am2zb_session_kick(self, s, now);
        zlistx_destroy(&order);
    } else {
        for (session_t *s = am2z_idmap_first(self->sessions); s; s = am2z_idmap_next(self->sessions))
            am2zb_session_kick(self, s, now);
    }
    zlistx_destroy(&r.keys);
    if (loaded || bad)
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "pending jobs reloaded",
                 AM2Z_KU("jobs", loaded), AM2Z_KU("unreadable", bad));
    return rc;
}

static void
s_session_free(void **item)
{
    session_t *s = *item;
    if (!s)
        return;
    zlistx_destroy(&s->lane);
    zhashx_destroy(&s->stats);
    free(s);                      /* the id with it */
    *item = NULL;
}

static void
s_proc_free(void **item)
{
    proc_t *p = *item;
    if (!p)
        return;
    am2zb_proc_sched_free(p);
    free(p->name);
    free(p->description);
    am2z_comp_desc_clear(p->comp);
    free(p->comp);
    free(p);
    *item = NULL;
}

static void
s_deferred_free(void **item)
{
    deferred_t *d = *item;
    if (d) {
        am2z_msg_clear(&d->msg);
        free(d);
    }
    *item = NULL;
}

static void
s_failure_free(void **item)
{
    failure_t *f = *item;
    if (f) {
        am2z_error_destroy(&f->error);
        free(f);
    }
    *item = NULL;
}

int
am2z_broker_new(const am2z_broker_config_t *cfg, am2z_broker_t **out,
                char *err, size_t err_size)
{
    char scratch[256];
    if (!err || !err_size) {
        err = scratch;
        err_size = sizeof scratch;
    }
    err[0] = '\0';
    if (!cfg || !out) {
        snprintf(err, err_size, "no configuration");
        return AM2Z_EINVAL;
    }
    *out = NULL;
    if (!cfg->frontend[0] || !cfg->backend[0] || !cfg->heartbeat_ms || !cfg->liveness) {
        snprintf(err, err_size, "frontend, backend, heartbeat and liveness must be set");
        return AM2Z_ECONFIG;
    }
    am2z_broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, err_size, "out of memory");
        return AM2Z_ENOMEM;
    }
    self->cfg = *cfg;
    self->store_fd = -1;
    self->started_ms = am2z_clock_wall_ms();
    self->started_us = am2z_clock_mono_us();
    self->log = am2z_log_new((am2z_log_level_t)cfg->common.log_level,
                             (am2z_log_format_t)cfg->common.log_format, NULL);
    if (self->cfg.poll_spin_us && am2z_sys_cpus_allowed() == 1) {
        /* the loop would spin on the CPU that ZeroMQ's I/O thread needs
           to deliver what it waits for */
        self->cfg.poll_spin_us = 0;
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "poll-spin off: the broker has one CPU");
    }
    int rc = AM2Z_ENOMEM;
    self->jobs = am2z_idmap_new(NULL);         /* a finished job moves to its effect */
    self->sessions = am2z_idmap_new(s_session_free);
    self->procs = zhashx_new();
    self->workers_by_key = zhashx_new();
    self->delayed = zlistx_new();
    self->deferred = zlistx_new();
    self->failures = zlistx_new();
    self->cleanup = zlistx_new();
    self->leases = zlistx_new();
    if (!self->leases || !self->jobs || !self->sessions || !self->procs || !self->workers_by_key
        || !self->delayed || !self->deferred || !self->failures
        || !self->cleanup) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    /* The keys of jobs, sessions and procs are their own ids and names
       (borrowed: an entry leaves its table before its value is freed, and
       a lookup then compares the key where the value lives instead of in a
       copy of it). */
    zhashx_set_destructor(self->procs, s_proc_free);
    zhashx_set_key_duplicator(self->procs, NULL);
    zhashx_set_key_destructor(self->procs, NULL);
    zhashx_set_key_hasher(self->procs, am2z_hash_str);   /* 8 bytes a step */
    zlistx_set_destructor(self->deferred, s_deferred_free);
    zlistx_set_destructor(self->failures, s_failure_free);
    zlistx_set_destructor(self->cleanup, s_str_free);

    char idbuf[AM2Z_ID_LEN + 1];
    rc = am2z_id_new(idbuf);
    if (rc != AM2Z_OK) {
        snprintf(err, err_size, "cannot read random bytes for job ids");
        goto fail;
    }

    am2z_config_t scfg = cfg->common;
    scfg.exclusive = true;        /* one broker per data dir (am2z_store.c) */
    rc = am2z_store_open(&scfg, &self->store, err, err_size);
    if (rc != AM2Z_OK)
        goto fail;
    rc = am2zb_flow_new(self);
    if (rc != AM2Z_OK) {
        snprintf(err, err_size, "cannot load composites: %s", am2z_strerror(rc));
        goto fail;
    }
    rc = s_reload(self);
    if (rc != AM2Z_OK) {
        snprintf(err, err_size, "cannot reload pending jobs: %s", am2z_strerror(rc));
        goto fail;
    }
    rc = am2zb_repeat_new(self);  /* idempotency + repeat + progress (issue 6) */
    if (rc != AM2Z_OK) {
        snprintf(err, err_size, "cannot load repeatable jobs: %s", am2z_strerror(rc));
        goto fail;
    }
    rc = am2zb_lc_new(self);
    if (rc != AM2Z_OK) {
        snprintf(err, err_size, "cannot load sessions and retention index: %s",
                 am2z_strerror(rc));
        goto fail;
    }
    rc = s_bind(self, ZMQ_ROUTER, cfg->frontend, &self->frontend, 0, err, err_size);
    if (rc == AM2Z_OK)
        rc = s_bind(self, ZMQ_ROUTER, cfg->backend, &self->backend, 1, err, err_size);
    if (rc == AM2Z_OK && cfg->events[0])
        rc = s_bind(self, ZMQ_XPUB, cfg->events, &self->events, 2, err, err_size);
    if (rc != AM2Z_OK)
        goto fail;
    if (cfg->common.durability == AM2Z_DURABILITY_SYNC) {
        /* one fsync per commit; answers wait for durability (Outbox) */
        rc = cfg->store_writer ? am2z_store_pipeline(self->store)
                               : am2z_store_defer_meta(self->store);
        if (rc != AM2Z_OK) {
            snprintf(err, err_size, "cannot %s: %s",
                     cfg->store_writer ? "start the store's writer thread"
                                       : "defer meta flushes", am2z_strerror(rc));
            goto fail;
        }
        self->hold_sends = true;
        self->store_fd = am2z_store_event_fd(self->store);
    }
    self->fe = zsock_resolve(self->frontend);
    self->be = zsock_resolve(self->backend);
    self->pub = self->events ? zsock_resolve(self->events) : NULL;
    self->next_heartbeat_us = am2z_clock_mono_us() + cfg->heartbeat_ms * 1000;
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "started",
             AM2Z_KS("frontend", self->endpoint[0]), AM2Z_KS("backend", self->endpoint[1]),
             AM2Z_KS("events", self->endpoint[2]), AM2Z_KS("data_dir", cfg->common.data_dir),
             AM2Z_KU("pending", am2z_idmap_size(self->jobs)));
    *out = self;
    return AM2Z_OK;
fail:
    AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot start", AM2Z_KS("reason", err));
    am2z_broker_destroy(&self);
    return rc;
}

void
am2z_broker_destroy(am2z_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_broker_t *self = *self_p;
    am2z_store_abort(&self->batch);
    zsock_destroy(&self->frontend);
    zsock_destroy(&self->backend);
    zsock_destroy(&self->events);
    if (self->store)
        am2z_store_flush(self->store);
    s_outbox_free(self);
    s_co_free(self);
    am2z_store_destroy(&self->store);
    while (self->nworkers)
        am2zb_worker_forget(self, self->workers[self->nworkers - 1], "broker stopping");
    free(self->workers);
    while (self->effects) {
        void *item = self->effects;
        self->effects = self->effects->next;
        s_effect_free(&item);
    }
    zlistx_destroy(&self->deferred);
    zlistx_destroy(&self->failures);
    free(self->dirty);
    zlistx_destroy(&self->cleanup);
    /* rings and lanes hold borrowed pointers: free sessions and procs after
       jobs, each container without walking the others */
    zlistx_destroy(&self->delayed);
    am2zb_flow_destroy(self);        /* runs only: jobs are freed below */
    am2zb_repeat_destroy(self);      /* idempotency + repeat + progress (issue 6) */
    am2zb_lc_destroy(self);
    if (self->jobs) {
        for (job_t *job = am2z_idmap_first(self->jobs); job; job = am2z_idmap_next(self->jobs))
            am2zb_job_destroy(&job);
    }
    am2z_idmap_destroy(&self->jobs);
    zlistx_destroy(&self->leases);   /* after the jobs: they unlink themselves */
    am2z_idmap_destroy(&self->sessions);
    zhashx_destroy(&self->procs);
    free(self->proc_v);
    zhashx_destroy(&self->workers_by_key);
    am2z_log_destroy(&self->log);
    free(self);
    *self_p = NULL;
}

const char *
am2z_broker_endpoint(const am2z_broker_t *self, int which)
{
    if (!self || which < 0 || which > 2)
        return NULL;
    return self->endpoint[which];
}

void
am2z_broker_actor(zsock_t *pipe, void *args)
{
    am2z_broker_t *self = NULL;
    char err[256] = "";
    if (am2z_broker_new(args, &self, err, sizeof err) != AM2Z_OK) {
        zsock_signal(pipe, (byte)-1);
        /* zactor_new swallows the status: tell whoever asks why, until $TERM */
        char *cmd;
        while ((cmd = zstr_recv(pipe)) != NULL) {
            bool term = streq(cmd, "$TERM");
            free(cmd);
            if (term)
                break;
            zstr_sendx(pipe, "ERROR", err[0] ? err : "broker failed to start", NULL);
        }
        return;
    }
    zsock_signal(pipe, 0);
    s_loop(self, NULL, pipe);
    am2z_broker_destroy(&self);
    /* free this thread's OpenSSL state (SHA-256 of every envelope) now,
       not in a TLS destructor that races the process exit */
    OPENSSL_thread_stop();
}

/* ---------------------------------------------------------------------------
   idempotency + repeat + progress (issue 6): sending for am2z_repeat.c
   (am2zb_send_error and am2zb_resource_error are defined above)
   ------------------------------------------------------------------------ */

void
am2zb_send_client(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    s_send_client(self, peer, msg);
}

