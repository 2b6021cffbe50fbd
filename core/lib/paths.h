/*
 * paths - where sophiad finds what was built or installed with it: the
 * bundled plugins and the dashboard files.
 *
 * Both are found from the executable itself (/proc/self/exe), never from
 * the working directory or the configuration file's location, so a
 * sophiad built in any directory, or installed under any prefix (also
 * through DESTDIR, or moved with its tree), finds its own:
 *
 *   build tree:     <build>/core/sophiad    plugins <build>/plugins
 *                                           share   <source>/share
 *   installed tree: <prefix>/bin/sophiad    plugins <prefix>/lib/sophia/plugins
 *                                           share   <prefix>/share/sophia
 *
 * (the installed directories are whatever GNUInstallDirs gave at configure
 * time, compiled in relative to the bindir). The first of these that
 * exists wins: the build tree's when sophiad runs from the directory it
 * was built in, then the installed tree's, then the absolute install
 * directory compiled in.
 */
#ifndef SOPHIA_PATHS_H
#define SOPHIA_PATHS_H

/* The bundled plugins' directory: absolute, found once, never NULL.
 * plugins.path entries are searched before it. */
const char *sophia_paths_plugin_dir(void);

/* The dashboard files' directory (server.share_dir overrides it). */
const char *sophia_paths_share_dir(void);

#endif
