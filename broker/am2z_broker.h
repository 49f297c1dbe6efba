/*  am2z_broker.h — the broker: routes jobs per session from clients to
    workers, and keeps every accepted job and each session's state in LMDB.

    One loop thread owns the frontend (ROUTER, clients), the backend
    (ROUTER, workers), the events PUB socket and the LMDB store. A loop turn
    drains what the sockets have (bounded), applies it in one store batch,
    commits once (group commit), and only then sends what depends on
    durability: ACCEPTED for new jobs, RESULT for finished ones. This is the
    "store thread" of DESIGN.md: no LMDB txn or env ever crosses a thread.

    Scheduling: a job is queued in its session's lane; jobs of one session
    run one at a time, by priority then submission order. A processor's
    ready rings (one per priority) hold the sessions whose next job is for
    that processor; dispatch serves the highest priority first and takes
    sessions in turn within it (fair across sessions), against worker
    credit, the processor's rate limit and its global cap.

    Thread safety: a broker is driven by one thread. am2z_broker_actor runs
    it as a CZMQ actor for the embedded runtime; send "$TERM" to stop.
*/
#ifndef AM2Z_BROKER_H_INCLUDED
#define AM2Z_BROKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_ENDPOINT_MAX 256

typedef struct {
    am2z_config_t common;                  /* store, limits, logging */
    char frontend[AM2Z_ENDPOINT_MAX];      /* clients bind here */
    char backend[AM2Z_ENDPOINT_MAX];       /* workers bind here */
    char events[AM2Z_ENDPOINT_MAX];        /* PUB; "" = no PUB socket */
    uint64_t heartbeat_ms;                 /* heartbeat interval to workers */
    uint64_t liveness;                     /* missed heartbeats = dead worker */
    uint64_t grace_ms;                     /* stop flag: how long running leases may finish */
    uint64_t max_queued_per_proc;          /* jobs of one processor queued or running */
    uint64_t max_queued_per_session;       /* jobs of one session queued or running */
    uint64_t max_call_depth;               /* am2z_ctx_call nesting allowed */
    uint64_t idem_window_ms;               /* idempotency keys remembered this long */
    uint64_t session_ttl_ms;               /* idle sessions expire; 0 = never */
    uint64_t stop_grace_ms;                /* stop_session waits this long for running jobs */
    uint64_t retain_completed;             /* completed results kept per processor */
    uint64_t retain_completed_ms;          /* ... and for at most this long */
    uint64_t retain_failed;                /* failed results kept per processor */
    uint64_t retain_failed_ms;             /* ... and for at most this long */
    uint64_t dlq_max;                      /* dead letters kept; the oldest goes first */
    char cpus[64];                         /* am2z-broker: CPUs to run on ("" = any) */
    uint64_t poll_spin_us;                 /* busy-poll this long before sleeping; 0 = never */
    bool store_writer;                     /* sync: commits on the store's writer thread */
    bool openssl_config;                   /* am2z-broker: read the host's OpenSSL config */
} am2z_broker_config_t;

/*  The broker's configuration table (common entries + endpoints), for
    am2z_cfg_load and --help. */
extern const am2z_cfg_def_t am2z_broker_config_table[];

/*  Fills cfg with the table's defaults. */
void am2z_broker_config_defaults(am2z_broker_config_t *cfg);

typedef struct am2z_broker_t am2z_broker_t;

/*  Opens the store and binds the sockets. Returns AM2Z_OK, AM2Z_EIO (store),
    AM2Z_EBUSY (another broker holds cfg's data dir: err names its pid; the
    broker holds the dir's lock until am2z_broker_destroy), AM2Z_ENETWORK
    (bind failed: err names the endpoint and reason), AM2Z_ECONFIG. err may
    be NULL. */
int am2z_broker_new(const am2z_broker_config_t *cfg, am2z_broker_t **out,
                    char *err, size_t err_size);

/*  Flushes the store, closes sockets and store. NULL-safe, idempotent. */
void am2z_broker_destroy(am2z_broker_t **self_p);

/*  The endpoint actually bound (a "tcp://127.0.0.1:*" config resolves to the
    ephemeral port). Borrowed until destroy. which: 0 frontend, 1 backend,
    2 events. */
const char *am2z_broker_endpoint(const am2z_broker_t *self, int which);

/*  Runs the loop on the calling thread until *stop_flag becomes non-zero
    (a signal handler's flag; checked at least every 100 ms), then drains:
    SUBMIT is refused ("broker is shutting down"), nothing new is
    dispatched, and the loop keeps handling DONEs until no lease is running
    or cfg->grace_ms has passed; leases still running then are cancelled and
    their jobs stay in the store (they run again after a restart). Returns
    AM2Z_OK after an orderly stop (store flushed). */
int am2z_broker_run(am2z_broker_t *self, volatile int *stop_flag);

/*  CZMQ actor body (a zactor_fn): zactor_new(am2z_broker_actor, &cfg) with
    args a const am2z_broker_config_t *. Signals 0 on the pipe when bound,
    then answers "ENDPOINTS" with three frames (frontend, backend, events);
    stops on "$TERM". If it cannot start it signals -1 — which zactor_new
    swallows — and answers every command but "$TERM" with two frames,
    "ERROR" and the reason. */
struct _zsock_t;
void am2z_broker_actor(struct _zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif
#endif
