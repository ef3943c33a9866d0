/*
 * FT split-brain lock: test-and-set of a record on shared storage
 *
 * Copyright (c) 2026 The qemu-ft authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * When the primary and the backup lose each other, each may try to go
 * live.  Before that, it must win the test-and-set for its epoch (the
 * stream generation): it creates the one file "ft-<uuid>.<epoch>.lock"
 * in a directory both hosts share, atomically, with link(2).  The first
 * side to create it wins; everybody else loses, and so does everybody
 * in an epoch older than the newest file of the VM.  Nothing here ever
 * overwrites or deletes a record.  See docs/lock-record.md.
 *
 * Self-contained (libc and POSIX only, no QEMU headers) so that it is
 * unit-tested without building QEMU.
 */

#ifndef FT_LOCK_H
#define FT_LOCK_H

#include <stddef.h>
#include <stdint.h>

#define FT_LOCK_HOST_MAX 64

/* Records are small text files; anything larger is refused. */
#define FT_LOCK_RECORD_MAX 1024

typedef struct FtLockRecord {
    uint8_t vm_id[16];      /* the VM's UUID (-uuid) */
    uint32_t epoch;         /* stream generation */
    uint8_t role;           /* 1 primary, 2 backup (FtRole values) */
    uint64_t nonce;         /* random, unique per process and attempt */
    uint32_t pid;
    int64_t time_ns;        /* wall clock (CLOCK_REALTIME) when written */
    char host[FT_LOCK_HOST_MAX];   /* gethostname(), NUL-terminated */
} FtLockRecord;

typedef enum FtLockResult {
    /* the record for this epoch is ours */
    FT_LOCK_WON = 0,
    /* somebody else holds this or a later epoch; *holder says who */
    FT_LOCK_LOST = 1,
    /*
     * the storage could not be used (ENOENT dir, EIO, EROFS, ESTALE,
     * EACCES...): retry later, with the same record; *err = errno
     */
    FT_LOCK_ERR_IO = -1,
    /* a record exists but cannot be parsed or its checksum is wrong */
    FT_LOCK_ERR_CORRUPT = -2,
    /* a record in our file name belongs to another VM id */
    FT_LOCK_ERR_FOREIGN = -3,
    /* our file name is a symlink, FIFO, device...: never opened further */
    FT_LOCK_ERR_NOT_FILE = -4,
} FtLockResult;

/*
 * File name of the record for (@vm_id, @epoch) inside @dir:
 * "<dir>/ft-<uuid>.<epoch>.lock" with the uuid in canonical 8-4-4-4-12
 * lowercase hex.  Returns a malloc'd string, NULL if out of memory.
 */
char *ft_lock_path(const char *dir, const uint8_t vm_id[16], uint32_t epoch);

/*
 * Atomic test-and-set.  Writes *@mine to a temporary file in @dir (its
 * name starts with ".ft-<uuid>.<epoch>." and contains the pid and the
 * nonce; created O_CREAT|O_EXCL|O_WRONLY, 0644, written fully, fsync'ed),
 * then link()s it to ft_lock_path(); unlinks the temporary file in every
 * case.
 *
 * FT_LOCK_WON if link() succeeds, or if it fails with EEXIST but the
 * temporary file's st_nlink is 2 or the existing record carries our
 * nonce (a lost reply to a retransmitted NFS LINK, or a retry after
 * FT_LOCK_ERR_IO).
 *
 * Before linking, scans @dir for records of the same VM with a LATER
 * epoch: if there is one, returns FT_LOCK_LOST with *@holder = the newest
 * of them (FT_LOCK_ERR_CORRUPT or FT_LOCK_ERR_FOREIGN if it cannot be
 * used).  On EEXIST, reads the existing record: FT_LOCK_LOST with
 * *@holder filled, or FT_LOCK_ERR_CORRUPT / FT_LOCK_ERR_FOREIGN.
 *
 * *@holder (may be NULL) is filled for WON (our record as stored), LOST,
 * and FOREIGN (the foreign record).  *@err (may be NULL) gets an errno
 * for FT_LOCK_ERR_IO, 0 otherwise; EINVAL if *@mine has no valid role.
 * Never overwrites or deletes an existing record.
 */
FtLockResult ft_lock_test_and_set(const char *dir, const FtLockRecord *mine,
                                  FtLockRecord *holder, int *err);

/*
 * Read the record for (@vm_id, @epoch).  FT_LOCK_WON if it exists and
 * parses (*@out filled), FT_LOCK_ERR_IO with *@err = ENOENT if there is
 * none (other errno values for other failures), FT_LOCK_ERR_CORRUPT if it
 * does not parse or holds another epoch, FT_LOCK_ERR_FOREIGN (*@out
 * filled) if it belongs to another VM.  @err may be NULL.
 */
FtLockResult ft_lock_read(const char *dir, const uint8_t vm_id[16],
                          uint32_t epoch, FtLockRecord *out, int *err);

/*
 * Check that @dir exists, is a directory and is writable (creates,
 * writes, fsyncs and removes a probe file), and that only its owner,
 * who must be this process's user, can write to it: anybody else who
 * can could plant or remove records.  0, or a negative errno and
 * *@why (may be NULL) a reason when errno alone would not say it.
 */
int ft_lock_check_dir(const char *dir, const char **why);

/* A fresh nonce from getrandom(); 0 or a negative errno. */
int ft_lock_new_nonce(uint64_t *nonce);

/*
 * Serialize one record into @buf, at most @size bytes including the
 * terminating NUL.  Returns the length of the record without the NUL;
 * like snprintf(), a result >= @size means the output was truncated.
 * Host name characters other than printable non-blank ASCII become '_'.
 */
size_t ft_lock_format(const FtLockRecord *rec, char *buf, size_t size);

/* Parse one record of @len bytes: 0 or FT_LOCK_ERR_CORRUPT. */
int ft_lock_parse(const char *buf, size_t len, FtLockRecord *rec);

/*
 * Human-readable one-liner into @buf, e.g. "backup on host hostb pid 1234
 * (epoch 3, written 2026-11-23T14:01:02Z)".
 */
void ft_lock_describe(const FtLockRecord *rec, char *buf, size_t size);

const char *ft_lock_strerror(FtLockResult r);

#endif
