/* hub/api.h - the hub as a table, for objects libgreen.so loads later.
 *
 * The Python-facing server lives in a second object, libgreen_pyXY.so,
 * opened by libgreen.so only inside a Python process (hard rule 13: the
 * preloaded object itself must never name a Python symbol). It reaches
 * the hidden hub functions through this table, one field per line of
 * hub/api.def, fetched once with dlsym(RTLD_DEFAULT, "libgreen_hub_api").
 *
 * The layout follows hub/api.def, so the two objects must come from the
 * same build: build_id comes first and never moves, and the server
 * compares it with its own before it touches any other field
 * (server/api.c). The id is LIBGREEN_BUILD_ID, which the Makefile
 * derives from the sources and writes to <build dir>/gen/build_id.h.
 */
#ifndef LIBGREEN_HUB_API_H
#define LIBGREEN_HUB_API_H

#include <stddef.h>

#include "hub/green.h"

struct libgreen_hub_api {
    const char *build_id;        /* first, whatever the rest holds */
#define GREEN_CALL(ret, name, params) ret (*name) params;
#include "hub/api.def"
#undef GREEN_CALL
};

/* Exported by libgreen.so (preload/boot.c). */
__attribute__((visibility("default"))) const struct libgreen_hub_api *
libgreen_hub_api(void);

#endif
