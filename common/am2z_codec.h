/*  am2z_codec.h — the am2z wire protocol, version 1 (docs/PROTOCOL.md).

    Every message is three ZeroMQ frames (after the ROUTER identity, when
    there is one):

        frame 1  "AM2Z/1"         protocol signature and version
        frame 2  command          ASCII name, e.g. "SUBMIT"
        frame 3  body             one msgpack map

    The body's fields depend on the command (see the table in am2z_codec.c
    and docs/PROTOCOL.md). Decoding validates everything that came from a
    peer: signature, command name, that the body is exactly one msgpack map,
    each known field's type and length, required fields, id and name
    formats, and the body size limit. Unknown keys are ignored (forward
    compatible within version 1). Any violation is AM2Z_EPROTO with a
    message naming the command and the field — never a crash or an assert.

    Ownership: an am2z_msg_t owns every pointer in it; am2z_msg_clear()
    frees them. Encoding borrows the message.

    Thread safety: reentrant; no shared state.
*/
#ifndef AM2Z_CODEC_H_INCLUDED
#define AM2Z_CODEC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_error.h"
#include "am2z_mpcheck.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_PROTOCOL "AM2Z/1"

/*  A BATCH message carries several commands in one ZeroMQ message:
    [signature]["BATCH"][command][body][command][body]... with 1 to
    AM2Z_BATCH_MAX (command, body) pairs, each pair exactly what the
    command's own message would carry (docs/PROTOCOL.md "Batches"). */
#define AM2Z_BATCH "BATCH"
#define AM2Z_BATCH_MAX 1024

/*  Whether a command frame is the BATCH marker. */
static inline bool
am2z_is_batch(const void *cmd, size_t size)
{
    return size == sizeof AM2Z_BATCH - 1 && cmd && __builtin_memcmp(cmd, AM2Z_BATCH, size) == 0;
}

typedef enum {
    AM2Z_CMD_INVALID = 0,
    /* client -> broker */
    AM2Z_CMD_SUBMIT,        /* run a processor in a session */
    AM2Z_CMD_FETCH,         /* (re)fetch a job's result by id */
    AM2Z_CMD_QUERY,         /* stats, queues, sessions, processors, state */
    AM2Z_CMD_STOP_SESSION,  /* cancel a session's work, drop its state */
    /* broker -> client */
    AM2Z_CMD_ACCEPTED,      /* a SUBMIT is durable; here is its job id */
    AM2Z_CMD_RESULT,        /* a job's final outcome */
    AM2Z_CMD_REPLY,         /* answer to QUERY / STOP_SESSION */
    AM2Z_CMD_ERROR,         /* a request was refused */
    /* both ways, broker <-> client and broker <-> worker */
    AM2Z_CMD_EVENT,         /* lifecycle or custom event */
    AM2Z_CMD_HEARTBEAT,     /* liveness */
    AM2Z_CMD_DISCONNECT,    /* orderly goodbye */
    /* worker -> broker */
    AM2Z_CMD_READY,         /* register processors and initial credit */
    AM2Z_CMD_CREDIT,        /* more free slots for a processor */
    AM2Z_CMD_DONE,          /* a leased job finished (success or failure) */
    /* broker -> worker */
    AM2Z_CMD_JOB,           /* a lease: run this job */
    AM2Z_CMD_CANCEL,        /* set the cancellation flag of a running job */
    /* client -> broker (added later; kept last so numbers stay stable) */
    AM2Z_CMD_DLQ,           /* retry or discard a dead letter */
    /* worker -> broker (added later) */
    AM2Z_CMD_CALL,          /* a running job's nested call (am2z_ctx_call) */
    /* client -> broker (added later) */
    AM2Z_CMD_REPEAT,        /* cancel a repeatable job */
    AM2Z_CMD_COUNT_
} am2z_cmd_t;

/*  Wire name of a command ("SUBMIT"); "INVALID" when out of range. */
const char *am2z_cmd_name(am2z_cmd_t cmd);

/*  Looks a wire name up. Returns AM2Z_CMD_INVALID for an unknown name. */
am2z_cmd_t am2z_cmd_parse(const char *name, size_t len);

/*  Retry policy as announced by a worker for a processor. */
typedef struct {
    uint32_t max_attempts;        /* total attempts including the first; 0 = default */
    bool exponential;             /* false: fixed delay */
    uint64_t delay_ms;            /* first (or every) delay */
    double multiplier;            /* exponential factor (>= 1) */
    uint64_t max_delay_ms;        /* cap on one delay; 0 = none */
    double jitter;                /* 0..1, fraction of the delay randomised */
    uint32_t retry_categories;    /* bit (1 << am2z_category_t) per retryable
                                     category; 0 = the category defaults */
} am2z_retry_policy_t;

/*  One processor a worker serves (READY.processors[]). Strings owned. */
typedef struct {
    char *name;                   /* valid name (am2z_name_valid) */
    char *description;            /* may be NULL */
    uint32_t concurrency;         /* slots = initial credit, >= 1 */
    uint64_t timeout_ms;          /* 0 = none */
    int64_t priority;             /* default job priority */
    am2z_retry_policy_t retry;
    uint64_t delay_ms;            /* default job delay; 0 = none */
    uint32_t rate_max;            /* rate limit: at most rate_max dispatches ... */
    uint64_t rate_per_ms;         /* ... per rate_per_ms, across all workers; 0 = none */
    uint32_t max_active;          /* global cap on leased jobs; 0 = none */
} am2z_proc_desc_t;

/*  One route of a route composite (READY.comps[].routes[]). Owned. */
typedef struct {
    char *key;                    /* 1..AM2Z_NAME_MAX bytes, no NUL */
    char *target;                 /* valid name */
} am2z_route_desc_t;

/*  One composite a worker announces (READY.comps[]): the wire form of
    am2z_composite_def_t (worker/am2z_compose.h), same fields, same
    meaning. kind is am2z_composite_kind_t's value (0 chain, 1 parallel,
    2 route, 3 batch), carried by name. Fields a kind does not use are
    absent (NULL / 0). All strings owned. Decoding checks types and name
    formats only; whether a definition is complete for its kind is the
    receiver's check (the broker refuses incomplete ones). */
typedef struct {
    char *name;                   /* valid name */
    uint32_t kind;                /* 0..3 */
    char *description;            /* may be NULL */
    uint64_t timeout_ms;          /* whole run; 0 = none */
    char **steps;                 /* chain steps / parallel branches (names) */
    size_t nsteps;
    char *merge;                  /* merge processor or NULL */
    bool strict;
    char *selector_path;          /* route: state path or NULL */
    char *selector;               /* route: selector processor or NULL */
    am2z_route_desc_t *routes;
    size_t nroutes;
    char *fallback;               /* route: NULL = none */
    char *processor;              /* batch */
    char *payloads_path;          /* batch */
} am2z_comp_desc_t;

/*  "chain", "parallel", "route", "batch"; NULL when out of range. */
const char *am2z_comp_kind_name(uint32_t kind);

/*  Frees what d owns and zeroes it. NULL-safe. */
void am2z_comp_desc_clear(am2z_comp_desc_t *d);

/*  Deep copy into *out (zeroed first). Returns AM2Z_OK or AM2Z_ENOMEM
    (then *out holds nothing). */
int am2z_comp_desc_copy(const am2z_comp_desc_t *src, am2z_comp_desc_t *out);

/*  One composite as a standalone msgpack map (the READY.comps[] element),
    e.g. for storing it. encode: caller owns *data; AM2Z_EINVAL for what
    decode would refuse. decode: validates like a body; on success *out
    is filled (caller clears it). */
int am2z_comp_desc_encode(const am2z_comp_desc_t *d, uint8_t **data, size_t *size);
int am2z_comp_desc_decode(const uint8_t *data, size_t size, am2z_comp_desc_t *out,
                          char *err, size_t err_size);

/*  A decoded or to-be-encoded message: one struct for every command; the
    command's table says which fields are present, required, and checked.
    Absent strings/bytes are NULL; absent numbers are 0 and absent bools
    false. All pointers are owned (am2z_msg_clear frees them).
    Encoding writes an optional number only when it is non-zero and an
    optional bool only when true (0 / false mean "absent"); required ones
    are always written. Fields the command does not carry are ignored. */
typedef struct {
    am2z_cmd_t cmd;
    uint64_t req;                 /* client correlation id, echoed back */
    char *job;                    /* job id */
    char *processor;              /* processor or composite name */
    char *session;                /* session id */
    char *worker;                 /* worker instance id (READY) */
    char *what;                   /* QUERY: stats|queues|session-stats|sessions|processors|state|job|dlq|repeats|session-info */
    char *op;                     /* DLQ: retry|discard; REPEAT: cancel */
    char *name;                   /* EVENT name */
    char *idem_key;               /* SUBMIT idempotency key */
    uint8_t *state;               /* msgpack map: input or resulting state */
    size_t state_size;
    uint8_t *data;                /* msgpack object: event data, REPLY body, DONE changes */
    size_t data_size;
    am2z_error_t *error;          /* RESULT / DONE failure, ERROR reason */
    bool success;                 /* RESULT / DONE */
    bool keep_state;              /* STOP_SESSION */
    uint32_t attempt;             /* JOB / DONE / RESULT / EVENT: 1-based */
    uint32_t call_depth;          /* SUBMIT / JOB: nesting of ctx call() */
    int64_t priority;             /* SUBMIT / JOB */
    uint64_t timeout_ms;          /* SUBMIT: job timeout; JOB: lease length */
    uint64_t delay_ms;            /* SUBMIT */
    uint64_t exec_us;             /* RESULT / DONE: processor run time */
    uint64_t started_at_ms;       /* RESULT / DONE: wall clock at start */
    uint64_t ts_ms;               /* EVENT: wall clock */
    uint64_t seq;                 /* EVENT: per-job sequence number */
    uint64_t credit;              /* CREDIT: slots returned */
    bool call;                    /* JOB: a nested call's child (runs beyond credit) */
    bool events;                  /* SUBMIT: send this job's events on the connection */
    bool batch;                   /* READY: the worker reads BATCHes */
    bool noack;                   /* SUBMIT: no ACCEPTED, the RESULT (or ERROR) answers */
    am2z_proc_desc_t *procs;      /* READY: processors served */
    size_t nprocs;
    am2z_comp_desc_t *comps;      /* READY: composites announced (optional) */
    size_t ncomps;
    char *select;                 /* DONE: the route selector's key (optional) */
    uint64_t every_ms;            /* SUBMIT: repeat every N ms (repeatable job) */
    uint64_t limit;               /* SUBMIT: repeat at most N runs; 0 = no limit */
    uint64_t start_ms;            /* SUBMIT: repeat: wall clock of the first run; 0 = now */
    bool dup;                     /* ACCEPTED: an idempotent duplicate (job = first id) */
    bool repeat;                  /* ACCEPTED: job is a repeat id, not a job id */
    /* scheduling (issue 6) */
    uint64_t dispatched_ms;       /* RESULT: wall clock of the final attempt's lease */
} am2z_msg_t;

/*  Limits enforced by decode besides the body size. */
#define AM2Z_CODEC_MAX_PROCS   1024   /* READY.processors entries */
#define AM2Z_CODEC_MAX_COMPS   1024   /* READY.comps entries */
#define AM2Z_CODEC_MAX_STEPS   1024   /* steps / routes of one composite */
#define AM2Z_CODEC_MAX_TEXT    4096   /* description, error message, code */
#define AM2Z_CODEC_MAX_DEPTH   64     /* msgpack nesting in any body */
/*  Longest duration a field may carry (timeout, delay, retry delays, rate
    window), in ms: 10 years, like a repeat's `every`. The broker adds
    durations to clock readings; a bound far below UINT64_MAX keeps every
    such sum exact. */
#define AM2Z_CODEC_MAX_DURATION_MS ((uint64_t)3650 * 86400000)

/*  Initialise to all-absent. */
void am2z_msg_init(am2z_msg_t *msg, am2z_cmd_t cmd);

/*  Frees everything the message owns and re-initialises it to INVALID.
    NULL-safe. */
void am2z_msg_clear(am2z_msg_t *msg);

/*  Encodes the body of msg (msg->cmd selects the fields). Caller owns
    *body (free()). Returns AM2Z_OK, AM2Z_EINVAL (a required field absent or
    invalid — encoding refuses what decoding would refuse, including raw
    state/data/details that are not well-formed msgpack of the right type,
    text longer than AM2Z_CODEC_MAX_TEXT, and nesting deeper than
    AM2Z_CODEC_MAX_DEPTH) or AM2Z_ENOMEM. Raw bytes are copied verbatim. */
int am2z_msg_encode(const am2z_msg_t *msg, uint8_t **body, size_t *size);

/*  Decodes a body for command `cmd` into *msg (which is initialised first).
    Returns AM2Z_OK, AM2Z_EPROTO (err, when given, names the problem: e.g.
    "SUBMIT: field 'session' must be a string of 1..128 valid characters")
    or AM2Z_ENOMEM; AM2Z_EINVAL only when msg is NULL. On failure *msg
    holds nothing to free (it is left as am2z_msg_init(msg, INVALID)).
    max_size is a hard limit: a body of more bytes is refused before it is
    parsed (there is no "unlimited"; pass the configured max-frame-size).
    A duplicate known key, and nil where a typed value is expected, are
    errors: an absent optional field is written by omitting its key.
    Thread safety: reentrant. */
int am2z_msg_decode(am2z_cmd_t cmd, const uint8_t *body, size_t size,
                    size_t max_size, am2z_msg_t *msg,
                    char *err, size_t err_size);

/*  Decodes the three frames (signature, command, body) as received after
    any ROUTER identity. Checks the signature ("unsupported protocol
    'X'"), the command ("unknown command 'X'") and the body as above.
    Returns AM2Z_OK, AM2Z_EPROTO (err explains) or AM2Z_ENOMEM. */
int am2z_frames_decode(const uint8_t *sig, size_t sig_size,
                       const uint8_t *cmd, size_t cmd_size,
                       const uint8_t *body, size_t body_size,
                       size_t max_size, am2z_msg_t *msg,
                       char *err, size_t err_size);

/*  A body am2z_msg_encode() wrote for cmd with req 0, rewritten with req
    set: byte for byte what am2z_msg_encode() writes with that req, without
    encoding (and checking) the other fields again. For commands whose
    schema starts with an optional req (RESULT, ERROR): the
    broker stores a RESULT and sends the same body to each recipient with
    its own req. *out is the caller's (free()). Returns AM2Z_OK, AM2Z_EINVAL
    (another command, req 0, or a body that is not a map or already has a
    req) or AM2Z_ENOMEM. */
int am2z_body_with_req(am2z_cmd_t cmd, const uint8_t *body, size_t size, uint64_t req,
                       uint8_t **out, size_t *out_size);

/*  Best effort for error replies: reads the top-level "req" of a body that
    am2z_msg_decode() refused, so the ERROR can still echo it. Returns
    AM2Z_OK (*req set), AM2Z_ENOTFOUND (no unsigned "req" key) or
    AM2Z_EPROTO (too big, not well-formed msgpack, or not a map). */
int am2z_body_peek_req(const uint8_t *body, size_t size, size_t max_size,
                       uint64_t *req);

/*  Wire form of an error value:
        {kind, category, severity, retryable, code, message, details?, ts}
    encode: caller owns *data. decode: validates like a message body; caller
    owns *out. Used inside bodies and by the client to report errors.
    On decode, category, code and message are required; kind defaults to
    GENERIC, severity and retryable to the category's defaults, ts to 0.
    Encode writes every field but details (when NULL) and ts (when 0). */
int am2z_error_encode(const am2z_error_t *error, uint8_t **data, size_t *size);
int am2z_error_decode(const uint8_t *data, size_t size, am2z_error_t **out,
                      char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
