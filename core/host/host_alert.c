/*
 * host_alert - host->alert_ex (SDK 1.1): an alert that can name a topic
 * and a dashboard, and be resolved.
 *
 * A resolve is not a new kind of message: it is the same `alert` update
 * (SPEC §5: type "alert", data with alert_type, message, severity) with
 * state "resolved" instead of "firing", and the alert_id that pairs it
 * with the alert it ends. So a client written against SPEC §5 still shows
 * it, and one that knows `state` can clear the alert; the bundled metrics
 * processor already published its resolutions this way.
 */
#include "host/host.h"

#include <jansson.h>
#include <stddef.h>

#define ALERT_SIZE_1_1 (offsetof(sophia_alert, resolve) + sizeof(int))

int sophia_host_alert_ex(sophia_ctx *ctx, const sophia_alert *a,
                         sophia_json *data)
{
    json_t *in = (json_t *)data;
    if (!ctx || !a || a->struct_size < ALERT_SIZE_1_1) {
        json_decref(in);
        return SOPHIA_EINVAL;
    }
    json_t *d = json_is_object(in) ? in : json_object();
    if (!d) {
        json_decref(in);
        return SOPHIA_ENOMEM;
    }
    if (in && d != in)
        json_object_set_new(d, "details", in);
    const char *severity = a->severity ? a->severity : "info";
    json_object_set_new(d, "alert_type",
                        json_string(a->alert_type ? a->alert_type : "system"));
    json_object_set_new(d, "message", json_string(a->message ? a->message : ""));
    json_object_set_new(d, "severity", json_string(severity));
    json_object_set_new(d, "state",
                        json_string(a->resolve ? "resolved" : "firing"));
    if (a->alert_id)
        json_object_set_new(d, "alert_id", json_string(a->alert_id));
    return sophia_ctx_push_update(ctx, "alert", severity, a->topic,
                                  a->dashboard_id, (sophia_json *)d);
}
