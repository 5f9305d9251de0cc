/*
 * frame.c — RFC 6455 §5 frames: an incremental parser and a header encoder.
 *
 * The parser never allocates and never looks past buf[len). A partial header is kept inside the
 * parser (at most 14 bytes), so a caller can always drop the bytes it fed. Payload is unmasked in
 * place and handed back as views into the caller's buffer.
 */
#include <string.h>

#include "pyws.h"

enum {
    ST_HEADER = 0,   /* collecting header bytes */
    ST_PAYLOAD,      /* delivering payload */
    ST_END,          /* payload complete: report END next */
    ST_FAILED,       /* a protocol error was reported; sticky */
};

static const char *const fail_reasons[] = {
    "",
    "reserved bits set without a negotiated extension",
    "reserved opcode",
    "fragmented control frame",
    "control frame payload longer than 125 bytes",
    "client frame is not masked",
    "server frame is masked",
    "continuation frame outside a fragmented message",
    "new data frame inside a fragmented message",
    "64-bit payload length has its most significant bit set",
};

/* The failure is stored in hdr[0] once the parser is failed (the header bytes are then moot). */
static size_t fail(pyws_parser *p, int which, pyws_frame_event *out)
{
    p->state = ST_FAILED;
    p->hdr[0] = (uint8_t)which;
    out->kind = PYWS_FRAME_ERROR;
    out->close_code = PYWS_CLOSE_PROTOCOL_ERROR;
    out->reason = fail_reasons[which];
    return 0;
}

void pyws_parser_init(pyws_parser *p, int role)
{
    memset(p, 0, sizeof(*p));
    p->role = (uint8_t)role;
}

/* Checks that need only the first two bytes; 0 if fine, else the failure index. */
static int check_first_two(const pyws_parser *p, uint8_t b0, uint8_t b1)
{
    uint8_t rsv = b0 & 0x70;
    uint8_t op = b0 & 0x0F;
    uint8_t masked = b1 & 0x80;
    uint8_t len7 = b1 & 0x7F;

    if (rsv & (uint8_t)~p->rsv_allowed)
        return 1;
    if ((op >= 3 && op <= 7) || op >= 11)
        return 2;
    if (op & 8) {
        if (!(b0 & 0x80))
            return 3;
        if (len7 > 125)
            return 4;
    } else if (op == PYWS_OP_CONTINUATION) {
        if (!p->in_message)
            return 7;
    } else if (p->in_message) {
        return 8;
    }
    if (p->role == PYWS_ROLE_SERVER && !masked)
        return 5;
    if (p->role == PYWS_ROLE_CLIENT && masked)
        return 6;
    return 0;
}

static unsigned header_size(uint8_t b1)
{
    unsigned n = 2;
    uint8_t len7 = b1 & 0x7F;
    if (len7 == 126)
        n += 2;
    else if (len7 == 127)
        n += 8;
    if (b1 & 0x80)
        n += 4;
    return n;
}

/* Decode a complete header in h[0..need). Returns 0 or a failure index. */
static int decode_header(pyws_parser *p, const uint8_t *h, pyws_frame_event *out)
{
    uint8_t b0 = h[0], b1 = h[1];
    uint8_t len7 = b1 & 0x7F;
    uint64_t len;
    const uint8_t *q = h + 2;

    if (len7 == 126) {
        len = ((uint64_t)q[0] << 8) | q[1];
        q += 2;
    } else if (len7 == 127) {
        if (q[0] & 0x80)
            return 9;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | q[i];
        q += 8;
    } else {
        len = len7;
    }
    p->fin = b0 >> 7;
    p->rsv = b0 & 0x70;
    p->opcode = b0 & 0x0F;
    p->masked = b1 >> 7;
    p->length = len;
    if (p->masked)
        memcpy(p->mask, q, 4);
    else
        memset(p->mask, 0, 4);

    if (!(p->opcode & 8)) {
        /* data frame: track fragmentation */
        p->in_message = p->fin ? 0 : 1;
    }
    p->remaining = len;
    p->offset = 0;
    p->state = len ? ST_PAYLOAD : ST_END;

    out->kind = PYWS_FRAME_HEADER;
    out->fin = p->fin;
    out->rsv = p->rsv;
    out->opcode = p->opcode;
    out->masked = p->masked;
    out->length = len;
    return 0;
}

size_t pyws_parser_feed(pyws_parser *p, uint8_t *buf, size_t len, pyws_frame_event *out)
{
    out->kind = PYWS_FRAME_NEED_MORE;
    out->data = NULL;
    out->len = 0;

    switch (p->state) {
    case ST_FAILED:
        out->kind = PYWS_FRAME_ERROR;
        out->close_code = PYWS_CLOSE_PROTOCOL_ERROR;
        out->reason = fail_reasons[p->hdr[0]];
        return 0;

    case ST_END:
        p->state = ST_HEADER;
        p->hdr_have = 0;
        out->kind = PYWS_FRAME_END;
        out->fin = p->fin;
        out->opcode = p->opcode;
        return 0;

    case ST_PAYLOAD: {
        size_t n = len;
        if ((uint64_t)n > p->remaining)
            n = (size_t)p->remaining;
        if (n == 0)
            return 0;
        if (p->masked)
            pyws_mask(buf, n, p->mask, (size_t)(p->offset & 3));
        p->offset += n;
        p->remaining -= n;
        if (p->remaining == 0)
            p->state = ST_END;
        out->kind = PYWS_FRAME_PAYLOAD;
        out->data = buf;
        out->len = n;
        return n;
    }

    default: /* ST_HEADER */
        break;
    }

    if (len == 0)
        return 0;

    /* Fast path: a whole header is available and nothing is buffered. */
    if (p->hdr_have == 0 && len >= 2) {
        int bad = check_first_two(p, buf[0], buf[1]);
        if (bad)
            return fail(p, bad, out);
        unsigned need = header_size(buf[1]);
        if (len >= need) {
            bad = decode_header(p, buf, out);
            if (bad)
                return fail(p, bad, out);
            return need;
        }
    }

    /* Slow path: collect header bytes in p->hdr. */
    size_t used = 0;
    while (used < len) {
        p->hdr[p->hdr_have++] = buf[used++];
        if (p->hdr_have == 2) {
            int bad = check_first_two(p, p->hdr[0], p->hdr[1]);
            if (bad)
                return fail(p, bad, out);
            p->hdr_need = (uint8_t)header_size(p->hdr[1]);
        }
        if (p->hdr_have == 3 && (p->hdr[1] & 0x7F) == 127 && (p->hdr[2] & 0x80))
            return fail(p, 9, out); /* the 64-bit length's top bit: no need to wait */
        if (p->hdr_have >= 2 && p->hdr_have == p->hdr_need) {
            int bad = decode_header(p, p->hdr, out);
            if (bad)
                return fail(p, bad, out);
            p->hdr_have = 0;
            return used;
        }
    }
    return used; /* NEED_MORE: all consumed into hdr */
}

size_t pyws_frame_header(uint8_t *out, int fin, int rsv, int opcode, uint64_t length,
                         const uint8_t *mask_key)
{
    size_t n = 2;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (opcode & 0x0F));
    uint8_t mbit = mask_key ? 0x80 : 0;
    if (length < 126) {
        out[1] = (uint8_t)(mbit | length);
    } else if (length <= 0xFFFF) {
        out[1] = (uint8_t)(mbit | 126);
        out[2] = (uint8_t)(length >> 8);
        out[3] = (uint8_t)length;
        n = 4;
    } else {
        out[1] = (uint8_t)(mbit | 127);
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(length >> (56 - 8 * i));
        n = 10;
    }
    if (mask_key) {
        memcpy(out + n, mask_key, 4);
        n += 4;
    }
    return n;
}
