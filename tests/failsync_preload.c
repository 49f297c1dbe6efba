/*  failsync_preload.c — an LD_PRELOAD shim for fault tests: fdatasync(2)
    and fsync(2) fail with EIO while the file named by AM2Z_FAILSYNC_FILE
    exists, and behave normally otherwise. It stands in for a disk that
    starts failing its flushes (what the kernel reports after a write-back
    error), which no unprivileged test can cause on a real device. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int
s_failing(void)
{
    const char *path = getenv("AM2Z_FAILSYNC_FILE");
    return path && *path && access(path, F_OK) == 0;
}

int
fdatasync(int fd)
{
    if (s_failing()) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real ? real(fd) : (errno = ENOSYS, -1);
}

int
fsync(int fd)
{
    if (s_failing()) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real ? real(fd) : (errno = ENOSYS, -1);
}
