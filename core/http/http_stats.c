/*
 * http_stats - the front door's figures, each declared once (statdef.h):
 * /api/stats "http" and the sophia_http_* lines of /metrics are both
 * written from this table, in its order.
 */
#include <stddef.h>

#include "http/http.h"

#define OFF(f) offsetof(sophia_http_stats, f)

const sophia_statdef sophia_http_statdefs[] = {
    SOPHIA_STATDEF("requests", "sophia_http_requests_total", "counter", NULL,
     "HTTP requests answered.", OFF(requests)),
    SOPHIA_STATDEF("errors", "sophia_http_errors_total", "counter", NULL,
     "HTTP requests answered 4xx or 5xx.", OFF(errors)),
    SOPHIA_STATDEF("refused", "sophia_http_refused_total", "counter", NULL,
     "HTTP requests refused from their head, before any body byte was read.",
     OFF(refused)),
    SOPHIA_STATDEF("connections", "sophia_http_connections", "gauge", NULL,
     "Open HTTP connections (WebSockets not included).", OFF(connections)),
    SOPHIA_STATDEF("connections_refused", "sophia_http_connections_refused_total", "counter",
     NULL, "Connections refused over server.max_connections.",
     OFF(connections_refused)),
    SOPHIA_STATDEF("body_bytes", "sophia_http_body_bytes", "gauge", NULL,
     "Request body bytes buffered right now (bounded by server.max_body_total).",
     OFF(body_bytes)),
    SOPHIA_STATDEF("upgrades", NULL, NULL, NULL, NULL, OFF(upgrades)),
    SOPHIA_STATDEF("tls_handshakes_ok", "sophia_http_tls_handshakes_total", "counter",
     "result=\"ok\"",
     "server.tls connections whose handshake completed (ok) or that closed "
     "before (failed).", OFF(tls_handshakes_ok)),
    SOPHIA_STATDEF("tls_handshakes_failed", "sophia_http_tls_handshakes_total", "counter",
     "result=\"failed\"", NULL, OFF(tls_handshakes_failed)),
};

const size_t sophia_http_nstatdefs =
    sizeof(sophia_http_statdefs) / sizeof(sophia_http_statdefs[0]);
