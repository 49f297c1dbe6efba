/*  am2z_jobrec.h — the broker's own msgpack: job records, reply/event
    bodies, and lenient peeks at peer bytes. Private to broker/.

    This is the only broker file that includes <msgpack.h> (STYLE.md §5):
    the rest of the broker builds bodies through the small writer below and
    reads records through am2z_jobrec_decode, which validates everything.

    Thread safety: reentrant; a writer belongs to one thread.
*/
#ifndef AM2Z_JOBREC_H_INCLUDED
#define AM2Z_JOBREC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------
   Writer: builds one msgpack object step by step. Errors (out of memory) are
   sticky and reported by am2z_bw_take.
   ------------------------------------------------------------------------ */
typedef struct am2z_bw_t am2z_bw_t;

/*  Returns NULL only when out of memory. Caller owns it. The buffer starts
    with room for 256 bytes (am2z_bw_new) or cap bytes, and doubles as it
    fills. */
am2z_bw_t *am2z_bw_new(void);
am2z_bw_t *am2z_bw_new_cap(size_t cap);
/*  NULL-safe, idempotent. */
void am2z_bw_destroy(am2z_bw_t **self_p);

void am2z_bw_map(am2z_bw_t *self, uint32_t count);
void am2z_bw_array(am2z_bw_t *self, uint32_t count);
/*  NULL s writes nil. */
void am2z_bw_str(am2z_bw_t *self, const char *s);
void am2z_bw_strn(am2z_bw_t *self, const char *s, size_t len);
void am2z_bw_uint(am2z_bw_t *self, uint64_t value);
void am2z_bw_int(am2z_bw_t *self, int64_t value);
void am2z_bw_bool(am2z_bw_t *self, bool value);
void am2z_bw_nil(am2z_bw_t *self);
void am2z_bw_bin(am2z_bw_t *self, const uint8_t *data, size_t size);
/*  Appends bytes that already are one encoded msgpack object (the caller
    guarantees it, e.g. a state or an encoded error). NULL/0 writes nil. */
void am2z_bw_raw(am2z_bw_t *self, const uint8_t *data, size_t size);

/*  Hands the bytes over: caller owns *out (free()). The writer is emptied
    and may be reused. Returns AM2Z_OK or AM2Z_ENOMEM. */
int am2z_bw_take(am2z_bw_t *self, uint8_t **out, size_t *size);

/* ---------------------------------------------------------------------------
   Job record (value of AM2Z_DB_JOBS, inside the envelope):
       { "proc": str, "session": str, "state"?: bin (msgpack map),
         "prio": int, "timeout": uint, "delay": uint, "depth": uint,
         "created": uint ms, "seq": uint, "attempt": uint,
         "error"?: bin (an encoded error map), "failed"?: uint ms,
         "overlay"?: true }
   overlay: the job belongs to a batch composite run in another session;
   its state is a payload set on the session's state at dispatch.
   The same record is the value of AM2Z_DB_DLQ (dead letters): there it
   carries the last error and when the job failed for good.
   ------------------------------------------------------------------------ */
typedef struct {
    char *proc;                   /* owned */
    char *session;                /* owned */
    uint8_t *state;               /* owned; NULL = none submitted */
    size_t state_size;
    int64_t prio;
    uint64_t timeout_ms;
    uint64_t delay_ms;
    uint32_t depth;
    uint64_t created_ms;
    uint64_t seq;                 /* submission order */
    uint32_t attempt;             /* leases granted so far */
    uint8_t *error;               /* owned encoded error map; NULL = none (dlq only) */
    size_t error_size;
    uint64_t failed_ms;           /* dlq: wall clock of the final failure */
    bool overlay;                 /* state is a payload over the stored state */
} am2z_jobrec_t;

/*  Caller owns *out (free()). Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_ENOMEM. */
int am2z_jobrec_encode(const am2z_jobrec_t *rec, uint8_t **out, size_t *size);

/*  Validates (am2z_msgpack_check, types, names) and copies. Returns AM2Z_OK,
    AM2Z_EPROTO or AM2Z_ENOMEM; on failure *rec holds nothing to free. */
int am2z_jobrec_decode(const uint8_t *data, size_t size, am2z_jobrec_t *rec);

/*  Frees what rec owns and zeroes it. NULL-safe. */
void am2z_jobrec_clear(am2z_jobrec_t *rec);

/* ---------------------------------------------------------------------------
   Workflow run record (value of AM2Z_DB_RUNS under the root job id; the
   broker writes it with the am2z_bw writer, see am2z_flow.c):
       run  := { "job"?: str (root only), "comp": str, "session": str,
                 "started": uint ms, "expver": uint, "input": bin (state),
                 "phase": uint, "cursor": uint, "cur"?: bin (state),
                 "key"?: str, "target"?: str, "units": [unit...], "aux": unit }
       unit := { "st": uint (0 to run, 2 done), "state"?: bin (state),
                 "job"?: str, "session"?: str, "child"?: run }
   A composite definition is stored in AM2Z_DB_RUNS too, under
   "comp:" + name, as an am2z_comp_desc_encode map.
   ------------------------------------------------------------------------ */
typedef struct am2z_runrec_s am2z_runrec_t;

typedef struct {
    uint32_t status;              /* 0 = to run, 2 = done */
    uint8_t *state;               /* owned; done: its result state */
    size_t state_size;
    char *job;                    /* owned; batch: job in another session */
    char *session;                /* owned; batch: that session */
    am2z_runrec_t *child;         /* owned; a nested run's progress */
} am2z_rununit_t;

struct am2z_runrec_s {
    char *job;                    /* owned; root job id (root only) */
    char *comp;                   /* owned */
    char *session;                /* owned */
    uint64_t started_ms;
    uint64_t expected_version;    /* stored version when the run started */
    uint8_t *input;               /* owned state */
    size_t input_size;
    uint32_t phase;
    uint32_t cursor;
    uint8_t *cur;                 /* owned state or NULL */
    size_t cur_size;
    char *key;                    /* owned or NULL */
    char *target;                 /* owned or NULL */
    am2z_rununit_t *units;        /* owned array */
    size_t nunits;
    am2z_rununit_t aux;
};

/*  Validates and copies a run record. Returns AM2Z_OK (caller owns *out:
    am2z_runrec_destroy), AM2Z_EPROTO, AM2Z_ENOMEM. */
int am2z_runrec_decode(const uint8_t *data, size_t size, am2z_runrec_t **out);
void am2z_runrec_destroy(am2z_runrec_t **self_p);

/* ---------------------------------------------------------------------------
   Peeks at peer bytes
   ------------------------------------------------------------------------ */

/*  True when data[0..size) is exactly one well-formed msgpack map. */
bool am2z_bmsg_is_map(const uint8_t *data, size_t size);

#endif
