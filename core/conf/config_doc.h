/*
 * config_doc - the sophia.yaml(5) manual page, made from the loader's own
 * key tables (config.h sophia_conf_each_key) and a description of each
 * key kept here (config_doc.c). A key the loader accepts without an entry
 * here is printed as UNDOCUMENTED and counted, an entry naming a key
 * the loader does not accept is counted too, and so is a default written
 * here that differs from the one the loader sets itself (the page prints
 * the loader's), so the page cannot drift from what `sophiad --check`
 * takes (tests/unit/test_config_doc.c).
 */
#ifndef SOPHIA_CONFIG_DOC_H
#define SOPHIA_CONFIG_DOC_H

#include <stdio.h>

/* Writes the roff page; returns the number of problems (keys without a
 * description, descriptions of unknown keys), each also named on `err`
 * when not NULL. */
int sophia_conf_doc_man(FILE *out, FILE *err);

/* The description of a dotted key path, or NULL. */
const char *sophia_conf_doc_find(const char *path);

#endif
