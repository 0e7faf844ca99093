"""libgreen is not an ordinary Python module: it lives inside the
preloaded libgreen.so. Finding this file means Python was started without
the preload, so say how to start it instead of failing obscurely. (The
wheel's stub; python/libgreen.py is the source tree's.)"""
import os as _os

_so = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)),
                    "libgreen_command", "libgreen.so")
raise ImportError(
    "libgreen works only when preloaded: serve a WSGI app with the `libgreen`\n"
    "command of this environment (libgreen MODULE:APP), or start the program as\n"
    "    LD_PRELOAD=%s python3 app.py" % _so
)
