/*
 * http_priv - what the files of the front door share (http.c: the
 * connection state machine; http_req.c: a request's accessors and its
 * answer; http_server.c: listeners, accepting, start and stop). Not for
 * other modules: they use http.h.
 */
#ifndef SOPHIA_HTTP_PRIV_H
#define SOPHIA_HTTP_PRIV_H

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "http/http_parse.h"
#include "http/http_tls.h"
#include "http/http_ws.h"

#define HTTP_MAX_ARGS 32

typedef enum conn_state { C_HEAD, C_BODY, C_WAIT, C_WRITE, C_LINGER } conn_state;

typedef struct http_conn http_conn;

struct sophia_http {
    const sophia_conf *conf;          /* the running one (set_conf) */
    sophia_loop *loop;
    const sophia_http_router *router; /* who answers what */
    char *host;                       /* the listen host */
    int port;                         /* the bound port */
    sophia_http_ws wsd;               /* /ws upgrades: lws (http_ws.h) */
    struct evconnlistener *listener;
    struct evconnlistener *tls_listener; /* server.tls, or NULL */
    sophia_tls *tls;                     /* its context and WSS bridges */
    char *tls_host;                      /* server.tls.listen's host */
    http_conn *conns;        /* every open connection, for stop */
    http_conn *held;         /* answers held until the work is done */
    http_conn *releasing;    /* those being written now */
    struct event *held_ev, *held_late_ev; /* http_req.c's release */
    sophia_http_stats st;
    uint64_t requests, errors;
};

struct http_conn {
    sophia_http *h;
    struct bufferevent *bev;
    conn_state state;
    sophia_http_req *req; /* being read, handled or answered */
    int close_after;      /* Connection: close, HTTP/1.0, or refused */
    int linger;           /* refused before its body was read */
    int peer_eof;
    int tls;       /* accepted on the TLS listener */
    int tls_ready; /* its handshake completed */
    int dispatching; /* inside dispatch(): a synchronous answer is there */
    int answered;    /* ...and it left whole: dispatch() moves on */
    size_t lingered;
    char *held;           /* its answer, head and body, not yet written */
    size_t held_len;
    http_conn *held_next;
    char peer[INET6_ADDRSTRLEN];
    http_conn *prev, *next;
};

struct sophia_http_req {
    http_conn *conn; /* NULL once the connection closed */
    sophia_http *h;
    char *raw;       /* the head, parsed in place */
    sophia_http_head head;
    sophia_http_method method; /* GET for HEAD */
    int is_head;
    char *path;                /* decoded */
    char *args[HTTP_MAX_ARGS]; /* "name=value", decoded */
    int nargs;
    char *body;
    size_t body_len, body_cap;
    size_t reserved; /* bytes counted in st.body_bytes */
    sophia_http_chunked chunk;
    int retry_after;
    int replied;
    int after_work; /* sophia_http_answer_after_work */
    char peer[INET6_ADDRSTRLEN];
};

/* http.c: the connection state machine */

/* Closes the connection; a request a handler holds stays for its answer. */
void http_conn_close(http_conn *c);
/* The bufferevent callbacks of a connection. */
void http_on_read(struct bufferevent *bev, void *arg);
void http_on_write(struct bufferevent *bev, void *arg);
/* The answer left whole from sophia_http_reply: reading resumes once the
 * code that answered has returned (the request stays valid until then). */
void http_conn_answered(http_conn *c);
void http_on_event(struct bufferevent *bev, short what, void *arg);

/* http_req.c: a request and its answer */

void http_req_free(sophia_http_req *r);
/* Splits the target into decoded path and arguments; 0 or 400. */
int http_req_parse_target(sophia_http_req *r);
/* Answers from the head and closes without reading the body. */
void http_refuse(http_conn *c, int status, const char *code, const char *msg);
/* A closing connection's held answer is dropped. */
void http_held_drop(http_conn *c);
/* Stopping: the held answers are written, their events freed. */
void http_held_stop(sophia_http *h);

#endif
