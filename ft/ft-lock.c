/*
 * FT split-brain lock: test-and-set of a record on shared storage
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why link(2) makes this atomic, on a local file system and on NFS, is
 * explained in docs/lock-record.md.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "ft-crc32c.h"
#include "ft-lock.h"
#include "ft-proto.h"

#define LOCK_MAGIC      "qemu-ft-lock"
#define LOCK_VERSION    "1"
#define UUID_LEN        36
#define READ_MAX        4096
/* read_small(): the path is not a regular file */
#define NOT_REGULAR     (-1)

/* Text helpers */

__attribute__((format(printf, 1, 2)))
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return NULL;
    }
    s = malloc(n + 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

static void uuid_format(const uint8_t id[16], char out[UUID_LEN + 1])
{
    char *p = out;
    int i;

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *p++ = '-';
        }
        p += sprintf(p, "%02x", id[i]);
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;              /* upper case is not canonical */
}

/* Exactly @digits lowercase hex digits. */
static bool parse_hex(const char *s, size_t len, size_t digits,
                      uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len != digits) {
        return false;
    }
    for (i = 0; i < len; i++) {
        int d = hex_digit(s[i]);

        if (d < 0) {
            return false;
        }
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

static bool parse_uuid(const char *s, size_t len, uint8_t id[16])
{
    size_t i, n = 0;
    int hi, lo;

    if (len != UUID_LEN) {
        return false;
    }
    for (i = 0; i < UUID_LEN; i += 2) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
            i++;
        }
        hi = hex_digit(s[i]);
        lo = hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        id[n++] = hi << 4 | lo;
    }
    return n == 16;
}

/* Canonical decimal: digits only, no leading zero, at most @max. */
static bool parse_dec(const char *s, size_t len, uint64_t max,
                      uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || (len > 1 && s[0] == '0')) {
        return false;
    }
    for (i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';

        if (d > 9 || v > (max - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    uint64_t mag;

    if (len > 1 && s[0] == '-') {
        if (!parse_dec(s + 1, len - 1, (uint64_t)INT64_MAX + 1, &mag) ||
            mag == 0) {
            return false;
        }
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
        return true;
    }
    if (!parse_dec(s, len, INT64_MAX, &mag)) {
        return false;
    }
    *out = mag;
    return true;
}

static bool host_char_ok(char c)
{
    return c > ' ' && c < 0x7f;
}

/* Copy a host name, never empty, replacing what the format refuses. */
static void host_sanitize(const char *in, char out[FT_LOCK_HOST_MAX])
{
    size_t i, n = strnlen(in, FT_LOCK_HOST_MAX - 1);

    for (i = 0; i < n; i++) {
        out[i] = host_char_ok(in[i]) ? in[i] : '_';
    }
    if (n == 0) {
        out[n++] = '_';
    }
    out[n] = 0;
}

static const char *role_name(uint8_t role)
{
    switch (role) {
    case FT_ROLE_PRIMARY:
        return "primary";
    case FT_ROLE_BACKUP:
        return "backup";
    default:
        return NULL;
    }
}

/*
 * If the line at *@pos is "<key> <value>\n" with a non-empty value,
 * return the value (and its length in *@vlen) and step past the line.
 */
static const char *take_line(const char **pos, const char *end,
                             const char *key, size_t *vlen)
{
    size_t klen = strlen(key);
    const char *p = *pos, *nl;

    if ((size_t)(end - p) <= klen || memcmp(p, key, klen) ||
        p[klen] != ' ') {
        return NULL;
    }
    p += klen + 1;
    nl = memchr(p, '\n', end - p);
    if (!nl || nl == p) {
        return NULL;
    }
    *vlen = nl - p;
    *pos = nl + 1;
    return p;
}

/* A line "<key> <canonical decimal <= max>\n". */
static bool take_dec(const char **pos, const char *end, const char *key,
                     uint64_t max, uint64_t *out)
{
    size_t n;
    const char *v = take_line(pos, end, key, &n);

    return v && parse_dec(v, n, max, out);
}

/* Record format */

size_t ft_lock_format(const FtLockRecord *rec, char *buf, size_t size)
{
    char text[FT_LOCK_RECORD_MAX], uuid[UUID_LEN + 1];
    char host[FT_LOCK_HOST_MAX];
    const char *role = role_name(rec->role);
    size_t n;

    uuid_format(rec->vm_id, uuid);
    host_sanitize(rec->host, host);
    /* At most about 250 bytes: text[] cannot overflow. */
    n = snprintf(text, sizeof(text),
                 LOCK_MAGIC " " LOCK_VERSION "\n"
                 "vm %s\n"
                 "epoch %" PRIu32 "\n"
                 "role %s\n"
                 "host %s\n"
                 "pid %" PRIu32 "\n"
                 "nonce %016" PRIx64 "\n"
                 "time %" PRId64 "\n",
                 uuid, rec->epoch, role ? role : "unknown", host, rec->pid,
                 rec->nonce, rec->time_ns);
    n += snprintf(text + n, sizeof(text) - n, "crc32c %08" PRIx32 "\n",
                  ft_crc32c(0, text, n));
    if (size) {
        size_t copy = n < size ? n : size - 1;

        memcpy(buf, text, copy);
        buf[copy] = 0;
    }
    return n;
}

int ft_lock_parse(const char *buf, size_t len, FtLockRecord *rec)
{
    const char *p = buf, *end = buf + len, *v;
    FtLockRecord r;
    uint64_t num;
    size_t n, body;
    int64_t t;

    if (len > FT_LOCK_RECORD_MAX) {
        return FT_LOCK_ERR_CORRUPT;
    }
    memset(&r, 0, sizeof(r));

    v = take_line(&p, end, LOCK_MAGIC, &n);
    if (!v || n != strlen(LOCK_VERSION) || memcmp(v, LOCK_VERSION, n)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    v = take_line(&p, end, "vm", &n);
    if (!v || !parse_uuid(v, n, r.vm_id)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    if (!take_dec(&p, end, "epoch", UINT32_MAX, &num)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    r.epoch = num;
    v = take_line(&p, end, "role", &n);
    if (v && n == strlen("primary") && !memcmp(v, "primary", n)) {
        r.role = FT_ROLE_PRIMARY;
    } else if (v && n == strlen("backup") && !memcmp(v, "backup", n)) {
        r.role = FT_ROLE_BACKUP;
    } else {
        return FT_LOCK_ERR_CORRUPT;
    }
    v = take_line(&p, end, "host", &n);
    if (!v || n >= FT_LOCK_HOST_MAX) {
        return FT_LOCK_ERR_CORRUPT;
    }
    memcpy(r.host, v, n);
    while (n--) {
        if (!host_char_ok(r.host[n])) {
            return FT_LOCK_ERR_CORRUPT;
        }
    }
    if (!take_dec(&p, end, "pid", UINT32_MAX, &num)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    r.pid = num;
    v = take_line(&p, end, "nonce", &n);
    if (!v || !parse_hex(v, n, 16, &r.nonce)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    v = take_line(&p, end, "time", &n);
    if (!v || !parse_i64(v, n, &t)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    r.time_ns = t;

    body = p - buf;
    v = take_line(&p, end, "crc32c", &n);
    if (!v || !parse_hex(v, n, 8, &num) || p != end ||
        num != ft_crc32c(0, buf, body)) {
        return FT_LOCK_ERR_CORRUPT;
    }
    *rec = r;
    return 0;
}

void ft_lock_describe(const FtLockRecord *rec, char *buf, size_t size)
{
    char host[FT_LOCK_HOST_MAX], when[48];
    const char *role = role_name(rec->role);
    time_t secs = rec->time_ns / 1000000000;
    struct tm tm;

    if (rec->time_ns % 1000000000 < 0) {
        secs--;
    }
    if (!gmtime_r(&secs, &tm) ||
        !strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm)) {
        snprintf(when, sizeof(when), "%" PRId64 " ns", rec->time_ns);
    }
    host_sanitize(rec->host, host);
    snprintf(buf, size,
             "%s on host %s pid %" PRIu32 " (epoch %" PRIu32 ", written %s)",
             role ? role : "unknown role", host, rec->pid, rec->epoch, when);
}

const char *ft_lock_strerror(FtLockResult r)
{
    switch (r) {
    case FT_LOCK_WON:
        return "lock won";
    case FT_LOCK_LOST:
        return "lock held by another process or a later epoch";
    case FT_LOCK_ERR_IO:
        return "lock storage unusable";
    case FT_LOCK_ERR_CORRUPT:
        return "lock record corrupt";
    case FT_LOCK_ERR_FOREIGN:
        return "lock record belongs to another VM";
    case FT_LOCK_ERR_NOT_FILE:
        return "lock record is not a regular file (a symlink, FIFO or "
               "device was put in its place)";
    default:
        return "unknown lock result";
    }
}

/* Files */

char *ft_lock_path(const char *dir, const uint8_t vm_id[16], uint32_t epoch)
{
    char uuid[UUID_LEN + 1];

    uuid_format(vm_id, uuid);
    return str_printf("%s/ft-%s.%" PRIu32 ".lock", dir, uuid, epoch);
}

/* The epoch of a record file name "ft-<uuid>.<epoch>.lock" of @uuid. */
static bool name_epoch(const char *name, const char *uuid, uint32_t *epoch)
{
    static const char suffix[] = ".lock";
    size_t len = strlen(name), pre = 3 + UUID_LEN + 1;
    size_t slen = sizeof(suffix) - 1;
    uint64_t v;

    if (len <= pre + slen || memcmp(name, "ft-", 3) ||
        memcmp(name + 3, uuid, UUID_LEN) || name[pre - 1] != '.' ||
        strcmp(name + len - slen, suffix) ||
        !parse_dec(name + pre, len - pre - slen, UINT32_MAX, &v)) {
        return false;
    }
    *epoch = v;
    return true;
}

/* The newest epoch of @uuid's records in @dir, at least @epoch; errno. */
static int newest_epoch(const char *dir, const char *uuid, uint32_t epoch,
                        uint32_t *newest)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    uint32_t e;
    int ret;

    *newest = epoch;
    if (!d) {
        return errno;
    }
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (!de) {
            ret = errno;
            break;
        }
        if (name_epoch(de->d_name, uuid, &e) && e > *newest) {
            *newest = e;
        }
    }
    closedir(d);
    return ret;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? errno : EIO;
        }
        p += n;
        len -= n;
    }
    return 0;
}

/*
 * Read at most @size bytes of @path; errno, or NOT_REGULAR for anything
 * but a regular file.  Symlinks are not followed and nothing blocks in
 * open(): a FIFO planted at @path cannot hang the caller.
 */
static int read_small(const char *path, char *buf, size_t size, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    int ret = 0;
    struct stat st;
    ssize_t n;

    *len = 0;
    if (fd < 0) {
        return errno == ELOOP ? NOT_REGULAR : errno;
    }
    if (fstat(fd, &st) < 0) {
        ret = errno;
        close(fd);
        return ret;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return NOT_REGULAR;
    }
    while (*len < size) {
        n = read(fd, buf + *len, size - *len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            ret = errno;
            break;
        }
        if (n == 0) {
            break;
        }
        *len += n;
    }
    close(fd);
    return ret;
}

/*
 * Create @path exclusively with @data, on stable storage, and close it
 * (closed before anybody unlinks it: NFS would rename an open file to
 * .nfsXXXX instead of removing it).  Errno.
 */
static int write_new_file(const char *path, const char *data, size_t len,
                          bool replace_stale)
{
    int fd, ret;

    const int flags = O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW;

    fd = open(path, flags, 0644);
    if (fd < 0 && errno == EEXIST && replace_stale) {
        /* Left behind by an earlier attempt with our pid and nonce. */
        if (unlink(path) < 0 && errno != ENOENT) {
            return errno;
        }
        fd = open(path, flags, 0644);
    }
    if (fd < 0) {
        return errno;
    }
    ret = write_all(fd, data, len);
    if (!ret && fsync(fd) < 0) {
        ret = errno;
    }
    if (close(fd) < 0 && !ret) {
        ret = errno;
    }
    if (ret) {
        unlink(path);
    }
    return ret;
}

/* Make the directory entries we created or removed durable; errno. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

    if (fd < 0) {
        return errno;
    }
    /* Some file systems cannot fsync a directory and need not. */
    if (fsync(fd) < 0 && errno != EINVAL && errno != ENOTSUP) {
        ret = errno;
    }
    close(fd);
    return ret;
}

static FtLockResult read_record(const char *path, const uint8_t vm_id[16],
                                uint32_t epoch, FtLockRecord *out, int *err)
{
    char buf[READ_MAX];
    FtLockRecord rec;
    size_t len;

    *err = read_small(path, buf, sizeof(buf), &len);
    if (*err == NOT_REGULAR) {
        *err = 0;
        return FT_LOCK_ERR_NOT_FILE;
    }
    if (*err) {
        return FT_LOCK_ERR_IO;
    }
    if (ft_lock_parse(buf, len, &rec) < 0) {
        return FT_LOCK_ERR_CORRUPT;
    }
    if (memcmp(rec.vm_id, vm_id, sizeof(rec.vm_id))) {
        *out = rec;
        return FT_LOCK_ERR_FOREIGN;
    }
    if (rec.epoch != epoch) {
        return FT_LOCK_ERR_CORRUPT;
    }
    *out = rec;
    return FT_LOCK_WON;
}

FtLockResult ft_lock_read(const char *dir, const uint8_t vm_id[16],
                          uint32_t epoch, FtLockRecord *out, int *err)
{
    char *path = ft_lock_path(dir, vm_id, epoch);
    FtLockRecord rec;
    FtLockResult r;
    int e = ENOMEM;

    r = path ? read_record(path, vm_id, epoch, &rec, &e) : FT_LOCK_ERR_IO;
    free(path);
    if (out && (r == FT_LOCK_WON || r == FT_LOCK_ERR_FOREIGN)) {
        *out = rec;
    }
    if (err) {
        *err = r == FT_LOCK_ERR_IO ? e : 0;
    }
    return r;
}

/*
 * The test-and-set once the temporary file @tmp holds our record: the
 * later-epoch check, link(), and on EEXIST whether the record is ours.
 */
static FtLockResult link_record(const char *dir, const char *tmp,
                                const char *path, const FtLockRecord *mine,
                                FtLockRecord *found, int *err)
{
    char uuid[UUID_LEN + 1];
    struct stat st;
    uint32_t newest;
    FtLockResult r;

    uuid_format(mine->vm_id, uuid);
    *err = newest_epoch(dir, uuid, mine->epoch, &newest);
    if (*err) {
        return FT_LOCK_ERR_IO;
    }
    if (newest > mine->epoch) {
        r = ft_lock_read(dir, mine->vm_id, newest, found, err);
        return r == FT_LOCK_WON ? FT_LOCK_LOST : r;
    }
    if (link(tmp, path) == 0) {
        return FT_LOCK_WON;
    }
    if (errno != EEXIST) {
        *err = errno;
        return FT_LOCK_ERR_IO;
    }
    /*
     * EEXIST.  Over NFS the LINK may have been done by an earlier
     * transmission whose reply was lost: then the file is ours, which
     * the link count of @tmp or, failing that (attributes may come from
     * the client's cache), the nonce in the record shows.
     */
    if (stat(tmp, &st) == 0 && st.st_nlink == 2) {
        return FT_LOCK_WON;
    }
    r = read_record(path, mine->vm_id, mine->epoch, found, err);
    if (r == FT_LOCK_WON && found->nonce != mine->nonce) {
        r = FT_LOCK_LOST;
    }
    return r;
}

FtLockResult ft_lock_test_and_set(const char *dir, const FtLockRecord *mine,
                                  FtLockRecord *holder, int *err)
{
    char data[FT_LOCK_RECORD_MAX], uuid[UUID_LEN + 1];
    char *path = NULL, *tmp = NULL;
    FtLockRecord stored, found;
    FtLockResult r = FT_LOCK_ERR_IO;
    size_t len;
    int e = 0;

    if (!role_name(mine->role)) {
        e = EINVAL;
        goto out;
    }
    len = ft_lock_format(mine, data, sizeof(data));
    /* What the file holds when it is ours (the host name sanitized). */
    if (ft_lock_parse(data, len, &stored) < 0) {
        e = EINVAL;
        goto out;
    }
    uuid_format(mine->vm_id, uuid);
    path = ft_lock_path(dir, mine->vm_id, mine->epoch);
    tmp = str_printf("%s/.ft-%s.%" PRIu32 ".%ld.%016" PRIx64 ".tmp", dir,
                     uuid, mine->epoch, (long)getpid(), mine->nonce);
    if (!path || !tmp) {
        e = ENOMEM;
        goto out;
    }
    e = write_new_file(tmp, data, len, true);
    if (e) {
        goto out;
    }
    r = link_record(dir, tmp, path, mine, &found, &e);
    unlink(tmp);
    if (r == FT_LOCK_WON) {
        found = stored;
        e = sync_dir(dir);
        if (e) {
            /* A retry with the same nonce finds the record ours. */
            r = FT_LOCK_ERR_IO;
        }
    }

out:
    if (holder && (r == FT_LOCK_WON || r == FT_LOCK_LOST ||
                   r == FT_LOCK_ERR_FOREIGN)) {
        *holder = found;
    }
    if (err) {
        *err = r == FT_LOCK_ERR_IO ? e : 0;
    }
    free(path);
    free(tmp);
    return r;
}

int ft_lock_check_dir(const char *dir, const char **why)
{
    struct timespec ts;
    struct stat st;
    char *probe;
    int ret;

    if (why) {
        *why = NULL;
    }
    if (stat(dir, &st) < 0) {
        return -errno;
    }
    if (!S_ISDIR(st.st_mode)) {
        return -ENOTDIR;
    }
    if (st.st_uid != geteuid()) {
        if (why) {
            *why = "the directory is owned by another user, who could "
                   "plant or remove lock records";
        }
        return -EPERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        if (why) {
            *why = "the directory is writable by group or others, who "
                   "could plant or remove lock records (chmod go-w)";
        }
        return -EPERM;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    probe = str_printf("%s/.ft-probe.%ld.%ld", dir, (long)getpid(),
                       (long)ts.tv_nsec);
    if (!probe) {
        return -ENOMEM;
    }
    ret = write_new_file(probe, "probe\n", 6, false);
    if (!ret && unlink(probe) < 0) {
        ret = errno;
    }
    free(probe);
    return -ret;
}

int ft_lock_new_nonce(uint64_t *nonce)
{
    ssize_t n;

    do {
        n = getrandom(nonce, sizeof(*nonce), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    return n == sizeof(*nonce) ? 0 : -EIO;
}
