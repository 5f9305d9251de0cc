/*
 * stats.c — reading what the loop counted: one connection's counters (pyws_conn_stats_get),
 * the loop's (pyws_loop_stats_get), and the bookkeeping that keeps a closed connection's counts
 * in the loop's totals. The counting itself is plain increments where the work happens (conn.c,
 * ws.c, topics.c, upgrade.c, listen.c); nothing here runs per message.
 */
#include <string.h>

#include "core.h"

_Static_assert(PYWS_ST_COUNT == 15, "pyws_loop_stats.states[] has one entry per state");
_Static_assert(PYWS_CLOSE_WHY_COUNT == 4, "pyws_loop_stats.closes[] size");
_Static_assert(PYWS_HS_WHY_COUNT == 15, "pyws_loop_stats.hs_failed[] size");

static const char *const close_why[PYWS_CLOSE_WHY_COUNT] = {
    [PYWS_WHY_WRITE_LIMIT] = "write_limit",
    [PYWS_WHY_HEARTBEAT] = "heartbeat_timeout",
    [PYWS_WHY_IDLE] = "idle_timeout",
    [PYWS_WHY_CLOSE_TIMEOUT] = "close_timeout",
};

/* The statuses counted on their own, in hs_failed[] order; the rest are "other". */
static const int hs_status[PYWS_HSF_OTHER] = {400, 403, 404, 405, 408, 413,
                                              426, 429, 431, 501, 503, 505};
static const char *const hs_why[PYWS_HS_WHY_COUNT] = {
    "400", "403", "404", "405", "408", "413", "426", "429", "431", "501", "503", "505",
    [PYWS_HSF_OTHER] = "other",
    [PYWS_HSF_TLS] = "tls",
    [PYWS_HSF_TLS_TIMEOUT] = "tls_timeout",
};

const char *pyws_stats_label(int table, int i)
{
    if (table == 0 && i >= 0 && i < PYWS_CLOSE_WHY_COUNT)
        return close_why[i];
    if (table == 1 && i >= 0 && i < PYWS_HS_WHY_COUNT)
        return hs_why[i];
    return NULL;
}

static void add_counters(pyws_counters *to, const pyws_counters *from)
{
    to->msgs_in += from->msgs_in;
    to->msgs_out += from->msgs_out;
    to->bytes_in += from->bytes_in;
    to->bytes_out += from->bytes_out;
    to->wire_in += from->wire_in;
    to->zin_wire += from->zin_wire;
    to->zin_data += from->zin_data;
    to->zout_data += from->zout_data;
    to->zout_wire += from->zout_wire;
}

void pw_stats_conn_gone(pyws_loop *loop, const pyws_conn *c)
{
    add_counters(&loop->gone, &c->cnt);
    loop->gone_wire_out += c->tx_sent;
}

void pw_stats_hs_failed(pyws_loop *loop, int status)
{
    int i;
    if (status < 0) {
        i = -status;
        if (i >= PYWS_HS_WHY_COUNT)
            i = PYWS_HSF_OTHER;
    } else {
        for (i = 0; i < PYWS_HSF_OTHER && hs_status[i] != status; i++) {
        }
    }
    loop->hs_failed[i]++;
}

void pw_stats_raw_answer(pyws_loop *loop, pyws_conn *c, const uint8_t *data, size_t len)
{
    /* a valid upgrade request waits for its answer: ws_upgrade() or this one */
    if (c->state != PYWS_ST_HTTP_REQUEST || c->hs_status != 0 || (c->flags & CF_HS_COUNTED) ||
        c->role != PYWS_ROLE_SERVER)
        return;
    /* "HTTP/1.x NNN" */
    if (len < 12 || memcmp(data, "HTTP/1.", 7) != 0 || data[8] != ' ')
        return;
    int status = 0;
    for (int k = 9; k < 12; k++) {
        if (data[k] < '0' || data[k] > '9')
            return;
        status = status * 10 + (data[k] - '0');
    }
    if (status == 101)
        return;
    c->flags |= CF_HS_COUNTED;
    pw_stats_hs_failed(loop, status);
}

int pyws_conn_stats_get(pyws_loop *loop, uint64_t id, pyws_conn_stats *out)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    memset(out, 0, sizeof(*out));
    out->msgs_in = c->cnt.msgs_in;
    out->msgs_out = c->cnt.msgs_out;
    out->bytes_in = c->cnt.bytes_in;
    out->bytes_out = c->cnt.bytes_out;
    out->wire_in = c->cnt.wire_in;
    out->wire_out = c->tx_sent;
    out->deflate_in_wire = c->cnt.zin_wire;
    out->deflate_in_data = c->cnt.zin_data;
    out->deflate_out_data = c->cnt.zout_data;
    out->deflate_out_wire = c->cnt.zout_wire;
    out->connected_at = c->connected_at;
    out->last_activity = c->last_activity;
    out->now = pw_now_ms();
    out->ping_rtt_us = c->ping_rtt_us;
    out->pings_sent = c->pings_sent;
    out->write_buffer = c->wq_bytes;
    out->state = c->state;
    out->subscriptions = c->nsubs;
    return PYWS_OK;
}

void pyws_loop_stats_get(pyws_loop *loop, pyws_loop_stats *out)
{
    memset(out, 0, sizeof(*out));
    pyws_counters sum = loop->gone;
    uint64_t wire_out = loop->gone_wire_out;
    uint64_t subs = 0;
    for (uint32_t i = 0; i < loop->nslots; i++) {
        const pyws_conn *c = loop->conns[i];
        if (!c)
            continue;
        if (c->kind == PYWS_KIND_LISTENER) {
            out->listeners++;
            continue;
        }
        if (c->kind != PYWS_KIND_CONN)
            continue;
        if (c->state < PYWS_ST_COUNT)
            out->states[c->state]++;
        add_counters(&sum, &c->cnt);
        wire_out += c->tx_sent;
        subs += c->nsubs;
    }
    out->now = pw_now_ms();
    out->accepted = loop->accepted;
    out->ws_opened = loop->ws_opened;
    out->msgs_in = sum.msgs_in;
    out->msgs_out = sum.msgs_out;
    out->bytes_in = sum.bytes_in;
    out->bytes_out = sum.bytes_out;
    out->wire_in = sum.wire_in;
    out->wire_out = wire_out;
    out->deflate_in_wire = sum.zin_wire;
    out->deflate_in_data = sum.zin_data;
    out->deflate_out_data = sum.zout_data;
    out->deflate_out_wire = sum.zout_wire;
    out->topics = loop->ntopics;
    out->subscriptions = subs;
    memcpy(out->closes, loop->closes, sizeof(out->closes));
    memcpy(out->hs_failed, loop->hs_failed, sizeof(out->hs_failed));
    out->publish_skipped = loop->publish_skipped;
    out->pongs_replaced = loop->pongs_replaced;
    out->cached_blocks[0] = (uint64_t)loop->nblob_cache;
    out->cached_bytes[0] = (uint64_t)loop->nblob_cache * PYWS_BLOB_SIZE;
    out->cached_blocks[1] = (uint64_t)loop->nbigbuf;
    out->cached_bytes[1] = loop->bigbuf_bytes;
}
