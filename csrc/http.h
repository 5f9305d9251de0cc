/*
 * http.h — internal helpers of http.c shared with handshake.c, upgrade.c and client.c. Not part of the public API
 * (pyws.h is); nothing here is given to cffi.
 */
#ifndef PYWS_HTTP_INTERNAL_H
#define PYWS_HTTP_INTERNAL_H

#include "pyws.h"

/* s without its leading and trailing SP / HTAB (a view into the same bytes). */
pyws_str pw_http_trim(pyws_str s);

/* 1 if the comma-separated list `list` has an element equal to `item`, else 0. Optional
 * whitespace (SP / HTAB) around each element is ignored, empty elements are skipped, and an
 * empty or NULL item never matches. nocase != 0 compares ignoring ASCII case (HTTP tokens);
 * nocase == 0 compares bytes exactly (subprotocol names). */
int pw_http_list_has(pyws_str list, const char *item, int nocase);

/* The values of every header named `name` (case-insensitive), in order, into out[0..max);
 * returns how many were stored. */
size_t pw_http_values(const pyws_header *headers, size_t n, const char *name, pyws_str *out,
                        size_t max);

#endif /* PYWS_HTTP_INTERNAL_H */
