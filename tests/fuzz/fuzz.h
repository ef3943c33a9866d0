/*
 * The entry points libFuzzer calls in a target.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef FT_FUZZ_H
#define FT_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
