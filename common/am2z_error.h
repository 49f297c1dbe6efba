/*  am2z_error.h — return codes and the AM2Z error taxonomy.

    Two things live here:

    1. Return codes. Every am2z function that can fail returns `int`:
       AM2Z_OK (0) or one negative code from the band below. Results come back
       through the last out-parameter. am2z_strerror() names a code.

    2. Error values (am2z_error_t): what a processor failure, a workflow failure
       or a refused request carries to the caller — kind, category, severity,
       retryable, code, message and kind-specific details (a msgpack map).
       They mirror the AM2Z error classes (ValidationError, ProcessorNotFound,
       ...) with the same fields, and travel on the wire through am2z_codec.

    Thread safety: everything here is reentrant; an am2z_error_t is owned by
    one thread at a time.
*/
#ifndef AM2Z_ERROR_H_INCLUDED
#define AM2Z_ERROR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
   Return codes: 0 is success, our band is -1 .. -AM2Z_ERR_LAST.
   ------------------------------------------------------------------------ */
enum {
    AM2Z_OK         =   0,
    AM2Z_EINVAL     =  -1,  /* invalid argument (caller bug or bad user input) */
    AM2Z_ENOMEM     =  -2,  /* allocation failed */
    AM2Z_EPROTO     =  -3,  /* malformed or unexpected peer bytes */
    AM2Z_EINTEGRITY =  -4,  /* checksum mismatch or corrupt stored record */
    AM2Z_ECONFLICT  =  -5,  /* compare-and-set lost: stale version */
    AM2Z_ENOTFOUND  =  -6,  /* no such session, job, key or path */
    AM2Z_ERESOURCE  =  -7,  /* a limit was hit: map full, disk full, too large */
    AM2Z_ETIMEOUT   =  -8,  /* a bounded wait expired */
    AM2Z_EIO        =  -9,  /* storage or system call failed */
    AM2Z_ECONFIG    = -10,  /* bad configuration value */
    AM2Z_ETYPE      = -11,  /* value exists but has another type */
    AM2Z_ECRYPTO    = -12,  /* OpenSSL failed */
    AM2Z_ESTATE     = -13,  /* object is in the wrong state for this call */
    AM2Z_ENETWORK   = -14,  /* transport failure (socket, connect, bind) */
    AM2Z_EFAILED    = -15,  /* a processor failed (see the result's error) */
    AM2Z_EBUSY      = -16,  /* held by another process (a data dir's broker lock) */
    AM2Z_ERR_LAST   =  16
};

/*  Returns a static, human-readable description of `code` (never NULL).
    Unknown codes yield "unknown am2z error". */
const char *am2z_strerror(int code);

/*  printf into an optional caller buffer for error text: does nothing when
    err is NULL or err_size is 0; always NUL-terminates otherwise. */
void am2z_errbuf(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------------------
   Error taxonomy.
   ------------------------------------------------------------------------ */
typedef enum {
    AM2Z_CAT_VALIDATION = 0,
    AM2Z_CAT_EXECUTION,
    AM2Z_CAT_TIMEOUT,
    AM2Z_CAT_RESOURCE,
    AM2Z_CAT_NETWORK,
    AM2Z_CAT_CONFIGURATION,
    AM2Z_CAT_BUSINESS,
    AM2Z_CAT_INTEGRITY,
    AM2Z_CAT_CONFLICT,
    AM2Z_CAT_NOT_FOUND,
    AM2Z_CAT_PROTOCOL,
    AM2Z_CAT_COUNT_
} am2z_category_t;

typedef enum {
    AM2Z_SEV_LOW = 0,
    AM2Z_SEV_MEDIUM,
    AM2Z_SEV_HIGH,
    AM2Z_SEV_CRITICAL,
    AM2Z_SEV_COUNT_
} am2z_severity_t;

/*  The AM2Z error classes. GENERIC covers errors built directly from a
    category (e.g. an integrity failure surfaced to a caller). */
typedef enum {
    AM2Z_KIND_GENERIC = 0,
    AM2Z_KIND_VALIDATION,           /* ValidationError */
    AM2Z_KIND_PROCESSOR_NOT_FOUND,  /* ProcessorNotFoundError */
    AM2Z_KIND_PROCESSOR_EXECUTION,  /* ProcessorExecutionError */
    AM2Z_KIND_TIMEOUT,              /* TimeoutError */
    AM2Z_KIND_RESOURCE,             /* ResourceError */
    AM2Z_KIND_NETWORK,              /* NetworkError */
    AM2Z_KIND_CONFIGURATION,        /* ConfigurationError */
    AM2Z_KIND_BUSINESS,             /* BusinessError */
    AM2Z_KIND_CALL_DEPTH_EXCEEDED,  /* CallDepthExceededError */
    AM2Z_KIND_COUNT_
} am2z_kind_t;

/*  Names as they appear on the wire, in JSON and in logs ("validation",
    "high", "ValidationError"). Never NULL; out-of-range gives "unknown". */
const char *am2z_category_name(am2z_category_t category);
const char *am2z_severity_name(am2z_severity_t severity);
const char *am2z_kind_name(am2z_kind_t kind);

/*  Parse a name back. Returns AM2Z_OK or AM2Z_EINVAL for an unknown name. */
int am2z_category_parse(const char *name, am2z_category_t *category);
int am2z_severity_parse(const char *name, am2z_severity_t *severity);
int am2z_kind_parse(const char *name, am2z_kind_t *kind);

/*  Per-category defaults (AM2Z semantics): validation, configuration,
    business, not_found, integrity, conflict and protocol are not retryable;
    execution, timeout, resource and network are. */
bool am2z_category_retryable(am2z_category_t category);
am2z_severity_t am2z_category_severity(am2z_category_t category);

/*  An error value. All strings and bytes are owned by the error.
    Invariant: code and message are never NULL on a constructed error;
    details is NULL (size 0) or one msgpack map. */
typedef struct {
    am2z_kind_t kind;             /* which AM2Z class */
    am2z_category_t category;     /* taxonomy bucket */
    am2z_severity_t severity;     /* low .. critical */
    bool retryable;               /* may the retry policy try again */
    char *code;                   /* stable machine code, e.g. "VALIDATION_ERROR" */
    char *message;                /* human-readable, one line */
    uint8_t *details;             /* msgpack map of kind-specific fields, or NULL */
    size_t details_size;          /* bytes in details */
    uint64_t timestamp_ms;        /* wall clock when it was created */
} am2z_error_t;

/*  Longest message an error keeps, in bytes: what the wire carries
    (AM2Z_CODEC_MAX_TEXT). Every constructor cuts a longer message there
    (at a UTF-8 boundary, ending in "...") so that the error can always be
    sent: a composite nested deep prefixes one "chain 'x' failed at step"
    per level. */
#define AM2Z_ERROR_MESSAGE_MAX 4096

/*  Generic constructor: category defaults decide severity and retryable.
    `message` may be printf-style. Returns NULL only when out of memory.
    Caller owns the result (am2z_error_destroy). */
am2z_error_t *am2z_error_new(am2z_category_t category, const char *code,
                             const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  AM2Z error kinds, with the fields the original carries in `details`.
    Each returns NULL only when out of memory; caller owns the result.
    String arguments may be NULL where noted and are copied. */

/*  ValidationError: details {field, value, reason}. value may be NULL. */
am2z_error_t *am2z_error_validation(const char *field, const char *value,
                                    const char *reason);
/*  ProcessorNotFoundError: details {processorName, availableProcessors[]}. */
am2z_error_t *am2z_error_processor_not_found(const char *processor_name,
                                             const char *const *available,
                                             size_t available_count);
/*  ProcessorExecutionError: details {processorName, executionId, cause}.
    execution_id and cause may be NULL. Retryable (category execution). */
am2z_error_t *am2z_error_execution(const char *processor_name,
                                   const char *execution_id,
                                   const char *cause);
/*  TimeoutError: message "timed out after N ms"; details {operation, timeoutMs}. */
am2z_error_t *am2z_error_timeout(const char *operation, uint64_t timeout_ms);
/*  ResourceError: details {resource, limit, current}. */
am2z_error_t *am2z_error_resource(const char *resource, uint64_t limit,
                                  uint64_t current);
/*  NetworkError: details {endpoint, reason}. */
am2z_error_t *am2z_error_network(const char *endpoint, const char *reason);
/*  ConfigurationError: details {configKey, reason}. */
am2z_error_t *am2z_error_configuration(const char *config_key,
                                       const char *reason);
/*  BusinessError: user code + message; details is an optional msgpack map
    (copied; must be one msgpack map or NULL — else NULL is returned). */
am2z_error_t *am2z_error_business(const char *code, const char *message,
                                  const uint8_t *details, size_t details_size);
/*  CallDepthExceededError: details {depth, maxDepth, processorName}. */
am2z_error_t *am2z_error_call_depth(uint32_t depth, uint32_t max_depth,
                                    const char *processor_name);

/*  A failure inside a composite: kind, category, severity, retryable and
    code of `cause`; message "<what> 'composite' failed at <unit> N
    (name): <cause message>"; details {composite, step (name), position
    (1-based for steps, 0-based index for batch payloads), completedSteps,
    partialState (msgpack map or nil), cause (the cause's details or nil)}.
    what is "chain", "parallel", "route" or "batch"; unit "step", "branch",
    "payload". partial_state may be NULL. Returns NULL only when out of
    memory (or cause is NULL). Caller owns the result. */
am2z_error_t *am2z_error_in_composite(const am2z_error_t *cause, const char *what,
                                      const char *composite, const char *unit,
                                      const char *step, uint32_t position,
                                      uint32_t completed,
                                      const uint8_t *partial_state,
                                      size_t partial_state_size);

/*  Deep copy. NULL in, NULL out. Caller owns the result. */
am2z_error_t *am2z_error_dup(const am2z_error_t *self);

/*  Replace the retryable flag (processors may override category default). */
void am2z_error_set_retryable(am2z_error_t *self, bool retryable);

/*  Frees the error and nulls *self_p. NULL-safe, idempotent. */
void am2z_error_destroy(am2z_error_t **self_p);

#ifdef __cplusplus
}
#endif
#endif
