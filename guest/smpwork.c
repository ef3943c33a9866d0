/*
 * smpwork: keep every vCPU of the test guest busy, with threads that
 * share memory and a lock, for the multi-vCPU lockstep tests.
 *
 *   smpwork THREADS ROUNDS EPOCHS
 *
 * THREADS threads (0: one per online CPU), each pinned to a CPU in turn.
 * In each round a thread hashes a private buffer (the CPU job), then
 * adds part of it into a shared table under a mutex, and bumps a shared
 * counter with an atomic add.  After each epoch of ROUNDS rounds, the
 * main thread prints
 *
 *   SMP epoch <n> rounds=<r> result=<hex> ok|BAD
 *
 * where the result is order-independent (a sum): it is the same on
 * every run, so two consoles can be compared; "BAD" means the lock or
 * the atomic lost an update.  EPOCHS 0 runs for ever.
 *
 * Copyright (c) 2026 The QEMU-FT authors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PRIV_WORDS 4096
#define SHARED_WORDS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t shared[SHARED_WORDS];   /* under lock */
static uint64_t locked_count;           /* under lock */
static uint64_t atomic_count;           /* atomic adds only */
static long rounds;
static long ncpus;

static void *worker(void *arg)
{
    long id = (long)arg;
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
    static __thread uint64_t priv[PRIV_WORDS];
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(id % ncpus, &set);
    sched_setaffinity(0, sizeof(set), &set);

    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < PRIV_WORDS; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            priv[i] += x;
        }
        pthread_mutex_lock(&lock);
        for (int i = 0; i < SHARED_WORDS; i++) {
            shared[i] += priv[i * (PRIV_WORDS / SHARED_WORDS)];
        }
        locked_count++;
        pthread_mutex_unlock(&lock);
        __atomic_fetch_add(&atomic_count, 1, __ATOMIC_SEQ_CST);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 0;
    long epochs = argc > 3 ? atol(argv[3]) : 1;
    pthread_t *tids;

    rounds = argc > 2 ? atol(argv[2]) : 100;
    ncpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpus < 1) {
        ncpus = 1;
    }
    if (threads <= 0) {
        threads = ncpus;
    }
    tids = calloc(threads, sizeof(*tids));
    if (!tids) {
        return 1;
    }
    printf("SMP start threads=%ld cpus=%ld rounds=%ld\n", threads, ncpus,
           rounds);
    fflush(stdout);
    for (long e = 1; epochs == 0 || e <= epochs; e++) {
        uint64_t sum = 0;
        int ok;

        memset(shared, 0, sizeof(shared));
        locked_count = 0;
        atomic_count = 0;
        for (long t = 0; t < threads; t++) {
            if (pthread_create(&tids[t], NULL, worker, (void *)t)) {
                perror("pthread_create");
                return 1;
            }
        }
        for (long t = 0; t < threads; t++) {
            pthread_join(tids[t], NULL);
        }
        for (int i = 0; i < SHARED_WORDS; i++) {
            sum = sum * 31 + shared[i];
        }
        ok = locked_count == (uint64_t)(threads * rounds) &&
             atomic_count == (uint64_t)(threads * rounds);
        printf("SMP epoch %ld rounds=%" PRIu64 " result=%016" PRIx64 " %s\n",
               e, locked_count, sum, ok ? "ok" : "BAD");
        fflush(stdout);
    }
    return 0;
}
