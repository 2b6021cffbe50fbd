/*
 * paths - the bundled plugins' and dashboard's directories, found from the
 * executable's own location (see paths.h for the layouts).
 *
 * The build's layout is compiled in (core/CMakeLists.txt):
 *   SOPHIA_BUILD_BIN_DIR          where sophiad is built (absolute)
 *   SOPHIA_BUILD_PLUGIN_REL       that directory -> the built plugins
 *   SOPHIA_SOURCE_SHARE_DIR       the source tree's share/ (absolute)
 *   SOPHIA_INSTALL_PLUGIN_REL     install bindir -> installed plugins
 *   SOPHIA_INSTALL_SHARE_REL      install bindir -> installed share dir
 *   SOPHIA_DEFAULT_PLUGIN_DIR, SOPHIA_DEFAULT_SHARE_DIR  absolute, last resort
 * Relative paths from the bindir keep an installed tree relocatable.
 */
#include "lib/paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char plugin_dir[PATH_MAX];
static char share_dir[PATH_MAX];

/* The running executable's directory, symlinks resolved; 0 on success. */
static int exe_dir(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    if ((size_t)snprintf(buf, len, "%s", *exe ? exe : "/") >= len)
        return -1;
    return 0;
}

/* 1 when `dir` is the directory sophiad was built in (even through a
 * symlink): only then are the build tree's locations tried first. */
static int is_build_dir(const char *dir)
{
    char *built = realpath(SOPHIA_BUILD_BIN_DIR, NULL);
    int same = built && strcmp(built, dir) == 0;
    free(built);
    return same;
}

/* Writes the canonical form of `base/rel` (or of `rel` when base is NULL)
 * to out when it is an existing directory; 0 then. */
static int try_dir(const char *base, const char *rel, char *out)
{
    char joined[PATH_MAX];
    int n = base ? snprintf(joined, sizeof(joined), "%s/%s", base, rel)
                 : snprintf(joined, sizeof(joined), "%s", rel);
    struct stat sb;
    if (n < 0 || (size_t)n >= sizeof(joined) || stat(joined, &sb) < 0 ||
        !S_ISDIR(sb.st_mode))
        return -1;
    return realpath(joined, out) ? 0 : -1;
}

/* Build tree (when running from it), installed tree, absolute default. */
static void find_dir(char *out, const char *build, int build_is_rel,
                     const char *installed_rel, const char *fallback)
{
    char dir[PATH_MAX];
    int have_exe = exe_dir(dir, sizeof(dir)) == 0;
    if (have_exe && is_build_dir(dir) &&
        try_dir(build_is_rel ? dir : NULL, build, out) == 0)
        return;
    if (have_exe && try_dir(dir, installed_rel, out) == 0)
        return;
    snprintf(out, PATH_MAX, "%s", fallback);
}

const char *sophia_paths_plugin_dir(void)
{
    if (!plugin_dir[0])
        find_dir(plugin_dir, SOPHIA_BUILD_PLUGIN_REL, 1,
                 SOPHIA_INSTALL_PLUGIN_REL, SOPHIA_DEFAULT_PLUGIN_DIR);
    return plugin_dir;
}

const char *sophia_paths_share_dir(void)
{
    if (!share_dir[0])
        find_dir(share_dir, SOPHIA_SOURCE_SHARE_DIR, 0,
                 SOPHIA_INSTALL_SHARE_REL, SOPHIA_DEFAULT_SHARE_DIR);
    return share_dir;
}
