/* Unit tests for ft/ft-crc32c.c */
#include <string.h>
#include "ft-crc32c.h"
#include "tap.h"

int main(void)
{
    static const char check[] = "123456789";
    static uint8_t buf[4099];
    uint32_t whole, parts;
    size_t i, split;
    int same = 1;

    /* The standard CRC-32C check value and RFC 3720 B.4 vectors. */
    CHECK(ft_crc32c(0, check, 9) == 0xe3069283u, "check value 123456789");
    CHECK(ft_crc32c_portable(0, check, 9) == 0xe3069283u,
          "portable check value");
    memset(buf, 0, 32);
    CHECK(ft_crc32c(0, buf, 32) == 0x8a9136aau, "32 zero bytes");
    memset(buf, 0xff, 32);
    CHECK(ft_crc32c(0, buf, 32) == 0x62a8ab43u, "32 0xff bytes");
    for (i = 0; i < 32; i++) {
        buf[i] = i;
    }
    CHECK(ft_crc32c(0, buf, 32) == 0x46dd794eu, "32 incrementing bytes");
    CHECK(ft_crc32c(0, buf, 0) == 0, "empty input");

    for (i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    whole = ft_crc32c(0, buf, sizeof(buf));
    for (split = 0; split <= sizeof(buf); split += 97) {
        parts = ft_crc32c(ft_crc32c(0, buf, split), buf + split,
                          sizeof(buf) - split);
        same &= parts == whole;
    }
    CHECK(same, "chaining at any split gives the same CRC");
    for (i = 1; i < 16; i++) {
        same &= ft_crc32c(0, buf + i, sizeof(buf) - 2 * i) ==
                ft_crc32c_portable(0, buf + i, sizeof(buf) - 2 * i);
    }
    CHECK(same, "hardware and portable paths agree at any alignment");
    return tap_done();
}
