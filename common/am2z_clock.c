/*  am2z_clock.c — see am2z_clock.h. */
#include "am2z_clock.h"

#include "am2z_error.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

uint64_t
am2z_clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t
am2z_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int
am2z_random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return AM2Z_EIO;
        }
        got += (size_t)r;
    }
    return AM2Z_OK;
}

void
am2z_id_format(char out[AM2Z_ID_LEN + 1], uint64_t ms, const uint8_t rnd[AM2Z_ID_RANDOM])
{
    static const char hex[] = "0123456789abcdef";
    /* 48 bits of milliseconds: good until the year 10889. */
    ms &= 0xffffffffffffull;
    for (int i = 11; i >= 0; i--) {
        out[i] = hex[ms & 0xf];
        ms >>= 4;
    }
    for (size_t i = 0; i < AM2Z_ID_RANDOM; i++) {
        out[12 + 2 * i] = hex[rnd[i] >> 4];
        out[13 + 2 * i] = hex[rnd[i] & 0xf];
    }
    out[AM2Z_ID_LEN] = '\0';
}

int
am2z_id_new(char out[AM2Z_ID_LEN + 1])
{
    uint8_t rnd[AM2Z_ID_RANDOM];
    int rc = am2z_random_bytes(rnd, sizeof rnd);
    if (rc != AM2Z_OK)
        return rc;
    am2z_id_format(out, am2z_clock_wall_ms(), rnd);
    return AM2Z_OK;
}

/*  Character classes of ids and names, one lookup per byte (these run for
    every id of every message). */
enum { S_ALNUM = 1, S_PUNCT = 2, S_AT = 4 };   /* [A-Za-z0-9], "_.:-", "@" */

#define S_RANGE_10(c, v) [c] = v, [c + 1] = v, [c + 2] = v, [c + 3] = v, [c + 4] = v, \
    [c + 5] = v, [c + 6] = v, [c + 7] = v, [c + 8] = v, [c + 9] = v
#define S_RANGE_26(c, v) S_RANGE_10(c, v), S_RANGE_10(c + 10, v), [c + 20] = v, \
    [c + 21] = v, [c + 22] = v, [c + 23] = v, [c + 24] = v, [c + 25] = v

static const uint8_t s_class[256] = {
    S_RANGE_10('0', S_ALNUM), S_RANGE_26('A', S_ALNUM), S_RANGE_26('a', S_ALNUM),
    ['_'] = S_PUNCT, ['.'] = S_PUNCT, [':'] = S_PUNCT, ['-'] = S_PUNCT, ['@'] = S_AT,
};

/*  True when s[0..len) is 1..max bytes, each of a class in `classes`. */
static bool
s_charset_ok(const char *s, size_t len, size_t max, uint8_t classes)
{
    if (!s || len == 0 || len > max)
        return false;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++)
        if (!(s_class[p[i]] & classes))
            return false;
    return true;
}

bool
am2z_name_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_NAME_MAX, S_ALNUM | S_PUNCT);
}

bool
am2z_session_id_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_SESSION_ID_MAX, S_ALNUM | S_PUNCT | S_AT);
}

bool
am2z_job_id_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_JOB_ID_MAX, S_ALNUM | S_PUNCT);
}
