/*  am2z_retry.c — see am2z_retry.h. */
#include "am2z_retry.h"

uint32_t
am2z_retry_max_attempts(const am2z_retry_policy_t *policy)
{
    return policy && policy->max_attempts ? policy->max_attempts : 1;
}

bool
am2z_retry_allowed(const am2z_retry_policy_t *policy, const am2z_error_t *error,
                   uint32_t attempt)
{
    if (!policy || !error || !error->retryable)
        return false;
    if (policy->retry_categories && !((policy->retry_categories >> error->category) & 1u))
        return false;
    return attempt < am2z_retry_max_attempts(policy);
}

uint64_t
am2z_retry_backoff_ms(const am2z_retry_policy_t *policy, uint32_t attempt, uint32_t random)
{
    if (!policy)
        return 0;
    double delay = (double)policy->delay_ms;
    if (policy->exponential && policy->multiplier > 1.0)
        for (uint32_t i = 1; i < attempt && delay < 1e12; i++)
            delay *= policy->multiplier;
    if (policy->max_delay_ms && delay > (double)policy->max_delay_ms)
        delay = (double)policy->max_delay_ms;
    if (policy->jitter > 0 && policy->jitter <= 1)
        delay -= delay * policy->jitter * ((double)random / 4294967296.0);
    return delay < 0 ? 0 : (uint64_t)delay;
}
