/*  am2z_retry.h — what a retry policy (am2z_retry_policy_t, announced by
    workers per processor) decides. One place, so the broker and the local
    runtime retry the same way.

    Thread safety: reentrant.
*/
#ifndef AM2Z_RETRY_H_INCLUDED
#define AM2Z_RETRY_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "am2z_codec.h"
#include "am2z_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Attempts the policy allows in all (max_attempts, 0 meaning 1). */
uint32_t am2z_retry_max_attempts(const am2z_retry_policy_t *policy);

/*  True when a job whose attempt number `attempt` (1-based) just failed
    with `error` may run again: the error is retryable, its category is
    allowed (retry_categories bit, or every category when 0) and attempts
    remain. */
bool am2z_retry_allowed(const am2z_retry_policy_t *policy, const am2z_error_t *error,
                        uint32_t attempt);

/*  The wait before the next attempt after failed attempt `attempt`:
    delay_ms, times multiplier^(attempt-1) when exponential, capped at
    max_delay_ms, then reduced by up to jitter × itself using `random`
    (uniform 0..2^32-1; pass 0 for no jitter). */
uint64_t am2z_retry_backoff_ms(const am2z_retry_policy_t *policy, uint32_t attempt,
                               uint32_t random);

#ifdef __cplusplus
}
#endif
#endif
