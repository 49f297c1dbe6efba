/*  am2z_config.c — see am2z_config.h.

    Every source (default, file, environment, flag) ends in s_store(), so a
    value means the same thing wherever it was written and every error has
    the same shape: "<origin>: <what is wrong>", where origin names both the
    source and the setting ("--map-size", "AM2Z_MAP_SIZE",
    "am2z.conf:3: map-size", "map-size (default)").
*/
#include "am2z_config.h"

#include "am2z_error.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const am2z_durability_names[] = { "sync", "periodic", NULL };
const char *const am2z_log_level_names[] = {
    "trace", "debug", "info", "warn", "error", "off", NULL,
};
const char *const am2z_log_format_names[] = { "text", "json", NULL };

const am2z_cfg_def_t am2z_config_table[] = {
    AM2Z_CONFIG_COMMON_ENTRIES(am2z_config_t, ),
    { .name = NULL },
};

void
am2z_config_defaults(am2z_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = am2z_cfg_defaults(am2z_config_table, cfg, NULL, 0);
    assert(rc == AM2Z_OK && "built-in config table has a bad default");
    (void)rc;
}

/*  Longest setting name the table may use (keeps flag/env names in
    fixed buffers below). */
#define S_NAME_MAX 64
#define S_KIB ((uint64_t)1 << 10)
#define S_MIB ((uint64_t)1 << 20)
#define S_GIB ((uint64_t)1 << 30)


/*  True when name[0..len) spells def_name, '_' standing for '-'. Environment
    names are upper case, so they are compared with fold set. */
static bool
s_name_eq(const char *def_name, const char *name, size_t len, bool fold)
{
    size_t i = 0;
    for (; i < len; i++) {
        char c = name[i] == '_' ? '-' : name[i];
        if (fold)
            c = (char)tolower((unsigned char)c);
        if (def_name[i] == '\0' || def_name[i] != c)
            return false;
    }
    return def_name[i] == '\0';
}

static const am2z_cfg_def_t *
s_find(const am2z_cfg_def_t *table, const char *name, size_t len, bool fold)
{
    for (const am2z_cfg_def_t *def = table; def->name; def++)
        if (s_name_eq(def->name, name, len, fold))
            return def;
    return NULL;
}

/*  "map-size" -> "AM2Z_MAP_SIZE". */
static void
s_env_name(const char *name, char *out, size_t out_size)
{
    int n = snprintf(out, out_size, "AM2Z_%s", name);
    for (size_t i = 5; n > 0 && i < (size_t)n && i < out_size; i++)
        out[i] = out[i] == '-' ? '_' : (char)toupper((unsigned char)out[i]);
}

static size_t
s_choice_count(const char *const *choices)
{
    size_t n = 0;
    while (choices && choices[n])
        n++;
    return n;
}

/* ---------------------------------------------------------------------------
   Value parsing. Numbers are unsigned decimal: no sign, no fraction, no hex.
   Each parser returns AM2Z_OK, AM2Z_EINVAL (not that kind of value) or
   AM2Z_ERESOURCE (does not fit in 64 bits).
   ------------------------------------------------------------------------ */
typedef struct {
    const char *suffix;
    uint64_t scale;
} s_unit_t;

/*  Sizes: case-insensitive, "64MiB" == "64m" == "64 MiB". */
static const s_unit_t s_size_units[] = {
    { "", 1 },
    { "k", S_KIB }, { "kib", S_KIB },
    { "m", S_MIB }, { "mib", S_MIB },
    { "g", S_GIB }, { "gib", S_GIB },
    { NULL, 0 },
};

/*  Durations: lower case only, so "1M" (a size typo) is not a minute. */
static const s_unit_t s_ms_units[] = {
    { "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    { "d", 86400000 },
    { NULL, 0 },
};

/*  Short durations (microseconds): a bare number is µs. */
static const s_unit_t s_us_units[] = {
    { "", 1 }, { "us", 1 }, { "ms", 1000 }, { "s", 1000000 },
    { NULL, 0 },
};

static int
s_parse_scaled(const char *s, const s_unit_t *units, bool fold, uint64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return AM2Z_EINVAL;
    uint64_t v = 0;
    bool overflow = false;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    while (*s == ' ')
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    for (const s_unit_t *u = units; u->suffix; u++) {
        if (strlen(u->suffix) != len
            || (fold ? strncasecmp(s, u->suffix, len) : strncmp(s, u->suffix, len)) != 0)
            continue;
        if (overflow || (v != 0 && v > UINT64_MAX / u->scale))
            return AM2Z_ERESOURCE;
        *out = v * u->scale;
        return AM2Z_OK;
    }
    return AM2Z_EINVAL;
}

static int
s_parse_number(am2z_cfg_type_t type, const char *s, uint64_t *out)
{
    static const s_unit_t plain[] = { { "", 1 }, { NULL, 0 } };
    switch (type) {
    case AM2Z_CFG_SIZE: return s_parse_scaled(s, s_size_units, true, out);
    case AM2Z_CFG_MS:   return s_parse_scaled(s, s_ms_units, false, out);
    case AM2Z_CFG_US:   return s_parse_scaled(s, s_us_units, false, out);
    default:            return s_parse_scaled(s, plain, false, out);
    }
}

static int
s_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return AM2Z_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return AM2Z_OK;
        }
    }
    return AM2Z_EINVAL;
}

/*  A size in the largest unit that divides it exactly, so the text parses
    back to the same value: 1073741824 -> "1GiB", 1000 -> "1000". */
static void
s_format_size(uint64_t v, char *out, size_t out_size)
{
    if (v != 0 && v % S_GIB == 0)
        snprintf(out, out_size, "%" PRIu64 "GiB", v / S_GIB);
    else if (v != 0 && v % S_MIB == 0)
        snprintf(out, out_size, "%" PRIu64 "MiB", v / S_MIB);
    else if (v != 0 && v % S_KIB == 0)
        snprintf(out, out_size, "%" PRIu64 "KiB", v / S_KIB);
    else
        snprintf(out, out_size, "%" PRIu64, v);
}

/*  A number as the user would write it for this type. */
static void
s_format_number(am2z_cfg_type_t type, uint64_t v, char *out, size_t out_size)
{
    if (type == AM2Z_CFG_SIZE)
        s_format_size(v, out, out_size);
    else if (type == AM2Z_CFG_MS)
        snprintf(out, out_size, "%" PRIu64 "ms", v);
    else if (type == AM2Z_CFG_US)
        snprintf(out, out_size, "%" PRIu64 "us", v);
    else
        snprintf(out, out_size, "%" PRIu64, v);
}

static const char *
s_kind_example(am2z_cfg_type_t type)
{
    switch (type) {
    case AM2Z_CFG_SIZE: return "a size (e.g. 64MiB)";
    case AM2Z_CFG_MS:   return "a duration (e.g. 250ms, 5s, 1m)";
    case AM2Z_CFG_US:   return "a duration (e.g. 200us, 1ms)";
    default:            return "a whole number (e.g. 1000)";
    }
}

static bool
s_has_bounds(const am2z_cfg_def_t *def)
{
    return def->min != 0 || def->max != 0;
}

/*  Parses value for def and writes it at def->offset in target. Nothing is
    written when the value is bad. */
static int
s_store(const am2z_cfg_def_t *def, void *target, const char *value,
        const char *origin, char *err, size_t err_size)
{
    char *field = (char *)target + def->offset;
    switch (def->type) {
    case AM2Z_CFG_STRING: {
        size_t n = strlen(value);
        if (n >= def->size) {
            am2z_errbuf(err, err_size, "%s: value is %zu bytes long; at most %zu allowed",
                  origin, n, def->size - 1);
            return AM2Z_ECONFIG;
        }
        memcpy(field, value, n + 1);
        return AM2Z_OK;
    }
    case AM2Z_CFG_UINT:
    case AM2Z_CFG_SIZE:
    case AM2Z_CFG_MS:
    case AM2Z_CFG_US: {
        uint64_t v = 0;
        int rc = s_parse_number(def->type, value, &v);
        if (rc == AM2Z_EINVAL) {
            am2z_errbuf(err, err_size, "%s: '%.80s' is not %s", origin, value,
                  s_kind_example(def->type));
            return AM2Z_ECONFIG;
        }
        if (rc == AM2Z_ERESOURCE) {
            am2z_errbuf(err, err_size, "%s: '%.80s' is too large", origin, value);
            return AM2Z_ECONFIG;
        }
        if (s_has_bounds(def) && (v < def->min || v > def->max)) {
            char lo[32], hi[32];
            s_format_number(def->type, def->min, lo, sizeof lo);
            s_format_number(def->type, def->max, hi, sizeof hi);
            am2z_errbuf(err, err_size, "%s: '%.80s' is out of range (%s..%s)",
                  origin, value, lo, hi);
            return AM2Z_ECONFIG;
        }
        memcpy(field, &v, sizeof v);
        return AM2Z_OK;
    }
    case AM2Z_CFG_BOOL: {
        bool b;
        if (s_parse_bool(value, &b) != AM2Z_OK) {
            am2z_errbuf(err, err_size,
                  "%s: '%.80s' is not a boolean (true/false, yes/no, on/off, 1/0)",
                  origin, value);
            return AM2Z_ECONFIG;
        }
        memcpy(field, &b, sizeof b);
        return AM2Z_OK;
    }
    case AM2Z_CFG_ENUM: {
        for (int i = 0; def->choices && def->choices[i]; i++)
            if (strcasecmp(value, def->choices[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return AM2Z_OK;
            }
        char list[160] = "";
        for (size_t i = 0; def->choices && def->choices[i]; i++) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                     def->choices[i]);
        }
        am2z_errbuf(err, err_size, "%s: '%.80s' is not one of: %s", origin, value, list);
        return AM2Z_ECONFIG;
    }
    }
    am2z_errbuf(err, err_size, "%s: setting has an unknown type %d", origin, (int)def->type);
    return AM2Z_ECONFIG;
}

/*  Table bugs that would otherwise surface as confusing behaviour later. */
static int
s_check_def(const am2z_cfg_def_t *table, const am2z_cfg_def_t *def,
            char *err, size_t err_size)
{
    size_t len = strlen(def->name);
    bool name_ok = len > 0 && len <= S_NAME_MAX && islower((unsigned char)def->name[0]);
    for (size_t i = 0; name_ok && i < len; i++)
        name_ok = islower((unsigned char)def->name[i])
               || isdigit((unsigned char)def->name[i]) || def->name[i] == '-';
    if (!name_ok) {
        am2z_errbuf(err, err_size, "'%.80s': a setting name must be lower-case kebab-case", def->name);
        return AM2Z_ECONFIG;
    }
    /* --config, --help and --no-X are taken by the argument parser. */
    if (strcmp(def->name, "config") == 0 || strcmp(def->name, "help") == 0
        || strncmp(def->name, "no-", 3) == 0) {
        am2z_errbuf(err, err_size, "%s: name is reserved", def->name);
        return AM2Z_ECONFIG;
    }
    if (s_find(table, def->name, len, false) != def) {
        am2z_errbuf(err, err_size, "%s: defined twice", def->name);
        return AM2Z_ECONFIG;
    }
    if (def->type == AM2Z_CFG_STRING && def->size == 0) {
        am2z_errbuf(err, err_size, "%s: STRING setting with size 0", def->name);
        return AM2Z_ECONFIG;
    }
    if (def->type == AM2Z_CFG_ENUM && s_choice_count(def->choices) == 0) {
        am2z_errbuf(err, err_size, "%s: ENUM setting without choices", def->name);
        return AM2Z_ECONFIG;
    }
    if (s_has_bounds(def) && def->min > def->max) {
        am2z_errbuf(err, err_size, "%s: min is above max", def->name);
        return AM2Z_ECONFIG;
    }
    return AM2Z_OK;
}

int
am2z_cfg_defaults(const am2z_cfg_def_t *table, void *target,
                  char *err, size_t err_size)
{
    for (const am2z_cfg_def_t *def = table; def->name; def++) {
        int rc = s_check_def(table, def, err, err_size);
        if (rc != AM2Z_OK)
            return rc;
        char origin[S_NAME_MAX + 16];
        snprintf(origin, sizeof origin, "%s (default)", def->name);
        rc = s_store(def, target, def->default_value ? def->default_value : "",
                     origin, err, err_size);
        if (rc != AM2Z_OK)
            return rc;
    }
    return AM2Z_OK;
}

int
am2z_cfg_set(const am2z_cfg_def_t *table, void *target, const char *name,
             const char *value, const char *origin, char *err, size_t err_size)
{
    if (!table || !target || !name || !value) {
        am2z_errbuf(err, err_size, "am2z_cfg_set: NULL argument");
        return AM2Z_EINVAL;
    }
    const am2z_cfg_def_t *def = s_find(table, name, strlen(name), false);
    if (!def) {
        if (origin)
            am2z_errbuf(err, err_size, "%s: unknown setting '%.80s'", origin, name);
        else
            am2z_errbuf(err, err_size, "unknown setting '%.80s'", name);
        return AM2Z_ENOTFOUND;
    }
    return s_store(def, target, value, origin ? origin : def->name, err, err_size);
}

int
am2z_cfg_load_env(const am2z_cfg_def_t *table, void *target,
                  char *const *envp, char *err, size_t err_size)
{
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, "AM2Z_", 5) != 0)
            continue;
        const char *name = *e + 5;
        const char *eq = strchr(name, '=');
        if (!eq)
            continue;
        const am2z_cfg_def_t *def = s_find(table, name, (size_t)(eq - name), true);
        if (!def)
            continue;
        char origin[S_NAME_MAX + 8];
        s_env_name(def->name, origin, sizeof origin);
        int rc = s_store(def, target, eq + 1, origin, err, err_size);
        if (rc != AM2Z_OK)
            return rc;
    }
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Config file: one `name = value` or `name value` per line. '#' starts a
   comment at the beginning of a line or after whitespace (so a value such
   as "a#b" survives). A value may be wrapped in double quotes to keep
   leading/trailing spaces or a " #"; there are no escapes inside quotes.
   ------------------------------------------------------------------------ */
static bool
s_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static char *
s_skip_blank(char *p)
{
    while (s_is_blank(*p))
        p++;
    return p;
}

static void
s_trim_end(char *start)
{
    char *end = start + strlen(start);
    while (end > start && s_is_blank(end[-1]))
        *--end = '\0';
}

/*  where is "path:line". line is modified in place. */
static int
s_file_line(const am2z_cfg_def_t *table, void *target, const char *where,
            char *line, char *err, size_t err_size)
{
    char *p = s_skip_blank(line);
    s_trim_end(p);
    if (*p == '\0' || *p == '#')
        return AM2Z_OK;

    char *key = p;
    while (isalnum((unsigned char)*p) || *p == '-' || *p == '_')
        p++;
    size_t key_len = (size_t)(p - key);
    if (key_len == 0 || (*p != '\0' && *p != '=' && !s_is_blank(*p))) {
        am2z_errbuf(err, err_size, "%s: expected 'name = value'", where);
        return AM2Z_ECONFIG;
    }
    p = s_skip_blank(p);
    bool has_eq = *p == '=';
    if (has_eq)
        p = s_skip_blank(p + 1);

    const am2z_cfg_def_t *def = s_find(table, key, key_len, false);
    if (!def) {
        am2z_errbuf(err, err_size, "%s: unknown setting '%.*s'", where, (int)key_len, key);
        return AM2Z_ENOTFOUND;
    }
    char origin[AM2Z_CFG_ERR_MAX + S_NAME_MAX + 4];
    snprintf(origin, sizeof origin, "%s: %s", where, def->name);

    char *value = p;
    if (*p == '"') {
        char *close = strchr(p + 1, '"');
        if (!close) {
            am2z_errbuf(err, err_size, "%s: unterminated quote", origin);
            return AM2Z_ECONFIG;
        }
        *close = '\0';
        char *rest = s_skip_blank(close + 1);
        if (*rest != '\0' && *rest != '#') {
            am2z_errbuf(err, err_size, "%s: unexpected text after the quoted value", origin);
            return AM2Z_ECONFIG;
        }
        value = p + 1;
    } else {
        for (char *q = p; *q; q++)
            if (*q == '#' && (q == p || s_is_blank(q[-1]))) {
                *q = '\0';
                break;
            }
        s_trim_end(value);
        if (*value == '\0' && !has_eq) {
            am2z_errbuf(err, err_size, "%s: missing value", origin);
            return AM2Z_ECONFIG;
        }
    }
    return s_store(def, target, value, origin, err, err_size);
}

int
am2z_cfg_load_file(const am2z_cfg_def_t *table, void *target,
                   const char *path, char *err, size_t err_size)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        am2z_errbuf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return AM2Z_EIO;
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = AM2Z_OK;
    ssize_t n;
    while ((n = getline(&line, &cap, file)) >= 0) {
        lineno++;
        char where[AM2Z_CFG_ERR_MAX];
        snprintf(where, sizeof where, "%s:%u", path, lineno);
        if (strlen(line) != (size_t)n) {
            am2z_errbuf(err, err_size, "%s: line contains a NUL byte", where);
            rc = AM2Z_ECONFIG;
            goto done;
        }
        rc = s_file_line(table, target, where, line, err, err_size);
        if (rc != AM2Z_OK)
            goto done;
    }
    if (ferror(file)) {
        am2z_errbuf(err, err_size, "%s: read failed: %s", path, strerror(errno));
        rc = AM2Z_EIO;
    }
done:
    free(line);
    fclose(file);
    return rc;
}

/* ---------------------------------------------------------------------------
   Command line.
   ------------------------------------------------------------------------ */
int
am2z_cfg_parse_args(const am2z_cfg_def_t *table, void *target,
                    int argc, char **argv, am2z_cfg_args_t *args,
                    char *err, size_t err_size)
{
    am2z_cfg_args_t scratch = { 0 };
    if (!args)
        args = &scratch;
    args->npositional = 0;
    args->help = false;
    args->config = NULL;

    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (flags_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (args->positional)
                args->positional[args->npositional] = arg;
            args->npositional++;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            args->help = true;
            continue;
        }
        if (arg[1] != '-') {
            am2z_errbuf(err, err_size, "%.80s: unknown option (see --help)", arg);
            return AM2Z_ENOTFOUND;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        char origin[S_NAME_MAX + 16];
        snprintf(origin, sizeof origin, "--%.*s", (int)(len < S_NAME_MAX ? len : S_NAME_MAX), name);

        if (s_name_eq("config", name, len, false)) {
            if (!value && i + 1 >= argc) {
                am2z_errbuf(err, err_size, "%s: missing value", origin);
                return AM2Z_ECONFIG;
            }
            args->config = value ? value : argv[++i];
            continue;
        }
        const am2z_cfg_def_t *def = s_find(table, name, len, false);
        if (!def && len > 3 && name[0] == 'n' && name[1] == 'o'
            && (name[2] == '-' || name[2] == '_')) {
            def = s_find(table, name + 3, len - 3, false);
            if (def && def->type != AM2Z_CFG_BOOL)
                def = NULL;
            if (def && value) {
                am2z_errbuf(err, err_size, "%s: takes no value", origin);
                return AM2Z_ECONFIG;
            }
            value = "false";
        }
        if (!def) {
            am2z_errbuf(err, err_size, "%s: unknown option (see --help)", origin);
            return AM2Z_ENOTFOUND;
        }
        if (!value) {
            if (def->type == AM2Z_CFG_BOOL) {
                value = "true";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                am2z_errbuf(err, err_size, "%s: missing value", origin);
                return AM2Z_ECONFIG;
            }
        }
        int rc = s_store(def, target, value, origin, err, err_size);
        if (rc != AM2Z_OK)
            return rc;
    }
    return AM2Z_OK;
}

static const char *
s_env_get(char *const *envp, const char *name)
{
    size_t len = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

/*  Flags are parsed twice: first to learn --config (and to reject a bad
    flag before any file is read), then again last so they win over the
    file and the environment. Applying them twice is harmless: every source
    overwrites whole values. */
int
am2z_cfg_load(const am2z_cfg_def_t *table, void *target,
              int argc, char **argv, char *const *envp,
              am2z_cfg_args_t *args, char *err, size_t err_size)
{
    am2z_cfg_args_t scratch = { 0 };
    if (!args)
        args = &scratch;
    int rc = am2z_cfg_defaults(table, target, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    rc = am2z_cfg_parse_args(table, target, argc, argv, args, err, err_size);
    if (rc != AM2Z_OK || args->help)
        return rc;
    const char *path = args->config ? args->config : s_env_get(envp, "AM2Z_CONFIG");
    if (path && *path) {
        rc = am2z_cfg_load_file(table, target, path, err, err_size);
        if (rc != AM2Z_OK)
            return rc;
    }
    rc = am2z_cfg_load_env(table, target, envp, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    return am2z_cfg_parse_args(table, target, argc, argv, args, err, err_size);
}

/* ---------------------------------------------------------------------------
   Reporting.
   ------------------------------------------------------------------------ */
static const char *
s_value_hint(am2z_cfg_type_t type)
{
    switch (type) {
    case AM2Z_CFG_STRING: return " TEXT";
    case AM2Z_CFG_UINT:   return " N";
    case AM2Z_CFG_SIZE:   return " SIZE";
    case AM2Z_CFG_MS:     return " DURATION";
    case AM2Z_CFG_US:     return " DURATION";
    case AM2Z_CFG_ENUM:   return " NAME";
    case AM2Z_CFG_BOOL:   return "";
    }
    return "";
}

static void
s_flag_text(const am2z_cfg_def_t *def, char *out, size_t out_size)
{
    snprintf(out, out_size, "--%s%s%s", def->type == AM2Z_CFG_BOOL ? "[no-]" : "",
             def->name, s_value_hint(def->type));
}

static void
s_default_text(const am2z_cfg_def_t *def, char *out, size_t out_size)
{
    const char *d = def->default_value ? def->default_value : "";
    snprintf(out, out_size, "%s", *d ? d : "\"\"");
}

void
am2z_cfg_print_help(const am2z_cfg_def_t *table, FILE *out)
{
    char flag[S_NAME_MAX + 32], dflt[64], env[S_NAME_MAX + 8];
    int flag_w = (int)strlen("--config FILE");
    int dflt_w = (int)strlen("DEFAULT");
    for (const am2z_cfg_def_t *def = table; def->name; def++) {
        s_flag_text(def, flag, sizeof flag);
        s_default_text(def, dflt, sizeof dflt);
        if ((int)strlen(flag) > flag_w)
            flag_w = (int)strlen(flag);
        if ((int)strlen(dflt) > dflt_w)
            dflt_w = (int)strlen(dflt);
    }
    fprintf(out, "Settings: precedence is default < config file < environment < flag.\n"
                 "A config file line is `name = value`.\n\n");
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "FLAG", dflt_w, "DEFAULT",
            "DESCRIPTION [ENVIRONMENT]");
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "-h, --help", dflt_w, "",
            "print this help and exit");
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "--config FILE", dflt_w, "",
            "read settings from FILE [AM2Z_CONFIG]");
    for (const am2z_cfg_def_t *def = table; def->name; def++) {
        s_flag_text(def, flag, sizeof flag);
        s_default_text(def, dflt, sizeof dflt);
        s_env_name(def->name, env, sizeof env);
        fprintf(out, "  %-*s  %-*s  %s [%s]\n", flag_w, flag, dflt_w, dflt,
                def->help ? def->help : "", env);
    }
}

int
am2z_cfg_get(const am2z_cfg_def_t *table, const void *target,
             const char *name, char *out, size_t out_size)
{
    const am2z_cfg_def_t *def = name ? s_find(table, name, strlen(name), false) : NULL;
    if (!def)
        return AM2Z_ENOTFOUND;
    const char *field = (const char *)target + def->offset;
    char buf[32];
    const char *text = buf;
    switch (def->type) {
    case AM2Z_CFG_STRING:
        text = field;
        break;
    case AM2Z_CFG_UINT:
    case AM2Z_CFG_SIZE:
    case AM2Z_CFG_MS:
    case AM2Z_CFG_US: {
        uint64_t v;
        memcpy(&v, field, sizeof v);
        s_format_number(def->type, v, buf, sizeof buf);
        break;
    }
    case AM2Z_CFG_BOOL: {
        bool b;
        memcpy(&b, field, sizeof b);
        text = b ? "true" : "false";
        break;
    }
    case AM2Z_CFG_ENUM: {
        int i;
        memcpy(&i, field, sizeof i);
        if (i >= 0 && (size_t)i < s_choice_count(def->choices))
            text = def->choices[i];
        else
            snprintf(buf, sizeof buf, "%d", i);
        break;
    }
    }
    size_t n = strnlen(text, def->type == AM2Z_CFG_STRING ? def->size : sizeof buf);
    if (!out || n >= out_size)
        return AM2Z_ERESOURCE;
    memcpy(out, text, n);
    out[n] = '\0';
    return AM2Z_OK;
}
