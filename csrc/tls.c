/*
 * tls.c — OpenSSL over the loop's non-blocking sockets: contexts with secure defaults, and the
 * TLS transport (transport.h: pw_transport_tls), whose handshake is driven by readiness and
 * whose writes coalesce the write queue's small segments into full records. OpenSSL's
 * want-read/want-write is tracked per connection (tr_flags), so a write that needs the peer's
 * bytes (or a read that needs to write) waits for the right event. Nothing outside this file
 * sees an SSL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core.h"

struct pyws_tls_ctx {
    SSL_CTX *ctx;
};

static int ssl_error(pyws_loop *loop, const char *what)
{
    char buf[200] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return pw_set_error(loop, PYWS_ERR_TLS, "%s: %s", what, buf);
}

static BIO *mem_bio(const char *p, size_t n)
{
    return BIO_new_mem_buf(p, n > (size_t)0x7fffffff ? 0x7fffffff : (int)n);
}

static int load_chain(SSL_CTX *ctx, const char *pem, size_t len)
{
    BIO *bio = mem_bio(pem, len);
    if (!bio)
        return -1;
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) { /* the rest of the chain, if any */
        X509 *extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!extra) {
            ERR_clear_error(); /* end of the PEM data */
            break;
        }
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ok = 0;
        }
    }
    BIO_free(bio);
    return ok ? 0 : -1;
}

static int load_key(SSL_CTX *ctx, const char *pem, size_t len)
{
    BIO *bio = mem_bio(pem, len);
    if (!bio)
        return -1;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    int ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    BIO_free(bio);
    return ok ? 0 : -1;
}

static int load_ca(SSL_CTX *ctx, const char *pem, size_t len)
{
    BIO *bio = mem_bio(pem, len);
    if (!bio)
        return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, x) == 1)
            n++;
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    return n > 0 ? 0 : -1;
}

/* ALPN: we speak HTTP/1.1 only (the WebSocket upgrade needs it). */
static const unsigned char alpn_http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11), in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* a client without http/1.1 in its list: go on without ALPN */
}

int pyws_tls_ctx_new(pyws_loop *loop, int is_server, const pyws_tls_opts *o, pyws_tls_ctx **out)
{
    SSL_CTX *ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return ssl_error(loop, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS); /* idle connections hold no buffers */
    /* read whole chunks from the socket rather than a record header then its body: about half
     * the read calls (tls_read then asks SSL_has_pending, which counts read-ahead) */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (!o->cert_pem != !o->key_pem) {
        SSL_CTX_free(ctx);
        return pw_set_error(loop, PYWS_ERR_ARG, "a certificate and a key go together: give "
                              "both cert= and key=");
    }
    if (o->cert_pem && load_chain(ctx, o->cert_pem, o->cert_len) < 0) {
        SSL_CTX_free(ctx);
        return ssl_error(loop, "cannot load the certificate");
    }
    if (o->key_pem && load_key(ctx, o->key_pem, o->key_len) < 0) {
        SSL_CTX_free(ctx);
        return ssl_error(loop, "cannot load the private key (or it does not match the "
                               "certificate)");
    }
    if (is_server && (!o->cert_pem || !o->key_pem)) {
        SSL_CTX_free(ctx);
        return pw_set_error(loop, PYWS_ERR_ARG, "a TLS server needs a certificate and a key");
    }
    if (is_server && o->verify_peer && !o->ca_pem) {
        SSL_CTX_free(ctx);
        return pw_set_error(loop, PYWS_ERR_ARG, "verify_client needs ca=: the CA certificates "
                              "that sign the client certificates");
    }
    if (o->ca_pem) {
        if (load_ca(ctx, o->ca_pem, o->ca_len) < 0) {
            SSL_CTX_free(ctx);
            return ssl_error(loop, "cannot load the CA certificates");
        }
    } else if (!is_server && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return ssl_error(loop, "cannot load the system's trusted certificates");
    }
    if (is_server) {
        SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
        if (o->verify_peer)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else {
        SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof(alpn_http11));
        SSL_CTX_set_verify(ctx, o->verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    }
    pyws_tls_ctx *t = malloc(sizeof(*t));
    if (!t) {
        SSL_CTX_free(ctx);
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    }
    t->ctx = ctx;
    *out = t;
    return PYWS_OK;
}

void pyws_tls_ctx_free(pyws_tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx); /* connections and listeners hold their own references */
    free(t);
}

/* ------------------------------------------------------------------ the transport */

#define TLS_RECORD 16384 /* TLS's largest record: what one SSL_write coalesces */

/* A TLS connection's state (c->tr_ctx), owned by this file: made by start(), freed by
 * tls_free(). */
typedef struct tls_conn {
    SSL *ssl;
    size_t retry;  /* length of an SSL_write to repeat (OpenSSL's rule), or 0 */
    int shut;      /* shutdown() was called: the socket is only drained now */
    int quiet;     /* no byte decrypted since the handshake: an alert now is a late refusal */
} tls_conn;

static SSL *ssl_of(const pyws_conn *c)
{
    return ((tls_conn *)c->tr_ctx)->ssl;
}

int pyws_listen_tls(pyws_loop *loop, uint64_t listener, pyws_tls_ctx *t)
{
    pyws_conn *l = pw_conn_get(loop, listener);
    if (!l || l->kind != PYWS_KIND_LISTENER)
        return PYWS_ERR_BADID;
    if (!SSL_CTX_up_ref(t->ctx))
        return PYWS_ERR_NOMEM;
    l->tr->free(l); /* a context set before (the listener holds one reference) */
    l->tr = &pw_transport_tls;
    l->tr_ctx = t->ctx;
    return PYWS_OK;
}

static int start(pyws_loop *loop, pyws_conn *c, SSL_CTX *ctx, const char *server_name)
{
    tls_conn *t = malloc(sizeof(*t));
    if (!t)
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        free(t);
        return ssl_error(loop, "cannot start TLS");
    }
    if (SSL_set_fd(ssl, c->fd) != 1) {
        SSL_free(ssl);
        free(t);
        return ssl_error(loop, "cannot start TLS");
    }
    if (c->role == PYWS_ROLE_CLIENT) {
        SSL_set_connect_state(ssl);
        if (server_name && *server_name) {
            unsigned char ip[16];
            int is_ip = inet_pton(AF_INET, server_name, ip) == 1 ||
                        inet_pton(AF_INET6, server_name, ip) == 1;
            if (!is_ip)
                SSL_set_tlsext_host_name(ssl, server_name); /* SNI carries names only */
            if (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) {
                X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
                X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, server_name)
                               : X509_VERIFY_PARAM_set1_host(vp, server_name, 0);
                if (ok != 1) {
                    SSL_free(ssl);
                    free(t);
                    return ssl_error(loop, "cannot set the host name to verify");
                }
            }
        }
    } else {
        SSL_set_accept_state(ssl);
    }
    t->ssl = ssl;
    t->retry = 0;
    t->shut = 0;
    t->quiet = 1;
    c->tr = &pw_transport_tls;
    c->tr_ctx = t;
    c->tr_flags = PYWS_TR_HANDSHAKING;
    return PYWS_OK;
}

int pw_tls_start(pyws_loop *loop, pyws_conn *c, const pyws_tls_ctx *t, const char *server_name)
{
    return start(loop, c, t->ctx, server_name);
}

/* Connections of a TLS listener: its SSL_CTX is the listener's tr_ctx. */
static int tls_accept(pyws_loop *loop, pyws_conn *c, const pyws_conn *listener)
{
    return start(loop, c, (SSL_CTX *)listener->tr_ctx, NULL);
}

int pyws_tls_init(pyws_loop *loop, uint64_t id, pyws_tls_ctx *t, const char *server_name)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (c->tr != &pw_transport_tcp)
        return pw_set_error(loop, PYWS_ERR_STATE, "TLS is already started on this connection");
    int fresh_server = c->role == PYWS_ROLE_SERVER && c->state == PYWS_ST_HTTP && c->rlen == 0 &&
                       !(c->flags & CF_REQ_DONE);
    int fresh_client = c->role == PYWS_ROLE_CLIENT &&
                       (c->state == PYWS_ST_CONNECTING || c->state == PYWS_ST_CLIENT_HS);
    if (!fresh_server && !fresh_client)
        return pw_set_error(loop, PYWS_ERR_STATE, "tls_init() must come before any byte is "
                              "exchanged: on the accept event, or right after ws_connect()");
    return start(loop, c, t->ctx, server_name);
}

/* Report a failed handshake: EV_ERROR with why, and 1015 as the code EV_CLOSE will carry. */
static void tls_fail(pyws_loop *loop, pyws_conn *c, const char *why)
{
    pw_event_error(loop, c->id, PYWS_ERR_TLS, why);
    c->close_code = PYWS_CLOSE_TLS_HANDSHAKE;
}

/* Why the handshake failed, in words a user can act on. */
static void hs_failed(pyws_loop *loop, pyws_conn *c)
{
    char why[300];
    long vr = SSL_get_verify_result(ssl_of(c));
    unsigned long e = ERR_peek_error();
    char reason[200] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (vr != X509_V_OK && c->role == PYWS_ROLE_CLIENT)
        snprintf(why, sizeof(why), "TLS handshake failed: certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    else
        snprintf(why, sizeof(why), "TLS handshake failed: %s", *reason ? reason :
                 "the peer closed the connection");
    tls_fail(loop, c, why);
}

/* The handshake deadline passed mid-handshake. A server has no HTTP to answer (a 408 would wait
 * for a handshake that is not coming, until close_timeout): fail with 1015 at once. A client
 * reports it as the open_timeout it is. */
static int tls_expired(pyws_loop *loop, pyws_conn *c)
{
    if (c->role == PYWS_ROLE_CLIENT) {
        pw_event_error(loop, c->id, PYWS_ERR_TIMEOUT,
                         "the TLS handshake did not complete in time (open_timeout)");
        return PYWS_CLOSE_ABNORMAL;
    }
    tls_fail(loop, c, "TLS handshake failed: it did not complete in time (handshake_timeout)");
    return PYWS_CLOSE_TLS_HANDSHAKE;
}

static int tls_handshake(pyws_loop *loop, pyws_conn *c)
{
    ERR_clear_error();
    SSL *ssl = ssl_of(c);
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        c->tr_flags &= ~(PYWS_TR_HANDSHAKING | PYWS_TR_WANT_WRITE);
        return 1;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        c->tr_flags &= ~PYWS_TR_WANT_WRITE;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->tr_flags |= PYWS_TR_WANT_WRITE;
        return 0;
    }
    hs_failed(loop, c);
    return PYWS_TR_ERROR;
}

/* TLS 1.3: a server checks the client's certificate after the client's side of the handshake
 * is done, so its refusal (an alert, then its close) shows up on the client's first read or
 * write after it, before any byte of the server's arrived (for a WebSocket client: while it
 * waits for the 101). Report OpenSSL's reason as the handshake's failure. */
static void late_refusal(pyws_loop *loop, pyws_conn *c)
{
    unsigned long err = ERR_peek_error();
    if (c->role != PYWS_ROLE_CLIENT || !((tls_conn *)c->tr_ctx)->quiet ||
        ERR_GET_REASON(err) < SSL_AD_REASON_OFFSET)
        return; /* not an alert from the server */
    char why[300], reason[200];
    ERR_error_string_n(err, reason, sizeof(reason));
    snprintf(why, sizeof(why), "TLS handshake failed: %s", reason);
    pw_event_error(loop, c->id, PYWS_ERR_TLS, why);
    c->close_code = PYWS_CLOSE_TLS_HANDSHAKE;
}

/* After shutdown: what still arrives is discarded, so read the socket itself. */
static ssize_t drain(pyws_conn *c, uint8_t *dst, size_t room)
{
    ssize_t n = recv(c->fd, dst, room, 0);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return PYWS_TR_AGAIN;
    return PYWS_TR_ERROR;
}

static ssize_t tls_read(pyws_loop *loop, pyws_conn *c, uint8_t *dst, size_t room)
{
    tls_conn *t = c->tr_ctx;
    c->tr_flags &= ~PYWS_TR_PENDING;
    if (t->shut)
        return drain(c, dst, room);
    size_t got = 0;
    while (got < room) {
        ERR_clear_error();
        size_t want = room - got;
        int r = SSL_read(t->ssl, dst + got, want > 0x40000000 ? 0x40000000 : (int)want);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->tr_flags |= PYWS_TR_WANT_WRITE;
            break;
        }
        if (got) {
            /* deliver what we have; the EOF or error shows again at the next read, which must
             * come at the next poll: no socket event may follow (a close_notify read together
             * with the last record, from a peer that then waits for ours before its FIN) */
            c->tr_flags |= PYWS_TR_PENDING;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
            return 0; /* close_notify, or TCP EOF */
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
        if (e == SSL_ERROR_SSL &&
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return 0; /* OpenSSL 3's TCP EOF without close_notify: an EOF all the same */
        }
#endif
        if (e == SSL_ERROR_SSL)
            late_refusal(loop, c);
        ERR_clear_error();
        return PYWS_TR_ERROR;
    }
    /* SSL_has_pending counts read-ahead too, so it is only asked when dst is full: bytes left
     * in OpenSSL then (decrypted, or records read ahead) are read at the next poll */
    if (got == room && SSL_has_pending(t->ssl))
        c->tr_flags |= PYWS_TR_PENDING;
    if (got)
        t->quiet = 0;
    return got ? (ssize_t)got : PYWS_TR_AGAIN;
}

/* One SSL_write is one TLS record and (usually) one syscall: small segments are coalesced up
 * to a full record, copied into a record-sized buffer on the stack; a segment of a record or
 * more is written from where it lies. A write OpenSSL asked to retry is repeated with the same
 * length (and, the caller's queue head being unchanged, the same bytes). */
static ssize_t tls_writev(pyws_loop *loop, pyws_conn *c, const struct iovec *iov, int iovcnt)
{
    tls_conn *t = c->tr_ctx;
    if (iovcnt < 1)
        return PYWS_TR_AGAIN;
    size_t len = t->retry;
    if (!len) {
        len = iov[0].iov_len;
        for (int i = 1; len < TLS_RECORD && i < iovcnt; i++)
            len += iov[i].iov_len;
        if (len > TLS_RECORD && iov[0].iov_len < TLS_RECORD)
            len = TLS_RECORD;
    }
    const uint8_t *src = iov[0].iov_base;
    uint8_t record[TLS_RECORD];
    if (len > iov[0].iov_len) {
        /* len <= TLS_RECORD here (a longer one is a head segment's own length); the bound
         * holds even if a caller broke the retry rule */
        size_t at = 0;
        for (int i = 0; at < len && at < sizeof(record) && i < iovcnt; i++) {
            size_t take = iov[i].iov_len < len - at ? iov[i].iov_len : len - at;
            if (take > sizeof(record) - at)
                take = sizeof(record) - at;
            memcpy(record + at, iov[i].iov_base, take);
            at += take;
        }
        len = at;
        src = record;
    }
    ERR_clear_error();
    int r = SSL_write(t->ssl, src, len > 0x40000000 ? 0x40000000 : (int)len);
    if (r > 0) {
        t->retry = 0;
        c->tr_flags &= ~PYWS_TR_WANT_WRITE;
        return r;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        /* WANT_READ: the peer's bytes are needed first; reading is always watched */
        t->retry = len;
        return PYWS_TR_AGAIN;
    }
    t->retry = 0;
    if (c->role == PYWS_ROLE_CLIENT && t->quiet) {
        /* the server may have sent an alert before closing (the write then meets its reset):
         * it still waits in our socket, read it for the reason */
        uint8_t scratch[256];
        ERR_clear_error();
        int rr = SSL_read(t->ssl, scratch, sizeof(scratch));
        if (rr <= 0 && SSL_get_error(t->ssl, rr) == SSL_ERROR_SSL)
            late_refusal(loop, c);
    }
    ERR_clear_error();
    return PYWS_TR_ERROR;
}

static void tls_shutdown(pyws_loop *loop, pyws_conn *c)
{
    (void)loop;
    tls_conn *t = c->tr_ctx;
    if (!(c->tr_flags & PYWS_TR_HANDSHAKING)) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* close_notify; best effort on a non-blocking socket */
        ERR_clear_error();
    }
    t->shut = 1;
    c->tr_flags = 0;
    shutdown(c->fd, SHUT_WR);
}

static void tls_free(pyws_conn *c)
{
    if (!c->tr_ctx)
        return;
    if (c->kind == PYWS_KIND_LISTENER) {
        SSL_CTX_free(c->tr_ctx);
    } else {
        tls_conn *t = c->tr_ctx;
        SSL_free(t->ssl);
        free(t);
    }
    c->tr_ctx = NULL;
}

const pyws_transport pw_transport_tls = {
    .name = "tls",
    .accept = tls_accept,
    .handshake = tls_handshake,
    .read = tls_read,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .expired = tls_expired,
    .free = tls_free,
};

int pyws_tls_info(pyws_loop *loop, uint64_t id, char *out, size_t cap)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    if (c->tr != &pw_transport_tls || c->kind != PYWS_KIND_CONN ||
        (c->tr_flags & PYWS_TR_HANDSHAKING))
        return PYWS_ERR_STATE;
    SSL *ssl = ssl_of(c);
    int n = snprintf(out, cap, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    return n < 0 ? PYWS_ERR_ARG : n;
}
