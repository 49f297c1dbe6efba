/*  am2z_error.c — see am2z_error.h.

    The kind-specific fields of an AM2Z error (ValidationError's field /
    value / reason, ...) are carried as a msgpack map in `details`, so they
    travel on the wire unchanged and new kinds need no new struct fields.
    This file packs those small maps; decoding them is the codec's job.
*/
#include "am2z_error.h"

#include "am2z_clock.h"
#include "am2z_mpcheck.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_strerror[AM2Z_ERR_LAST + 1] = {
    [0]                 = "success",
    [-AM2Z_EINVAL]      = "invalid argument",
    [-AM2Z_ENOMEM]      = "out of memory",
    [-AM2Z_EPROTO]      = "protocol error: malformed or unexpected message",
    [-AM2Z_EINTEGRITY]  = "integrity error: stored record failed verification",
    [-AM2Z_ECONFLICT]   = "conflict: version changed since it was read",
    [-AM2Z_ENOTFOUND]   = "not found",
    [-AM2Z_ERESOURCE]   = "resource limit reached",
    [-AM2Z_ETIMEOUT]    = "timed out",
    [-AM2Z_EIO]         = "storage or system I/O error",
    [-AM2Z_ECONFIG]     = "invalid configuration",
    [-AM2Z_ETYPE]       = "value has another type",
    [-AM2Z_ECRYPTO]     = "cryptographic library error",
    [-AM2Z_ESTATE]      = "object is in the wrong state for this call",
    [-AM2Z_ENETWORK]    = "network error",
    [-AM2Z_EFAILED]     = "processor failed",
    [-AM2Z_EBUSY]       = "in use by another process",
};

const char *
am2z_strerror(int code)
{
    if (code > 0 || code < -AM2Z_ERR_LAST)
        return "unknown am2z error";
    return s_strerror[-code];
}

void
am2z_errbuf(char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static const char *const s_category_names[AM2Z_CAT_COUNT_] = {
    "validation", "execution", "timeout", "resource", "network",
    "configuration", "business", "integrity", "conflict", "not_found",
    "protocol",
};

/*  Per-category defaults: retryable, severity. */
static const struct {
    bool retryable;
    am2z_severity_t severity;
} s_category_defaults[AM2Z_CAT_COUNT_] = {
    [AM2Z_CAT_VALIDATION]    = { false, AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_EXECUTION]     = { true,  AM2Z_SEV_HIGH },
    [AM2Z_CAT_TIMEOUT]       = { true,  AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_RESOURCE]      = { true,  AM2Z_SEV_HIGH },
    [AM2Z_CAT_NETWORK]       = { true,  AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_CONFIGURATION] = { false, AM2Z_SEV_CRITICAL },
    [AM2Z_CAT_BUSINESS]      = { false, AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_INTEGRITY]     = { false, AM2Z_SEV_CRITICAL },
    [AM2Z_CAT_CONFLICT]      = { false, AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_NOT_FOUND]     = { false, AM2Z_SEV_MEDIUM },
    [AM2Z_CAT_PROTOCOL]      = { false, AM2Z_SEV_HIGH },
};

static const char *const s_severity_names[AM2Z_SEV_COUNT_] = {
    "low", "medium", "high", "critical",
};

static const char *const s_kind_names[AM2Z_KIND_COUNT_] = {
    "AM2ZError", "ValidationError", "ProcessorNotFoundError",
    "ProcessorExecutionError", "TimeoutError", "ResourceError",
    "NetworkError", "ConfigurationError", "BusinessError",
    "CallDepthExceededError",
};

const char *
am2z_category_name(am2z_category_t category)
{
    return (unsigned)category < AM2Z_CAT_COUNT_ ? s_category_names[category] : "unknown";
}

const char *
am2z_severity_name(am2z_severity_t severity)
{
    return (unsigned)severity < AM2Z_SEV_COUNT_ ? s_severity_names[severity] : "unknown";
}

const char *
am2z_kind_name(am2z_kind_t kind)
{
    return (unsigned)kind < AM2Z_KIND_COUNT_ ? s_kind_names[kind] : "unknown";
}

/*  Index of name in names[0..n), or -1. */
static int
s_lookup(const char *const *names, int n, const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

int
am2z_category_parse(const char *name, am2z_category_t *category)
{
    int i = s_lookup(s_category_names, AM2Z_CAT_COUNT_, name);
    if (i < 0)
        return AM2Z_EINVAL;
    *category = (am2z_category_t)i;
    return AM2Z_OK;
}

int
am2z_severity_parse(const char *name, am2z_severity_t *severity)
{
    int i = s_lookup(s_severity_names, AM2Z_SEV_COUNT_, name);
    if (i < 0)
        return AM2Z_EINVAL;
    *severity = (am2z_severity_t)i;
    return AM2Z_OK;
}

int
am2z_kind_parse(const char *name, am2z_kind_t *kind)
{
    int i = s_lookup(s_kind_names, AM2Z_KIND_COUNT_, name);
    if (i < 0)
        return AM2Z_EINVAL;
    *kind = (am2z_kind_t)i;
    return AM2Z_OK;
}

bool
am2z_category_retryable(am2z_category_t category)
{
    return (unsigned)category < AM2Z_CAT_COUNT_ && s_category_defaults[category].retryable;
}

am2z_severity_t
am2z_category_severity(am2z_category_t category)
{
    return (unsigned)category < AM2Z_CAT_COUNT_ ? s_category_defaults[category].severity
                                                : AM2Z_SEV_HIGH;
}

/*  Allocates an error with category defaults; takes ownership of message. */
static am2z_error_t *
s_error_alloc(am2z_kind_t kind, am2z_category_t category, const char *code,
              char *message)
{
    am2z_error_t *self = calloc(1, sizeof *self);
    if (!self || !message) {
        free(self);
        free(message);
        return NULL;
    }
    self->kind = kind;
    self->category = category;
    self->severity = am2z_category_severity(category);
    self->retryable = am2z_category_retryable(category);
    self->code = strdup(code ? code : "AM2Z_ERROR");
    size_t len = strlen(message);
    if (len > AM2Z_ERROR_MESSAGE_MAX) {
        size_t cut = AM2Z_ERROR_MESSAGE_MAX - 3;
        while (cut > 0 && ((unsigned char)message[cut] & 0xc0) == 0x80)
            cut--;                        /* not inside a UTF-8 sequence */
        memcpy(message + cut, "...", 4);
    }
    self->message = message;
    self->timestamp_ms = am2z_clock_wall_ms();
    if (!self->code) {
        am2z_error_destroy(&self);
        return NULL;
    }
    return self;
}

static char *
s_vformat(const char *fmt, va_list ap)
{
    char *out = NULL;
    if (vasprintf(&out, fmt ? fmt : "", ap) < 0)
        return NULL;
    return out;
}

static char *
s_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
s_format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = s_vformat(fmt, ap);
    va_end(ap);
    return out;
}

am2z_error_t *
am2z_error_new(am2z_category_t category, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *message = s_vformat(fmt, ap);
    va_end(ap);
    if ((unsigned)category >= AM2Z_CAT_COUNT_)
        category = AM2Z_CAT_EXECUTION;
    return s_error_alloc(AM2Z_KIND_GENERIC, category, code, message);
}

/* ---------------------------------------------------------------------------
   Details maps. A tiny builder over msgpack_packer: the caller states the
   number of pairs, then adds them.
   ------------------------------------------------------------------------ */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} s_details_t;

static void
s_details_begin(s_details_t *d, uint32_t pairs)
{
    msgpack_sbuffer_init(&d->buf);
    msgpack_packer_init(&d->pk, &d->buf, msgpack_sbuffer_write);
    msgpack_pack_map(&d->pk, pairs);
}

static void
s_pack_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        msgpack_pack_nil(pk);
        return;
    }
    size_t len = strlen(s);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void
s_details_str(s_details_t *d, const char *key, const char *value)
{
    s_pack_str(&d->pk, key);
    s_pack_str(&d->pk, value);
}

static void
s_details_uint(s_details_t *d, const char *key, uint64_t value)
{
    s_pack_str(&d->pk, key);
    msgpack_pack_uint64(&d->pk, value);
}

/*  Moves the packed map into the error. On allocation failure (msgpack's
    sbuffer leaves data NULL) the error is destroyed and NULL returned. */
static am2z_error_t *
s_details_end(s_details_t *d, am2z_error_t *self)
{
    if (!self || !d->buf.data) {
        msgpack_sbuffer_destroy(&d->buf);
        am2z_error_destroy(&self);
        return NULL;
    }
    self->details_size = d->buf.size;
    self->details = (uint8_t *)msgpack_sbuffer_release(&d->buf);
    return self;
}

am2z_error_t *
am2z_error_in_composite(const am2z_error_t *cause, const char *what, const char *composite,
                        const char *unit, const char *step, uint32_t position,
                        uint32_t completed, const uint8_t *partial_state,
                        size_t partial_state_size)
{
    if (!cause)
        return NULL;
    am2z_error_t *self = s_error_alloc(
        cause->kind, cause->category, cause->code,
        s_format("%s '%s' failed at %s %u (%s): %s", what ? what : "composite",
                 composite ? composite : "?", unit ? unit : "step", position,
                 step ? step : "?", cause->message ? cause->message : ""));
    if (self) {
        self->severity = cause->severity;
        self->retryable = cause->retryable;
    }
    s_details_t d;
    s_details_begin(&d, 6);
    s_details_str(&d, "composite", composite);
    s_details_str(&d, "step", step);
    s_details_uint(&d, "position", position);
    s_details_uint(&d, "completedSteps", completed);
    s_pack_str(&d.pk, "partialState");
    if (partial_state && partial_state_size)
        d.pk.callback(d.pk.data, (const char *)partial_state, partial_state_size);
    else
        msgpack_pack_nil(&d.pk);
    s_pack_str(&d.pk, "cause");
    if (cause->details && cause->details_size)
        d.pk.callback(d.pk.data, (const char *)cause->details, cause->details_size);
    else
        msgpack_pack_nil(&d.pk);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_validation(const char *field, const char *value, const char *reason)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_VALIDATION, AM2Z_CAT_VALIDATION, "VALIDATION_ERROR",
        s_format("validation failed for '%s': %s", field ? field : "?",
                 reason ? reason : "invalid value"));
    s_details_t d;
    s_details_begin(&d, 3);
    s_details_str(&d, "field", field);
    s_details_str(&d, "value", value);
    s_details_str(&d, "reason", reason);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_processor_not_found(const char *processor_name,
                               const char *const *available,
                               size_t available_count)
{
    /* message lists the names too: "... Available: a, b, c" */
    size_t len = 1;
    for (size_t i = 0; i < available_count; i++)
        len += strlen(available[i]) + 2;
    char *list = malloc(len);
    if (!list)
        return NULL;
    list[0] = '\0';
    for (size_t i = 0; i < available_count; i++) {
        if (i)
            strcat(list, ", ");
        strcat(list, available[i]);
    }
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_PROCESSOR_NOT_FOUND, AM2Z_CAT_NOT_FOUND, "PROCESSOR_NOT_FOUND",
        s_format("processor '%s' not found. Available: %s",
                 processor_name ? processor_name : "?",
                 available_count ? list : "(none)"));
    free(list);
    s_details_t d;
    s_details_begin(&d, 2);
    s_details_str(&d, "processorName", processor_name);
    s_pack_str(&d.pk, "availableProcessors");
    msgpack_pack_array(&d.pk, available_count);
    for (size_t i = 0; i < available_count; i++)
        s_pack_str(&d.pk, available[i]);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_execution(const char *processor_name, const char *execution_id,
                     const char *cause)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_PROCESSOR_EXECUTION, AM2Z_CAT_EXECUTION, "PROCESSOR_EXECUTION_ERROR",
        s_format("processor '%s' failed: %s", processor_name ? processor_name : "?",
                 cause ? cause : "unknown cause"));
    s_details_t d;
    s_details_begin(&d, 3);
    s_details_str(&d, "processorName", processor_name);
    s_details_str(&d, "executionId", execution_id);
    s_details_str(&d, "cause", cause);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_timeout(const char *operation, uint64_t timeout_ms)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_TIMEOUT, AM2Z_CAT_TIMEOUT, "TIMEOUT_ERROR",
        s_format("%s timed out after %llu ms", operation ? operation : "operation",
                 (unsigned long long)timeout_ms));
    s_details_t d;
    s_details_begin(&d, 2);
    s_details_str(&d, "operation", operation);
    s_details_uint(&d, "timeoutMs", timeout_ms);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_resource(const char *resource, uint64_t limit, uint64_t current)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_RESOURCE, AM2Z_CAT_RESOURCE, "RESOURCE_ERROR",
        s_format("resource limit reached for %s: %llu of %llu",
                 resource ? resource : "?", (unsigned long long)current,
                 (unsigned long long)limit));
    s_details_t d;
    s_details_begin(&d, 3);
    s_details_str(&d, "resource", resource);
    s_details_uint(&d, "limit", limit);
    s_details_uint(&d, "current", current);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_network(const char *endpoint, const char *reason)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_NETWORK, AM2Z_CAT_NETWORK, "NETWORK_ERROR",
        s_format("network error on %s: %s", endpoint ? endpoint : "?",
                 reason ? reason : "unknown"));
    s_details_t d;
    s_details_begin(&d, 2);
    s_details_str(&d, "endpoint", endpoint);
    s_details_str(&d, "reason", reason);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_configuration(const char *config_key, const char *reason)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_CONFIGURATION, AM2Z_CAT_CONFIGURATION, "CONFIGURATION_ERROR",
        s_format("configuration error for '%s': %s", config_key ? config_key : "?",
                 reason ? reason : "invalid"));
    s_details_t d;
    s_details_begin(&d, 2);
    s_details_str(&d, "configKey", config_key);
    s_details_str(&d, "reason", reason);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_business(const char *code, const char *message,
                    const uint8_t *details, size_t details_size)
{
    if (details && details_size) {
        /* must be exactly one map */
        bool is_map = (details[0] & 0xf0) == 0x80 || details[0] == 0xde
                      || details[0] == 0xdf;
        if (!is_map || am2z_msgpack_check(details, details_size, 64) != AM2Z_OK)
            return NULL;
    }
    am2z_error_t *self = s_error_alloc(AM2Z_KIND_BUSINESS, AM2Z_CAT_BUSINESS,
                                       code ? code : "BUSINESS_ERROR",
                                       strdup(message ? message : "business rule failed"));
    if (self && details && details_size) {
        self->details = malloc(details_size);
        if (!self->details) {
            am2z_error_destroy(&self);
            return NULL;
        }
        memcpy(self->details, details, details_size);
        self->details_size = details_size;
    }
    return self;
}

am2z_error_t *
am2z_error_call_depth(uint32_t depth, uint32_t max_depth, const char *processor_name)
{
    am2z_error_t *self = s_error_alloc(
        AM2Z_KIND_CALL_DEPTH_EXCEEDED, AM2Z_CAT_EXECUTION, "CALL_DEPTH_EXCEEDED",
        s_format("call depth %u exceeds the maximum of %u%s%s", depth, max_depth,
                 processor_name ? " calling " : "", processor_name ? processor_name : ""));
    if (self)
        self->retryable = false;   /* the same call would exceed again */
    s_details_t d;
    s_details_begin(&d, 3);
    s_details_uint(&d, "depth", depth);
    s_details_uint(&d, "maxDepth", max_depth);
    s_details_str(&d, "processorName", processor_name);
    return s_details_end(&d, self);
}

am2z_error_t *
am2z_error_dup(const am2z_error_t *self)
{
    if (!self)
        return NULL;
    am2z_error_t *copy = calloc(1, sizeof *copy);
    if (!copy)
        return NULL;
    *copy = *self;
    copy->code = strdup(self->code ? self->code : "");
    copy->message = strdup(self->message ? self->message : "");
    copy->details = NULL;
    copy->details_size = 0;
    if (self->details && self->details_size) {
        copy->details = malloc(self->details_size);
        if (copy->details) {
            memcpy(copy->details, self->details, self->details_size);
            copy->details_size = self->details_size;
        }
    }
    if (!copy->code || !copy->message
        || (self->details_size && !copy->details)) {
        am2z_error_destroy(&copy);
        return NULL;
    }
    return copy;
}

void
am2z_error_set_retryable(am2z_error_t *self, bool retryable)
{
    if (self)
        self->retryable = retryable;
}

void
am2z_error_destroy(am2z_error_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_error_t *self = *self_p;
    free(self->code);
    free(self->message);
    free(self->details);
    free(self);
    *self_p = NULL;
}
