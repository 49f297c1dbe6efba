/*  am2z_log.h — structured logging.

    One call per event: level, component, message and typed key/values. The
    level is checked before anything is formatted (the AM2Z_LOG macro does it
    inline), so a disabled debug line costs one comparison.

    Output is either text

        2026-11-22T09:00:00.123Z INFO  store: opened path=./am2z-data map_size=1073741824

    or one JSON object per line (jansson does the encoding)

        {"ts":"2026-11-22T09:00:00.123Z","level":"info","component":"store",
         "msg":"opened","path":"./am2z-data","map_size":1073741824}

    Thread safety: one am2z_log_t may be shared by threads; each line is
    written with a single fwrite on a stream locked by stdio, so lines never
    interleave. Create and destroy from one thread.
*/
#ifndef AM2Z_LOG_H_INCLUDED
#define AM2Z_LOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AM2Z_LOG_TRACE = 0,
    AM2Z_LOG_DEBUG,
    AM2Z_LOG_INFO,
    AM2Z_LOG_WARN,
    AM2Z_LOG_ERROR,
    AM2Z_LOG_OFF          /* as a threshold: log nothing */
} am2z_log_level_t;

typedef enum {
    AM2Z_LOG_TEXT = 0,
    AM2Z_LOG_JSON
} am2z_log_format_t;

typedef enum { AM2Z_KV_NONE_ = 0, AM2Z_KV_STR, AM2Z_KV_INT, AM2Z_KV_UINT,
               AM2Z_KV_DOUBLE, AM2Z_KV_BOOL } am2z_kv_type_t;

/*  One key/value. Build them with the AM2Z_KS/KI/KU/KD/KB macros. Strings
    are borrowed for the duration of the call. */
typedef struct {
    const char *key;
    am2z_kv_type_t type;
    union { const char *s; int64_t i; uint64_t u; double d; bool b; } v;
} am2z_kv_t;

#define AM2Z_KS(k, x) ((am2z_kv_t){ .key = (k), .type = AM2Z_KV_STR,    .v.s = (x) })
#define AM2Z_KI(k, x) ((am2z_kv_t){ .key = (k), .type = AM2Z_KV_INT,    .v.i = (int64_t)(x) })
#define AM2Z_KU(k, x) ((am2z_kv_t){ .key = (k), .type = AM2Z_KV_UINT,   .v.u = (uint64_t)(x) })
#define AM2Z_KD(k, x) ((am2z_kv_t){ .key = (k), .type = AM2Z_KV_DOUBLE, .v.d = (double)(x) })
#define AM2Z_KB(k, x) ((am2z_kv_t){ .key = (k), .type = AM2Z_KV_BOOL,   .v.b = (bool)(x) })

typedef struct am2z_log_t am2z_log_t;

/*  Creates a logger writing to `stream` (borrowed: must outlive the logger;
    NULL means stderr). Returns NULL only when out of memory. */
am2z_log_t *am2z_log_new(am2z_log_level_t level, am2z_log_format_t format,
                         FILE *stream);

/*  NULL-safe, idempotent; does not close the stream. */
void am2z_log_destroy(am2z_log_t **self_p);

/*  Threshold and format can change at run time (e.g. on SIGHUP). */
void am2z_log_set_level(am2z_log_t *self, am2z_log_level_t level);
am2z_log_level_t am2z_log_level(const am2z_log_t *self);

/*  True when a line at `level` would be written. A NULL logger logs nothing. */
bool am2z_log_enabled(const am2z_log_t *self, am2z_log_level_t level);

/*  Writes one line. Call through AM2Z_LOG so the level is checked first.
    kvs may be NULL when kv_count is 0. Entries of type AM2Z_KV_NONE_ or with a
    NULL key are skipped. NULL string values print as null. In JSON a key
    equal to a fixed field (ts, level, component, msg) is written as
    "_<key>" so it cannot replace that field. */
void am2z_log_emit(am2z_log_t *self, am2z_log_level_t level,
                   const char *component, const char *message,
                   const am2z_kv_t *kvs, size_t kv_count);

/*  Parse "trace|debug|info|warn|error|off" and "text|json".
    Return AM2Z_OK or AM2Z_EINVAL. */
int am2z_log_level_parse(const char *name, am2z_log_level_t *level);
int am2z_log_format_parse(const char *name, am2z_log_format_t *format);
const char *am2z_log_level_name(am2z_log_level_t level);

/*  AM2Z_LOG(log, AM2Z_LOG_INFO, "store", "opened", AM2Z_KS("path", p), AM2Z_KU("n", n));
    The first array slot is a placeholder so the key/value list may be empty. */
#define AM2Z_LOG(log_, level_, component_, message_, ...)                        \
    do {                                                                          \
        if (am2z_log_enabled((log_), (level_))) {                                 \
            const am2z_kv_t am2z_kv_[] = { { .key = NULL }, __VA_ARGS__ };        \
            am2z_log_emit((log_), (level_), (component_), (message_),            \
                          am2z_kv_ + 1,                                           \
                          sizeof am2z_kv_ / sizeof am2z_kv_[0] - 1);              \
        }                                                                         \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
