/*  am2z_cluster.h — one real am2z-broker and its am2z-example-workers for
    the integration suites: a data dir under $AM2Z_TEST_TMP, the broker
    started on it and its endpoints read back from its ready line, workers
    started against its backend and waited for until the broker counts
    them, restarts on the same dir, stops with real signals, clients.

    Built on am2z_testproc: every child is tied to the test's life, every
    wait is bounded and waits for the event it needs. The functions fail
    the test (ck_assert) on what they cannot do, except am2z_cluster_try_broker.
    Not thread-safe; use one cluster from the thread (or forked case) that
    started it — a client never crosses a fork.

    A case typically reads:

        am2z_cluster_t cl = { 0 };
        am2z_cluster_start(&cl, "rel-retry", extra);   // broker + one worker
        am2z_client_t *c = am2z_cluster_client(&cl, 15000);
        ...
        am2z_client_destroy(&c);
        am2z_cluster_stop(&cl);                       // SIGTERM, exit 0, rm dir
*/
#ifndef AM2Z_CLUSTER_H_INCLUDED
#define AM2Z_CLUSTER_H_INCLUDED

#include "am2z_client.h"
#include "am2z_testproc.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AM2Z_CLUSTER_WORKERS_MAX 4

/*  The flags broker and workers get when am2z_cluster_t.flags is NULL:
    "--heartbeat 200ms --log-level warn". */
extern const char *const am2z_cluster_default_flags[];

typedef struct {
    char dir[512];                /* data dir; made by the first start, removed by stop */
    char frontend[256];           /* endpoints as the broker's ready line names them */
    char backend[256];
    char events[256];
    bool fixed;                   /* bind the endpoints above instead of tcp://127.0.0.1:* */
    const char *const *flags;     /* NULL-ended flags of broker and workers; NULL = defaults */
    const char *const *wrap;      /* NULL-ended argv the broker command is appended to
                                     (wrap[0] an absolute path; it must exec the broker
                                     in its own process), or NULL */
    am2z_testproc_t broker;       /* the running broker (pid 0 when none) */
    am2z_testproc_t worker[AM2Z_CLUSTER_WORKERS_MAX];   /* workers [0, nworkers) */
    size_t nworkers;
} am2z_cluster_t;

/*  Starts the broker: `--data-dir dir --frontend/--backend/--events` ("*"
    ports, or the endpoints in cl when cl->fixed), then cl->flags, then
    extra (NULL-ended, may be NULL). Makes cl->dir from tag when empty, so a
    second start is a restart on the same data. Waits (10 s) for its ready
    line and reads the three endpoints back into cl. Returns 0, or -1 when
    it did not report ready (it is then SIGKILLed and reaped). */
int am2z_cluster_try_broker(am2z_cluster_t *cl, const char *tag, const char *const *extra);

/*  am2z_cluster_try_broker, failing the test when the broker is not ready. */
void am2z_cluster_start_broker(am2z_cluster_t *cl, const char *tag, const char *const *extra);

/*  Picks three free ports (am2z_testproc_free_port) as the endpoints and
    sets cl->fixed, so that a restarted broker binds the same ones. */
void am2z_cluster_pick_ports(am2z_cluster_t *cl);

/*  SIGKILLs the broker and reaps it (10 s); dir, endpoints and workers stay. */
void am2z_cluster_kill_broker(am2z_cluster_t *cl);

/*  Starts one am2z-example-worker into w: `--broker backend`, cl->flags,
    then extra; waits (10 s) for its ready line. The cluster does not track
    w: the caller stops it. */
void am2z_cluster_spawn_worker(const am2z_cluster_t *cl, am2z_testproc_t *w,
                               const char *const *extra);

/*  Spawns a worker into the next slot of cl->worker (tracked: stopped by
    halt/stop) and returns it (borrowed); does not wait for the broker. */
am2z_testproc_t *am2z_cluster_add_worker(am2z_cluster_t *cl, const char *const *extra);

/*  am2z_cluster_add_worker, then waits until the broker counts at least
    cl->nworkers workers. Returns the worker (borrowed). */
am2z_testproc_t *am2z_cluster_start_worker(am2z_cluster_t *cl, const char *const *extra);

/*  Polls stats until the broker counts at least n workers, up to a 10 s
    deadline on the monotonic clock; fails the test otherwise. */
void am2z_cluster_wait_workers(const am2z_cluster_t *cl, uint64_t n);

/*  Polls until the broker knows processor `name`, up to a 5 s deadline on
    the monotonic clock; fails the test otherwise. */
void am2z_cluster_wait_processor(const am2z_cluster_t *cl, const char *name);

/*  am2z_cluster_start_broker, then am2z_cluster_start_worker(cl, NULL). */
void am2z_cluster_start(am2z_cluster_t *cl, const char *tag, const char *const *extra);

/*  SIGTERMs the tracked workers (10 s each, exit status not checked) and
    forgets them. */
void am2z_cluster_stop_workers(am2z_cluster_t *cl);

/*  Stops the tracked workers, then the broker with SIGTERM; the broker
    must exit 0 within 15 s. Keeps dir and endpoints (for a restart). */
void am2z_cluster_halt(am2z_cluster_t *cl);

/*  am2z_cluster_halt, then removes the data dir. */
void am2z_cluster_stop(am2z_cluster_t *cl);

/*  A client connected to the frontend with the given timeout; caller owns
    it (am2z_client_destroy). */
am2z_client_t *am2z_cluster_client(const am2z_cluster_t *cl, uint64_t timeout_ms);

/*  QUERY `what` (narrowed by arg: the session or job id the query takes,
    or NULL) as JSON; fails the test when it is refused. Caller decrefs. */
json_t *am2z_cluster_query(am2z_client_t *c, const char *what, const char *arg);

/*  QUERY stats: the broker's retention index in memory (resultsRetained)
    holds exactly the stored results (store.results) and their `done`
    entries (store.done). Fails the test otherwise. Returns that count. */
int64_t am2z_cluster_check_retention(am2z_client_t *c);

/*  Runs `am2z ARGS... --broker <frontend>` (args NULL-ended, at most 28) to
    completion (30 s), its stdout in out (NUL-terminated, truncated).
    Returns its exit code, or -1 on failure or timeout. Only in test
    executables built with the am2z CLI (AM2Z_BIN). */
int am2z_cluster_cli(const am2z_cluster_t *cl, const char *const *args, char *out,
                     size_t out_size);

/*  As am2z_cluster_wait_workers, through `am2z stats` subprocesses: for
    unchecked fixtures, which run in Check's parent process before it forks
    the cases and so must not start ZeroMQ there (a forked child would
    inherit the context's state). Only with AM2Z_BIN. */
void am2z_cluster_wait_workers_cli(const am2z_cluster_t *cl, uint64_t n);

/*  The broker's resident set size in KiB (VmRSS), or -1. */
long am2z_cluster_broker_rss_kib(const am2z_cluster_t *cl);

/*  A version-1 state of `session` with key = text (when text is not NULL)
    or key = value (int). Caller owns it. */
am2z_state_t *am2z_cluster_state(const char *session, const char *key, int64_t value,
                                 const char *text);

#endif
