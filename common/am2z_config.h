/*  am2z_config.h — table-driven configuration.

    One table describes every setting: name, type, where it lives in the
    target struct, default, bounds, help. The same table feeds, in order of
    increasing precedence:

        built-in defaults  <  config file  <  AM2Z_* environment  <  --flags

    A setting named "data-dir" is the flag `--data-dir VALUE` (or
    `--data-dir=VALUE`), the environment variable AM2Z_DATA_DIR and the file
    line `data-dir = VALUE` (or `data-dir VALUE`; `data_dir` also accepted;
    `#` starts a comment). The file is named by `--config FILE` or
    AM2Z_CONFIG. A bad value is reported with the setting's name and where the
    value came from, before anything starts.

    Values: STRING (stored in a fixed char array: too long is an error),
    UINT (decimal), SIZE (bytes with optional K/KiB/M/MiB/G/GiB suffix,
    powers of 1024), MS (milliseconds with optional ms/s/m suffix), BOOL
    (true/false/yes/no/on/off/1/0), ENUM (one of `choices`; stored as the
    index, an int).

    Thread safety: functions are reentrant; a target struct belongs to the
    caller.
*/
#ifndef AM2Z_CONFIG_H_INCLUDED
#define AM2Z_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AM2Z_CFG_STRING = 0,  /* char[size] at offset */
    AM2Z_CFG_UINT,        /* uint64_t at offset */
    AM2Z_CFG_SIZE,        /* uint64_t (bytes) at offset */
    AM2Z_CFG_MS,          /* uint64_t (milliseconds) at offset */
    AM2Z_CFG_BOOL,        /* bool at offset */
    AM2Z_CFG_ENUM,        /* int (index into choices) at offset */
    AM2Z_CFG_US           /* uint64_t (microseconds) at offset */
} am2z_cfg_type_t;

/*  One setting. A table is an array terminated by an entry with name NULL. */
typedef struct {
    const char *name;              /* kebab-case, e.g. "map-size" */
    am2z_cfg_type_t type;
    size_t offset;                 /* offsetof(target struct, field) */
    size_t size;                   /* STRING: buffer size incl. NUL; else 0 */
    const char *default_value;     /* as text; parsed like user input */
    uint64_t min, max;             /* numeric bounds (inclusive); 0,0 = none */
    const char *const *choices;    /* ENUM: NULL-terminated names */
    const char *help;              /* one line for --help */
} am2z_cfg_def_t;

/*  Error text buffers passed to these functions should be at least this big. */
#define AM2Z_CFG_ERR_MAX 256

/*  Writes every default into target. Returns AM2Z_OK, or AM2Z_ECONFIG when a
    default is invalid (a bug in the table; err says which). */
int am2z_cfg_defaults(const am2z_cfg_def_t *table, void *target,
                      char *err, size_t err_size);

/*  Parses `value` for the setting `name` (kebab or snake case) and stores it.
    `origin` starts the error message and should name the source and the
    setting ("--map-size", "AM2Z_MAP_SIZE", "am2z.conf:12: map-size"); NULL
    means the setting's name. Returns AM2Z_OK, AM2Z_ENOTFOUND for an
    unknown name, AM2Z_ECONFIG for a bad value; err explains either. */
int am2z_cfg_set(const am2z_cfg_def_t *table, void *target, const char *name,
                 const char *value, const char *origin,
                 char *err, size_t err_size);

/*  Applies every AM2Z_<NAME> variable present in `envp` (NULL-terminated
    "K=V" strings; pass `environ`). Variables that match no setting are
    ignored (AM2Z_CONFIG among them). Returns AM2Z_OK or AM2Z_ECONFIG. */
int am2z_cfg_load_env(const am2z_cfg_def_t *table, void *target,
                      char *const *envp, char *err, size_t err_size);

/*  Applies a config file. Unknown keys are errors (a typo must not be
    silently ignored). Returns AM2Z_OK, AM2Z_EIO (cannot read: err names the
    path and errno text), AM2Z_ECONFIG or AM2Z_ENOTFOUND (unknown key). */
int am2z_cfg_load_file(const am2z_cfg_def_t *table, void *target,
                       const char *path, char *err, size_t err_size);

/*  What am2z_cfg_parse_args leaves for the caller. */
typedef struct {
    int npositional;        /* operands that were not flags, in order */
    char **positional;      /* borrowed from argv; array owned by caller */
    bool help;              /* --help or -h was given */
    const char *config;     /* --config FILE, or NULL; borrowed from argv */
} am2z_cfg_args_t;

/*  Applies `--name value` / `--name=value` flags from argv[1..argc) and
    collects operands into args->positional, which must have room for argc
    pointers. A BOOL flag given without "=value" means true; `--no-NAME`
    means false. `--` ends flags. Returns AM2Z_OK, AM2Z_ENOTFOUND (unknown
    flag), AM2Z_ECONFIG (bad or missing value); err explains. */
int am2z_cfg_parse_args(const am2z_cfg_def_t *table, void *target,
                        int argc, char **argv, am2z_cfg_args_t *args,
                        char *err, size_t err_size);

/*  The whole sequence: defaults, file (--config or AM2Z_CONFIG in envp),
    environment, then flags — flags parsed once up front so --config is
    known, and applied last so they win. When --help is given it stops
    after the flags (a broken file must not hide the help). Same returns
    as above. */
int am2z_cfg_load(const am2z_cfg_def_t *table, void *target,
                  int argc, char **argv, char *const *envp,
                  am2z_cfg_args_t *args, char *err, size_t err_size);

/*  Prints one line per setting: flag, type, default, help, env name. */
void am2z_cfg_print_help(const am2z_cfg_def_t *table, FILE *out);

/*  Writes the current value of setting `name` as text (for logs / tests).
    Returns AM2Z_OK, AM2Z_ENOTFOUND or AM2Z_ERESOURCE (buffer too small). */
int am2z_cfg_get(const am2z_cfg_def_t *table, const void *target,
                 const char *name, char *out, size_t out_size);

/* ---------------------------------------------------------------------------
   The settings every am2z process shares (store, limits, logging). Daemons
   build their own tables from AM2Z_CONFIG_COMMON_ENTRIES plus their own.
   ------------------------------------------------------------------------ */
#define AM2Z_PATH_MAX 1024

typedef enum { AM2Z_DURABILITY_SYNC = 0, AM2Z_DURABILITY_PERIODIC = 1 } am2z_durability_t;

typedef struct {
    char data_dir[AM2Z_PATH_MAX];  /* LMDB environment directory */
    uint64_t map_size;             /* LMDB map size, bytes */
    int durability;                /* am2z_durability_t */
    uint64_t flush_interval_ms;    /* periodic mode: fsync at most this late */
    uint64_t max_state_size;       /* largest encoded state accepted, bytes */
    uint64_t max_sessions;         /* most sessions the store will hold */
    uint64_t max_frame_size;       /* largest wire body accepted, bytes */
    int log_level;                 /* am2z_log_level_t */
    int log_format;                /* am2z_log_format_t */
    bool embedded;                 /* not a setting: the store shares its process with
                                      application code (am2z_runtime), so LMDB keeps its
                                      map read-only (no MDB_WRITEMAP: a stray write of
                                      the application must not reach the file) */
    bool exclusive;                /* not a setting: the store belongs to a broker, which
                                      takes the data dir's lock (am2z.lock) so that no
                                      second broker opens it (am2z_store_open) */
} am2z_config_t;

extern const char *const am2z_durability_names[];   /* "sync", "periodic", NULL */
extern const char *const am2z_log_level_names[];    /* "trace" .. "off", NULL */
extern const char *const am2z_log_format_names[];   /* "text", "json", NULL */

/*  Table entries for an am2z_config_t inside struct T. P is the member path
    with a trailing dot ("common.") or empty when T is am2z_config_t itself. */
#define AM2Z_CONFIG_COMMON_ENTRIES(T, P)                                                  \
    { "data-dir", AM2Z_CFG_STRING, offsetof(T, P data_dir), AM2Z_PATH_MAX,                \
      "./am2z-data", 0, 0, NULL, "directory of the LMDB environment" },                   \
    { "map-size", AM2Z_CFG_SIZE, offsetof(T, P map_size), 0, "1GiB",                      \
      64 * 1024, (uint64_t)1 << 40, NULL, "LMDB map size (largest the store may grow)" }, \
    { "durability", AM2Z_CFG_ENUM, offsetof(T, P durability), 0, "sync", 0, 0,            \
      am2z_durability_names, "sync: fsync every commit; periodic: fsync every flush-interval" }, \
    { "flush-interval", AM2Z_CFG_MS, offsetof(T, P flush_interval_ms), 0, "100ms",        \
      1, 60000, NULL, "periodic durability: longest a commit waits for fsync" },          \
    { "max-state-size", AM2Z_CFG_SIZE, offsetof(T, P max_state_size), 0, "1MiB",          \
      1024, (uint64_t)64 << 20, NULL, "largest encoded session state" },                  \
    { "max-sessions", AM2Z_CFG_UINT, offsetof(T, P max_sessions), 0, "1000000",           \
      1, (uint64_t)1 << 32, NULL, "most sessions held at once" },                          \
    { "max-frame-size", AM2Z_CFG_SIZE, offsetof(T, P max_frame_size), 0, "4MiB",          \
      4096, (uint64_t)256 << 20, NULL, "largest message body accepted from a peer" },     \
    { "log-level", AM2Z_CFG_ENUM, offsetof(T, P log_level), 0, "info", 0, 0,              \
      am2z_log_level_names, "trace, debug, info, warn, error or off" },                   \
    { "log-format", AM2Z_CFG_ENUM, offsetof(T, P log_format), 0, "text", 0, 0,            \
      am2z_log_format_names, "text or json (one object per line)" }

/*  The table for a bare am2z_config_t (tests, the store demo). */
extern const am2z_cfg_def_t am2z_config_table[];

/*  Fills cfg with defaults (cannot fail for the built-in table). */
void am2z_config_defaults(am2z_config_t *cfg);

#ifdef __cplusplus
}
#endif
#endif
