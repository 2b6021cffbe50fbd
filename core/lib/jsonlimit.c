/*
 * jsonlimit - see jsonlimit.h. A byte loop with two states (in a string
 * or not); the depth counter is all the memory it needs.
 */
#include "lib/jsonlimit.h"

size_t sophia_json_too_deep(const char *s, size_t len, size_t max)
{
    size_t depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max)
                return i + 1;
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}
