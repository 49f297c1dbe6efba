/*  am2z_worker.h — processors and the worker that runs them.

    A processor is a C function over a session state:

        static int increment(am2z_ctx_t *ctx) {
            int64_t n = 0;
            am2z_state_get_int(am2z_ctx_state(ctx), "count", &n);
            am2z_changes_set_int(am2z_ctx_changes(ctx), "count", n + 1);
            return AM2Z_OK;
        }

    It reads the (immutable) input state, records changes, and returns
    AM2Z_OK for success. To fail it calls am2z_ctx_fail() with a typed error
    and returns its value; any other non-zero return becomes a
    ProcessorExecutionError naming the code. The runtime applies the changes,
    bumps metadata.version by one and stamps lastUpdated.

    A worker connects to a broker's backend (DEALER -> ROUTER), announces its
    processors with READY (credit = each processor's concurrency), and runs
    every processor in its own actor threads: started on demand, at most as
    many as jobs of it run at once (its concurrency), reused without
    sleeping while its jobs keep coming, and gone again (all but one) after
    cfg.thread_idle_ms without a job.
    The worker's main thread owns the broker socket, heartbeats and forwards
    events; it never runs processor code.

    A JOB for an unknown processor, or beyond the processor's free slots
    (the broker broke the credit rule), is answered at once with a failed
    DONE (ProcessorNotFoundError, retryable ResourceError). Exception: after
    a re-registration, jobs of the old registration may still occupy slots
    (they are cancelled and their outcomes dropped: the broker re-dispatches
    them itself), so a JOB that finds no free slot then waits for one. A JOB's lease
    length (`timeout`) sets the job's cancellation flag when it runs out.
    Broker silent for liveness x heartbeat: new socket, READY again (full
    credit; running jobs' DONEs still flow); while it stays silent, again
    after an exponential backoff with jitter (100 ms doubling to 5 s, never
    less than one heartbeat), reset as soon as the broker is heard. A
    restarted broker thus gets the worker back within seconds. DISCONNECT
    from the broker: READY again.

    Stopping (SIGTERM in am2z-example-worker, am2z_worker_stop) drains: jobs
    already running go on for up to cfg.grace_ms and their outcomes are
    delivered; heartbeats go on meanwhile so the broker keeps the leases. A
    JOB arriving meanwhile is not run: it is held, which also uses up the
    broker's credit for us. When nothing runs any more, or the grace period
    is over, the worker sends DISCONNECT: the broker re-dispatches every job
    the worker still holds (held, or still running) as a new attempt. Only
    then are running jobs cancelled; their outcomes are dropped. No job is
    lost and none completes twice.

    Thread safety: am2z_worker_t is used from one thread (the one that
    created it); a processor's ctx belongs to the actor thread running it.
    am2z_ctx_cancelled() is the only ctx call another thread influences.
*/
#ifndef AM2Z_WORKER_H_INCLUDED
#define AM2Z_WORKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_codec.h"     /* am2z_retry_policy_t */
#include "am2z_error.h"
#include "am2z_log.h"
#include "am2z_state.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct am2z_ctx_t am2z_ctx_t;
typedef struct am2z_worker_t am2z_worker_t;

/*  A processor. Returns AM2Z_OK on success; see the file comment. */
typedef int (am2z_processor_fn)(am2z_ctx_t *ctx);

/*  What a worker serves. Strings are copied at registration. */
typedef struct {
    const char *name;             /* valid name (am2z_name_valid) */
    am2z_processor_fn *fn;        /* required */
    void *arg;                    /* user pointer, am2z_ctx_arg(); borrowed */
    const char *description;      /* may be NULL */
    uint32_t concurrency;         /* slots (jobs run at once); 0 means 1 */
    uint64_t timeout_ms;          /* 0 = none */
    int64_t priority;             /* default job priority (higher runs first) */
    am2z_retry_policy_t retry;    /* zeroed = defaults */
    uint64_t delay_ms;            /* default job delay; 0 = none */
    uint32_t rate_max;            /* rate limit: at most rate_max jobs started ... */
    uint64_t rate_interval_ms;    /* ... per rate_interval_ms, enforced by the
                                     broker across all workers; 0/0 = none;
                                     one without the other (or rate_max >
                                     1,000,000) is refused at registration */
    uint32_t max_active;          /* global cap on running jobs across all
                                     workers (besides each worker's slots); 0 = none */
    /* Every duration above (timeout_ms, delay_ms, rate_interval_ms and the
       retry policy's delays) is at most 10 years (AM2Z_CODEC_MAX_DURATION_MS);
       a longer one is refused at registration. */
} am2z_processor_def_t;

/* ---------------------------------------------------------------------------
   Processor context (valid only during the processor call, on its thread)
   ------------------------------------------------------------------------ */

/*  The input state: borrowed until the processor returns. */
const am2z_state_t *am2z_ctx_state(const am2z_ctx_t *ctx);

/*  Where the processor records its changes. Borrowed until it returns. */
am2z_changes_t *am2z_ctx_changes(am2z_ctx_t *ctx);

/*  Fails the job with `*error_p` (taken, *error_p nulled). Returns
    AM2Z_EFAILED so a processor can `return am2z_ctx_fail(ctx, &e);`.
    A NULL error (out of memory) still fails the job. */
int am2z_ctx_fail(am2z_ctx_t *ctx, am2z_error_t **error_p);

/*  Publishes a custom event (name valid, data one msgpack object or NULL).
    It reaches the submitting client before the job's result, and the PUB
    feed. Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_EPROTO (data not one object). */
int am2z_ctx_emit(am2z_ctx_t *ctx, const char *event,
                  const uint8_t *data, size_t size);

/*  Publishes job:progress with {progress: n}. */
int am2z_ctx_progress(am2z_ctx_t *ctx, uint64_t n);

/*  True once the job is cancelled (timeout, stop-session, shutdown). A
    long-running processor polls it and returns early. */
bool am2z_ctx_cancelled(const am2z_ctx_t *ctx);

/*  Metadata. Strings borrowed until the processor returns. */
const char *am2z_ctx_processor(const am2z_ctx_t *ctx);
const char *am2z_ctx_session_id(const am2z_ctx_t *ctx);
const char *am2z_ctx_execution_id(const am2z_ctx_t *ctx);   /* = job id */
uint32_t am2z_ctx_attempt(const am2z_ctx_t *ctx);           /* 1-based */
uint32_t am2z_ctx_call_depth(const am2z_ctx_t *ctx);
uint64_t am2z_ctx_started_at(const am2z_ctx_t *ctx);        /* wall ms */
void *am2z_ctx_arg(const am2z_ctx_t *ctx);

/*  The worker's logger (component "processor"; key/values name the job). */
am2z_log_t *am2z_ctx_log(const am2z_ctx_t *ctx);

/* ---------------------------------------------------------------------------
   Worker
   ------------------------------------------------------------------------ */

typedef struct {
    char broker[256];             /* backend endpoint, e.g. tcp://127.0.0.1:7771 */
    char id[65];                  /* worker instance id; "" = generated */
    uint64_t heartbeat_ms;        /* heartbeat interval */
    uint32_t liveness;            /* missed heartbeats before the broker is dead */
    int log_level;                /* am2z_log_level_t */
    int log_format;               /* am2z_log_format_t */
    uint64_t max_state_size;      /* largest next state a processor may
                                     produce, bytes; 0 = 1 MiB */
    uint64_t grace_ms;            /* stop: how long running jobs may go on
                                     before they are handed back; 0 = hand
                                     back at once */
    uint64_t thread_idle_ms;      /* an actor thread that had no job this
                                     long exits (each processor keeps one);
                                     0 = threads stay once started */
} am2z_worker_config_t;

/*  Default grace period of a stopping worker. */
#define AM2Z_WORKER_GRACE_DEFAULT_MS 10000

/*  Default idle time after which an actor thread exits. */
#define AM2Z_WORKER_THREAD_IDLE_DEFAULT_MS 60000

/*  Default backend endpoint of am2z-broker. */
#define AM2Z_DEFAULT_BACKEND "tcp://127.0.0.1:7771"

/*  Defaults: broker AM2Z_DEFAULT_BACKEND, heartbeat 1000 ms, liveness 5,
    log info/text, max_state_size 1 MiB, grace 10 s. */
void am2z_worker_config_defaults(am2z_worker_config_t *cfg);

/*  Creates a worker (not yet connected). cfg is copied. Returns NULL when out
    of memory. */
am2z_worker_t *am2z_worker_new(const am2z_worker_config_t *cfg);

/*  Stops (if running) and frees. NULL-safe, idempotent. */
void am2z_worker_destroy(am2z_worker_t **self_p);

/*  Registers a processor; only before start/run. Returns AM2Z_OK, AM2Z_EINVAL
    (bad name, no fn, duplicate name, a rate limit without its interval or
    the reverse: the log names it), AM2Z_ESTATE (running). */
int am2z_worker_register(am2z_worker_t *self, const am2z_processor_def_t *def);

/*  Runs the worker on the calling thread until am2z_worker_stop() (from
    another thread) or until *stop_flag (may be NULL) becomes non-zero —
    typically a signal handler's flag. Returns AM2Z_OK after an orderly stop,
    AM2Z_ENETWORK when the endpoint is unusable, AM2Z_EINVAL with nothing
    registered. */
int am2z_worker_run(am2z_worker_t *self, volatile int *stop_flag);

/*  Runs the worker in a background thread; returns once READY was sent.
    Start twice: AM2Z_OK, no-op. */
int am2z_worker_start(am2z_worker_t *self);

/*  Stops a worker started with am2z_worker_start (waits for its thread) or
    asks am2z_worker_run to return. Not running: no-op.
    Stopping drains (see the file comment): it returns once every running
    job finished, or grace_ms after the stop when jobs were handed back and
    cancelled, plus up to 5 s for them to return; a processor that ignores
    cancellation longer than that is still waited for (a thread cannot be
    killed safely), with a warning in the log. */
void am2z_worker_stop(am2z_worker_t *self);

#ifdef __cplusplus
}
#endif
#endif
