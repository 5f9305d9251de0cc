/* net.c — sockets: listen, accept, socket options, address formatting. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

static int set_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int fdfl = fcntl(fd, F_GETFD, 0);
    if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

int pw_net_listen(const char *host, int port, int backlog, int reuse_port, char *err,
                    size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portbuf[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    if (host && (!*host || strcmp(host, "*") == 0))
        host = NULL;
    int rc = getaddrinfo(host, portbuf, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", host ? host : "*",
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
#ifdef SO_REUSEPORT
        if (reuse_port)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
#endif
        if (ai->ai_family == AF_INET6 && host && strcmp(host, "::") == 0) {
            int zero = 0; /* "::" serves IPv4 too, where the system allows it */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        }
        if (set_nonblock_cloexec(fd) == 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, backlog > 0 ? backlog : 1024) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host ? host : "*", port,
                 strerror(saved));
    return fd;
}

uint32_t pyws_auto_max_sockets(void)
{
    const uint64_t most = 0x7fffffffu; /* the loop counts connections in an int */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        (uint64_t)rl.rlim_cur > most)
        return (uint32_t)most;
    uint64_t soft = (uint64_t)rl.rlim_cur;
    uint64_t spare = soft / 16 > 32 ? soft / 16 : 32;
    return soft > spare ? (uint32_t)(soft - spare) : 1u;
}

int pw_net_accept(int lfd, struct sockaddr *sa, socklen_t *salen)
{
    int fd;
#ifdef __linux__
    fd = accept4(lfd, sa, salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    fd = accept(lfd, sa, salen);
    if (fd >= 0 && set_nonblock_cloexec(fd) < 0) {
        close(fd);
        return -1;
    }
#endif
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
#ifdef SO_NOSIGPIPE
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
    }
    return fd;
}

int pw_net_connect(const char *host, int port, int skip, int *used, struct sockaddr *sa,
                     socklen_t *salen, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portbuf[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    int rc = getaddrinfo(host, portbuf, &hints, &res); /* blocking: DNS is not asynchronous */
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return PYWS_ERR_DNS;
    }
    int fd = -1, saved = ECONNREFUSED, index = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (++index < skip)
            continue; /* tried already */
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
#ifdef SO_NOSIGPIPE
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
        if (set_nonblock_cloexec(fd) == 0 &&
            (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)) {
            if (ai->ai_addrlen <= *salen) {
                memcpy(sa, ai->ai_addr, ai->ai_addrlen);
                *salen = ai->ai_addrlen;
            }
            *used = index;
            break; /* connected, or the connect goes on in the background */
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s:%d: %s", host, port, strerror(saved));
        return pw_net_error_code(saved);
    }
    return fd;
}

int pw_net_error_code(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return PYWS_ERR_REFUSED;
    case ETIMEDOUT:
        return PYWS_ERR_TIMEOUT;
    default:
        return PYWS_ERR_SYS;
    }
}

int pw_net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

int pw_net_format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip)))
            return -1;
        n = snprintf(out, cap, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip)))
            return -1;
        n = snprintf(out, cap, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        return -1;
    }
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}
