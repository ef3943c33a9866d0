/* Unit tests for ft/ft-frame.c */
#include <string.h>
#include "ft-crc32c.h"
#include "ft-frame.h"
#include <stdbool.h>
#include "tap.h"

static size_t make(uint8_t *out, uint8_t type, uint32_t gen, uint64_t off,
                   const void *payload, uint32_t len)
{
    FtFrameHeader h = {
        .version = FT_PROTO_VERSION, .type = type, .gen = gen,
        .len = len, .offset = off,
    };

    ft_frame_encode(out, &h, payload);
    memcpy(out + FT_FRAME_HDR_SIZE, payload, len);
    return FT_FRAME_HDR_SIZE + len;
}

/* Recompute the header checksum after editing header fields. */
static void reseal(uint8_t *hdr)
{
    uint32_t c = ft_crc32c(0, hdr, 28);

    hdr[28] = c;
    hdr[29] = c >> 8;
    hdr[30] = c >> 16;
    hdr[31] = c >> 24;
}

/* Feed @len bytes in chunks of @chunk; count frames, return last result */
static int feed_all(FtFrameDecoder *d, const uint8_t *buf, size_t len,
                    size_t chunk, int *frames, FtFrameHeader *last,
                    uint8_t *last_payload)
{
    size_t pos = 0, used;
    int r = FT_DEC_NEED_MORE;

    *frames = 0;
    while (pos < len) {
        size_t n = len - pos < chunk ? len - pos : chunk;
        const uint8_t *p = buf + pos;

        while (n) {
            const uint8_t *pl;
            FtFrameHeader h;

            r = ft_frame_decoder_feed(d, p, n, &used, &h, &pl);
            if (r < 0) {
                return r;
            }
            if (r == FT_DEC_FRAME) {
                (*frames)++;
                *last = h;
                memcpy(last_payload, pl, h.len);
            }
            p += used;
            n -= used;
            pos += used;
            if (!used && r != FT_DEC_FRAME) {
                return -100;        /* no progress: decoder bug */
            }
        }
    }
    return r;
}

int main(void)
{
    static uint8_t stream[1 << 16], payload[5000], got[FT_FRAME_MAX_PAYLOAD];
    FtFrameDecoder d;
    FtFrameHeader last;
    size_t len = 0, i, chunk;
    int frames, r, ok;

    for (i = 0; i < sizeof(payload); i++) {
        payload[i] = i * 7;
    }
    len += make(stream + len, FT_FRAME_HELLO, 1, 0, "hi", 2);
    len += make(stream + len, FT_FRAME_DATA, 1, 0, payload, 5000);
    len += make(stream + len, FT_FRAME_HEARTBEAT, 1, 5000, NULL, 0);
    len += make(stream + len, FT_FRAME_DATA, 1, 5000, payload, 17);
    len += make(stream + len, FT_FRAME_ACK, 1, 5017, NULL, 0);

    ok = 1;
    for (chunk = 1; chunk <= len; chunk = chunk * 3 + 1) {
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, stream, len, chunk, &frames, &last, got);
        ok &= r == FT_DEC_FRAME && frames == 5 &&
              last.type == FT_FRAME_ACK && last.offset == 5017;
        ft_frame_decoder_destroy(&d);
    }
    CHECK(ok, "5 frames decode at every chunk size");

    ft_frame_decoder_init(&d, 0);
    r = feed_all(&d, stream, 2 * FT_FRAME_HDR_SIZE + 2 + 5000, 4096,
                 &frames, &last, got);
    CHECK(r == FT_DEC_FRAME && frames == 2 && last.len == 5000 &&
          last.gen == 1 && !memcmp(got, payload, 5000),
          "DATA payload and header fields round-trip");
    ft_frame_decoder_destroy(&d);

    ft_frame_decoder_init(&d, 0);
    r = feed_all(&d, stream, len - 1, 7, &frames, &last, got);
    CHECK(r == FT_DEC_NEED_MORE && frames == 4,
          "a truncated frame is never delivered");
    ft_frame_decoder_destroy(&d);

    /* Corruption anywhere is caught. */
    ok = 1;
    for (i = 0; i < 2 * FT_FRAME_HDR_SIZE + 2 + 5000; i += 13) {
        uint8_t bad[sizeof(stream)];

        memcpy(bad, stream, len);
        bad[i] ^= 0x20;
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, bad, len, 1000, &frames, &last, got);
        ok &= r < 0;
        ft_frame_decoder_destroy(&d);
    }
    CHECK(ok, "a flipped bit in any header or payload byte is an error");

    {
        uint8_t bad[64];

        make(bad, FT_FRAME_DATA, 1, 0, "x", 1);
        bad[13] ^= 1;       /* length 1 -> 257, no reseal */
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, bad, 32, 32, &frames, &last, got);
        CHECK(r == FT_DEC_ERR_HCRC,
              "a damaged length is caught at the header: %s",
              ft_frame_strerror(r));
        ft_frame_decoder_destroy(&d);
    }

    ft_frame_decoder_init(&d, 0);
    r = feed_all(&d, (const uint8_t *)"GET / HTTP/1.0\r\n\r\n........"
                 "..........", 36, 36, &frames, &last, got);
    CHECK(r == FT_DEC_ERR_MAGIC, "garbage is a magic error: %s",
          ft_frame_strerror(r));
    r = ft_frame_decoder_feed(&d, stream, len, &i, &last,
                              (const uint8_t **)&got);
    CHECK(r == FT_DEC_ERR_MAGIC && i == 0, "errors are sticky");
    ft_frame_decoder_destroy(&d);

    {
        uint8_t bad[64];

        make(bad, FT_FRAME_DATA, 1, 0, "x", 1);
        bad[4] = FT_PROTO_VERSION + 1;      /* checked before hcrc */
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, bad, 33, 33, &frames, &last, got);
        CHECK(r == FT_DEC_ERR_VERSION, "other version refused");
        ft_frame_decoder_destroy(&d);

        for (int t = FT_FRAME_HELLO; t <= FT_FRAME_TYPE_MAX; t++) {
            for (uint16_t fl = 1; fl; fl <<= 1) {
                FtFrameHeader fh = {
                    .version = FT_PROTO_VERSION, .type = t, .flags = fl,
                    .gen = 1, .len = 1,
                };
                bool want = t == FT_FRAME_DATA && fl == FT_FRAME_F_MORE;

                ft_frame_encode(bad, &fh, "x");
                bad[FT_FRAME_HDR_SIZE] = 'x';
                ft_frame_decoder_init(&d, 0);
                r = feed_all(&d, bad, 33, 33, &frames, &last, got);
                if ((r == FT_DEC_FRAME && last.flags == fl) != want ||
                    (!want && r != FT_DEC_ERR_FLAGS)) {
                    CHECK(0, "flags %#x on type %d: %s", fl, t,
                          ft_frame_strerror(r));
                }
                ft_frame_decoder_destroy(&d);
            }
        }
        CHECK(1, "only DATA may carry a flag, and only F_MORE");

        make(bad, 9, 1, 0, "x", 1);
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, bad, 33, 33, &frames, &last, got);
        CHECK(r == FT_DEC_ERR_TYPE, "unknown type refused");
        ft_frame_decoder_destroy(&d);

        make(bad, FT_FRAME_DATA, 1, 0, "x", 1);
        bad[12] = 0xff; bad[13] = 0xff; bad[14] = 0xff; bad[15] = 0x7f;
        reseal(bad);
        ft_frame_decoder_init(&d, 0);
        r = feed_all(&d, bad, 33, 33, &frames, &last, got);
        CHECK(r == FT_DEC_ERR_LEN,
              "huge length refused before allocating: %s",
              ft_frame_strerror(r));
        ft_frame_decoder_destroy(&d);

        make(bad, FT_FRAME_DATA, 1, 0, "x", 1);
        ft_frame_decoder_init(&d, 0);
        d.max_payload = 0;
        r = feed_all(&d, bad, 33, 33, &frames, &last, got);
        CHECK(r == FT_DEC_ERR_LEN, "payload limit is per decoder");
        ft_frame_decoder_destroy(&d);
    }
    CHECK(!strcmp(ft_frame_type_name(FT_FRAME_ACK), "ACK") &&
          !strcmp(ft_frame_type_name(0), "?"), "type names");
    return tap_done();
}
