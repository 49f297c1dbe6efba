/*  am2z_codec.c — see am2z_codec.h and docs/PROTOCOL.md.

    Table-driven: every command has one table of fields (wire key, kind,
    flags, where the value lives in am2z_msg_t). Encode and decode walk the
    same table, so they cannot disagree about what a command carries, and
    the tables in docs/PROTOCOL.md mirror them line for line. The error map,
    the proc map and the retry policy are tables of the same shape, reached
    through K_ERROR, K_MAPS, K_STRS and K_NESTED fields.

    Decoding peer bytes: am2z_msgpack_check() runs first, so every declared
    length fits in the bytes we hold. Even then containers are not handed to
    msgpack-c: a msgpack_object costs ~24 bytes per element, so unpacking a
    4 MiB state of small ints would allocate ~100 MiB. Maps and arrays are
    stepped through with s_skip() (no allocation), raw fields (state, data,
    details) are copied byte for byte — the exact sub-bytes, whatever
    encoding the peer chose — and only keys and scalar values go through
    msgpack_unpack_next().
*/
#include "am2z_codec.h"

#include "am2z_clock.h"
#include "am2z_sbuf.h"

#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_STR_(x) #x
#define S_XSTR(x) S_STR_(x)

/* ---------------------------------------------------------------------------
   Commands.
   ------------------------------------------------------------------------ */
static const char *const s_cmd_names[AM2Z_CMD_COUNT_] = {
    [AM2Z_CMD_INVALID]      = "INVALID",
    [AM2Z_CMD_SUBMIT]       = "SUBMIT",
    [AM2Z_CMD_FETCH]        = "FETCH",
    [AM2Z_CMD_QUERY]        = "QUERY",
    [AM2Z_CMD_STOP_SESSION] = "STOP_SESSION",
    [AM2Z_CMD_ACCEPTED]     = "ACCEPTED",
    [AM2Z_CMD_RESULT]       = "RESULT",
    [AM2Z_CMD_REPLY]        = "REPLY",
    [AM2Z_CMD_ERROR]        = "ERROR",
    [AM2Z_CMD_EVENT]        = "EVENT",
    [AM2Z_CMD_HEARTBEAT]    = "HEARTBEAT",
    [AM2Z_CMD_DISCONNECT]   = "DISCONNECT",
    [AM2Z_CMD_READY]        = "READY",
    [AM2Z_CMD_CREDIT]       = "CREDIT",
    [AM2Z_CMD_DONE]         = "DONE",
    [AM2Z_CMD_JOB]          = "JOB",
    [AM2Z_CMD_CANCEL]       = "CANCEL",
    [AM2Z_CMD_DLQ]          = "DLQ",
    [AM2Z_CMD_CALL]         = "CALL",
    [AM2Z_CMD_REPEAT]       = "REPEAT",
};

const char *
am2z_cmd_name(am2z_cmd_t cmd)
{
    return (unsigned)cmd < AM2Z_CMD_COUNT_ ? s_cmd_names[cmd] : "INVALID";
}

am2z_cmd_t
am2z_cmd_parse(const char *name, size_t len)
{
    if (!name)
        return AM2Z_CMD_INVALID;
    /* starts at 1: "INVALID" is not a command a peer may send */
    for (int i = 1; i < AM2Z_CMD_COUNT_; i++)
        if (strlen(s_cmd_names[i]) == len && memcmp(s_cmd_names[i], name, len) == 0)
            return (am2z_cmd_t)i;
    return AM2Z_CMD_INVALID;
}

/* ---------------------------------------------------------------------------
   Field tables.
   ------------------------------------------------------------------------ */
typedef enum {
    K_U64,      /* uint64_t in lo..hi */
    K_U32,      /* uint32_t in lo..hi */
    K_I64,      /* int64_t, full range */
    K_BOOL,     /* bool */
    K_F64,      /* double in flo..fhi, finite; integers accepted */
    K_STR,      /* char *, checked by str */
    K_ENUM,     /* an enum named on the wire, converted by en */
    K_RAW,      /* uint8_t * at off + size_t at aux; S_MAP / S_ARRAY narrow it */
    K_ERROR,    /* am2z_error_t * decoded by s_error_schema */
    K_MAPS,     /* array of sub maps: elements of sub->size at off, count
                   (lo..hi) at aux; elem names them in diagnostics */
    K_STRS,     /* char ** at off + count (lo..hi) at aux, each checked by str */
    K_NESTED,   /* a struct embedded at off, described by sub */
} s_kind_t;

enum {
    S_REQ       = 1 << 0,   /* must be present */
    S_ALWAYS    = 1 << 1,   /* encoded even when zero; optional on decode */
    S_REQ_IF_KO = 1 << 2,   /* required when the map's "ok" is false */
    S_MAP       = 1 << 3,   /* K_RAW: must be a map */
    S_ARRAY     = 1 << 4,   /* K_RAW: must be an array */
    S_UNIQUE    = 1 << 5,   /* K_MAPS: the elements' first field (a char *
                               name) must be unique */
    S_ONLY_IF_OK = 1 << 6,  /* refused when the map's "ok" is false */
};

/*  A string rule: valid() sees the raw bytes (no NUL terminator), so it
    must refuse embedded NULs itself; expect completes "must be ...". */
typedef struct {
    bool (*valid)(const char *s, size_t len);
    const char *expect;
} s_str_rule_t;

/*  An enum carried as its name. */
typedef struct {
    int (*parse)(const char *name, void *out);
    const char *(*name)(const void *in);
    const char *expect;
} s_enum_rule_t;

typedef struct s_schema_t s_schema_t;

typedef struct {
    const char *key;              /* wire key */
    s_kind_t kind;
    unsigned flags;               /* S_* */
    size_t off;                   /* offset of the value in the struct */
    size_t aux;                   /* K_RAW: offset of the size; K_MAPS/K_STRS: of the count */
    uint64_t lo, hi;              /* K_U64 / K_U32 range; K_MAPS/K_STRS count range */
    double flo, fhi;              /* K_F64 range */
    const s_str_rule_t *str;      /* K_STR */
    const s_enum_rule_t *en;      /* K_ENUM */
    const s_schema_t *sub;        /* K_ERROR, K_MAPS, K_NESTED */
    const char *elem;             /* K_MAPS: what one element is ("processor") */
} s_field_t;

/*  Invariant: count <= 32 (decode tracks seen fields in a uint32_t). */
struct s_schema_t {
    const s_field_t *fields;
    size_t count;
    size_t size;                  /* sizeof the struct (K_MAPS elements) */
};

#define S_SCHEMA(tbl, type) { tbl, sizeof tbl / sizeof tbl[0], sizeof(type) }

/* --- string rules -------------------------------------------------------- */

static bool
s_no_nul(const char *s, size_t len)
{
    /* msgpack-c may hand an empty string as (NULL, 0) */
    return len == 0 || memchr(s, '\0', len) == NULL;
}

static bool
s_idem_valid(const char *s, size_t len)
{
    return len >= 1 && len <= 128 && s_no_nul(s, len);
}

static bool
s_text_valid(const char *s, size_t len)
{
    return len <= AM2Z_CODEC_MAX_TEXT && s_no_nul(s, len);
}

static bool
s_code_valid(const char *s, size_t len)
{
    return len >= 1 && s_text_valid(s, len);
}

static const char *const s_what_names[] = {
    "stats", "queues", "session-stats", "sessions", "processors", "state", "job", "dlq",
    "repeats", "session-info",
};

static bool
s_what_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof s_what_names / sizeof s_what_names[0]; i++)
        if (strlen(s_what_names[i]) == len && memcmp(s_what_names[i], s, len) == 0)
            return true;
    return false;
}

static const s_str_rule_t s_rule_job = {
    am2z_job_id_valid, "a string of 1.." S_XSTR(AM2Z_JOB_ID_MAX) " valid characters" };
static const s_str_rule_t s_rule_name = {
    am2z_name_valid, "a string of 1.." S_XSTR(AM2Z_NAME_MAX) " valid characters" };
static const s_str_rule_t s_rule_session = {
    am2z_session_id_valid, "a string of 1.." S_XSTR(AM2Z_SESSION_ID_MAX) " valid characters" };
static bool
s_op_valid(const char *s, size_t len)
{
    return (len == 5 && memcmp(s, "retry", 5) == 0) || (len == 7 && memcmp(s, "discard", 7) == 0);
}

static const s_str_rule_t s_rule_op = { s_op_valid, "one of retry|discard" };

static bool
s_rop_valid(const char *s, size_t len)
{
    return len == 6 && memcmp(s, "cancel", 6) == 0;
}

static const s_str_rule_t s_rule_rop = { s_rop_valid, "cancel" };

static bool
s_key_valid(const char *s, size_t len)
{
    return len >= 1 && len <= AM2Z_NAME_MAX && s_no_nul(s, len);
}

static bool
s_path_valid(const char *s, size_t len)
{
    return len >= 1 && len <= 256 && s_no_nul(s, len);
}

static const s_str_rule_t s_rule_key = {
    s_key_valid, "a string of 1.." S_XSTR(AM2Z_NAME_MAX) " bytes without NUL" };
static const s_str_rule_t s_rule_path = {
    s_path_valid, "a string of 1..256 bytes without NUL" };
static const s_str_rule_t s_rule_what = {
    s_what_valid, "one of stats|queues|session-stats|sessions|processors|state|job|dlq|"
    "repeats|session-info" };
static const s_str_rule_t s_rule_idem = {
    s_idem_valid, "a string of 1..128 bytes without NUL" };
_Static_assert(AM2Z_ERROR_MESSAGE_MAX == AM2Z_CODEC_MAX_TEXT,
               "an error message always fits the wire");
static const s_str_rule_t s_rule_text = {
    s_text_valid, "a string of at most " S_XSTR(AM2Z_CODEC_MAX_TEXT) " bytes without NUL" };
static const s_str_rule_t s_rule_code = {
    s_code_valid, "a string of 1.." S_XSTR(AM2Z_CODEC_MAX_TEXT) " bytes without NUL" };

/* --- enum rules ---------------------------------------------------------- */

static int
s_kind_parse(const char *name, void *out)
{
    return am2z_kind_parse(name, (am2z_kind_t *)out);
}

static const char *
s_kind_name(const void *in)
{
    return am2z_kind_name(*(const am2z_kind_t *)in);
}

static int
s_category_parse(const char *name, void *out)
{
    return am2z_category_parse(name, (am2z_category_t *)out);
}

static const char *
s_category_name(const void *in)
{
    return am2z_category_name(*(const am2z_category_t *)in);
}

static int
s_severity_parse(const char *name, void *out)
{
    return am2z_severity_parse(name, (am2z_severity_t *)out);
}

static const char *
s_severity_name(const void *in)
{
    return am2z_severity_name(*(const am2z_severity_t *)in);
}

static const char *const s_comp_kinds[] = { "chain", "parallel", "route", "batch" };

const char *
am2z_comp_kind_name(uint32_t kind)
{
    return kind < 4 ? s_comp_kinds[kind] : NULL;
}

static int
s_comp_kind_parse(const char *name, void *out)
{
    for (uint32_t i = 0; i < 4; i++)
        if (strcmp(name, s_comp_kinds[i]) == 0) {
            *(uint32_t *)out = i;
            return AM2Z_OK;
        }
    return AM2Z_EINVAL;
}

static const char *
s_comp_kind_str(const void *in)
{
    const char *s = am2z_comp_kind_name(*(const uint32_t *)in);
    return s ? s : "unknown";
}

static const s_enum_rule_t s_enum_comp_kind = {
    s_comp_kind_parse, s_comp_kind_str, "one of chain|parallel|route|batch" };

static const s_enum_rule_t s_enum_kind = {
    s_kind_parse, s_kind_name, "an error kind name (e.g. \"ValidationError\")" };
static const s_enum_rule_t s_enum_category = {
    s_category_parse, s_category_name, "a category name (e.g. \"execution\")" };
static const s_enum_rule_t s_enum_severity = {
    s_severity_parse, s_severity_name, "one of low|medium|high|critical" };

/* --- the error map ------------------------------------------------------- */

#define E(m) offsetof(am2z_error_t, m)

/*  Order matters: s_decode_error() applies category defaults by index. */
enum { S_ERR_KIND, S_ERR_CATEGORY, S_ERR_SEVERITY, S_ERR_RETRYABLE };

static const s_field_t s_error_fields[] = {
    { .key = "kind",      .kind = K_ENUM, .flags = S_ALWAYS, .off = E(kind), .en = &s_enum_kind },
    { .key = "category",  .kind = K_ENUM, .flags = S_REQ, .off = E(category), .en = &s_enum_category },
    { .key = "severity",  .kind = K_ENUM, .flags = S_ALWAYS, .off = E(severity), .en = &s_enum_severity },
    { .key = "retryable", .kind = K_BOOL, .flags = S_ALWAYS, .off = E(retryable) },
    { .key = "code",      .kind = K_STR,  .flags = S_REQ, .off = E(code), .str = &s_rule_code },
    { .key = "message",   .kind = K_STR,  .flags = S_REQ, .off = E(message), .str = &s_rule_text },
    { .key = "details",   .kind = K_RAW,  .flags = S_MAP, .off = E(details), .aux = E(details_size) },
    { .key = "ts",        .kind = K_U64,  .off = E(timestamp_ms), .hi = UINT64_MAX },
};
static const s_schema_t s_error_schema = S_SCHEMA(s_error_fields, am2z_error_t);

/* --- the proc map and its retry policy ----------------------------------- */

#define R(m) offsetof(am2z_retry_policy_t, m)

static const s_field_t s_retry_fields[] = {
    { .key = "max",      .kind = K_U32,  .off = R(max_attempts), .hi = UINT32_MAX },
    { .key = "exp",      .kind = K_BOOL, .off = R(exponential) },
    { .key = "delay",    .kind = K_U64,  .off = R(delay_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "mult",     .kind = K_F64,  .off = R(multiplier), .flo = 1.0, .fhi = DBL_MAX },
    { .key = "maxdelay", .kind = K_U64,  .off = R(max_delay_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "jitter",   .kind = K_F64,  .off = R(jitter), .flo = 0.0, .fhi = 1.0 },
    { .key = "cats",     .kind = K_U32,  .off = R(retry_categories), .hi = UINT32_MAX },
};
static const s_schema_t s_retry_schema = S_SCHEMA(s_retry_fields, am2z_retry_policy_t);

#define P(m) offsetof(am2z_proc_desc_t, m)

static const s_field_t s_proc_fields[] = {
    { .key = "name",    .kind = K_STR, .flags = S_REQ, .off = P(name), .str = &s_rule_name },
    { .key = "desc",    .kind = K_STR, .off = P(description), .str = &s_rule_text },
    { .key = "conc",    .kind = K_U32, .flags = S_REQ, .off = P(concurrency), .lo = 1, .hi = UINT32_MAX },
    { .key = "timeout", .kind = K_U64, .off = P(timeout_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "prio",    .kind = K_I64, .off = P(priority) },
    { .key = "delay",   .kind = K_U64, .off = P(delay_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "rate",    .kind = K_U32, .off = P(rate_max), .hi = UINT32_MAX },
    { .key = "per",     .kind = K_U64, .off = P(rate_per_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "cap",     .kind = K_U32, .off = P(max_active), .hi = UINT32_MAX },
    { .key = "retry",   .kind = K_NESTED, .off = P(retry), .sub = &s_retry_schema },
};
static const s_schema_t s_proc_schema = S_SCHEMA(s_proc_fields, am2z_proc_desc_t);

/* --- the composite map and its routes ------------------------------------ */

#define RT(m) offsetof(am2z_route_desc_t, m)

static const s_field_t s_route_fields[] = {
    { .key = "key",    .kind = K_STR, .flags = S_REQ, .off = RT(key), .str = &s_rule_key },
    { .key = "target", .kind = K_STR, .flags = S_REQ, .off = RT(target), .str = &s_rule_name },
};
static const s_schema_t s_route_schema = S_SCHEMA(s_route_fields, am2z_route_desc_t);

#define C(m) offsetof(am2z_comp_desc_t, m)

static const s_field_t s_comp_fields[] = {
    { .key = "name",     .kind = K_STR,  .flags = S_REQ, .off = C(name), .str = &s_rule_name },
    { .key = "kind",     .kind = K_ENUM, .flags = S_REQ, .off = C(kind), .en = &s_enum_comp_kind },
    { .key = "desc",     .kind = K_STR,  .off = C(description), .str = &s_rule_text },
    { .key = "timeout",  .kind = K_U64,  .off = C(timeout_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS },
    { .key = "steps",    .kind = K_STRS, .off = C(steps), .aux = C(nsteps),
      .lo = 1, .hi = AM2Z_CODEC_MAX_STEPS, .str = &s_rule_name },
    { .key = "merge",    .kind = K_STR,  .off = C(merge), .str = &s_rule_name },
    { .key = "strict",   .kind = K_BOOL, .off = C(strict) },
    { .key = "selpath",  .kind = K_STR,  .off = C(selector_path), .str = &s_rule_path },
    { .key = "selector", .kind = K_STR,  .off = C(selector), .str = &s_rule_name },
    { .key = "routes",   .kind = K_MAPS, .off = C(routes), .aux = C(nroutes),
      .lo = 1, .hi = AM2Z_CODEC_MAX_STEPS, .sub = &s_route_schema, .elem = "route" },
    { .key = "fallback", .kind = K_STR,  .off = C(fallback), .str = &s_rule_name },
    { .key = "proc",     .kind = K_STR,  .off = C(processor), .str = &s_rule_name },
    { .key = "payloads", .kind = K_STR,  .off = C(payloads_path), .str = &s_rule_path },
};
static const s_schema_t s_comp_schema = S_SCHEMA(s_comp_fields, am2z_comp_desc_t);

/* --- message fields: one macro per wire key, flags given per command ----- */

#define M(m) offsetof(am2z_msg_t, m)

#define F_REQ(fl)      { .key = "req", .kind = K_U64, .flags = (fl), .off = M(req), .hi = UINT64_MAX }
#define F_JOB(fl)      { .key = "job", .kind = K_STR, .flags = (fl), .off = M(job), .str = &s_rule_job }
#define F_PROC(fl)     { .key = "proc", .kind = K_STR, .flags = (fl), .off = M(processor), .str = &s_rule_name }
#define F_SESSION(fl)  { .key = "session", .kind = K_STR, .flags = (fl), .off = M(session), .str = &s_rule_session }
#define F_WORKER(fl)   { .key = "worker", .kind = K_STR, .flags = (fl), .off = M(worker), .str = &s_rule_job }
#define F_WHAT(fl)     { .key = "what", .kind = K_STR, .flags = (fl), .off = M(what), .str = &s_rule_what }
#define F_OP(fl)       { .key = "op", .kind = K_STR, .flags = (fl), .off = M(op), .str = &s_rule_op }
#define F_ROP(fl)      { .key = "op", .kind = K_STR, .flags = (fl), .off = M(op), .str = &s_rule_rop }
#define F_NAME(fl)     { .key = "name", .kind = K_STR, .flags = (fl), .off = M(name), .str = &s_rule_name }
#define F_IDEM(fl)     { .key = "idem", .kind = K_STR, .flags = (fl), .off = M(idem_key), .str = &s_rule_idem }
#define F_STATE(fl)    { .key = "state", .kind = K_RAW, .flags = (fl) | S_MAP, .off = M(state), .aux = M(state_size) }
#define F_DATA(fl)     { .key = "data", .kind = K_RAW, .flags = (fl), .off = M(data), .aux = M(data_size) }
#define F_ERROR(fl)    { .key = "error", .kind = K_ERROR, .flags = (fl), .off = M(error), .sub = &s_error_schema }
#define F_OK(fl)       { .key = "ok", .kind = K_BOOL, .flags = (fl), .off = M(success) }
#define F_KEEP(fl)     { .key = "keep", .kind = K_BOOL, .flags = (fl), .off = M(keep_state) }
#define F_ATTEMPT(fl)  { .key = "attempt", .kind = K_U32, .flags = (fl), .off = M(attempt), .lo = 1, .hi = UINT32_MAX }
#define F_DEPTH(fl)    { .key = "depth", .kind = K_U32, .flags = (fl), .off = M(call_depth), .hi = UINT32_MAX }
#define F_PRIO(fl)     { .key = "prio", .kind = K_I64, .flags = (fl), .off = M(priority) }
#define F_TIMEOUT(fl)  { .key = "timeout", .kind = K_U64, .flags = (fl), .off = M(timeout_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS }
#define F_DELAY(fl)    { .key = "delay", .kind = K_U64, .flags = (fl), .off = M(delay_ms), .hi = AM2Z_CODEC_MAX_DURATION_MS }
#define F_EXEC(fl)     { .key = "exec_us", .kind = K_U64, .flags = (fl), .off = M(exec_us), .hi = UINT64_MAX }
#define F_STARTED(fl)  { .key = "started", .kind = K_U64, .flags = (fl), .off = M(started_at_ms), .hi = UINT64_MAX }
#define F_DISPATCHED(fl) { .key = "dispatched", .kind = K_U64, .flags = (fl), .off = M(dispatched_ms), .hi = UINT64_MAX }
#define F_TS(fl)       { .key = "ts", .kind = K_U64, .flags = (fl), .off = M(ts_ms), .hi = UINT64_MAX }
#define F_SEQ(fl)      { .key = "seq", .kind = K_U64, .flags = (fl), .off = M(seq), .hi = UINT64_MAX }
#define F_CREDIT(fl)   { .key = "credit", .kind = K_U64, .flags = (fl), .off = M(credit), .lo = 1, .hi = 1000000 }
#define F_PROCS(fl)    { .key = "procs", .kind = K_MAPS, .flags = (fl) | S_UNIQUE, .off = M(procs), \
                         .aux = M(nprocs), .lo = 1, .hi = AM2Z_CODEC_MAX_PROCS, \
                         .sub = &s_proc_schema, .elem = "processor" }
#define F_COMPS(fl)    { .key = "comps", .kind = K_MAPS, .flags = (fl) | S_UNIQUE, .off = M(comps), \
                         .aux = M(ncomps), .lo = 1, .hi = AM2Z_CODEC_MAX_COMPS, \
                         .sub = &s_comp_schema, .elem = "composite" }
#define F_CALL(fl)     { .key = "call", .kind = K_BOOL, .flags = (fl), .off = M(call) }
#define F_EVENTS(fl)   { .key = "events", .kind = K_BOOL, .flags = (fl), .off = M(events) }
#define F_BATCH(fl)    { .key = "batch", .kind = K_BOOL, .flags = (fl), .off = M(batch) }
#define F_NOACK(fl)    { .key = "noack", .kind = K_BOOL, .flags = (fl), .off = M(noack) }
#define F_EVERY(fl)    { .key = "every", .kind = K_U64, .flags = (fl), .off = M(every_ms), .lo = 1, .hi = UINT64_MAX }
#define F_LIMIT(fl)    { .key = "limit", .kind = K_U64, .flags = (fl), .off = M(limit), .hi = UINT64_MAX }
#define F_START(fl)    { .key = "start", .kind = K_U64, .flags = (fl), .off = M(start_ms), .hi = UINT64_MAX }
#define F_DUP(fl)      { .key = "dup", .kind = K_BOOL, .flags = (fl), .off = M(dup) }
#define F_REPEAT(fl)   { .key = "repeat", .kind = K_BOOL, .flags = (fl), .off = M(repeat) }
#define F_SELECT(fl)   { .key = "select", .kind = K_STR, .flags = (fl), .off = M(select), .str = &s_rule_key }

/*  The command tables. Keep docs/PROTOCOL.md in step with these. */
static const s_field_t s_submit[] = {
    F_REQ(S_REQ), F_PROC(S_REQ), F_SESSION(S_REQ), F_STATE(0), F_PRIO(0),
    F_TIMEOUT(0), F_DELAY(0), F_DEPTH(0), F_IDEM(0), F_JOB(0), F_EVENTS(0),
    F_EVERY(0), F_LIMIT(0), F_START(0), F_NOACK(0),
};
static const s_field_t s_fetch[] = { F_REQ(S_REQ), F_JOB(S_REQ) };
static const s_field_t s_query[] = {
    F_REQ(S_REQ), F_WHAT(S_REQ), F_SESSION(0), F_PROC(0), F_JOB(0),
};
static const s_field_t s_stop_session[] = { F_REQ(S_REQ), F_SESSION(S_REQ), F_KEEP(0) };
static const s_field_t s_accepted[] = {
    F_REQ(S_REQ), F_JOB(S_REQ), F_SESSION(0), F_DUP(0), F_REPEAT(0),
};
static const s_field_t s_result[] = {
    F_REQ(0), F_JOB(S_REQ), F_OK(S_REQ), F_STATE(0), F_ERROR(S_REQ_IF_KO),
    F_ATTEMPT(0), F_EXEC(0), F_STARTED(0), F_PROC(0), F_SESSION(0), F_WORKER(0),
    F_DISPATCHED(0),
};
static const s_field_t s_reply[] = { F_REQ(S_REQ), F_DATA(0), F_OK(0) };
static const s_field_t s_error[] = { F_REQ(0), F_ERROR(S_REQ) };
static const s_field_t s_event[] = {
    F_NAME(S_REQ), F_JOB(0), F_SESSION(0), F_PROC(0), F_DATA(0), F_TS(0),
    F_SEQ(0), F_ATTEMPT(0),
};
static const s_field_t s_heartbeat[] = { F_WORKER(0) };
static const s_field_t s_disconnect[] = { F_WORKER(0) };
static const s_field_t s_ready[] = { F_WORKER(S_REQ), F_PROCS(S_REQ), F_COMPS(0), F_BATCH(0) };
static const s_field_t s_credit[] = { F_PROC(S_REQ), F_CREDIT(S_REQ) };
static const s_field_t s_done[] = {
    F_JOB(S_REQ), F_ATTEMPT(S_REQ), F_OK(S_REQ), F_DATA(S_ARRAY), F_STATE(0),
    F_ERROR(S_REQ_IF_KO), F_EXEC(0), F_STARTED(0), F_SELECT(S_ONLY_IF_OK),
};
static const s_field_t s_job[] = {
    F_JOB(S_REQ), F_ATTEMPT(S_REQ), F_PROC(S_REQ), F_SESSION(S_REQ),
    F_STATE(S_REQ), F_TIMEOUT(0), F_DEPTH(0), F_PRIO(0), F_CALL(0),
};
static const s_field_t s_cancel[] = { F_JOB(S_REQ), F_ATTEMPT(0) };
static const s_field_t s_dlq[] = { F_REQ(S_REQ), F_OP(S_REQ), F_JOB(S_REQ) };
static const s_field_t s_repeat[] = { F_REQ(S_REQ), F_ROP(S_REQ), F_JOB(S_REQ) };
static const s_field_t s_call[] = {
    F_REQ(S_REQ), F_JOB(S_REQ), F_PROC(S_REQ), F_STATE(0), F_DEPTH(0),
};

static const s_schema_t s_cmd_schemas[AM2Z_CMD_COUNT_] = {
    [AM2Z_CMD_SUBMIT]       = S_SCHEMA(s_submit, am2z_msg_t),
    [AM2Z_CMD_FETCH]        = S_SCHEMA(s_fetch, am2z_msg_t),
    [AM2Z_CMD_QUERY]        = S_SCHEMA(s_query, am2z_msg_t),
    [AM2Z_CMD_STOP_SESSION] = S_SCHEMA(s_stop_session, am2z_msg_t),
    [AM2Z_CMD_ACCEPTED]     = S_SCHEMA(s_accepted, am2z_msg_t),
    [AM2Z_CMD_RESULT]       = S_SCHEMA(s_result, am2z_msg_t),
    [AM2Z_CMD_REPLY]        = S_SCHEMA(s_reply, am2z_msg_t),
    [AM2Z_CMD_ERROR]        = S_SCHEMA(s_error, am2z_msg_t),
    [AM2Z_CMD_EVENT]        = S_SCHEMA(s_event, am2z_msg_t),
    [AM2Z_CMD_HEARTBEAT]    = S_SCHEMA(s_heartbeat, am2z_msg_t),
    [AM2Z_CMD_DISCONNECT]   = S_SCHEMA(s_disconnect, am2z_msg_t),
    [AM2Z_CMD_READY]        = S_SCHEMA(s_ready, am2z_msg_t),
    [AM2Z_CMD_CREDIT]       = S_SCHEMA(s_credit, am2z_msg_t),
    [AM2Z_CMD_DONE]         = S_SCHEMA(s_done, am2z_msg_t),
    [AM2Z_CMD_JOB]          = S_SCHEMA(s_job, am2z_msg_t),
    [AM2Z_CMD_CANCEL]       = S_SCHEMA(s_cancel, am2z_msg_t),
    [AM2Z_CMD_DLQ]          = S_SCHEMA(s_dlq, am2z_msg_t),
    [AM2Z_CMD_CALL]         = S_SCHEMA(s_call, am2z_msg_t),
    [AM2Z_CMD_REPEAT]       = S_SCHEMA(s_repeat, am2z_msg_t),
};

/*  Typed access to a field's slot. */
#define SLOT(base, f, type) ((type *)((char *)(base) + (f)->off))
#define CSLOT(base, f, type) ((const type *)((const char *)(base) + (f)->off))
#define AUX(base, f) ((size_t *)((char *)(base) + (f)->aux))
#define CAUX(base, f) ((const size_t *)((const char *)(base) + (f)->aux))

/* ---------------------------------------------------------------------------
   Messages and their memory.
   ------------------------------------------------------------------------ */
void
am2z_msg_init(am2z_msg_t *msg, am2z_cmd_t cmd)
{
    if (!msg)
        return;
    memset(msg, 0, sizeof *msg);
    msg->cmd = cmd;
}

static void
s_procs_free(am2z_proc_desc_t *procs, size_t n)
{
    if (!procs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(procs[i].name);
        free(procs[i].description);
    }
    free(procs);
}

void
am2z_comp_desc_clear(am2z_comp_desc_t *d)
{
    if (!d)
        return;
    free(d->name);
    free(d->description);
    for (size_t i = 0; d->steps && i < d->nsteps; i++)
        free(d->steps[i]);
    free(d->steps);
    free(d->merge);
    free(d->selector_path);
    free(d->selector);
    for (size_t i = 0; d->routes && i < d->nroutes; i++) {
        free(d->routes[i].key);
        free(d->routes[i].target);
    }
    free(d->routes);
    free(d->fallback);
    free(d->processor);
    free(d->payloads_path);
    memset(d, 0, sizeof *d);
}

static void
s_comps_free(am2z_comp_desc_t *comps, size_t n)
{
    for (size_t i = 0; comps && i < n; i++)
        am2z_comp_desc_clear(&comps[i]);
    free(comps);
}

static char *
s_sdup(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    if (!c)
        *ok = false;
    return c;
}

int
am2z_comp_desc_copy(const am2z_comp_desc_t *src, am2z_comp_desc_t *out)
{
    if (!src || !out)
        return AM2Z_EINVAL;
    memset(out, 0, sizeof *out);
    bool ok = true;
    out->kind = src->kind;
    out->timeout_ms = src->timeout_ms;
    out->strict = src->strict;
    out->name = s_sdup(src->name, &ok);
    out->description = s_sdup(src->description, &ok);
    out->merge = s_sdup(src->merge, &ok);
    out->selector_path = s_sdup(src->selector_path, &ok);
    out->selector = s_sdup(src->selector, &ok);
    out->fallback = s_sdup(src->fallback, &ok);
    out->processor = s_sdup(src->processor, &ok);
    out->payloads_path = s_sdup(src->payloads_path, &ok);
    if (src->nsteps && src->steps) {
        out->steps = calloc(src->nsteps, sizeof *out->steps);
        if (out->steps) {
            out->nsteps = src->nsteps;
            for (size_t i = 0; i < src->nsteps; i++)
                out->steps[i] = s_sdup(src->steps[i], &ok);
        } else {
            ok = false;
        }
    }
    if (src->nroutes && src->routes) {
        out->routes = calloc(src->nroutes, sizeof *out->routes);
        if (out->routes) {
            out->nroutes = src->nroutes;
            for (size_t i = 0; i < src->nroutes; i++) {
                out->routes[i].key = s_sdup(src->routes[i].key, &ok);
                out->routes[i].target = s_sdup(src->routes[i].target, &ok);
            }
        } else {
            ok = false;
        }
    }
    if (!ok) {
        am2z_comp_desc_clear(out);
        return AM2Z_ENOMEM;
    }
    return AM2Z_OK;
}

void
am2z_msg_clear(am2z_msg_t *msg)
{
    if (!msg)
        return;
    free(msg->job);
    free(msg->processor);
    free(msg->session);
    free(msg->worker);
    free(msg->what);
    free(msg->op);
    free(msg->name);
    free(msg->idem_key);
    free(msg->state);
    free(msg->data);
    am2z_error_destroy(&msg->error);
    s_procs_free(msg->procs, msg->nprocs);
    s_comps_free(msg->comps, msg->ncomps);
    free(msg->select);
    am2z_msg_init(msg, AM2Z_CMD_INVALID);
}

/* ---------------------------------------------------------------------------
   Diagnostics: every refusal says which command (or "error") and which
   field, so a peer's operator can fix the sender from the log line alone.
   ------------------------------------------------------------------------ */
typedef struct {
    const char *what;             /* "SUBMIT", "error", ... */
    char *err;                    /* caller's buffer or NULL */
    size_t err_size;
} s_diag_t;

static int
s_fail(s_diag_t *d, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
s_fail(s_diag_t *d, int rc, const char *fmt, ...)
{
    if (!d->err || d->err_size == 0)
        return rc;
    int n = snprintf(d->err, d->err_size, "%s: ", d->what);
    if (n >= 0 && (size_t)n < d->err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err + n, d->err_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/*  "must be ..." for a field whose value has the wrong type or range. */
static int
s_fail_type(s_diag_t *d, const s_field_t *f, const char *name)
{
    char buf[96];
    const char *expect = buf;
    switch (f->kind) {
    case K_U64:
    case K_U32:
        if (f->lo == 0 && f->hi == UINT64_MAX)
            expect = "an unsigned integer";
        else if (f->lo == 0 && f->hi == AM2Z_CODEC_MAX_DURATION_MS)
            snprintf(buf, sizeof buf, "a duration of 0..%llu ms (10 years)",
                     (unsigned long long)f->hi);
        else
            snprintf(buf, sizeof buf, "an integer %llu..%llu",
                     (unsigned long long)f->lo, (unsigned long long)f->hi);
        break;
    case K_I64:    expect = "an integer"; break;
    case K_BOOL:   expect = "a boolean"; break;
    case K_F64:
        if (f->fhi == DBL_MAX)
            snprintf(buf, sizeof buf, "a finite number >= %g", f->flo);
        else
            snprintf(buf, sizeof buf, "a number %g..%g", f->flo, f->fhi);
        break;
    case K_STR:    expect = f->str->expect; break;
    case K_ENUM:   expect = f->en->expect; break;
    case K_RAW:
        expect = (f->flags & S_MAP) ? "a map" : (f->flags & S_ARRAY) ? "an array" : "a msgpack value";
        break;
    case K_ERROR:  expect = "an error map"; break;
    case K_MAPS:
        snprintf(buf, sizeof buf, "an array of %llu..%llu %s maps",
                 (unsigned long long)f->lo, (unsigned long long)f->hi, f->elem);
        break;
    case K_STRS:
        snprintf(buf, sizeof buf, "an array of %llu..%llu names",
                 (unsigned long long)f->lo, (unsigned long long)f->hi);
        break;
    case K_NESTED: expect = "a map"; break;
    }
    return s_fail(d, AM2Z_EPROTO, "field '%s' must be %s", name, expect);
}


static bool
s_is_map(uint8_t b)
{
    return (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
}

static bool
s_is_array(uint8_t b)
{
    return (b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd;
}

static bool
s_is_str(uint8_t b)
{
    return (b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb;
}

/*  Reads a map or array header at p[*pos]; *count is pairs for a map. */
static bool
s_container_header(const uint8_t *p, size_t size, size_t *pos, uint64_t *count)
{
    if (*pos >= size)
        return false;
    uint8_t b = p[(*pos)++];
    size_t n = 0;
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        *count = b & 0x0f;
        return true;
    }
    if (b == 0xdc || b == 0xde)
        n = 2;
    else if (b == 0xdd || b == 0xdf)
        n = 4;
    else
        return false;
    if (size - *pos < n)
        return false;
    *count = am2z_be_read(p + *pos, n);
    *pos += n;
    return true;
}

/*  Advances *pos past one object. The bytes passed am2z_msgpack_check(),
    but every step is bounds-checked anyway: false means malformed. */
static bool
s_skip(const uint8_t *p, size_t size, size_t *pos)
{
    uint64_t pending = 1;
    size_t i = *pos;
    while (pending > 0) {
        if (i >= size)
            return false;
        pending--;
        uint8_t b = p[i++];
        uint64_t skip = 0, children = 0;
        size_t hdr = 0;
        bool container = false, map = false;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* single-byte values */
        } else if ((b & 0xe0) == 0xa0) {
            skip = b & 0x1f;
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
        } else if ((b & 0xf0) == 0x80) {
            children = 2 * (uint64_t)(b & 0x0f);
        } else {
            switch (b) {
            case 0xc4: case 0xd9: hdr = 1; break;
            case 0xc5: case 0xda: hdr = 2; break;
            case 0xc6: case 0xdb: hdr = 4; break;
            case 0xc7: hdr = 1; skip = 1; break;
            case 0xc8: hdr = 2; skip = 1; break;
            case 0xc9: hdr = 4; skip = 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: hdr = 2; container = true; break;
            case 0xdd: hdr = 4; container = true; break;
            case 0xde: hdr = 2; container = map = true; break;
            case 0xdf: hdr = 4; container = map = true; break;
            default:   return false;               /* 0xc1 */
            }
            if (hdr) {
                if (size - i < hdr)
                    return false;
                uint64_t n = am2z_be_read(p + i, hdr);
                i += hdr;
                if (container)
                    children = map ? 2 * n : n;
                else
                    skip += n;
            }
        }
        if (skip > size - i || children > size - i)
            return false;
        i += (size_t)skip;
        pending += children;
    }
    *pos = i;
    return true;
}

/*  Reads one scalar or string occupying exactly p[0..n) into *out, as
    msgpack-c would unpack it (a signed int that is not negative is a
    POSITIVE_INTEGER; str, bin and ext point into p). The caller has made
    sure it is not a container. By hand: msgpack_unpack costs a zone and
    its dispatch for what is one header read, on every field of every
    message. False when the bytes are not exactly one such object. */
static bool
s_unpack_scalar(const uint8_t *p, size_t n, msgpack_object *out)
{
    if (n == 0)
        return false;
    uint8_t b = p[0];
    size_t need = 1;              /* bytes the object takes */
    memset(out, 0, sizeof *out);
    if (b <= 0x7f) {
        out->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        out->via.u64 = b;
    } else if (b >= 0xe0) {
        out->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        out->via.i64 = (int8_t)b;
    } else if (b == 0xc0) {
        out->type = MSGPACK_OBJECT_NIL;
    } else if (b == 0xc2 || b == 0xc3) {
        out->type = MSGPACK_OBJECT_BOOLEAN;
        out->via.boolean = b == 0xc3;
    } else if (b >= 0xcc && b <= 0xcf) {
        size_t w = (size_t)1 << (b - 0xcc);
        need = 1 + w;
        if (n < need)
            return false;
        out->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        out->via.u64 = am2z_be_read(p + 1, w);
    } else if (b >= 0xd0 && b <= 0xd3) {
        size_t w = (size_t)1 << (b - 0xd0);
        need = 1 + w;
        if (n < need)
            return false;
        uint64_t u = am2z_be_read(p + 1, w);
        int64_t v = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
        if (v < 0) {
            out->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
            out->via.i64 = v;
        } else {
            out->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            out->via.u64 = (uint64_t)v;
        }
    } else if (b == 0xca || b == 0xcb) {
        size_t w = b == 0xca ? 4 : 8;
        need = 1 + w;
        if (n < need)
            return false;
        uint64_t u = am2z_be_read(p + 1, w);
        if (w == 4) {
            uint32_t u32 = (uint32_t)u;
            float fv;
            memcpy(&fv, &u32, sizeof fv);
            out->type = MSGPACK_OBJECT_FLOAT32;
            out->via.f64 = fv;
        } else {
            double dv;
            memcpy(&dv, &u, sizeof dv);
            out->type = MSGPACK_OBJECT_FLOAT64;
            out->via.f64 = dv;
        }
    } else if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb) || (b >= 0xc4 && b <= 0xc6)) {
        size_t w, len;
        if ((b & 0xe0) == 0xa0) {
            w = 0;
            len = b & 0x1f;
        } else {
            w = b >= 0xd9 ? (size_t)1 << (b - 0xd9) : (size_t)1 << (b - 0xc4);
            if (n < 1 + w)
                return false;
            len = (size_t)am2z_be_read(p + 1, w);
        }
        if (len > n - 1 - w)
            return false;
        need = 1 + w + len;
        bool str = (b & 0xe0) == 0xa0 || b >= 0xd9;
        out->type = str ? MSGPACK_OBJECT_STR : MSGPACK_OBJECT_BIN;
        if (str) {
            out->via.str.size = (uint32_t)len;
            out->via.str.ptr = (const char *)p + 1 + w;
        } else {
            out->via.bin.size = (uint32_t)len;
            out->via.bin.ptr = (const char *)p + 1 + w;
        }
    } else if ((b >= 0xd4 && b <= 0xd8) || (b >= 0xc7 && b <= 0xc9)) {
        size_t hdr, len;
        if (b >= 0xd4) {
            hdr = 2;
            len = (size_t)1 << (b - 0xd4);
        } else {
            size_t w = (size_t)1 << (b - 0xc7);
            if (n < 2 + w)
                return false;
            hdr = 2 + w;
            len = (size_t)am2z_be_read(p + 1, w);
        }
        if (n < hdr || len > n - hdr)
            return false;
        need = hdr + len;
        out->type = MSGPACK_OBJECT_EXT;
        out->via.ext.type = (int8_t)p[hdr - 1];
        out->via.ext.size = (uint32_t)len;
        out->via.ext.ptr = (const char *)p + hdr;
    } else {
        return false;             /* 0xc1, or a container */
    }
    return need == n;
}

/* ---------------------------------------------------------------------------
   Decoding.
   ------------------------------------------------------------------------ */
#define S_PATH_MAX 96

static int s_decode_map(const s_schema_t *sc, const uint8_t *p, size_t n, void *base,
                        const char *prefix, s_diag_t *d, uint32_t *seen_out);

/*  The dotted name of a field for messages and nested prefixes. Top-level
    fields (the common case, on every message) need no formatting. */
static const char *
s_path(char *out, const char *prefix, const char *key)
{
    if (!*prefix)
        return key;
    snprintf(out, S_PATH_MAX, "%s.%s", prefix, key);
    return out;
}

/*  Decodes an error map into e (zeroed, owned by the caller), then fills
    severity and retryable from the category when the peer left them out. */
static int
s_decode_error(const uint8_t *p, size_t n, am2z_error_t *e, const char *prefix,
               s_diag_t *d)
{
    uint32_t seen = 0;
    int rc = s_decode_map(&s_error_schema, p, n, e, prefix, d, &seen);
    if (rc != AM2Z_OK)
        return rc;
    if (!(seen & (1u << S_ERR_SEVERITY)))
        e->severity = am2z_category_severity(e->category);
    if (!(seen & (1u << S_ERR_RETRYABLE)))
        e->retryable = am2z_category_retryable(e->category);
    return AM2Z_OK;
}

static int
s_decode_maps(const s_field_t *f, const uint8_t *p, size_t n, void *base,
              const char *name, s_diag_t *d)
{
    size_t pos = 0;
    uint64_t count = 0;
    if (!s_container_header(p, n, &pos, &count) || !s_is_array(p[0])
        || count < f->lo || count > f->hi)
        return s_fail_type(d, f, name);
    /* count <= f->hi: the allocation is ours to bound */
    size_t esz = f->sub->size;
    char *items = calloc((size_t)count ? (size_t)count : 1, esz);
    if (!items)
        return s_fail(d, AM2Z_ENOMEM, "out of memory");
    *SLOT(base, f, void *) = items;
    *AUX(base, f) = (size_t)count;
    for (size_t i = 0; i < count; i++) {
        char elem[S_PATH_MAX];
        snprintf(elem, sizeof elem, "%.60s[%zu]", name, i);
        size_t start = pos;
        if (!s_skip(p, n, &pos))
            return s_fail(d, AM2Z_EPROTO, "field '%s' is malformed", elem);
        if (!s_is_map(p[start]))
            return s_fail(d, AM2Z_EPROTO, "field '%s' must be a %s map", elem, f->elem);
        int rc = s_decode_map(f->sub, p + start, pos - start, items + i * esz, elem, d, NULL);
        if (rc != AM2Z_OK)
            return rc;
        if (!(f->flags & S_UNIQUE))
            continue;
        const char *mine = *(char **)(items + i * esz);
        for (size_t j = 0; j < i; j++)
            if (strcmp(*(char **)(items + j * esz), mine) == 0)
                return s_fail(d, AM2Z_EPROTO, "field '%s.name': %s '%s' listed twice",
                              elem, f->elem, mine);
    }
    return AM2Z_OK;
}

static int
s_decode_strs(const s_field_t *f, const uint8_t *p, size_t n, void *base,
              const char *name, s_diag_t *d)
{
    size_t pos = 0;
    uint64_t count = 0;
    if (!s_container_header(p, n, &pos, &count) || !s_is_array(p[0])
        || count < f->lo || count > f->hi)
        return s_fail_type(d, f, name);
    char **items = calloc((size_t)count ? (size_t)count : 1, sizeof *items);
    if (!items)
        return s_fail(d, AM2Z_ENOMEM, "out of memory");
    *SLOT(base, f, char **) = items;
    *AUX(base, f) = (size_t)count;
    for (size_t i = 0; i < count; i++) {
        char elem[S_PATH_MAX];
        snprintf(elem, sizeof elem, "%.60s[%zu]", name, i);
        size_t start = pos;
        msgpack_object o;
        if (!s_skip(p, n, &pos) || !s_is_str(p[start])
            || !s_unpack_scalar(p + start, pos - start, &o)
            || o.type != MSGPACK_OBJECT_STR
            || !f->str->valid(o.via.str.ptr, o.via.str.size))
            return s_fail(d, AM2Z_EPROTO, "field '%s' must be %s", elem, f->str->expect);
        items[i] = o.via.str.size ? strndup(o.via.str.ptr, o.via.str.size) : strdup("");
        if (!items[i])
            return s_fail(d, AM2Z_ENOMEM, "out of memory");
    }
    return AM2Z_OK;
}

static int
s_decode_scalar(const s_field_t *f, const uint8_t *p, size_t n, void *base,
                const char *name, s_diag_t *d)
{
    msgpack_object o;
    if (s_is_map(p[0]) || s_is_array(p[0]) || !s_unpack_scalar(p, n, &o))
        return s_fail_type(d, f, name);

    switch (f->kind) {
    case K_U64:
    case K_U32:
        if (o.type != MSGPACK_OBJECT_POSITIVE_INTEGER || o.via.u64 < f->lo || o.via.u64 > f->hi)
            return s_fail_type(d, f, name);
        if (f->kind == K_U64)
            *SLOT(base, f, uint64_t) = o.via.u64;
        else
            *SLOT(base, f, uint32_t) = (uint32_t)o.via.u64;
        return AM2Z_OK;
    case K_I64:
        if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 <= INT64_MAX)
            *SLOT(base, f, int64_t) = (int64_t)o.via.u64;
        else if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *SLOT(base, f, int64_t) = o.via.i64;
        else
            return s_fail_type(d, f, name);
        return AM2Z_OK;
    case K_BOOL:
        if (o.type != MSGPACK_OBJECT_BOOLEAN)
            return s_fail_type(d, f, name);
        *SLOT(base, f, bool) = o.via.boolean;
        return AM2Z_OK;
    case K_F64: {
        double v;
        if (o.type == MSGPACK_OBJECT_FLOAT32 || o.type == MSGPACK_OBJECT_FLOAT64)
            v = o.via.f64;
        else if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            v = (double)o.via.u64;
        else if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            v = (double)o.via.i64;
        else
            return s_fail_type(d, f, name);
        if (!isfinite(v) || v < f->flo || v > f->fhi)
            return s_fail_type(d, f, name);
        *SLOT(base, f, double) = v;
        return AM2Z_OK;
    }
    case K_STR: {
        if (o.type != MSGPACK_OBJECT_STR || !f->str->valid(o.via.str.ptr, o.via.str.size))
            return s_fail_type(d, f, name);
        /* the rule bounded the length, so this allocation is ours */
        char *s = o.via.str.size ? strndup(o.via.str.ptr, o.via.str.size) : strdup("");
        if (!s)
            return s_fail(d, AM2Z_ENOMEM, "out of memory");
        *SLOT(base, f, char *) = s;
        return AM2Z_OK;
    }
    case K_ENUM: {
        char buf[64];
        if (o.type != MSGPACK_OBJECT_STR || o.via.str.size == 0 || o.via.str.size >= sizeof buf)
            return s_fail_type(d, f, name);
        memcpy(buf, o.via.str.ptr, o.via.str.size);
        buf[o.via.str.size] = '\0';
        if (strlen(buf) != o.via.str.size || f->en->parse(buf, SLOT(base, f, void)) != AM2Z_OK)
            return s_fail_type(d, f, name);
        return AM2Z_OK;
    }
    default:
        return s_fail_type(d, f, name);
    }
}

/*  Decodes the value p[0..n) of field f into base. */
static int
s_decode_field(const s_field_t *f, const uint8_t *p, size_t n, void *base,
               const char *name, s_diag_t *d)
{
    switch (f->kind) {
    case K_RAW: {
        if (((f->flags & S_MAP) && !s_is_map(p[0]))
            || ((f->flags & S_ARRAY) && !s_is_array(p[0])))
            return s_fail_type(d, f, name);
        uint8_t *copy = malloc(n);
        if (!copy)
            return s_fail(d, AM2Z_ENOMEM, "out of memory");
        memcpy(copy, p, n);
        *SLOT(base, f, uint8_t *) = copy;
        *AUX(base, f) = n;
        return AM2Z_OK;
    }
    case K_ERROR: {
        if (!s_is_map(p[0]))
            return s_fail_type(d, f, name);
        am2z_error_t *e = calloc(1, sizeof *e);
        if (!e)
            return s_fail(d, AM2Z_ENOMEM, "out of memory");
        *SLOT(base, f, am2z_error_t *) = e;      /* owned by base from here */
        return s_decode_error(p, n, e, name, d);
    }
    case K_MAPS:
        return s_decode_maps(f, p, n, base, name, d);
    case K_STRS:
        return s_decode_strs(f, p, n, base, name, d);
    case K_NESTED:
        if (!s_is_map(p[0]))
            return s_fail_type(d, f, name);
        return s_decode_map(f->sub, p, n, SLOT(base, f, void), name, d, NULL);
    default:
        return s_decode_scalar(f, p, n, base, name, d);
    }
}

/*  The field of sc whose wire key is the string at p[0..n), or NULL (also
    for keys that are not strings: unknown, hence ignored). */
static const s_field_t *
s_lookup(const s_schema_t *sc, const uint8_t *p, size_t n, size_t *hint)
{
    /*  The key is one str object of exactly n bytes (s_skip measured it in
        bytes that passed am2z_msgpack_check): its header gives where its
        bytes start and how many there are. */
    size_t hdr, sz;
    uint8_t b = p[0];
    if ((b & 0xe0) == 0xa0) {
        hdr = 1;
        sz = b & 0x1f;
    } else if (b == 0xd9 || b == 0xda || b == 0xdb) {
        size_t w = b == 0xd9 ? 1 : b == 0xda ? 2 : 4;
        if (n < 1 + w)
            return NULL;
        hdr = 1 + w;
        sz = (size_t)am2z_be_read(p + 1, w);
    } else {
        return NULL;                            /* not a str: no field has it */
    }
    if (sz != n - hdr)
        return NULL;
    const char *k = (const char *)p + hdr;
    /*  Our encoders write a schema's fields in its order, so the field after
        the last one found is tried first: one comparison per key instead
        of a scan. Keys are unique within a schema, so the order of the
        tries never changes which field matches. */
    for (size_t j = 0; j < sc->count; j++) {
        size_t i = *hint + j < sc->count ? *hint + j : *hint + j - sc->count;
        const char *key = sc->fields[i].key;   /* no strlen per field and key */
        /* strnlen first: a wire key may hold NULs, and memcmp must not
           read past the end of a shorter field name */
        if (sz == 0 ? key[0] == '\0'
                    : key[0] == k[0] && strnlen(key, sz + 1) == sz && memcmp(key, k, sz) == 0) {
            *hint = i + 1 < sc->count ? i + 1 : 0;
            return &sc->fields[i];
        }
    }
    return NULL;
}

/*  The schema has a bool field "ok" and base holds false in it (then the
    S_REQ_IF_KO fields are required). Looked up only for a missing one. */
static bool
s_is_ko(const s_schema_t *sc, const void *base)
{
    for (size_t i = 0; i < sc->count; i++)
        if (sc->fields[i].kind == K_BOOL && strcmp(sc->fields[i].key, "ok") == 0)
            return !*CSLOT(base, &sc->fields[i], bool);
    return false;
}

/*  Walks the map p[0..n) (already known to be a map) into base using sc.
    On failure base may hold partial values: its owner frees them. */
static int
s_decode_map(const s_schema_t *sc, const uint8_t *p, size_t n, void *base,
             const char *prefix, s_diag_t *d, uint32_t *seen_out)
{
    size_t pos = 0, hint = 0;
    uint64_t pairs = 0;
    uint32_t seen = 0;
    char name[S_PATH_MAX];
    if (!s_container_header(p, n, &pos, &pairs))
        return s_fail(d, AM2Z_EPROTO, "malformed map");
    for (uint64_t i = 0; i < pairs; i++) {
        size_t kstart = pos;
        if (!s_skip(p, n, &pos))
            return s_fail(d, AM2Z_EPROTO, "malformed map");
        size_t vstart = pos;
        if (!s_skip(p, n, &pos))
            return s_fail(d, AM2Z_EPROTO, "malformed map");
        const s_field_t *f = s_lookup(sc, p + kstart, vstart - kstart, &hint);
        if (!f)
            continue;                   /* unknown key: newer peer, same /1 */
        uint32_t bit = 1u << (f - sc->fields);
        const char *fname = s_path(name, prefix, f->key);
        if (seen & bit)
            return s_fail(d, AM2Z_EPROTO, "duplicate field '%s'", fname);
        seen |= bit;
        int rc = s_decode_field(f, p + vstart, pos - vstart, base, fname, d);
        if (rc != AM2Z_OK)
            return rc;
    }
    if (pos != n)
        return s_fail(d, AM2Z_EPROTO, "malformed map");

    for (size_t i = 0; i < sc->count; i++) {
        const s_field_t *f = &sc->fields[i];
        if ((seen & (1u << i)) && (f->flags & S_ONLY_IF_OK) && s_is_ko(sc, base))
            return s_fail(d, AM2Z_EPROTO, "field '%s' is not allowed when ok is false",
                          s_path(name, prefix, f->key));
        if (seen & (1u << i))
            continue;
        if (f->flags & S_REQ)
            return s_fail(d, AM2Z_EPROTO, "missing required field '%s'",
                          s_path(name, prefix, f->key));
        if ((f->flags & S_REQ_IF_KO) && s_is_ko(sc, base))
            return s_fail(d, AM2Z_EPROTO, "missing required field '%s' (ok is false)",
                          s_path(name, prefix, f->key));
    }
    if (seen_out)
        *seen_out = seen;
    return AM2Z_OK;
}

/*  Size limit, structural check and "is one map": the gate every body and
    every standalone error map passes before anything else looks at it. */
static int
s_check_body(const uint8_t *body, size_t size, size_t max_size, s_diag_t *d)
{
    if (size > max_size)
        return s_fail(d, AM2Z_EPROTO, "body of %zu bytes exceeds limit %zu", size, max_size);
    if (!body || size == 0)
        return s_fail(d, AM2Z_EPROTO, "empty body");
    if (am2z_msgpack_check(body, size, AM2Z_CODEC_MAX_DEPTH) != AM2Z_OK)
        return s_fail(d, AM2Z_EPROTO,
                      "body is not exactly one well-formed msgpack object "
                      "(nested at most " S_XSTR(AM2Z_CODEC_MAX_DEPTH) " deep)");
    if (!s_is_map(body[0]))
        return s_fail(d, AM2Z_EPROTO, "body must be a msgpack map");
    return AM2Z_OK;
}

int
am2z_msg_decode(am2z_cmd_t cmd, const uint8_t *body, size_t size,
                size_t max_size, am2z_msg_t *msg, char *err, size_t err_size)
{
    if (err && err_size)
        err[0] = '\0';
    if (!msg)
        return AM2Z_EINVAL;
    am2z_msg_init(msg, cmd);
    s_diag_t d = { am2z_cmd_name(cmd), err, err_size };
    if (cmd <= AM2Z_CMD_INVALID || cmd >= AM2Z_CMD_COUNT_)
        return s_fail(&d, AM2Z_EPROTO, "no such command");

    int rc = s_check_body(body, size, max_size, &d);
    if (rc == AM2Z_OK)
        rc = s_decode_map(&s_cmd_schemas[cmd], body, size, msg, "", &d, NULL);
    if (rc != AM2Z_OK)
        goto fail;
    return AM2Z_OK;

fail:
    am2z_msg_clear(msg);
    return rc;
}

int
am2z_body_peek_req(const uint8_t *body, size_t size, size_t max_size, uint64_t *req)
{
    s_diag_t d = { "", NULL, 0 };
    if (!req)
        return AM2Z_EINVAL;
    if (s_check_body(body, size, max_size, &d) != AM2Z_OK)
        return AM2Z_EPROTO;
    size_t pos = 0;
    uint64_t pairs = 0;
    if (!s_container_header(body, size, &pos, &pairs))
        return AM2Z_EPROTO;
    for (uint64_t i = 0; i < pairs; i++) {
        size_t kstart = pos;
        if (!s_skip(body, size, &pos))
            return AM2Z_EPROTO;
        size_t vstart = pos;
        if (!s_skip(body, size, &pos))
            return AM2Z_EPROTO;
        msgpack_object k, v;
        if (s_is_str(body[kstart]) && s_unpack_scalar(body + kstart, vstart - kstart, &k)
            && k.type == MSGPACK_OBJECT_STR && k.via.str.size == 3
            && memcmp(k.via.str.ptr, "req", 3) == 0) {
            if (s_is_map(body[vstart]) || s_is_array(body[vstart])
                || !s_unpack_scalar(body + vstart, pos - vstart, &v)
                || v.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return AM2Z_ENOTFOUND;
            *req = v.via.u64;
            return AM2Z_OK;
        }
    }
    return AM2Z_ENOTFOUND;
}

/*  Writes data[0..size) into out quoted-safe: printable ASCII as is,
    everything else as \xNN, at most 32 input bytes then "...". Peer bytes
    end up in logs, so a hostile signature must not inject control codes. */
static void
s_printable(const uint8_t *data, size_t size, char *out, size_t out_size)
{
    size_t o = 0;
    size_t lim = size > 32 ? 32 : size;
    out[0] = '\0';
    for (size_t i = 0; i < lim && o + 5 < out_size; i++) {
        uint8_t c = data[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
    }
    if (size > lim && o + 4 < out_size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

int
am2z_frames_decode(const uint8_t *sig, size_t sig_size,
                   const uint8_t *cmd, size_t cmd_size,
                   const uint8_t *body, size_t body_size,
                   size_t max_size, am2z_msg_t *msg,
                   char *err, size_t err_size)
{
    if (err && err_size)
        err[0] = '\0';
    if (!msg)
        return AM2Z_EINVAL;
    am2z_msg_init(msg, AM2Z_CMD_INVALID);
    char shown[32 * 4 + 8];
    if (!sig || sig_size != strlen(AM2Z_PROTOCOL) || memcmp(sig, AM2Z_PROTOCOL, sig_size) != 0) {
        s_printable(sig ? sig : (const uint8_t *)"", sig ? sig_size : 0, shown, sizeof shown);
        if (err && err_size)
            snprintf(err, err_size, "unsupported protocol '%s' (expected '" AM2Z_PROTOCOL "')",
                     shown);
        return AM2Z_EPROTO;
    }
    am2z_cmd_t c = am2z_cmd_parse((const char *)cmd, cmd ? cmd_size : 0);
    if (c == AM2Z_CMD_INVALID) {
        s_printable(cmd ? cmd : (const uint8_t *)"", cmd ? cmd_size : 0, shown, sizeof shown);
        if (err && err_size)
            snprintf(err, err_size, "unknown command '%s'", shown);
        return AM2Z_EPROTO;
    }
    return am2z_msg_decode(c, body, body_size, max_size, msg, err, err_size);
}

/* ---------------------------------------------------------------------------
   Encoding: the same tables, the same rules. A field is written when it is
   required, marked S_ALWAYS, or present (non-zero, non-NULL); a value the
   decoder would refuse makes the whole encode fail with AM2Z_EINVAL.
   ------------------------------------------------------------------------ */
static int s_encode_map(const s_schema_t *sc, const void *base, msgpack_packer *pk,
                        size_t depth);

static bool
s_present(const s_field_t *f, const void *base)
{
    switch (f->kind) {
    case K_U64:    return *CSLOT(base, f, uint64_t) != 0;
    case K_U32:    return *CSLOT(base, f, uint32_t) != 0;
    case K_I64:    return *CSLOT(base, f, int64_t) != 0;
    case K_BOOL:   return *CSLOT(base, f, bool);
    case K_F64:    return *CSLOT(base, f, double) != 0.0;
    case K_STR:    return *CSLOT(base, f, char *) != NULL;
    case K_ENUM:   return true;
    case K_RAW:    return *CSLOT(base, f, uint8_t *) != NULL;
    case K_ERROR:  return *CSLOT(base, f, am2z_error_t *) != NULL;
    case K_MAPS:   return *CSLOT(base, f, void *) != NULL || *CAUX(base, f) != 0;
    case K_STRS:   return *CSLOT(base, f, char **) != NULL || *CAUX(base, f) != 0;
    case K_NESTED:
        for (size_t i = 0; i < f->sub->count; i++)
            if (s_present(&f->sub->fields[i], CSLOT(base, f, void)))
                return true;
        return false;
    }
    return false;
}

/*  A packer failure can only be the sbuffer failing to grow. */
#define PK(call) do { if ((call) != 0) return AM2Z_ENOMEM; } while (0)

static int
s_pack_cstr(msgpack_packer *pk, const char *s, size_t len)
{
    PK(msgpack_pack_str(pk, len));
    PK(msgpack_pack_str_body(pk, s, len));
    return AM2Z_OK;
}

/*  depth: how many containers enclose the value (1 for a field of the
    top-level map). A raw value may nest AM2Z_CODEC_MAX_DEPTH - depth
    containers deep, so the whole body passes the decoder's depth gate
    (am2z_msgpack_check with AM2Z_CODEC_MAX_DEPTH) without a second scan:
    everything else is packed here, structurally valid by construction. */
static int
s_encode_value(const s_field_t *f, const void *base, msgpack_packer *pk, size_t depth)
{
    switch (f->kind) {
    case K_U64:
    case K_U32: {
        uint64_t v = f->kind == K_U64 ? *CSLOT(base, f, uint64_t) : *CSLOT(base, f, uint32_t);
        if (v < f->lo || v > f->hi)
            return AM2Z_EINVAL;
        PK(msgpack_pack_uint64(pk, v));
        return AM2Z_OK;
    }
    case K_I64:
        PK(msgpack_pack_int64(pk, *CSLOT(base, f, int64_t)));
        return AM2Z_OK;
    case K_BOOL:
        PK(*CSLOT(base, f, bool) ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
        return AM2Z_OK;
    case K_F64: {
        double v = *CSLOT(base, f, double);
        if (!isfinite(v) || v < f->flo || v > f->fhi)
            return AM2Z_EINVAL;
        PK(msgpack_pack_double(pk, v));
        return AM2Z_OK;
    }
    case K_STR: {
        const char *s = *CSLOT(base, f, char *);
        if (!s || !f->str->valid(s, strlen(s)))
            return AM2Z_EINVAL;
        return s_pack_cstr(pk, s, strlen(s));
    }
    case K_ENUM: {
        const char *s = f->en->name(CSLOT(base, f, void));
        union { am2z_kind_t k; am2z_category_t c; am2z_severity_t s; uint32_t u; } scratch;
        if (f->en->parse(s, &scratch) != AM2Z_OK)   /* refuses "unknown" */
            return AM2Z_EINVAL;
        return s_pack_cstr(pk, s, strlen(s));
    }
    case K_RAW: {
        const uint8_t *p = *CSLOT(base, f, uint8_t *);
        size_t n = *CAUX(base, f);
        if (!p || n == 0 || am2z_msgpack_check(p, n, AM2Z_CODEC_MAX_DEPTH - depth) != AM2Z_OK
            || ((f->flags & S_MAP) && !s_is_map(p[0]))
            || ((f->flags & S_ARRAY) && !s_is_array(p[0])))
            return AM2Z_EINVAL;
        PK(pk->callback(pk->data, (const char *)p, n));
        return AM2Z_OK;
    }
    case K_ERROR: {
        const am2z_error_t *e = *CSLOT(base, f, am2z_error_t *);
        return e ? s_encode_map(f->sub, e, pk, depth) : AM2Z_EINVAL;
    }
    case K_MAPS: {
        const char *items = *CSLOT(base, f, char *);
        size_t count = *CAUX(base, f);
        size_t esz = f->sub->size;
        if (!items || count < f->lo || count > f->hi || depth >= AM2Z_CODEC_MAX_DEPTH)
            return AM2Z_EINVAL;
        PK(msgpack_pack_array(pk, count));
        for (size_t i = 0; i < count; i++) {
            int rc = s_encode_map(f->sub, items + i * esz, pk, depth + 1);
            if (rc != AM2Z_OK)
                return rc;
            if (!(f->flags & S_UNIQUE))
                continue;
            for (size_t j = 0; j < i; j++)
                if (strcmp(*(char *const *)(items + j * esz), *(char *const *)(items + i * esz)) == 0)
                    return AM2Z_EINVAL;
        }
        return AM2Z_OK;
    }
    case K_STRS: {
        char *const *items = *(char **const *)((const char *)base + f->off);
        size_t count = *CAUX(base, f);
        if (!items || count < f->lo || count > f->hi || depth >= AM2Z_CODEC_MAX_DEPTH)
            return AM2Z_EINVAL;
        PK(msgpack_pack_array(pk, count));
        for (size_t i = 0; i < count; i++) {
            if (!items[i] || !f->str->valid(items[i], strlen(items[i])))
                return AM2Z_EINVAL;
            int rc = s_pack_cstr(pk, items[i], strlen(items[i]));
            if (rc != AM2Z_OK)
                return rc;
        }
        return AM2Z_OK;
    }
    case K_NESTED:
        return s_encode_map(f->sub, CSLOT(base, f, void), pk, depth);
    }
    return AM2Z_EINVAL;
}

static int
s_encode_map(const s_schema_t *sc, const void *base, msgpack_packer *pk, size_t depth)
{
    if (depth >= AM2Z_CODEC_MAX_DEPTH)
        return AM2Z_EINVAL;       /* the map itself would be too deep */
    const bool *ok = NULL;
    for (size_t i = 0; i < sc->count; i++)
        if (strcmp(sc->fields[i].key, "ok") == 0 && sc->fields[i].kind == K_BOOL)
            ok = CSLOT(base, &sc->fields[i], bool);

    bool emit[32];
    uint32_t pairs = 0;
    for (size_t i = 0; i < sc->count; i++) {
        const s_field_t *f = &sc->fields[i];
        bool present = s_present(f, base);
        if (!present && ((f->flags & S_REQ_IF_KO) && ok && !*ok))
            return AM2Z_EINVAL;
        if (present && ((f->flags & S_ONLY_IF_OK) && ok && !*ok))
            return AM2Z_EINVAL;
        emit[i] = present || (f->flags & (S_REQ | S_ALWAYS));
        pairs += emit[i];
    }
    PK(msgpack_pack_map(pk, pairs));
    for (size_t i = 0; i < sc->count; i++) {
        if (!emit[i])
            continue;
        const s_field_t *f = &sc->fields[i];
        int rc = s_pack_cstr(pk, f->key, strlen(f->key));
        if (rc == AM2Z_OK)
            rc = s_encode_value(f, base, pk, depth + 1);
        if (rc != AM2Z_OK)
            return rc;
    }
    return AM2Z_OK;
}

/*  What a body takes besides its raw bytes, usually: ids, names and
    numbers (a JOB or RESULT of the throughput workload is 200-300 bytes
    with its 100-byte state). Only where the buffer starts. */
#define S_ENCODE_HINT 256

/*  Encodes base by sc into a fresh buffer that passes the same structural
    gate a decoder applies (depth includes raw values: s_encode_value). */
static int
s_encode(const s_schema_t *sc, const void *base, size_t hint, uint8_t **out, size_t *size)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    am2z_sbuf_init(&sbuf, hint);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    int rc = s_encode_map(sc, base, &pk, 0);
    if (rc != AM2Z_OK)
        goto fail;
    *size = sbuf.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sbuf);
    return AM2Z_OK;

fail:
    msgpack_sbuffer_destroy(&sbuf);
    return rc;
}

int
am2z_msg_encode(const am2z_msg_t *msg, uint8_t **body, size_t *size)
{
    if (!msg || !body || !size || msg->cmd <= AM2Z_CMD_INVALID || msg->cmd >= AM2Z_CMD_COUNT_)
        return AM2Z_EINVAL;
    *body = NULL;
    *size = 0;
    /* room for the typed fields and the raw bytes: one allocation for
       the usual body */
    size_t hint = S_ENCODE_HINT + msg->state_size + msg->data_size;
    return s_encode(&s_cmd_schemas[msg->cmd], msg, hint, body, size);
}

int
am2z_body_with_req(am2z_cmd_t cmd, const uint8_t *body, size_t size, uint64_t req,
                   uint8_t **out, size_t *out_size)
{
    if (out)
        *out = NULL;
    if (out_size)
        *out_size = 0;
    if (!out || !out_size || !body || size == 0 || req == 0 || cmd <= AM2Z_CMD_INVALID
        || cmd >= AM2Z_CMD_COUNT_)
        return AM2Z_EINVAL;
    const s_schema_t *sc = &s_cmd_schemas[cmd];
    if (sc->count == 0 || strcmp(sc->fields[0].key, "req") != 0
        || (sc->fields[0].flags & S_REQ) || sc->fields[0].kind != K_U64)
        return AM2Z_EINVAL;
    size_t hdr;
    uint64_t pairs;
    if ((body[0] & 0xf0) == 0x80) {
        hdr = 1;
        pairs = body[0] & 0x0f;
    } else if (body[0] == 0xde && size >= 3) {
        hdr = 3;
        pairs = (uint64_t)body[1] << 8 | body[2];
    } else if (body[0] == 0xdf && size >= 5) {
        hdr = 5;
        pairs = (uint64_t)body[1] << 24 | (uint64_t)body[2] << 16 | (uint64_t)body[3] << 8
                | body[4];
    } else {
        return AM2Z_EINVAL;
    }
    /* the encoder writes req first when it is set: a body with it already */
    if (pairs >= UINT32_MAX
        || (pairs > 0 && size - hdr >= 4 && memcmp(body + hdr, "\xa3req", 4) == 0))
        return AM2Z_EINVAL;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    am2z_sbuf_init(&sbuf, size + 16);      /* map header, "req", uint64 */
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, (size_t)pairs + 1) != 0 || s_pack_cstr(&pk, "req", 3) != AM2Z_OK
        || msgpack_pack_uint64(&pk, req) != 0
        || msgpack_sbuffer_write(&sbuf, (const char *)body + hdr, size - hdr) != 0) {
        msgpack_sbuffer_destroy(&sbuf);
        return AM2Z_ENOMEM;
    }
    *out_size = sbuf.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sbuf);
    return AM2Z_OK;
}

int
am2z_error_encode(const am2z_error_t *error, uint8_t **data, size_t *size)
{
    if (!error || !data || !size)
        return AM2Z_EINVAL;
    *data = NULL;
    *size = 0;
    return s_encode(&s_error_schema, error, S_ENCODE_HINT + error->details_size, data, size);
}

int
am2z_error_decode(const uint8_t *data, size_t size, am2z_error_t **out,
                  char *err, size_t err_size)
{
    if (err && err_size)
        err[0] = '\0';
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    s_diag_t d = { "error", err, err_size };
    am2z_error_t *e = NULL;
    /* an error map alone has no frame limit of its own: its size is bounded
       by whoever holds the bytes, so only the structure is checked here */
    int rc = s_check_body(data, size, SIZE_MAX, &d);
    if (rc != AM2Z_OK)
        goto fail;
    e = calloc(1, sizeof *e);
    if (!e) {
        rc = s_fail(&d, AM2Z_ENOMEM, "out of memory");
        goto fail;
    }
    rc = s_decode_error(data, size, e, "", &d);
    if (rc != AM2Z_OK)
        goto fail;
    *out = e;
    return AM2Z_OK;

fail:
    am2z_error_destroy(&e);
    return rc;
}

int
am2z_comp_desc_encode(const am2z_comp_desc_t *d, uint8_t **data, size_t *size)
{
    if (!d || !data || !size)
        return AM2Z_EINVAL;
    *data = NULL;
    *size = 0;
    return s_encode(&s_comp_schema, d, S_ENCODE_HINT, data, size);
}

int
am2z_comp_desc_decode(const uint8_t *data, size_t size, am2z_comp_desc_t *out,
                      char *err, size_t err_size)
{
    if (err && err_size)
        err[0] = '\0';
    if (!out)
        return AM2Z_EINVAL;
    memset(out, 0, sizeof *out);
    s_diag_t d = { "composite", err, err_size };
    int rc = s_check_body(data, size, SIZE_MAX, &d);
    if (rc == AM2Z_OK)
        rc = s_decode_map(&s_comp_schema, data, size, out, "", &d, NULL);
    if (rc != AM2Z_OK)
        am2z_comp_desc_clear(out);
    return rc;
}
