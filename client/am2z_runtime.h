/*  am2z_runtime.h — the embedded runtime (AM2Z's LocalRuntime).

    The same broker and worker code, started as threads in this process and
    connected over inproc://; state lives in LMDB under data_dir. Semantics
    are those of the distributed runtime: only endpoints differ.

        am2z_runtime_t *rt = am2z_runtime_new(NULL);          // ./am2z-data
        am2z_runtime_register(rt, &(am2z_processor_def_t){
            .name = "increment", .fn = increment });
        am2z_runtime_start(rt);
        am2z_client_execute(am2z_runtime_client(rt), "increment", st, "s1",
                            NULL, &res);
        am2z_runtime_stop(rt);

    start twice is harmless; stop when not started is harmless; start ->
    stop -> start works (processors stay registered).

    Thread safety: one thread drives a runtime and uses its client.
*/
#ifndef AM2Z_RUNTIME_H_INCLUDED
#define AM2Z_RUNTIME_H_INCLUDED

#include "am2z_broker.h"
#include "am2z_client.h"
#include "am2z_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct am2z_runtime_t am2z_runtime_t;

/*  cfg NULL: broker defaults (data dir ./am2z-data). Endpoints in cfg are
    ignored: the runtime uses unique inproc:// endpoints, and the PUB socket
    only when cfg->events is non-empty. Returns NULL when out of memory. */
am2z_runtime_t *am2z_runtime_new(const am2z_broker_config_t *cfg);

/*  Stops and frees. NULL-safe, idempotent. */
void am2z_runtime_destroy(am2z_runtime_t **self_p);

/*  Registers a processor with the runtime's worker. Allowed while stopped;
    takes effect at the next start when running. */
int am2z_runtime_register(am2z_runtime_t *self, const am2z_processor_def_t *def);

/*  Starts broker, worker and client. Returns AM2Z_OK (also when running),
    AM2Z_EIO (store), AM2Z_ENETWORK. */
int am2z_runtime_start(am2z_runtime_t *self);

/*  Stops client, worker, broker (store flushed). Not running: no-op. */
void am2z_runtime_stop(am2z_runtime_t *self);

/*  Why the last start failed ("" if it did not). Borrowed until the next
    start or destroy. */
const char *am2z_runtime_last_error(const am2z_runtime_t *self);

/*  The runtime's client; borrowed, valid until stop. NULL when stopped. */
am2z_client_t *am2z_runtime_client(am2z_runtime_t *self);

#ifdef __cplusplus
}
#endif
#endif
