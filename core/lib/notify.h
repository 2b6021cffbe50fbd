/*
 * notify - sophiad's state as systemd's service manager wants it
 * (sd_notify(3), Type=notify in sophiad.service).
 *
 *   READY=1      plugins loaded and the listener up (main.c start), and
 *                again when a SIGHUP reload ends, applied or refused
 *   RELOADING=1  a SIGHUP reload began (with MONOTONIC_USEC, which
 *                systemd >= 253 wants for Type=notify-reload)
 *   STOPPING=1   shutdown began
 *   STATUS=...   one line for `systemctl status`
 *
 * Without NOTIFY_SOCKET in the environment (not started by systemd) every
 * call does nothing, so callers never check for it.
 */
#ifndef SOPHIA_NOTIFY_H
#define SOPHIA_NOTIFY_H

void sophia_notify_ready(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void sophia_notify_reloading(void);
void sophia_notify_stopping(void);
void sophia_notify_status(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif
