/* Unit tests for ft/ft-lock.c */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ft-crc32c.h"
#include "ft-lock.h"
#include "tap.h"

#define EPOCH 3
#define NRACERS 8
#define NROUNDS 10

static const uint8_t vm_a[16] = {
    0x6b, 0x1c, 0x3c, 0x8e, 0x52, 0x0d, 0x4f, 0x11,
    0x9a, 0x27, 0xc4, 0x05, 0xe3, 0x7f, 0x80, 0x61,
};
static const uint8_t vm_b[16] = {
    0x00, 0xff, 0x10, 0xef, 0x20, 0xdf, 0x30, 0xcf,
    0x40, 0xbf, 0x50, 0xaf, 0x60, 0x9f, 0x70, 0x8f,
};
#define VM_A_UUID "6b1c3c8e-520d-4f11-9a27-c405e37f8061"

static FtLockRecord record(const uint8_t *vm, uint32_t epoch, uint8_t role,
                           uint64_t nonce)
{
    FtLockRecord r = {
        .epoch = epoch, .role = role, .nonce = nonce, .pid = 1234,
        .time_ns = 1795000000123456789LL,
    };

    memcpy(r.vm_id, vm, 16);
    strcpy(r.host, "hostb");
    return r;
}

static bool same(const FtLockRecord *a, const FtLockRecord *b)
{
    return !memcmp(a->vm_id, b->vm_id, 16) && a->epoch == b->epoch &&
           a->role == b->role && a->nonce == b->nonce && a->pid == b->pid &&
           a->time_ns == b->time_ns && !strcmp(a->host, b->host);
}

/* Parse the good record of @rec with @from replaced by @to, re-sealed. */
static int parse_edited(const FtLockRecord *rec, const char *from,
                        const char *to)
{
    char in[2048], out[2048], *hit, *crc;
    FtLockRecord r;
    size_t body;

    ft_lock_format(rec, in, sizeof(in));
    hit = strstr(in, from);
    if (!hit) {
        return 99;
    }
    snprintf(out, sizeof(out), "%.*s%s%s", (int)(hit - in), in, to,
             hit + strlen(from));
    crc = strstr(out, "crc32c ");
    if (crc) {
        body = crc - out;
        sprintf(crc, "crc32c %08x\n", ft_crc32c(0, out, body));
    }
    return ft_lock_parse(out, strlen(out), &r);
}

/* Entries of @dir whose names start with @prefix ("" counts all). */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            !strncmp(de->d_name, prefix, strlen(prefix))) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static bool no_temp_files(const char *dir)
{
    return count_entries(dir, ".") == 0;
}

static void put_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);

    if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
        perror(path);
        exit(2);
    }
    close(fd);
}

static size_t get_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, size);

    if (fd >= 0) {
        close(fd);
    }
    return n < 0 ? 0 : n;
}

static char *new_dir(void)
{
    const char *base = getenv("TMPDIR");
    static char name[4096];
    char *dir;

    snprintf(name, sizeof(name), "%s/test-ft-lock.XXXXXX",
             base && *base ? base : "/tmp");
    dir = mkdtemp(name);
    if (!dir) {
        perror("mkdtemp");
        exit(2);
    }
    return strdup(dir);
}

static void remove_dir(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[4096];

    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static void test_format(void)
{
    FtLockRecord a = record(vm_a, EPOCH, 2, 0x0123456789abcdefull), b;
    char buf[2048], small[20], edited[2048];
    size_t len, i;
    int ok;

    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(len == strlen(buf) && len < FT_LOCK_RECORD_MAX &&
          !strncmp(buf, "qemu-ft-lock 1\nvm " VM_A_UUID "\nepoch 3\n"
                   "role backup\nhost hostb\npid 1234\n"
                   "nonce 0123456789abcdef\ntime 1795000000123456789\n"
                   "crc32c ", len - 16),
          "format writes the documented text");
    CHECK(ft_lock_parse(buf, len, &b) == 0 && same(&a, &b),
          "format/parse round trip");
    CHECK(ft_lock_format(&a, small, sizeof(small)) == len &&
          strlen(small) == sizeof(small) - 1 &&
          !strncmp(small, buf, sizeof(small) - 1),
          "format truncates like snprintf");

    a = record(vm_b, UINT32_MAX, 1, UINT64_MAX);
    a.pid = UINT32_MAX;
    a.time_ns = INT64_MIN;
    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(ft_lock_parse(buf, len, &b) == 0 && same(&a, &b),
          "extreme values round trip");
    a.time_ns = INT64_MAX;
    a.nonce = 0;
    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(ft_lock_parse(buf, len, &b) == 0 && same(&a, &b),
          "zero nonce and largest time round trip");

    strcpy(a.host, "a b\tc\x01\xc3\xa9");
    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(ft_lock_parse(buf, len, &b) == 0 && !strcmp(b.host, "a_b_c___"),
          "host names are sanitized: %s", b.host);
    a.host[0] = 0;
    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(ft_lock_parse(buf, len, &b) == 0 && !strcmp(b.host, "_"),
          "an empty host name becomes _");
    memset(a.host, 'h', sizeof(a.host));
    len = ft_lock_format(&a, buf, sizeof(buf));
    CHECK(ft_lock_parse(buf, len, &b) == 0 &&
          strlen(b.host) == FT_LOCK_HOST_MAX - 1,
          "an unterminated host name is cut");

    /* Corruption */
    a = record(vm_a, EPOCH, 1, 42);
    len = ft_lock_format(&a, buf, sizeof(buf));
    ok = 1;
    for (i = 0; i < len; i++) {
        memcpy(edited, buf, len);
        edited[i] ^= 0x01;
        ok &= ft_lock_parse(edited, len, &b) == FT_LOCK_ERR_CORRUPT;
        edited[i] ^= 0x21;
        ok &= ft_lock_parse(edited, len, &b) == FT_LOCK_ERR_CORRUPT;
    }
    CHECK(ok, "any flipped byte is refused");
    ok = 1;
    for (i = 0; i < len; i++) {
        ok &= ft_lock_parse(buf, i, &b) == FT_LOCK_ERR_CORRUPT;
    }
    CHECK(ok, "any truncation is refused");
    memcpy(edited, buf, len);
    memcpy(edited + len, "x", 1);
    CHECK(ft_lock_parse(edited, len + 1, &b) == FT_LOCK_ERR_CORRUPT,
          "trailing garbage refused");
    memcpy(edited + len, "\n", 1);
    CHECK(ft_lock_parse(edited, len + 1, &b) == FT_LOCK_ERR_CORRUPT,
          "trailing newline refused");
    memset(edited, ' ', sizeof(edited));
    memcpy(edited, buf, len);
    CHECK(ft_lock_parse(edited, FT_LOCK_RECORD_MAX + 1, &b) ==
          FT_LOCK_ERR_CORRUPT, "records over 1 KiB refused");

    /* Edits with a valid checksum: the checks behind the CRC. */
    CHECK(parse_edited(&a, "pid", "pid") == 0, "re-sealing works");
    CHECK(parse_edited(&a, "qemu-ft-lock 1", "qemu-ft-lock 2") ==
          FT_LOCK_ERR_CORRUPT, "unknown version refused");
    CHECK(parse_edited(&a, "qemu-ft-lock", "qemu-ft-lick") ==
          FT_LOCK_ERR_CORRUPT, "wrong magic refused");
    CHECK(parse_edited(&a, "pid 1234\n", "") == FT_LOCK_ERR_CORRUPT,
          "missing line refused");
    CHECK(parse_edited(&a, "pid 1234\n", "pid 1234\npid 1234\n") ==
          FT_LOCK_ERR_CORRUPT, "repeated line refused");
    CHECK(parse_edited(&a, "pid 1234\n", "pid 1234\nextra 1\n") ==
          FT_LOCK_ERR_CORRUPT, "unknown line refused");
    CHECK(parse_edited(&a, "crc32c", "crc32x") == FT_LOCK_ERR_CORRUPT,
          "missing checksum line refused");
    ok = parse_edited(&a, "epoch 3", "epoch 03") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "epoch 3", "epoch -3") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "epoch 3", "epoch 4294967296") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "epoch 3", "epoch 3x") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "epoch 3", "epoch ") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "pid 1234", "pid +1234") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "time 1", "time -01") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "time 1795000000123456789",
                      "time 9223372036854775808") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "time 1795000000123456789", "time -0") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "nonce 000000000000002a",
                      "nonce 000000000000002A") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "nonce 000000000000002a", "nonce 2a") ==
         FT_LOCK_ERR_CORRUPT;
    CHECK(ok, "bad numbers refused");
    ok = parse_edited(&a, "vm 6b1c3c8e-", "vm 6b1c3c8e_") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "vm 6b", "vm 6B") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "role primary", "role witness") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "host hostb", "host host b") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "host hostb", "host host\tb") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "host hostb", "host host\x7f") ==
         FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "host hostb", "host ") == FT_LOCK_ERR_CORRUPT &&
         parse_edited(&a, "\n", "\r\n") == FT_LOCK_ERR_CORRUPT;
    CHECK(ok, "bad uuid, role, host names and line ends refused");
}

static void test_strings(void)
{
    FtLockRecord a = record(vm_a, EPOCH, 2, 1);
    char buf[200], *path;

    path = ft_lock_path("/shared/ft", vm_a, 17);
    CHECK(path && !strcmp(path, "/shared/ft/ft-" VM_A_UUID ".17.lock"),
          "lock path: %s", path);
    free(path);
    a.pid = 1234;
    ft_lock_describe(&a, buf, sizeof(buf));
    CHECK(!strcmp(buf, "backup on host hostb pid 1234 (epoch 3, written "
                  "2026-11-18T11:06:40Z)"), "describe: %s", buf);
    a.role = 1;
    a.time_ns = -1;
    ft_lock_describe(&a, buf, sizeof(buf));
    CHECK(strstr(buf, "primary on") == buf &&
          strstr(buf, "1969-12-31T23:59:59Z"), "describe: %s", buf);
    ft_lock_describe(&a, buf, 10);
    CHECK(strlen(buf) == 9, "describe truncates");
    CHECK(strcmp(ft_lock_strerror(FT_LOCK_WON),
                 ft_lock_strerror(FT_LOCK_LOST)) &&
          strcmp(ft_lock_strerror(FT_LOCK_ERR_IO),
                 ft_lock_strerror(FT_LOCK_ERR_CORRUPT)) &&
          strcmp(ft_lock_strerror(FT_LOCK_ERR_FOREIGN),
                 ft_lock_strerror(FT_LOCK_ERR_CORRUPT)) &&
          ft_lock_strerror((FtLockResult)7) != NULL, "strerror");
}

static void test_check_dir(void)
{
    char *dir = new_dir(), path[4200];
    const char *why = "unset";

    CHECK(ft_lock_check_dir(dir, &why) == 0 && !why &&
          count_entries(dir, "") == 0,
          "check_dir accepts a writable directory and leaves nothing");
    snprintf(path, sizeof(path), "%s/missing", dir);
    CHECK(ft_lock_check_dir(path, NULL) == -ENOENT, "check_dir: missing dir");
    put_file(path, "x", 1);
    CHECK(ft_lock_check_dir(path, &why) == -ENOTDIR && !why,
          "check_dir: a file");
    unlink(path);

    chmod(dir, 0770);
    CHECK(ft_lock_check_dir(dir, &why) == -EPERM && why &&
          strstr(why, "group or others"), "check_dir: group-writable: %s",
          why);
    chmod(dir, 0703);
    CHECK(ft_lock_check_dir(dir, &why) == -EPERM && why &&
          strstr(why, "group or others"), "check_dir: other-writable");
    chmod(dir, 01777);
    CHECK(ft_lock_check_dir(dir, NULL) == -EPERM,
          "check_dir: sticky but world-writable (like /tmp)");
    chmod(dir, 0755);
    CHECK(ft_lock_check_dir(dir, NULL) == 0, "check_dir: 0755 is fine");
    if (geteuid() == 0) {
        CHECK(chown(dir, 65534, 65534) == 0 &&
              ft_lock_check_dir(dir, &why) == -EPERM && why &&
              strstr(why, "another user"),
              "check_dir: owned by another user: %s", why);
        CHECK(chown(dir, 0, 0) == 0, "chown back");
    } else {
        CHECK(ft_lock_check_dir("/", &why) == -EPERM && why &&
              strstr(why, "another user"),
              "check_dir: owned by another user (/)");
    }
    remove_dir(dir);
}

/*
 * Something else than a regular file at the record's path: never
 * followed or opened further, and never a hang (the alarm fails the
 * test if open() blocks on a FIFO).
 */
static void test_not_a_file(void)
{
    char *dir = new_dir(), *path, *elsewhere;
    FtLockRecord p = record(vm_a, EPOCH, 1, 1), h, r;
    int err;

    path = ft_lock_path(dir, vm_a, EPOCH);
    alarm(20);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo");
    CHECK(ft_lock_read(dir, vm_a, EPOCH, &r, &err) == FT_LOCK_ERR_NOT_FILE &&
          err == 0, "read: a FIFO is refused, without blocking");
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_ERR_NOT_FILE,
          "test-and-set: a FIFO in our place is neither won nor lost");
    CHECK(no_temp_files(dir), "no temporary file left");
    unlink(path);

    /* A symlink to a record that would win: not followed */
    elsewhere = malloc(strlen(dir) + 20);
    sprintf(elsewhere, "%s/elsewhere", dir);
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_WON &&
          rename(path, elsewhere) == 0 && symlink(elsewhere, path) == 0,
          "a symlink to our own record");
    CHECK(ft_lock_read(dir, vm_a, EPOCH, &r, &err) == FT_LOCK_ERR_NOT_FILE,
          "read: a symlink is not followed");
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_ERR_NOT_FILE,
          "test-and-set: a symlink in our place is not taken as ours");
    unlink(path);

    /* A directory in our place */
    CHECK(mkdir(path, 0700) == 0 &&
          ft_lock_read(dir, vm_a, EPOCH, &r, &err) == FT_LOCK_ERR_NOT_FILE,
          "read: a directory is refused");
    rmdir(path);
    alarm(0);
    CHECK(strstr(ft_lock_strerror(FT_LOCK_ERR_NOT_FILE), "regular file"),
          "strerror names it");
    free(elsewhere);
    free(path);
    remove_dir(dir);
}

static void test_nonce(void)
{
    uint64_t a = 0, b = 0;

    CHECK(ft_lock_new_nonce(&a) == 0 && ft_lock_new_nonce(&b) == 0 && a != b,
          "two nonces from getrandom() differ");
}

static void test_single(void)
{
    char *dir = new_dir(), *path, *tmp, data[4096], after[4096];
    FtLockRecord p = record(vm_a, EPOCH, 1, 1), b = record(vm_a, EPOCH, 2, 2);
    FtLockRecord h, r;
    size_t len;
    int err;

    CHECK(ft_lock_read(dir, vm_a, EPOCH, &r, &err) == FT_LOCK_ERR_IO &&
          err == ENOENT, "read: no record");
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_WON &&
          err == 0 && same(&h, &p), "first caller wins");
    CHECK(no_temp_files(dir) && count_entries(dir, "") == 1,
          "one file, no temporary file left");
    CHECK(ft_lock_read(dir, vm_a, EPOCH, &r, &err) == FT_LOCK_WON &&
          err == 0 && same(&r, &p), "read: the winner's record");
    memset(&h, 0, sizeof(h));
    CHECK(ft_lock_test_and_set(dir, &b, &h, &err) == FT_LOCK_LOST &&
          err == 0 && same(&h, &p), "second caller loses, sees the first");
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_WON &&
          same(&h, &p), "the winner again (same nonce) wins");
    CHECK(ft_lock_test_and_set(dir, &b, NULL, NULL) == FT_LOCK_LOST,
          "holder and err may be NULL");
    CHECK(no_temp_files(dir), "no temporary file left");

    /* Our temporary file left behind by an earlier attempt. */
    tmp = malloc(strlen(dir) + 100);
    sprintf(tmp, "%s/.ft-" VM_A_UUID ".%d.%ld.%016x.tmp", dir, EPOCH + 7,
            (long)getpid(), 5);
    put_file(tmp, "x", 1);
    r = record(vm_a, EPOCH + 7, 1, 5);
    CHECK(ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_WON &&
          no_temp_files(dir), "a stale temporary file of ours is replaced");
    free(tmp);

    /* A later epoch */
    r = record(vm_a, EPOCH + 8, 2, 3);
    CHECK(ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_WON,
          "a record for an epoch does not affect the next one");
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_LOST &&
          err == 0 && same(&h, &r), "the old winner loses to a later epoch");
    r.epoch = EPOCH - 1;
    r.nonce = 4;
    CHECK(ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_LOST &&
          h.epoch == EPOCH + 8 && h.nonce == 3,
          "an older epoch loses to the newest record");
    CHECK(ft_lock_read(dir, vm_a, EPOCH - 1, NULL, &err) == FT_LOCK_ERR_IO &&
          err == ENOENT && no_temp_files(dir),
          "nothing written for a lost older epoch");

    p.role = 3;
    p.epoch = 100;
    CHECK(ft_lock_test_and_set(dir, &p, &h, &err) == FT_LOCK_ERR_IO &&
          err == EINVAL && count_entries(dir, "") == 3,
          "invalid role refused");

    /* Corrupt newest record */
    path = ft_lock_path(dir, vm_a, 1000);
    put_file(path, "garbage\n", 8);
    r.epoch = 999;
    CHECK(ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_ERR_CORRUPT &&
          err == 0, "a corrupt later record: corrupt");
    r.epoch = 1000;
    CHECK(ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_ERR_CORRUPT &&
          err == 0, "a corrupt record at our path: corrupt");
    CHECK(get_file(path, data, sizeof(data)) == 8 &&
          !memcmp(data, "garbage\n", 8) && no_temp_files(dir),
          "the corrupt record is left alone");

    /* Oversized record */
    len = ft_lock_format(&r, data, sizeof(data));
    memset(data + len, ' ', 2000);
    put_file(path, data, len + 2000);
    CHECK(ft_lock_read(dir, vm_a, 1000, &h, &err) == FT_LOCK_ERR_CORRUPT,
          "a file over 1 KiB is corrupt");
    /* A record of another epoch under this epoch's name */
    r.epoch = 1001;
    len = ft_lock_format(&r, data, sizeof(data));
    put_file(path, data, len);
    r.epoch = 1000;
    CHECK(ft_lock_read(dir, vm_a, 1000, &h, &err) == FT_LOCK_ERR_CORRUPT &&
          ft_lock_test_and_set(dir, &r, &h, &err) == FT_LOCK_ERR_CORRUPT,
          "a record of another epoch is corrupt");
    CHECK(get_file(path, after, sizeof(after)) == len &&
          !memcmp(after, data, len) && no_temp_files(dir),
          "and is left alone");
    free(path);
    remove_dir(dir);
}

static void test_foreign(void)
{
    char *dir = new_dir(), *pa, *pb, data[4096], after[4096];
    FtLockRecord a = record(vm_a, EPOCH, 1, 1), b = record(vm_b, EPOCH, 2, 2);
    FtLockRecord h;
    size_t len;
    int err;

    CHECK(ft_lock_test_and_set(dir, &b, &h, &err) == FT_LOCK_WON,
          "another VM wins its own lock");
    pa = ft_lock_path(dir, vm_a, EPOCH);
    pb = ft_lock_path(dir, vm_b, EPOCH);
    len = get_file(pb, data, sizeof(data));
    put_file(pa, data, len);
    memset(&h, 0, sizeof(h));
    CHECK(ft_lock_test_and_set(dir, &a, &h, &err) == FT_LOCK_ERR_FOREIGN &&
          err == 0 && same(&h, &b), "another VM's record at our name");
    CHECK(ft_lock_read(dir, vm_a, EPOCH, &h, &err) == FT_LOCK_ERR_FOREIGN,
          "read: foreign");
    CHECK(get_file(pa, after, sizeof(after)) == len &&
          !memcmp(after, data, len) && no_temp_files(dir),
          "the foreign record is left alone");
    a.epoch = EPOCH - 1;
    CHECK(ft_lock_test_and_set(dir, &a, &h, &err) == FT_LOCK_ERR_FOREIGN,
          "a foreign record at a later epoch's name");
    free(pa);
    free(pb);
    remove_dir(dir);
}

static void test_bad_dir(void)
{
    char *dir = new_dir(), path[4200];
    FtLockRecord a = record(vm_a, EPOCH, 1, 1), h;
    struct stat st;
    int err;

    snprintf(path, sizeof(path), "%s/missing", dir);
    CHECK(ft_lock_test_and_set(path, &a, &h, &err) == FT_LOCK_ERR_IO &&
          err == ENOENT && stat(path, &st) < 0,
          "missing directory: I/O error ENOENT");
    CHECK(ft_lock_read(path, vm_a, EPOCH, &h, &err) == FT_LOCK_ERR_IO &&
          err == ENOENT, "read in a missing directory: ENOENT");
    if (geteuid() == 0) {
        CHECK(1, "read-only directory # SKIP root ignores permissions");
    } else {
        chmod(dir, 0555);
        CHECK(ft_lock_test_and_set(dir, &a, &h, &err) == FT_LOCK_ERR_IO &&
              err == EACCES, "read-only directory: EACCES");
        CHECK(ft_lock_check_dir(dir, NULL) == -EACCES, "check_dir: read-only");
        chmod(dir, 0755);
    }
    CHECK(count_entries(dir, "") == 0, "nothing left behind");
    remove_dir(dir);
}

typedef struct RaceResult {
    int result;
    uint64_t nonce;
    uint64_t holder_nonce;
} RaceResult;

/* NRACERS processes race on one epoch; returns whether all went right. */
static bool race(const char *dir, uint32_t epoch)
{
    int go[2], res[2], i, won = 0, lost_ok = 0, status;
    RaceResult rr[NRACERS];
    uint64_t winner = 0;
    FtLockRecord h;
    pid_t pid;

    if (pipe(go) < 0 || pipe(res) < 0) {
        return false;
    }
    fflush(stdout);
    for (i = 0; i < NRACERS; i++) {
        pid = fork();
        if (pid == 0) {
            FtLockRecord me = record(vm_a, epoch, 1 + i % 2,
                                     0xfeed000000000000ull + epoch * 100 + i);
            RaceResult out = { .nonce = me.nonce };
            char c;

            me.pid = getpid();
            close(go[1]);
            close(res[0]);
            while (read(go[0], &c, 1) < 0 && errno == EINTR) {
                continue;
            }
            out.result = ft_lock_test_and_set(dir, &me, &h, NULL);
            out.holder_nonce = h.nonce;
            _exit(write(res[1], &out, sizeof(out)) == sizeof(out) ? 0 : 1);
        }
    }
    close(go[0]);
    close(res[1]);
    close(go[1]);           /* start them all at once */
    for (i = 0; i < NRACERS; i++) {
        if (read(res[0], &rr[i], sizeof(rr[i])) != sizeof(rr[i])) {
            rr[i].result = 99;
        }
    }
    close(res[0]);
    while (wait(&status) > 0) {
        continue;
    }
    for (i = 0; i < NRACERS; i++) {
        if (rr[i].result == FT_LOCK_WON) {
            won++;
            winner = rr[i].nonce;
        }
    }
    for (i = 0; i < NRACERS; i++) {
        lost_ok += rr[i].result == FT_LOCK_LOST &&
                   rr[i].holder_nonce == winner;
    }
    return won == 1 && lost_ok == NRACERS - 1 &&
           ft_lock_read(dir, vm_a, epoch, &h, NULL) == FT_LOCK_WON &&
           h.nonce == winner;
}

static void test_race(void)
{
    char *dir = new_dir();
    int round, ok = 1;

    for (round = 1; round <= NROUNDS; round++) {
        ok &= race(dir, round);
    }
    CHECK(ok, "%d rounds of %d processes racing: one winner each, the "
          "others lose to it", NROUNDS, NRACERS);
    CHECK(no_temp_files(dir) && count_entries(dir, "") == NROUNDS,
          "one record per epoch, no temporary file left");
    remove_dir(dir);
}

int main(void)
{
    test_format();
    test_strings();
    test_check_dir();
    test_not_a_file();
    test_nonce();
    test_single();
    test_foreign();
    test_bad_dir();
    test_race();
    return tap_done();
}
