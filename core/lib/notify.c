/*
 * notify - see notify.h. A thin layer over sd_notify(3) so the state
 * names and the STATUS= format live in one place.
 */
#include "lib/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

/* "STATE\nSTATUS=<fmt...>" sent as one datagram; STATUS= is one line. */
static void send_state(const char *state, const char *fmt, va_list ap)
{
    char status[512], msg[640];
    vsnprintf(status, sizeof(status), fmt, ap);
    for (char *p = status; *p; p++)
        if (*p == '\n')
            *p = ' ';
    snprintf(msg, sizeof(msg), "%s%sSTATUS=%s", state, *state ? "\n" : "",
             status);
    sd_notify(0, msg);
}

void sophia_notify_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_state("READY=1", fmt, ap);
    va_end(ap);
}

void sophia_notify_status(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_state("", fmt, ap);
    va_end(ap);
}

void sophia_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
               (unsigned long long)ts.tv_sec * 1000000ULL +
                   (unsigned long long)ts.tv_nsec / 1000ULL);
}

void sophia_notify_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=shutting down: draining streams and WebSockets");
}
