/*
 * version - what `sophiad --version` prints: the daemon's version, the
 * plugin SDK's ABI (sdk.h), and the version of every library it runs
 * with. Run-time versions where the library can tell (an operator wants
 * the .so actually loaded, which may differ from the headers built
 * against after a security update); the build's where it cannot, marked
 * "(build)".
 */
#ifndef SOPHIA_VERSION_H
#define SOPHIA_VERSION_H

#include <stdio.h>

void sophia_version_print(FILE *out);

#endif
