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

/*  Fails (EIO) while the trigger file exists, else calls libc's `name`. */
static int
s_flush(const char *name, int fd)
{
    const char *path = getenv("AM2Z_FAILSYNC_FILE");
    if (path && *path && access(path, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd);
}

int
fdatasync(int fd)
{
    return s_flush("fdatasync", fd);
}

int
fsync(int fd)
{
    return s_flush("fsync", fd);
}
