/*  am2z_worker_priv.h — what the worker's main thread (am2z_worker.c) and
    its processor actors (am2z_pool.c, am2z_ctx.c) share. Not installed,
    not public.

    The two sides talk only by messages (am2zw_item_t), through a mailbox
    guarded by one mutex (am2z_pool.c):

        main -> lane   JOB     a decoded JOB for slot s; the first thread
                               of that processor's lane to look takes it
        main -> actor  RESULT  the answer to the CALL of slot s's job
        actor -> main  EVENT   an encoded EVENT body, ready to send
        actor -> main  CALL    an encoded CALL body (a nested call)
        actor -> main  DONE    an encoded DONE body (empty: not encoded);
                               slot s is free again after it

    The actors' messages reach the main thread in one queue in the order
    they were sent, so a job's EVENTs precede its DONE; the main thread
    polls an eventfd that the first message after it went to sleep
    signals. The actor encodes whole bodies so the main thread only
    prepends the protocol signature and forwards: it never decodes a state
    and never runs processor code. Slots (credit, leases, cancellation)
    are the main thread's; threads are the pool's, started on demand per
    lane and not tied to a slot. The only memory both sides touch outside
    the mailbox is a slot's cancellation flag (atomic).

    Why not a ZeroMQ inproc pair per actor (the first design): each pair
    holds libzmq pipe chunks of 64 to 128 KiB, so a slot cost about
    100 KiB, and every job woke its own actor thread (an eventfd write and
    a poll each way). Here a slot costs a few pointers, a thread that
    finishes a job takes the next without sleeping, and only as many
    threads exist as the jobs ever needed at once.
*/
#ifndef AM2Z_WORKER_PRIV_H_INCLUDED
#define AM2Z_WORKER_PRIV_H_INCLUDED

#include <czmq.h>
#include <stdatomic.h>
#include <zmq.h>

#include "am2z_codec.h"
#include "am2z_compose.h"
#include "am2z_log.h"
#include "am2z_worker.h"

/*  Default largest next state a processor may produce (bytes). */
#define AM2ZW_MAX_STATE_DEFAULT ((size_t)1 << 20)

/*  One processor's lane of actor threads. */
typedef struct {
    const char *processor;        /* processor name; borrowed from the worker */
    am2z_processor_fn *fn;        /* the processor */
    void *arg;                    /* user pointer for am2z_ctx_arg() */
    size_t max_threads;           /* threads started at most (>= its slots) */
} am2zw_lane_def_t;

typedef enum { AM2ZW_JOB, AM2ZW_RESULT, AM2ZW_EVENT, AM2ZW_CALL, AM2ZW_DONE } am2zw_kind_t;

/*  One message between the main thread and an actor. */
typedef struct am2zw_item_t {
    struct am2zw_item_t *next;
    am2zw_kind_t kind;
    uint32_t slot;                /* the slot whose job it concerns */
    uint32_t seq;                 /* CALL, RESULT: the call's number on its thread */
    atomic_bool *cancel;          /* JOB: the slot's cancellation flag */
    am2z_msg_t *job;              /* JOB: owned decoded message */
    uint8_t *body;                /* others: owned bytes (may be NULL) */
    size_t size;
} am2zw_item_t;

typedef struct am2zw_pool_t am2zw_pool_t;
typedef struct am2zw_thread_t am2zw_thread_t;

/*  A pool for nlanes lanes (copied) and nslots slot numbers. A thread that
    waited idle_ms for a JOB exits unless it is its lane's last (0: threads
    stay once started). NULL when out of memory or no eventfd. Destroy
    ends every thread: each finishes the job it runs (a waiting nested
    call ends cancelled), then is joined; queued JOBs and undelivered
    messages are freed. */
am2zw_pool_t *am2zw_pool_new(const am2zw_lane_def_t *lanes, size_t nlanes, size_t nslots,
                             am2z_log_t *log, size_t max_state_size, uint64_t idle_ms);
void am2zw_pool_destroy(am2zw_pool_t **p_p);

/*  Main thread. Queues *job (taken on AM2Z_OK) for slot on lane. Returns
    AM2Z_ENOMEM when no thread could take it (the caller keeps job).
    own_thread: the job must not wait for a busy thread (a nested call's
    child, whose caller may be what keeps the lane's threads busy): one is
    woken or started for it, or it is refused. */
int am2zw_pool_job(am2zw_pool_t *p, size_t lane, uint32_t slot, atomic_bool *cancel,
                   am2z_msg_t *job, bool own_thread);
/*  Main thread. Hands a copy of body to the thread running slot's job: the
    answer to its CALL number seq (the CALL item's seq). AM2Z_ESTATE when no
    thread runs it, or it no longer waits for that call (it gave up on it,
    cancelled, and may have made another since). */
int am2zw_pool_result(am2zw_pool_t *p, uint32_t slot, uint32_t seq, const void *body,
                      size_t size);
/*  Main thread, before it sleeps in a poll that includes am2zw_pool_fd:
    false when messages already wait (then do not sleep). */
bool am2zw_pool_sleep(am2zw_pool_t *p);
int am2zw_pool_fd(const am2zw_pool_t *p);
/*  Main thread: every message the actors sent since the last take, oldest
    first (caller frees with am2zw_items_free). signalled: the poll found
    the eventfd readable (it is cleared). */
am2zw_item_t *am2zw_pool_take(am2zw_pool_t *p, bool signalled);
/*  Threads started so far (every lane). */
size_t am2zw_pool_threads(am2zw_pool_t *p);

void am2zw_item_free(am2zw_item_t *it);
void am2zw_items_free(am2zw_item_t *list);

/*  Actor side. Sends an EVENT or CALL body to the main thread (takes
    *body_p). Returns AM2Z_OK or AM2Z_ENOMEM. */
int am2zw_pool_send(am2zw_thread_t *t, am2zw_kind_t kind, uint8_t **body_p, size_t size);
/*  Actor side: waits for the RESULT of this thread's CALL. AM2Z_OK with
    *body_p (owned) or AM2Z_ESTATE when cancel was set or the pool ends. */
int am2zw_pool_wait_result(am2zw_thread_t *t, atomic_bool *cancel, uint8_t **body_p,
                           size_t *size_p);

/*  Runs one JOB on thread t (am2z_ctx.c): decodes the input, calls fn,
    applies the changes, and returns the encoded DONE body in *done_p
    (NULL when it could not be encoded). */
void am2zw_run_job(am2zw_thread_t *t, const char *processor, am2z_processor_fn *fn,
                   void *arg, am2z_log_t *log, size_t max_state_size,
                   const am2z_msg_t *job, atomic_bool *cancel,
                   uint8_t **done_p, size_t *done_size);

/* ---------------------------------------------------------------------------
   Running one processor, for whichever host runs it: the worker's actors
   (events go over the actor pipe) or the local runtime (events go to its
   callback, nested calls run in-process).
   ------------------------------------------------------------------------ */

/*  What a ctx needs from the code that runs the processor. */
typedef struct {
    /*  Delivers one event of the running job (seq: 1, 2, ... per job).
        Returns AM2Z_OK or an error for the emitter. */
    int (*emit)(void *host, const am2z_ctx_t *ctx, const char *event,
                const uint8_t *data, size_t size, uint64_t seq);
    /*  Runs a nested call (am2z_ctx_call); NULL = not supported here. */
    int (*call)(void *host, am2z_ctx_t *ctx, const char *name,
                const am2z_state_t *state, am2z_result_t **out);
    void *host;                   /* first argument of both */
} am2zw_host_t;

/*  Valid only during one processor call, on the thread running it. Every
    pointer is borrowed from the invocation (am2zw_invoke_t). */
struct am2z_ctx_t {
    const char *processor;
    const char *session;
    const char *job_id;
    uint32_t attempt;
    uint32_t depth;
    void *arg;
    am2z_log_t *log;
    atomic_bool *cancel;              /* may be NULL: never cancelled */
    const am2z_state_t *state;        /* input */
    am2z_changes_t *changes;          /* owned by am2zw_invoke */
    am2z_error_t *error;              /* set by am2z_ctx_fail; owned */
    bool failed;                      /* am2z_ctx_fail was called */
    uint64_t seq;                     /* last event sequence number */
    uint64_t started_ms;              /* wall clock at start */
    char selected[AM2Z_NAME_MAX + 1]; /* am2z_ctx_select's key */
    bool has_selected;
    const am2zw_host_t *host;
};

/*  One processor run. */
typedef struct {
    const char *processor;
    am2z_processor_fn *fn;
    void *arg;
    am2z_log_t *log;
    size_t max_state_size;            /* 0 = AM2ZW_MAX_STATE_DEFAULT */
    atomic_bool *cancel;              /* may be NULL */
    const char *session;
    const char *job_id;
    uint32_t attempt;
    uint32_t depth;
    const am2z_state_t *input;
    const am2zw_host_t *host;
} am2zw_invoke_t;

/*  What the run produced. next (success) or error (failure) is set;
    changes are the recorded changes when it succeeded (may be NULL). All
    owned by the caller (am2zw_outcome_clear). */
typedef struct {
    am2z_state_t *next;
    am2z_changes_t *changes;
    am2z_error_t *error;
    uint64_t exec_us;                 /* >= 1 */
    uint64_t started_ms;
    char selected[AM2Z_NAME_MAX + 1]; /* route selector's choice, "" = none */
} am2zw_outcome_t;

/*  Calls the processor with a fresh ctx and applies its changes: a typed
    failure, any other non-zero return (an execution error naming it) or a
    failed apply (non-retryable execution error) becomes out->error. */
void am2zw_invoke(const am2zw_invoke_t *inv, am2zw_outcome_t *out);
void am2zw_outcome_clear(am2zw_outcome_t *out);

/*  Deep copy of a composite definition (caller owns: am2zw_composite_free).
    NULL when out of memory. */
am2z_composite_def_t *am2zw_composite_dup(const am2z_composite_def_t *def);
void am2zw_composite_free(am2z_composite_def_t **def_p);

/*  The wire form of a definition (READY.comps[]), a deep copy: *out is
    zeroed first; on failure it holds nothing. Returns AM2Z_OK, AM2Z_EINVAL
    (kind out of range), AM2Z_ENOMEM. Clear with am2z_comp_desc_clear. */
int am2zw_composite_desc(const am2z_composite_def_t *def, am2z_comp_desc_t *out);

#endif
