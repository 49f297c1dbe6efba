/*  am2z_local.h — the local runtime: processors and composites executed
    directly in the calling thread. No broker, no LMDB, no threads: the tool
    to unit-test processors with.

        am2z_local_t *rt = am2z_local_new();
        am2z_local_register(rt, &(am2z_processor_def_t){ .name = "inc", .fn = inc });
        const char *steps[] = { "inc", "inc" };
        am2z_local_register_composite(rt, &(am2z_composite_def_t){
            .name = "twice", .kind = AM2Z_COMPOSITE_CHAIN, .steps = steps, .nsteps = 2 },
            NULL, 0);
        am2z_result_t *r;
        am2z_local_execute(rt, "twice", st, "s1", &r);   // r->state version + 2

    Same semantics as the distributed runtime (am2z_client.h): sessions keep
    their state (in memory here) and its version grows by one per successful
    step; a job submitted with a state is rebased on the session's version;
    composites as am2z_compose.h describes; retries follow each processor's
    policy (the runtime sleeps the backoff); nested am2z_ctx_call works with
    the same depth limit; lifecycle and custom events go to the on_event
    callback in order. One difference: a processor running past its timeout
    cannot be interrupted in-process — its attempt fails with a Timeout
    error when it returns, and its changes are discarded. Job ids look like
    the broker's (am2z_clock.h) and never repeat within a runtime, but their
    random part comes from a generator seeded once, not from the kernel
    per job: in-process ids are not capabilities, so they need not be
    unguessable.

    Thread safety: not thread-safe; one thread uses a local runtime.
*/
#ifndef AM2Z_LOCAL_H_INCLUDED
#define AM2Z_LOCAL_H_INCLUDED

#include "am2z_client.h"
#include "am2z_compose.h"
#include "am2z_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct am2z_local_t am2z_local_t;

/*  Returns NULL when out of memory. */
am2z_local_t *am2z_local_new(void);

/*  NULL-safe, idempotent. */
void am2z_local_destroy(am2z_local_t **self_p);

/*  Registers a processor. Returns AM2Z_OK, AM2Z_EINVAL (bad name, no fn, a
    name already registered as processor or composite), AM2Z_ENOMEM. */
int am2z_local_register(am2z_local_t *self, const am2z_processor_def_t *def);

/*  Registers a composite (validated: am2z_composite_validate, and
    am2z_composite_check_cycles against the composites registered before:
    one that leads back to itself through them is refused). Returns
    AM2Z_OK, AM2Z_ECONFIG (err explains, naming a cycle), AM2Z_EINVAL (name
    taken), AM2Z_ENOMEM. err may be NULL. */
int am2z_local_register_composite(am2z_local_t *self,
                                  const am2z_composite_def_t *def,
                                  char *err, size_t err_size);

/*  Runs `name` in `session_id` (NULL: state's session) on `state` (NULL:
    continue from the session's state) and stores a successful result's
    state for the session. Returns AM2Z_OK with *out set (check success),
    AM2Z_EINVAL, AM2Z_ENOMEM. */
int am2z_local_execute(am2z_local_t *self, const char *name,
                       const am2z_state_t *state, const char *session_id,
                       am2z_result_t **out);

/*  A copy of the session's state. AM2Z_OK or AM2Z_ENOTFOUND. */
int am2z_local_get_state(am2z_local_t *self, const char *session_id,
                         am2z_state_t **out);

/*  Forgets the session's state (publishes session:cleanup). Unknown
    session: AM2Z_OK. */
int am2z_local_stop_session(am2z_local_t *self, const char *session_id);

/*  Every event (lifecycle and custom), in order. fn NULL = none. */
void am2z_local_on_event(am2z_local_t *self, am2z_event_fn *fn, void *arg);

/*  Limit on nested call depth (default AM2Z_CALL_DEPTH_MAX_DEFAULT). */
void am2z_local_set_max_depth(am2z_local_t *self, uint32_t depth);

#ifdef __cplusplus
}
#endif
#endif
