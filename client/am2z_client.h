/*  am2z_client.h — libam2z: run processors through an am2z broker.

    A client is one DEALER connection to a broker's frontend. It submits jobs
    (SUBMIT -> ACCEPTED once the job is durable in the broker's LMDB), and
    collects their results (RESULT), whichever worker on whichever host ran
    them. Events of the client's own jobs arrive on the same connection, in
    order, before that job's result.

    Results and failures: transport problems (broker unreachable, wait timed
    out, refused request) are the return code; a processor failure is a
    *successful call* whose result has success == false and an error.

    Sessions: each session has its own state, stored by the broker and
    versioned. Jobs of one session run one at a time, highest priority
    first, then in submission order;
    different sessions run in parallel. A job submitted with a state runs on
    that state's user keys, rebased onto the session's stored version; a job
    submitted without one continues from the stored state (or a fresh
    version-1 state for a new session). Each successful job stores
    version = previous + 1, so a session's version never goes backwards.

    Thread safety: a client is used by one thread at a time. Use one client
    per thread; they are cheap (one socket).
*/
#ifndef AM2Z_CLIENT_H_INCLUDED
#define AM2Z_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_result.h"
#include "am2z_state.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Default endpoints of am2z-broker (documented in the README). */
#define AM2Z_DEFAULT_FRONTEND "tcp://127.0.0.1:7770"
#define AM2Z_DEFAULT_EVENTS   "tcp://127.0.0.1:7772"

typedef struct am2z_client_t am2z_client_t;

/*  Results (am2z_result_t) are declared in am2z_result.h. */

/*  Per-job options. Zeroed (or NULL) = processor defaults. */
typedef struct {
    int64_t priority;             /* used when has_priority */
    bool has_priority;
    uint64_t timeout_ms;          /* job timeout; 0 = processor's */
    uint64_t delay_ms;            /* not dispatched before now + delay */
    const char *idempotency_key;  /* NULL = none */
    uint64_t repeat_every_ms;     /* > 0: a repeatable job, run every N ms */
    uint64_t repeat_limit;        /* repeatable: at most N runs; 0 = no limit */
    uint64_t repeat_start_ms;     /* repeatable: wall clock of the first run; 0 = now */
} am2z_submit_opts_t;

/* ---------------------------------------------------------------------------
   Connection
   ------------------------------------------------------------------------ */

/*  Connects to a broker frontend (NULL = AM2Z_DEFAULT_FRONTEND). ZeroMQ
    connects lazily: an absent broker shows up as AM2Z_ETIMEOUT on the first
    call. Returns AM2Z_OK, AM2Z_EINVAL (bad endpoint), AM2Z_ENETWORK, ENOMEM. */
int am2z_client_connect(const char *endpoint, am2z_client_t **out);

/*  Disconnects and frees. NULL-safe, idempotent. */
void am2z_client_destroy(am2z_client_t **self_p);

/*  Default wait for synchronous calls (ms; 0 = wait forever). Initially
    30000. */
void am2z_client_set_timeout(am2z_client_t *self, uint64_t timeout_ms);

/*  Text of the last refusal or transport failure ("" if none). Borrowed
    until the next call on this client. */
const char *am2z_client_last_error(const am2z_client_t *self);

/* ---------------------------------------------------------------------------
   Executing
   ------------------------------------------------------------------------ */

/*  Runs `processor` in `session_id` on `state` (NULL: continue from the
    session's stored state) and waits for the result. opts with
    repeat_every_ms is AM2Z_EINVAL (a schedule has no result: use submit). session_id NULL: the
    state's metadata.sessionId (state must then be given). opts may be NULL.
    Returns AM2Z_OK (*out set; check (*out)->success), AM2Z_EINVAL,
    AM2Z_ETIMEOUT (no result within the client's timeout; the job goes on
    and can be fetched by id — *out NULL; last_error names it),
    AM2Z_ENOTFOUND (the broker lost track of the job across a restart: it
    stopped before storing the SUBMIT, or retention dropped the result;
    the job may or may not have run), AM2Z_EIO (no random bytes for the
    job id), AM2Z_ENETWORK, AM2Z_EPROTO
    (a malformed answer; am2z_client_last_error says why). The job's result
    survives a broker restart or a reconnect: after 2 s without an answer
    the call asks for its job by id (FETCH). A SUBMIT the
    broker refuses (e.g. ProcessorNotFoundError) is AM2Z_OK with a failed
    result carrying the broker's error (its job_id is ""). */
int am2z_client_execute(am2z_client_t *self, const char *processor,
                        const am2z_state_t *state, const char *session_id,
                        const am2z_submit_opts_t *opts, am2z_result_t **out);

/*  AM2Z's executeInSession: same as execute with the session named first. */
int am2z_client_execute_in_session(am2z_client_t *self, const char *session_id,
                                   const char *processor,
                                   const am2z_state_t *state,
                                   am2z_result_t **out);

/*  Runs processor once per state (all submitted before any is awaited) and
    fills results[i] for states[i]; a failed job is a failed result, not an
    error. states[i] may be NULL (continue from stored state). Returns
    AM2Z_OK when every result arrived, else the first transport error
    (results that did arrive are set, the others NULL). */
int am2z_client_execute_many(am2z_client_t *self, const char *processor,
                             const am2z_state_t *const *states, size_t count,
                             const char *session_id, am2z_result_t **results);

/*  Asynchronous: submits and returns once the broker has made the job
    durable; job_id receives its id. Returns as execute, minus results,
    except that a refused SUBMIT is AM2Z_EFAILED (am2z_client_last_error
    says why).
    Idempotency (opts->idempotency_key): a key the broker saw within its
    idempotency window names the first job: job_id receives that job's id,
    nothing new runs, and waiting for it returns the first job's result.
    Reusing a key for another processor or session is refused (EFAILED).
    Repeatable (opts->repeat_every_ms > 0): the broker stores a schedule and
    job_id receives the REPEAT id (not a job id; nothing to wait for): see
    "Repeatable jobs" below. */
int am2z_client_submit(am2z_client_t *self, const char *processor,
                       const am2z_state_t *state, const char *session_id,
                       const am2z_submit_opts_t *opts,
                       char job_id[AM2Z_JOB_ID_MAX + 1]);

/*  Pipelined submit (BullMQ's addBulk): sends every SUBMIT before reading
    any answer — in BATCH messages of up to 1024 (docs/PROTOCOL.md
    "Batches"), answered in BATCHes too — then collects the broker's
    answers. execute_many submits the same way. states[i] may be NULL
    (continue from the stored state); session_ids may be NULL, and
    session_ids[i] NULL means states[i]'s session. job_ids[i] receives the
    id of each accepted (durable) job, or "" for a refused one (e.g. unknown
    processor; am2z_client_last_error names the last refusal). Collect the
    results with am2z_client_wait. Returns AM2Z_OK when every SUBMIT was
    answered, AM2Z_EINVAL (nothing sent), or the transport error. */
int am2z_client_submit_many(am2z_client_t *self, const char *processor,
                            const am2z_state_t *const *states,
                            const char *const *session_ids, size_t count,
                            char (*job_ids)[AM2Z_JOB_ID_MAX + 1]);

/*  Waits up to timeout_ms (0 = the client's default) for a job this client
    submitted, or fetches any job's stored result by id from the broker
    (store-and-collect: works after a reconnect). Returns AM2Z_OK,
    AM2Z_ETIMEOUT (not finished yet), AM2Z_ENOTFOUND (unknown job id).
    A result is handed over once; waiting again fetches it from the broker.
    The client keeps up to 4096 uncollected results; older ones are
    dropped locally and fetched from the broker when waited for. */
int am2z_client_wait(am2z_client_t *self, const char *job_id,
                     uint64_t timeout_ms, am2z_result_t **out);

/*  Non-blocking: AM2Z_OK with *out when the result is here, AM2Z_ETIMEOUT
    when not yet. Reads only what has arrived: it never asks the broker
    (use wait for a job this client has not submitted). */
int am2z_client_poll(am2z_client_t *self, const char *job_id,
                     am2z_result_t **out);

/* ---------------------------------------------------------------------------
   Sessions and introspection
   ------------------------------------------------------------------------ */

/*  Cancels the session's queued jobs (their callers get a failed RESULT,
    SESSION_STOPPED), sets the cancellation flag of its running job and
    waits — on the broker, up to its stop-grace — for that job's worker to
    answer; deletes the session's state, results and info unless
    keep_state (then the state and the results stay). Returns once the
    broker answered, so this client's timeout should exceed the broker's
    stop-grace. Unknown session: AM2Z_OK. */
int am2z_client_stop_session(am2z_client_t *self, const char *session_id,
                             bool keep_state);

/*  The session's stored state. AM2Z_OK, AM2Z_ENOTFOUND, AM2Z_ETIMEOUT. */
int am2z_client_get_state(am2z_client_t *self, const char *session_id,
                          am2z_state_t **out);

typedef struct {
    uint64_t waiting;             /* queued, due, not running */
    uint64_t active;              /* leased to a worker */
    uint64_t completed;
    uint64_t failed;
    uint64_t delayed;             /* queued, not yet due */
    uint64_t paused;
} am2z_queue_stats_t;

/*  A list of named queue stats (processors). */
typedef struct {
    size_t count;
    char **names;                 /* owned */
    am2z_queue_stats_t *stats;    /* owned; stats[i] belongs to names[i] */
} am2z_queue_list_t;
void am2z_queue_list_destroy(am2z_queue_list_t **self_p);

typedef struct {
    uint64_t uptime_ms;
    uint64_t processors;          /* registered processor names */
    uint64_t workers;             /* connected workers */
    uint64_t sessions;            /* active sessions */
    uint64_t running;
    uint64_t waiting;
    uint64_t completed;
    uint64_t failed;
} am2z_stats_t;

/*  A list of strings (processor names, session ids). */
typedef struct {
    size_t count;
    char **items;                 /* owned */
} am2z_strlist_t;
void am2z_strlist_destroy(am2z_strlist_t **self_p);

int am2z_client_get_stats(am2z_client_t *self, am2z_stats_t *out);
int am2z_client_get_queue_stats(am2z_client_t *self, am2z_queue_list_t **out);
/*  Per-session stats keyed by processor name. */
int am2z_client_get_session_stats(am2z_client_t *self, const char *session_id,
                                  am2z_queue_list_t **out);
int am2z_client_get_active_sessions(am2z_client_t *self, am2z_strlist_t **out);
int am2z_client_list_processors(am2z_client_t *self, am2z_strlist_t **out);
/*  *registered set; AM2Z_OK or a transport error. */
int am2z_client_is_processor_registered(am2z_client_t *self, const char *name,
                                        bool *registered);

/*  Raw query (what: stats|queues|session-stats|sessions|session-info|processors|
    state|job|dlq|repeats; docs/PROTOCOL.md QUERY says which use a session):
    the broker's REPLY data as one msgpack object (nil when the REPLY had
    none), caller owns *data (free()). The CLI turns it into JSON. For
    what = "job" the session_id argument carries the job id. Returns
    AM2Z_OK, AM2Z_ENOTFOUND (refused as not_found), AM2Z_EPROTO (other
    refusal), AM2Z_ETIMEOUT, AM2Z_ENETWORK. */
int am2z_client_query(am2z_client_t *self, const char *what,
                      const char *session_id, uint8_t **data, size_t *size);

/* ---------------------------------------------------------------------------
   Session lifecycle (issue 6)
   ------------------------------------------------------------------------ */

/*  What the broker knows of one session (QUERY what=session-info). */
typedef struct {
    char id[AM2Z_SESSION_ID_MAX + 1];
    uint64_t created_ms;          /* wall clock of its first job */
    uint64_t last_activity_ms;    /* wall clock of its last submit or finish */
    uint64_t queued;              /* jobs waiting (due or delayed) */
    uint64_t running;             /* jobs leased to a worker */
    uint64_t completed;           /* jobs completed since it was created */
    uint64_t failed;              /* jobs failed since it was created */
} am2z_session_info_t;

typedef struct {
    size_t count;
    am2z_session_info_t *items;   /* owned; in session id order */
} am2z_session_list_t;

/*  NULL-safe, idempotent. */
void am2z_session_list_destroy(am2z_session_list_t **self_p);

/*  What a stop did (the broker's STOP_SESSION REPLY). */
typedef struct {
    uint64_t cancelled;           /* queued and running jobs cancelled */
    uint64_t abandoned;           /* running jobs still running when stop-grace
                                     ran out (their outcome is discarded) */
} am2z_stop_report_t;

/*  am2z_client_stop_session that also reports what the stop did. out may
    be NULL. Same returns. */
int am2z_client_stop_session_report(am2z_client_t *self, const char *session_id,
                                    bool keep_state, am2z_stop_report_t *out);

/*  Every session the broker knows (queued or running jobs, stored state or
    info). Caller owns *out. Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_ETIMEOUT,
    AM2Z_ENETWORK, AM2Z_EPROTO. */
int am2z_client_session_list(am2z_client_t *self, am2z_session_list_t **out);

/*  One session's info into *out. Returns AM2Z_OK, AM2Z_ENOTFOUND (unknown
    session), AM2Z_EINVAL, or as session_list. */
int am2z_client_session_info(am2z_client_t *self, const char *session_id,
                             am2z_session_info_t *out);

/* ---------------------------------------------------------------------------
   Dead letters

   A job whose last attempt failed and may not be retried (attempts
   exhausted, or a non-retryable error) is kept by the broker as a dead
   letter: its submission (processor, session, input state, options), the
   attempts made and the last error. It can be listed, retried or
   discarded. Job ids are capabilities: whoever holds one may act on it.
   ------------------------------------------------------------------------ */

/*  One dead letter. Every pointer is owned by the enclosing list. */
typedef struct {
    char job_id[AM2Z_JOB_ID_MAX + 1];
    char processor[AM2Z_NAME_MAX + 1];
    char session_id[AM2Z_SESSION_ID_MAX + 1];
    uint32_t attempt;             /* attempts made */
    uint64_t created_ms;          /* wall clock of the submission */
    uint64_t failed_at_ms;        /* wall clock of the final failure */
    am2z_error_t *error;          /* the last error; NULL if unreadable */
    uint8_t *state;               /* submitted input state (msgpack map): only
                                     from am2z_client_dlq_get, NULL when the job
                                     was submitted without one */
    size_t state_size;
} am2z_dead_letter_t;

typedef struct {
    size_t count;
    am2z_dead_letter_t *items;    /* owned; in job id (submission time) order */
} am2z_dlq_list_t;

/*  NULL-safe, idempotent. */
void am2z_dlq_list_destroy(am2z_dlq_list_t **self_p);

/*  Lists dead letters, at most 1000, optionally only those of `processor`
    and/or `session_id` (NULL = any). Caller owns *out. Returns AM2Z_OK,
    AM2Z_EINVAL, AM2Z_ETIMEOUT, AM2Z_ENETWORK, AM2Z_EPROTO. */
int am2z_client_dlq_list(am2z_client_t *self, const char *processor,
                         const char *session_id, am2z_dlq_list_t **out);

/*  One dead letter with its input state: *out is a list of one. Returns
    AM2Z_OK, AM2Z_ENOTFOUND, or as dlq_list. */
int am2z_client_dlq_get(am2z_client_t *self, const char *job_id, am2z_dlq_list_t **out);

/*  Re-enqueues a dead letter under the SAME job id, with fresh attempts
    (the processor's retry policy applies again) and the input it was
    submitted with (no state: the session's stored state at dispatch). Its
    old failed result is deleted at the same time, so
    am2z_client_wait(job_id) — from any client — returns the new outcome.
    Returns AM2Z_OK once the re-enqueue is durable, AM2Z_ENOTFOUND (no
    such dead letter), AM2Z_EFAILED (refused: queue limit, broker shutting
    down, job already queued; am2z_client_last_error says why),
    AM2Z_ETIMEOUT, AM2Z_ENETWORK. */
int am2z_client_dlq_retry(am2z_client_t *self, const char *job_id);

/*  Deletes a dead letter (its failed result stays fetchable). Returns
    AM2Z_OK, AM2Z_ENOTFOUND, AM2Z_EFAILED, AM2Z_ETIMEOUT, AM2Z_ENETWORK. */
int am2z_client_dlq_discard(am2z_client_t *self, const char *job_id);

/* ---------------------------------------------------------------------------
   Repeatable jobs (issue 6)

   am2z_client_submit with opts->repeat_every_ms > 0 stores a schedule in
   the broker: one normal job of `processor` in the session, with the
   submitted state and options, at opts->repeat_start_ms (wall clock ms; 0 =
   now, plus opts->delay_ms) and then every repeat_every_ms, at most
   repeat_limit times (0 = until cancelled). The schedule survives a broker
   restart; runs missed while the broker was down are not made up (the
   next run is the next due time). Stopping the session cancels it.
   ------------------------------------------------------------------------ */

/*  One schedule. */
typedef struct {
    char id[AM2Z_JOB_ID_MAX + 1];           /* the repeat id */
    char processor[AM2Z_NAME_MAX + 1];
    char session_id[AM2Z_SESSION_ID_MAX + 1];
    uint64_t every_ms;
    uint64_t limit;               /* 0 = no limit */
    uint64_t runs;                /* jobs created so far */
    uint64_t next_ms;             /* wall clock of the next run */
    uint64_t created_ms;
    char last_job_id[AM2Z_JOB_ID_MAX + 1];  /* "" = none yet */
} am2z_repeat_t;

typedef struct {
    size_t count;
    am2z_repeat_t *items;         /* owned; in repeat id (creation) order */
} am2z_repeat_list_t;

/*  NULL-safe, idempotent. */
void am2z_repeat_list_destroy(am2z_repeat_list_t **self_p);

/*  The broker's schedules, optionally of one session (NULL = all). Caller
    owns *out. Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_ETIMEOUT, AM2Z_ENETWORK,
    AM2Z_EPROTO. */
int am2z_client_repeat_list(am2z_client_t *self, const char *session_id,
                            am2z_repeat_list_t **out);

/*  Deletes a schedule: no further runs (a job already created runs).
    Returns AM2Z_OK once durable, AM2Z_ENOTFOUND (no such schedule),
    AM2Z_EFAILED (refused), AM2Z_EINVAL, AM2Z_ETIMEOUT, AM2Z_ENETWORK. */
int am2z_client_repeat_cancel(am2z_client_t *self, const char *repeat_id);

/* ---------------------------------------------------------------------------
   Events
   ------------------------------------------------------------------------ */

/*  An event. Strings and data borrowed for the callback only. */
typedef struct {
    const char *name;             /* e.g. "processor:job:completed" */
    const char *job_id;           /* may be "" */
    const char *session_id;       /* may be "" */
    const char *processor;        /* may be "" */
    uint32_t attempt;
    uint64_t ts_ms;
    uint64_t seq;                 /* per-job order */
    const uint8_t *data;          /* one msgpack object, or NULL */
    size_t data_size;
} am2z_event_t;

typedef void (am2z_event_fn)(const am2z_event_t *event, void *arg);

/*  Calls fn for each event of this client's own jobs whose name starts with
    prefix ("" = all), on the calling thread while the client waits. At most
    16 subscriptions. fn must not call this client. Returns AM2Z_OK,
    AM2Z_ERESOURCE. */
int am2z_client_on_event(am2z_client_t *self, const char *prefix,
                         am2z_event_fn *fn, void *arg);

/*  The broker-wide feed (PUB). Sessions filter: NULL = all sessions. */
typedef struct am2z_events_t am2z_events_t;

/*  Subscribes to endpoint (NULL = AM2Z_DEFAULT_EVENTS) with a name prefix
    ("" = everything). Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_ENETWORK. */
int am2z_events_subscribe(const char *endpoint, const char *prefix,
                          const char *session_id, am2z_events_t **out);
/*  Waits up to timeout_ms (0 = forever) for one event and calls fn.
    AM2Z_OK, AM2Z_ETIMEOUT (also when a signal interrupts the wait, so the
    caller can look at its flags), AM2Z_ENETWORK. */
int am2z_events_next(am2z_events_t *self, uint64_t timeout_ms,
                     am2z_event_fn *fn, void *arg);
void am2z_events_destroy(am2z_events_t **self_p);

#ifdef __cplusplus
}
#endif
#endif
