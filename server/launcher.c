/* server/launcher.c - the `libgreen` command: puts libgreen.so in front of
 * LD_PRELOAD and execs the Python interpreter running the command's
 * Python part (server/cli.py, inside libgreen_pyXY.so).
 *
 * It is C, and knows no Python, because the preload has to be in place
 * before the interpreter starts: a Python script cannot preload itself
 * without a second exec. Everything else - flags, workers, privileges -
 * is cli.py's. This file only decides two paths:
 *
 *   libgreen.so  $LIBGREEN_SO; else next to this program (build/, the
 *                wheel); else ../lib/libgreen/libgreen.so relative to it
 *                (`make install`'s default layout); else
 *                ../lib/TRIPLET/libgreen/libgreen.so (the Debian package's
 *                private directory; TRIPLET is the compiler's multiarch
 *                name, LG_MULTIARCH, e.g. x86_64-linux-gnu)
 *   python       --python PATH (or --python=PATH) among the arguments;
 *                else $LIBGREEN_PYTHON; else /usr/bin/python3
 *
 * The process keeps its PID through the exec, so systemd's LISTEN_PID
 * still names it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LG_DEFAULT_PYTHON "/usr/bin/python3"
#ifndef LG_MULTIARCH
#define LG_MULTIARCH "x86_64-linux-gnu"
#endif

/* What the interpreter runs: import the module (the preload registered
 * it) and hand over to cli.py. argv[1] of the script is this program's
 * path, for messages. A failed import (no libgreen_pyXY.so for this
 * Python) is one line and status 2, like every start-up error. */
static const char lg_bootstrap[] =
    "import sys\n"
    "try:import libgreen\n"
    "except ImportError as e:sys.exit(print('libgreen: error:',e,file=sys.stderr)or 2)\n"
    "sys.exit(libgreen._cli_main())";

__attribute__((format(printf, 1, 2), noreturn))
static void lg_die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "libgreen: error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* The directory this program lives in (symlinks resolved), into dir. */
static void lg_self_dir(char *dir, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash;

    if (len <= 0)
        lg_die("cannot find where this program is (%s); set LIBGREEN_SO",
               strerror(errno));
    exe[len] = '\0';
    slash = strrchr(exe, '/');
    *slash = '\0';
    snprintf(dir, n, "%s", exe[0] ? exe : "/");
}

/* so = dir + "/" + rel, if that is a readable file; its real path. */
static int lg_try_so(char *so, const char *dir, const char *rel)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, rel);

    return n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0 &&
           realpath(path, so) != NULL;
}

/* Where libgreen.so is, into so (PATH_MAX bytes). */
static void lg_find_so(char *so)
{
    const char *env = getenv("LIBGREEN_SO");
    char dir[PATH_MAX];

    if (env && *env) {
        if (access(env, R_OK) != 0 || !realpath(env, so))
            lg_die("LIBGREEN_SO=%s: %s", env, strerror(errno));
        return;
    }
    lg_self_dir(dir, sizeof dir);
    if (lg_try_so(so, dir, "libgreen.so") ||
        lg_try_so(so, dir, "../lib/libgreen/libgreen.so") ||
        lg_try_so(so, dir, "../lib/" LG_MULTIARCH "/libgreen/libgreen.so"))
        return;
    lg_die("libgreen.so is neither next to this program (%s) nor in "
           "%s/../lib/libgreen or %s/../lib/" LG_MULTIARCH "/libgreen; "
           "reinstall it, or set LIBGREEN_SO", dir, dir, dir);
}

/* --python PATH or --python=PATH, up to a "--". NULL if absent. */
static const char *lg_python_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strncmp(argv[i], "--python=", 9) == 0)
            return argv[i] + 9;
        if (strcmp(argv[i], "--python") == 0) {
            if (i + 1 == argc)
                lg_die("--python needs the PATH of a Python interpreter");
            return argv[i + 1];
        }
    }
    return NULL;
}

/* so in front of LD_PRELOAD, unless it is already there (a test may put
 * the ASan runtime before it). */
static void lg_set_preload(const char *so)
{
    const char *old = getenv("LD_PRELOAD");
    size_t n;
    char *val;

    if (old && strstr(old, so))
        return;
    n = strlen(so) + (old ? strlen(old) : 0) + 2;
    val = malloc(n);
    if (!val)
        lg_die("out of memory");
    snprintf(val, n, "%s%s%s", so, old && *old ? " " : "", old ? old : "");
    if (setenv("LD_PRELOAD", val, 1) != 0)
        lg_die("cannot set LD_PRELOAD: %s", strerror(errno));
    free(val);
}

int main(int argc, char **argv)
{
    const char *python = lg_python_arg(argc, argv);
    char so[PATH_MAX];
    char **args;

    if (!python || !*python)
        python = getenv("LIBGREEN_PYTHON");
    if (!python || !*python)
        python = LG_DEFAULT_PYTHON;
    lg_find_so(so);
    lg_set_preload(so);

    /* python -c BOOTSTRAP argv[0] argv[1..] */
    args = calloc((size_t)argc + 4, sizeof *args);
    if (!args)
        lg_die("out of memory");
    args[0] = (char *)python;
    args[1] = "-c";
    args[2] = (char *)lg_bootstrap;
    for (int i = 0; i < argc; i++)
        args[3 + i] = argv[i];
    execvp(python, args);
    lg_die("cannot run the Python interpreter %s: %s (give another with "
           "--python PATH or LIBGREEN_PYTHON)", python, strerror(errno));
}
