/*  am2z_repeatrec.h — the records of repeatable jobs and idempotency keys,
    and the progress peek (issue 6). Private to broker/.

    Like am2z_jobrec.c this is a broker codec file: it is where msgpack is
    read for these records (STYLE.md §5); they are written with the
    am2z_bw writer of am2z_jobrec.h. Decoders validate everything
    (am2z_msgpack_check, types, id and name formats) and copy.

    Thread safety: reentrant.
*/
#ifndef AM2Z_REPEATREC_H_INCLUDED
#define AM2Z_REPEATREC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_clock.h"

/* ---------------------------------------------------------------------------
   Repeat schedule (sealed value of AM2Z_DB_REPEATS under the repeat id):
       { "proc": str, "session": str, "state"?: bin (msgpack map),
         "prio": int, "timeout": uint, "every": uint ms, "limit": uint,
         "runs": uint, "next": uint wall ms, "created": uint wall ms,
         "last"?: str (the last job created) }
   prio / timeout 0 = the processor's at each run.
   ------------------------------------------------------------------------ */
typedef struct {
    char *proc;                   /* owned */
    char *session;                /* owned */
    uint8_t *state;               /* owned; NULL = none submitted */
    size_t state_size;
    int64_t prio;
    uint64_t timeout_ms;
    uint64_t every_ms;            /* > 0 */
    uint64_t limit;               /* runs in all; 0 = no limit */
    uint64_t runs;                /* jobs created so far */
    uint64_t next_ms;             /* wall clock of the next run */
    uint64_t created_ms;
    char last[AM2Z_JOB_ID_MAX + 1]; /* "" = none yet */
} am2z_repeatrec_t;

/*  Caller owns *out (free()). AM2Z_OK, AM2Z_EINVAL, AM2Z_ENOMEM. */
int am2z_repeatrec_encode(const am2z_repeatrec_t *rec, uint8_t **out, size_t *size);
/*  AM2Z_OK, AM2Z_EPROTO, AM2Z_ENOMEM; on failure *rec holds nothing. */
int am2z_repeatrec_decode(const uint8_t *data, size_t size, am2z_repeatrec_t *rec);
/*  NULL-safe; zeroes rec. */
void am2z_repeatrec_clear(am2z_repeatrec_t *rec);

/* ---------------------------------------------------------------------------
   Idempotency entry (raw value of AM2Z_DB_IDEM under the key):
       { "job": str, "proc": str, "session": str, "at": uint wall ms,
         "repeat"?: true }
   ------------------------------------------------------------------------ */
typedef struct {
    char id[AM2Z_JOB_ID_MAX + 1];           /* the first job (or repeat) id */
    char proc[AM2Z_NAME_MAX + 1];
    char session[AM2Z_SESSION_ID_MAX + 1];
    uint64_t at_ms;                         /* when the key was first used */
    bool repeat;                            /* id names a repeatable job */
} am2z_idemrec_t;

int am2z_idemrec_encode(const am2z_idemrec_t *rec, uint8_t **out, size_t *size);
int am2z_idemrec_decode(const uint8_t *data, size_t size, am2z_idemrec_t *rec);

/*  The n of a job:progress event's data {"progress": n}. Returns true when
    data is such a map with a non-negative integer. */
bool am2z_progress_peek(const uint8_t *data, size_t size, uint64_t *n);

#endif
