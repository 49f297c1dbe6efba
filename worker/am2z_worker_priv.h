/*  am2z_worker_priv.h — what the worker's main thread (am2z_worker.c) and
    its processor actors (am2z_ctx.c) share. Not installed, not public.

    The two sides talk only through the actor's PAIR pipe:

        main -> actor   ["JOB", ptr]    ptr = am2z_msg_t * (a decoded JOB);
                                        the actor takes ownership
        actor -> main   ["EVENT", body] an encoded EVENT body, ready to send
        actor -> main   ["DONE", body]  an encoded DONE body, ready to send;
                                        the actor is idle again after it
        main -> actor   "$TERM"         (zactor_destroy) end the thread

    The actor encodes whole bodies so the main thread only prepends the
    protocol signature and forwards: it never decodes a state and never runs
    processor code. The only memory both threads touch is the slot's
    cancellation flag (atomic) and the actor's immutable arguments below.
*/
#ifndef AM2Z_WORKER_PRIV_H_INCLUDED
#define AM2Z_WORKER_PRIV_H_INCLUDED

#include <czmq.h>
#include <stdatomic.h>

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
} am2zw_actor_args_t;

/*  The actor thread body (a zactor_fn). args is an am2zw_actor_args_t *. */
void am2zw_actor(zsock_t *pipe, void *args);

#endif
