/*
 * origin - the same-origin test that guards browser-reachable endpoints
 * (SPEC §5 `/ws` upgrades, SPEC §12 HTTP writes) against other web pages.
 *
 * A browser sends `Origin: scheme://host[:port]` on cross-site requests and
 * upgrades; tools (curl, SDKs, other servers) send none. A request is
 * allowed when it carries no Origin, when the Origin names the very
 * host[:port] the request was sent to (its Host header), or when the
 * Origin is listed in the configured allow-list (`*` there allows any).
 *
 * Pure string work, no allocation: safe to call from any thread.
 */
#ifndef SOPHIA_ORIGIN_H
#define SOPHIA_ORIGIN_H

#include <stddef.h>

/*
 * 1 when the request may proceed, 0 when it must be refused.
 *
 * origin   the Origin header value; NULL or "" = no Origin (allowed).
 * host     the Host header value (host[:port], IPv6 as [addr]:port);
 *          NULL or "" = unknown, so only the allow-list can match.
 * allowed  nallowed exact Origin strings (compared case-insensitively);
 *          an entry "*" allows every Origin.
 *
 * Same origin: the Origin's host and the Host header's host are equal
 * case-insensitively, and so are their ports, where an absent port means
 * the Origin scheme's default (80 for http, 443 for https), so
 * `https://a` matches `Host: a:443`. The Origin must be exactly
 * scheme://host[:port]: a path, user info, an empty or non-numeric port
 * (`http://a:8080.evil.com`) is not same-origin. `null` (sandboxed
 * frames, file:// pages) is never same-origin; only "*" or an explicit
 * "null" entry admits it.
 */
int sophia_origin_allowed(const char *origin, const char *host,
                          char *const *allowed, size_t nallowed);

#endif
