/* Unit tests for ft/ft-proto.c */
#include <string.h>
#include "ft-proto.h"
#include "tap.h"

#define GEN 7

static FtHello hello(FtRole role, uint64_t offset)
{
    FtHello h = {
        .role = role, .replay_version = 0xe0200c, .gen = GEN,
        .offset = offset, .max_payload = 65536, .heartbeat_ms = 50,
    };

    memcpy(h.vm_id, "0123456789abcdef", 16);
    return h;
}

static int rx(FtProto *p, uint8_t type, uint32_t gen, uint64_t off,
              uint32_t len)
{
    FtFrameHeader h = {
        .version = FT_PROTO_VERSION, .type = type, .gen = gen,
        .len = len, .offset = off,
    };
    static uint8_t zero[64];

    return ft_proto_receive(p, &h, zero);
}

static int rx_hello(FtProto *p, const FtHello *peer)
{
    uint8_t buf[FT_HELLO_SIZE];
    FtFrameHeader h = {
        .version = FT_PROTO_VERSION, .type = FT_FRAME_HELLO,
        .gen = peer->gen, .len = FT_HELLO_SIZE,
    };

    ft_hello_encode(buf, peer);
    return ft_proto_receive(p, &h, buf);
}

static void backup(FtProto *p)
{
    FtHello me = hello(FT_ROLE_BACKUP, 0), peer = hello(FT_ROLE_PRIMARY, 0);

    ft_proto_init(p, &me);
    rx_hello(p, &peer);
}

int main(void)
{
    FtProto p;
    FtHello a = hello(FT_ROLE_PRIMARY, 1234), b;
    uint8_t buf[FT_HELLO_SIZE];
    FtPosMap m;
    uint64_t ic;
    int i, ok;

    ft_hello_encode(buf, &a);
    CHECK(ft_hello_decode(buf, sizeof(buf), &b) == 0 &&
          !memcmp(&a, &b, sizeof(a)), "HELLO round-trips");
    CHECK(ft_hello_decode(buf, sizeof(buf) - 1, &b) ==
          FT_PROTO_ERR_HELLO_BAD, "short HELLO refused");
    buf[0] = 3;
    CHECK(ft_hello_decode(buf, sizeof(buf), &b) == FT_PROTO_ERR_HELLO_BAD,
          "unknown role refused");

    /* Backup side: a clean stream. */
    backup(&p);
    CHECK(p.state == FT_PROTO_STREAMING, "handshake completes");
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 0, 12) == 0 &&
          rx(&p, FT_FRAME_DATA, GEN, 12, 30) == 0 &&
          rx(&p, FT_FRAME_HEARTBEAT, GEN, 42, 0) == 0 && p.rx_pos == 42,
          "contiguous DATA and a heartbeat are accepted");
    CHECK(rx(&p, FT_FRAME_END, GEN, 42, 0) == 0 && p.state == FT_PROTO_ENDED,
          "END at the end of the data");
    CHECK(rx(&p, FT_FRAME_HEARTBEAT, GEN, 42, 0) == FT_PROTO_ERR_AFTER_END,
          "nothing after END");

    backup(&p);
    rx(&p, FT_FRAME_DATA, GEN, 0, 10);
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 0, 10) == FT_PROTO_ERR_REPEAT,
          "repeated DATA refused: %s", ft_proto_strerror(p.error));
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 10, 10) == FT_PROTO_ERR_REPEAT,
          "errors are sticky");

    backup(&p);
    rx(&p, FT_FRAME_DATA, GEN, 0, 10);
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 20, 10) == FT_PROTO_ERR_GAP,
          "reordered or missing DATA refused");
    backup(&p);
    rx(&p, FT_FRAME_DATA, GEN, 0, 10);
    CHECK(rx(&p, FT_FRAME_HEARTBEAT, GEN, 15, 0) == FT_PROTO_ERR_GAP,
          "a heartbeat ahead of the data shows lost DATA");
    backup(&p);
    CHECK(rx(&p, FT_FRAME_DATA, GEN + 1, 0, 10) == FT_PROTO_ERR_GEN,
          "wrong generation refused");
    backup(&p);
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 0, 0) == FT_PROTO_ERR_EMPTY,
          "empty DATA refused");
    backup(&p);
    CHECK(rx(&p, FT_FRAME_ACK, GEN, 0, 0) == FT_PROTO_ERR_DIRECTION,
          "ACK is not accepted from a primary");
    backup(&p);
    rx(&p, FT_FRAME_DATA, GEN, 0, 10);
    CHECK(rx(&p, FT_FRAME_CONFIG, GEN, 10, 20) == 0,
          "CONFIG at the primary's position is accepted");
    CHECK(rx(&p, FT_FRAME_CONFIG, GEN, 4, 20) == FT_PROTO_ERR_REPEAT,
          "CONFIG behind the data refused");
    backup(&p);
    a = hello(FT_ROLE_PRIMARY, 0);
    CHECK(rx_hello(&p, &a) == FT_PROTO_ERR_HELLO_TWICE,
          "a peer that says HELLO twice is refused");
    backup(&p);
    rx(&p, FT_FRAME_DATA, GEN, 0, 10);
    CHECK(rx(&p, FT_FRAME_END, GEN, 5, 0) == FT_PROTO_ERR_END_OFFSET,
          "END in the middle refused");

    /* Handshake failures. */
    b = hello(FT_ROLE_BACKUP, 0);
    ft_proto_init(&p, &b);
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 0, 10) == FT_PROTO_ERR_HELLO_FIRST,
          "DATA before HELLO refused");
    ok = 1;
    for (i = 0; i < 6; i++) {
        FtHello peer = hello(FT_ROLE_PRIMARY, 0);
        static const int want[] = {
            FT_PROTO_ERR_ROLE, FT_PROTO_ERR_REPLAY_VERSION,
            FT_PROTO_ERR_VM_ID, FT_PROTO_ERR_GEN, FT_PROTO_ERR_START,
            FT_PROTO_ERR_HELLO_BAD,
        };

        switch (i) {
        case 0: peer.role = FT_ROLE_BACKUP; break;
        case 1: peer.replay_version++; break;
        case 2: peer.vm_id[3] ^= 1; break;
        case 3: peer.gen++; break;
        case 4: peer.offset = 100; break;
        case 5: peer.heartbeat_ms = 0; break;
        }
        ft_proto_init(&p, &b);
        ok &= rx_hello(&p, &peer) == want[i] && p.state == FT_PROTO_FAILED;
    }
    CHECK(ok, "role, log version, VM id, generation, start and field "
          "checks of the handshake");

    /* Primary side: ACK tracking. */
    a = hello(FT_ROLE_PRIMARY, 0);
    b = hello(FT_ROLE_BACKUP, 0);
    ft_proto_init(&p, &a);
    rx_hello(&p, &b);
    ft_proto_sent(&p, 0, 100);
    ft_proto_sent(&p, 100, 50);
    CHECK(ft_proto_unacked(&p) == 150, "unacked counts sent bytes");
    CHECK(rx(&p, FT_FRAME_ACK, GEN, 100, 0) == 0 &&
          ft_proto_unacked(&p) == 50, "ACK moves the window");
    CHECK(rx(&p, FT_FRAME_HEARTBEAT, GEN, 150, 0) == 0 &&
          p.tx_acked == 150, "backup heartbeat carries its position");
    CHECK(rx(&p, FT_FRAME_ACK, GEN, 151, 0) == FT_PROTO_ERR_ACK_BEYOND,
          "ACK of unsent data refused");
    ft_proto_init(&p, &a);
    rx_hello(&p, &b);
    ft_proto_sent(&p, 0, 100);
    rx(&p, FT_FRAME_ACK, GEN, 80, 0);
    CHECK(rx(&p, FT_FRAME_ACK, GEN, 70, 0) == FT_PROTO_ERR_ACK_BACKWARDS,
          "ACK going backwards refused");
    ft_proto_init(&p, &a);
    rx_hello(&p, &b);
    CHECK(rx(&p, FT_FRAME_DATA, GEN, 0, 10) == FT_PROTO_ERR_DIRECTION,
          "DATA is not accepted from a backup");
    ft_proto_init(&p, &a);
    rx_hello(&p, &b);
    CHECK(rx(&p, FT_FRAME_CONFIG, GEN, 0, 10) == FT_PROTO_ERR_DIRECTION,
          "CONFIG is not accepted from a backup");

    /* Position map. */
    ft_posmap_init(&m);
    CHECK(!ft_posmap_icount_at(&m, 5, &ic), "empty map knows nothing");
    for (i = 1; i <= 3000; i++) {
        ft_posmap_add(&m, i * 100, i * 1000);
    }
    CHECK(ft_posmap_icount_at(&m, 250050, &ic) && ic == 2500000,
          "lookup between marks gives the earlier mark");
    CHECK(ft_posmap_icount_at(&m, 300000, &ic) && ic == 3000000,
          "lookup at the newest mark");
    CHECK(!ft_posmap_icount_at(&m, 100, &ic),
          "offsets older than the ring are unknown");
    ft_posmap_add(&m, 50, 1);
    CHECK(ft_posmap_icount_at(&m, 300000, &ic) && ic == 3000000,
          "marks never move backwards");

    /* Peer text made safe to print */
    {
        static const uint8_t evil[] = "drive a\x1b]0;pwned\x07\n"
                                      "drive \\b\0c\xff";
        char out[64];
        size_t n = ft_proto_escape(evil, sizeof(evil) - 1, out, sizeof(out));

        CHECK(n == strlen(out) &&
              !strcmp(out, "drive a\\x1b]0;pwned\\x07\n"
                      "drive \\\\b\\x00c\\xff"), "escaped: %s", out);
        CHECK(ft_proto_escape(evil, sizeof(evil) - 1, NULL, 0) == n &&
              ft_proto_escape(evil, sizeof(evil) - 1, out, 8) == n &&
              !strcmp(out, "drive a"), "escape truncates like snprintf");
    }
    return tap_done();
}
