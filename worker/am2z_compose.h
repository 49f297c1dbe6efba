/*  am2z_compose.h — composites (chain, parallel, route, batch) and nested
    calls, declared next to the processors.

    A composite is registered like a processor and executed like one. Its
    steps, branches and route targets name processors or other composites
    (nesting, but never back to itself: am2z_composite_validate refuses a
    composite naming itself, am2z_composite_check_cycles one closing a
    cycle through others, and the broker refuses both at READY and fails a
    run nested more than 16 deep); names are resolved when it runs, so a
    composite may be registered before the processors it uses.

    - chain: steps in order; each step gets the previous step's state; each
      successful step is one version. Failure at step i (1-based) fails the
      composite with an error whose details are
      {step, position, completedSteps, partialState} — partialState is the
      state before step i.
    - parallel: every branch gets the same input state; the branch states
      are merged three-way against the input (am2z_merge.h; `strict` makes
      a conflict a failure; each conflict publishes `merge:conflict`
      {path, winner}), or by a merge processor: it runs on the input state
      with the reserved key "$branches" set to the array of branch states'
      user maps, and its changes make the result. The first failing branch
      in declaration order fails the composite. The merged state is one
      version past the input.
    - route: the key is the string (or integer, as text) at `selector_path`
      in the input state, or what the `selector` processor chose with
      am2z_ctx_select(); the target for that key runs on the input state;
      an unknown key goes to `fallback`, else the composite fails with a
      ValidationError "no route for KEY".
    - batch: `processor` runs once per payload. Payloads are the maps in the
      array at `payloads_path` of the input state. A payload with a string
      "sessionId" runs in that session (on that session's state, with the
      payload's other keys set on it); the others run in the caller's
      session on the caller's input state with the payload's keys set on
      it, and those results are merged as for parallel into the composite's
      result. The result also carries "$batch": one {index, sessionId,
      success, version} per payload, in payload order. The first failing
      payload (by index) fails the composite; its error details name the
      payload index.

    Nested calls: am2z_ctx_call() runs another processor or composite from
    inside a processor, in the caller's session, and returns its result.
    Depth is limited (default 10): beyond it the call returns a failed result
    of kind CallDepthExceeded — it does not hang.

    Thread safety: definitions are copied at registration.
*/
#ifndef AM2Z_COMPOSE_H_INCLUDED
#define AM2Z_COMPOSE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_result.h"
#include "am2z_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AM2Z_COMPOSITE_CHAIN = 0,
    AM2Z_COMPOSITE_PARALLEL,
    AM2Z_COMPOSITE_ROUTE,
    AM2Z_COMPOSITE_BATCH
} am2z_composite_kind_t;

/*  Default limit on nested am2z_ctx_call depth. */
#define AM2Z_CALL_DEPTH_MAX_DEFAULT 10

/*  One route: state key value -> target name. */
typedef struct {
    const char *key;
    const char *target;
} am2z_route_t;

/*  A composite. Fields a kind does not use stay zero. Strings are copied
    at registration. */
typedef struct {
    const char *name;                 /* valid name */
    am2z_composite_kind_t kind;
    const char *description;          /* may be NULL */
    uint64_t timeout_ms;              /* bounds the whole run; 0 = none */
    /* chain: steps; parallel: branches */
    const char *const *steps;
    size_t nsteps;
    /* parallel and batch */
    const char *merge;                /* merge processor; NULL = three-way merge */
    bool strict;                      /* a merge conflict fails the run */
    /* route */
    const char *selector_path;        /* state path holding the key, or NULL */
    const char *selector;             /* selector processor, or NULL */
    const am2z_route_t *routes;
    size_t nroutes;
    const char *fallback;             /* target for unknown keys, or NULL */
    /* batch */
    const char *processor;            /* runs once per payload */
    const char *payloads_path;        /* state path of the payload array */
} am2z_composite_def_t;

/*  "chain", "parallel", "route", "batch" ("composite" when out of range). */
const char *am2z_composite_kind_name(am2z_composite_kind_t kind);

/*  Checks a definition: name valid; chain/parallel with at least one step;
    route with selector_path xor selector and at least one route or a
    fallback; batch with processor and payloads_path; every referenced name
    valid; no unit (chain step, parallel branch, merge, route target or
    fallback, batch processor) names the composite itself — its run would
    start itself without end. Returns AM2Z_OK or AM2Z_ECONFIG with err
    naming the problem ("chain 'checkout' has no steps", "chain 'loop'
    refers back to itself: loop -> loop"). err may be NULL. */
int am2z_composite_validate(const am2z_composite_def_t *def,
                            char *err, size_t err_size);

/*  Checks that def, registered next to the composites known[0..nknown)
    (borrowed; NULL entries skipped), closes no cycle: none of its units
    (as in am2z_composite_validate) leads back to def through them; names
    that are not in known are leaves (processors). The broker refuses a
    composite on a cycle too, counting every worker's; this catches it
    where it is declared. Returns AM2Z_OK, AM2Z_ECONFIG with err naming
    the cycle ("chain 'a' refers back to itself: a -> b -> a"), AM2Z_EINVAL
    (def or its name NULL, known NULL with nknown > 0), AM2Z_ENOMEM. err
    may be NULL. Validate def first (am2z_composite_validate). */
int am2z_composite_check_cycles(const am2z_composite_def_t *def,
                                const am2z_composite_def_t *const *known, size_t nknown,
                                char *err, size_t err_size);

/*  Registers a composite on a worker, next to its processors; only before
    start/run. The definition is checked (am2z_composite_validate, and
    am2z_composite_check_cycles against the worker's earlier composites) and
    copied; it is announced in READY (`comps`) and run by the broker, which
    leases each leaf step to any worker serving that processor. Returns
    AM2Z_OK, AM2Z_EINVAL (invalid, or the name is taken on this worker),
    AM2Z_ESTATE (running), AM2Z_ENOMEM. */
int am2z_worker_register_composite(am2z_worker_t *worker, const am2z_composite_def_t *def);

/*  Runs `name` (processor or composite) from inside a processor, in the
    caller's session, on `state` (NULL = the caller's input state), at
    call depth + 1. *out is the callee's result (caller owns): a failure —
    including CallDepthExceeded and "processor not found" — is a failed
    result, not an error code. Returns AM2Z_OK, AM2Z_EINVAL,
    AM2Z_ESTATE (this runtime cannot make nested calls), AM2Z_ENOMEM. */
int am2z_ctx_call(am2z_ctx_t *ctx, const char *name, const am2z_state_t *state,
                  am2z_result_t **out);

/*  A route selector's choice (the key). Copied. Returns AM2Z_OK,
    AM2Z_EINVAL (NULL or longer than AM2Z_NAME_MAX). */
int am2z_ctx_select(am2z_ctx_t *ctx, const char *key);

#ifdef __cplusplus
}
#endif
#endif
