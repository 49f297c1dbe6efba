/*  am2z_worker_priv.h — what the worker's main thread (am2z_worker.c) and
    its processor actors (am2z_ctx.c) share. Not installed, not public.

    The two sides talk only over inproc ZeroMQ: the main thread owns one
    ROUTER; each actor owns one DEALER connected to it, whose routing id is
    the actor's slot index (uint32_t, host order). So the main thread polls
    one socket for all its actors, and each actor costs one socket.

        main -> actor   ["JOB", ptr]    ptr = am2z_msg_t * (a decoded JOB);
                                        the actor takes ownership
        main -> actor   ["RESULT", body] the answer to the actor's CALL
        main -> actor   "$TERM"         end the thread (main then joins it)
        actor -> main   ["EVENT", body] an encoded EVENT body, ready to send
        actor -> main   ["CALL", body]  an encoded CALL body (a nested call)
        actor -> main   ["DONE", body]  an encoded DONE body, ready to send;
                                        the actor is idle again after it

    (The ROUTER prepends/strips the routing id.) One actor's messages reach
    the main thread in the order it sent them, so a job's EVENTs precede its
    DONE. The actor encodes whole bodies so the main thread only prepends the
    protocol signature and forwards: it never decodes a state and never runs
    processor code. The only memory both threads touch is the slot's
    cancellation flag (atomic) and the actor's immutable arguments below.
*/
#ifndef AM2Z_WORKER_PRIV_H_INCLUDED
#define AM2Z_WORKER_PRIV_H_INCLUDED

#include <czmq.h>
#include <stdatomic.h>
#include <zmq.h>

#include "am2z_compose.h"
#include "am2z_worker.h"

/*  Default largest next state a processor may produce (bytes). */
#define AM2ZW_MAX_STATE_DEFAULT ((size_t)1 << 20)

/*  Arguments of one actor thread. Owned by the main thread's slot; written
    before the actor starts and never changed while it runs, so the actor
    reads them without locks. */
typedef struct {
    const char *processor;        /* processor name; borrowed from the worker */
    am2z_processor_fn *fn;        /* the processor */
    void *arg;                    /* user pointer for am2z_ctx_arg() */
    am2z_log_t *log;              /* the worker's logger (thread-safe) */
    size_t max_state_size;        /* limit passed to am2z_state_apply */
    atomic_bool *cancel;          /* the slot's cancellation flag (main sets it) */
    void *sock;                   /* DEALER, connected by main; the thread owns
                                     (and closes) it once started */
} am2zw_actor_args_t;

/*  The actor thread body (a pthread start routine). args is an
    am2zw_actor_args_t *. Returns NULL after "$TERM". */
void *am2zw_actor(void *args);

/*  Receives one whole message into parts[0..max-1] (parts beyond max are
    dropped). flags apply to the first part (ZMQ_DONTWAIT). Returns the
    number of parts (>= 1), or -1 and errno when nothing was received.
    Release with am2zw_close(parts, n, max). */
int am2zw_recv(void *sock, zmq_msg_t *parts, int max, int flags);
void am2zw_close(zmq_msg_t *parts, int n, int max);

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
