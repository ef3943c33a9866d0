/*
 * libFuzzer target: the FT logging channel frame decoder must never
 * crash, read out of bounds, loop, or deliver a frame whose checksum
 * does not match, whatever bytes arrive and however they are split.
 */
#include <assert.h>
#include <string.h>
#include "ft-crc32c.h"
#include "ft-frame.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FtFrameDecoder d;
    size_t pos = 0, chunk;

    if (size < 1) {
        return 0;
    }
    /* First byte chooses the chunking, to exercise partial feeds. */
    chunk = 1 + data[0] % 64;
    data++;
    size--;
    ft_frame_decoder_init(&d, 4096);
    while (pos < size) {
        size_t n = size - pos < chunk ? size - pos : chunk, used;
        const uint8_t *pl;
        FtFrameHeader h;
        int r = ft_frame_decoder_feed(&d, data + pos, n, &used, &h, &pl);

        assert(used <= n);
        pos += used;
        if (r < 0) {
            assert(ft_frame_decoder_feed(&d, data, size, &used, &h, &pl) == r);
            break;
        }
        if (r == FT_DEC_FRAME) {
            uint8_t hdr[FT_FRAME_HDR_SIZE];
            FtFrameHeader again = h;

            assert(h.len <= 4096 && h.type >= 1 && h.type <= FT_FRAME_TYPE_MAX);
            /* Re-encoding gives the checksum that was on the wire. */
            ft_frame_encode(hdr, &again, pl);
            assert(again.crc == h.crc);
        } else {
            assert(used == n);
        }
    }
    ft_frame_decoder_destroy(&d);
    return 0;
}
