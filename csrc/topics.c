/*
 * topics.c — publish/subscribe. Topics live in a chained hash table; each keeps the ids of its
 * subscribers, and each connection keeps (topic, index) references so that unsubscribing and
 * closing cost O(topics of that connection). A publish frames the message once into a shared
 * write block and queues that block on every subscriber.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define MAX_TOPIC_LEN 65536

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static pyws_topic *find(pyws_loop *loop, const char *name, size_t len, uint64_t h)
{
    if (!loop->ntopic_buckets)
        return NULL;
    for (pyws_topic *t = loop->topic_buckets[h & (loop->ntopic_buckets - 1)]; t; t = t->next)
        if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static int grow_table(pyws_loop *loop)
{
    size_t nb = loop->ntopic_buckets ? loop->ntopic_buckets * 2 : 64;
    pyws_topic **b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    for (size_t i = 0; i < loop->ntopic_buckets; i++) {
        pyws_topic *t = loop->topic_buckets[i];
        while (t) {
            pyws_topic *next = t->next;
            t->next = b[t->hash & (nb - 1)];
            b[t->hash & (nb - 1)] = t;
            t = next;
        }
    }
    free(loop->topic_buckets);
    loop->topic_buckets = b;
    loop->ntopic_buckets = nb;
    return 0;
}

/* With pyws_topic_watch on: note that topic `name` gained its first subscriber or lost its
 * last (the change log holds 4-byte native lengths each followed by the name). */
static void note_change(pyws_loop *loop, const char *name, size_t len)
{
    if (!loop->topic_watch)
        return;
    size_t need = loop->topic_log_len + sizeof(uint32_t) + len;
    if (need > loop->topic_log_cap) {
        size_t nc = loop->topic_log_cap ? loop->topic_log_cap * 2 : 1024;
        while (nc < need)
            nc *= 2;
        uint8_t *nb = realloc(loop->topic_log, nc);
        if (!nb) {
            loop->topic_log_lost++;
            return;
        }
        loop->topic_log = nb;
        loop->topic_log_cap = nc;
    }
    uint32_t n32 = (uint32_t)len; /* len <= MAX_TOPIC_LEN */
    memcpy(loop->topic_log + loop->topic_log_len, &n32, sizeof(n32));
    memcpy(loop->topic_log + loop->topic_log_len + sizeof(n32), name, len);
    loop->topic_log_len = need;
}

static pyws_topic *find_or_add(pyws_loop *loop, const char *name, size_t len)
{
    uint64_t h = hash_bytes(name, len);
    pyws_topic *t = find(loop, name, len, h);
    if (t)
        return t;
    if (loop->ntopics + 1 > loop->ntopic_buckets && grow_table(loop) < 0)
        return NULL;
    t = malloc(sizeof(*t) + len);
    if (!t)
        return NULL;
    t->hash = h;
    t->subs = NULL;
    t->nsubs = t->cap = 0;
    t->len = len;
    memcpy(t->name, name, len);
    size_t b = h & (loop->ntopic_buckets - 1);
    t->next = loop->topic_buckets[b];
    loop->topic_buckets[b] = t;
    loop->ntopics++;
    note_change(loop, name, len);
    return t;
}

static void remove_topic(pyws_loop *loop, pyws_topic *t)
{
    pyws_topic **pp = &loop->topic_buckets[t->hash & (loop->ntopic_buckets - 1)];
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    note_change(loop, t->name, t->len);
    free(t->subs);
    free(t);
    loop->ntopics--;
}

static int sub_index(const pyws_conn *c, const pyws_topic *t)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].topic == t)
            return (int)i;
    return -1;
}

/* Remove c's reference k (to topic t): swap-remove c from t->subs and fix the index that the
 * moved subscriber keeps. */
static void unlink_sub(pyws_loop *loop, pyws_conn *c, uint32_t k)
{
    pyws_topic *t = c->subs[k].topic;
    uint32_t idx = c->subs[k].index;
    uint32_t last = --t->nsubs;
    if (idx != last) {
        uint64_t moved_id = t->subs[last];
        t->subs[idx] = moved_id;
        pyws_conn *m = pw_conn_get(loop, moved_id);
        if (m) {
            int mk = sub_index(m, t);
            if (mk >= 0)
                m->subs[mk].index = idx;
        }
    }
    c->subs[k] = c->subs[--c->nsubs];
    if (t->nsubs == 0)
        remove_topic(loop, t);
}

static int check_topic(pyws_loop *loop, size_t len)
{
    if (len > MAX_TOPIC_LEN)
        return pw_set_error(loop, PYWS_ERR_ARG, "topic names are at most %d bytes",
                              MAX_TOPIC_LEN);
    return 0;
}

int pyws_subscribe(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (!c->sess)
        return pw_set_error(loop, PYWS_ERR_STATE, "only WebSocket connections subscribe");
    if (check_topic(loop, topic_len))
        return PYWS_ERR_ARG;
    pyws_topic *t = find_or_add(loop, topic, topic_len);
    if (!t)
        return PYWS_ERR_NOMEM;
    if (sub_index(c, t) >= 0)
        return 0;
    if (c->nsubs == c->subs_cap) {
        uint32_t nc = c->subs_cap ? c->subs_cap * 2 : 4;
        pyws_subref *ns = realloc(c->subs, nc * sizeof(*ns));
        if (!ns)
            goto nomem;
        c->subs = ns;
        c->subs_cap = nc;
    }
    if (t->nsubs == t->cap) {
        uint32_t nc = t->cap ? t->cap * 2 : 8;
        uint64_t *ns = realloc(t->subs, nc * sizeof(*ns));
        if (!ns)
            goto nomem;
        t->subs = ns;
        t->cap = nc;
    }
    t->subs[t->nsubs] = c->id;
    c->subs[c->nsubs].topic = t;
    c->subs[c->nsubs].index = t->nsubs;
    t->nsubs++;
    c->nsubs++;
    return 1;
nomem:
    if (t->nsubs == 0)
        remove_topic(loop, t);
    return PYWS_ERR_NOMEM;
}

int pyws_unsubscribe(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    pyws_topic *t = find(loop, topic, topic_len, hash_bytes(topic, topic_len));
    int k = t ? sub_index(c, t) : -1;
    if (k < 0)
        return 0;
    unlink_sub(loop, c, (uint32_t)k);
    return 1;
}

int pyws_is_subscribed(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return 0;
    pyws_topic *t = find(loop, topic, topic_len, hash_bytes(topic, topic_len));
    return t && sub_index(c, t) >= 0;
}

void pw_topics_drop_conn(pyws_loop *loop, pyws_conn *c)
{
    while (c->nsubs)
        unlink_sub(loop, c, c->nsubs - 1);
    free(c->subs);
    c->subs = NULL;
    c->subs_cap = 0;
}

void pw_topics_free(pyws_loop *loop)
{
    for (size_t i = 0; i < loop->ntopic_buckets; i++) {
        pyws_topic *t = loop->topic_buckets[i];
        while (t) {
            pyws_topic *next = t->next;
            free(t->subs);
            free(t);
            t = next;
        }
    }
    free(loop->topic_buckets);
    loop->topic_buckets = NULL;
    loop->ntopic_buckets = loop->ntopics = 0;
    free(loop->topic_log);
    loop->topic_log = NULL;
    loop->topic_log_len = loop->topic_log_cap = 0;
}

void pyws_topic_watch(pyws_loop *loop, int on)
{
    loop->topic_watch = on ? 1 : 0;
    if (!on)
        loop->topic_log_len = 0;
}

const uint8_t *pyws_topic_changes(pyws_loop *loop, size_t *len, uint64_t *lost)
{
    *len = loop->topic_log_len;
    *lost = loop->topic_log_lost;
    loop->topic_log_len = 0;
    loop->topic_log_lost = 0;
    return loop->topic_log;
}

int pyws_topic_count(pyws_loop *loop, const char *topic, size_t topic_len)
{
    pyws_topic *t = find(loop, topic, topic_len, hash_bytes(topic, topic_len));
    return t ? (int)t->nsubs : 0;
}

int pyws_topic_total(pyws_loop *loop)
{
    return (int)loop->ntopics;
}

/* ------------------------------------------------------------------ fan-out */

/* A compressed frame shared by every subscriber whose compressor has no context to keep and
 * uses these parameters: compressed once per publish. */
typedef struct zshared {
    pyws_blob *blob;
    size_t total;
    size_t zlen;              /* its compressed payload bytes */
    uint8_t bits, mem_level, level;
} zshared;

#define FANOUT_ZSHARED 8

typedef struct fanout {
    pyws_blob *blob;          /* the frame, unmasked, shared by server-side connections */
    size_t total;
    zshared z[FANOUT_ZSHARED];
    int nz;
    int flags;
    int opcode;
    const uint8_t *data;
    size_t len;
    uint64_t exclude;
    int delivered;
    uint32_t skipped;
    uint64_t *slow;           /* connections to close for passing write_limit */
    uint32_t nslow;
    uint32_t slow_cap;
} fanout;

/* One unmasked frame carrying data[0..len), in a block subscribers' queues can share. */
static pyws_blob *frame_blob(pyws_loop *loop, int rsv, int opcode, const uint8_t *data,
                             size_t len)
{
    uint8_t hdr[14];
    size_t hlen = pyws_frame_header(hdr, 1, rsv, opcode, len, NULL);
    pyws_blob *b = pw_blob_alloc(loop, hlen + len);
    if (!b)
        return NULL;
    memcpy(pw_blob_bytes(b), hdr, hlen);
    if (len)
        memcpy(pw_blob_bytes(b) + hlen, data, len);
    b->len = hlen + len;
    return b;
}

static int fanout_start(pyws_loop *loop, fanout *f, int opcode, const uint8_t *data, size_t len,
                        uint64_t exclude, int flags)
{
    if (opcode != PYWS_OP_TEXT && opcode != PYWS_OP_BINARY)
        return pw_set_error(loop, PYWS_ERR_ARG, "publish sends TEXT or BINARY messages");
    memset(f, 0, sizeof(*f));
    f->blob = frame_blob(loop, 0, opcode, data, len);
    if (!f->blob)
        return PYWS_ERR_NOMEM;
    f->total = f->blob->len;
    f->opcode = opcode;
    f->data = data;
    f->len = len;
    f->exclude = exclude;
    f->flags = flags;
    return PYWS_OK;
}

/* The shared compressed frame for c's parameters (made on first need), or NULL when c must be
 * compressed on its own (it keeps context, or too many parameter sets). */
static zshared *fanout_zframe(pyws_loop *loop, fanout *f, const pyws_pmd *d)
{
    if (!d->tx_reset || d->tx)
        return NULL;
    for (int i = 0; i < f->nz; i++)
        if (f->z[i].bits == d->tx_bits && f->z[i].mem_level == d->mem_level &&
            f->z[i].level == d->level)
            return &f->z[i];
    if (f->nz == FANOUT_ZSHARED)
        return NULL;
    pyws_zpool *pool = pw_loop_zpool(loop);
    const uint8_t *out;
    size_t olen;
    if (!pool || pw_zpool_compress_once(pool, d->tx_bits, d->mem_level, d->level, f->data,
                                          f->len, &out, &olen) != 0)
        return NULL;
    pyws_blob *b = frame_blob(loop, 0x40, f->opcode, out, olen); /* RSV1: compressed */
    if (!b)
        return NULL;
    zshared *z = &f->z[f->nz++];
    z->blob = b;
    z->total = b->len;
    z->zlen = olen;
    z->bits = d->tx_bits;
    z->mem_level = d->mem_level;
    z->level = d->level;
    return z;
}

static void fanout_one(pyws_loop *loop, fanout *f, pyws_conn *c)
{
    if (c->id == f->exclude || !c->sess || !pyws_st_may_send(c->state))
        return;
    if (c->flags & CF_SEND_FRAG) {
        f->skipped++;
        return;
    }
    if (c->wq_bytes + f->total > c->opts.write_limit) {
        if (f->nslow == f->slow_cap) {
            uint32_t nc = f->slow_cap ? f->slow_cap * 2 : 16;
            uint64_t *ns = realloc(f->slow, nc * sizeof(*ns));
            if (!ns) {
                f->skipped++;
                return;
            }
            f->slow = ns;
            f->slow_cap = nc;
        }
        f->slow[f->nslow++] = c->id;
        return;
    }
    int rc;
    if (c->pmd && pw_pmd_wants(c->pmd, f->len, 1, f->flags)) {
        zshared *z = c->role == PYWS_ROLE_SERVER ? fanout_zframe(loop, f, c->pmd) : NULL;
        if (z) {
            rc = pw_wq_push_shared(loop, c, z->blob, z->total);
            if (rc == PYWS_OK) { /* pw_ws_send_frame counts the others itself */
                c->cnt.zout_data += f->len;
                c->cnt.zout_wire += z->zlen;
            }
        } else {
            rc = pw_ws_send_frame(loop, c, 1, f->opcode, f->data, f->len, f->flags);
        }
    } else if (c->role == PYWS_ROLE_CLIENT) {
        rc = pw_ws_queue_frame(loop, c, 1, f->opcode, f->data, f->len); /* masked */
    } else {
        rc = pw_wq_push_shared(loop, c, f->blob, f->total);
    }
    if (rc == PYWS_OK) {
        f->delivered++;
        c->cnt.msgs_out++;
        c->cnt.bytes_out += f->len;
    } else {
        f->skipped++;
    }
}

static int fanout_end(pyws_loop *loop, fanout *f, uint32_t *skipped, uint32_t *dropped)
{
    pw_blob_put(loop, f->blob);
    for (int i = 0; i < f->nz; i++)
        pw_blob_put(loop, f->z[i].blob);
    /* close the slow ones only now: closing edits the topic lists being walked */
    for (uint32_t i = 0; i < f->nslow; i++) {
        pyws_conn *c = pw_conn_get(loop, f->slow[i]);
        if (c)
            pw_ws_overflow(loop, c); /* 1008, counted as a write_limit close */
    }
    free(f->slow);
    loop->publish_skipped += f->skipped;
    if (skipped)
        *skipped = f->skipped;
    if (dropped)
        *dropped = f->nslow;
    return f->delivered;
}

int pyws_publish(pyws_loop *loop, const char *topic, size_t topic_len, int opcode,
                 const uint8_t *data, size_t len, uint64_t exclude, int flags, uint32_t *skipped,
                 uint32_t *dropped)
{
    if (skipped)
        *skipped = 0;
    if (dropped)
        *dropped = 0;
    pyws_topic *t = find(loop, topic, topic_len, hash_bytes(topic, topic_len));
    if (!t)
        return 0;
    fanout f;
    int rc = fanout_start(loop, &f, opcode, data, len, exclude, flags);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < t->nsubs; i++) {
        pyws_conn *c = pw_conn_get(loop, t->subs[i]);
        if (c)
            fanout_one(loop, &f, c);
    }
    return fanout_end(loop, &f, skipped, dropped);
}

int pyws_broadcast(pyws_loop *loop, int opcode, const uint8_t *data, size_t len,
                   uint64_t exclude, int flags, uint32_t *skipped, uint32_t *dropped)
{
    if (skipped)
        *skipped = 0;
    if (dropped)
        *dropped = 0;
    fanout f;
    int rc = fanout_start(loop, &f, opcode, data, len, exclude, flags);
    if (rc)
        return rc;
    for (uint32_t slot = 0; slot < loop->nslots; slot++) {
        pyws_conn *c = loop->conns[slot];
        if (c && c->kind == PYWS_KIND_CONN && c->role == PYWS_ROLE_SERVER)
            fanout_one(loop, &f, c);
    }
    return fanout_end(loop, &f, skipped, dropped);
}

/* ------------------------------------------------------------------ listing */

int pyws_topic_next(pyws_loop *loop, uint64_t *cursor, pyws_str *name, uint32_t *subscribers)
{
    /* cursor: bucket << 32 | position in its chain */
    uint64_t b = *cursor >> 32;
    uint32_t pos = (uint32_t)*cursor;
    for (; b < loop->ntopic_buckets; b++, pos = 0) {
        pyws_topic *t = loop->topic_buckets[b];
        for (uint32_t k = 0; t && k < pos; k++)
            t = t->next;
        if (!t)
            continue;
        name->ptr = t->name;
        name->len = t->len;
        *subscribers = t->nsubs;
        *cursor = b << 32 | (uint64_t)(pos + 1);
        return 1;
    }
    *cursor = (uint64_t)loop->ntopic_buckets << 32;
    return 0;
}

int pyws_topic_members(pyws_loop *loop, const char *topic, size_t topic_len, uint64_t *out,
                       size_t cap)
{
    pyws_topic *t = find(loop, topic, topic_len, hash_bytes(topic, topic_len));
    if (!t)
        return 0;
    size_t n = t->nsubs < cap ? t->nsubs : cap;
    if (n)
        memcpy(out, t->subs, n * sizeof(*out));
    return (int)t->nsubs;
}
