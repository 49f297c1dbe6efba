/*  am2z_worker.c — registration, and the worker's main thread.

    The main thread (am2z_worker_run, or the zactor of am2z_worker_start)
    owns the DEALER to the broker and the slots (credit, leases,
    cancellation); actor threads, started on demand per processor, run the
    jobs (am2z_pool.c). It never runs processor code and never decodes a
    state, so heartbeats and cancellations are served however long a
    processor takes.

    Loop: poll the broker socket, the actors' mailbox (an eventfd, see
    am2z_worker_priv.h) and (background mode) the control pipe,
    with a timeout bounded by the next heartbeat; then read each readable
    socket until it is empty (at most S_READ_MAX messages a turn).
      JOB        -> an idle slot of that processor: the decoded message
                    to that processor's lane; no idle slot (the broker
                    broke the credit rule) -> DONE failed, resource error
      CANCEL     -> the slot's atomic cancellation flag
      DISCONNECT -> READY again
      actor EVENT / DONE -> forwarded as they come (one actor's messages
                    keep their order, so a job's events precede its DONE);
                    DONE frees the slot
    Broker silent for liveness x heartbeat -> new socket, READY again; while
    it stays silent, again after an exponential, jittered backoff
    (S_BACKOFF_MIN_MS doubling to S_BACKOFF_MAX_MS, never less than one
    heartbeat). Hearing the broker resets the backoff.

    Registrations: every READY after the first starts a new registration
    epoch. The broker that receives it (restarted, or one that had counted
    us dead) holds none of our earlier leases any more: it re-dispatches
    those jobs itself. So jobs still running from an older epoch are
    cancelled and their outcomes dropped. The broker grants full credit to
    the new registration, and a JOB on the wire cannot say which
    registration it was sent to (one sent just before the broker saw our
    new READY belongs to the old one, yet arrives after it): so after a
    re-registration a JOB that finds no idle slot waits in its lane's
    pending queue (up to the lane's concurrency) and starts when a slot
    frees. Before any re-registration such a JOB breaks the credit rule and
    is refused. A DISCONNECT within one heartbeat of our last READY answers
    something we sent before it: it is ignored, so a burst of them does not
    re-register (and re-lease) over and over.

    Stop is a drain in two phases, so no job is lost or run twice:
      draining  (up to cfg.grace_ms) running jobs go on and their DONEs are
                forwarded; heartbeats go on, so the broker keeps our leases
                (a DISCONNECT now would make it re-dispatch them). A JOB that
                arrives is held, not run: it keeps its slot of credit busy at
                the broker, so dispatching to us dries up.
      handing back  once nothing runs, or the grace period is over:
                DISCONNECT. The broker forgets us and re-dispatches every
                lease we still hold (held jobs, and jobs still running) as a
                new attempt. Only then are running jobs cancelled; their
                outcomes are dropped (the broker would refuse them as stale
                leases anyway) while we wait up to S_CANCEL_WAIT_MS for them.
*/
#include "am2z_worker_priv.h"

#include "am2z_clock.h"
#include "am2z_codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/*  How long a stopping worker waits for cancelled jobs to return. */
#define S_CANCEL_WAIT_MS 5000
/*  Reconnect backoff while the broker stays silent. */
#define S_BACKOFF_MIN_MS 100
#define S_BACKOFF_MAX_MS 5000
/*  Longest poll, so a stop flag set by a signal handler is seen promptly. */
#define S_POLL_MAX_MS 50
/*  Largest body accepted from the broker (a JOB carries a whole state). */
#define S_MAX_FRAME ((size_t)64 << 20)
/*  Messages read from one socket per loop turn before the others get a look. */
#define S_READ_MAX 256
/*  Linger of the broker socket when it is closed, so DISCONNECT goes out. */
#define S_LINGER_MS 500

/*  One registered processor. Strings owned. Immutable while running. */
typedef struct {
    char *name;                   /* valid name */
    char *description;            /* may be NULL */
    am2z_processor_fn *fn;        /* the function */
    void *arg;                    /* user pointer; borrowed */
    uint32_t concurrency;         /* actor threads, >= 1 */
    uint64_t timeout_ms;          /* announced in READY */
    int64_t priority;             /* announced in READY */
    am2z_retry_policy_t retry;    /* announced in READY */
    uint64_t delay_ms;            /* announced in READY */
    uint32_t rate_max;            /* announced in READY */
    uint64_t rate_per_ms;         /* announced in READY */
    uint32_t max_active;          /* announced in READY */
} s_proc_t;

struct am2z_worker_t {
    am2z_worker_config_t cfg;     /* copied at creation; id generated if "" */
    am2z_log_t *log;              /* owned; shared with actors (thread-safe) */
    s_proc_t *procs;              /* owned array; immutable while running */
    size_t nprocs;                /* entries in procs */
    am2z_composite_def_t **comps; /* owned copies; announced in READY, run by the broker */
    size_t ncomps;
    zactor_t *bg;                 /* am2z_worker_start's thread, or NULL */
    bool running;                 /* inside run() or started (owner thread) */
    atomic_bool stop;             /* am2z_worker_stop asked run() to return */
};

/*  One slot: a unit of credit and the job it runs.
    Invariant: busy == false <=> the slot's index is on its lane's idle stack
    (extras: busy == false <=> free for the next nested call's child). */
typedef struct {
    size_t proc;                  /* index into worker->procs */
    atomic_bool cancel;           /* set here, read by the actor running it */
    bool busy;                    /* a job was sent and its DONE not seen */
    uint32_t epoch;               /* registration epoch of the running job */
    char job[AM2Z_JOB_ID_MAX + 1];/* id of the running job */
    uint32_t attempt;             /* its attempt */
    uint64_t deadline_us;         /* lease deadline (mono), 0 = none */
    uint64_t call_req;            /* its actor waits for this CALL's RESULT, 0 = none */
    uint32_t call_seq;            /* that CALL's number on its actor thread */
    bool extra;                   /* an extra actor for nested calls' children */
} s_slot_t;

/*  Extra slots (for JOBs that are nested calls' children, which the broker
    sends beyond credit so a waiting caller never holds the slot its callee
    needs) are taken on demand in the tail of the slots array, up to: */
#define S_EXTRA_MAX 64

/*  Idle slots of one processor, and JOBs waiting for a slot (only after a
    re-registration; see the file comment). npending <= concurrency. */
typedef struct {
    size_t *idle;                 /* owned stack of slot indices */
    size_t nidle;                 /* entries on the stack */
    am2z_msg_t **pending;         /* owned FIFO of decoded JOBs (ring) */
    size_t npending;              /* entries queued */
    size_t phead;                 /* index of the oldest */
} s_lane_t;

/*  Everything one run owns. Lives on the running thread's stack. */
/*  A message to the broker waiting for the end of the loop iteration. */
typedef struct {
    const char *cmd;              /* static command name */
    zmq_msg_t body;
} s_out_t;

typedef struct {
    am2z_worker_t *w;             /* borrowed */
    zsock_t *control;             /* background mode: the zactor pipe; else NULL */
    volatile int *stop_flag;      /* run(): caller's flag, may be NULL */
    zsock_t *dealer;              /* owned; to the broker */
    am2zw_pool_t *pool;           /* owned; the actor threads and their mailbox */
    s_slot_t *slots;              /* owned; never moves (actors point into it);
                                     nslots lane slots then nextras extras */
    size_t nslots;                /* lane slots (sum of concurrencies) */
    size_t nextras;               /* extra slots taken (<= S_EXTRA_MAX) */
    uint64_t next_req;            /* CALL numbering */
    s_lane_t *lanes;              /* owned; one per processor */
    zmq_pollitem_t items[3];      /* [dealer, mailbox fd, control?] */
    size_t nitems;                /* entries in items */
    size_t busy;                  /* slots running a job */
    uint64_t hb_us;               /* heartbeat interval */
    uint64_t next_hb_us;          /* when the next HEARTBEAT goes out */
    uint64_t last_heard_us;       /* last message from the broker */
    uint32_t epoch;               /* registration epoch: +1 per READY after the first */
    uint64_t ready_at_us;         /* when the last READY went out */
    uint64_t backoff_ms;          /* next reconnect backoff (before jitter) */
    uint64_t next_reconnect_us;   /* no reconnect before this (0 = any time) */
    uint64_t rng;                 /* xorshift state for the jitter */
    bool stopping;                /* stop asked: draining (see the file comment) */
    uint64_t drain_deadline_us;   /* grace period ends then */
    size_t held;                  /* JOBs held (not run) while draining */
    bool handed_back;             /* DISCONNECT sent: outcomes are dropped */
    uint64_t stop_deadline_us;    /* give up waiting for cancelled jobs then */
    uint64_t next_deadline_us;    /* no lease deadline comes before this (s_check_deadlines) */
    bool peer_batch;              /* the broker sent a BATCH: ours may be batched */
    s_out_t *out;                 /* owned (AM2Z_BATCH_MAX): this iteration's
                                     messages to the broker, while peer_batch */
    size_t nout;                  /* messages in out */
} s_engine_t;

/*  Every slot in use: the lane slots and the extras. */
static size_t
s_nall(const s_engine_t *e)
{
    return e->nslots + e->nextras;
}

/* ---------------------------------------------------------------------------
   Configuration and registration
   ------------------------------------------------------------------------ */

void
am2z_worker_config_defaults(am2z_worker_config_t *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->broker, sizeof cfg->broker, "%s", AM2Z_DEFAULT_BACKEND);
    cfg->heartbeat_ms = 1000;
    cfg->liveness = 5;
    cfg->log_level = AM2Z_LOG_INFO;
    cfg->log_format = AM2Z_LOG_TEXT;
    cfg->max_state_size = AM2ZW_MAX_STATE_DEFAULT;
    cfg->grace_ms = AM2Z_WORKER_GRACE_DEFAULT_MS;
    cfg->thread_idle_ms = AM2Z_WORKER_THREAD_IDLE_DEFAULT_MS;
}

am2z_worker_t *
am2z_worker_new(const am2z_worker_config_t *cfg)
{
    am2z_worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (cfg)
        self->cfg = *cfg;
    else
        am2z_worker_config_defaults(&self->cfg);
    self->cfg.broker[sizeof self->cfg.broker - 1] = '\0';
    self->cfg.id[sizeof self->cfg.id - 1] = '\0';
    if (self->cfg.heartbeat_ms == 0)
        self->cfg.heartbeat_ms = 1000;
    if (self->cfg.liveness == 0)
        self->cfg.liveness = 5;
    if (self->cfg.max_state_size == 0)
        self->cfg.max_state_size = AM2ZW_MAX_STATE_DEFAULT;
    if (self->cfg.id[0] == '\0') {
        char id[AM2Z_ID_LEN + 1];
        if (am2z_id_new(id) != AM2Z_OK)
            snprintf(id, sizeof id, "worker-%ld", (long)getpid());
        snprintf(self->cfg.id, sizeof self->cfg.id, "%s", id);
    }
    atomic_init(&self->stop, false);
    self->log = am2z_log_new((am2z_log_level_t)self->cfg.log_level,
                             (am2z_log_format_t)self->cfg.log_format, NULL);
    if (!self->log) {
        free(self);
        return NULL;
    }
    return self;
}

void
am2z_worker_destroy(am2z_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_worker_t *self = *self_p;
    am2z_worker_stop(self);
    for (size_t i = 0; i < self->nprocs; i++) {
        free(self->procs[i].name);
        free(self->procs[i].description);
    }
    free(self->procs);
    for (size_t i = 0; i < self->ncomps; i++)
        am2zw_composite_free(&self->comps[i]);
    free(self->comps);
    am2z_log_destroy(&self->log);
    free(self);
    *self_p = NULL;
}

int
am2z_worker_register_composite(am2z_worker_t *self, const am2z_composite_def_t *def)
{
    if (!self || !def)
        return AM2Z_EINVAL;
    if (self->running)
        return AM2Z_ESTATE;
    char err[256] = "";
    int rc = am2z_composite_validate(def, err, sizeof err);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker", "invalid composite",
                 AM2Z_KS("reason", err));
        return AM2Z_EINVAL;
    }
    bool taken = false;
    for (size_t i = 0; i < self->nprocs; i++)
        taken = taken || streq(self->procs[i].name, def->name);
    for (size_t i = 0; i < self->ncomps; i++)
        taken = taken || streq(self->comps[i]->name, def->name);
    if (taken) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker", "composite name already registered",
                 AM2Z_KS("composite", def->name));
        return AM2Z_EINVAL;
    }
    /* the broker would refuse it at READY; say so where it is declared */
    rc = am2z_composite_check_cycles(def, (const am2z_composite_def_t *const *)self->comps,
                                     self->ncomps, err, sizeof err);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker", "invalid composite",
                 AM2Z_KS("reason", err));
        return rc == AM2Z_ENOMEM ? AM2Z_ENOMEM : AM2Z_EINVAL;
    }
    am2z_composite_def_t **comps = realloc(self->comps, (self->ncomps + 1) * sizeof *comps);
    if (!comps)
        return AM2Z_ENOMEM;
    self->comps = comps;
    if (!(comps[self->ncomps] = am2zw_composite_dup(def)))
        return AM2Z_ENOMEM;
    self->ncomps++;
    return AM2Z_OK;
}

int
am2z_worker_register(am2z_worker_t *self, const am2z_processor_def_t *def)
{
    if (!self || !def)
        return AM2Z_EINVAL;
    if (self->running)
        return AM2Z_ESTATE;
    const char *name = def->name ? def->name : "";
    if (!am2z_name_valid(name, strnlen(name, AM2Z_NAME_MAX + 1)) || !def->fn) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker",
                 def->fn ? "invalid processor name" : "processor has no function",
                 AM2Z_KS("processor", name));
        return AM2Z_EINVAL;
    }
    if ((def->rate_max == 0) != (def->rate_interval_ms == 0) || def->rate_max > 1000000) {
        /* a rate limit needs both numbers; the broker keeps at most
           1,000,000 lease times per window */
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker",
                 "invalid rate limit: rate_max (1..1000000) and rate_interval_ms go together",
                 AM2Z_KS("processor", name), AM2Z_KU("rate_max", def->rate_max),
                 AM2Z_KU("rate_interval_ms", def->rate_interval_ms));
        return AM2Z_EINVAL;
    }
    const struct { const char *what; uint64_t ms; } durations[] = {
        { "timeout_ms", def->timeout_ms }, { "delay_ms", def->delay_ms },
        { "rate_interval_ms", def->rate_interval_ms },
        { "retry.delay_ms", def->retry.delay_ms }, { "retry.max_delay_ms", def->retry.max_delay_ms },
    };
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        if (durations[i].ms > AM2Z_CODEC_MAX_DURATION_MS) {
            /* the broker refuses a READY that carries it (docs/PROTOCOL.md "Limits") */
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker",
                     "invalid processor option: durations are at most 10 years",
                     AM2Z_KS("processor", name), AM2Z_KS("option", durations[i].what),
                     AM2Z_KU("ms", durations[i].ms), AM2Z_KU("max_ms", AM2Z_CODEC_MAX_DURATION_MS));
            return AM2Z_EINVAL;
        }
    }
    for (size_t i = 0; i < self->nprocs; i++) {
        if (streq(self->procs[i].name, name)) {
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, "worker",
                     "processor registered twice", AM2Z_KS("processor", name));
            return AM2Z_EINVAL;
        }
    }
    s_proc_t *procs = realloc(self->procs, (self->nprocs + 1) * sizeof *procs);
    if (!procs)
        return AM2Z_ENOMEM;
    self->procs = procs;
    s_proc_t *p = &procs[self->nprocs];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    p->description = def->description ? strdup(def->description) : NULL;
    if (!p->name || (def->description && !p->description)) {
        free(p->name);
        free(p->description);
        return AM2Z_ENOMEM;
    }
    p->fn = def->fn;
    p->arg = def->arg;
    p->concurrency = def->concurrency ? def->concurrency : 1;
    p->timeout_ms = def->timeout_ms;
    p->priority = def->priority;
    p->retry = def->retry;
    p->delay_ms = def->delay_ms;
    p->rate_max = def->rate_max;
    p->rate_per_ms = def->rate_interval_ms;
    p->max_active = def->max_active;
    self->nprocs++;
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Sending to the broker
   ------------------------------------------------------------------------ */

/*  Batched messages (docs/PROTOCOL.md "Batches"). The worker's READY says
    it reads BATCHes; once the broker has sent one, it reads them too, and
    what the worker sends during one loop iteration (DONEs, EVENTs, CALLs,
    HEARTBEATs) waits in e->out and goes as one BATCH (one plain message
    when there is only one) before the loop polls again. */

static void
s_out_drop(s_engine_t *e)
{
    for (size_t i = 0; i < e->nout; i++)
        zmq_msg_close(&e->out[i].body);
    e->nout = 0;
}

/*  Sends what e->out holds. Never blocks: a message the socket cannot take
    (peer gone and queue full) is dropped and logged; the broker's lease
    deadline and our reconnect cover it. */
static void
s_out_flush(s_engine_t *e)
{
    if (!e->nout)
        return;
    void *h = zsock_resolve(e->dealer);
    if (zmq_send(h, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL), ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "messages to broker dropped",
                 AM2Z_KU("messages", e->nout), AM2Z_KS("first", e->out[0].cmd),
                 AM2Z_KS("error", zmq_strerror(errno)));
        s_out_drop(e);
        return;
    }
    /*  Once the first part is queued the rest of a multipart always is. */
    if (e->nout > 1)
        zmq_send(h, AM2Z_BATCH, strlen(AM2Z_BATCH), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    for (size_t i = 0; i < e->nout; i++) {
        zmq_send(h, e->out[i].cmd, strlen(e->out[i].cmd), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send(&e->out[i].body, h, (i + 1 < e->nout ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        zmq_msg_close(&e->out[i].body);
    }
    e->nout = 0;
}

/*  Takes (cmd, *body) into e->out when the broker reads BATCHes; *body is
    moved (the caller still closes it). Returns false when it must go now. */
static bool
s_out_add(s_engine_t *e, const char *cmd, zmq_msg_t *body)
{
    if (!e->peer_batch)
        return false;
    if (!e->out && !(e->out = calloc(AM2Z_BATCH_MAX, sizeof *e->out)))
        return false;
    if (e->nout == AM2Z_BATCH_MAX)
        s_out_flush(e);
    s_out_t *o = &e->out[e->nout++];
    o->cmd = cmd;
    zmq_msg_init(&o->body);
    zmq_msg_move(&o->body, body);
    return true;
}

/*  Sends [AM2Z/1, cmd, body] without blocking (or batches it, above): a
    main thread stuck in send would stop heartbeats. A message the socket
    cannot take (peer gone and queue full) is dropped and logged; the
    broker's lease deadline and our reconnect cover it. */
static int
s_send(s_engine_t *e, const char *cmd, const void *body, size_t size)
{
    if (e->peer_batch) {
        zmq_msg_t m;
        if (zmq_msg_init_size(&m, size) == 0) {
            if (size)
                memcpy(zmq_msg_data(&m), body, size);
            bool taken = s_out_add(e, cmd, &m);
            zmq_msg_close(&m);
            if (taken)
                return AM2Z_OK;
        }
    }
    s_out_flush(e);                       /* what waits goes first */
    void *h = zsock_resolve(e->dealer);
    if (zmq_send(h, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "message to broker dropped",
                 AM2Z_KS("command", cmd), AM2Z_KS("error", zmq_strerror(errno)));
        return AM2Z_ENETWORK;
    }
    /*  Once the first part is queued the rest of a multipart always is. */
    zmq_send(h, cmd, strlen(cmd), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(h, body, size, ZMQ_DONTWAIT);
    return AM2Z_OK;
}

/*  s_send of a body received from an actor, forwarded without a copy. The
    caller still closes *body. */
static int
s_send_body(s_engine_t *e, const char *cmd, zmq_msg_t *body)
{
    if (s_out_add(e, cmd, body))
        return AM2Z_OK;
    s_out_flush(e);
    void *h = zsock_resolve(e->dealer);
    if (zmq_send(h, AM2Z_PROTOCOL, strlen(AM2Z_PROTOCOL),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "message to broker dropped",
                 AM2Z_KS("command", cmd), AM2Z_KS("error", zmq_strerror(errno)));
        return AM2Z_ENETWORK;
    }
    zmq_send(h, cmd, strlen(cmd), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_send(body, h, ZMQ_DONTWAIT);
    return AM2Z_OK;
}

static int
s_send_msg(s_engine_t *e, const am2z_msg_t *msg)
{
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(msg, &body, &size);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "message not encoded",
                 AM2Z_KS("command", am2z_cmd_name(msg->cmd)),
                 AM2Z_KS("error", am2z_strerror(rc)));
        return rc;
    }
    rc = s_send(e, am2z_cmd_name(msg->cmd), body, size);
    free(body);
    return rc;
}

/*  HEARTBEAT / DISCONNECT {worker}. */
static void
s_send_simple(s_engine_t *e, am2z_cmd_t cmd)
{
    am2z_msg_t msg;
    am2z_msg_init(&msg, cmd);
    msg.worker = e->w->cfg.id;            /* borrowed */
    s_send_msg(e, &msg);
}

/*  READY {worker, procs[]}: every processor with conc = its concurrency. */
static int
s_send_ready(s_engine_t *e)
{
    am2z_worker_t *w = e->w;
    am2z_proc_desc_t *descs = calloc(w->nprocs, sizeof *descs);
    if (!descs)
        return AM2Z_ENOMEM;
    /*  The message borrows the worker's strings; it is never cleared. */
    for (size_t i = 0; i < w->nprocs; i++) {
        descs[i].name = w->procs[i].name;
        descs[i].description = w->procs[i].description;
        descs[i].concurrency = w->procs[i].concurrency;
        descs[i].timeout_ms = w->procs[i].timeout_ms;
        descs[i].priority = w->procs[i].priority;
        descs[i].retry = w->procs[i].retry;
        descs[i].delay_ms = w->procs[i].delay_ms;
        descs[i].rate_max = w->procs[i].rate_max;
        descs[i].rate_per_ms = w->procs[i].rate_per_ms;
        descs[i].max_active = w->procs[i].max_active;
    }
    /*  Composites in their wire form (copies, freed below). */
    am2z_comp_desc_t *comps = w->ncomps ? calloc(w->ncomps, sizeof *comps) : NULL;
    if (w->ncomps && !comps) {
        free(descs);
        return AM2Z_ENOMEM;
    }
    int rc = AM2Z_OK;
    for (size_t i = 0; i < w->ncomps && rc == AM2Z_OK; i++)
        rc = am2zw_composite_desc(w->comps[i], &comps[i]);
    am2z_msg_t msg;
    am2z_msg_init(&msg, AM2Z_CMD_READY);
    msg.worker = w->cfg.id;
    msg.procs = descs;
    msg.nprocs = w->nprocs;
    msg.comps = comps;
    msg.ncomps = w->ncomps;
    msg.batch = true;
    if (rc == AM2Z_OK)
        rc = s_send_msg(e, &msg);
    free(descs);
    for (size_t i = 0; i < w->ncomps; i++)
        am2z_comp_desc_clear(&comps[i]);
    free(comps);
    e->ready_at_us = am2z_clock_mono_us();
    if (rc == AM2Z_OK)
        AM2Z_LOG(w->log, AM2Z_LOG_INFO, "worker", "ready sent",
                 AM2Z_KS("worker", w->cfg.id), AM2Z_KS("broker", w->cfg.broker),
                 AM2Z_KU("processors", w->nprocs), AM2Z_KU("composites", w->ncomps));
    return rc;
}

/*  READY again (new socket, or the broker asked): a new epoch. Jobs of the
    older epochs are no longer ours to report (file comment): cancel them. */
static void
s_reregister(s_engine_t *e)
{
    e->epoch++;
    size_t stale = 0;
    for (size_t i = 0; i < s_nall(e); i++) {
        s_slot_t *slot = &e->slots[i];
        if (slot->busy && slot->epoch < e->epoch) {
            atomic_store(&slot->cancel, true);
            stale++;
        }
    }
    if (stale)
        AM2Z_LOG(e->w->log, AM2Z_LOG_INFO, "worker",
                 "re-registering: running jobs of the old registration cancelled",
                 AM2Z_KU("jobs", stale));
    s_send_ready(e);
}

/*  DONE {job, attempt, ok: false, error}. Takes *error_p. */
static void
s_send_failure(s_engine_t *e, const am2z_msg_t *job, am2z_error_t **error_p)
{
    am2z_msg_t done;
    am2z_msg_init(&done, AM2Z_CMD_DONE);
    done.job = job->job;                  /* borrowed */
    done.attempt = job->attempt;
    done.success = false;
    done.error = *error_p;
    done.exec_us = 1;
    done.started_at_ms = am2z_clock_wall_ms();
    if (done.error)
        s_send_msg(e, &done);
    am2z_error_destroy(error_p);
}

/* ---------------------------------------------------------------------------
   The broker socket
   ------------------------------------------------------------------------ */

static void s_rebuild_items(s_engine_t *e);

/*  (Re)creates the DEALER and connects it. CZMQ creates it in its shared
    context, so inproc:// reaches an embedded broker in the same process. */
static int
s_connect(s_engine_t *e)
{
    if (e->dealer)
        s_out_flush(e);                   /* as if sent before the new socket */
    s_out_drop(e);
    e->peer_batch = false;                /* the broker there may not read BATCHes */
    zsock_destroy(&e->dealer);
    e->dealer = zsock_new(ZMQ_DEALER);
    if (!e->dealer) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "zsock_new(DEALER) failed",
                 AM2Z_KS("error", zmq_strerror(errno)));
        return AM2Z_ENETWORK;
    }
    zsock_set_linger(e->dealer, S_LINGER_MS);
    zsock_set_maxmsgsize(e->dealer, (int)(S_MAX_FRAME + 1024));
    if (zsock_connect(e->dealer, "%s", e->w->cfg.broker) != 0) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "cannot connect to broker",
                 AM2Z_KS("broker", e->w->cfg.broker),
                 AM2Z_KS("error", zmq_strerror(errno)));
        zsock_destroy(&e->dealer);
        return AM2Z_ENETWORK;
    }
    if (e->pool)
        s_rebuild_items(e);
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Engine setup and teardown
   ------------------------------------------------------------------------ */

static void
s_rebuild_items(s_engine_t *e)
{
    size_t n = 0;
    e->items[n++] = (zmq_pollitem_t){ .socket = zsock_resolve(e->dealer),
                                      .events = ZMQ_POLLIN };
    e->items[n++] = (zmq_pollitem_t){ .socket = NULL, .fd = am2zw_pool_fd(e->pool),
                                      .events = ZMQ_POLLIN };
    if (e->control)
        e->items[n++] = (zmq_pollitem_t){ .socket = zsock_resolve(e->control),
                                          .events = ZMQ_POLLIN };
    e->nitems = n;
}

/*  Waits (unbounded) for every busy slot's DONE so that ending the pool
    loses no message; used only after the stop grace period ran out.
    Everything else the actors send now is dropped. */
static void
s_drain_actors(s_engine_t *e)
{
    size_t waiting = 0;
    for (size_t i = 0; i < s_nall(e); i++) {
        s_slot_t *slot = &e->slots[i];
        if (slot->busy) {
            AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker",
                     "processor ignores cancellation; waiting for it",
                     AM2Z_KS("processor", e->w->procs[slot->proc].name),
                     AM2Z_KS("job", slot->job));
            waiting++;
        }
    }
    while (waiting) {
        zmq_pollitem_t item = { .socket = NULL, .fd = am2zw_pool_fd(e->pool),
                                .events = ZMQ_POLLIN };
        if (am2zw_pool_sleep(e->pool))
            zmq_poll(&item, 1, S_POLL_MAX_MS);
        am2zw_item_t *list = am2zw_pool_take(e->pool, item.revents & ZMQ_POLLIN);
        for (am2zw_item_t *it = list; it; it = it->next)
            if (it->kind == AM2ZW_DONE && it->slot < s_nall(e) && e->slots[it->slot].busy) {
                e->slots[it->slot].busy = false;
                waiting--;
            }
        am2zw_items_free(list);
    }
}

static void
s_engine_fini(s_engine_t *e)
{
    if (e->slots && e->pool)
        s_drain_actors(e);
    am2zw_pool_destroy(&e->pool);
    free(e->slots);
    e->slots = NULL;
    if (e->lanes)
        for (size_t i = 0; i < e->w->nprocs; i++) {
            s_lane_t *lane = &e->lanes[i];
            for (size_t k = 0; lane->pending && k < lane->npending; k++) {
                am2z_msg_t **m = &lane->pending[(lane->phead + k)
                                                % e->w->procs[i].concurrency];
                am2z_msg_clear(*m);
                free(*m);
            }
            free(lane->pending);
            free(lane->idle);
        }
    free(e->lanes);
    e->lanes = NULL;
    if (e->dealer)
        s_out_flush(e);
    s_out_drop(e);
    free(e->out);
    e->out = NULL;
    zsock_destroy(&e->dealer);
}

/*  Starts every actor, connects and sends READY. On failure everything is
    released (s_engine_fini) and the error returned. */
static int
s_engine_init(s_engine_t *e, am2z_worker_t *w, zsock_t *control,
              volatile int *stop_flag)
{
    memset(e, 0, sizeof *e);
    e->next_deadline_us = UINT64_MAX;
    e->w = w;
    e->control = control;
    e->stop_flag = stop_flag;
    if (w->nprocs == 0) {
        AM2Z_LOG(w->log, AM2Z_LOG_ERROR, "worker", "no processors registered");
        return AM2Z_EINVAL;
    }
    for (size_t i = 0; i < w->nprocs; i++)
        e->nslots += w->procs[i].concurrency;
    e->slots = calloc(e->nslots + S_EXTRA_MAX, sizeof *e->slots);
    e->lanes = calloc(w->nprocs, sizeof *e->lanes);
    int rc = AM2Z_ENOMEM;
    if (!e->slots || !e->lanes)
        goto fail;

    /*  The actor threads: a lane per processor, as many threads at most as
        its slots plus every extra slot. */
    am2zw_lane_def_t *defs = calloc(w->nprocs, sizeof *defs);
    if (!defs)
        goto fail;
    for (size_t p = 0; p < w->nprocs; p++)
        defs[p] = (am2zw_lane_def_t){
            .processor = w->procs[p].name, .fn = w->procs[p].fn, .arg = w->procs[p].arg,
            .max_threads = (size_t)w->procs[p].concurrency + S_EXTRA_MAX,
        };
    e->pool = am2zw_pool_new(defs, w->nprocs, e->nslots + S_EXTRA_MAX, w->log,
                             (size_t)w->cfg.max_state_size, w->cfg.thread_idle_ms);
    free(defs);
    if (!e->pool) {
        AM2Z_LOG(w->log, AM2Z_LOG_ERROR, "worker", "actor pool not created",
                 AM2Z_KS("error", strerror(errno)));
        goto fail;
    }

    size_t s = 0;
    for (size_t p = 0; p < w->nprocs; p++) {
        s_lane_t *lane = &e->lanes[p];
        lane->idle = calloc(w->procs[p].concurrency, sizeof *lane->idle);
        lane->pending = calloc(w->procs[p].concurrency, sizeof *lane->pending);
        if (!lane->idle || !lane->pending) {
            rc = AM2Z_ENOMEM;
            goto fail;
        }
        /*  The idle stack is LIFO, so a lightly loaded processor keeps
            reusing its first slots. */
        for (uint32_t c = 0; c < w->procs[p].concurrency; c++, s++) {
            e->slots[s].proc = p;
            lane->idle[lane->nidle++] = s;
        }
    }
    rc = s_connect(e);
    if (rc != AM2Z_OK)
        goto fail;
    s_rebuild_items(e);

    e->hb_us = w->cfg.heartbeat_ms * 1000;
    uint64_t now = am2z_clock_mono_us();
    e->last_heard_us = now;
    e->next_hb_us = now + e->hb_us;
    e->backoff_ms = S_BACKOFF_MIN_MS;
    e->rng = now ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)e;
    for (const char *c = w->cfg.id; *c; c++)
        e->rng = e->rng * 31 + (unsigned char)*c;
    if (e->rng == 0)
        e->rng = 0x9e3779b97f4a7c15ULL;
    rc = s_send_ready(e);
    if (rc != AM2Z_OK)
        goto fail;
    return AM2Z_OK;
fail:
    s_engine_fini(e);
    return rc;
}

/* ---------------------------------------------------------------------------
   Messages from the broker
   ------------------------------------------------------------------------ */

static void s_start_extra(s_engine_t *e, size_t p, am2z_msg_t *owned);
static void s_on_call_result(s_engine_t *e, const am2z_msg_t *msg,
                             const void *body, size_t size);

static int
s_find_proc(const am2z_worker_t *w, const char *name)
{
    for (size_t i = 0; i < w->nprocs; i++)
        if (streq(w->procs[i].name, name))
            return (int)i;
    return -1;
}

/*  Marks slot busy with *owned's lease and queues *owned (taken) for
    lane p's threads. When no thread can take it, the slot is released
    (false) and the job failed. */
static bool
s_run_on(s_engine_t *e, s_slot_t *slot, size_t p, am2z_msg_t *owned)
{
    snprintf(slot->job, sizeof slot->job, "%s", owned->job);
    slot->attempt = owned->attempt;
    slot->epoch = e->epoch;
    slot->call_req = 0;
    slot->deadline_us = owned->timeout_ms
                            ? am2z_clock_mono_us() + owned->timeout_ms * 1000 : 0;
    if (slot->deadline_us && slot->deadline_us < e->next_deadline_us)
        e->next_deadline_us = slot->deadline_us;
    atomic_store(&slot->cancel, false);
    slot->busy = true;
    e->busy++;
    if (am2zw_pool_job(e->pool, p, (uint32_t)(slot - e->slots), &slot->cancel, owned,
                       slot->extra) != AM2Z_OK) {
        /*  No actor thread for it: undo, fail the job. */
        slot->busy = false;
        e->busy--;
        am2z_error_t *error = am2z_error_resource(slot->extra ? "call actors" : "actor threads",
                                                  0, 0);
        s_send_failure(e, owned, &error);
        am2z_msg_clear(owned);
        free(owned);
        return false;
    }
    AM2Z_LOG(e->w->log, AM2Z_LOG_DEBUG, "worker", "job started",
             AM2Z_KS("job", slot->job), AM2Z_KS("processor", e->w->procs[p].name),
             AM2Z_KU("attempt", slot->attempt));
    return true;
}

/*  Starts *owned (taken) on an idle slot of lane p. */
static void
s_start_job(s_engine_t *e, size_t p, am2z_msg_t *owned)
{
    s_lane_t *lane = &e->lanes[p];
    size_t idx = lane->idle[--lane->nidle];
    if (!s_run_on(e, &e->slots[idx], p, owned))
        lane->idle[lane->nidle++] = idx;
}

/*  Takes the decoded JOB (*job is moved into the actor or the pending
    queue, or cleared). */
static void
s_on_job(s_engine_t *e, am2z_msg_t *job)
{
    am2z_worker_t *w = e->w;
    am2z_error_t *error = NULL;
    int p = s_find_proc(w, job->processor);
    bool pend = false;
    if (p < 0) {
        const char **names = calloc(w->nprocs, sizeof *names);
        for (size_t i = 0; names && i < w->nprocs; i++)
            names[i] = w->procs[i].name;
        error = am2z_error_processor_not_found(job->processor, names,
                                               names ? w->nprocs : 0);
        free(names);
    } else if (e->stopping) {
        /*  Held: handed back to the broker by our DISCONNECT (see the file
            comment). A failed DONE would end the job for good under a
            retry policy that allows no retry. */
        e->held++;
        AM2Z_LOG(w->log, AM2Z_LOG_INFO, "worker", "job held while stopping",
                 AM2Z_KS("job", job->job), AM2Z_KS("processor", job->processor),
                 AM2Z_KU("attempt", job->attempt));
        am2z_msg_clear(job);
        return;
    } else if (job->call) {
        /* a nested call's child: beyond credit, on an extra actor */
    } else if (e->lanes[p].nidle == 0) {
        if (e->epoch > 0 && e->lanes[p].npending < w->procs[p].concurrency) {
            pend = true;
        } else {
            AM2Z_LOG(w->log, AM2Z_LOG_WARN, "worker", "job without credit refused",
                     AM2Z_KS("job", job->job), AM2Z_KS("processor", job->processor));
            error = am2z_error_resource("processor slots", w->procs[p].concurrency,
                                        w->procs[p].concurrency);
        }
    }
    if (error || p < 0) {
        s_send_failure(e, job, &error);
        am2z_msg_clear(job);
        return;
    }

    am2z_msg_t *owned = malloc(sizeof *owned);
    if (!owned) {
        error = am2z_error_resource("memory", 0, 0);
        s_send_failure(e, job, &error);
        am2z_msg_clear(job);
        return;
    }
    *owned = *job;                        /* move */
    am2z_msg_init(job, AM2Z_CMD_INVALID);
    if (pend) {
        s_lane_t *lane = &e->lanes[p];
        size_t cap = w->procs[p].concurrency;
        lane->pending[(lane->phead + lane->npending++) % cap] = owned;
        AM2Z_LOG(w->log, AM2Z_LOG_DEBUG, "worker",
                 "job waits for a slot of the old registration",
                 AM2Z_KS("job", owned->job), AM2Z_KS("processor", owned->processor));
        return;
    }
    if (owned->call)
        s_start_extra(e, (size_t)p, owned);
    else
        s_start_job(e, (size_t)p, owned);
}

static void
s_on_cancel(s_engine_t *e, const am2z_msg_t *msg)
{
    for (size_t i = 0; i < s_nall(e); i++) {
        s_slot_t *slot = &e->slots[i];
        if (slot->busy && msg->job && streq(slot->job, msg->job)
            && (msg->attempt == 0 || msg->attempt == slot->attempt)) {
            atomic_store(&slot->cancel, true);
            AM2Z_LOG(e->w->log, AM2Z_LOG_DEBUG, "worker", "job cancelled",
                     AM2Z_KS("job", slot->job));
        }
    }
}

/*  One message from the broker: n parts (the first min(n, 3) in parts). */
static void
s_on_broker_msg(s_engine_t *e, zmq_msg_t *parts, int n)
{
    am2z_worker_t *w = e->w;
    if (n != 3) {
        AM2Z_LOG(w->log, AM2Z_LOG_WARN, "worker", "malformed message from broker",
                 AM2Z_KU("frames", n));
        return;
    }
    zmq_msg_t *body = &parts[2];
    am2z_msg_t msg;
    char err[256] = "";
    int rc = am2z_frames_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]),
                                zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]),
                                zmq_msg_data(body), zmq_msg_size(body),
                                S_MAX_FRAME, &msg, err, sizeof err);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(w->log, AM2Z_LOG_WARN, "worker", "bad message from broker dropped",
                 AM2Z_KS("error", err[0] ? err : am2z_strerror(rc)));
        return;
    }
    switch (msg.cmd) {
    case AM2Z_CMD_JOB:
        s_on_job(e, &msg);
        break;
    case AM2Z_CMD_CANCEL:
        s_on_cancel(e, &msg);
        break;
    case AM2Z_CMD_RESULT:
        s_on_call_result(e, &msg, zmq_msg_data(body), zmq_msg_size(body));
        break;
    case AM2Z_CMD_HEARTBEAT:
        break;
    case AM2Z_CMD_DISCONNECT:
        if (!e->stopping && am2z_clock_mono_us() - e->ready_at_us >= e->hb_us) {
            AM2Z_LOG(w->log, AM2Z_LOG_INFO, "worker",
                     "broker asked to re-register");
            s_reregister(e);
        }
        break;
    default:
        AM2Z_LOG(w->log, AM2Z_LOG_WARN, "worker", "unexpected command from broker",
                 AM2Z_KS("command", am2z_cmd_name(msg.cmd)));
        break;
    }
    am2z_msg_clear(&msg);
}

/*  The (command, body) pairs of a BATCH whose signature and marker were
    read into parts[0..1]: each handled as its own message. */
static void
s_on_broker_batch(s_engine_t *e, void *h, zmq_msg_t *parts)
{
    e->peer_batch = true;                 /* it reads them too */
    bool more = true;
    while (more) {
        zmq_msg_close(&parts[1]);
        zmq_msg_init(&parts[1]);
        zmq_msg_t *body = &parts[2];
        zmq_msg_init(body);
        /*  a message arrives whole: these reads do not wait */
        bool ok = zmq_msg_recv(&parts[1], h, ZMQ_DONTWAIT) != -1;
        if (ok && !zmq_msg_more(&parts[1])) {
            AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker",
                     "malformed BATCH from broker: a command without a body");
            ok = more = false;
        }
        ok = ok && zmq_msg_recv(body, h, ZMQ_DONTWAIT) != -1;
        if (ok) {
            more = zmq_msg_more(body);
            s_on_broker_msg(e, parts, 3);
        }
        zmq_msg_close(body);
        if (!ok)
            break;
    }
    while (more) {                        /* only after a failed read */
        zmq_msg_t rest;
        zmq_msg_init(&rest);
        if (zmq_msg_recv(&rest, h, ZMQ_DONTWAIT) == -1)
            break;
        more = zmq_msg_more(&rest);
        zmq_msg_close(&rest);
    }
}

static void
s_on_broker(s_engine_t *e)
{
    void *h = zsock_resolve(e->dealer);
    for (int i = 0; i < S_READ_MAX; i++) {
        zmq_msg_t parts[3];
        int n = 0;
        bool batch = false;
        /*  The whole message (parts beyond 3 counted, not kept), except
            that a BATCH marker in the second frame stops the read: its
            pairs are read one by one */
        while (true) {
            zmq_msg_t spare;
            zmq_msg_t *m = n < 3 ? &parts[n] : &spare;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, h, ZMQ_DONTWAIT) == -1) {
                zmq_msg_close(m);
                break;
            }
            bool more = zmq_msg_more(m);
            if (m == &spare)
                zmq_msg_close(m);
            n++;
            if (more && n == 2 && am2z_is_batch(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]))) {
                batch = true;
                break;
            }
            if (!more)
                break;
        }
        if (n == 0)
            break;                        /* EAGAIN: read it all */
        e->last_heard_us = am2z_clock_mono_us();
        e->backoff_ms = S_BACKOFF_MIN_MS;
        e->next_reconnect_us = 0;
        if (batch) {
            s_on_broker_batch(e, h, parts);
            zmq_msg_close(&parts[0]);
            zmq_msg_close(&parts[1]);
        } else {
            s_on_broker_msg(e, parts, n);
            for (int k = 0; k < n && k < 3; k++)
                zmq_msg_close(&parts[k]);
        }
    }
}

/* ---------------------------------------------------------------------------
   Messages from actors
   ------------------------------------------------------------------------ */

/*  A nested call from a running job: numbered here (req) and sent to the
    broker; the RESULT with that req goes back to this slot's actor. */
static void
s_on_call(s_engine_t *e, s_slot_t *slot, uint32_t seq, const void *data, size_t dsize)
{
    am2z_msg_t call;
    uint8_t *out = NULL;
    size_t size = 0;
    int rc = am2z_msg_decode(AM2Z_CMD_CALL, data, dsize, dsize + 1, &call, NULL, 0);
    if (rc == AM2Z_OK) {
        call.req = ++e->next_req;
        rc = am2z_msg_encode(&call, &out, &size);
    }
    if (rc == AM2Z_OK && slot->busy && !e->handed_back) {
        slot->call_req = call.req;
        slot->call_seq = seq;
        s_send(e, "CALL", out, size);
    } else {
        AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "nested call not sent",
                 AM2Z_KS("job", slot->job), AM2Z_KS("error", am2z_strerror(rc)));
    }
    free(out);
    am2z_msg_clear(&call);
}

/*  RESULT {req} from the broker: the answer to a nested call. */
static void
s_on_call_result(s_engine_t *e, const am2z_msg_t *msg, const void *body, size_t size)
{
    for (size_t i = 0; msg->req && i < s_nall(e); i++) {
        s_slot_t *slot = &e->slots[i];
        if (slot->busy && slot->call_req == msg->req) {
            slot->call_req = 0;
            int rc = am2zw_pool_result(e->pool, (uint32_t)i, slot->call_seq, body, size);
            if (rc != AM2Z_OK)
                AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "RESULT not delivered",
                         AM2Z_KS("job", slot->job), AM2Z_KS("error", am2z_strerror(rc)));
            return;
        }
    }
    AM2Z_LOG(e->w->log, AM2Z_LOG_DEBUG, "worker", "RESULT for no waiting call dropped",
             AM2Z_KU("req", msg->req));
}

/*  A nested call's child: runs on a free extra slot of its processor, or
    a new one. Takes *owned. */
static void
s_start_extra(s_engine_t *e, size_t p, am2z_msg_t *owned)
{
    s_slot_t *slot = NULL;
    for (size_t i = e->nslots; i < s_nall(e) && !slot; i++)
        if (!e->slots[i].busy && e->slots[i].proc == p)
            slot = &e->slots[i];
    if (!slot && e->nextras < S_EXTRA_MAX) {
        slot = &e->slots[e->nslots + e->nextras++];
        memset(slot, 0, sizeof *slot);
        slot->proc = p;
        slot->extra = true;
        atomic_init(&slot->cancel, false);
    }
    if (!slot) {
        am2z_error_t *error = am2z_error_resource("call actors", S_EXTRA_MAX, S_EXTRA_MAX);
        s_send_failure(e, owned, &error);
        am2z_msg_clear(owned);
        free(owned);
        return;
    }
    s_run_on(e, slot, p, owned);
}

/*  Frees body into a ZeroMQ message without a copy. */
static void
s_free_body(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/*  Forwards an actor's body to the broker as cmd; takes it->body. */
static void
s_forward(s_engine_t *e, const char *cmd, am2zw_item_t *it)
{
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, it->body, it->size, s_free_body, NULL) != 0) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "message to broker dropped",
                 AM2Z_KS("command", cmd), AM2Z_KS("error", "out of memory"));
        return;
    }
    it->body = NULL;
    s_send_body(e, cmd, &m);
    zmq_msg_close(&m);
}

/*  One message from an actor. */
static void
s_on_actor(s_engine_t *e, am2zw_item_t *it)
{
    if (it->slot >= s_nall(e)) {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "actor message for no slot",
                 AM2Z_KU("slot", it->slot));
        return;
    }
    s_slot_t *slot = &e->slots[it->slot];
    if (it->kind == AM2ZW_EVENT) {
        if (!e->handed_back && !(slot->busy && slot->epoch < e->epoch) && it->body)
            s_forward(e, "EVENT", it);
    } else if (it->kind == AM2ZW_DONE) {
        if (e->handed_back || (slot->busy && slot->epoch < e->epoch))
            AM2Z_LOG(e->w->log, AM2Z_LOG_INFO, "worker",
                     e->handed_back ? "outcome of a handed-back job dropped"
                                    : "outcome of the old registration dropped",
                     AM2Z_KS("job", slot->job));
        else if (it->body && it->size > 0)
            s_forward(e, "DONE", it);
        slot->call_req = 0;
        if (slot->busy && slot->extra) {
            slot->busy = false;           /* free extra: reused by the next call */
            e->busy--;
        } else if (slot->busy) {
            AM2Z_LOG(e->w->log, AM2Z_LOG_DEBUG, "worker", "job done",
                     AM2Z_KS("job", slot->job),
                     AM2Z_KS("processor", e->w->procs[slot->proc].name));
            slot->busy = false;
            e->busy--;
            s_lane_t *lane = &e->lanes[slot->proc];
            lane->idle[lane->nidle++] = (size_t)(slot - e->slots);
            if (lane->npending && !e->stopping) {
                am2z_msg_t *next = lane->pending[lane->phead];
                lane->phead = (lane->phead + 1) % e->w->procs[slot->proc].concurrency;
                lane->npending--;
                s_start_job(e, slot->proc, next);
            }
        }
    } else if (it->kind == AM2ZW_CALL) {
        s_on_call(e, slot, it->seq, it->body, it->size);
    } else {
        AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "unexpected actor message",
                 AM2Z_KU("slot", it->slot));
    }
}

/*  Everything the actors sent since the last look, in order. signalled:
    the poll found the mailbox's eventfd readable. */
static void
s_on_actors(s_engine_t *e, bool signalled)
{
    am2zw_item_t *list = am2zw_pool_take(e->pool, signalled);
    for (am2zw_item_t *it = list; it; it = it->next)
        s_on_actor(e, it);
    am2zw_items_free(list);
}

/* ---------------------------------------------------------------------------
   The loop
   ------------------------------------------------------------------------ */

static bool
s_stop_requested(s_engine_t *e)
{
    return (e->stop_flag && *e->stop_flag) || atomic_load(&e->w->stop)
           || zsys_interrupted;
}

/*  Phase 1 of a stop: keep running jobs, hold new ones (file comment). */
static void
s_begin_stop(s_engine_t *e)
{
    AM2Z_LOG(e->w->log, AM2Z_LOG_INFO, "worker", "stopping: draining",
             AM2Z_KS("worker", e->w->cfg.id), AM2Z_KU("running", e->busy),
             AM2Z_KU("grace_ms", e->w->cfg.grace_ms));
    e->stopping = true;
    e->drain_deadline_us = am2z_clock_mono_us() + e->w->cfg.grace_ms * 1000;
    /*  JOBs waiting for a slot are held like new ones: handed back. */
    for (size_t p = 0; p < e->w->nprocs; p++) {
        s_lane_t *lane = &e->lanes[p];
        for (; lane->npending; lane->npending--) {
            am2z_msg_t **m = &lane->pending[lane->phead];
            lane->phead = (lane->phead + 1) % e->w->procs[p].concurrency;
            am2z_msg_clear(*m);
            free(*m);
            e->held++;
        }
    }
}

/*  Phase 2: DISCONNECT (the broker re-dispatches what we still hold), then
    cancel whatever still runs. */
static void
s_hand_back(s_engine_t *e)
{
    if (e->busy || e->held)
        AM2Z_LOG(e->w->log, e->busy ? AM2Z_LOG_WARN : AM2Z_LOG_INFO, "worker",
                 "handing jobs back to the broker",
                 AM2Z_KS("worker", e->w->cfg.id), AM2Z_KU("running", e->busy),
                 AM2Z_KU("held", e->held));
    s_send_simple(e, AM2Z_CMD_DISCONNECT);
    e->handed_back = true;
    for (size_t i = 0; i < s_nall(e); i++)
        if (e->slots[i].busy)
            atomic_store(&e->slots[i].cancel, true);
    e->stop_deadline_us = am2z_clock_mono_us() + (uint64_t)S_CANCEL_WAIT_MS * 1000;
}

/*  Background mode: "$TERM" on the control pipe means stop. */
static void
s_on_control(s_engine_t *e)
{
    zmsg_t *msg = zmsg_recv(e->control);
    if (!msg)
        return;
    char *cmd = zmsg_popstr(msg);
    if (!cmd || streq(cmd, "$TERM"))
        if (!e->stopping)
            s_begin_stop(e);
    zstr_free(&cmd);
    zmsg_destroy(&msg);
}

/*  Sets the cancellation flag of every job past its lease deadline. The
    slots are walked only once the earliest deadline set since the last
    walk has come (a worker with many slots would otherwise walk them all
    at every wake-up); the walk then finds the next one. */
static void
s_check_deadlines(s_engine_t *e, uint64_t now)
{
    if (now < e->next_deadline_us)
        return;
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < s_nall(e); i++) {
        s_slot_t *slot = &e->slots[i];
        if (!slot->busy || !slot->deadline_us)
            continue;
        if (now >= slot->deadline_us) {
            atomic_store(&slot->cancel, true);
            slot->deadline_us = 0;
            AM2Z_LOG(e->w->log, AM2Z_LOG_INFO, "worker",
                     "job past its lease deadline: cancelled",
                     AM2Z_KS("job", slot->job));
        } else if (slot->deadline_us < next) {
            next = slot->deadline_us;
        }
    }
    e->next_deadline_us = next;
}

/*  xorshift64: the reconnect jitter. */
static uint64_t
s_rand(s_engine_t *e)
{
    uint64_t x = e->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    e->rng = x;
    return x;
}

/*  The broker has been silent for liveness x heartbeat: new socket, READY,
    and the next try after the backoff (jittered to half..all of it, at
    least one heartbeat so the broker has a chance to answer). */
static int
s_reconnect(s_engine_t *e, uint64_t now)
{
    AM2Z_LOG(e->w->log, AM2Z_LOG_WARN, "worker", "broker silent: reconnecting",
             AM2Z_KS("broker", e->w->cfg.broker),
             AM2Z_KU("silent_ms", (now - e->last_heard_us) / 1000),
             AM2Z_KU("backoff_ms", e->backoff_ms));
    int rc = s_connect(e);
    if (rc != AM2Z_OK)
        return rc;
    s_reregister(e);
    uint64_t half = e->backoff_ms / 2;
    uint64_t wait_us = (half + s_rand(e) % (half + 1)) * 1000;
    if (wait_us < e->hb_us)
        wait_us = e->hb_us;
    e->next_reconnect_us = now + wait_us;
    e->backoff_ms = e->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS
                                                        : e->backoff_ms * 2;
    return AM2Z_OK;
}

static int
s_loop(s_engine_t *e)
{
    uint64_t liveness_us = e->hb_us * e->w->cfg.liveness;
    while (true) {
        uint64_t now = am2z_clock_mono_us();
        if (!e->stopping && s_stop_requested(e))
            s_begin_stop(e);
        if (e->stopping && !e->handed_back
            && (e->busy == 0 || now >= e->drain_deadline_us))
            s_hand_back(e);
        if (e->handed_back && (e->busy == 0 || now >= e->stop_deadline_us)) {
            s_out_flush(e);
            return AM2Z_OK;
        }
        if (!e->handed_back && now >= e->next_hb_us) {
            s_send_simple(e, AM2Z_CMD_HEARTBEAT);
            e->next_hb_us = now + e->hb_us;
        }
        /*  Not while stopping: a READY would take new work. */
        if (!e->stopping && now - e->last_heard_us > liveness_us
            && now >= e->next_reconnect_us && s_reconnect(e, now) != AM2Z_OK)
            return AM2Z_ENETWORK;
        s_check_deadlines(e, now);

        /*  Handed back: no more heartbeats, so only the poll cap applies. */
        uint64_t wait_us = e->handed_back ? (uint64_t)S_POLL_MAX_MS * 1000
                         : e->next_hb_us > now ? e->next_hb_us - now : 0;
        long timeout_ms = (long)((wait_us + 999) / 1000);
        if (timeout_ms > S_POLL_MAX_MS)
            timeout_ms = S_POLL_MAX_MS;
        s_out_flush(e);                   /* this iteration's BATCH */
        if (!am2zw_pool_sleep(e->pool))
            timeout_ms = 0;               /* actors' messages wait already */
        int rc = zmq_poll(e->items, (int)e->nitems, timeout_ms);
        if (rc == -1) {
            if (errno == EINTR)
                continue;
            AM2Z_LOG(e->w->log, AM2Z_LOG_ERROR, "worker", "zmq_poll failed",
                     AM2Z_KS("error", zmq_strerror(errno)));
            return AM2Z_ENETWORK;
        }
        if (e->items[0].revents & ZMQ_POLLIN)
            s_on_broker(e);
        s_on_actors(e, e->items[1].revents & ZMQ_POLLIN); /* also: we are awake */
        if (e->control && (e->items[2].revents & ZMQ_POLLIN))
            s_on_control(e);
    }
}

/* ---------------------------------------------------------------------------
   Running
   ------------------------------------------------------------------------ */

int
am2z_worker_run(am2z_worker_t *self, volatile int *stop_flag)
{
    if (!self)
        return AM2Z_EINVAL;
    if (self->running)
        return AM2Z_ESTATE;
    atomic_store(&self->stop, false);
    self->running = true;
    s_engine_t e;
    int rc = s_engine_init(&e, self, NULL, stop_flag);
    if (rc == AM2Z_OK) {
        rc = s_loop(&e);
        s_engine_fini(&e);
    }
    self->running = false;
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, "worker", "stopped",
             AM2Z_KS("worker", self->cfg.id), AM2Z_KS("result", am2z_strerror(rc)));
    return rc;
}

/*  The background thread of am2z_worker_start. Handshake: the usual zactor
    signal, then a second signal carrying -rc once READY was sent (0) or
    setup failed. */
static void
s_bg_actor(zsock_t *pipe, void *args)
{
    am2z_worker_t *self = args;
    zsock_signal(pipe, 0);
    s_engine_t e;
    int rc = s_engine_init(&e, self, pipe, NULL);
    zsock_signal(pipe, (byte)(-rc));
    if (rc != AM2Z_OK)
        return;
    rc = s_loop(&e);
    s_engine_fini(&e);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, "worker", "stopped",
             AM2Z_KS("worker", self->cfg.id), AM2Z_KS("result", am2z_strerror(rc)));
}

int
am2z_worker_start(am2z_worker_t *self)
{
    if (!self)
        return AM2Z_EINVAL;
    if (self->bg)
        return AM2Z_OK;
    if (self->running)
        return AM2Z_ESTATE;
    if (self->nprocs == 0)
        return AM2Z_EINVAL;
    self->running = true;
    self->bg = zactor_new(s_bg_actor, self);
    if (!self->bg) {
        self->running = false;
        return AM2Z_ENOMEM;
    }
    int status = zsock_wait(self->bg);
    if (status != 0) {
        zactor_destroy(&self->bg);
        self->running = false;
        return status > 0 ? -status : AM2Z_ENETWORK;
    }
    return AM2Z_OK;
}

void
am2z_worker_stop(am2z_worker_t *self)
{
    if (!self)
        return;
    if (self->bg) {
        zactor_destroy(&self->bg);
        self->running = false;
    } else {
        atomic_store(&self->stop, true);
    }
}
