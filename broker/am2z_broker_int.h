/*  am2z_broker_int.h — the broker's private data model, shared by
    am2z_broker.c (loop, I/O, handlers) and am2z_sched.c (lanes, rings,
    workers, dispatch). Everything here belongs to the broker's loop thread.

    Invariants (between loop turns):
    - Workflow steps and nested calls' children (job->flow_id / job->call)
      have no lane and no session pointer: WAITING means on the flows'
      ready list (ready_handle set), ACTIVE means leased; am2z_flow.c owns
      their life cycle. A running composite job is ACTIVE without a worker
      (its run holds the session).
    - Every other job_t in self->jobs is either WAITING (in its session's lane),
      ACTIVE (leased: session->active == job, job->worker set), or FAILING
      (session->active == job, a failure waits in self->failures).
      A stopped job (job->stopped) is ACTIVE with session == NULL: its
      outcome is discarded when its worker answers or dies.
    - A job owned by an effect (this turn's finished jobs) is in no table and
      has session == NULL.
    - A session is in at most one place: one ring of its head job's
      processor (its lane head is due and it has no active job), or
      self->delayed (head not yet due), or neither. The ring is the bucket
      of the head job's priority (proc->buckets, priority descending).
    - A session's lane is ordered by (prio desc, seq asc), except that a
      job put back at the front (lost worker, retry backoff: job->requeued)
      stays first (s_lane_cmp in am2z_sched.c).
    - proc->leased counts the leases of that processor that hold a cap slot
      (job->cap_held): set by am2zb_sched_take, released by am2zb_lease_end
      (DONE, expiry, lost worker, retry, stop, destroy). Nested calls'
      children hold none.
    - proc_t and worker credit entries live until the broker is destroyed /
      the worker is forgotten; sessions until STOP_SESSION, expiry
      (session-ttl, am2z_lifecycle.c) or destroy.
    - A job with a lease deadline is in self->leases (lease_handle set)
      exactly while it is ACTIVE; am2zb_lease_end() takes it out, and
      am2zb_lane_push / am2zb_job_destroy call it.
    - proc->queued counts the jobs of that processor in self->jobs
      (am2zb_job_track / am2zb_job_untrack keep it).
    - An expired lease whose worker has not answered yet stays in
      worker->expired: its slot is still busy on the worker, so the credit
      comes back only with the late DONE (which is then rejected).
*/
#ifndef AM2Z_BROKER_INT_H_INCLUDED
#define AM2Z_BROKER_INT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "am2z_broker.h"
#include "am2z_clock.h"
#include "am2z_codec.h"
#include "am2z_error.h"
#include "am2z_idmap.h"
#include "am2z_log.h"
#include "am2z_state.h"
#include "am2z_store.h"

#define S_IDENT_MAX 256           /* ZeroMQ routing ids are at most 255 bytes */
#define S_COMPONENT "broker"

typedef struct proc_s proc_t;
typedef struct session_s session_t;
typedef struct worker_s worker_t;
typedef struct job_s job_t;

/*  A peer address on the frontend: routing id + request correlation id. */
typedef struct {
    uint8_t ident[S_IDENT_MAX];
    size_t ident_size;            /* 0 = nobody (reloaded job) */
    uint64_t req;
    bool events;                  /* the submitter wants the job's events (SUBMIT.events) */
    bool batch;                   /* it sent this request in a BATCH: answers may be batched */
    bool noack;                   /* SUBMIT.noack: no ACCEPTED, the RESULT answers */
} peer_t;

/*  A peer a job keeps for its life (its submitter), compact: a queued job
    holds one, and a ZeroMQ routing id is 5 bytes unless the client set its
    own (up to 255). Short ids live inline, longer ones on the heap (owned);
    am2zb_jpeer_* copy, expand and free them. */
#define AM2ZB_JPEER_INLINE 22
typedef struct {
    uint8_t *ident_long;          /* owned when ident_size > AM2ZB_JPEER_INLINE */
    uint64_t req;
    uint16_t ident_size;          /* 0 = nobody */
    uint8_t ident_inline[AM2ZB_JPEER_INLINE];
    bool events;
    bool batch;
    bool noack;
} jpeer_t;

typedef enum { JOB_WAITING = 0, JOB_ACTIVE, JOB_FAILING } job_status_t;

struct job_s {
    char id[AM2Z_ID_LEN + 1];
    proc_t *proc;                 /* borrowed: procs live until destroy */
    char *session_id;             /* owned */
    session_t *session;           /* borrowed; NULL when stopped or detached */
    uint8_t *state;               /* owned submitted state, NULL = none */
    size_t state_size;
    int64_t prio;
    uint64_t timeout_ms;
    uint64_t delay_ms;
    uint32_t depth;
    uint64_t created_ms;
    uint64_t seq;                 /* submission order */
    uint64_t not_before_ms;       /* not dispatched before (delay, backoff) */
    uint32_t attempt;             /* leases granted so far */
    job_status_t status;
    bool accepted;                /* its record is committed */
    bool tracked;                 /* it is the one in broker->jobs under its id */
    bool stopped;                 /* session stopped while leased */
    worker_t *worker;             /* lease holder when ACTIVE */
    uint64_t input_version;       /* metadata.version of the dispatched input */
    uint64_t expected_version;    /* stored version at dispatch (0 = none) */
    uint64_t event_seq;           /* last EVENT seq sent for this job */
    jpeer_t client;               /* the submitter (am2zb_jpeer_*) */
    peer_t *fetchers;             /* owned array: FETCH callers waiting */
    size_t nfetchers;
    void *lane_handle;            /* zlistx handle in session->lane */
    uint64_t deadline_us;         /* lease deadline (monotonic), 0 = none */
    zlistx_t *lease_list;         /* borrowed: broker->leases while in it */
    void *lease_handle;           /* handle in lease_list */
    uint64_t flow_id;             /* a workflow run's leaf step: its run, else 0 */
    int32_t flow_slot;            /* which unit of that run (am2z_flow.c) */
    void *ready_handle;           /* flow step waiting for a worker: its handle */
    bool overlay;                 /* state is a batch payload over the stored state */
    bool call;                    /* a nested call's child: no lane, no credit */
    uint64_t call_req;            /* its CALL's req, echoed in the RESULT */
    char *call_worker;            /* owned: id of the worker that called (call only) */
    /* idempotency + repeat + progress (issue 6) */
    uint64_t progress;            /* last job:progress value of any attempt */
    bool has_progress;            /* a job:progress event was seen */
    /* scheduling (issue 6) */
    bool requeued;                /* put back at its lane's front: stays first */
    bool cap_held;                /* counted in proc->leased */
    uint64_t dispatched_ms;       /* wall clock of the current/last lease, 0 = none */
};

/*  A lease the broker expired while its worker still runs it. */
typedef struct {
    char id[AM2Z_ID_LEN + 1];
    uint32_t attempt;
    proc_t *proc;                 /* borrowed */
} expired_t;

typedef struct {
    uint64_t completed;
    uint64_t failed;
} counts_t;

struct session_s {
    char *id;                     /* in the same allocation, after the struct */
    zlistx_t *lane;               /* job_t* by (prio desc, seq asc) (borrowed) */
    job_t *active;                /* ACTIVE or FAILING job, borrowed */
    proc_t *ring_proc;            /* whose ring holds us, or NULL */
    void *ring_handle;            /* handle in ring_list */
    void *delay_handle;           /* handle in broker->delayed */
    zhashx_t *stats;              /* proc name -> counts_t* (owned) */
    /* scheduling (issue 6) */
    zlistx_t *ring_list;          /* the bucket ring holding us (borrowed), or NULL */
    int64_t ring_prio;            /* that bucket's priority */
};

/*  Sessions ready for one processor whose head jobs have priority prio. */
typedef struct {
    int64_t prio;
    zlistx_t *ring;               /* session_t* (borrowed), round-robin order */
} bucket_t;

struct proc_s {
    char *name;                   /* owned */
    char *description;            /* owned, may be NULL */
    uint64_t timeout_ms;
    int64_t priority;
    am2z_retry_policy_t retry;
    bool registered;              /* some worker announced it since start */
    size_t rr;                    /* round-robin cursor into broker->workers */
    uint64_t queued;              /* its jobs in broker->jobs (waiting or leased) */
    counts_t counts;
    am2z_comp_desc_t *comp;       /* owned: a composite (run by the broker), or NULL */
    /* scheduling (issue 6): defaults from the first READY that announced it */
    bucket_t *buckets;            /* owned array, prio descending: ready sessions */
    size_t nbuckets;
    size_t buckets_cap;
    uint64_t delay_ms;            /* default job delay, 0 = none */
    uint32_t rate_max;            /* at most rate_max leases ... */
    uint64_t rate_per_ms;         /* ... in any rate_per_ms window; 0 = no limit */
    uint64_t *rate_ring;          /* owned: wall ms of the last rate_max leases */
    uint32_t rate_n;              /* entries in rate_ring */
    uint32_t rate_pos;            /* next to write (the oldest once full) */
    uint32_t max_active;          /* cap on leases across all workers, 0 = none */
    uint32_t leased;              /* leases holding a cap slot (job->cap_held) */
};

typedef struct {
    proc_t *proc;                 /* borrowed */
    uint64_t credit;              /* free slots now */
    uint32_t concurrency;         /* announced slots */
} wproc_t;

struct worker_s {
    char *id;                     /* owned: READY.worker */
    char key[2 * S_IDENT_MAX + 1];/* hex routing id: key in workers_by_key */
    uint8_t ident[S_IDENT_MAX];
    size_t ident_size;
    wproc_t *procs;               /* owned array */
    size_t nprocs;
    uint64_t last_seen_us;        /* monotonic */
    zlistx_t *expired;            /* expired_t* (owned): leases past deadline */
    bool batch;                   /* READY.batch: it reads BATCHes */
};

/*  What a turn's commit decides: the sends that wait for durability. */
typedef enum { EFF_SUBMIT = 0, EFF_FINISH, EFF_STOP, EFF_DLQ } effect_kind_t;

typedef struct effect_s {
    struct effect_s *next;        /* the turn's effects, in order (broker->effects) */
    effect_kind_t kind;
    job_t *job;                   /* SUBMIT, DLQ retry: borrowed (in lane); FINISH: owned */
    bool created;                 /* SUBMIT: first job of a new session */
    am2z_msg_t *result;           /* FINISH: the RESULT body (req 0), in the effect's own
                                     allocation; its job, processor and session point
                                     into the job (borrowed), the rest is owned */
    uint8_t *rbody;               /* FINISH: result encoded (req 0) as stored, owned;
                                     sent with each recipient's req spliced in */
    size_t rbody_size;
    char *worker;                 /* FINISH: worker id for the event, owned */
    uint64_t version;             /* FINISH: version of result.state, 0 = unknown */
    peer_t *peer;                 /* DLQ: requester, in the effect's own allocation
                                     (a turn's 1,000 SUBMIT effects do not each carry
                                     280 bytes for it) */
    char *session;                /* STOP: session id; DLQ: job id; owned */
    bool keep;                    /* STOP */
    bool retry;                   /* DLQ: retry (else discard) */
} effect_t;

/*  A query or fetch, answered after the turn's commit. */
typedef struct {
    peer_t peer;
    am2z_msg_t msg;               /* owned */
} deferred_t;

/*  A job to fail in the next turn's batch (e.g. unreadable stored state). */
typedef struct {
    char id[AM2Z_ID_LEN + 1];
    am2z_error_t *error;          /* owned */
} failure_t;

/*  A message held back until the commit it may speak for is durable
    (sync mode defers each commit's meta flush: am2z_store_defer_meta).
    One allocation: the struct, then ident, prefix (NUL-terminated), body. */
typedef struct {
    void *sock;                   /* borrowed: fe, be or pub */
    uint8_t *ident;               /* into this allocation, NULL = none */
    size_t ident_size;
    char *prefix;                 /* into this allocation, NULL = none */
    am2z_cmd_t cmd;
    uint8_t *body;                /* into this allocation */
    size_t size;
    uint64_t txn;                 /* sendable once am2z_store_durable() >= txn */
    bool batch;                   /* the client takes BATCHes (peer_t.batch) */
} held_t;

/*  The messages of one loop iteration for one peer that takes BATCHes (a
    client that sent one, a worker whose READY said so), sent as one BATCH
    at the end of the iteration (am2z_broker.c "Batched messages"). buf
    holds per message: the command (1 byte), the body size (sizeof size_t,
    host order), the body. */
#define S_CO_MAX 16
typedef struct {
    void *sock;                   /* fe or be */
    uint8_t ident[S_IDENT_MAX];
    size_t ident_size;
    uint8_t *buf;                 /* owned, kept across iterations */
    size_t len, cap;
    size_t n;                     /* messages in buf */
} coalesce_t;

struct am2z_broker_t {
    am2z_broker_config_t cfg;     /* copy */
    am2z_log_t *log;              /* owned */
    am2z_store_t *store;          /* owned */
    zsock_t *frontend;            /* ROUTER, clients */
    zsock_t *backend;             /* ROUTER, workers */
    zsock_t *events;              /* XPUB (publishes, counts subscriptions) or NULL */
    void *fe, *be, *pub;          /* raw libzmq handles of the above */
    uint64_t subs;                /* topics subscribed on events (XPUB), s_pub_drain */
    uint64_t subs_checked_us;     /* mono time of the last s_pub_drain */
    uint8_t rnd_pool[640];        /* getrandom bytes for job ids (s_make_job_id) */
    size_t rnd_left;              /* unused bytes at the end of rnd_pool */
    char endpoint[3][AM2Z_ENDPOINT_MAX];
    am2z_idmap_t *jobs;           /* id -> job_t* (owned) */
    am2z_idmap_t *sessions;       /* id -> session_t* (owned) */
    zhashx_t *procs;              /* name -> proc_t* (owned) */
    proc_t **proc_v;              /* the same procs in creation order (borrowed;
                                     the loop walks this: a zhashx walk scans
                                     every bucket) */
    size_t proc_n, proc_cap;
    zhashx_t *workers_by_key;     /* hex ident -> worker_t* (borrowed) */
    worker_t **workers;           /* owned array, registration order */
    size_t nworkers;
    size_t workers_cap;
    zlistx_t *delayed;            /* session_t* whose head is not yet due */
    effect_t *effects, *effects_tail;  /* this turn's effects, in order (owned; a list
                                     through effect_t.next: no node to allocate) */
    size_t neffects;
    zlistx_t *deferred;           /* deferred_t* of this turn (owned) */
    zlistx_t *failures;           /* failure_t* for the next turn (owned) */
    /* ids of jobs whose record needs a rewrite (a lease's attempt count),
       in lease order: inline, so a lease allocates nothing for it */
    char (*dirty)[AM2Z_ID_LEN + 1];
    size_t dirty_n, dirty_cap;
    zlistx_t *cleanup;            /* char* job ids whose record must go */
    am2z_store_batch_t *batch;    /* this turn's batch, opened on demand */
    int batch_rc;                 /* first failure to open it */
    uint64_t seq;                 /* submission counter */
    uint64_t started_ms;
    uint64_t started_us;
    uint64_t next_heartbeat_us;
    uint64_t completed, failed;   /* totals since start */
    zlistx_t *leases;             /* job_t* with a deadline (borrowed) */
    bool stopping;                /* $TERM, or drained after the stop flag */
    bool draining;                /* stop flag seen: no new work, leases finish */
    uint64_t drain_deadline_us;   /* give up on running leases then */
    struct am2zb_flows_s *flows;  /* owned: workflow runs (am2z_flow.c) */
    /* idempotency + repeat + progress (issue 6) */
    struct am2zb_repeats_s *repeats; /* owned: schedules, pending answers (am2z_repeat.c) */
    /* session lifecycle + retention (issue 6) */
    struct am2zb_lc_s *lc;        /* owned: session info, stops, retention (am2z_lifecycle.c) */
    /* sync durability with one fsync per commit (issue 7, am2z_broker.c "Outbox") */
    bool hold_sends;              /* commits become durable later: sends may wait */
    int store_fd;                 /* the store's writer reports here (sync + writer), or -1 */
    int store_failed;             /* the writer's failure: the loop stops, answers unsent */
    held_t **outbox;              /* owned ring of held messages, send order */
    size_t out_head;              /* first held message */
    size_t out_n;                 /* held messages */
    size_t out_cap;               /* slots in outbox */
    bool held_turn;               /* the outbox already waited through one turn */
    size_t turn_msgs;             /* commands handled by the last turn (a BATCH counts its pairs) */
    coalesce_t co[S_CO_MAX];      /* batched messages of this iteration, per peer */
    size_t co_n;                  /* peers in co with messages */
    uint64_t batch_in[2][2];      /* BATCHes received [clients, workers][count, commands] */
    uint64_t batch_out[2][2];     /* BATCHes sent, the same */
    uint64_t early_leases;        /* jobs leased before their turn's commit (sync) */
    uint64_t last_wait_us;        /* how long the last poll waited for input (s_poll) */
    uint64_t spin[3];             /* poll spins: started, caught input, µs spent */
};

/* am2z_sched.c ------------------------------------------------------------ */
job_t *am2zb_job_new(void);
void am2zb_job_destroy(job_t **job_p);
/*  peer gets job's RESULT when it comes. once (FETCH): at most one RESULT
    per connection (none extra for the submitter's); otherwise (a duplicate
    SUBMIT) one more for this request. */
void am2zb_job_add_fetcher(job_t *job, const peer_t *peer, bool once);

/*  Job peers. set/copy replace dst's peer (false when out of memory: dst
    is then nobody); load expands one into a peer_t; clear frees it. */
bool am2zb_jpeer_set(jpeer_t *dst, const peer_t *src);
bool am2zb_jpeer_copy(jpeer_t *dst, const jpeer_t *src);
void am2zb_jpeer_load(const jpeer_t *src, peer_t *dst);
void am2zb_jpeer_clear(jpeer_t *p);
static inline const uint8_t *
am2zb_jpeer_ident(const jpeer_t *p)
{
    return p->ident_size > AM2ZB_JPEER_INLINE ? p->ident_long : p->ident_inline;
}
void am2zb_lease_begin(am2z_broker_t *self, job_t *job, worker_t *worker, uint64_t now_ms);
void am2zb_lease_end(job_t *job);
void am2zb_job_track(am2z_broker_t *self, job_t *job);
void am2zb_job_untrack(am2z_broker_t *self, job_t *job);
session_t *am2zb_session_get(am2z_broker_t *self, const char *id, bool create);
void am2zb_session_remove(am2z_broker_t *self, session_t *session);
/*  proc must be a proc_t's own name: the session's table keeps the pointer
    as its key (procs outlive sessions). */
counts_t *am2zb_session_counts(session_t *session, const char *proc);
proc_t *am2zb_proc_get(am2z_broker_t *self, const char *name, bool create);
void am2zb_session_unready(am2z_broker_t *self, session_t *session);
void am2zb_session_kick(am2z_broker_t *self, session_t *session, uint64_t now_ms);
void am2zb_lane_push(session_t *session, job_t *job, bool front);
void am2zb_lane_remove(session_t *session, job_t *job);
worker_t *am2zb_worker_by_ident(am2z_broker_t *self, const uint8_t *ident, size_t size);
worker_t *am2zb_worker_add(am2z_broker_t *self, const uint8_t *ident, size_t size,
                       const char *id);
void am2zb_worker_forget(am2z_broker_t *self, worker_t *worker, const char *why);
wproc_t *am2zb_worker_proc(worker_t *worker, const proc_t *proc);
worker_t *am2zb_pick_worker(am2z_broker_t *self, proc_t *proc);
void am2zb_delayed_due(am2z_broker_t *self, uint64_t now_ms, uint64_t *next_ms);
void am2zb_ident_hex(const uint8_t *ident, size_t size, char *out);
/* scheduling (issue 6) */
/*  The first session of proc's highest non-empty priority bucket, or NULL. */
session_t *am2zb_ring_first(const proc_t *proc);
/*  Frees proc's buckets and rate ring (proc destructor). */
void am2zb_proc_sched_free(proc_t *proc);
/*  READY's scheduling defaults for a processor seen for the first time.
    Returns AM2Z_OK, or AM2Z_EINVAL / AM2Z_ENOMEM with why (for the log). */
int am2zb_proc_sched_set(proc_t *proc, const am2z_proc_desc_t *desc, const char **why);
/*  May proc lease one more job now (rate window and cap; call = a nested
    call's child, which only the rate limit holds)? */
bool am2zb_sched_admit(const proc_t *proc, uint64_t now_ms, bool call);
/*  Records a lease of job now: rate window, cap slot, job->dispatched_ms. */
void am2zb_sched_take(job_t *job, uint64_t now_ms);
/*  Gives back job's cap slot, if it holds one. Idempotent. */
void am2zb_sched_release(job_t *job);
/*  When proc's rate window next opens (wall ms), 0 = open now or no limit. */
uint64_t am2zb_sched_rate_next(const proc_t *proc);

/* am2z_broker.c (used by am2z_sched.c and am2z_flow.c) -------------------- */
void am2zb_send_worker(am2z_broker_t *self, const worker_t *worker, am2z_msg_t *msg);
void am2zb_job_event(am2z_broker_t *self, job_t *job, const char *name,
                 const uint8_t *data, size_t data_size);
/*  This turn's store batch (NULL when it cannot be opened). Only inside a
    turn (handlers, s_stage_leftovers), never after the commit. */
am2z_store_batch_t *am2zb_batch(am2z_broker_t *self);
int am2zb_put_job_record(am2z_broker_t *self, const job_t *job);
/*  Finishes a job (tables, result record, FINISH effect). Takes *state_p
    and *error_p. */
void am2zb_finish(am2z_broker_t *self, job_t *job, bool ok, uint8_t **state_p,
                  size_t state_size, am2z_error_t **error_p, uint64_t exec_us,
                  uint64_t started_ms, const char *worker_id);
/*  The input state of a job (BEHAVIOUR.md); sets input/expected version. */
int am2zb_resolve_input(am2z_broker_t *self, job_t *job, am2z_state_t **out);
am2z_error_t *am2zb_error_from_rc(int rc, const char *what);
/*  Writes the job to the dead-letter store in the turn's batch. */
void am2zb_dead_letter(am2z_broker_t *self, const job_t *job, const am2z_error_t *error);

/* am2z_flow.c: workflow runs of composites (BEHAVIOUR.md "Workflow runs").
   Every function runs on the loop thread. "In turn" = while the turn's
   batch may be written (handlers, s_stage_leftovers). ---------------------- */
typedef struct am2zb_flows_s am2zb_flows_t;
/*  Creates self->flows and loads the stored composites (registering them
    as procs), so reloaded composite jobs can resume before any worker
    comes back. Returns AM2Z_OK or AM2Z_ENOMEM. */
int am2zb_flow_new(am2z_broker_t *self);
/*  Frees runs (not jobs: the broker frees those). NULL-safe. */
void am2zb_flow_destroy(am2z_broker_t *self);
/*  READY.comps: registers (first definition wins) and stores them; returns
    how many were new. In turn. */
size_t am2zb_flow_register(am2z_broker_t *self, const am2z_comp_desc_t *comps, size_t n);
/*  In turn: starts runs for composite jobs at their lane's head, resumes
    stored runs, applies deadlines, writes changed run records. */
void am2zb_flow_tick(am2z_broker_t *self);
/*  After the commit: leases waiting steps to workers (priority, no lane). */
void am2zb_flow_dispatch(am2z_broker_t *self);
/*  When tick next has work: 0 = now (outcomes to apply, a composite job
    to start, run records to write), else ms to the earliest run deadline,
    UINT64_MAX = nothing pending. */
uint64_t am2zb_flow_next_ms(am2z_broker_t *self);
/*  A step's successful DONE (lease already ended, credit returned). In turn. */
void am2zb_flow_done(am2z_broker_t *self, job_t *job, worker_t *worker, am2z_msg_t *msg);
/*  A step failed for good (retries exhausted). Takes *error_p. In turn. */
void am2zb_flow_step_failed(am2z_broker_t *self, job_t *job, am2z_error_t **error_p);
/*  A step goes back to the ready list (retry after backoff, lost worker). */
void am2zb_flow_requeue(am2z_broker_t *self, job_t *job, uint64_t not_before_ms);
/*  Any job finishing through am2zb_finish (batch steps in other sessions
    are normal jobs). state/error borrowed. In turn. */
void am2zb_flow_job_finished(am2z_broker_t *self, const job_t *job, bool ok,
                             const uint8_t *state, size_t state_size,
                             const am2z_error_t *error);
/*  CALL from a worker: a child job of the calling job, in its session,
    dispatched ahead of everything without credit; its outcome goes back
    to the caller as RESULT {req}. Beyond max-call-depth the RESULT is a
    CallDepthExceeded failure at once. In turn. */
void am2zb_flow_call(am2z_broker_t *self, worker_t *worker, am2z_msg_t *msg);
/*  The session of a running composite job was stopped: the run ends
    without a result (the caller already got one), root job destroyed. */
void am2zb_flow_stop(am2z_broker_t *self, job_t *root);

/* idempotency + repeat + progress (issue 6) ---------------------------------
   am2z_repeat.c: idempotency keys (AM2Z_DB_IDEM), repeatable jobs
   (AM2Z_DB_REPEATS), job progress. Every function runs on the loop thread;
   "in turn" as for am2z_flow.c. */
struct am2z_bw_t;
/*  Creates self->repeats and loads the stored schedules (the next run of
    one overdue after downtime is its next due time >= now). Returns AM2Z_OK,
    AM2Z_ENOMEM or AM2Z_EIO. */
int am2zb_repeat_new(am2z_broker_t *self);
/*  NULL-safe. */
void am2zb_repeat_destroy(am2z_broker_t *self);
/*  In turn, for a validated SUBMIT (processor known, session and state
    valid): answers it when it is an idempotent duplicate (after the
    commit), reuses a key in conflict (ValidationError) or asks for a
    repeatable job (schedule stored, ACCEPTED {repeat} after the commit).
    Returns true when the SUBMIT is dealt with, false when a job must be
    created as usual. */
bool am2zb_repeat_on_submit(am2z_broker_t *self, const peer_t *peer, proc_t *proc,
                            am2z_msg_t *msg);
/*  In turn: remembers key -> first id for idem_window_ms. */
void am2zb_idem_put(am2z_broker_t *self, const char *key, const char *id, const char *proc,
                    const char *session, bool repeat);
/*  In turn: REPEAT {req, op: cancel, job}. */
void am2zb_repeat_on_command(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg);
/*  In turn: STOP_SESSION cancels the session's schedules. */
void am2zb_repeat_stop_session(am2z_broker_t *self, const char *session);
/*  In turn: creates the jobs of due schedules, sweeps expired keys (bounded). */
void am2zb_repeat_tick(am2z_broker_t *self);
/*  After the commit (and the turn's effects): sends the answers that
    waited for it; on a failed commit refuses them and reloads schedules. */
void am2zb_repeat_after_commit(am2z_broker_t *self, bool durable);
/*  Lowers *next_ms to the time until the next schedule is due. */
void am2zb_repeat_timer(am2z_broker_t *self, uint64_t now_ms, uint64_t *next_ms);
/*  QUERY what=repeats (session filter): writes the array into w. */
void am2zb_repeat_query(am2z_broker_t *self, const am2z_msg_t *msg, struct am2z_bw_t *w);
/*  A worker EVENT of a leased job: records job:progress on the job. */
void am2zb_progress_event(am2z_broker_t *self, job_t *job, const am2z_msg_t *msg);
/*  am2z_broker.c: creates a job for a SUBMIT past validation (see there). */
job_t *am2zb_submit_job(am2z_broker_t *self, const peer_t *peer, proc_t *proc,
                        am2z_msg_t *msg);
/*  am2z_broker.c: sends to a client (nobody: nothing); msg->req = peer's. */
void am2zb_send_client(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg);
/*  am2z_broker.c: ERROR to a client; takes *error_p. */
void am2zb_send_error(am2z_broker_t *self, const peer_t *peer, am2z_error_t **error_p);

/* session lifecycle + retention (issue 6): am2z_lifecycle.c. Every
   function runs on the loop thread; "in turn" as for am2z_flow.c. -------- */
typedef struct am2zb_lc_s am2zb_lc_t;
struct am2z_bw_t;
/*  Loads session info (sessinfo, stored states, reloaded lanes) and the
    retention index (`done`) into memory. After s_reload. AM2Z_OK, AM2Z_ENOMEM, AM2Z_EIO. */
int am2zb_lc_new(am2z_broker_t *self);
/*  NULL-safe. */
void am2zb_lc_destroy(am2z_broker_t *self);
/*  In turn: a job entered the session's lane (SUBMIT, DLQ retry). Creates
    the session's info (stored in the batch) when it is new: returns true
    then. The session is busy: it cannot expire. */
bool am2zb_lc_touch(am2z_broker_t *self, const char *session, uint64_t now_ms);
/*  In turn, from s_finish once the result record is in the batch: writes
    its `done` entry (and indexes it in memory), trims the processor's
    results beyond retain-completed / retain-failed, counts it for the
    session; when the session is now idle, stores its info and starts its
    TTL. session: the job's session in memory when the caller has it (one
    lookup fewer), or NULL. */
void am2zb_lc_finished(am2z_broker_t *self, const job_t *job, session_t *session, bool ok,
                       uint64_t now_ms);
/*  In turn: a job's result record goes (DLQ retry): its `done` entry too. */
void am2zb_lc_result_dropped(am2z_broker_t *self, const char *job_id);
/*  In turn: a dead letter was written; drops the oldest beyond dlq-max. */
void am2zb_lc_dead_lettered(am2z_broker_t *self, const char *job_id);
/*  In turn: a dead letter was deleted (retry, discard). */
void am2zb_lc_dlq_removed(am2z_broker_t *self);
/*  In turn, from STOP_SESSION once its jobs are cancelled: deletes the
    session's results, index entries and info unless keep; the REPLY goes
    after the commit, once wait_job (and, wait_all, every stopped leased job
    of the session) ended or stop-grace passed. */
void am2zb_lc_stop(am2z_broker_t *self, const peer_t *peer, const char *session, bool keep,
                   const char *wait_job, bool wait_all, uint64_t cancelled);
/*  In turn: expires idle sessions past session-ttl, trims results by age
    and by count (bounded work per turn). */
void am2zb_lc_tick(am2z_broker_t *self);
/*  After the commit: answers stops (or refuses them when !durable) and
    publishes session:cleanup. */
void am2zb_lc_committed(am2z_broker_t *self, bool durable);
/*  ms until the lifecycle needs a turn (UINT64_MAX: never). */
uint64_t am2zb_lc_next_ms(am2z_broker_t *self);
/*  The loop ends: stops still waiting are answered. */
void am2zb_lc_shutdown(am2z_broker_t *self);
/*  QUERY what=session-info (session?): writes the answer, or sends ERROR
    not_found and sets *answered. */
void am2zb_lc_query_info(am2z_broker_t *self, const peer_t *peer, const am2z_msg_t *msg,
                         struct am2z_bw_t *w, bool *answered);
/*  QUERY stats: writes AM2ZB_LC_STATS_FIELDS key/value pairs (store, ...). */
#define AM2ZB_LC_STATS_FIELDS 7
void am2zb_lc_write_stats(am2z_broker_t *self, struct am2z_bw_t *w);
/*  am2z_broker.c, for the above. */
void am2zb_event(am2z_broker_t *self, const char *name, const char *session,
                 const uint8_t *data, size_t data_size);
void am2zb_send_reply(am2z_broker_t *self, const peer_t *peer, uint8_t **data_p, size_t size);
/*  am2z_broker.c: the ResourceError naming the LMDB map. Caller owns it. */
am2z_error_t *am2zb_resource_error(am2z_broker_t *self);

#endif
