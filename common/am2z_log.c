/*  am2z_log.c — see am2z_log.h.

    A line is assembled in a private buffer (on the stack unless it is long)
    and handed to stdio with one fwrite, so stdio's per-stream lock is the only
    synchronisation needed between threads sharing a logger.

    Text lines are for people and grep: values that would break `key=value`
    splitting are quoted, and control bytes are escaped everywhere so one
    event is always exactly one line. JSON lines are built with jansson;
    strings that are not valid UTF-8 (jansson refuses them) are repaired with
    U+FFFD rather than dropped.
*/
#include "am2z_log.h"

#include "am2z_clock.h"
#include "am2z_error.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*  The threshold is atomic because set_level may run (e.g. from the main
    loop after SIGHUP) while other threads call am2z_log_enabled. */
struct am2z_log_t {
    atomic_int level;           /* am2z_log_level_t: lowest level written */
    am2z_log_format_t format;   /* fixed after creation */
    FILE *stream;               /* borrowed; never closed here */
};

static const char *const s_level_names[] = {
    "trace", "debug", "info", "warn", "error", "off",
};

/*  Padded to one width so text messages line up. */
static const char *const s_level_tags[] = {
    "TRACE", "DEBUG", "INFO ", "WARN ", "ERROR",
};

static const char *const s_format_names[] = { "text", "json" };

#define S_LEVEL_COUNT  ((int)(sizeof s_level_names / sizeof s_level_names[0]))
#define S_FORMAT_COUNT ((int)(sizeof s_format_names / sizeof s_format_names[0]))

/*  Keys the JSON format writes itself; a key/value using one is written as
    "_<key>" so it cannot overwrite the fixed fields. */
static const char *const s_json_reserved[] = { "ts", "level", "component", "msg" };

am2z_log_t *
am2z_log_new(am2z_log_level_t level, am2z_log_format_t format, FILE *stream)
{
    am2z_log_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    atomic_init(&self->level, (int)level);
    self->format = format == AM2Z_LOG_JSON ? AM2Z_LOG_JSON : AM2Z_LOG_TEXT;
    self->stream = stream ? stream : stderr;
    return self;
}

void
am2z_log_destroy(am2z_log_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

void
am2z_log_set_level(am2z_log_t *self, am2z_log_level_t level)
{
    if (self)
        atomic_store_explicit(&self->level, (int)level, memory_order_relaxed);
}

am2z_log_level_t
am2z_log_level(const am2z_log_t *self)
{
    if (!self)
        return AM2Z_LOG_OFF;
    return (am2z_log_level_t)atomic_load_explicit(&self->level, memory_order_relaxed);
}

bool
am2z_log_enabled(const am2z_log_t *self, am2z_log_level_t level)
{
    return self && level >= AM2Z_LOG_TRACE && level < AM2Z_LOG_OFF
        && (int)level >= atomic_load_explicit(&self->level, memory_order_relaxed);
}

int
am2z_log_level_parse(const char *name, am2z_log_level_t *level)
{
    for (int i = 0; name && i < S_LEVEL_COUNT; i++)
        if (strcmp(name, s_level_names[i]) == 0) {
            *level = (am2z_log_level_t)i;
            return AM2Z_OK;
        }
    return AM2Z_EINVAL;
}

int
am2z_log_format_parse(const char *name, am2z_log_format_t *format)
{
    for (int i = 0; name && i < S_FORMAT_COUNT; i++)
        if (strcmp(name, s_format_names[i]) == 0) {
            *format = (am2z_log_format_t)i;
            return AM2Z_OK;
        }
    return AM2Z_EINVAL;
}

const char *
am2z_log_level_name(am2z_log_level_t level)
{
    return level >= 0 && (int)level < S_LEVEL_COUNT ? s_level_names[level] : "unknown";
}

/* ---------------------------------------------------------------------------
   Line buffer. Starts in inline storage; grows on the heap. If growing fails
   the line is cut short (and still ends with a newline): losing the tail of
   one log line beats losing the line or crashing.
   ------------------------------------------------------------------------ */
typedef struct {
    char *data;         /* inline or heap; owned */
    size_t len;
    size_t cap;
    bool full;          /* allocation failed: further appends are dropped */
    char inline_[512];
} s_line_t;

static void
s_line_init(s_line_t *line)
{
    line->data = line->inline_;
    line->len = 0;
    line->cap = sizeof line->inline_;
    line->full = false;
}

static void
s_line_free(s_line_t *line)
{
    if (line->data != line->inline_)
        free(line->data);
}

/*  Appends n bytes, always keeping one byte spare for the final newline. */
static void
s_put(s_line_t *line, const char *s, size_t n)
{
    if (line->full)
        return;
    if (line->len + n + 1 > line->cap) {
        size_t cap = line->cap * 2;
        while (cap < line->len + n + 1)
            cap *= 2;
        char *data = line->data == line->inline_ ? malloc(cap)
                                                 : realloc(line->data, cap);
        if (!data) {
            line->full = true;
            return;
        }
        if (line->data == line->inline_)
            memcpy(data, line->inline_, line->len);
        line->data = data;
        line->cap = cap;
    }
    memcpy(line->data + line->len, s, n);
    line->len += n;
}

static void
s_puts(s_line_t *line, const char *s)
{
    s_put(line, s, strlen(s));
}

static void
s_printf(s_line_t *line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
s_printf(s_line_t *line, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        s_put(line, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/*  2026-11-22T09:00:00.123Z */
static void
s_timestamp(char out[32])
{
    uint64_t ms = am2z_clock_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        strcpy(out, "1970-01-01T00:00:00");
    }
    size_t n = strlen(out);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

/*  Shortest of %.15g / %.17g that reads back as the same double. */
static void
s_format_double(double d, char out[32])
{
    snprintf(out, 32, "%.15g", d);
    if (isfinite(d) && strtod(out, NULL) != d)
        snprintf(out, 32, "%.17g", d);
}

/* ---------------------------------------------------------------------------
   Text format.
   ------------------------------------------------------------------------ */

/*  Appends s with control bytes, and (when quoting) '"' and '\', escaped. */
static void
s_text_escaped(s_line_t *line, const char *s, bool quoting)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '\n': s_puts(line, "\\n"); break;
        case '\r': s_puts(line, "\\r"); break;
        case '\t': s_puts(line, "\\t"); break;
        case '"':
        case '\\':
            if (quoting)
                s_put(line, "\\", 1);
            s_put(line, (const char *)p, 1);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                s_printf(line, "\\x%02x", *p);
            else
                s_put(line, (const char *)p, 1);
        }
    }
}

/*  A value is quoted when splitting the line on spaces and '=' would not
    give it back intact, or when it would read as the bare word null. */
static bool
s_text_needs_quotes(const char *s)
{
    if (*s == '\0' || strcmp(s, "null") == 0)
        return true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            return true;
    return false;
}

static void
s_text_value(s_line_t *line, const am2z_kv_t *kv)
{
    char num[32];
    switch (kv->type) {
    case AM2Z_KV_STR:
        if (!kv->v.s) {
            s_puts(line, "null");
        } else if (s_text_needs_quotes(kv->v.s)) {
            s_put(line, "\"", 1);
            s_text_escaped(line, kv->v.s, true);
            s_put(line, "\"", 1);
        } else {
            s_puts(line, kv->v.s);
        }
        break;
    case AM2Z_KV_INT:    s_printf(line, "%" PRId64, kv->v.i); break;
    case AM2Z_KV_UINT:   s_printf(line, "%" PRIu64, kv->v.u); break;
    case AM2Z_KV_DOUBLE: s_format_double(kv->v.d, num); s_puts(line, num); break;
    case AM2Z_KV_BOOL:   s_puts(line, kv->v.b ? "true" : "false"); break;
    default: break;
    }
}

static void
s_text_line(s_line_t *line, const char *ts, am2z_log_level_t level,
            const char *component, const char *message,
            const am2z_kv_t *kvs, size_t kv_count)
{
    s_puts(line, ts);
    s_put(line, " ", 1);
    s_puts(line, s_level_tags[level]);
    s_put(line, " ", 1);
    s_text_escaped(line, component ? component : "-", false);
    s_puts(line, ": ");
    s_text_escaped(line, message ? message : "", false);
    for (size_t i = 0; i < kv_count; i++) {
        if (kvs[i].type == AM2Z_KV_NONE_ || !kvs[i].key)
            continue;
        s_put(line, " ", 1);
        s_text_escaped(line, kvs[i].key, false);
        s_put(line, "=", 1);
        s_text_value(line, &kvs[i]);
    }
}

/* ---------------------------------------------------------------------------
   JSON format.
   ------------------------------------------------------------------------ */

/*  Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t
s_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    else if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/*  A JSON string for s; NULL s gives JSON null. Invalid UTF-8 bytes become
    U+FFFD. Returns NULL only when out of memory. */
static json_t *
s_json_string(const char *s)
{
    if (!s)
        return json_null();
    json_t *str = json_string(s);
    if (str)
        return str;
    size_t n = strlen(s);
    char *fixed = malloc(n * 3 + 1);
    if (!fixed)
        return NULL;
    size_t out = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = s_utf8_len(p + i, n - i);
        if (len == 0) {
            memcpy(fixed + out, "\xef\xbf\xbd", 3);
            out += 3;
            i++;
        } else {
            memcpy(fixed + out, p + i, len);
            out += len;
            i += len;
        }
    }
    str = json_stringn(fixed, out);
    free(fixed);
    return str;
}

static json_t *
s_json_value(const am2z_kv_t *kv)
{
    switch (kv->type) {
    case AM2Z_KV_STR:    return s_json_string(kv->v.s);
    case AM2Z_KV_INT:    return json_integer((json_int_t)kv->v.i);
    case AM2Z_KV_UINT:
        /* json_int_t is signed 64-bit: larger values would wrap. */
        if (kv->v.u > (uint64_t)INT64_MAX)
            return json_real((double)kv->v.u);
        return json_integer((json_int_t)kv->v.u);
    case AM2Z_KV_DOUBLE:
        /* JSON has no NaN or infinity. */
        return isfinite(kv->v.d) ? json_real(kv->v.d) : json_null();
    case AM2Z_KV_BOOL:   return json_boolean(kv->v.b);
    default:             return NULL;
    }
}

/*  Sets key (made valid UTF-8, renamed if reserved) to value, which it steals. */
static void
s_json_set(json_t *obj, const char *key, json_t *value)
{
    if (!value)
        return;
    char renamed[128];
    for (size_t r = 0; r < sizeof s_json_reserved / sizeof s_json_reserved[0]; r++)
        if (strcmp(key, s_json_reserved[r]) == 0) {
            snprintf(renamed, sizeof renamed, "_%s", key);
            key = renamed;
            break;
        }
    json_t *k = s_json_string(key);
    if (!k) {
        json_decref(value);
        return;
    }
    json_object_set_new(obj, json_string_value(k), value);
    json_decref(k);
}

static int
s_json_append(const char *buffer, size_t size, void *data)
{
    s_put(data, buffer, size);
    return 0;
}

/*  Returns false when the object could not be built (out of memory). */
static bool
s_json_line(s_line_t *line, const char *ts, am2z_log_level_t level,
            const char *component, const char *message,
            const am2z_kv_t *kvs, size_t kv_count)
{
    json_t *obj = json_object();
    if (!obj)
        return false;
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(s_level_names[level]));
    json_object_set_new(obj, "component", s_json_string(component));
    json_object_set_new(obj, "msg", s_json_string(message));
    for (size_t i = 0; i < kv_count; i++) {
        if (kvs[i].type == AM2Z_KV_NONE_ || !kvs[i].key)
            continue;
        s_json_set(obj, kvs[i].key, s_json_value(&kvs[i]));
    }
    int rc = json_dump_callback(obj, s_json_append, line,
                                JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return rc == 0;
}

void
am2z_log_emit(am2z_log_t *self, am2z_log_level_t level,
              const char *component, const char *message,
              const am2z_kv_t *kvs, size_t kv_count)
{
    if (!am2z_log_enabled(self, level))
        return;
    if (!kvs)
        kv_count = 0;

    char ts[32];
    s_timestamp(ts);
    s_line_t line;
    s_line_init(&line);
    if (self->format == AM2Z_LOG_JSON) {
        /* A cut JSON line would not parse at all: drop it instead. */
        if (!s_json_line(&line, ts, level, component, message, kvs, kv_count)
            || line.full)
            goto done;
    } else {
        s_text_line(&line, ts, level, component, message, kvs, kv_count);
    }
    /* s_put keeps a byte spare for this newline even when the line was cut. */
    line.data[line.len++] = '\n';
    fwrite(line.data, 1, line.len, self->stream);
    fflush(self->stream);
done:
    s_line_free(&line);
}
