/*
 * fuzz_config - libFuzzer target for the YAML configuration loader: any
 * byte string must load or fail with diagnostics, never crash, leak or
 * hang (aliases are refused, nesting is capped).
 */
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_string("fuzz.yaml", (const char *)data,
                                             size, &d);
    if (c)
        sophia_conf_validate(c, &d);
    sophia_conf_free(c);
    sophia_diag_free(&d);
    return 0;
}
