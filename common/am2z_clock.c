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

/*  True when every byte of s[0..len) is alphanumeric or in `extra`. */
static bool
s_charset_ok(const char *s, size_t len, size_t max, const char *extra)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9');
        for (const char *e = extra; !ok && *e; e++)
            ok = c == (unsigned char)*e;
        if (!ok)
            return false;
    }
    return true;
}

bool
am2z_name_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_NAME_MAX, "_.:-");
}

bool
am2z_session_id_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_SESSION_ID_MAX, "_.:@-");
}

bool
am2z_job_id_valid(const char *s, size_t len)
{
    return s_charset_ok(s, len, AM2Z_JOB_ID_MAX, "_.:-");
}
