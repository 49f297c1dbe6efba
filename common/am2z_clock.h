/*  am2z_clock.h — time and identifiers.

    Wall clock (ms since the Unix epoch) for timestamps people read and that
    survive restarts; monotonic clock (µs) for measuring durations and for
    deadlines inside one process. Ids are generated here and validated here,
    so every part agrees on what a well-formed name or id is.

    Thread safety: all functions are thread-safe. am2z_id_new() keeps no
    shared state: it combines the wall clock with random bytes.
*/
#ifndef AM2Z_CLOCK_H_INCLUDED
#define AM2Z_CLOCK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t am2z_clock_wall_ms(void);

/*  Microseconds on CLOCK_MONOTONIC: only differences are meaningful. */
uint64_t am2z_clock_mono_us(void);

/*  Ids are 32 lowercase hex characters: 12 of wall-clock milliseconds then 20
    of random bits, so they sort by creation time (good for LMDB B-trees) and
    do not collide across processes or restarts. */
#define AM2Z_ID_LEN 32

/*  Writes a new id and a terminating NUL into out (AM2Z_ID_LEN + 1 bytes).
    Returns AM2Z_OK, or AM2Z_EIO if the kernel's random source failed. */
int am2z_id_new(char out[AM2Z_ID_LEN + 1]);

/*  Random bytes in an id (20 hex characters). */
#define AM2Z_ID_RANDOM 10

/*  The id of wall-clock time `ms` and random bytes `rnd`, as am2z_id_new
    writes it (which is this with fresh kernel randomness). For callers that
    make many ids from their own generator seeded by am2z_random_bytes, and
    so avoid a getrandom call per id. */
void am2z_id_format(char out[AM2Z_ID_LEN + 1], uint64_t ms,
                    const uint8_t rnd[AM2Z_ID_RANDOM]);

/*  Fills buf[0..n) from the kernel's random source. Returns AM2Z_OK or
    AM2Z_EIO. */
int am2z_random_bytes(void *buf, size_t n);

/*  Limits on names and ids that arrive from users or peers. */
#define AM2Z_NAME_MAX       128   /* processor, composite, event names */
#define AM2Z_SESSION_ID_MAX 128   /* session ids */
#define AM2Z_JOB_ID_MAX     64    /* job ids (ours are AM2Z_ID_LEN) */

/*  True when s[0..len) is a valid processor / event name: 1..AM2Z_NAME_MAX
    bytes of [A-Za-z0-9_.:-]. */
bool am2z_name_valid(const char *s, size_t len);

/*  True when s[0..len) is a valid session id: 1..AM2Z_SESSION_ID_MAX bytes of
    [A-Za-z0-9_.:@-]. NUL, '/', whitespace and control bytes are refused so an
    id can be a storage key and a log field without escaping. */
bool am2z_session_id_valid(const char *s, size_t len);

/*  True when s[0..len) is a valid job id: 1..AM2Z_JOB_ID_MAX bytes of
    [A-Za-z0-9_.:-]. */
bool am2z_job_id_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
