/*  am2z_result.h — a job's final outcome, as the client library, the local
    runtime and nested calls (am2z_ctx_call) report it.

    Thread safety: a result is owned by one thread at a time.
*/
#ifndef AM2Z_RESULT_H_INCLUDED
#define AM2Z_RESULT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_state.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  A job's final outcome. Every pointer is owned by the result. */
typedef struct {
    bool success;
    char job_id[AM2Z_JOB_ID_MAX + 1];            /* = execution id */
    char processor[AM2Z_NAME_MAX + 1];
    char session_id[AM2Z_SESSION_ID_MAX + 1];
    am2z_state_t *state;          /* resulting state; NULL on failure */
    am2z_error_t *error;          /* NULL on success */
    uint32_t attempt;             /* attempts made (1-based) */
    uint64_t exec_us;             /* processor run time, µs (>= 1 when it ran) */
    uint64_t started_at_ms;       /* wall clock when the last attempt started */
    /* scheduling (issue 6) */
    uint64_t dispatched_ms;       /* broker's wall clock when it leased the last
                                     attempt (0 = never leased, or not known) */
} am2z_result_t;

/*  NULL-safe, idempotent. */
void am2z_result_destroy(am2z_result_t **self_p);

/*  A new zeroed result (success false, no state, no error). NULL when out
    of memory. */
am2z_result_t *am2z_result_new(void);

#ifdef __cplusplus
}
#endif
#endif
